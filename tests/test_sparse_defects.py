"""Defect detection: most masks empty, the rest a small blob. What Dice an empty image
scores, the image-level counts (found, missed, false alarms) that evaluate prints and a
run's summary.json records, and the warning for a model that predicts nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import blind_checkpoint, save_checkpoint, write_defects
from PIL import Image

import segkit
from segkit.training import checkpoint as ckpt_io

FAST = {"num_workers": 0, "device": "cpu", "batch_size": 4}


@pytest.fixture(scope="module")
def defects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_defects(tmp_path_factory.mktemp("defects") / "defects")


def test_the_data_check_counts_the_empty_masks_and_advises_no_pos_weight(defects: Path) -> None:
    """16 of 20 masks empty, the blobs 0.3% of the train pixels: the check says what
    predicting nothing would score, and does not advise the ~300x pos_weight that balances
    the pixels (segkit plan leaves it out; it turns every empty image into a false alarm).
    The value stays in the report for the planner."""
    from segkit.data.check import format_report

    report = segkit.check_data(defects, dataset="folder", workers=1)
    pos = report.suggestions["pos_weight"]
    assert pos["option"] is None and pos["value"] > 100
    text = format_report(report)
    assert "suggested --loss-opt pos_weight" not in text
    assert "pos_weight: not suggested: foreground 0.3% of the train pixels is rare" in text
    assert (
        "empty masks: 16 of 20 (80%): each scores Dice 1 when predicted empty, so a model "
        "that predicts no foreground at all gets a per-image dice near 0.80" in text
    )


def test_few_empty_masks_and_a_common_foreground_keep_the_old_advice(tmp_path: Path) -> None:
    """1 mask in 10 empty (under the 20% line) and foreground over 5%: no empty-share
    line, and the pos_weight is suggested as before."""
    from segkit.data.check import format_report

    root = tmp_path / "common"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        mask = np.zeros((32, 32), np.uint8)
        if i:
            mask[:8, :16] = 255
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"c{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
    report = segkit.check_data(root, dataset="folder", workers=1)
    text = format_report(report)
    assert "empty masks: " not in text
    pos = report.suggestions["pos_weight"]
    assert pos["option"] and f"suggested {pos['option']}: train background/foreground" in text


def test_the_plan_names_the_share_of_empty_train_masks(defects: Path) -> None:
    from segkit import registry
    from segkit.plan.fingerprint import fingerprint

    report = segkit.check_data(defects, dataset="folder", workers=1)
    train = report.splits["train"]
    fp = fingerprint(report, registry.create("datasets", "folder", defects))
    assert fp.empty_masks == pytest.approx(len(train.empty_masks) / train.count)
    assert 0.5 < fp.empty_masks < 1
    assert f"foreground 0.3%, {fp.empty_masks:.0%} of the train masks empty" in fp.describe()


@pytest.mark.parametrize("mode", [None, "resize"])
def test_a_model_that_predicts_nothing_is_warned_at_evaluate(
    defects: Path, tmp_path: Path, mode: str | None
) -> None:
    """16 of 20 masks are empty: predicting nothing scores 0.8 per-image Dice; evaluate
    prints that every defect was missed, and warns. The loader's pass and the
    predictor's count the same."""
    ckpt = blind_checkpoint(tmp_path / "blind.pt", -100.0)
    result = segkit.evaluate(ckpt, data=str(defects), split="all", mode=mode, **FAST)
    m = result.metrics
    assert (m["images"], m["empty_truth"], m["missed"], m["false_alarms"]) == (20, 16, 4, 0)
    assert m["dice"] == pytest.approx(0.8)
    lines = result.lines()
    assert lines[1] == (
        "all images: 4 with foreground, 0 found, 4 missed (detection rate 0%); "
        "16 empty, 0 false alarms (false-alarm rate 0%)"
    )
    assert lines[2].startswith(
        "segkit: warning: the model predicts no foreground on any of the 20 images "
        "(4 hold some): its per-image dice 0.8000 is the share of empty masks (16 of 20)"
    )


def test_a_model_that_marks_everything_has_every_empty_image_a_false_alarm(
    defects: Path, tmp_path: Path
) -> None:
    ckpt = blind_checkpoint(tmp_path / "eager.pt", 100.0)
    result = segkit.evaluate(ckpt, data=str(defects), split="all", **FAST)
    m = result.metrics
    assert (m["empty_truth"], m["missed"], m["false_alarms"]) == (16, 0, 16)
    assert result.lines()[1].endswith("16 empty, 16 false alarms (false-alarm rate 100%)")
    assert len(result.lines()) == 2  # no warning: it predicts plenty


