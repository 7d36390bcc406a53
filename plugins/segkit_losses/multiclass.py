"""Multi-class segmentation losses, as ``segkit.losses`` plugins:

- ``ce``: cross-entropy, optional class ``weight``.
- ``mc_dice``: soft Dice on softmax probabilities, per class, mean over present classes.
- ``ce_dice``: ``ce_weight * ce + dice_weight * mc_dice`` (the default for K > 1 classes).
- ``mc_focal``: softmax focal loss (``gamma``, optional per-class ``alpha``).
- ``lovasz_softmax``: the Lovasz-softmax loss (Berman et al., 2018), per image or batch.
- ``mc_tversky``: soft Tversky (``alpha`` weighs false positives, ``beta`` false negatives).

Every loss takes **logits** ``(N, K, H, W)`` (``K >= 2``) in any float dtype and a
``target`` ``(N, H, W)`` integer class map (``torch.long``; any integer dtype works)
holding values in ``[0, K)`` or ``ignore_index`` (option, default 255: the VOC/Cityscapes
"void" label). Ignored pixels are excluded everywhere: they add nothing to the loss and
their logits get exactly zero gradient. Every reduction runs in float32 and the result
is a float32 scalar. A batch whose pixels are all ignored gives loss 0 (not NaN).

Target values are **not** checked by default: checking them needs a host sync
(``.any()`` read back on the CPU) every step, and the engine checks mask values once
when it loads them. Pass ``check_targets=True`` to have a loss raise a ValueError naming
the values outside ``[0, K)`` that are not ``ignore_index`` (useful when calling a loss
by hand; without it a bad value fails inside ``one_hot``/``cross_entropy``, on CUDA as a
device-side assert). Shapes are always checked (no sync).

Each factory declares ``accepts = "multiclass"`` (see
:func:`segkit.contracts.loss_accepts`); the binary losses in :mod:`segkit_losses`
declare ``"binary"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkit.contracts import declare
from segkit.errors import ConfigError
from segkit_losses import _check_option

__all__ = [
    "CEDiceLoss",
    "CrossEntropyLoss",
    "LovaszSoftmaxLoss",
    "MultiClassDiceLoss",
    "MultiClassFocalLoss",
    "MultiClassTverskyLoss",
    "create_ce",
    "create_ce_dice",
    "create_lovasz_softmax",
    "create_mc_dice",
    "create_mc_focal",
    "create_mc_tversky",
    "check_multiclass_inputs",
]

#: Keeps a Dice/Tversky denominator away from 0 (smp's ``eps``).
EPS = 1e-7


# ----------------------------------------------------------------------------- options


def _ignore_index(loss: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{loss}: ignore_index={value!r} must be an int (255 by default)")
    return value


def _flag(loss: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{loss}: {name}={value!r} must be true or false")
    return value


def _class_weights(loss: str, name: str, value: object) -> tuple[float, ...] | None:
    """None, or a list of K numbers >= 0, not all 0 (K is checked against the logits)."""
    if value is None:
        return None
    if value == "auto":
        raise ConfigError(
            f"{loss}: {name}='auto' is resolved by segkit run (median-frequency weights of "
            "the train split's classes); give a list when creating the loss directly"
        )
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) < 2:
        raise ConfigError(
            f"{loss}: {name}={value!r} must be a list of one number >= 0 per class "
            "(at least 2), or null"
        )
    weights = tuple(_check_option(loss, f"{name}[{i}]", v) for i, v in enumerate(value))
    if not any(weights):
        raise ConfigError(f"{loss}: {name}={list(value)!r} is all 0; nothing would be learned")
    return weights


# ----------------------------------------------------------------------------- inputs


def check_multiclass_inputs(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    check_targets: bool = False,
) -> None:
    """Raise a ValueError unless ``logits`` is ``(N, K, H, W)`` float with ``K >= 2`` and
    ``target`` an integer ``(N, H, W)``. With ``check_targets``, also unless every target
    value is in ``[0, K)`` or ``ignore_index`` (this reads a flag back to the host: a sync).
    """
    if logits.ndim != 4 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be float (N, K, H, W); got {logits.dtype} {tuple(logits.shape)}"
        )
    n, k, h, w = logits.shape
    if k < 2:
        raise ValueError(
            f"logits have K={k} channel; multi-class losses need K >= 2 (one per class); "
            "use a binary loss (bce, dice, bce_dice, ...) for one channel"
        )
    if target.shape != (n, h, w):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; "
            f"expected a class map ({n}, {h}, {w})"
        )
    if target.is_floating_point() or target.dtype in (torch.bool, torch.complex64):
        raise ValueError(f"target must be an integer class map (torch.long); got {target.dtype}")
    if check_targets:
        bad = ((target < 0) | (target >= k)) & (target != ignore_index)
        if bool(bad.any()):
            values = torch.unique(target[bad]).tolist()
            shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
            raise ValueError(
                f"target holds values {shown} outside [0, {k}) that are not "
                f"ignore_index={ignore_index}"
            )


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, check_targets: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits, the target with ignored pixels set to class 0, and the valid mask."""
    check_multiclass_inputs(logits, target, ignore_index, check_targets)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    return logits.float(), safe, valid


