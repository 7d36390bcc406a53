"""``segkit info``: what a model costs before training it.

:func:`model_info` builds the model exactly as a run does (:func:`segkit.build.create_model`,
random weights: nothing is read or downloaded) on the CPU and measures, at one image size:

* parameters (all, and those that require gradients) and ``min_input_multiple``;
* forward and training FLOPs per image, counted by ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and matrix products; a multiply-add is 2 FLOPs). Training = forward +
  backward (a convolution's backward counted as twice its forward, which torch's own
  formula gets wrong for grouped and depthwise convolutions). Counted on a batch of 2 and divided by 2, as ``benchmarks/bench_common.py``
  does: batch norm in training mode needs more than one value per channel;
* activation memory per image: the bytes of the tensors autograd saves for the backward
  pass during one training-mode forward (recorded with
  ``torch.autograd.graph.saved_tensors_hooks``; each storage counted once, parameters
  left out), float32 at the given size. That is what a training step holds between
  forward and backward on top of weights, gradients and optimizer state; the transient
  buffers of single operations come on top of it;
* for models over a timm encoder (``model.encoder.feature_info``), the channels and
  strides (reductions) of the encoder's feature maps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from segkit.build import create_model
from segkit.config import named
from segkit.errors import ConfigError
from segkit.training.outputs import PluginRef, check_logits

__all__ = ["ModelInfo", "model_info"]


@dataclass
class ModelInfo:
    """What :func:`model_info` measured (per image, at ``image_size``)."""

    model: str
    options: dict[str, Any]
    image_size: int
    parameters: int
    trainable_parameters: int
    min_input_multiple: int
    forward_gflop: float
    train_gflop: float
    activation_mib: float
    feature_channels: list[int] | None = None
    feature_strides: list[int] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        """A readable two-column table."""
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        rows = [
            ("model", self.model + (f" ({opts})" if opts else "")),
            ("parameters", f"{self.parameters:,}"),
            ("trainable parameters", f"{self.trainable_parameters:,}"),
            ("min input multiple", str(self.min_input_multiple)),
            ("image size", f"{self.image_size} x {self.image_size}"),
            ("forward GFLOP / image", f"{self.forward_gflop:.2f}"),
            ("training GFLOP / image", f"{self.train_gflop:.2f} (forward + backward)"),
            (
                "activation memory / image",
                f"{self.activation_mib:.1f} MiB (saved for backward, float32)",
            ),
        ]
        if self.feature_channels is not None:
            rows.append(("encoder channels", ", ".join(map(str, self.feature_channels))))
        if self.feature_strides is not None:
            rows.append(("encoder strides", ", ".join(map(str, self.feature_strides))))
        width = max(len(k) for k, _ in rows)
        out = [f"{k.ljust(width)}  {v}" for k, v in rows]
        out += [f"note: {n}" for n in self.notes]
        return out


def model_info(name: str, image_size: int = 256, **options: Any) -> ModelInfo:
    """Parameters, FLOPs and activation memory of model ``name`` at ``image_size`` (see the
    module docstring for how each is measured). Runs on the CPU with random weights.

    Args:
        name: A registered model name (``segkit list models``).
        image_size: Square input size; must be a multiple of the model's
            ``min_input_multiple``.
        **options: The model factory's options (``encoder=...``). ``weights`` is left out:
            the counts do not depend on the weights, and nothing is downloaded or read.

    Raises:
        PluginNotFoundError: no model ``name`` (the message suggests close names).
        ConfigError: bad options, or ``image_size`` not a multiple of the model's
            ``min_input_multiple``.
        PluginContractError: the model's output is not ``(2, 1, image_size, image_size)``
            float32 logits (see :func:`segkit.training.outputs.check_logits`).
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"{named('image_size', image_size)}: expected a positive int")
    notes = []
    if options.pop("weights", None) is not None:
        notes.append("weights ignored: the counts are measured with random weights")
    model = create_model(name, image_size=image_size, **options)
    params = list(model.parameters())
    costs = _measure(model, name, image_size)
    feature_channels, feature_strides = _features(model)
    return ModelInfo(
        model=name,
        options=dict(options),
        image_size=image_size,
        parameters=sum(p.numel() for p in params),
        trainable_parameters=sum(p.numel() for p in params if p.requires_grad),
        min_input_multiple=int(getattr(model, "min_input_multiple", 1)),
        forward_gflop=costs.forward_flop / 1e9,
        train_gflop=(costs.forward_flop + costs.backward_flop) / 1e9,
        activation_mib=costs.saved_bytes / 2**20,
        feature_channels=feature_channels,
        feature_strides=feature_strides,
        notes=notes,
    )


