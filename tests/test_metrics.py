"""segkit.metrics.binary: hard Dice / IoU per image and the running DiceMeter, against hand counts."""

from __future__ import annotations

import math

import pytest
import torch

from segkit.metrics.binary import DiceMeter, dice_iou_per_image


def as_batch(*masks: list[list[float]]) -> torch.Tensor:
    """``(N, 1, H, W)`` float32 from nested lists, one per image."""
    return torch.tensor(masks, dtype=torch.float32)[:, None]


def logits_for(mask: torch.Tensor) -> torch.Tensor:
    """Logits +2 where ``mask`` is 1 and -2 elsewhere."""
    return mask * 4 - 2


# 2x2: prediction (left column) vs target (top row). inter=1, |P|=2, |T|=2.
PRED_2X2 = [[1.0, 0.0], [1.0, 0.0]]
TRUE_2X2 = [[1.0, 1.0], [0.0, 0.0]]

# 3x3: |T|=5, |P|=4 (one pixel outside T), inter=3.
TRUE_3X3 = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
PRED_3X3 = [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_2x2_half_overlap() -> None:
    dice, iou = dice_iou_per_image(logits_for(as_batch(PRED_2X2)), as_batch(TRUE_2X2))
    # Dice = 2*1 / (2+2) = 1/2; IoU = 1 / (2+2-1) = 1/3.
    assert dice.tolist() == pytest.approx([1 / 2])
    assert iou.tolist() == pytest.approx([1 / 3])


def test_3x3_partial_overlap() -> None:
    dice, iou = dice_iou_per_image(logits_for(as_batch(PRED_3X3)), as_batch(TRUE_3X3))
    # Dice = 2*3 / (4+5) = 2/3; IoU = 3 / (4+5-3) = 1/2.
    assert dice.tolist() == pytest.approx([2 / 3])
    assert iou.tolist() == pytest.approx([1 / 2])


def test_returns_float32_vectors_of_batch_length() -> None:
    logits = logits_for(as_batch(PRED_2X2, TRUE_2X2))
    dice, iou = dice_iou_per_image(logits, as_batch(TRUE_2X2, TRUE_2X2))
    assert dice.shape == iou.shape == (2,)
    assert dice.dtype == iou.dtype == torch.float32
    # Second image: prediction equals the target exactly.
    assert dice.tolist() == pytest.approx([1 / 2, 1.0])
    assert iou.tolist() == pytest.approx([1 / 3, 1.0])


def test_batch_is_scored_per_image_not_pooled() -> None:
    # Image 1: one pixel predicted and true -> Dice 1, IoU 1.
    # Image 2: three true pixels, nothing predicted -> Dice 0, IoU 0.
    pred = as_batch([[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]])
    true = as_batch([[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]])
    dice, iou = dice_iou_per_image(logits_for(pred), true)
    assert dice.tolist() == [1.0, 0.0]
    assert iou.tolist() == [1.0, 0.0]

    meter = DiceMeter()
    meter.update(logits_for(pred), true)
    out = meter.compute()
    # Mean over images is 1/2; pooling the pixels would give Dice 2/5 and IoU 1/4.
    assert out["dice"] == pytest.approx(0.5)
    assert out["iou"] == pytest.approx(0.5)
    assert out["images"] == 2


def test_empty_target_and_empty_prediction_scores_one() -> None:
    empty = as_batch([[0.0, 0.0], [0.0, 0.0]])
    dice, iou = dice_iou_per_image(torch.full_like(empty, -3.0), empty)
    assert dice.tolist() == [1.0]
    assert iou.tolist() == [1.0]


def test_empty_target_with_predicted_pixels_scores_zero() -> None:
    empty = as_batch([[0.0, 0.0], [0.0, 0.0]])
    logits = logits_for(as_batch([[0.0, 1.0], [0.0, 0.0]]))
    dice, iou = dice_iou_per_image(logits, empty)
    assert dice.tolist() == [0.0]
    assert iou.tolist() == [0.0]


def test_full_overlap_scores_one() -> None:
    dice, iou = dice_iou_per_image(logits_for(as_batch(TRUE_3X3)), as_batch(TRUE_3X3))
    assert dice.tolist() == [1.0]
    assert iou.tolist() == [1.0]


def test_threshold_is_logit_above_zero() -> None:
    # Logit 0 (probability exactly 0.5) is background; the smallest positive logit is not.
    logits = as_batch([[0.0, 1e-6], [-1e-6, 0.0]])
    true = as_batch([[1.0, 1.0], [0.0, 0.0]])
    # Predicted: only (0, 1). inter=1, |P|=1, |T|=2 -> Dice 2/3, IoU 1/2.
    dice, iou = dice_iou_per_image(logits, true)
    assert dice.tolist() == pytest.approx([2 / 3])
    assert iou.tolist() == pytest.approx([1 / 2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_the_float32_result(dtype: torch.dtype) -> None:
    pred = as_batch(PRED_3X3)
    true = as_batch(TRUE_3X3)
    ref_dice, ref_iou = dice_iou_per_image(logits_for(pred), true)
    dice, iou = dice_iou_per_image(logits_for(pred).to(dtype), true.to(dtype))
    assert dice.dtype == iou.dtype == torch.float32
    assert torch.equal(dice, ref_dice)
    assert torch.equal(iou, ref_iou)


def test_512x512_fp16_sums_do_not_overflow() -> None:
    # 262144 pixels: any fp16 sum past 65504 would be inf and the score nan or 0.
    logits = torch.full((2, 1, 512, 512), 5.0, dtype=torch.float16)
    true = torch.ones((2, 1, 512, 512), dtype=torch.float16)
    true[1, :, 256:] = 0  # second image: only the top half is foreground
    dice, iou = dice_iou_per_image(logits, true)
    assert torch.isfinite(dice).all() and torch.isfinite(iou).all()
    # Image 1: full overlap. Image 2: inter=131072, |P|=262144, |T|=131072
    # -> Dice 262144/393216 = 2/3, IoU 131072/262144 = 1/2.
    assert dice.tolist() == pytest.approx([1.0, 2 / 3])
    assert iou.tolist() == pytest.approx([1.0, 1 / 2])


def test_gradients_are_not_tracked() -> None:
    logits = logits_for(as_batch(PRED_2X2)).requires_grad_()
    dice, iou = dice_iou_per_image(logits, as_batch(TRUE_2X2))
    assert not dice.requires_grad and not iou.requires_grad


# --- DiceMeter ---------------------------------------------------------------------------


def perfect(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 2x2 images predicted exactly (Dice 1, IoU 1)."""
    true = as_batch(*[TRUE_2X2] * n)
    return logits_for(true), true


def missed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 2x2 images with a true pixel and nothing predicted (Dice 0, IoU 0)."""
    true = as_batch(*[TRUE_2X2] * n)
    return torch.full_like(true, -1.0), true


def test_meter_mean_weights_images_not_batches() -> None:
    meter = DiceMeter()
    meter.update(*perfect(1), loss=torch.tensor(1.0))
    meter.update(*missed(3), loss=torch.tensor(3.0))
    out = meter.compute()
    # 1 image at Dice 1 and 3 at Dice 0: 1/4 (a mean of batch means would be 1/2).
    assert out["dice"] == pytest.approx(0.25)
    assert out["iou"] == pytest.approx(0.25)
    assert out["images"] == 4
    # The loss is already a batch mean: averaged over the 2 batches, (1 + 3) / 2.
    assert out["loss"] == pytest.approx(2.0)


def test_meter_running_mean_over_several_updates() -> None:
    meter = DiceMeter()
    # Per-image Dice: 1/2 (2x2 case), 2/3 (3x3 case), 1, 1.
    meter.update(logits_for(as_batch(PRED_2X2)), as_batch(TRUE_2X2), loss=torch.tensor(0.5))
    meter.update(logits_for(as_batch(PRED_3X3)), as_batch(TRUE_3X3), loss=torch.tensor(0.25))
    meter.update(*perfect(2), loss=torch.tensor(0.0))
    out = meter.compute()
    assert out["dice"] == pytest.approx((1 / 2 + 2 / 3 + 1 + 1) / 4)
    assert out["iou"] == pytest.approx((1 / 3 + 1 / 2 + 1 + 1) / 4)
    assert out["loss"] == pytest.approx(0.75 / 3)
    assert out["images"] == 4


def test_meter_without_loss_reports_nan_loss() -> None:
    meter = DiceMeter()
    meter.update(*perfect(2))
    out = meter.compute()
    assert out["dice"] == 1.0 and out["images"] == 2
    assert math.isnan(out["loss"])


def test_meter_loss_counts_only_batches_that_have_one() -> None:
    meter = DiceMeter()
    meter.update(*perfect(1), loss=torch.tensor(0.6))
    meter.update(*perfect(1))
    assert meter.compute()["loss"] == pytest.approx(0.6)


def test_meter_compute_without_updates() -> None:
    out = DiceMeter().compute()
    assert math.isnan(out["dice"]) and math.isnan(out["iou"]) and math.isnan(out["loss"])
    assert out["images"] == 0


def test_meter_reset() -> None:
    meter = DiceMeter()
    meter.update(*perfect(3), loss=torch.tensor(1.0))
    meter.reset()
    assert torch.equal(meter.state(), torch.zeros(7, dtype=torch.float64))
    out = meter.compute()
    assert math.isnan(out["dice"]) and out["images"] == 0
    meter.update(*missed(1), loss=torch.tensor(4.0))
    assert meter.compute() == {
        "dice": 0.0,
        "iou": 0.0,
        "loss": 4.0,
        "images": 1,
        "dice_dataset": 0.0,
    }


def test_meter_state_is_the_raw_accumulator() -> None:
    meter = DiceMeter()
    meter.update(logits_for(as_batch(PRED_2X2)), as_batch(TRUE_2X2), loss=torch.tensor(0.5))
    meter.update(*perfect(2), loss=torch.tensor(0.25))
    state = meter.state()
    assert state.dtype == torch.float64 and state.shape == (7,)
    # [dice_sum, iou_sum, images, loss_sum, loss_batches, TP, 2 TP + FP + FN]
    assert state.tolist() == pytest.approx([1 / 2 + 2, 1 / 3 + 2, 3, 0.75, 2, 1 + 4, 4 + 8])
    assert meter.compute()["dice_dataset"] == pytest.approx(2 * 5 / 12)


def test_summed_states_equal_one_meter_fed_both() -> None:
    a, b, both = DiceMeter(), DiceMeter(), DiceMeter()
    batch_a = (logits_for(as_batch(PRED_2X2)), as_batch(TRUE_2X2), torch.tensor(0.5))
    batch_b = (logits_for(as_batch(PRED_3X3)), as_batch(TRUE_3X3), torch.tensor(0.125))
    batch_c = (*missed(2), torch.tensor(2.0))
    a.update(*batch_a)
    b.update(*batch_b)
    b.update(*batch_c)
    for batch in (batch_a, batch_b, batch_c):
        both.update(*batch)
    assert torch.allclose(a.state() + b.state(), both.state(), rtol=0, atol=1e-12)

    # As an all-reduce would: put the sum back into one meter and read the means.
    merged = DiceMeter()
    merged.state().copy_(a.state() + b.state())
    assert merged.compute() == pytest.approx(both.compute())
