"""Dice and IoU under the definitions papers and peer libraries use, side by side.

A segmentation score is a number only with its definition: over which pixels the counts
are summed (per image, or over the whole dataset), how classes are averaged, and what an
image scores when its truth, or its truth and prediction, are empty. This module
computes the common ones from the same per-image counts, so a number from segkit can be
put beside one from smp, MONAI or a paper (issue 29).

All start from hard predictions (binary: ``logit > 0``, i.e. probability > 0.5; K
classes: ``argmax``) and, for each image ``i`` and class ``c``, the pixel counts
``TP``, ``FP``, ``FN`` (pixels whose target is the ignore label are not counted).
``Dice = 2 TP / (2 TP + FP + FN)``, ``IoU = TP / (TP + FP + FN)``. A binary task scores
its foreground only (one "class"); a K-class task scores every class, background
included (smp's and MONAI's ``include_background=True``).

Per image (``*_per_image``, segkit's headline for binary runs, ``test_dice``):
    Each image's score, then the mean over images. An image whose truth and prediction
    are both empty scores 1 (binary). For K classes, each image averages the classes
    present in its truth or prediction (a class absent from both is left out, not
    scored 1), and an image with no such class is left out. Equals MONAI's
    ``DiceMetric(ignore_empty=False)`` and smp's ``reduction="micro-imagewise"`` with
    ``zero_division=1`` for binary masks.

Dataset (``*_dataset``; segkit's headline ``test_dice`` for K classes, mDice):
    TP, FP, FN summed over all images first, then one score (per class, then the mean
    over the classes present anywhere). smp's ``reduction="micro"`` for binary masks and
    ``"macro"`` for K classes (smp scores a class absent everywhere with
    ``zero_division``; here it is left out); MONAI's ``ConfusionMatrixMetric(
    compute_sample=False)``. Large objects weigh more than small ones; an image with an
    empty truth counts only through its false positives.

MONAI (``*_per_image_monai``): ``DiceMetric`` / ``MeanIoU`` with their default
    ``ignore_empty=True``: an (image, class) whose truth is empty is left out entirely,
    whatever was predicted (a false alarm on an empty image costs nothing); its ``"mean"``
    reduction averages each image's remaining classes, then the images that have one.

smp (``*_per_image_smp``): ``smp.metrics.f1_score`` / ``iou_score`` with
    ``reduction="macro-imagewise"`` (``"micro-imagewise"`` is the same for binary masks)
    and the default ``zero_division="warn"``: an (image, class) whose truth and
    prediction are both empty scores **0**; mean over images per class, then over
    classes.

So on a set where some images have empty truths, per image and smp's per-image scores
differ by exactly the share of empty-and-correctly-empty images; MONAI's ignores those
images and their false alarms.

Image level (``missed``, ``false_alarms``; :func:`detection_line`):
    Whether anything was found, whatever its pixels: an (image, class) whose truth holds
    the class but whose prediction holds none of it is ``missed``; one whose truth is
    empty but whose prediction is not is a ``false_alarm``. For a binary defect set these
    are the image-level misses and false alarms (a prediction anywhere on a defective
    image counts as found). A model that predicts nothing scores, per image, exactly the
    share of empty truths (:func:`predicts_nothing`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from segkit.errors import plural

__all__ = [
    "binary_counts",
    "detection_line",
    "predicts_nothing",
    "side_by_side",
    "scores_from_meter",
]


def binary_counts(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image ``TP, FP, FN`` of a binary batch: ``(N, 1, 3)`` float64 (one "class",
    the foreground), from ``logit > 0`` and a ``{0, 1}`` target, on the input's device."""
    pred = (logits.detach() > 0).flatten(1)
    true = target.detach().flatten(1) > 0.5
    tp = (pred & true).sum(1)
    fp = (pred & ~true).sum(1)
    fn = (~pred & true).sum(1)
    return torch.stack([tp, fp, fn], 1).double().unsqueeze(1)


def _nanmean(x: torch.Tensor) -> float:
    keep = x[~torch.isnan(x)]
    return float(keep.mean()) if keep.numel() else math.nan


