"""Binary segmentation losses, as ``segkit.losses`` plugins: ``bce``, ``dice``, ``bce_dice``,
``focal``, ``lovasz`` and ``tversky``.

Every loss takes **logits** ``(N, 1, H, W)`` in any float dtype and a ``target`` of the
same shape holding 0 and 1, and returns a float32 scalar; every factory declares
``accepts = "binary"``. The multi-class losses (``ce``, ``mc_dice``, ``ce_dice``,
``mc_focal``, ``lovasz_softmax``, ``mc_tversky``) are in :mod:`segkit_losses.multiclass`.

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

from segkit.contracts import declare
from segkit.errors import ConfigError

__all__ = [
    "BCEDiceLoss",
    "BCELoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszHingeLoss",
    "TverskyLoss",
    "create_bce",
    "create_bce_dice",
    "create_dice",
    "create_focal",
    "create_lovasz",
    "create_tversky",
]


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


def bce_loss(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: float | None = None
) -> torch.Tensor:
    """Binary cross-entropy from logits, averaged over every pixel, in float32.
    ``pos_weight`` multiplies the foreground pixels' terms (None: 1)."""
    _check_shapes(logits, target)
    weight = None
    if pos_weight is not None:
        weight = torch.full((1,), pos_weight, dtype=torch.float32, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=weight)


def _check_pos_weight(loss: str, value: float | None) -> float | None:
    if value is None:
        return None
    if value == "auto":
        raise ConfigError(
            f"{loss}: pos_weight='auto' is resolved by segkit run (background/foreground "
            "pixels of the train split); give a number when creating the loss directly"
        )
    return _check_option(loss, "pos_weight", value)


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, averaged over all pixels::

        bce = mean(max(x, 0) - x * t + log(1 + exp(-|x|)))

    which equals ``-mean(t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x)))`` without
    its overflow for large ``|x|``.

    Args:
        pos_weight: Multiplies the foreground pixels' terms (``-t * log(sigmoid(x))``),
            >= 0; None for 1. ``background / foreground`` pixels balances the classes:
            ``--loss-opt pos_weight=auto`` computes it from the train split's masks, and
            ``segkit data check`` prints it.
    """

    def __init__(self, pos_weight: float | None = None):
        super().__init__()
        self.pos_weight = _check_pos_weight("bce", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean BCE of ``logits`` against ``target`` as a float32 scalar."""
        return bce_loss(logits, target, self.pos_weight)

    def extra_repr(self) -> str:
        return f"pos_weight={self.pos_weight}" if self.pos_weight is not None else ""


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
        pos_weight: BCE's foreground weight, >= 0, or None for 1 (see :class:`BCELoss`;
            ``--loss-opt pos_weight=auto``: train background / foreground pixels).
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        pos_weight: float | None = None,
    ):
        super().__init__()
        self.pos_weight = _check_pos_weight("bce_dice", pos_weight)
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
        return self.bce_weight * bce_loss(
            logits, target, self.pos_weight
        ) + self.dice_weight * soft_dice_loss(logits, target, self.smooth)

    def extra_repr(self) -> str:
        extra = f", pos_weight={self.pos_weight}" if self.pos_weight is not None else ""
        return (
            f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}, "
            f"smooth={self.smooth}{extra}"
        )


@declare(accepts="binary")
def create_bce_dice(
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    smooth: float = 1.0,
    pos_weight: float | None = None,
) -> BCEDiceLoss:
    """Create the weighted BCE + Dice loss (the lab's default: both weights 1).

    Args:
        bce_weight: Weight of the BCE term, >= 0.
        dice_weight: Weight of the Dice term, >= 0.
        smooth: Dice smoothing, >= 0.
        pos_weight: BCE's foreground weight, >= 0 (None: 1). ``segkit run --loss-opt
            pos_weight=auto`` passes train background / foreground pixels.

    Returns:
        A :class:`BCEDiceLoss`.

    Raises:
        ConfigError: An option is negative, not finite or not a number, or both weights
            are 0.
    """
    return BCEDiceLoss(bce_weight, dice_weight, smooth, pos_weight)


@declare(accepts="binary")
def create_bce(pos_weight: float | None = None) -> BCELoss:
    """Create the binary cross-entropy loss on logits.

    Args:
        pos_weight: Foreground weight, >= 0 (None: 1); ``segkit run --loss-opt
            pos_weight=auto`` passes train background / foreground pixels.

    Returns:
        A :class:`BCELoss`.
    """
    return BCELoss(pos_weight)


