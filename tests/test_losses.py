"""Contract tests for every registered ``segkit.losses`` plugin, plus the built-ins' values.

The contract is :mod:`segkit.testing`'s (one test per registered loss and rule of
:data:`segkit.testing.LOSS_RULES`, parametrized over the registry at collection time);
the value tests check the built-ins against formulas written out here in numpy
(float64), the Lovasz hinge against its definition as a set function.
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
from segkit.testing import check_loss, parametrize_plugins, plugin_names

LOSSES = list_plugins("losses")
BUILTINS = ["bce", "bce_dice", "dice", "focal", "lovasz", "tversky"]


def _batch(seed: int = 0, shape: tuple[int, ...] = (2, 1, 64, 64)) -> tuple[torch.Tensor, ...]:
    """Random logits and a 0/1 target of about 30% foreground."""
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(shape, generator=gen)
    target = (torch.rand(shape, generator=gen) < 0.3).float()
    return logits, target


# --- contract: every registered loss ----------------------------------------------------


def test_builtin_losses_are_registered() -> None:
    assert set(BUILTINS) <= set(plugin_names("losses", "segkit"))


@parametrize_plugins("losses", rules=True)
def test_contract(kind: str, name: str, rule: str) -> None:
    check_loss(name, rules=[rule])


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("focal", {"alpha": None, "gamma": 0.5}),
        ("focal", {"alpha": 0.9, "gamma": 0.0}),
        ("tversky", {"alpha": 0.3, "beta": 0.7, "smooth": 0.0}),
        ("bce_dice", {"bce_weight": 0.0}),
    ],
    ids=str,
)
def test_contract_with_options(name: str, options: dict[str, Any]) -> None:
    # gamma < 1 is where a naive (1 - p_t) ** gamma has an infinite gradient at p_t = 1.
    check_loss(name, options=options)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_perfect_prediction_is_near_zero(name: str) -> None:
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


def _np_focal(x: np.ndarray, t: np.ndarray, alpha=0.25, gamma=2.0) -> float:
    # Lin et al. (2017), as torchvision.ops.sigmoid_focal_loss writes it, averaged.
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return float(loss.mean())


def _np_tversky(x: np.ndarray, t: np.ndarray, alpha=0.5, beta=0.5, smooth=1.0) -> float:
    p = 1 / (1 + np.exp(-x))
    axes = (1, 2, 3)
    tp, fp, fn = (p * t).sum(axes), (p * (1 - t)).sum(axes), ((1 - p) * t).sum(axes)
    return float(1 - ((tp + smooth) / (tp + alpha * fp + beta * fn + smooth)).mean())


REFERENCES: list[tuple[str, dict[str, Any], Callable[..., float]]] = [
    ("bce", {}, _np_bce),
    ("dice", {}, _np_dice),
    ("dice", {"smooth": 0.0}, _np_dice),
    ("dice", {"smooth": 10.0}, _np_dice),
    ("bce_dice", {}, _np_bce_dice),
    ("bce_dice", {"bce_weight": 0.3, "dice_weight": 2.0, "smooth": 0.5}, _np_bce_dice),
    ("bce_dice", {"bce_weight": 0.0}, _np_bce_dice),
    ("focal", {}, _np_focal),
    ("focal", {"alpha": None, "gamma": 0.0}, _np_focal),
    ("focal", {"alpha": 0.75, "gamma": 0.5}, _np_focal),
    ("focal", {"alpha": 0.5, "gamma": 5.0}, _np_focal),
    ("tversky", {}, _np_tversky),
    ("tversky", {"alpha": 0.3, "beta": 0.7}, _np_tversky),
    ("tversky", {"alpha": 1.0, "beta": 0.0, "smooth": 0.0}, _np_tversky),
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
        ("focal", {"alpha": 1.5}, r"focal: alpha=1\.5 must be in \[0, 1\] \(or null for none\)"),
        ("focal", {"gamma": -2}, r"focal: gamma=-2"),
        ("focal", {"alpha": "0.25"}, r"focal: alpha='0\.25' must be a number"),
        ("tversky", {"alpha": 0, "beta": 0}, r"tversky: alpha=0 and beta=0 make the index 1"),
        ("tversky", {"beta": math.inf}, r"tversky: beta=inf must be a finite number"),
        ("lovasz", {"per_image": False}, r"loss 'lovasz' does not accept these options"),
    ],
)
def test_builtin_bad_options_raise_config_error(
    name: str, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        create("losses", name, **options)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_refuses_mismatched_shapes(name: str) -> None:
    logits, target = _batch()
    with pytest.raises(ValueError, match=r"\(2, 1, 64, 64\).*\(2, 64, 64\)"):
        create("losses", name)(logits, target[:, 0])


def test_focal_with_gamma_0_and_no_alpha_is_bce() -> None:
    logits, target = _batch(seed=2)
    focal = create("losses", "focal", alpha=None, gamma=0.0)(logits, target)
    torch.testing.assert_close(focal, create("losses", "bce")(logits, target))


def test_focal_gradient_stays_finite_where_p_t_rounds_to_1() -> None:
    # sigmoid(30) is 1.0 in float32: a naive (1 - p_t) ** 0.5 has an infinite derivative
    # there, and inf * 0 poisons the gradient with NaN.
    target = torch.tensor([[[[1.0, 0.0]]]])
    logits = torch.tensor([[[[30.0, -30.0]]]], requires_grad=True)
    create("losses", "focal", gamma=0.5)(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("smooth", [0.0, 0.5, 3.0])
def test_tversky_with_equal_weights_is_dice_with_smooth_doubled(smooth: float) -> None:
    # TP + (FP + FN) / 2 = (sum p + sum t) / 2, so the index is Dice with 2 * smooth.
    logits, target = _batch(seed=3)
    tversky = create("losses", "tversky", alpha=0.5, beta=0.5, smooth=smooth)(logits, target)
    dice = create("losses", "dice", smooth=2 * smooth)(logits, target)
    torch.testing.assert_close(tversky, dice)


def test_tversky_beta_above_alpha_punishes_misses_more() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4] = 1
    misses = torch.full_like(target, -5.0)  # predicts nothing: all foreground missed
    alarms = torch.full_like(target, 5.0)  # predicts everything: all background wrong
    recall_heavy = create("losses", "tversky", alpha=0.3, beta=0.7)
    assert recall_heavy(misses, target) > recall_heavy(alarms, target)


# --- Lovasz hinge against its definition --------------------------------------------------


def _jaccard_loss_of_mistakes(mistakes: set[int], foreground: set[int]) -> float:
    """Delta_J(M) = |M| / |G union M|: 1 - IoU when the pixels M are predicted wrong."""
    if not mistakes:
        return 0.0
    return len(mistakes) / len(foreground | mistakes)


def _reference_lovasz_hinge(x: np.ndarray, t: np.ndarray) -> float:
    """Berman et al. (2018), eq. 8-9, written out: the Lovasz extension of Delta_J,
    evaluated at the hinge errors, one image at a time, with plain Python sets."""
    losses = []
    for xi, ti in zip(x.reshape(len(x), -1), t.reshape(len(t), -1), strict=True):
        signs = 2 * ti - 1
        errors = np.maximum(0.0, 1.0 - xi * signs)
        foreground = {int(i) for i in np.flatnonzero(ti)}
        order = sorted(range(len(errors)), key=lambda i: -errors[i])
        total, previous, chosen = 0.0, 0.0, set()
        for i in order:
            chosen.add(i)
            current = _jaccard_loss_of_mistakes(chosen, foreground)
            total += errors[i] * (current - previous)
            previous = current
        losses.append(total)
    return float(np.mean(losses))


@pytest.mark.parametrize("seed", range(6))
def test_lovasz_matches_the_definition(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(3, 1, 5, 4, generator=gen)
    target = (torch.rand(3, 1, 5, 4, generator=gen) < 0.4).float()
    target[0] = 0  # an image without foreground
    if seed % 2:
        logits[1, 0, 0] = logits[1, 0, 1]  # ties in the sort

    value = create("losses", "lovasz")(logits, target)

    expected = _reference_lovasz_hinge(logits.double().numpy(), target.double().numpy())
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_lovasz_on_hard_predictions_is_the_jaccard_loss() -> None:
    # With logits of exactly +-1 wrong pixels have error 2 and right ones 0: the
    # extension is 2 * Delta_J(mistakes), i.e. twice 1 - IoU.
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1  # 8 foreground pixels
    logits = torch.where(target > 0, 1.0, -1.0)
    logits[..., 0, :2] = -1.0  # 2 missed
    logits[..., 3, 0] = 1.0  # 1 false alarm
    iou = 6 / (8 + 1)
    assert create("losses", "lovasz")(logits, target).item() == pytest.approx(2 * (1 - iou))