def _class_tensor(weights: tuple[float, ...], k: int, name: str, like: torch.Tensor):
    if len(weights) != k:
        raise ValueError(f"{name} has {len(weights)} values but the logits have K={k} classes")
    return torch.tensor(weights, dtype=torch.float32, device=like.device)


def _masked_probs(x: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor):
    """Softmax probabilities and one-hot target, both zero at ignored pixels, (N, K, HW)."""
    k = x.shape[1]
    mask = valid.flatten(1).unsqueeze(1).float()  # (N, 1, HW)
    probs = torch.softmax(x, dim=1).flatten(2) * mask
    onehot = F.one_hot(safe.flatten(1), k).permute(0, 2, 1).float() * mask
    return probs, onehot


def _mean_over_present(loss: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean of ``loss`` over the classes where ``present``; 0 when none is."""
    present = present.float()
    return (loss * present).sum() / present.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------- functions


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Sequence[float] | None = None,
    ignore_index: int = 255,
    check_targets: bool = False,
) -> torch.Tensor:
    """Cross-entropy over the non-ignored pixels, in float32: the mean of
    ``-weight[t] * log softmax(x)[t]`` divided by the sum of ``weight[t]`` (as
    :func:`torch.nn.functional.cross_entropy`); 0 when every pixel is ignored."""
    x, safe, valid = _prepare(logits, target, ignore_index, check_targets)
    w = None if weight is None else _class_tensor(tuple(weight), x.shape[1], "weight", x)
    per_pixel = F.cross_entropy(x, safe, weight=w, reduction="none") * valid
    denom = valid.float() if w is None else w[safe] * valid
    return per_pixel.sum() / denom.sum().clamp_min(torch.finfo(torch.float32).tiny)


def multiclass_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 0.0,
    ignore_index: int = 255,
    check_targets: bool = False,
) -> torch.Tensor:
    """Soft Dice loss per class over the batch, mean over present classes (see
    :class:`MultiClassDiceLoss`)."""
    x, safe, valid = _prepare(logits, target, ignore_index, check_targets)
    probs, onehot = _masked_probs(x, safe, valid)
    inter = (probs * onehot).sum(dim=(0, 2))
    card = (probs + onehot).sum(dim=(0, 2))
    dice = (2.0 * inter + smooth) / (card + smooth).clamp_min(EPS)
    return _mean_over_present(1.0 - dice, onehot.sum(dim=(0, 2)) > 0)


def multiclass_tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 0.0,
    ignore_index: int = 255,
    check_targets: bool = False,
) -> torch.Tensor:
    """Soft Tversky loss per class over the batch, mean over present classes (see
    :class:`MultiClassTverskyLoss`)."""
    x, safe, valid = _prepare(logits, target, ignore_index, check_targets)
    probs, onehot = _masked_probs(x, safe, valid)
    tp = (probs * onehot).sum(dim=(0, 2))
    fp = probs.sum(dim=(0, 2)) - tp
    fn = onehot.sum(dim=(0, 2)) - tp
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(EPS)
    return _mean_over_present(1.0 - index, onehot.sum(dim=(0, 2)) > 0)


def multiclass_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: Sequence[float] | None = None,
    ignore_index: int = 255,
    check_targets: bool = False,
) -> torch.Tensor:
    """Softmax focal loss, mean over the non-ignored pixels (see :class:`MultiClassFocalLoss`)."""
    x, safe, valid = _prepare(logits, target, ignore_index, check_targets)
    logp = torch.log_softmax(x, dim=1)
    idx = safe.unsqueeze(1)
    logp_t = logp.gather(1, idx).squeeze(1)
    # log(1 - p_t) as the log-sum-exp of the other classes' log-probabilities: exact even
    # where p_t rounds to 1 (1 - p_t would be 0, and d/dp (1 - p)**gamma inf for gamma < 1).
    others = logp.scatter(1, idx, float("-inf"))
    log_1m_pt = torch.logsumexp(others, dim=1)
    loss = -torch.exp(gamma * log_1m_pt) * logp_t
    if alpha is not None:
        loss = _class_tensor(tuple(alpha), x.shape[1], "alpha", x)[safe] * loss
    loss = loss * valid
    return loss.sum() / valid.sum().clamp_min(1)


def lovasz_softmax(
    logits: torch.Tensor,
    target: torch.Tensor,
    per_image: bool = False,
    classes: str = "present",
    ignore_index: int = 255,
    check_targets: bool = False,
) -> torch.Tensor:
    """The Lovasz-softmax loss (see :class:`LovaszSoftmaxLoss`), in float32."""
    x, safe, valid = _prepare(logits, target, ignore_index, check_targets)
    n, k = x.shape[:2]
    probs = torch.softmax(x, dim=1).flatten(2).transpose(1, 2)  # (N, P, K)
    fg = F.one_hot(safe.flatten(1), k).float()  # (N, P, K)
    valid = valid.flatten(1).unsqueeze(2).expand_as(fg)
    if not per_image:
        probs, fg, valid = (t.reshape(1, -1, k) for t in (probs, fg, valid))
    fg = fg * valid
    # Ignored pixels get error -1: sorted after every real pixel (errors are >= 0), so the
    # real pixels' Jaccard increments are those of the valid pixels alone.
    errors = torch.where(valid, (fg - probs).abs(), torch.full_like(probs, -1.0))
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    fg_sorted = torch.gather(fg, 1, order)
    gts = fg_sorted.sum(dim=1, keepdim=True)
    intersection = gts - fg_sorted.cumsum(dim=1)
    union = gts + (1.0 - fg_sorted).cumsum(dim=1)
    jaccard = 1.0 - intersection / union
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    per_class = (errors_sorted.clamp_min(0.0) * grad).sum(dim=1)  # (N or 1, K)
    if classes == "present":
        present = (gts.squeeze(1) > 0).float()
    else:  # "all": every class, but not in an image with no valid pixel
        present = valid.any(dim=1).float()
    per_image_loss = (per_class * present).sum(dim=1) / present.sum(dim=1).clamp_min(1.0)
    return per_image_loss.mean()


# ----------------------------------------------------------------------------- modules


class _MultiClassLoss(nn.Module):
    name = ""

    def __init__(self, ignore_index: int, check_targets: bool):
        super().__init__()
        self.ignore_index = _ignore_index(self.name, ignore_index)
        self.check_targets = _flag(self.name, "check_targets", check_targets)

    def _common_repr(self) -> str:
        extra = ", check_targets=True" if self.check_targets else ""
        return f"ignore_index={self.ignore_index}{extra}"


class CrossEntropyLoss(_MultiClassLoss):
    """Cross-entropy on softmax logits over the non-ignored pixels::

        loss = sum_i w[t_i] * -log softmax(x_i)[t_i] / sum_i w[t_i]

    exactly :func:`torch.nn.functional.cross_entropy` (``reduction="mean"``), computed in
    float32, except that an all-ignored batch gives 0 instead of NaN.

    Args:
        weight: One weight >= 0 per class (e.g. inverse frequencies), or None for 1.
        ignore_index: Target value to ignore (default 255).
        check_targets: Check target values (a host sync; see the module docstring).
    """

    name = "ce"

    def __init__(
        self,
        weight: Sequence[float] | None = None,
        ignore_index: int = 255,
        check_targets: bool = False,
    ):
        super().__init__(ignore_index, check_targets)
        self.weight = _class_weights(self.name, "weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, self.weight, self.ignore_index, self.check_targets)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, {self._common_repr()}"


class MultiClassDiceLoss(_MultiClassLoss):
    """Soft Dice loss on ``p = softmax(logits)``, per class over the whole batch::

        dice_c = (2 * sum(p_c * t_c) + smooth) / max(sum(p_c) + sum(t_c) + smooth, 1e-7)
        loss   = 1 - mean over present classes c of dice_c

    where the sums run over the non-ignored pixels of every image and ``t_c`` is the one-hot
    target. This is smp's ``DiceLoss(mode="multiclass")`` (batch-level per-class sums,
    ``smooth=0``, ``eps=1e-7``, ignored pixels masked out of both ``p`` and ``t``) with one
    difference: a class absent from the batch's target is left out of the mean, where smp
    counts it as loss 0 and so divides by K (a batch with 2 of 21 classes would give a loss
    10 times smaller). An absent class's false positives are therefore not penalized by
    Dice (as in smp); cross-entropy covers them in ``ce_dice``. A batch with no valid pixel
    gives 0.

    Args:
        smooth: Added to numerator and denominator, >= 0 (default 0, as smp).
        ignore_index: Target value to ignore (default 255).
        check_targets: Check target values (a host sync; see the module docstring).
    """

    name = "mc_dice"

    def __init__(self, smooth: float = 0.0, ignore_index: int = 255, check_targets: bool = False):
        super().__init__(ignore_index, check_targets)
        self.smooth = _check_option(self.name, "smooth", smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return multiclass_dice_loss(
            logits, target, self.smooth, self.ignore_index, self.check_targets
        )

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, {self._common_repr()}"


class CEDiceLoss(_MultiClassLoss):
    """``ce_weight * ce + dice_weight * mc_dice``: the default loss for K > 1 classes
    (cross-entropy gives every pixel a gradient; Dice counters class imbalance).

    Args:
        ce_weight: Weight of the cross-entropy term, >= 0.
        dice_weight: Weight of the Dice term, >= 0. At least one weight must be > 0.
        weight: Cross-entropy class weights (see :class:`CrossEntropyLoss`).
        smooth: Dice smoothing, >= 0 (see :class:`MultiClassDiceLoss`).
        ignore_index: Target value to ignore in both terms (default 255).
        check_targets: Check target values (a host sync; see the module docstring).
    """

    name = "ce_dice"

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        weight: Sequence[float] | None = None,
        smooth: float = 0.0,
        ignore_index: int = 255,
        check_targets: bool = False,
    ):
        super().__init__(ignore_index, check_targets)
        self.ce_weight = _check_option(self.name, "ce_weight", ce_weight)
        self.dice_weight = _check_option(self.name, "dice_weight", dice_weight)
        if self.ce_weight == 0 and self.dice_weight == 0:
            raise ConfigError(
                "ce_dice: ce_weight=0 and dice_weight=0 leave nothing to minimize; "
                "make at least one of them > 0"
            )
        self.weight = _class_weights(self.name, "weight", weight)
        self.smooth = _check_option(self.name, "smooth", smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check = self.check_targets
        ce = cross_entropy(logits, target, self.weight, self.ignore_index, check)
        dice = multiclass_dice_loss(logits, target, self.smooth, self.ignore_index, False)
        return self.ce_weight * ce + self.dice_weight * dice

    def extra_repr(self) -> str:
        return (
            f"ce_weight={self.ce_weight}, dice_weight={self.dice_weight}, weight={self.weight}, "
            f"smooth={self.smooth}, {self._common_repr()}"
        )


class MultiClassFocalLoss(_MultiClassLoss):
    """Softmax focal loss (Lin et al., 2017), mean over the non-ignored pixels::

        p_t  = softmax(x)[t]
        loss = mean(-alpha[t] * (1 - p_t) ** gamma * log(p_t))

    ``gamma=0, alpha=None`` is cross-entropy. ``log(1 - p_t)`` is computed as the
    log-sum-exp of the other classes' log-probabilities, so confident pixels neither
    round to 0 nor give an inf gradient for ``gamma < 1``. Float32 throughout.

    Args:
        gamma: Focusing exponent, >= 0 (the paper uses 2).
        alpha: One weight >= 0 per class, or None (default) to weigh every class 1.
            Unlike ``weight`` in ``ce``, the mean is over pixels, not over weights.
        ignore_index: Target value to ignore (default 255).
        check_targets: Check target values (a host sync; see the module docstring).
    """

    name = "mc_focal"

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Sequence[float] | None = None,
        ignore_index: int = 255,
        check_targets: bool = False,
    ):
        super().__init__(ignore_index, check_targets)
        self.gamma = _check_option(self.name, "gamma", gamma)
        self.alpha = _class_weights(self.name, "alpha", alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return multiclass_focal_loss(
            logits, target, self.gamma, self.alpha, self.ignore_index, self.check_targets
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, {self._common_repr()}"


class LovaszSoftmaxLoss(_MultiClassLoss):
    """The Lovasz-softmax loss (Berman et al., 2018, "The Lovasz-Softmax loss: A tractable
    surrogate for the optimization of the intersection-over-union measure").

    For each class ``c``, with errors ``e_i = |[t_i = c] - softmax(x_i)[c]|`` over the
    non-ignored pixels sorted so that ``e_(1) >= e_(2) >= ...``::

        loss_c = sum_i e_(i) * (J_c({1..i}) - J_c({1..i-1}))

    with ``J_c`` the Jaccard loss of class ``c`` (the Lovasz extension of 1 - IoU), and
    the loss is the mean of ``loss_c`` over the classes (``classes="present"``: those in
    the target; ``"all"``: every class). ``per_image=True`` computes it per image and
    averages over the batch (an image with no valid pixel counts as 0, as in the authors'
    code); ``False`` (default) treats the batch as one image. Float32; sorting costs
    ``O(P log P)`` per class for ``P`` pixels.

    Args:
        per_image: Per image, averaged (True), or over the whole batch (False).
        classes: "present" (default) or "all".
        ignore_index: Target value to ignore (default 255).
        check_targets: Check target values (a host sync; see the module docstring).
    """

    name = "lovasz_softmax"

    def __init__(
        self,
        per_image: bool = False,
        classes: str = "present",
        ignore_index: int = 255,
        check_targets: bool = False,
    ):
        super().__init__(ignore_index, check_targets)
        self.per_image = _flag(self.name, "per_image", per_image)
        if classes not in ("present", "all"):
            raise ConfigError(f"lovasz_softmax: classes={classes!r} must be 'present' or 'all'")
        self.classes = classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lovasz_softmax(
            logits, target, self.per_image, self.classes, self.ignore_index, self.check_targets
        )

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}, classes={self.classes!r}, {self._common_repr()}"


class MultiClassTverskyLoss(_MultiClassLoss):
    """Soft Tversky loss (Salehi et al., 2017) on ``p = softmax(logits)``, per class over
    the batch, mean over present classes (as :class:`MultiClassDiceLoss`)::

        TP_c = sum(p_c * t_c), FP_c = sum(p_c * (1 - t_c)), FN_c = sum((1 - p_c) * t_c)
        loss = 1 - mean_c (TP_c + smooth) / max(TP_c + alpha FP_c + beta FN_c + smooth, 1e-7)

    over the non-ignored pixels. ``alpha = beta = 0.5`` is ``mc_dice`` with ``smooth``
    doubled (with the default ``smooth=0``: exactly ``mc_dice``).

    Args:
        alpha: Weight of false positives, >= 0.
        beta: Weight of false negatives, >= 0. ``alpha + beta`` must be > 0.
        smooth: Added to numerator and denominator, >= 0 (default 0).
        ignore_index: Target value to ignore (default 255).
        check_targets: Check target values (a host sync; see the module docstring).
    """

    name = "mc_tversky"

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        smooth: float = 0.0,
        ignore_index: int = 255,
        check_targets: bool = False,
    ):
        super().__init__(ignore_index, check_targets)
        self.alpha = _check_option(self.name, "alpha", alpha)
        self.beta = _check_option(self.name, "beta", beta)
        self.smooth = _check_option(self.name, "smooth", smooth)
        if self.alpha == 0 and self.beta == 0:
            raise ConfigError(
                "mc_tversky: alpha=0 and beta=0 make the index 1 whatever the prediction; "
                "make at least one of them > 0"
            )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return multiclass_tversky_loss(
            logits,
            target,
            self.alpha,
            self.beta,
            self.smooth,
            self.ignore_index,
            self.check_targets,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, smooth={self.smooth}, {self._common_repr()}"


# ----------------------------------------------------------------------------- factories


@declare(accepts="multiclass")
def create_ce(
    weight: Sequence[float] | None = None, ignore_index: int = 255, check_targets: bool = False
) -> CrossEntropyLoss:
    """Create the multi-class cross-entropy (:class:`CrossEntropyLoss`).

    Raises:
        ConfigError: a bad option (the message names it).
    """
    return CrossEntropyLoss(weight, ignore_index, check_targets)


@declare(accepts="multiclass")
def create_mc_dice(
    smooth: float = 0.0, ignore_index: int = 255, check_targets: bool = False
) -> MultiClassDiceLoss:
    """Create the multi-class soft Dice loss (:class:`MultiClassDiceLoss`).

    Raises:
        ConfigError: a bad option (the message names it).
    """
    return MultiClassDiceLoss(smooth, ignore_index, check_targets)


@declare(accepts="multiclass")
def create_ce_dice(
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    weight: Sequence[float] | None = None,
    smooth: float = 0.0,
    ignore_index: int = 255,
    check_targets: bool = False,
) -> CEDiceLoss:
    """Create ``ce_weight * ce + dice_weight * mc_dice`` (:class:`CEDiceLoss`).

    Raises:
        ConfigError: a bad option (the message names it), or both weights 0.
    """
    return CEDiceLoss(ce_weight, dice_weight, weight, smooth, ignore_index, check_targets)


@declare(accepts="multiclass")
def create_mc_focal(
    gamma: float = 2.0,
    alpha: Sequence[float] | None = None,
    ignore_index: int = 255,
    check_targets: bool = False,
) -> MultiClassFocalLoss:
    """Create the softmax focal loss (:class:`MultiClassFocalLoss`).

    Raises:
        ConfigError: a bad option (the message names it).
    """
    return MultiClassFocalLoss(gamma, alpha, ignore_index, check_targets)


@declare(accepts="multiclass")
def create_lovasz_softmax(
    per_image: bool = False,
    classes: str = "present",
    ignore_index: int = 255,
    check_targets: bool = False,
) -> LovaszSoftmaxLoss:
    """Create the Lovasz-softmax loss (:class:`LovaszSoftmaxLoss`).

    Raises:
        ConfigError: a bad option (the message names it).
    """
    return LovaszSoftmaxLoss(per_image, classes, ignore_index, check_targets)


@declare(accepts="multiclass")
def create_mc_tversky(
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 0.0,
    ignore_index: int = 255,
    check_targets: bool = False,
) -> MultiClassTverskyLoss:
    """Create the multi-class soft Tversky loss (:class:`MultiClassTverskyLoss`).

    Raises:
        ConfigError: a bad option (the message names it), or both weights 0.
    """
    return MultiClassTverskyLoss(alpha, beta, smooth, ignore_index, check_targets)