def side_by_side(counts: torch.Tensor, *, binary: bool) -> dict[str, Any]:
    """Dice and IoU under each definition of the module docstring.

    Args:
        counts: ``(N, C, 3)`` per image and class: ``TP, FP, FN``.
        binary: The counts are a binary task's foreground (``C == 1``): per image, an
            image with empty truth and prediction then scores 1 instead of being left out.

    Returns:
        ``dice_per_image``, ``iou_per_image``, ``dice_dataset``, ``iou_dataset``,
        ``dice_per_image_monai``, ``iou_per_image_monai``, ``dice_per_image_smp``,
        ``iou_per_image_smp`` (floats, NaN where nothing is scored), and ``images``,
        ``empty_truth`` (image-class pairs with an empty truth), ``empty_both``
        (image-class pairs with truth and prediction empty), ``missed`` (pairs whose
        truth holds the class and whose prediction does not), ``false_alarms`` (pairs
        whose truth is empty and whose prediction is not).

    Raises:
        ValueError: ``counts`` is not ``(N, C, 3)``, or ``binary`` with ``C != 1``.
    """
    if counts.ndim != 3 or counts.shape[-1] != 3:
        raise ValueError(f"counts must be (N, C, 3) TP, FP, FN, got {tuple(counts.shape)}")
    if binary and counts.shape[1] != 1:
        raise ValueError(f"binary counts have one class, got {counts.shape[1]}")
    counts = counts.double().cpu()
    tp, fp, fn = counts.unbind(-1)
    union = tp + fp + fn
    truth = tp + fn
    nan = torch.full_like(tp, math.nan)
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), nan)
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    out: dict[str, Any] = {}
    # Per image, segkit's rule.
    if binary:
        out["dice_per_image"] = (
            float(torch.nan_to_num(dice, nan=1.0).mean()) if len(tp) else math.nan
        )
        out["iou_per_image"] = float(torch.nan_to_num(iou, nan=1.0).mean()) if len(tp) else math.nan
    else:
        per_dice = torch.nanmean(dice, 1)  # NaN for an image with no class present
        per_iou = torch.nanmean(iou, 1)
        out["dice_per_image"] = _nanmean(per_dice)
        out["iou_per_image"] = _nanmean(per_iou)
    # Dataset: sums first.
    stp, sfp, sfn = tp.sum(0), fp.sum(0), fn.sum(0)
    sunion = stp + sfp + sfn
    snan = torch.full_like(stp, math.nan)
    out["dice_dataset"] = _nanmean(
        torch.where(sunion > 0, 2 * stp / (2 * stp + sfp + sfn).clamp_min(1), snan)
    )
    out["iou_dataset"] = _nanmean(torch.where(sunion > 0, stp / sunion.clamp_min(1), snan))
    # MONAI, ignore_empty=True: pairs with an empty truth are NaN; its "mean" reduction
    # averages each image's non-NaN classes, then the images that have one.
    has_truth = truth > 0
    out["dice_per_image_monai"] = _nanmean(torch.nanmean(torch.where(has_truth, dice, nan), 1))
    out["iou_per_image_monai"] = _nanmean(torch.nanmean(torch.where(has_truth, iou, nan), 1))
    # smp, macro-imagewise, zero_division 0: empty-and-empty scores 0.
    if len(tp):
        out["dice_per_image_smp"] = float(torch.nan_to_num(dice, nan=0.0).mean(0).mean())
        out["iou_per_image_smp"] = float(torch.nan_to_num(iou, nan=0.0).mean(0).mean())
    else:
        out["dice_per_image_smp"] = out["iou_per_image_smp"] = math.nan
    out["images"] = int(counts.shape[0])
    out["empty_truth"] = int((~has_truth).sum())
    out["empty_both"] = int((union == 0).sum())
    predicted = (tp + fp) > 0
    out["missed"] = int((has_truth & ~predicted).sum())
    out["false_alarms"] = int((~has_truth & predicted).sum())
    return out


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def detection_line(scores: dict[str, Any], split: str = "test") -> str:
    """A binary task's image-level result from :func:`side_by_side`'s counts, in words:
    ``test images: 6 with foreground, 5 found, 1 missed (detection rate 83%); 6 empty,
    2 false alarms (false-alarm rate 33%)``. "" where the counts are not there (an older
    summary) or there are no images."""
    try:
        images, empty, missed, alarms = (
            int(scores[k]) for k in ("images", "empty_truth", "missed", "false_alarms")
        )
    except (KeyError, TypeError, ValueError):
        return ""
    if not images:
        return ""
    held = images - empty
    return (
        f"{split} images: {held} with foreground, {held - missed} found, {missed} missed "
        f"(detection rate {_rate(held - missed, held)}); {empty} empty, "
        f"{plural(alarms, 'false alarm')} (false-alarm rate {_rate(alarms, empty)})"
    )


def predicts_nothing(scores: dict[str, Any], split: str = "test") -> str:
    """A warning where a binary model predicted no foreground on any image of a split
    that holds some (every image with foreground missed, no false alarm), saying what
    its per-image Dice then is: the share of empty truths, earned by predicting nothing.
    "" otherwise."""
    images, empty = int(scores.get("images", 0)), int(scores.get("empty_truth", 0))
    held = images - empty
    if not held or scores.get("missed") != held or scores.get("false_alarms"):
        return ""
    dice = scores.get("dice_per_image", math.nan)
    which = "" if split == "all" else f"{split} "
    return (
        f"the model predicts no foreground on any of the {images} {which}images "
        f"({held} hold some): its per-image dice {dice:.4f} is the share of empty masks "
        f"({empty} of {images}), scored 1 each for predicting nothing. Train longer, or "
        "score it at a lower threshold to see whether it finds anything (segkit evaluate "
        "--threshold 0.3); docs/metrics.md, Empty masks"
    )


def scores_from_meter(meter: Any, task: Any = None) -> dict[str, Any]:
    """:func:`side_by_side` of a pass's meter made with ``per_image=True``
    (:meth:`segkit.task.Task.meter`: binary or K classes), from its
    ``per_image_counts()``."""
    counts = meter.per_image_counts()
    binary = task is None or not getattr(task, "multiclass", False)
    return side_by_side(counts, binary=binary)
