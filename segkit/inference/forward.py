"""How a batch reaches a model at inference: the one model call (layout, autocast,
float32 logits) and the resizing to and from the training size. The predictor, native
evaluation (:mod:`segkit.inference.native`) and :class:`segkit.inference.trained.Trained`
all call the model through :func:`model_logits`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def model_logits(
    model: torch.nn.Module, x: torch.Tensor, precision: Any, channels_last: bool
) -> torch.Tensor:
    """The float32 logits of a normalized batch: NHWC where the model runs so, under the
    precision's autocast (``precision=None``: plain fp32)."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        y = model(x)
    return y.float()


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An ``(N, C, H, W)`` float batch resized to ``size`` (height, width), OpenCV-style
    bilinear (align_corners=False, no antialias): how the predictor resizes images to the
    training size and logits back to the image's size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def resized_forward(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int
) -> torch.Tensor:
    """``forward`` of an ``(N, C, H, W)`` batch seen at the training size: resized to
    ``size`` x ``size``, run, and the output (logits) resized back to ``H x W``. What
    ``--mode resize`` does for one image, and native evaluation for a model trained on
    resized images (:mod:`segkit.inference.native`)."""
    h, w = x.shape[-2:]
    return resize_to(forward(resize_to(x, (size, size))), (h, w))


def resized_batch(
    images: Sequence[np.ndarray], size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``(H, W, 3)`` uint8 images as one float32 ``(N, 3, size, size)`` batch on ``device``
    (values 0-255, not normalized), each resized OpenCV-style bilinear (align_corners=False,
    no antialias), as albumentations resizes in the evaluation recipe."""
    batch = []
    for image in images:
        x = (
            torch.from_numpy(np.require(image, requirements=("C", "W")))
            .to(device)
            .permute(2, 0, 1)[None]
            .float()
        )
        batch.append(resize_to(x, (size, size)))
    return torch.cat(batch)
