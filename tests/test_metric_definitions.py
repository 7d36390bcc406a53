"""Dice and IoU under each definition of segkit.metrics.definitions, pinned to values
computed by hand, and the meters' per-image counts they are computed from."""

from __future__ import annotations

import math

import pytest
import torch

from segkit.metrics.binary import DiceMeter
from segkit.metrics.definitions import (
    binary_counts,
    detection_line,
    predicts_nothing,
    side_by_side,
)
from segkit.metrics.multiclass import ConfusionMeter


def _masks(*rows: str) -> torch.Tensor:
    """One (1, 1, 1, W) mask per string of 0/1."""
    return torch.tensor([[[[float(c) for c in r]]] for r in rows])


def _binary_batch():
    """Four 1x8 images, prediction against truth:

    0: truth 4 px, prediction 4 px overlapping 2: TP 2, FP 2, FN 2: Dice 1/2, IoU 1/3
    1: truth 4 px, prediction exact:              TP 4:             Dice 1,   IoU 1
    2: truth empty, prediction empty:             nothing:          Dice -,   IoU -
    3: truth empty, prediction 2 px:              FP 2:             Dice 0,   IoU 0
    """
    truth = _masks("11110000", "00001111", "00000000", "00000000")
    pred = _masks("00111100", "00001111", "00000000", "11000000")
    return pred * 2 - 1, truth  # logits: +1 where predicted, -1 elsewhere


def test_binary_counts():
    logits, truth = _binary_batch()
    counts = binary_counts(logits, truth)
    assert counts.shape == (4, 1, 3)
    assert counts[:, 0].tolist() == [[2, 2, 2], [4, 0, 0], [0, 0, 0], [0, 2, 0]]


def test_binary_definitions_by_hand():
    logits, truth = _binary_batch()
    s = side_by_side(binary_counts(logits, truth), binary=True)
    # Per image, both-empty = 1 (segkit, MONAI ignore_empty=False): (1/2 + 1 + 1 + 0) / 4.
    assert s["dice_per_image"] == pytest.approx(2.5 / 4)
    assert s["iou_per_image"] == pytest.approx((1 / 3 + 1 + 1 + 0) / 4)
    # Dataset: TP 6, FP 4, FN 2: Dice 12 / 18, IoU 6 / 12.
    assert s["dice_dataset"] == pytest.approx(12 / 18)
    assert s["iou_dataset"] == pytest.approx(6 / 12)
    # MONAI ignore_empty=True: images 2 and 3 (empty truth) left out: (1/2 + 1) / 2.
    assert s["dice_per_image_monai"] == pytest.approx(0.75)
    assert s["iou_per_image_monai"] == pytest.approx((1 / 3 + 1) / 2)
    # smp micro-imagewise, zero_division 0: both-empty = 0: (1/2 + 1 + 0 + 0) / 4.
    assert s["dice_per_image_smp"] == pytest.approx(1.5 / 4)
    assert s["iou_per_image_smp"] == pytest.approx((1 / 3 + 1) / 4)
    assert (s["images"], s["empty_truth"], s["empty_both"]) == (4, 2, 1)


def test_dice_meter_keeps_counts_and_agrees_with_its_mean():
    logits, truth = _binary_batch()
    meter = DiceMeter(per_image=True)
    meter.update(logits[:3], truth[:3])
    meter.update(logits[3:], truth[3:])
    counts = meter.per_image_counts()
    assert counts[:, 0].tolist() == [[2, 2, 2], [4, 0, 0], [0, 0, 0], [0, 2, 0]]
    s = side_by_side(counts, binary=True)
    # The per-image definition is the meter's own headline.
    assert s["dice_per_image"] == pytest.approx(meter.compute()["dice"])
    assert s["iou_per_image"] == pytest.approx(meter.compute()["iou"])
    with pytest.raises(RuntimeError, match="per_image=True"):
        DiceMeter().per_image_counts()


