"""Binary segmentation losses, as ``segkit.losses`` plugins: ``bce``, ``dice``, ``bce_dice``.

Every loss takes **logits** ``(N, 1, H, W)`` in any float dtype and a ``target`` of the
same shape holding 0 and 1, and returns a float32 scalar.

Two numerical rules, both from bugs other projects shipped:

- BCE is computed from logits with :func:`torch.nn.functional.binary_cross_entropy_with_logits`
  (log-sum-exp form). BCE on probabilities loses precision near 0 and 1 and is refused
  under autocast (PyTorch #61098).
- Dice sums are computed in float32. In fp16 the sum of one 512x512 mask can pass 65504
  and overflow to inf (smp #463); in bf16 a running sum stops growing at 256 (8 bits of
  mantissa). Logits and target are cast to float32 before any reduction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segkit.errors import ConfigError

__all__ = ["BCELoss", "BCEDiceLoss", "DiceLoss", "create_bce", "create_bce_dice", "create_dice"]


def _check_option(loss: str, name: str, value: float) -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{loss}: {name}={value!r} must be a number >= 0")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{loss}: {name}={value!r} must be a finite number >= 0")
    return float(value)


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    # Broadcasting a (N, H, W) target against (N, 1, H, W) logits would silently compute
    # the loss of every image against every other one.
    if logits.shape != target.shape:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} and target shape {tuple(target.shape)} "
            "differ; both must be (N, 1, H, W)"
        )


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of ``sigmoid(logits)`` against ``target``, in float32.

    Args:
        logits: ``(N, C, H, W)`` logits, any float dtype.
        target: Same shape, values in {0, 1}.
        smooth: Added to numerator and denominator; keeps empty masks at Dice 1.

    Returns:
        ``1 - mean_n dice_n``, a float32 scalar (see :class:`DiceLoss`).
    """
    _check_shapes(logits, target)
    probs = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    intersection = (probs * target).sum(dim=1)
    dice = (2.0 * intersection + smooth) / (probs.sum(dim=1) + target.sum(dim=1) + smooth)
    return 1.0 - dice.mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy from logits, averaged over every pixel, in float32."""
    _check_shapes(logits, target)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, averaged over all pixels::

        bce = mean(max(x, 0) - x * t + log(1 + exp(-|x|)))

    which equals ``-mean(t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x)))`` without
    its overflow for large ``|x|``.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean BCE of ``logits`` against ``target`` as a float32 scalar."""
        return bce_loss(logits, target)


class DiceLoss(nn.Module):
    """Soft Dice loss on ``p = sigmoid(logits)``, per image, averaged over the batch::

        dice_n = (2 * sum(p_n * t_n) + smooth) / (sum(p_n) + sum(t_n) + smooth)
        loss   = 1 - mean_n dice_n

    where the sums run over the channels and pixels of image ``n``. Computed in float32.

    Args:
        smooth: Added to numerator and denominator: an image with an empty mask and an
            empty prediction scores Dice 1, and the gradient stays finite. Must be >= 0.
    """

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = _check_option("dice", "smooth", smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the soft Dice loss as a float32 scalar."""
        return soft_dice_loss(logits, target, self.smooth)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}"


class BCEDiceLoss(nn.Module):
    """The lab's loss: a weighted sum of :class:`BCELoss` and :class:`DiceLoss`::

        loss = bce_weight * bce + dice_weight * (1 - mean_n dice_n)

    BCE gives every pixel a gradient from the first step; Dice counters the imbalance
    between a small foreground and a large background.

    Args:
        bce_weight: Weight of the BCE term, >= 0.
        dice_weight: Weight of the Dice term, >= 0. At least one weight must be > 0.
        smooth: Dice smoothing, >= 0 (see :class:`DiceLoss`).
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce_weight = _check_option("bce_dice", "bce_weight", bce_weight)
        self.dice_weight = _check_option("bce_dice", "dice_weight", dice_weight)
        self.smooth = _check_option("bce_dice", "smooth", smooth)
        if self.bce_weight == 0 and self.dice_weight == 0:
            raise ConfigError(
                "bce_dice: bce_weight=0 and dice_weight=0 leave nothing to minimize; "
                "make at least one of them > 0"
            )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the weighted BCE + Dice loss as a float32 scalar."""
        return self.bce_weight * bce_loss(logits, target) + self.dice_weight * soft_dice_loss(
            logits, target, self.smooth
        )

    def extra_repr(self) -> str:
        return f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}, smooth={self.smooth}"


def create_bce_dice(
    bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0
) -> BCEDiceLoss:
    """Create the weighted BCE + Dice loss (the lab's default: both weights 1).

    Args:
        bce_weight: Weight of the BCE term, >= 0.
        dice_weight: Weight of the Dice term, >= 0.
        smooth: Dice smoothing, >= 0.

    Returns:
        A :class:`BCEDiceLoss`.

    Raises:
        ConfigError: An option is negative, not finite or not a number, or both weights
            are 0.
    """
    return BCEDiceLoss(bce_weight, dice_weight, smooth)


def create_bce() -> BCELoss:
    """Create the binary cross-entropy loss on logits.

    Returns:
        A :class:`BCELoss`.
    """
    return BCELoss()


def create_dice(smooth: float = 1.0) -> DiceLoss:
    """Create the soft Dice loss.

    Args:
        smooth: Added to numerator and denominator, >= 0.

    Returns:
        A :class:`DiceLoss`.

    Raises:
        ConfigError: ``smooth`` is negative, not finite or not a number.
    """
    return DiceLoss(smooth)
