"""The multi-class losses (segkit_losses.multiclass): each against a direct computation,
ignore_index, low precision, gradients, option and shape errors, the `accepts`
capability and registration."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit.contracts import contract_problems, declare, loss_accepts
from segkit.errors import ConfigError
from segkit.registry import Registry
from segkit.testing import check_loss
from segkit_losses import multiclass as M

ROOT = Path(__file__).resolve().parents[1]

FACTORIES = {
    "ce": M.create_ce,
    "mc_dice": M.create_mc_dice,
    "ce_dice": M.create_ce_dice,
    "mc_focal": M.create_mc_focal,
    "lovasz_softmax": M.create_lovasz_softmax,
    "mc_tversky": M.create_mc_tversky,
}


def data(n=2, k=4, h=6, w=5, seed=0, ignore=0.2):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, k, h, w, generator=gen)
    target = torch.randint(0, k, (n, h, w), generator=gen)
    target[torch.rand(n, h, w, generator=gen) < ignore] = 255
    return logits, target


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5, 3.0]])
def test_ce_equals_torch_cross_entropy(weight):
    logits, target = data()
    w = None if weight is None else torch.tensor(weight)
    expected = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    got = M.create_ce(weight=weight)(logits, target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_ce_other_ignore_index_and_all_ignored():
    logits, target = data(ignore=0.0)
    target[:, 0] = -100
    expected = F.cross_entropy(logits, target, ignore_index=-100)
    torch.testing.assert_close(M.create_ce(ignore_index=-100)(logits, target), expected)
    x = logits.clone().requires_grad_(True)
    loss = M.create_ce()(x, torch.full_like(target, 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(x.grad == 0)  # torch gives NaN here


def test_dice_by_hand_on_2x2():
    # Logits making softmax exactly (0.75, 0.25) or (0.25, 0.75): log 3 apart.
    a = float(np.log(3.0))
    logits = torch.tensor([[[[a, 0.0], [0.0, 0.0]], [[0.0, a], [a, 0.0]]]])
    target = torch.tensor([[[0, 1], [1, 255]]])
    # Valid pixels: p0 = (.75, .25, .25), t0 = (1, 0, 0); p1 = (.25, .75, .75), t1 = (0, 1, 1)
    dice0 = 2 * 0.75 / (1.25 + 1)
    dice1 = 2 * 1.5 / (1.75 + 2)
    got = M.create_mc_dice()(logits, target)
    assert got.item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)
    # An absent class is left out of the mean (smp would divide by K=3 instead).
    three = torch.cat([logits, torch.zeros(1, 1, 2, 2)], dim=1)
    p = torch.softmax(three, 1)[0]
    d = [
        2
        * (p[c] * (target[0] == c)).sum()
        / (p[c][target[0] != 255].sum() + (target[0] == c).sum())
        for c in (0, 1)
    ]
    assert M.create_mc_dice()(three, target).item() == pytest.approx(
        1 - (d[0] + d[1]).item() / 2, rel=1e-5
    )
    # smooth enters numerator and denominator.
    s = 0.5
    got = M.create_mc_dice(smooth=s)(logits, target)
    expected = 1 - ((1.5 + s) / (2.25 + s) + (3 + s) / (3.75 + s)) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_dice_with_no_valid_pixel_is_zero():
    logits, target = data()
    assert M.create_mc_dice()(logits, torch.full_like(target, 255)).item() == 0.0


def test_tversky_half_half_equals_dice():
    logits, target = data()
    torch.testing.assert_close(
        M.create_mc_tversky(alpha=0.5, beta=0.5)(logits, target),
        M.create_mc_dice()(logits, target),
    )
    torch.testing.assert_close(
        M.create_mc_tversky(smooth=0.5)(logits, target),
        M.create_mc_dice(smooth=1.0)(logits, target),
    )


def test_tversky_by_direct_computation():
    logits, target = data()
    p = torch.softmax(logits, 1)
    valid = target != 255
    values = []
    for c in range(4):
        t = (target == c).float()
        if t.sum() == 0:
            continue
        pc = p[:, c] * valid
        tp, fp, fn = (pc * t).sum(), (pc * (1 - t)).sum(), ((1 - pc) * t).sum()
        values.append(1 - (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1))
    got = M.create_mc_tversky(alpha=0.3, beta=0.7, smooth=1.0)(logits, target)
    torch.testing.assert_close(got, torch.stack(values).mean())


def test_focal_gamma_zero_is_ce_and_direct_value():
    logits, target = data()
    torch.testing.assert_close(
        M.create_mc_focal(gamma=0.0)(logits, target), M.create_ce()(logits, target)
    )
    alpha = [0.25, 1.0, 2.0, 0.5]
    valid = target != 255
    safe = torch.where(valid, target, 0)
    logp = torch.log_softmax(logits, 1).gather(1, safe[:, None])[:, 0]
    per_pixel = -torch.tensor(alpha)[safe] * (1 - logp.exp()) ** 2 * logp
    expected = per_pixel[valid].mean()
    torch.testing.assert_close(M.create_mc_focal(gamma=2.0, alpha=alpha)(logits, target), expected)


def test_focal_confident_pixels_have_finite_gradients():
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 80.0  # p_t rounds to 1 in float32
    x = logits.requires_grad_(True)
    loss = M.create_mc_focal(gamma=0.5)(x, torch.zeros(1, 2, 2, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_ce_dice_is_the_weighted_sum():
    logits, target = data()
    ce = M.create_ce(weight=[1, 2, 1, 1])(logits, target)
    dice = M.create_mc_dice()(logits, target)
    got = M.create_ce_dice(ce_weight=0.5, dice_weight=2.0, weight=[1, 2, 1, 1])(logits, target)
    torch.testing.assert_close(got, 0.5 * ce + 2.0 * dice)


def lovasz_reference(probs: np.ndarray, labels: np.ndarray, classes: str = "present") -> float:
    """Berman et al.'s Lovasz-softmax on flat (P, K) probabilities and (P,) labels of the
    valid pixels, written from the paper's Algorithm 1 with plain loops."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).astype(np.float64)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = np.abs(fg - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        gts = fg.sum()
        loss, previous = 0.0, 0.0
        inter, union = gts, gts
        for i in order:
            inter -= fg[i]
            union += 1 - fg[i]
            jaccard = 1 - inter / union
            loss += errors[i] * (jaccard - previous)
            previous = jaccard
        losses.append(loss)
    return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("classes", ["present", "all"])