def _multiclass_batch():
    """Two 1x6 images, 3 classes, label 255 ignored.

    image 0: truth   0 0 1 1 2 2      image 1: truth   0 0 0 0 255 255
             pred    0 1 1 1 2 0               pred    0 0 0 2 1   1
    """
    truth = torch.tensor([[[0, 0, 1, 1, 2, 2]], [[0, 0, 0, 0, 255, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1, 2, 0]], [[0, 0, 0, 2, 1, 1]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    return logits, truth


def test_multiclass_counts_skip_ignored_pixels():
    logits, truth = _multiclass_batch()
    meter = ConfusionMeter(3, per_image=True, ignore_index=255)
    meter.update(logits, truth)
    counts = meter.per_image_counts()
    # image 0: class 0 TP1 FP1 FN1; class 1 TP2 FP1 FN0; class 2 TP1 FP0 FN1
    # image 1 (ignored pixels not counted): class 0 TP3 FN1; class 1 none; class 2 FP1
    assert counts.tolist() == [
        [[1, 1, 1], [2, 1, 0], [1, 0, 1]],
        [[3, 0, 1], [0, 0, 0], [0, 1, 0]],
    ]


def test_multiclass_definitions_by_hand():
    logits, truth = _multiclass_batch()
    meter = ConfusionMeter(3, per_image=True, ignore_index=255)
    meter.update(logits, truth)
    s = side_by_side(meter.per_image_counts(), binary=False)
    d0 = [2 / 4, 4 / 5, 2 / 3]  # image 0: Dice of classes 0, 1, 2
    d1 = [6 / 7, math.nan, 0.0]  # image 1: class 1 absent from truth and prediction
    # Per image (segkit): classes present in truth or prediction, then images.
    assert s["dice_per_image"] == pytest.approx((sum(d0) / 3 + (6 / 7 + 0) / 2) / 2)
    assert s["dice_per_image"] == pytest.approx(meter.compute()["mdice_images"])
    # Dataset (smp macro): sums TP/FP/FN per class: 0: 4/1/2, 1: 2/1/0, 2: 1/1/1.
    assert s["dice_dataset"] == pytest.approx((8 / 11 + 4 / 5 + 2 / 4) / 3)
    assert s["dice_dataset"] == pytest.approx(meter.compute()["mdice"])
    assert s["iou_dataset"] == pytest.approx((4 / 7 + 2 / 3 + 1 / 3) / 3)
    # MONAI ignore_empty=True: image 1's classes 1 and 2 have no truth: left out.
    assert s["dice_per_image_monai"] == pytest.approx((sum(d0) / 3 + 6 / 7) / 2)
    # smp macro-imagewise, zero_division 0: per class over images, then classes.
    per_class = [(d0[c] + (0.0 if math.isnan(d1[c]) else d1[c])) / 2 for c in range(3)]
    assert s["dice_per_image_smp"] == pytest.approx(sum(per_class) / 3)
    assert (s["images"], s["empty_truth"], s["empty_both"]) == (2, 2, 1)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match=r"\(N, C, 3\)"):
        side_by_side(torch.zeros(4, 3), binary=True)
    with pytest.raises(ValueError, match="one class"):
        side_by_side(torch.zeros(4, 2, 3), binary=True)


def test_empty_pass_gives_nan():
    s = side_by_side(torch.zeros(0, 1, 3), binary=True)
    assert math.isnan(s["dice_per_image"]) and math.isnan(s["dice_dataset"])
    assert s["images"] == 0


@pytest.mark.slow
def test_summary_json_has_the_definitions_side_by_side(tiny_pets, tmp_path):
    """A run's summary.json holds test_metrics: the per-image Dice and IoU are its
    test_dice and test_iou (and test_scores.csv's means), beside the dataset-level,
    MONAI and smp values computed from the same test pass."""
    import csv
    import json

    from conftest import TINY_RUN

    from segkit.cli import main

    out = tmp_path / "runs"
    args = ["run", *TINY_RUN, "--epochs", "1", "--data", str(tiny_pets), "--out", str(out)]
    assert main([*args, "--name", "defs", "-q"]) == 0
    summary = json.loads((out / "defs" / "summary.json").read_text())
    m = summary["test_metrics"]
    assert m["dice_per_image"] == pytest.approx(summary["test_dice"], rel=1e-6)
    assert m["iou_per_image"] == pytest.approx(summary["test_iou"], rel=1e-6)
    rows = list(csv.DictReader((out / "defs" / "test_scores.csv").open()))
    assert m["images"] == len(rows) == 5
    for key in ("dice_dataset", "iou_dataset", "dice_per_image_monai", "dice_per_image_smp"):
        assert 0.0 <= m[key] <= 1.0 or math.isnan(m[key]), key
    # No test image of the synthetic pets is empty, so smp's and segkit's per-image rules
    # agree here.
    assert m["empty_truth"] == 0
    assert m["dice_per_image_smp"] == pytest.approx(m["dice_per_image"], rel=1e-6)


def test_image_level_counts_by_hand():
    """Image 0 and 1 hold foreground and are found; image 2 is empty and predicted empty;
    image 3 is empty with a false alarm. A fifth image with foreground and nothing
    predicted is missed."""
    logits, truth = _binary_batch()
    s = side_by_side(binary_counts(logits, truth), binary=True)
    assert (s["missed"], s["false_alarms"]) == (0, 1)
    miss_logits = torch.cat([logits, -torch.ones(1, 1, 1, 8)])
    miss_truth = torch.cat([truth, _masks("00011000")])
    s = side_by_side(binary_counts(miss_logits, miss_truth), binary=True)
    assert (s["images"], s["empty_truth"], s["missed"], s["false_alarms"]) == (5, 2, 1, 1)
    assert detection_line(s) == (
        "test images: 3 with foreground, 2 found, 1 missed (detection rate 67%); "
        "2 empty, 1 false alarm (false-alarm rate 50%)"
    )
    assert predicts_nothing(s) == ""  # it found two


def test_a_model_that_predicts_nothing_scores_the_share_of_empty_masks_and_is_warned():
    """On a defect set (6 of 10 masks empty), predicting no foreground anywhere scores a
    per-image Dice of 0.6 (each empty image 1, each defect 0): the warning says so."""
    truth = _masks(*["00000000"] * 6, "11000000", "00110000", "00001100", "00000011")
    logits = -torch.ones_like(truth)
    s = side_by_side(binary_counts(logits, truth), binary=True)
    assert s["dice_per_image"] == pytest.approx(0.6)
    assert s["dice_dataset"] == 0.0 and s["dice_per_image_monai"] == 0.0
    assert (s["missed"], s["false_alarms"]) == (4, 0)
    warning = predicts_nothing(s, "valid")
    assert warning.startswith(
        "the model predicts no foreground on any of the 10 valid images (4 hold some): "
        "its per-image dice 0.6000 is the share of empty masks (6 of 10)"
    )
    assert "--threshold" in warning and "docs/metrics.md" in warning
    # A set with no foreground at all, or a model that finds something, is not warned.
    assert predicts_nothing(side_by_side(binary_counts(logits[:6], truth[:6]), binary=True)) == ""
    logits[6] = 1
    assert predicts_nothing(side_by_side(binary_counts(logits, truth), binary=True)) == ""


def test_detection_line_without_counts_is_empty():
    """An older summary.json's test_metrics (no missed, false_alarms) gives no line."""
    assert detection_line({"images": 4, "empty_truth": 2, "empty_both": 1}) == ""
    assert detection_line(side_by_side(torch.zeros(0, 1, 3), binary=True)) == ""


def test_multiclass_image_level_counts_are_per_image_and_class():
    """K classes: missed and false_alarms count (image, class) pairs, as empty_truth does."""
    # Image 0: class 1 in truth, predicted nowhere (missed); class 2 absent, predicted
    # (false alarm). Image 1: class 1 in truth and found.
    counts = torch.tensor(
        [[[4, 0, 0], [0, 0, 3], [0, 3, 0]], [[5, 0, 0], [3, 0, 0], [0, 0, 0]]],
        dtype=torch.float64,
    )
    s = side_by_side(counts, binary=False)
    assert (s["empty_truth"], s["empty_both"], s["missed"], s["false_alarms"]) == (2, 1, 1, 1)
