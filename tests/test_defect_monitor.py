"""A defect set run right by default: best.pt picked by the pooled valid Dice where most
train masks are empty (``--monitor auto`` -> ``valid_dice_dataset``), segkit plan saying
so, segkit compare's missed and false-alarm columns, and predict counting the images it
flags."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers import blind_checkpoint, run_folder, write_defects

import segkit
from segkit.config import RunConfig
from segkit.errors import ConfigError
from segkit.metrics.binary import DiceMeter
from segkit.metrics.definitions import binary_counts, side_by_side
from segkit.task import Task
from segkit.training.early_stopping import MONITORS, EarlyStopping


@pytest.fixture(scope="module")
def defects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_defects(tmp_path_factory.mktemp("defects") / "defects")


def _masks(*filled: bool) -> torch.Tensor:
    """A batch of 8x8 masks: a 2x2 square where ``filled``, else empty."""
    out = torch.zeros(len(filled), 1, 8, 8)
    for i, f in enumerate(filled):
        if f:
            out[i, 0, 2:4, 2:4] = 1
    return out


def _logits(masks: torch.Tensor) -> torch.Tensor:
    return masks * 20 - 10


# ----------------------------------------------------------------------------- the meter


def test_the_meter_pools_the_pixels_as_dice_dataset_defines_them() -> None:
    """The meter's dice_dataset is side_by_side's (TP, FP, FN summed over the images), and
    its per-image means are what they were."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 1, 8, 8, generator=gen)
    target = (torch.rand(6, 1, 8, 8, generator=gen) > 0.7).float()
    target[:3] = 0  # three empty truths
    meter = DiceMeter(per_image=True)
    meter.update(logits[:4], target[:4])
    meter.update(logits[4:], target[4:])
    out = meter.compute()
    defs = side_by_side(binary_counts(logits, target), binary=True)
    assert out["dice_dataset"] == pytest.approx(defs["dice_dataset"])
    assert out["dice"] == pytest.approx(defs["dice_per_image"])


def test_predicting_nothing_scores_the_empty_share_per_image_and_zero_pooled() -> None:
    """10 empty masks of 12: the blind model's per-image Dice is 0.83, its pooled 0; a
    model that finds both defects with one false alarm is below it per image and above
    it pooled. A split with nothing to find and nothing marked scores 1 pooled."""
    truth = _masks(True, True, *[False] * 10)
    blind = DiceMeter()
    blind.update(torch.full_like(truth, -10.0), truth)
    assert blind.compute()["dice"] == pytest.approx(10 / 12)
    assert blind.compute()["dice_dataset"] == 0.0
    finder = DiceMeter()
    marks = torch.roll(truth, 1, dims=3)  # each defect found, half of it outlined
    marks[2, 0, 5:7, 5:7] = marks[3, 0, 5:7, 5:7] = 1  # two false alarms
    finder.update(_logits(marks), truth)
    assert finder.compute()["dice"] == pytest.approx(9 / 12)  # under predicting nothing
    assert finder.compute()["dice_dataset"] == pytest.approx(2 * 4 / (16 + 8))  # over it
    nothing = DiceMeter()
    nothing.update(torch.full((2, 1, 8, 8), -10.0), _masks(False, False))
    assert nothing.compute()["dice_dataset"] == 1.0


def test_early_stopping_follows_the_pooled_dice_higher_is_better() -> None:
    assert MONITORS["valid_dice_dataset"] == ("dice_dataset", "max")
    stopper = EarlyStopping("valid_dice_dataset", patience=1)
    assert stopper.update(0.2, 1) and not stopper.update(0.1, 2) and stopper.should_stop


# ----------------------------------------------------------------------------- the rule


def test_auto_picks_the_pooled_dice_from_the_data_checks_empty_share() -> None:
    """The data check's empty-share line (20%) decides, for binary --monitor auto only."""
    binary = Task()
    assert binary.defect_monitor("auto", 16, 20)[0] == "valid_dice_dataset"
    assert binary.defect_monitor("auto", 4, 20)[0] == "valid_dice_dataset"  # 20%: the line
    assert binary.defect_monitor("auto", 3, 20) == (None, "")
    assert binary.defect_monitor("auto", 0, 0) == (None, "")
    assert binary.defect_monitor("valid_dice", 16, 20) == (None, "")  # asked for: kept
    three = Task(("background", "a", "b"), ((0, 0, 0), (255, 0, 0), (0, 0, 255)))
    assert three.defect_monitor("auto", 16, 20) == (None, "")
    why = binary.defect_monitor("auto", 16, 20)[1]
    assert why.startswith("16 of 20 train masks are empty (80%): per image, each empty mask")
    assert "predicting nothing would score near 0.80" in why