def test_a_set_without_empty_masks_prints_the_one_line(tiny_pets: Path, tmp_path: Path) -> None:
    """The pets hold foreground in every mask: evaluate's output is its one line, as
    before; the counts are in the metrics."""
    ckpt = blind_checkpoint(tmp_path / "blind.pt", -100.0)
    result = segkit.evaluate(ckpt, data=str(tiny_pets), split="all", **FAST)
    assert result.metrics["empty_truth"] == 0
    assert result.metrics["missed"] == result.metrics["images"]
    assert len(result.lines()) == 1


@pytest.mark.slow
def test_a_run_on_a_defect_set_says_what_it_found(
    defects: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's test pass records the image-level counts in summary.json's test_metrics and
    prints them after its summary line when the test split holds empty masks."""
    from conftest import TINY_RUN

    from segkit.cli import main

    out = tmp_path / "runs"
    args = ["run", *TINY_RUN, "--epochs", "1", "--data", str(defects), "--out", str(out)]
    assert main([*args, "--name", "d"]) == 0
    m = json.loads((out / "d" / "summary.json").read_text())["test_metrics"]
    held = m["images"] - m["empty_truth"]
    assert m["empty_truth"] > 0 and 0 <= m["missed"] <= held
    assert 0 <= m["false_alarms"] <= m["empty_truth"]
    printed = capsys.readouterr().out
    assert (
        f"segkit: test images: {held} with foreground, {held - m['missed']} found, "
        f"{m['missed']} missed" in printed
    )


def constant_checkpoint(path: Path, probability: float) -> Path:
    """A checkpoint whose model gives every pixel ``probability`` (head weights 0)."""
    blind_checkpoint(path, math.log(probability / (1 - probability)))
    state = ckpt_io.load(path, map_location="cpu")
    state["model"]["head.weight"].zero_()
    ckpt_io.save_atomic(state, path)
    return path


@pytest.mark.parametrize("mode", [None, "resize"])
def test_evaluate_scores_at_the_threshold_asked(defects: Path, tmp_path: Path, mode) -> None:
    """Every pixel at probability 0.6: at the default 0.5 all of it is foreground (every
    empty image a false alarm), at 0.7 none of it (every defect missed), through the
    run's loader and through the predictor alike; the result line names the threshold."""
    ckpt = constant_checkpoint(tmp_path / "p60.pt", 0.6)
    low = segkit.evaluate(ckpt, data=str(defects), split="all", mode=mode, **FAST)
    assert (low.metrics["missed"], low.metrics["false_alarms"]) == (0, 16)
    assert "threshold" not in low.lines()[0]
    high = segkit.evaluate(ckpt, data=str(defects), split="all", mode=mode, threshold=0.7, **FAST)
    assert (high.metrics["missed"], high.metrics["false_alarms"]) == (4, 0)
    assert high.metrics["dice"] == pytest.approx(0.8)
    assert high.lines()[0].split("(")[1].endswith(", threshold 0.7)")
    if mode is None:  # the loss is the run's own, whatever the threshold
        assert high.metrics["loss"] == pytest.approx(low.metrics["loss"])


def test_evaluate_refuses_a_bad_threshold_and_one_for_k_classes(
    defects: Path, tmp_path: Path
) -> None:
    from segkit.errors import ConfigError
    from segkit.task import Task

    ckpt = save_checkpoint(tmp_path / "b.pt")
    with pytest.raises(ConfigError, match=r"threshold=1\.5: expected a probability in \(0, 1\)"):
        segkit.evaluate(ckpt, data=str(defects), threshold=1.5, **FAST)
    three = Task(("background", "a", "b"), ((0, 0, 0), (255, 0, 0), (0, 0, 255)))
    ckpt = save_checkpoint(tmp_path / "k.pt", task=three)
    with pytest.raises(ConfigError, match="a threshold applies to a binary model only"):
        segkit.evaluate(ckpt, threshold=0.3, **FAST)


def test_the_threshold_flag_is_in_evaluate_help(capsys: pytest.CaptureFixture[str]) -> None:
    from segkit.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "--threshold THRESHOLD" in capsys.readouterr().out