@dataclass(frozen=True)
class _Costs:
    """What one training step of a model costs per image (see the module docstring)."""

    forward_flop: float
    backward_flop: float
    #: Bytes autograd saves for the backward (each storage once, parameters left out).
    saved_bytes: float


def _measure(model: Any, name: str, image_size: int) -> _Costs:
    """Run model ``name`` forward and backward once in training mode on a random batch of 2
    at ``image_size``, counting FLOPs and the bytes saved for the backward, per image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    batch = 2  # batch norm in training mode needs more than one value per channel
    x = torch.randn(batch, getattr(model, "in_channels", 3), image_size, image_size)
    x = _input_like(model, x)
    model.train()
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_storages and t.device.type != "meta":
            saved[ptr] = storage.nbytes()
        return t

    with FlopCounterMode(display=False) as forward:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
    check_logits(out, x, 1, model=PluginRef.find("models", name))  # before .backward() trips on it
    grouped_ok = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=grouped_ok) as backward:
        out.float().sum().backward()
    return _Costs(
        forward_flop=forward.get_total_flops() / batch,
        backward_flop=backward.get_total_flops() / batch,
        saved_bytes=sum(saved.values()) / batch,
    )


def _features(model: Any) -> tuple[list[int] | None, list[int] | None]:
    """The channels and strides of the feature maps of the model's timm encoder
    (``model.encoder.feature_info``); ``None`` for a model without one."""
    info = getattr(getattr(model, "encoder", None), "feature_info", None)
    if info is not None and hasattr(info, "channels") and hasattr(info, "reduction"):
        return [int(c) for c in info.channels()], [int(r) for r in info.reduction()]
    return None, None


class _ConvBackward(NamedTuple):
    """The arguments of ``aten.convolution_backward`` in its schema's order, as
    ``FlopCounterMode`` hands them to a formula (tensors given as their shapes)."""

    grad_out_shape: Any
    x_shape: Any
    w_shape: Any
    bias_sizes: Any
    stride: Any
    padding: Any
    dilation: Any
    transposed: bool
    output_padding: Any
    groups: Any
    output_mask: Any


def _conv_backward_flop(*args: Any, **kwargs: Any) -> int:
    """A convolution's backward: the gradient of the input and that of the weight each
    cost what the forward did. torch's own formula (2.x) ignores ``groups`` there and
    counts a depthwise convolution's backward as if it were dense (64 channels: 65 times
    its forward), which made EfficientNets' training FLOPs 10x their forward; for
    ``groups=1`` the two agree.

    Called by ``FlopCounterMode`` with the op's arguments (:class:`_ConvBackward`) and
    ``out_shape``, which is not needed."""
    from torch.utils.flop_counter import conv_flop_count

    call = _ConvBackward(*args, **{k: v for k, v in kwargs.items() if k in _ConvBackward._fields})
    forward = conv_flop_count(
        list(call.x_shape), list(call.w_shape), list(call.grad_out_shape), call.transposed
    )
    return forward * (int(bool(call.output_mask[0])) + int(bool(call.output_mask[1])))


def _input_like(model: Any, x: Any) -> Any:
    """``x`` with the channel count of the model's first convolution, if it has one (a
    model built with ``in_channels`` other than 3)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            if m.in_channels != x.shape[1]:
                return torch.randn(x.shape[0], m.in_channels, *x.shape[2:])
            break
    return x
