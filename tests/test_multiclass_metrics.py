"""segkit.metrics.multiclass: ConfusionMeter and confusion_table against direct numpy counts.

The numpy reference counts TP / FP / FN per class from boolean masks (not from a confusion
matrix), per image and over the whole set, so it shares no code with the meter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segkit.metrics.binary import DiceMeter
from segkit.metrics.multiclass import ConfusionMeter, confusion_table

IGNORE = 255


def ref_scores(pred: np.ndarray, true: np.ndarray, k: int, ignore: int | None):
    """(iou, dice) per class over all pixels given, NaN where a class is in neither."""
    valid = np.ones_like(true, dtype=bool) if ignore is None else true != ignore
    iou, dice = [], []
    for c in range(k):
        p = (pred == c) & valid
        t = (true == c) & valid
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        if tp + fp + fn == 0:
            iou.append(math.nan)
            dice.append(math.nan)
        else:
            iou.append(tp / (tp + fp + fn))
            dice.append(2 * tp / (2 * tp + fp + fn))
    return np.array(iou), np.array(dice)


def nanmean_or_nan(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def reference(logits: torch.Tensor, target: torch.Tensor, k: int, ignore: int | None = IGNORE):
    pred = logits.argmax(1).numpy()
    true = target.numpy()
    iou, dice = ref_scores(pred, true, k, ignore)
    img_miou, img_mdice = [], []
    for i in range(len(true)):
        ii, di = ref_scores(pred[i], true[i], k, ignore)
        img_miou.append(nanmean_or_nan(ii))
        img_mdice.append(nanmean_or_nan(di))
    valid = np.ones_like(true, dtype=bool) if ignore is None else true != ignore
    return {
        "iou": iou,
        "dice": dice,
        "miou": nanmean_or_nan(iou),
        "mdice": nanmean_or_nan(dice),
        "img_miou": np.array(img_miou),
        "img_mdice": np.array(img_mdice),
        "miou_images": nanmean_or_nan(np.array(img_miou)),
        "mdice_images": nanmean_or_nan(np.array(img_mdice)),
        "pixel_acc": float(((pred == true) & valid).sum() / valid.sum()),
        "pixels": int(valid.sum()),
    }


def random_batch(k: int, n: int = 3, h: int = 7, w: int = 9, seed: int = 0, p_ignore=0.15):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g)
    target = torch.randint(0, k, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < p_ignore] = IGNORE
    return logits, target


def logits_from(pred: list, k: int) -> torch.Tensor:
    """One-hot logits (+1 on the given class) for integer predictions ``(N, H, W)``."""
    p = torch.tensor(pred)
    return torch.nn.functional.one_hot(p, k).permute(0, 3, 1, 2).float()


def assert_matches(got: dict, ref: dict, k: int) -> None:
    for key in ("miou", "mdice", "miou_images", "mdice_images", "pixel_acc"):
        assert got[key] == pytest.approx(ref[key], rel=1e-12, nan_ok=True), key
    for c in range(k):
        assert got[f"iou_{c}"] == pytest.approx(ref["iou"][c], rel=1e-12, nan_ok=True)
        assert got[f"dice_{c}"] == pytest.approx(ref["dice"][c], rel=1e-12, nan_ok=True)
    assert got["pixels"] == ref["pixels"]


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_batches_match_numpy(k: int, seed: int) -> None:
    logits, target = random_batch(k, seed=seed)
    m = ConfusionMeter(k, per_image=True)
    m.update(logits, target)
    got = m.compute()
    ref = reference(logits, target, k)
    assert_matches(got, ref, k)
    # The confusion matrix against np.add.at over the non-ignored pixels.
    pred, true = logits.argmax(1).numpy(), target.numpy()
    keep = true != IGNORE
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (true[keep], pred[keep]), 1)
    assert got["confusion"] == conf.tolist()
    assert got["images"] == 3 and got["images_scored"] == 3
    miou_i, mdice_i = m.per_image_scores()
    np.testing.assert_allclose(miou_i.numpy(), ref["img_miou"], rtol=1e-12)
    np.testing.assert_allclose(mdice_i.numpy(), ref["img_mdice"], rtol=1e-12)
    assert miou_i.dtype == torch.float64 and miou_i.device.type == "cpu"


def test_ignored_pixels_count_for_nothing() -> None:
    logits, target = random_batch(3, seed=5, p_ignore=0.4)
    a = ConfusionMeter(3)
    a.update(logits, target)
    # Any prediction on the ignored pixels: same result.
    other = logits.clone()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(other)
    other[ignored] = torch.randn(int(ignored.sum()))
    b = ConfusionMeter(3)
    b.update(other, target)
    ra, rb = a.compute(), b.compute()
    assert ra["confusion"] == rb["confusion"]
    for key, v in ra.items():
        if key != "confusion":
            assert rb[key] == pytest.approx(v, nan_ok=True), key
    assert ra["pixels"] == int((target != IGNORE).sum())
    # A custom ignore_index, and None (every pixel counts).
    t2 = torch.where(target == IGNORE, torch.tensor(-1), target)
    c = ConfusionMeter(3, ignore_index=-1)
    c.update(logits, t2)
    assert c.compute()["confusion"] == ra["confusion"]
    full = torch.randint(0, 3, target.shape, generator=torch.Generator().manual_seed(9))
    d = ConfusionMeter(3, ignore_index=None)
    d.update(logits, full)
    assert_matches(d.compute(), reference(logits, full, 3, ignore=None), 3)


def test_label_outside_the_classes_raises_at_compute() -> None:
    logits, target = random_batch(3, seed=3)
    target[0, 0, 0] = 3  # K=3: a label bug, not the ignore index
    target[1, 2, 2] = 7
    m = ConfusionMeter(3)
    m.update(logits, target)  # no host sync to check it here
    with pytest.raises(ValueError, match="2 target pixels are outside"):
        m.compute()


def test_absent_class_is_nan_and_left_out_of_the_means() -> None:
    # K=4; class 3 is never in the target nor predicted; class 2 only in the prediction.
    target = torch.tensor([[[0, 0, 1], [1, 1, IGNORE]]])
    pred = [[[0, 2, 1], [1, 0, 3]]]  # the 3 sits on the ignored pixel: not counted
    m = ConfusionMeter(4, per_image=True)
    m.update(logits_from(pred, 4), target)
    r = m.compute()
    assert math.isnan(r["iou_3"]) and math.isnan(r["dice_3"])
    # class 0: tp 1, fp 1, fn 1 -> IoU 1/3, Dice 1/2; class 1: tp 2, fn 1 -> 2/3, 4/5;
    # class 2: fp 1 -> 0, 0.
    assert [r["iou_0"], r["iou_1"], r["iou_2"]] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert [r["dice_0"], r["dice_1"], r["dice_2"]] == pytest.approx([1 / 2, 4 / 5, 0.0])
    assert r["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert r["mdice"] == pytest.approx((1 / 2 + 4 / 5 + 0) / 3)
    # One image: the per-image means are the same three classes.
    assert r["miou_images"] == pytest.approx(r["miou"])
    assert r["pixel_acc"] == pytest.approx(3 / 5)
    assert r["pixels"] == 5


def test_image_with_only_ignored_pixels_has_no_score() -> None:
    target = torch.tensor([[[0, 1], [1, 0]], [[IGNORE, IGNORE], [IGNORE, IGNORE]]])
    pred = [[[0, 1], [1, 0]], [[2, 2], [2, 2]]]
    m = ConfusionMeter(3, per_image=True)
    m.update(logits_from(pred, 3), target)
    r = m.compute()
    assert r["images"] == 2 and r["images_scored"] == 1
    assert r["miou_images"] == 1.0 and r["miou"] == 1.0
    assert math.isnan(r["iou_2"])
    miou_i, _ = m.per_image_scores()
    assert miou_i[0] == 1.0 and math.isnan(miou_i[1])
    # Nothing counted at all: every mean is NaN, not an error.
    e = ConfusionMeter(3)
    e.update(logits_from(pred[1:], 3), target[1:])
    re = e.compute()
    assert all(math.isnan(re[key]) for key in ("miou", "mdice", "miou_images", "pixel_acc"))


def test_per_image_and_dataset_means_differ_each_by_its_definition() -> None:
    # Image A: all class 0, predicted all 0 -> only class 0 present, IoU 1, Dice 1.
    # Image B: all class 1, predicted 1 on one pixel only -> class 0: IoU 0 (tp 0, fp 3);
    #   class 1: IoU 1/4, Dice 2/5. Image means: IoU 1/8, Dice 1/5.
    target = torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]])
    pred = [[[0, 0], [0, 0]], [[1, 0], [0, 0]]]
    m = ConfusionMeter(2, per_image=True)
    m.update(logits_from(pred, 2), target)
    r = m.compute()
    assert r["confusion"] == [[4, 0], [3, 1]]
    assert r["miou_images"] == pytest.approx((1 + 1 / 8) / 2)
    assert r["mdice_images"] == pytest.approx((1 + 1 / 5) / 2)
    # Dataset: class 0 tp 4, fp 3 -> IoU 4/7, Dice 8/11; class 1 tp 1, fn 3 -> 1/4, 2/5.
    assert r["miou"] == pytest.approx((4 / 7 + 1 / 4) / 2)
    assert r["mdice"] == pytest.approx((8 / 11 + 2 / 5) / 2)
    assert r["miou"] != pytest.approx(r["miou_images"])
    miou_i, mdice_i = m.per_image_scores()
    assert miou_i.tolist() == pytest.approx([1.0, 1 / 8])
    assert mdice_i.tolist() == pytest.approx([1.0, 1 / 5])


# The binary hand cases of tests/test_metrics.py, as two classes.
TRUE_2X2, PRED_2X2 = [[1, 1], [0, 0]], [[1, 0], [1, 0]]
TRUE_3X3 = [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
PRED_3X3 = [[1, 1, 0], [1, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize(
    ("true", "pred", "iou_fg", "iou_bg"),
    [
        # fg: inter 1, union 3; bg: inter 1 (bottom right), union 3.
        (TRUE_2X2, PRED_2X2, 1 / 3, 1 / 3),
        # fg: |T| 5, |P| 4, inter 3 -> 3/6; bg: |T| 4, |P| 5, inter 3 -> 3/6.
        (TRUE_3X3, PRED_3X3, 1 / 2, 1 / 2),
    ],
)
def test_two_classes_mean_of_the_binary_ious(true, pred, iou_fg, iou_bg) -> None:
    m = ConfusionMeter(2)
    m.update(logits_from([pred], 2), torch.tensor([true]))
    r = m.compute()
    assert r["iou_1"] == pytest.approx(iou_fg) and r["iou_0"] == pytest.approx(iou_bg)
    assert r["miou"] == pytest.approx((iou_fg + iou_bg) / 2)
    # The foreground IoU is the binary DiceMeter's on the same image.
    d = DiceMeter()
    fg = torch.tensor([[pred]], dtype=torch.float32) * 4 - 2
    d.update(fg, torch.tensor([[true]], dtype=torch.float32))
    dr = d.compute()
    assert r["iou_1"] == pytest.approx(dr["iou"]) and r["dice_1"] == pytest.approx(dr["dice"])


def test_several_updates_equal_one_big_update() -> None:
    batches = [random_batch(4, n=n, seed=s) for s, n in [(10, 2), (11, 3), (12, 1)]]
    losses = [torch.tensor(x) for x in (0.5, 1.0, 3.0)]
    many = ConfusionMeter(4, per_image=True)
    for (lg, t), loss in zip(batches, losses, strict=True):
        many.update(lg, t, loss)
    one = ConfusionMeter(4, per_image=True)
    one.update(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    rm, ro = many.compute(), one.compute()
    assert rm["confusion"] == ro["confusion"]
    for key, v in ro.items():
        if key not in ("confusion", "loss"):
            assert rm[key] == pytest.approx(v, rel=1e-12, nan_ok=True), key
    assert rm["loss"] == pytest.approx(1.5) and math.isnan(ro["loss"])
    assert rm["images"] == 6
    for a, b in zip(many.per_image_scores(), one.per_image_scores(), strict=True):
        torch.testing.assert_close(a, b)


def test_state_round_trip_sums_like_an_all_reduce() -> None:
    (l1, t1), (l2, t2) = random_batch(3, seed=20), random_batch(3, n=2, seed=21)
    rank0, rank1 = ConfusionMeter(3), ConfusionMeter(3)
    rank0.update(l1, t1, torch.tensor(2.0))
    rank1.update(l2, t2, torch.tensor(4.0))
    s0, s1 = rank0.state(), rank1.state()
    assert s0.dtype == torch.float64 and s0.shape == (3 * 3 + 8,)
    summed = s0 + s1  # what all_reduce_sum leaves on every rank
    rank0.load_state(summed.clone())
    rank1.load_state(summed.clone())
    both = ConfusionMeter(3)
    both.update(torch.cat([l1, l2]), torch.cat([t1, t2]))
    rb = both.compute()
    for r in (rank0.compute(), rank1.compute()):
        assert r["confusion"] == rb["confusion"]
        assert r["images"] == 5 and r["loss"] == pytest.approx(3.0)
        for key in ("miou", "mdice", "miou_images", "mdice_images", "pixel_acc", "iou_2"):
            assert r[key] == pytest.approx(rb[key], rel=1e-12), key
    # state() of a loaded meter is the loaded state; a wrong size is refused.
    torch.testing.assert_close(rank0.state(), summed)
    with pytest.raises(ValueError, match="shape"):
        rank0.load_state(torch.zeros(5, dtype=torch.float64))
    # The counts survive the trip exactly (float64 holds integers below 2**53).
    big = ConfusionMeter(2)
    st = big.state()
    st[:4] = torch.tensor([2.0**52 + 1, 3.0, 5.0, 2.0**40 + 7], dtype=torch.float64)
    big.load_state(st)
    assert big._conf.tolist() == [[2**52 + 1, 3], [5, 2**40 + 7]]


def test_update_makes_no_python_number_from_a_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU stand-in for "no host sync": on CUDA, reading a tensor's value to Python
    (``.item()``, ``float()``, ``int()``, ``bool()``, ``.tolist()``, ``.cpu()``) waits for
    the GPU. Here every such Tensor method raises during update. What this cannot see:
    syncs inside C++ ops (a boolean-mask index, ``torch.bincount`` sizing its output);
    the meter avoids both by design (module docstring), and
    tests/cuda/test_cuda_metrics_mc.py checks the real thing with
    ``torch.cuda.set_sync_debug_mode("error")``."""
    logits, target = random_batch(3, seed=30)
    m = ConfusionMeter(3, per_image=True)

    def boom(*args, **kwargs):
        raise AssertionError("update read a tensor's value to the host")

    with monkeypatch.context() as mp:
        for name in (
            "item",
            "tolist",
            "numpy",
            "cpu",
            "__float__",
            "__int__",
            "__bool__",
            "__index__",
            "nonzero",
        ):
            mp.setattr(torch.Tensor, name, boom)
        m.update(logits, target, torch.tensor(0.25))
        m.update(logits, target, torch.tensor(0.75))
        m.state()
    r = m.compute()
    assert r["loss"] == pytest.approx(0.5) and r["images"] == 6