def test_lovasz_softmax_matches_the_reference(per_image, classes):
    logits, target = data(k=5, seed=3)
    target[target == 4] = 2  # class 4 absent: "present" and "all" differ
    got = M.create_lovasz_softmax(per_image=per_image, classes=classes)(logits, target)
    probs = torch.softmax(logits, 1).permute(0, 2, 3, 1).reshape(2, -1, 5).double().numpy()
    labels = target.reshape(2, -1).numpy()
    if per_image:
        values = [
            lovasz_reference(p[lab != 255], lab[lab != 255], classes)
            for p, lab in zip(probs, labels, strict=True)
        ]
        expected = float(np.mean(values))
    else:
        p, lab = probs.reshape(-1, 5), labels.reshape(-1)
        expected = lovasz_reference(p[lab != 255], lab[lab != 255], classes)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_lovasz_softmax_perfect_prediction_is_zero():
    target = torch.randint(0, 3, (2, 4, 4))
    logits = 30.0 * F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert M.create_lovasz_softmax()(logits, target).item() == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- common rules


@pytest.mark.parametrize("name", FACTORIES)
def test_ignored_pixels_change_nothing_and_get_no_gradient(name):
    fn = FACTORIES[name]()
    logits, target = data(seed=1, ignore=0.3)
    ignored = (target == 255)[:, None].expand_as(logits)
    other = torch.where(ignored, 100 * torch.randn_like(logits), logits)
    x = logits.clone().requires_grad_(True)
    loss = fn(x, target)
    loss.backward()
    torch.testing.assert_close(fn(other, target), loss.detach(), rtol=1e-6, atol=1e-7)
    assert torch.all(x.grad[ignored] == 0)
    assert x.grad[~ignored].abs().sum() > 0 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_give_float32_close_to_fp32(name, dtype):
    fn = FACTORIES[name]()
    logits, target = data(n=2, k=3, h=64, w=64, seed=2)
    low = logits.to(dtype).requires_grad_(True)
    value = fn(low, target)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(low.grad.float()).all()
    reference = fn(low.detach().float(), target)
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6)  # same math, float32
    assert value.item() == pytest.approx(fn(logits, target).item(), rel=2e-2, abs=1e-3)


@pytest.mark.parametrize("name", FACTORIES)
def test_passes_the_conformance_kit(name):
    check_loss(FACTORIES[name])


@pytest.mark.parametrize("name", FACTORIES)
def test_bad_shapes_are_refused(name):
    fn = FACTORIES[name]()
    logits, target = data()
    with pytest.raises(ValueError, match="K >= 2"):
        fn(logits[:, :1], target)
    with pytest.raises(ValueError, match=r"target shape \(2, 1, 6, 5\) does not match"):
        fn(logits, target[:, None])
    with pytest.raises(ValueError, match="integer class map"):
        fn(logits, target.float())
    with pytest.raises(ValueError, match="logits must be float"):
        fn(logits[0], target)


