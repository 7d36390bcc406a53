"""What the model and the loss return, checked once: on the first training step, and by
``segkit info`` after its forward.

A model plugin must return logits: a floating tensor ``(N, out_channels, H, W)`` of its
``(N, in_channels, H, W)`` input, in float32 or the autocast dtype (bf16, fp16). A loss
plugin must return a 0-dim floating tensor with a ``grad_fn`` (in float32, or the
autocast dtype). The conformance kit (:mod:`segkit.testing`) holds the same rules, and
more; these checks catch a plugin that was never run through it before the wrong output
reaches the loss, the metrics or ``backward()`` and fails there with a traceback that
names neither plugin (or, for float64 logits, trains on silently at twice the cost).

The checks read only the tensors' metadata (type, dtype, shape, ``grad_fn``): no device
work and no host sync. :class:`segkit.training.loops.TrainStep` runs them on the logits
and loss its first step computed anyway (no extra forward), never again, and never inside
a captured CUDA graph (a :class:`~segkit.training.graphs.GraphStep` warms up eagerly first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from segkit.errors import PluginContractError, PluginError
from segkit.registry import SINGULAR

#: Plugin kind -> the conformance checker that tests it, for the messages.
_CHECKERS = {"models": "check_model", "losses": "check_loss"}


@dataclass(frozen=True)
class PluginRef:
    """A plugin as messages name it.

    Attributes:
        kind: ``models`` or ``losses``.
        name: Its registered name, or None for an object built outside the registry.
        label: E.g. ``model 'unet' from distribution 'segkit' 0.1.0``.
    """

    kind: str
    name: str | None
    label: str

    @classmethod
    def find(cls, kind: str, name: str | None) -> PluginRef:
        """The plugin ``name`` of ``kind`` with its distribution and version, as the
        registry knows it (its name alone where the registry cannot say)."""
        if name is None:
            return cls.unnamed(kind)
        from segkit.registry import default_registry

        try:
            label = default_registry().info(kind, name).label
        except PluginError:
            label = f"{SINGULAR[kind]} '{name}'"
        return cls(kind, name, label)

    @classmethod
    def unnamed(cls, kind: str) -> PluginRef:
        return cls(kind, None, f"the {SINGULAR[kind]} (built outside the registry)")

    def check_hint(self) -> str:
        """How to run the conformance kit on this plugin."""
        call = f"{_CHECKERS[self.kind]}({self.name!r})" if self.name else _CHECKERS[self.kind]
        return f"Run segkit.testing.{call} to check it against every rule of its contract"


def _returned(value: Any) -> str:
    """What a plugin returned, in a few words."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        article = "an" if dtype.startswith(("int", "uint")) else "a"
        return f"{article} {dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:5])
        return f"a {type(value).__name__} with keys {keys or 'none'}, not a tensor"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items, not a tensor"
    return f"a {type(value).__name__} ({value!r:.60}), not a tensor"


def _dtypes(autocast: torch.dtype | None) -> tuple[torch.dtype, ...]:
    return (torch.float32,) if autocast is None else (torch.float32, autocast)


def _dtype_words(autocast: torch.dtype | None) -> str:
    if autocast is None:
        return "float32"
    return f"float32 or {str(autocast).removeprefix('torch.')} (the autocast dtype)"


def check_logits(
    logits: Any,
    images: torch.Tensor,
    out_channels: int,
    *,
    autocast: torch.dtype | None = None,
    model: PluginRef | None = None,
) -> None:
    """Raise unless ``logits`` is what a model plugin must return for ``images``.

    Args:
        logits: What the model returned.
        images: Its input, ``(N, C, H, W)``.
        out_channels: The logit channels the run asked the factory for.
        autocast: The autocast dtype of the forward (None: float32 only).
        model: The model plugin, for the message.

    Raises:
        PluginContractError: naming the plugin, what it returned and what was expected.
    """
    model = model or PluginRef.unnamed("models")
    n, _, h, w = images.shape
    want = (n, out_channels, h, w)
    expected = (
        f"expected logits: a {_dtype_words(autocast)} tensor of shape {want}, "
        f"(N, out_channels={out_channels}, H, W) of its {tuple(images.shape)} input"
    )
    hint = _logits_hint(logits, want, autocast)
    if hint is None:
        return
    raise PluginContractError(
        f"{model.label} returned {_returned(logits)}; {expected}{hint}. {model.check_hint()}"
    )


def _logits_hint(
    logits: Any, want: tuple[int, int, int, int], autocast: torch.dtype | None
) -> str | None:
    """None where ``logits`` is a tensor of dtype and shape ``want``; else how to fix it
    (``""`` where there is nothing more to say than the shape expected)."""
    if not isinstance(logits, torch.Tensor):
        return "; return the logits tensor alone (unpack the output of a wrapped model)"
    if not logits.is_floating_point():
        return "; return the raw logits, before any threshold or argmax"
    if logits.dtype not in _dtypes(autocast):
        return "; do not cast the output (segkit's precision setting chooses the dtype)"
    if tuple(logits.shape) == want:
        return None
    _, out_channels, h, w = want
    if logits.dim() == 4 and tuple(logits.shape[2:]) != (h, w):
        return (
            f"; the output is {logits.shape[2]}x{logits.shape[3]} for a {h}x{w} input: "
            "upsample back to the input size, and if the model needs H and W divisible "
            "by some number, declare it on the factory "
            "(@segkit.contracts.declare(min_input_multiple=...)) so segkit refuses other "
            "sizes up front"
        )
    if logits.dim() == 4 and logits.shape[1] != out_channels:
        return f"; make the last layer output the out_channels={out_channels} it is given"
    return ""


def check_loss(
    loss: Any, *, autocast: torch.dtype | None = None, plugin: PluginRef | None = None
) -> None:
    """Raise unless ``loss`` is what a loss plugin must return: a 0-dim floating tensor
    (float32, or the autocast dtype; float64 is accepted) with a ``grad_fn``.

    Raises:
        PluginContractError: naming the plugin, what it returned and what was expected.
    """
    plugin = plugin or PluginRef.unnamed("losses")
    expected = (
        f"expected a 0-dim {_dtype_words(autocast)} tensor computed from the logits "
        "(with a grad_fn, so backward() trains the model)"
    )
    hint = _loss_hint(loss, autocast)
    if hint is None:
        return
    raise PluginContractError(
        f"{plugin.label} returned {_returned(loss)}; {expected}{hint}. {plugin.check_hint()}"
    )


def _loss_hint(loss: Any, autocast: torch.dtype | None) -> str | None:
    """None where ``loss`` is a 0-dim floating tensor with a ``grad_fn``; else how to fix
    it."""
    if not isinstance(loss, torch.Tensor):
        return "; return the tensor itself, not float(loss) or loss.item()"
    if loss.dim() != 0:
        return "; reduce it to one value (reduction='mean', not 'none')"
    if not loss.is_floating_point() or loss.dtype not in (*_dtypes(autocast), torch.float64):
        return "; reduce in float32 (cast the logits with .float() before the sums)"
    if loss.grad_fn is None:
        return "; do not detach it or rebuild it with torch.tensor()"
    return None