def test_the_monkeypatch_does_catch_a_host_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above has teeth: the DiceMeter-style slip float(tensor) is caught."""

    def boom(*args, **kwargs):
        raise AssertionError("host read")

    t = torch.tensor(1.0)
    with monkeypatch.context() as mp:
        mp.setattr(torch.Tensor, "__float__", boom)
        mp.setattr(torch.Tensor, "item", boom)
        with pytest.raises(AssertionError, match="host read"):
            float(t)
        with pytest.raises(AssertionError, match="host read"):
            t.item()


def test_counts_are_exact_past_float32_range() -> None:
    """17 updates of 4x512x512 = 17,825,792 pixels, past 2**24 where a float32 count
    stops being exact (2**24 + 1 == 2**24 in float32); the int64 matrix and float64
    sums are exact."""
    k, n, h, w, steps = 3, 4, 512, 512, 17
    # Prediction: class 0 everywhere (constant logits, expanded: no big allocation).
    logits = torch.tensor([1.0, 0.0, -1.0]).view(1, k, 1, 1).expand(n, k, h, w)
    # Target: one class-1 pixel and one class-2 pixel per image, one ignored, the rest 0.
    target = torch.zeros(n, h, w, dtype=torch.long)
    target[:, 0, 0] = 1
    target[:, 0, 1] = 2
    target[:, 0, 2] = IGNORE
    m = ConfusionMeter(k)
    for _ in range(steps):
        m.update(logits, target)
    r = m.compute()
    per_step = n * (h * w - 3)
    assert r["confusion"] == [[steps * per_step, 0, 0], [steps * n, 0, 0], [steps * n, 0, 0]]
    total = steps * n * (h * w - 1)
    assert r["pixels"] == total and total > 2**24
    assert r["pixel_acc"] == steps * per_step / total
    assert r["iou_0"] == (steps * per_step) / total
    assert math.isclose(float(np.float32(2**24) + np.float32(1)), 2**24)  # why int64
    assert r["images"] == steps * n


def test_confusion_table_reads_per_class() -> None:
    target = torch.tensor([[[0, 0, 1], [1, 1, IGNORE]]])
    pred = [[[0, 2, 1], [1, 0, 3]]]
    m = ConfusionMeter(4)
    m.update(logits_from(pred, 4), target)
    table = confusion_table(m.compute(), ["background", "road", "car", "sky"])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "Dice", "pixels", "predicted"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[2:6]}
    assert rows["background"] == ["0.3333", "0.5000", "2", "2"]
    assert rows["road"] == ["0.6667", "0.8000", "3", "2"]
    assert rows["car"] == ["0.0000", "0.0000", "0", "1"]
    assert rows["sky"] == ["-", "-", "0", "0"]  # absent from both: no score
    assert "mean" in table and "pixel accuracy: 0.6000" in table
    # The mean row says which classes it leaves out, and why an absent class scores 0.
    assert lines[8:10] == [
        "mean over 3 of 4 classes: sky is in neither the truth nor the prediction ('-')",
        "car: no pixel of it in the truth, so its 0 counts only the 1 pixel predicted as it "
        "(false positives)",
    ]
    assert lines[10].startswith("per-image mean:")
    # One of the 6 pixels is the ignore index: left out of every score, and said.
    assert lines[12] == "ignored: 16.7% of pixels (1 pixel, the ignore index)"
    assert lines[13:] == [
        "confusion matrix (pixels):",
        "truth \\ predicted  background  road  car  sky",
        "background                  1     0    1    0",
        "road                        1     2    0    0",
        "car                         0     0    0    0",
        "sky                         0     0    0    0",
    ]
    # Default names are the indices; a wrong count of names is refused.
    assert confusion_table(m.compute()).splitlines()[2].split()[0] == "0"
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        confusion_table(m.compute(), ["a", "b", "c"])


def test_ignored_pixels_are_counted_summed_across_ranks_and_said_under_the_table() -> None:
    target = torch.tensor([[[0, 0, 1], [1, IGNORE, IGNORE]]])
    pred = [[[0, 0, 1], [1, 0, 1]]]
    m = ConfusionMeter(2)
    m.update(logits_from(pred, 2), target)
    r = m.compute()
    assert r["ignored_pixels"] == 2 and r["pixels"] == 4
    table = confusion_table(r, ["bg", "road"], "value 255").splitlines()
    assert "ignored: 33.3% of pixels (2 pixels, value 255)" in table
    # Summed like the other counts across ranks.
    m.load_state(m.state() * 2)
    assert m.compute()["ignored_pixels"] == 4
    # A state of a segkit before the ignored count (7 sums after the matrix) still loads.
    old = m.state()[:-1]
    m.load_state(old)
    assert m.compute()["ignored_pixels"] == 0 and m.compute()["pixels"] == 8
    # No ignore index: nothing counted; with no pixel ignored, the line only where the
    # masks declare an ignore value.
    none = ConfusionMeter(2, ignore_index=None)
    none.update(logits_from([[[0, 1]]], 2), torch.tensor([[[0, 1]]]))
    assert none.compute()["ignored_pixels"] == 0
    assert "ignored" not in confusion_table(none.compute())
    assert "ignored: 0% of pixels (0 pixels, value 255)" in confusion_table(
        none.compute(), None, "value 255"
    )


def test_shapes_are_checked() -> None:
    m = ConfusionMeter(3)
    with pytest.raises(ValueError, match=r"logits must be \(N, 3, H, W\)"):
        m.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target must be"):
        m.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))
    # A (N, 1, H, W) target is taken as (N, H, W).
    m.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long))
    assert m.compute()["pixels"] == 4
    with pytest.raises(ValueError, match="num_classes >= 2"):
        ConfusionMeter(1)
    with pytest.raises(RuntimeError, match="per_image=True"):
        m.per_image_scores()


def test_ignore_index_inside_the_class_range() -> None:
    """ignore_index=0 (a "void" class 0): its target pixels count for nothing; class 0
    predicted elsewhere is still a false positive (IoU 0), as in the numpy reference."""
    logits, target = random_batch(3, seed=40, p_ignore=0.0)
    m = ConfusionMeter(3, ignore_index=0)
    m.update(logits, target)
    r = m.compute()
    assert_matches(r, reference(logits, target, 3, ignore=0), 3)
    assert r["confusion"][0] == [0, 0, 0] and r["pixels"] == int((target != 0).sum())
