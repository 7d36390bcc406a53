"""``focal_dice``: focal loss plus soft Dice, from logits, in float32."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segkit.errors import ConfigError


def _number(name: str, value: float, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"focal_dice: {name}={value!r} must be a finite number")
    if value < 0 or (upper is not None and value > upper):
        bound = f"in [0, {upper}]" if upper is not None else ">= 0"
        raise ConfigError(f"focal_dice: {name}={value!r} must be {bound}")
    return float(value)


class FocalDiceLoss(nn.Module):
    """``focal_weight * focal + dice_weight * (1 - mean_n dice_n)``.

    The focal term (Lin et al., 2017) is the per-pixel BCE scaled by ``(1 - p_t) **
    gamma`` and by ``alpha`` on foreground (``1 - alpha`` on background), averaged over
    pixels; the Dice term is soft Dice per image with ``smooth``. Focal concentrates on
    hard pixels, Dice on the overlap of small objects. Both are computed in float32 from
    log-sigmoids, which stay finite for any logit.

    Args:
        alpha: Foreground weight of the focal term, in [0, 1].
        gamma: Focusing exponent, >= 0.
        focal_weight: Weight of the focal term, >= 0.
        dice_weight: Weight of the Dice term, >= 0.
        smooth: Dice smoothing, >= 0.
    """

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        focal_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
    ):
        super().__init__()
        self.alpha = _number("alpha", alpha, upper=1.0)
        self.gamma = _number("gamma", gamma)
        self.focal_weight = _number("focal_weight", focal_weight)
        self.dice_weight = _number("dice_weight", dice_weight)
        self.smooth = _number("smooth", smooth)
        if self.focal_weight == 0 and self.dice_weight == 0:
            raise ConfigError(
                "focal_dice: focal_weight=0 and dice_weight=0 leave nothing to minimize"
            )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(
                f"logits shape {tuple(logits.shape)} and target shape {tuple(target.shape)} differ"
            )
        x = logits.float()
        t = target.float()
        z = x * (2.0 * t - 1.0)  # p_t = sigmoid(z)
        focal = torch.exp(self.gamma * F.logsigmoid(-z)) * -F.logsigmoid(z)
        focal = ((self.alpha * t + (1.0 - self.alpha) * (1.0 - t)) * focal).mean()
        p = torch.sigmoid(x).flatten(1)
        t = t.flatten(1)
        dice = (2.0 * (p * t).sum(1) + self.smooth) / (p.sum(1) + t.sum(1) + self.smooth)
        return self.focal_weight * focal + self.dice_weight * (1.0 - dice.mean())

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, gamma={self.gamma}, focal_weight={self.focal_weight}, "
            f"dice_weight={self.dice_weight}, smooth={self.smooth}"
        )


def create_focal_dice(
    alpha: float = 0.25,
    gamma: float = 2.0,
    focal_weight: float = 1.0,
    dice_weight: float = 1.0,
    smooth: float = 1.0,
) -> FocalDiceLoss:
    """Create the focal + Dice loss (see :class:`FocalDiceLoss` for the options).

    Raises:
        ConfigError: An option is out of range, or both weights are 0.
    """
    return FocalDiceLoss(alpha, gamma, focal_weight, dice_weight, smooth)
