"""Contract tests for every registered ``segkit.losses`` plugin, plus the built-ins' values.

The contract tests are parametrized over the registry at collection time; the value
tests check the built-ins against formulas written out here in numpy (float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from segkit.errors import ConfigError
from segkit.registry import create, list_plugins

LOSSES = list_plugins("losses")


def _batch(seed: int = 0, shape: tuple[int, ...] = (2, 1, 64, 64)) -> tuple[torch.Tensor, ...]:
    """Random logits and a 0/1 target of about 30% foreground."""
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(shape, generator=gen)
    target = (torch.rand(shape, generator=gen) < 0.3).float()
    return logits, target


# --- contract: every registered loss ----------------------------------------------------


def test_builtin_losses_are_registered() -> None:
    assert {"bce", "dice", "bce_dice"} <= set(LOSSES)


@pytest.mark.parametrize("name", LOSSES)
def test_float32_scalar_and_gradient_flows(name: str) -> None:
    logits, target = _batch()
    logits.requires_grad_(True)

    value = create("losses", name)(logits, target)

    assert value.ndim == 0
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    value.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES)
def test_under_bf16_autocast(name: str) -> None:
    torch.manual_seed(0)
    head = torch.nn.Conv2d(3, 1, kernel_size=1)
    images = torch.randn(2, 3, 64, 64)
    _, target = _batch()
    loss = create("losses", name)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(images)
        value = loss(logits, target)

    assert logits.dtype == torch.bfloat16  # otherwise this test tests nothing
    assert value.ndim == 0
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    # The same bf16 values, upcast first, give the same loss: reductions run in float32.
    torch.testing.assert_close(value, loss(logits.detach().float(), target))
    value.backward()
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", LOSSES)
def test_low_precision_logits_do_not_overflow_the_sums(name: str, dtype: torch.dtype) -> None:
    # One 512x512 mask: its sum (262144) overflows fp16 (max 65504, smp #463), and a bf16
    # running sum stops growing at 256. The loss must match the float32 computation.
    logits, _ = _batch(shape=(1, 1, 512, 512))
    logits = logits.abs().to(dtype)  # mostly confident foreground
    target = torch.ones_like(logits)
    loss = create("losses", name)

    value = loss(logits, target)

    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(logits.float(), target.float()))


@pytest.mark.parametrize("name", LOSSES)
def test_perfect_prediction_is_near_zero_and_beats_a_wrong_one(name: str) -> None:
    _, target = _batch()
    target[1] = 0  # an empty mask, predicted empty, is also perfect
    perfect = torch.where(target > 0, 20.0, -20.0)
    loss = create("losses", name)

    assert loss(perfect, target).item() == pytest.approx(0.0, abs=1e-3)
    assert loss(-perfect, target).item() > loss(perfect, target).item() + 0.1


# --- built-ins: values against formulas written out in numpy ---------------------------


def _np_bce(x: np.ndarray, t: np.ndarray) -> float:
    # -[t log s(x) + (1 - t) log(1 - s(x))], in the form that cannot overflow.
    return float(np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))))


def _np_dice(x: np.ndarray, t: np.ndarray, smooth: float = 1.0) -> float:
    p = 1 / (1 + np.exp(-x))
    axes = (1, 2, 3)  # per image, over channels and pixels
    dice = (2 * (p * t).sum(axes) + smooth) / (p.sum(axes) + t.sum(axes) + smooth)
    return float(1 - dice.mean())


def _np_bce_dice(
    x: np.ndarray, t: np.ndarray, bce_weight=1.0, dice_weight=1.0, smooth=1.0
) -> float:
    return bce_weight * _np_bce(x, t) + dice_weight * _np_dice(x, t, smooth)


REFERENCES: list[tuple[str, dict[str, Any], Callable[..., float]]] = [
    ("bce", {}, _np_bce),
    ("dice", {}, _np_dice),
    ("dice", {"smooth": 0.0}, _np_dice),
    ("dice", {"smooth": 10.0}, _np_dice),
    ("bce_dice", {}, _np_bce_dice),
    ("bce_dice", {"bce_weight": 0.3, "dice_weight": 2.0, "smooth": 0.5}, _np_bce_dice),
    ("bce_dice", {"bce_weight": 0.0}, _np_bce_dice),
]


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    REFERENCES,
    ids=[f"{n}-{o}" if o else n for n, o, _ in REFERENCES],
)
def test_builtin_value_matches_formula(
    name: str, options: dict[str, Any], reference: Callable[..., float]
) -> None:
    logits, target = _batch(seed=1)
    target[0, :, :8] = 0  # some rows all background, some images more foreground
    target[1, :, 8:40, 8:40] = 1

    value = create("losses", name, **options)(logits, target)

    expected = reference(logits.double().numpy(), target.double().numpy(), **options)
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_dice_is_averaged_per_image_not_over_the_batch() -> None:
    # Image 0 perfect (dice ~1), image 1 fully wrong on a tiny mask (dice ~0): the mean
    # per image is ~0.5, while pooling both images' sums would give ~1.
    target = torch.zeros(2, 1, 64, 64)
    target[0, :, :32] = 1
    target[1, :, 0, 0] = 1
    logits = torch.where(target > 0, 20.0, -20.0)
    logits[1, :, 0, 0] = -20.0
    value = create("losses", "dice", smooth=0.0)(logits, target)
    assert value.item() == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("bce_dice", {"bce_weight": -1.0}, r"bce_weight=-1\.0"),
        ("bce_dice", {"dice_weight": -0.5}, r"dice_weight=-0\.5"),
        ("bce_dice", {"smooth": math.nan}, r"smooth=nan"),
        ("bce_dice", {"bce_weight": 0, "dice_weight": 0}, r"bce_weight=0 and dice_weight=0"),
        ("bce_dice", {"dice_weight": "1"}, r"dice_weight='1'"),
        ("dice", {"smooth": -1}, r"smooth=-1"),
    ],
)
def test_builtin_bad_options_raise_config_error(
    name: str, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        create("losses", name, **options)


@pytest.mark.parametrize("name", ["bce", "dice", "bce_dice"])
def test_builtin_refuses_mismatched_shapes(name: str) -> None:
    logits, target = _batch()
    with pytest.raises(ValueError, match=r"\(2, 1, 64, 64\).*\(2, 64, 64\)"):
        create("losses", name)(logits, target[:, 0])
