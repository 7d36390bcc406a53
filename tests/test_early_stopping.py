"""--monitor and --patience: which epoch is the best, when a run stops early, and resume
keeping the patience counter.

The training runs are real tiny runs; only validation is scripted (``engine.evaluate``
returns a given value per epoch for the valid split), so that the stop epoch is known."""

from __future__ import annotations

import json
import math
import time
import types
from pathlib import Path

import pytest
from conftest import interrupt_in_epoch
from helpers import rows, tiny

from segkit.config import COMMAND_LINE, PYTHON, RunConfig, given_as
from segkit.errors import ConfigError, RunInterrupted
from segkit.training import checkpoint as ckpt_io
from segkit.training import engine
from segkit.training.early_stopping import EarlyStopping
from segkit.training.engine import resume, train
from segkit.training.run_folder import RunResult, summary_line

# ------------------------------------------------------------------ the patience logic


def test_patience_counts_validations_without_an_improvement() -> None:
    s = EarlyStopping("valid_dice", patience=2)
    assert [s.update(v, e) for e, v in enumerate([0.5, 0.7, 0.7, 0.6], 1)] == [
        True,
        True,
        False,  # a tie is no improvement: the earlier epoch stays the best
        False,
    ]
    assert (s.best, s.best_epoch, s.wait, s.should_stop) == (0.7, 2, 2, True)
    assert s.reason() == (
        "valid_dice has not improved by more than 0 for 2 validated epochs (best 0.7000 at epoch 2)"
    )
    assert not EarlyStopping("valid_dice").should_stop  # no patience: never stops


def test_min_delta_measures_from_the_last_real_improvement() -> None:
    s = EarlyStopping("valid_iou", patience=3, min_delta=0.05)
    s.update(0.50, 1)
    assert s.update(0.53, 2) and s.wait == 1  # the new best, but not by more than 0.05
    assert s.update(0.56, 3) and s.wait == 0  # 0.06 over epoch 1's 0.50: counts
    assert not s.update(0.55, 4) and s.wait == 1
    assert (s.best, s.best_epoch, s.reference) == (0.56, 3, 0.56)


def test_loss_is_better_lower_and_nan_never_improves() -> None:
    s = EarlyStopping("valid_loss", patience=1)
    assert s.update(0.4, 1) and s.update(0.3, 2)
    assert not s.update(math.nan, 3) and s.should_stop
    assert (s.best, s.best_epoch) == (0.3, 2)


def test_state_dict_round_trip_and_an_old_checkpoint_starts_at_0() -> None:
    s = EarlyStopping("valid_loss", patience=3, min_delta=0.01)
    for e, v in enumerate([0.5, 0.4, 0.45], 1):
        s.update(v, e)
    s.stopped = True
    t = EarlyStopping("valid_loss", patience=3, min_delta=0.01)
    t.load_state_dict(s.state_dict())
    assert (
        t.state_dict()
        == s.state_dict()
        == {
            "monitor": "valid_loss",
            "best": 0.4,
            "best_epoch": 2,
            "reference": 0.4,
            "wait": 1,
            "stopped": True,
        }
    )
    old = EarlyStopping("valid_dice", patience=2)
    old.load_state_dict({"best": 0.8, "best_epoch": 4})  # what engine reads from an old last.pt
    assert (old.best, old.best_epoch, old.reference, old.wait, old.stopped) == (
        0.8,
        4,
        0.8,
        0,
        False,
    )
    with pytest.raises(ValueError, match="monitor"):
        old.load_state_dict(s.state_dict())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"patience": 0}, "^patience=0: expected a positive integer"),
        ({"min_delta": -0.1}, "^min_delta=-0.1: expected 0 or more"),
        ({"monitor": "test_dice"}, "^monitor='test_dice': expected one of auto, valid_dice"),
    ],
)
def test_bad_settings_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig(**options)