@pytest.mark.parametrize("name", FACTORIES)
def test_check_targets_names_the_values(name):
    logits, target = data()
    target[0, 0, 0], target[1, 0, 0] = 7, -1
    with pytest.raises(
        ValueError, match=r"values -1, 7 outside \[0, 4\) that are not ignore_index=255"
    ):
        FACTORIES[name](check_targets=True)(logits, target)
    good = data()[1]
    FACTORIES[name](check_targets=True)(logits, good)


def test_class_weights_must_match_k():
    logits, target = data()
    with pytest.raises(ValueError, match="weight has 3 values but the logits have K=4"):
        M.create_ce(weight=[1, 1, 1])(logits, target)
    with pytest.raises(ValueError, match="alpha has 2 values"):
        M.create_mc_focal(alpha=[1, 1])(logits, target)


@pytest.mark.parametrize(
    "factory, options, message",
    [
        (M.create_ce, {"weight": 2.0}, "ce: weight=2.0 must be a list"),
        (M.create_ce, {"weight": [1, -1]}, r"ce: weight\[1\]=-1 must be a finite number >= 0"),
        (M.create_ce, {"weight": [0, 0]}, "is all 0"),
        (M.create_ce, {"ignore_index": 2.5}, "ce: ignore_index=2.5 must be an int"),
        (M.create_ce, {"check_targets": 1}, "check_targets=1 must be true or false"),
        (M.create_mc_dice, {"smooth": -1}, "mc_dice: smooth=-1"),
        (M.create_ce_dice, {"ce_weight": 0, "dice_weight": 0}, "leave nothing to minimize"),
        (M.create_ce_dice, {"dice_weight": "1"}, "ce_dice: dice_weight='1' must be a number"),
        (M.create_mc_focal, {"gamma": float("nan")}, "mc_focal: gamma=nan"),
        (M.create_mc_focal, {"alpha": "x"}, "mc_focal: alpha='x' must be a list"),
        (M.create_lovasz_softmax, {"classes": "some"}, "must be 'present' or 'all'"),
        (M.create_lovasz_softmax, {"per_image": "yes"}, "per_image='yes' must be true or false"),
        (M.create_mc_tversky, {"alpha": 0, "beta": 0}, "make at least one of them > 0"),
    ],
)
def test_bad_options_are_one_line_config_errors(factory, options, message):
    with pytest.raises(ConfigError, match=message) as info:
        factory(**options)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- accepts


def test_every_loss_declares_what_it_accepts():
    import segkit_losses as binary

    for factory in FACTORIES.values():
        assert loss_accepts(factory) == "multiclass"
        assert contract_problems("losses", factory) == []
    for name in ("bce", "dice", "bce_dice", "focal", "lovasz", "tversky"):
        assert loss_accepts(getattr(binary, f"create_{name}")) == "binary"

    def undeclared():
        return None

    assert loss_accepts(undeclared) == "binary"  # the contract's default
    assert loss_accepts(declare(accepts="both")(lambda: None)) == "both"
    odd = declare(accepts="ternary")(lambda: None)
    assert "declares accepts='ternary'" in contract_problems("losses", odd)[0]
    with pytest.raises(ValueError, match="accepts='ternary'"):
        loss_accepts(odd)


# ----------------------------------------------------------------------------- registry


def _pyproject_losses() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["entry-points"]["segkit.losses"]


def test_registered_as_loss_plugins(tmp_path):
    """pyproject's entry points, read through a Registry as an installed segkit would be."""
    eps = _pyproject_losses()
    for name, factory in FACTORIES.items():
        assert eps[name] == f"segkit_losses.multiclass:{factory.__name__}"
    info = tmp_path / "segkit-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segkit\nVersion: 0.1.0\n")
    lines = ["[segkit.losses]", *(f"{n} = {t}" for n, t in eps.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    reg = Registry(path=[str(tmp_path)])
    assert set(FACTORIES) | {"bce_dice", "lovasz"} <= set(reg.names("losses"))
    for name in FACTORIES:
        assert reg.info("losses", name).capability("accepts") == "multiclass"
    assert reg.info("losses", "bce_dice").capability("accepts") == "binary"
    assert isinstance(reg.create("losses", "ce", weight=[1, 2]), M.CrossEntropyLoss)


def test_listed_by_the_installed_segkit():
    """`segkit list losses` reads the installed metadata: stale until `pip install -e .`."""
    from segkit.registry import list_plugins

    installed = {ep.name for ep in importlib.metadata.distribution("segkit").entry_points}
    if not set(FACTORIES) <= installed:
        pytest.skip(
            "the installed segkit metadata predates the multi-class losses: pip install -e ."
        )
    assert set(FACTORIES) <= set(list_plugins("losses"))