def test_the_pooled_monitor_is_asked_for_by_name_and_refused_for_k_classes() -> None:
    assert Task().monitor("valid_dice_dataset") == "valid_dice_dataset"
    RunConfig(monitor="valid_dice_dataset").validate()
    three = Task(("background", "a", "b"), ((0, 0, 0), (255, 0, 0), (0, 0, 255)))
    with pytest.raises(ConfigError, match="already pooled over the dataset.*valid_mdice"):
        three.monitor("valid_dice_dataset")


def test_the_runs_data_check_counts_the_empty_train_masks_and_remembers_them(
    defects: Path,
) -> None:
    """Counted as segkit data check counts them, and the same from the remembered pass."""
    from segkit import registry
    from segkit.data.prepare import prepare_training

    report = segkit.check_data(defects, dataset="folder", workers=1)
    train = report.splits["train"]
    dataset = registry.create("datasets", "folder", defects)
    kwargs = {"name": "folder", "skip_bad_samples": False, "batch_size": 4}
    first = prepare_training(dataset, **kwargs)
    assert (first.train_empty, first.train_images) == (len(train.empty_masks), train.count)
    again = prepare_training(registry.create("datasets", "folder", defects), **kwargs)
    assert (again.train_empty, again.train_images) == (first.train_empty, first.train_images)


def test_the_plan_names_the_pooled_monitor_for_a_defect_set_only() -> None:
    """The plan's monitor line, from the data check's counts, as the run's auto picks."""
    from segkit.plan import planner as planner_mod
    from segkit.plan.fingerprint import Fingerprint

    def planned(base: RunConfig, empty: tuple[int, int]) -> planner_mod._Planner:
        p = planner_mod._Planner(base, None, 3, lambda line: None)
        p.fp = Fingerprint(
            dataset="folder",
            root="/data",
            classes=[],
            images={"train": empty[1], "valid": 2, "test": 2},
            size_median=[32, 32],
            short_side=32,
            foreground=0.003,
            structure_width=2.0,
            width_masks=3,
            suggested_size=32,
            pos_weight=300.0,
            empty_masks=empty[0] / empty[1],
        )
        p.task, p.train_empty = Task(), empty
        p.installed = {"models": set(), "recipes": set()}
        p.choose_model_and_loss(model_given=False)
        return p

    p = planned(RunConfig(), (13, 16))
    choice = next(c for c in p.choices if c.key == "monitor")
    assert p.settings["monitor"] == choice.shown == "valid_dice_dataset"
    assert choice.reason.startswith("best.pt by the valid pixels pooled: 13 of 16 train masks")
    for base, empty in ((RunConfig(), (1, 16)), (RunConfig(monitor="valid_loss"), (13, 16))):
        p = planned(base, empty)
        assert "monitor" not in [c.key for c in p.choices]
        assert "monitor" not in p.settings


# ----------------------------------------------------------------------------- compare


def _with_counts(folder: Path, **counts: int) -> Path:
    summary = json.loads((folder / "summary.json").read_text())
    summary["test_metrics"] = {"dice_per_image": 0.5, **counts}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_compare_shows_missed_and_false_alarms_where_the_test_split_had_empty_masks(
    tiny_pets: Path, tmp_path: Path
) -> None:
    from segkit.reports.compare import compare

    runs = tmp_path / "runs"
    a = _with_counts(
        run_folder(runs / "a", tiny_pets, seed=0),
        images=12,
        empty_truth=8,
        missed=1,
        false_alarms=2,
    )
    b = _with_counts(
        run_folder(runs / "b", tiny_pets, seed=1),
        images=12,
        empty_truth=8,
        missed=4,
        false_alarms=0,
    )
    result = compare([a, b], tmp_path / "c")
    assert list(result.columns)[-4:] == [
        "test_missed",
        "missed_rate",
        "test_false_alarms",
        "false_alarm_rate",
    ]
    rows = _rows(tmp_path / "c" / "comparison.csv")
    assert [(r["test_missed"], r["test_false_alarms"]) for r in rows] == [("1", "2"), ("4", "0")]
    assert float(rows[0]["missed_rate"]) == 0.25 and float(rows[0]["false_alarm_rate"]) == 0.25
    md = (tmp_path / "c" / "comparison.md").read_text()
    assert "| missed | missed rate | false alarms | false-alarm rate |" in md
    assert "|      1 |         25% |            2 |              25% |" in md
    # Runs whose test split held no empty mask (the pets): no such columns.
    plain = [
        _with_counts(
            run_folder(runs / f"p{i}", tiny_pets, seed=i),
            images=5,
            empty_truth=0,
            missed=0,
            false_alarms=0,
        )
        for i in range(2)
    ]
    result = compare(plain, tmp_path / "p")
    assert "test_missed" not in result.columns
    assert "missed" not in _rows(tmp_path / "p" / "comparison.csv")[0]
    assert "false alarms" not in (tmp_path / "p" / "comparison.md").read_text()


