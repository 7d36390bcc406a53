"""The run folder's pictures and per-image test scores: which test images predictions.png
shows and in what order, its size, and test_scores.csv against the test pass's mean.

A fixed "model" (foreground = the left half of the image, whatever the input) and masks
made to overlap it more or less give every image a Dice known in advance; each image is
one uniform grey, so the grid's rows can be read back from the PNG's pixels."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit.contracts import Batch
from segkit.metrics.binary import DiceMeter, dice_iou_per_image
from segkit.reports import figures as report
from segkit.training import run_folder
from segkit.training.loops import EvalContext, evaluate
from segkit.training.precision import create_precision
from segkit.training.run_folder import RunClock, RunFolder, time_line
from segkit.training.runtime import Runtime

CPU = torch.device("cpu")
#: The test pass's context: fp32 on the CPU, BCE, batches drawn as they are.
CONTEXT = EvalContext(
    Runtime(CPU, create_precision("fp32", CPU), False), loss_fn=torch.nn.BCEWithLogitsLoss()
)

SIZE = 32


class LeftHalf(torch.nn.Module):
    """Predicts the left half of every image as foreground."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # a parameter, as real models have

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(x[:, :1], -5.0)
        out[..., : x.shape[-1] // 2] = 5.0
        return out * self.scale


class ListLoader:
    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        pass


def grey(i: int) -> float:
    """Image ``i``'s grey level in [0, 1] (distinct, never white)."""
    return (i + 1) / 40


def make_loader(columns: list[int], batch_size: int = 4) -> ListLoader:
    """Image ``i``: uniform ``grey(i)``, its mask the left ``columns[i]`` columns, so its
    Dice against LeftHalf is ``2c / (16 + c)`` for ``c <= 16`` (1 for c = 16)."""
    images = torch.stack([torch.full((3, SIZE, SIZE), grey(i)) for i in range(len(columns))])
    masks = torch.zeros(len(columns), 1, SIZE, SIZE)
    for i, c in enumerate(columns):
        masks[i, ..., :c] = 1.0
    batches = [
        Batch(images[k : k + batch_size], masks[k : k + batch_size])
        for k in range(0, len(columns), batch_size)
    ]
    return ListLoader(batches)


def run_test_pass(loader: ListLoader) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    meter = DiceMeter("cpu", per_image=True)
    metrics = evaluate(LeftHalf(), loader, CONTEXT, meter=meter)
    dice, iou = meter.per_image_scores()
    return metrics, dice, iou


def draw(tmp_path: Path, loader: ListLoader, dice, iou, n: int = 8, ids=None):
    path = tmp_path / "predictions.png"
    scores = report.ImageScores(dice, iou, ids)
    rows = report.write_prediction_grid(path, LeftHalf(), loader, CONTEXT, scores, n=n)
    return path, rows


def image_column(path: Path) -> list[int]:
    """The images shown in the grid's first column, top to bottom, found by their grey:
    runs of one colour at least 100 px tall down the middle of the column."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    column = a[:, report.MIN_TILE // 2, 0].astype(int)
    levels = {round(grey(i) * 255): i for i in range(40)}
    shown, start = [], 0
    for y in range(1, len(column) + 1):
        if y == len(column) or column[y] != column[start]:
            if y - start >= 100:
                shown.append(levels[int(column[start])])
            start = y
    return shown


def test_the_grid_shows_the_best_median_and_worst_in_that_order(tmp_path: Path) -> None:
    # 12 images; image i's mask covers columns[i] columns: Dice rises with the count.
    columns = [3, 16, 0, 9, 12, 1, 15, 6, 14, 2, 10, 5]
    _, dice, iou = run_test_pass(make_loader(columns))
    expected = torch.tensor([2 * c / (16 + c) for c in columns])
    assert torch.allclose(dice, expected)
    ranked = sorted(range(12), key=lambda i: -columns[i])  # [1, 6, 8, 4, 10, 3, 7, 11, 0, 9, 5, 2]
    path, rows = draw(tmp_path, make_loader(columns), dice, iou)
    best, median, worst = ranked[:3], ranked[5:7], ranked[-3:]
    assert [r.index for r in rows] == best + median + worst
    assert [r.group for r in rows] == ["best"] * 3 + ["median"] * 2 + ["worst"] * 3
    assert [r.rank for r in rows] == [1, 2, 3, 6, 7, 10, 11, 12]
    assert [r.dice for r in rows] == [float(dice[i]) for i in best + median + worst]
    assert image_column(path) == best + median + worst  # what the PNG shows


def test_tiles_are_at_least_160_px_whatever_the_image_size(tmp_path: Path) -> None:
    columns = [3, 16, 0, 9, 12]
    _, dice, iou = run_test_pass(make_loader(columns))
    path, rows = draw(tmp_path, make_loader(columns), dice, iou)
    with Image.open(path) as im:
        width, height = im.size
    tile = 5 * SIZE  # 32 px enlarged 5 times: 160
    assert tile >= report.MIN_TILE
    assert width == 4 * tile + 3 * 4  # image | truth | prediction | overlay, 4 px apart
    assert height > len(rows) * tile
    assert image_column(path) == [r.index for r in rows]


def test_fewer_test_images_than_rows_are_each_shown_once(tmp_path: Path) -> None:
    columns = [3, 16, 0, 9, 12]  # ranked: 1, 4, 3, 0, 2
    _, dice, iou = run_test_pass(make_loader(columns, batch_size=2))
    ids = [f"pet_{i}" for i in range(5)]
    path, rows = draw(tmp_path, make_loader(columns, batch_size=2), dice, iou, ids=ids)
    assert [(r.index, r.group) for r in rows] == [
        (1, "best"), (4, "best"), (3, "median"), (0, "worst"), (2, "worst"),
    ]  # fmt: skip
    assert [r.id for r in rows] == ["pet_1", "pet_4", "pet_3", "pet_0", "pet_2"]
    assert image_column(path) == [1, 4, 3, 0, 2]


@pytest.mark.parametrize("total", range(0, 14))
@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_grid_rows_never_repeat_an_image(total: int, n: int) -> None:
    dice = [((i * 7) % 5) / 5 for i in range(total)]  # ties included
    rows = report.grid_rows(dice, n)
    indices = [i for i, _, _ in rows]
    assert len(indices) == len(set(indices)) == min(n, total)
    ranks = [r for _, _, r in rows]
    assert ranks == sorted(ranks)  # best first, worst last
    assert [dice[i] for i in indices] == sorted((dice[i] for i in indices), reverse=True)
    if total >= 8 and n == 8:
        assert [g for _, g, _ in rows] == ["best"] * 3 + ["median"] * 2 + ["worst"] * 3


def test_no_grid_for_zero_rows(tmp_path: Path) -> None:
    columns = [3, 16]
    _, dice, iou = run_test_pass(make_loader(columns))
    path, rows = draw(tmp_path, make_loader(columns), dice, iou, n=0)
    assert rows == [] and not path.exists()


def test_per_image_scores_leave_the_means_bit_identical() -> None:
    columns = [3, 16, 0, 9, 12, 1, 15]
    loader = make_loader(columns, batch_size=3)
    plain = evaluate(LeftHalf(), loader, CONTEXT)
    metrics, dice, iou = run_test_pass(loader)
    assert metrics == plain
    logits = LeftHalf()(torch.cat([b.images for b in loader]))
    d, u = dice_iou_per_image(logits, torch.cat([b.masks for b in loader]))
    assert torch.equal(dice, d) and torch.equal(iou, u)
    assert dice.device.type == "cpu" and dice.dtype == torch.float32


def test_test_scores_csv_mean_is_the_test_dice(tmp_path: Path) -> None:
    columns = [3, 16, 0, 9, 12, 1, 15]
    metrics, dice, iou = run_test_pass(make_loader(columns, batch_size=3))
    folder = RunFolder(tmp_path)
    folder.write_test_scores(dice.tolist(), iou.tolist(), [f"pet_{i}" for i in range(7)])
    rows = list(csv.DictReader(folder.test_scores.open()))
    assert list(rows[0]) == ["index", "id", "dice", "iou"]
    assert [(int(r["index"]), r["id"]) for r in rows] == [(i, f"pet_{i}") for i in range(7)]
    assert [np.float32(r["dice"]) for r in rows] == dice.numpy().tolist()  # written exactly
    mean = sum(float(r["dice"]) for r in rows) / len(rows)
    assert math.isclose(mean, metrics["dice"], rel_tol=1e-6)
    assert math.isclose(sum(float(r["iou"]) for r in rows) / 7, metrics["iou"], rel_tol=1e-6)


def test_curves_mark_the_best_epoch(tmp_path: Path) -> None:
    nan = math.nan
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_dice": e / 5, "valid_loss": v, "valid_dice": d}
        for e, v, d in [(1, nan, nan), (2, 0.5, 0.6), (3, nan, nan), (4, 0.4, 0.55)]
    ]  # validated every other epoch: the valid curve joins epochs 2 and 4
    import matplotlib.pyplot as plt

    shown = []
    real_plot = plt.Axes.plot

    def spy(self, *args, **kwargs):
        shown.append(kwargs.get("label"))
        return real_plot(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Axes, "plot", spy)
        report.write_curves(tmp_path / "curves.png", history)
    assert "best epoch 2 (valid 0.600)" in shown
    with Image.open(tmp_path / "curves.png") as im:
        assert im.size == (1000, 400)


def test_the_run_clock_splits_the_wall_into_parts_that_add_up(monkeypatch) -> None:
    now = iter([3.0, 13.0, 15.0, 16.5])  # set-up ends, the epochs end, the test, the reports
    monkeypatch.setattr(run_folder.time, "perf_counter", lambda: next(now))
    clock = RunClock(started=1.0)
    for part in ("setup", "epochs", "test", "reports"):
        clock.mark(part)
    rows = [  # two epochs; a skipped validation is NaN in metrics.csv and counts as 0
        {"epoch": 1, "epoch_seconds": 4.0, "valid_s": 0.5, "checkpoint_s": 0.25},
        {"epoch": 2, "epoch_seconds": 3.0, "valid_s": math.nan, "checkpoint_s": 0.25},
    ]
    t = clock.breakdown(rows)
    assert t == {
        "setup_s": 2.0,
        "train_s": 7.0,
        "valid_s": 0.5,
        "checkpoint_s": 0.5,
        "between_epochs_s": 2.0,  # 10 s of epochs less 8 s in the rows
        "test_s": 2.0,
        "reports_s": 1.5,
        "wall_s": 15.5,
    }
    assert sum(v for k, v in t.items() if k != "wall_s") == t["wall_s"]
    line = time_line(t)
    assert line == (
        "segkit: 15.5 s in all: set-up 2.0 s, training 7.0 s, validation 0.5 s, checkpoints "
        "0.5 s, between epochs 2.0 s, test 2.0 s, reports 1.5 s; the wall is 2.21x the training"
    )


def test_the_time_line_leaves_out_parts_under_a_twentieth_of_a_second() -> None:
    t = {
        "setup_s": 0.5,
        "train_s": 2.0,
        "valid_s": 0.0,
        "checkpoint_s": 0.01,
        "between_epochs_s": 0.0,
        "test_s": 0.3,
        "reports_s": 0.2,
        "wall_s": 3.01,
    }
    line = time_line(t)
    assert "validation" not in line and "checkpoints" not in line and "between" not in line
    assert line.endswith("reports 0.2 s; the wall is 1.50x the training")
    # A run with no epoch of its own (resumed after it finished) has no ratio.
    assert time_line({**t, "train_s": 0.0}).endswith("reports 0.2 s")