def test_resume_refuses_patience(tmp_path: Path, capsys) -> None:
    from segkit.cli import main

    assert main(["run", "--resume", str(tmp_path), "--patience", "3"]) == 2
    assert "--patience cannot change them" in capsys.readouterr().err


# ------------------------------------------------------------------ tiny runs


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    """``scripted(dice=[...], loss=[...])``: validation after epoch e returns the e-th
    values (the test split is evaluated for real). Returns the list of epochs trained."""
    trained: list[int] = []
    real_train, real_evaluate = engine.train_one_epoch, engine.evaluate

    def install(dice: list[float], loss: list[float] | None = None) -> list[int]:
        def train_one_epoch(*args, **kwargs):
            trained.append(kwargs["epoch"])
            return real_train(*args, **kwargs)

        def evaluate(*args, **kwargs):
            if "meter" in kwargs:  # the test split
                return real_evaluate(*args, **kwargs)
            e = trained[-1] - 1
            return {
                "loss": loss[e] if loss else 1 - dice[e],
                "dice": dice[e],
                "iou": dice[e] / 2,
            }

        monkeypatch.setattr(engine, "train_one_epoch", train_one_epoch)
        monkeypatch.setattr(engine, "evaluate", evaluate)
        return trained

    return install


#: Improves at epochs 1, 2 and 4; with --patience 2 the run stops after epoch 6, and
#: would not if the counter were lost in between (epoch 7 improves).
DICE = [0.5, 0.7, 0.65, 0.72, 0.71, 0.70, 0.9, 0.9]
STOP = (
    "early stop: valid_dice has not improved by more than 0 for 2 validated epochs "
    "(best 0.7200 at epoch 4)"
)