# ----------------------------------------------------------------------------- predict


def test_predict_counts_the_images_a_binary_model_flags(defects: Path, tmp_path: Path) -> None:
    blind = blind_checkpoint(tmp_path / "blind.pt", -100.0)
    images = [str(defects / "images")]
    done = segkit.predict(blind, images, tmp_path / "m0", quiet=True, device="cpu")
    assert done.flagged == 0
    assert done.summary().endswith("; 0 of 20 flagged (any foreground over 0.5)")
    eager = blind_checkpoint(tmp_path / "eager.pt", 100.0)
    done = segkit.predict(eager, images, tmp_path / "m1", quiet=True, device="cpu", threshold=0.7)
    assert done.flagged == 20
    assert done.summary().startswith("predicted 20 images in ")
    assert done.summary().endswith("; 20 of 20 flagged (any foreground over 0.7)")


# ----------------------------------------------------------------------------- runs


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from conftest import TINY_RUN

    from segkit.cli import main

    assert main(["run", *TINY_RUN, *args]) == 0
    return capsys.readouterr().out


def _header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f))


@pytest.mark.slow
def test_a_defect_run_picks_best_pt_by_the_pooled_dice_and_says_why(
    defects: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    printed = _run(
        ["--epochs", "1", "--data", str(defects), "--out", str(out), "--name", "d"], capsys
    )
    assert (
        "segkit: --monitor auto: best.pt by valid_dice_dataset, as 13 of 16 train masks are "
        "empty (81%)" in printed
    )
    assert "valid dice_dataset " in printed and "(best epoch 1 by valid dice_dataset " in printed
    folder = out / "d"
    assert json.loads((folder / "config.json").read_text())["monitor"] == "valid_dice_dataset"
    assert json.loads((folder / "summary.json").read_text())["monitor"] == "valid_dice_dataset"
    assert _header(folder / "metrics.csv")[-1] == "valid_dice_dataset"


@pytest.mark.slow
def test_resuming_a_run_that_recorded_the_per_image_monitor_keeps_it(
    defects: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that recorded valid_dice (as every run before this rule did) on a defect set
    resumes with it: --monitor auto was resolved when it started."""
    out = tmp_path / "runs"
    args = ["--data", str(defects), "--out", str(out), "--name", "old", "--keep-last"]
    _run(["--epochs", "1", "--monitor", "valid_dice", *args], capsys)
    from segkit.cli import main

    assert main(["run", "--resume", str(out / "old"), "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "--monitor auto" not in printed
    folder = out / "old"
    assert json.loads((folder / "summary.json").read_text())["monitor"] == "valid_dice"
    assert "valid_dice_dataset" not in _header(folder / "metrics.csv")


@pytest.mark.slow
def test_a_run_on_other_data_keeps_its_monitor_columns_and_numbers(
    tiny_pets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pets (no empty mask): auto is valid_dice as before, no line about it, the
    metrics.csv columns as before, and the same numbers as a run asking valid_dice."""
    out = tmp_path / "runs"
    base = ["--epochs", "1", "--data", str(tiny_pets), "--out", str(out)]
    printed = _run([*base, "--name", "auto"], capsys)
    _run([*base, "--name", "asked", "--monitor", "valid_dice"], capsys)
    assert "--monitor auto" not in printed
    auto, asked = out / "auto", out / "asked"
    assert json.loads((auto / "config.json").read_text())["monitor"] == "valid_dice"
    assert _header(auto / "metrics.csv") == [
        *("epoch", "train_loss", "train_dice", "valid_loss", "valid_dice", "valid_iou", "lr"),
        *("epoch_seconds", "valid_s", "checkpoint_s", "epoch_wall_s", "train_images"),
        "skipped_steps",
    ]
    numbers = ("test_dice", "test_iou", "test_loss", "best_valid_dice", "best_value")
    a, b = (json.loads((f / "summary.json").read_text()) for f in (auto, asked))
    assert [a[k] for k in numbers] == [b[k] for k in numbers]
