"""Weight initialization of the lab's two models (issue 29).

``init="kaiming"`` is what segmentation_models_pytorch and torchvision do for the same
layers (the default of ``unet``); ``init="torch"`` keeps each layer's PyTorch default
(what segkit did before; the default of ``resnet34_unet``), for comparisons and for
reproducing older runs.

- A ResNet encoder (ResNet34-UNet's stem, stages and bottleneck block): 2-D convolutions
  ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, batch norm weight 1 and bias
  0, as torchvision's ``ResNet`` (``zero_init_residual=False``).
- A decoder (and the whole of the classic UNet): 2-D convolutions
  ``kaiming_uniform_(mode="fan_in", nonlinearity="relu")`` with bias 0, batch norm 1/0,
  as smp's ``initialize_decoder``. Transposed convolutions keep PyTorch's default, as in
  smp (its decoder init touches ``nn.Conv2d`` only).
- The head (the last convolution, giving the logits): ``xavier_uniform_`` with bias 0,
  as smp's ``initialize_head``.

PyTorch's default for a convolution is ``kaiming_uniform_(a=sqrt(5))``: a standard
deviation of ``1/sqrt(3 fan_in)``, 2.4 times smaller than the ReLU gain's
``sqrt(2/fan_in)``; the head has no batch norm after it, and its default bias is random.
Which init each model gets by default was measured, not assumed
(``benchmarks/results/2026-12-06-cpu-init/``): ``unet`` trains to a lower loss with
``kaiming`` and tests better; ``resnet34_unet`` tested worse with it, so it keeps
``torch``.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from segkit.config import named_options
from segkit.errors import ConfigError

__all__ = ["INITS", "Init", "check_init", "init_decoder", "init_encoder", "init_head"]

Init = Literal["kaiming", "torch"]

#: The values of the models' ``init`` option.
INITS: tuple[str, ...] = ("kaiming", "torch")

_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def check_init(model: str, init: object) -> None:
    """Raise a :class:`~segkit.errors.ConfigError` naming ``model`` unless ``init`` is
    one of :data:`INITS`."""
    if init not in INITS:
        raise ConfigError(
            f"{model}: init={init!r}; expected one of {', '.join(INITS)} (kaiming: "
            "torchvision's and smp's initialization, torch: PyTorch's layer defaults), e.g. "
            f"{named_options('model_options', {'init': 'kaiming'})}"
        )


def _norms_to_identity(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_encoder(module: nn.Module) -> None:
    """torchvision's ResNet initialization of every 2-D convolution and norm in
    ``module``: ``kaiming_normal_(fan_out, relu)``, norms 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    _norms_to_identity(module)


def init_decoder(module: nn.Module) -> None:
    """smp's decoder initialization of every 2-D convolution and norm in ``module``:
    ``kaiming_uniform_(fan_in, relu)``, bias 0, norms 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    _norms_to_identity(module)


def init_head(head: nn.Module) -> None:
    """smp's head initialization: ``xavier_uniform_`` weights, bias 0, for every
    convolution in ``head``."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