@declare(accepts="binary")
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


# ----------------------------------------------------------------------------- focal


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float | None = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Binary focal loss from logits, averaged over every pixel, in float32.

    Args:
        logits: ``(N, C, H, W)`` logits, any float dtype.
        target: Same shape, values in {0, 1}.
        alpha: Weight of the foreground terms (background gets ``1 - alpha``); ``None``
            weighs both classes 1.
        gamma: Focusing exponent, >= 0; 0 gives (alpha-weighted) BCE.

    Returns:
        A float32 scalar (see :class:`FocalLoss`).
    """
    _check_shapes(logits, target)
    x = logits.float()
    t = target.float()
    # z = x for foreground pixels and -x for background ones, so that p_t = sigmoid(z).
    # Both factors come from logsigmoid, which is exact for any |z|: computing 1 - p_t
    # as 1 - sigmoid(z) rounds to 0 in float32 once z > 17, and the gradient of
    # (1 - p_t) ** gamma at 0 is inf for gamma < 1 (inf * 0 = NaN downstream).
    z = x * (2.0 * t - 1.0)
    ce = -F.logsigmoid(z)  # = -log p_t, the per-pixel BCE
    modulating = torch.exp(gamma * F.logsigmoid(-z))  # = (1 - p_t) ** gamma
    loss = modulating * ce
    if alpha is not None:
        loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
    return loss.mean()


class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al., 2017, "Focal Loss for Dense Object Detection") on
    logits, averaged over all pixels::

        p_t     = sigmoid(x) if t = 1 else 1 - sigmoid(x)
        alpha_t = alpha      if t = 1 else 1 - alpha
        loss    = mean(-alpha_t * (1 - p_t) ** gamma * log(p_t))

    Well-classified pixels (``p_t`` near 1) are down-weighted by ``(1 - p_t) ** gamma``,
    so training concentrates on the hard ones. ``gamma=0, alpha=None`` is plain BCE.
    Computed in float32 from log-sigmoids, so no term overflows or turns into NaN.

    Args:
        alpha: Foreground weight in [0, 1], or ``None`` for no class weighting
            (``--loss-opt alpha=null``). The paper's default, 0.25, was tuned for
            detection, where background dominates.
        gamma: Focusing exponent, >= 0 (the paper uses 2).
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0):
        super().__init__()
        if alpha is not None:
            alpha = _check_option("focal", "alpha", alpha)
            if alpha > 1:
                raise ConfigError(f"focal: alpha={alpha!r} must be in [0, 1] (or null for none)")
        self.alpha = alpha
        self.gamma = _check_option("focal", "gamma", gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean focal loss as a float32 scalar."""
        return focal_loss(logits, target, self.alpha, self.gamma)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"


@declare(accepts="binary")
def create_focal(alpha: float | None = 0.25, gamma: float = 2.0) -> FocalLoss:
    """Create the binary focal loss.

    Args:
        alpha: Foreground weight in [0, 1], or ``None`` to weigh both classes 1.
        gamma: Focusing exponent, >= 0.

    Returns:
        A :class:`FocalLoss`.

    Raises:
        ConfigError: ``alpha`` is outside [0, 1], or ``gamma`` is negative, not finite
            or not a number.
    """
    return FocalLoss(alpha, gamma)