@pytest.mark.slow
def test_patience_stops_the_run_and_tests_the_best_epoch(
    tiny_pets: Path, tmp_path: Path, scripted, capsys
) -> None:
    trained = scripted(DICE)
    config = tiny(
        tiny_pets, tmp_path, name="es", epochs=8, patience=2, save_every=4, keep_last=True
    )
    result = train(config)
    assert trained == [1, 2, 3, 4, 5, 6]
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch ")]
    assert lines[-1].startswith("epoch   6/8") and lines[-1].endswith(STOP)
    assert not any("early stop" in x for x in lines[:-1])
    summary = json.loads((tmp_path / "es" / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["epochs_run"] == 6
    assert summary["stop_reason"] == STOP.removeprefix("early stop: ")
    assert (summary["best_epoch"], summary["best_valid_dice"]) == (4, 0.72)
    assert (summary["monitor"], summary["best_value"]) == ("valid_dice", 0.72)
    assert result.stopped_early and result.best_epoch == 4
    # The summary line says so too (what the CLI prints last, and summary.txt).
    assert (
        "(best epoch 4, valid dice 0.7200; stopped early after epoch 6)"
        in (tmp_path / "es" / "summary.txt").read_text()
    )
    assert ckpt_io.load(tmp_path / "es" / "best.pt")["epoch"] == 4
    last = ckpt_io.load(tmp_path / "es" / "last.pt")  # the stop writes it (--save-every 4)
    assert last["epoch"] == 6 and last["early_stopping"]["wait"] == 2
    assert len((tmp_path / "es" / "metrics.csv").read_text().splitlines()) == 1 + 6


@pytest.mark.slow
def test_resume_keeps_the_patience_counter(
    tiny_pets: Path, tmp_path: Path, scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = scripted(DICE)
    put_back = interrupt_in_epoch(monkeypatch, 6)
    with pytest.raises(RunInterrupted, match="holds epoch 5"):
        train(tiny(tiny_pets, tmp_path, name="cut", epochs=8, patience=2, keep_last=True))
    put_back()
    run = tmp_path / "cut"
    assert ckpt_io.load(run / "last.pt")["early_stopping"]["wait"] == 1

    result = resume(run, quiet=True)  # epoch 6 is the second validation without a gain
    assert trained == [1, 2, 3, 4, 5, 6]
    assert result.stopped_early and result.epochs_run == 6 and result.best_epoch == 4

    # Stopped early, it is finished: resuming trains nothing and tests best.pt again.
    again = resume(run, quiet=True)
    assert trained == [1, 2, 3, 4, 5, 6] and again.stopped_early
    assert again.test["dice"] == pytest.approx(result.test["dice"], abs=1e-6)

    # --epochs trains on, the counter kept: epoch 7 improves.
    more = resume(run, epochs=7, quiet=True)
    assert trained == [1, 2, 3, 4, 5, 6, 7]
    assert not more.stopped_early and more.best_epoch == 7 and more.epochs_run == 7
    assert json.loads((run / "summary.json").read_text())["stopped_early"] is False


@pytest.mark.slow
def test_monitor_valid_loss_picks_the_lowest_loss(
    tiny_pets: Path, tmp_path: Path, scripted
) -> None:
    scripted(dice=[0.5, 0.4, 0.6], loss=[0.5, 0.3, 0.4])  # by Dice: epoch 3
    result = train(
        tiny(tiny_pets, tmp_path, name="loss", epochs=3, monitor="valid_loss"), quiet=True
    )
    assert result.best_epoch == 2 and result.best_valid_dice == 0.4
    assert ckpt_io.load(tmp_path / "loss" / "best.pt")["epoch"] == 2
    summary = json.loads((tmp_path / "loss" / "summary.json").read_text())
    assert (summary["monitor"], summary["best_value"], summary["best_epoch"]) == (
        "valid_loss",
        0.3,
        2,
    )
    assert summary["stopped_early"] is False and summary["stop_reason"] is None


# ------------------------------------------------------------------ --max-time


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("20", "^max_time='20': expected a duration such as 20m, 90s, 1h30m or 1.5h"),
        ("0s", "^max_time='0s': expected a duration above zero"),
        ("ten minutes", "^max_time='ten minutes': expected a duration such as 20m"),
    ],
)
def test_a_bad_max_time_names_the_value_and_the_form(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig(max_time=value)


def test_a_number_for_max_time_in_a_config_file_asks_for_the_unit(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("max_time = 1200\n")
    with pytest.raises(ConfigError) as e:
        RunConfig.from_file(path)
    assert str(e.value) == (
        f"{path}: key 'max_time' = 1200: expected a duration with its unit, as a string: "
        '"20m", "90s", "1h30m" or "1.5h"'
    )


class Trained(list):
    """The epochs trained, and how long the first one takes on the engine's clock."""

    first_epoch_s = 1000.0


@pytest.fixture
def slow_epochs(monkeypatch: pytest.MonkeyPatch) -> Trained:
    """Every epoch's training takes 1000 s more on the engine's clock (the clock it reads
    for epoch seconds and for --max-time), the first ``first_epoch_s``; returns the epochs
    trained. Epochs this long leave the tests' limits hundreds of seconds of real time to
    spare: a busy machine's real seconds, added to the same clock, do not move a stop."""
    trained = Trained()
    offset = [0.0]
    clock = types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + offset[0])
    real_train = engine.train_one_epoch

    def train_one_epoch(*args, **kwargs):
        trained.append(kwargs["epoch"])
        offset[0] += trained.first_epoch_s if len(trained) == 1 else 1000.0
        return real_train(*args, **kwargs)

    monkeypatch.setattr(engine, "time", clock)
    monkeypatch.setattr(engine, "train_one_epoch", train_one_epoch)
    return trained


@pytest.mark.parametrize("origin", [PYTHON, COMMAND_LINE])
def test_a_run_folder_words_the_max_time_stop_by_the_settings_name(origin: str) -> None:
    # summary.json and summary.txt read the same for a run started by `segkit run` as for
    # one started from Python (compare and a study read both); the console says it as given.
    why = "epoch 5 would end about 1h23m after the start"
    with given_as(origin):
        reason = engine._stop_reason(EarlyStopping("valid_dice"), why, "75m")
        result = RunResult(Path("runs/mt"), {"dice": 0.5, "iou": 0.4}, 3, 0.6, 1.0, 8.0, [])
        result.stopped_early, result.stopped_by, result.epochs_run = True, "max_time", 4
        line = summary_line(RunConfig(), result)
    assert reason == "max_time 75m: epoch 5 would end about 1h23m after the start"
    assert "(best epoch 3, valid dice 0.6000; stopped by max_time after epoch 4)" in line


@pytest.mark.slow
def test_max_time_stops_before_an_epoch_that_would_end_past_it(
    tiny_pets: Path, tmp_path: Path, slow_epochs, capsys
) -> None:
    # 1000 s an epoch: after epoch 4 (at ~4000 s) a fifth would end at ~5000 s, past 4500 s.
    config = tiny(
        tiny_pets, tmp_path, name="mt", epochs=8, max_time="75m", keep_last=True, validate_every=3
    )
    result = train(config)
    assert slow_epochs == [1, 2, 3, 4]
    # Epoch 4 is validated although --validate-every 3 skips it: the last epoch trained counts.
    valid = [float(r["valid_dice"]) for r in rows(tmp_path / "mt")]
    assert [math.isnan(v) for v in valid] == [True, True, False, False]
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch ")]
    assert (
        lines[-1].startswith("epoch   4/8")
        and "time limit: stopping, epoch 5 would end" in (lines[-1])
    )
    assert lines[-1].endswith("past max_time='75m'")  # from Python: the keyword
    assert not any("time limit" in x for x in lines[:-1])
    summary = json.loads((tmp_path / "mt" / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["stopped_by"] == "max_time"
    assert summary["epochs_run"] == 4 and summary["stop_reason"].startswith("max_time 75m: epoch 5")
    assert result.stopped_by == "max_time" and result.test["dice"] >= 0
    assert "stopped by max_time after epoch 4" in (tmp_path / "mt" / "summary.txt").read_text()
    assert ckpt_io.load(tmp_path / "mt" / "last.pt")["epoch"] == 4  # written at the stop

    # --resume with more time trains on: the limit counts from the resumed process's start.
    more = resume(tmp_path / "mt", max_time="10h", quiet=True)
    assert slow_epochs == [1, 2, 3, 4, 5, 6, 7, 8]
    assert not more.stopped_early and more.epochs_run == 8 and more.stopped_by == "epochs"


@pytest.mark.slow
def test_max_time_leaves_the_first_epochs_warm_up_out_of_the_estimate(
    tiny_pets: Path, tmp_path: Path, slow_epochs
) -> None:
    # Epoch 1 takes 3000 s (its warm-up), later ones 1000 s: after epoch 2 (at ~4000 s) the
    # next is expected at ~5000 s, within 6200 s; counting epoch 1's 3000 s it would not be.
    slow_epochs.first_epoch_s = 3000.0
    result = train(tiny(tiny_pets, tmp_path, name="w", epochs=8, max_time="6200s"), quiet=True)
    assert slow_epochs == [1, 2, 3, 4] and result.stopped_by == "max_time"


@pytest.mark.slow
def test_max_time_lets_a_run_that_fits_finish(tiny_pets: Path, tmp_path: Path, slow_epochs) -> None:
    result = train(tiny(tiny_pets, tmp_path, name="fits", epochs=3, max_time="1h"), quiet=True)
    assert slow_epochs == [1, 2, 3] and not result.stopped_early


def test_resume_takes_max_time_but_not_other_settings(tmp_path: Path, capsys) -> None:
    from segkit.cli import main

    assert main(["run", "--resume", str(tmp_path), "--max-time", "1h", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--lr cannot change them (only --epochs can, to extend the run, and --max-time)" in err