# ----------------------------------------------------------------------------- Lovasz


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Lovasz hinge loss per image, averaged over the batch, in float32.

    Args:
        logits: ``(N, C, H, W)`` logits, any float dtype.
        target: Same shape, values in {0, 1}.

    Returns:
        A float32 scalar (see :class:`LovaszHingeLoss`).
    """
    _check_shapes(logits, target)
    x = logits.float().flatten(1)
    t = target.float().flatten(1)
    errors = 1.0 - x * (2.0 * t - 1.0)  # hinge margins: > 0 where the pixel is not safe
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    t_sorted = torch.gather(t, 1, order)
    # Jaccard loss of "the first i sorted pixels are wrong", for every i at once:
    # 1 - |G minus those| / |G plus those|, with G the foreground.
    foreground = t_sorted.sum(dim=1, keepdim=True)
    intersection = foreground - t_sorted.cumsum(dim=1)
    union = foreground + (1.0 - t_sorted).cumsum(dim=1)  # >= 1: the first pixel is in it
    jaccard = 1.0 - intersection / union
    # The Lovasz extension weighs the i-th largest error by the Jaccard increment it adds.
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    # An elementwise product and a sum, not torch.dot: autocast would run a dot in bf16.
    per_image = (F.relu(errors_sorted) * grad).sum(dim=1)
    return per_image.mean()


class LovaszHingeLoss(nn.Module):
    """The Lovasz hinge (Berman et al., 2018, "The Lovasz-Softmax loss: A tractable
    surrogate for the optimization of the intersection-over-union measure"), per image,
    averaged over the batch.

    With hinge errors ``m_i = max(0, 1 - x_i * s_i)`` (``s_i = +1`` on foreground, ``-1``
    on background), sorted so that ``m_(1) >= m_(2) >= ...``::

        loss_n = sum_i m_(i) * (J({1..i}) - J({1..i-1}))

    where ``J(M) = |M| / |G union M|`` is the Jaccard loss (1 - IoU) of an image whose
    wrongly predicted pixels are ``M`` (``G`` the true foreground). This is the convex
    (Lovasz) extension of the Jaccard loss evaluated at the margins: it optimizes IoU
    directly. An image whose mask is empty scores its largest hinge error. Computed in
    float32; sorting costs ``O(HW log HW)`` per image.

    Common practice is to train with BCE or BCE + Dice first and fine-tune with it.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the mean per-image Lovasz hinge as a float32 scalar."""
        return lovasz_hinge(logits, target)


@declare(accepts="binary")
def create_lovasz() -> LovaszHingeLoss:
    """Create the per-image Lovasz hinge loss.

    Returns:
        A :class:`LovaszHingeLoss`.
    """
    return LovaszHingeLoss()


# ----------------------------------------------------------------------------- Tversky


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Soft Tversky loss of ``sigmoid(logits)`` per image, averaged over the batch.

    Args:
        logits: ``(N, C, H, W)`` logits, any float dtype.
        target: Same shape, values in {0, 1}.
        alpha: Weight of false positives.
        beta: Weight of false negatives.
        smooth: Added to numerator and denominator.

    Returns:
        A float32 scalar (see :class:`TverskyLoss`).
    """
    _check_shapes(logits, target)
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    tp = (p * t).sum(dim=1)
    fp = (p * (1.0 - t)).sum(dim=1)
    fn = ((1.0 - p) * t).sum(dim=1)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return 1.0 - index.mean()


class TverskyLoss(nn.Module):
    """Soft Tversky loss (Salehi et al., 2017, "Tversky loss function for image
    segmentation using 3D fully convolutional deep networks") on ``p = sigmoid(logits)``,
    per image, averaged over the batch::

        TP = sum(p * t), FP = sum(p * (1 - t)), FN = sum((1 - p) * t)
        loss = 1 - mean_n (TP + smooth) / (TP + alpha * FP + beta * FN + smooth)

    ``beta > alpha`` penalizes missed foreground more than false alarms (more recall),
    which helps small structures; the paper's best was alpha 0.3, beta 0.7.
    With ``alpha = beta = 0.5`` it is the soft Dice loss: exactly ``dice`` with
    ``smooth`` doubled (``tversky`` smooth 0.5 is ``dice`` smooth 1), since
    ``TP + (FP + FN) / 2 = (sum(p) + sum(t)) / 2``. Sums run in float32.

    Args:
        alpha: Weight of false positives, >= 0.
        beta: Weight of false negatives, >= 0. ``alpha + beta`` must be > 0.
        smooth: Added to numerator and denominator, >= 0; keeps an empty mask predicted
            empty at loss 0.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0):
        super().__init__()
        self.alpha = _check_option("tversky", "alpha", alpha)
        self.beta = _check_option("tversky", "beta", beta)
        self.smooth = _check_option("tversky", "smooth", smooth)
        if self.alpha == 0 and self.beta == 0:
            raise ConfigError(
                "tversky: alpha=0 and beta=0 make the index 1 whatever the prediction; "
                "make at least one of them > 0 (alpha weighs false positives, beta false "
                "negatives)"
            )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the soft Tversky loss as a float32 scalar."""
        return tversky_loss(logits, target, self.alpha, self.beta, self.smooth)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, smooth={self.smooth}"


@declare(accepts="binary")
def create_tversky(alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0) -> TverskyLoss:
    """Create the soft Tversky loss.

    Args:
        alpha: Weight of false positives, >= 0.
        beta: Weight of false negatives, >= 0.
        smooth: Added to numerator and denominator, >= 0.

    Returns:
        A :class:`TverskyLoss`.

    Raises:
        ConfigError: An option is negative, not finite or not a number, or both weights
            are 0.
    """
    return TverskyLoss(alpha, beta, smooth)
