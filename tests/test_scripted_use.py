"""segkit driven by scripts, CI and schedulers: a stop signal during a checkpoint write,
machine-readable results, exit statuses (docs/reference/scripting.md)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from segkit.cli.train import _sigterm_as_interrupt
from segkit.system.signals import signals_held
from segkit.training import checkpoint as ckpt_io


class _SignalWhilePickled:
    """Sends ``signum`` to this process while torch.save pickles it: a Ctrl-C or a
    scheduler's SIGTERM arriving in the middle of a checkpoint write."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __reduce__(self) -> tuple[type, tuple[int]]:
        signal.raise_signal(self.signum)
        return int, (7,)


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a terminal (a suite started in the
    background has it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_during_a_checkpoint_write_waits_for_the_write(
    tmp_path: Path, ctrl_c_raises: None, signum: int
) -> None:
    # On the CPU the engine writes in the training loop (background=False). The signal used
    # to cut torch.save, which reported it as a failed write (exit 2, stopped.json
    # 'failed'); now the file is written whole, then the run stops as interrupted.
    writer = ckpt_io.BackgroundWriter(background=False)
    path = tmp_path / "last.pt"
    state = {"epoch": 3, "marker": _SignalWhilePickled(signum)}
    with _sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
        writer.submit([(state, path)], epoch=3)
    assert ckpt_io.torch.load(path, weights_only=False) == {"epoch": 3, "marker": 7}
    assert writer.saved_epoch == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_signals_held_delivers_each_signal_once_after_the_block(ctrl_c_raises: None) -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_held():
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGINT)
                seen.append(0)  # the block went on past the signals
        assert seen == [0, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_signals_held_leaves_an_ignored_signal_ignored_and_other_threads_alone() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals_held():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    errors: list[BaseException] = []

    def in_a_thread() -> None:
        try:
            with signals_held():  # signal.signal would raise ValueError outside the main thread
                pass
        except BaseException as e:  # noqa: BLE001 -- reported by the assertion below
            errors.append(e)

    t = threading.Thread(target=in_a_thread)
    t.start()
    t.join()
    assert errors == []


def test_evaluate_json_is_the_scores_as_one_object(tmp_path: Path) -> None:
    import json

    import numpy as np
    import torch

    from segkit.inference.evaluate import Evaluated
    from segkit.task import Task

    binary = Evaluated(
        "test",
        {"dice": 0.5, "iou": 0.25, "loss": 1.5, "images": 6.0},
        Task(),
        tmp_path,
        "cpu, fp32",
        "",
        split_sizes={"train": 8, "valid": 1, "test": 6},
    )
    out = json.loads(json.dumps(binary.to_dict("runs/r/best.pt")))
    assert out["checkpoint"] == "runs/r/best.pt" and out["split"] == "test"
    assert out["data"] == str(tmp_path) and out["classes"] is None
    assert out["metrics"] == {"dice": 0.5, "iou": 0.25, "loss": 1.5, "images": 6}
    assert out["split_note"].startswith(f"{tmp_path}: the test split holds 6 images of its 15")
    classes = Evaluated(
        "all",
        {"miou": np.float32(0.5), "confusion": torch.tensor([[3, 1], [0, 2]]), "images": 2},
        Task(("background", "cell")),
        tmp_path,
        "cpu, fp32",
        "; mode auto",
        modes={"resize": 2},
    )
    out = json.loads(json.dumps(classes.to_dict()))  # tensors and NumPy numbers made plain
    assert out["classes"] == ["background", "cell"] and out["modes"] == {"resize": 2}
    assert out["metrics"] == {"miou": 0.5, "confusion": [[3, 1], [0, 2]], "images": 2}
    assert out["how"] == "mode auto" and out["checkpoint"] is None
    assert out["overlap"] is None and out["overlap_note"] == ""  # no splits recorded
    # A folder with some of the training images: the counts, and the line.
    from segkit.inference.evaluate import Overlap

    mixed = Evaluated(
        "all",
        {"dice": 0.5, "iou": 0.25, "images": 28.0},
        Task(),
        tmp_path,
        "cpu, fp32",
        "",
        overlap=Overlap("all", 40, train=10, valid=2, left_out=True),
    )
    out = json.loads(json.dumps(mixed.to_dict()))
    assert out["overlap"] == {
        "split": "all",
        "images": 40,
        "train": 10,
        "valid": 2,
        "left_out": True,
        "checked": True,
        "scored": 28,
    }
    assert out["overlap_note"].startswith(f"{tmp_path}: 10 of 40 images were in this model's")


def test_run_json_names_the_folder_the_run_wrote(tmp_path: Path) -> None:
    from segkit.cli import build_parser
    from segkit.cli.train import run_json

    run_dir = tmp_path / "unet-2"  # --name unet was taken
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"test_dice": 0.5, "stopped_by": "epochs"}\n')
    assert run_json(run_dir) == {
        "run_dir": str(run_dir),
        "summary_json": str(run_dir / "summary.json"),
        "test_dice": 0.5,
        "stopped_by": "epochs",
    }
    assert build_parser().parse_args(["run", "--json"]).json
    assert build_parser().parse_args(["evaluate", "best.pt", "--json"]).json


@pytest.mark.slow
def test_a_script_reads_run_and_evaluate_results_as_json(
    tiny_pets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from conftest import TINY_RUN

    from segkit.cli import main

    args = ["run", *TINY_RUN, "--data", str(tiny_pets), "--epochs", "1", "--device", "cpu"]
    args += ["--out", str(tmp_path), "--name", "r", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)  # nothing but the object on stdout
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["run_dir"] == str(tmp_path / "r")
    assert second["run_dir"] == str(tmp_path / "r-2")  # not r, which holds the first run
    summary = json.loads((tmp_path / "r-2" / "summary.json").read_text())
    assert second["test_dice"] == summary["test_dice"] and second["epochs_run"] == 1
    best = str(tmp_path / "r-2" / "best.pt")
    assert main(["evaluate", best, "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "test" and out["metrics"]["images"] == 5
    assert out["metrics"]["dice"] == pytest.approx(summary["test_dice"], abs=1e-4)


def test_a_sigterm_stops_a_study_as_ctrl_c_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It used to end the study at once (143 in a shell), its run in training recording
    # no stopped.json and nothing saying how to go on.
    from segkit.cli import main, reports

    def study_stopped_by_the_scheduler(args: object) -> int:
        signal.raise_signal(signal.SIGTERM)
        return 0

    monkeypatch.setattr(reports, "_study", study_stopped_by_the_scheduler)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["study", "grid.toml", "-q"]) == 130
    assert capsys.readouterr().err == "segkit: interrupted\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_plan_refuses_a_taken_out_before_measuring_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It used to read the data and time steps (minutes) and only then refuse the file.
    from segkit.cli import main
    from segkit.plan import planner

    def measured(*args: object, **kwargs: object) -> None:
        raise AssertionError("the plan was measured before --out was checked")

    monkeypatch.setattr(planner, "make_plan", measured)
    taken = tmp_path / "plan.toml"
    taken.write_text("epochs = 3  # edited by hand\n")
    assert main(["plan", str(tmp_path), "--out", str(taken)]) == 2
    assert "plan.toml: exists (a plan you may have edited); pass --force" in (
        capsys.readouterr().err
    )
    assert main(["plan", str(tmp_path), "--out", str(tmp_path / "plan.txt")]) == 2
    assert "a plan is written as .toml, .yaml or .json" in capsys.readouterr().err
    assert taken.read_text() == "epochs = 3  # edited by hand\n"


@pytest.mark.parametrize("flag", ["--json", "-q"])
def test_plan_run_ends_with_the_runs_result_on_stdout(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
) -> None:
    # plan --run used to print nothing of the run with -q, and with --json to follow the
    # plan's object with the run's progress lines; nor did SIGTERM stop it as it does a run.
    import json
    from types import SimpleNamespace

    from segkit.cli import main
    from segkit.config import RunConfig
    from segkit.plan import files, planner
    from segkit.training import engine

    class FakePlan:
        def to_dict(self) -> dict[str, object]:
            return {"settings": {"epochs": 1}}

        def lines(self) -> list[str]:
            return ["  epochs  1  the planner's reason"]

    run_dir = tmp_path / "runs" / "planned"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text('{"test_dice": 0.5}\n')
    (run_dir / "summary.txt").write_text("test dice 0.5000  run runs/planned\n")
    trained: list[bool] = []

    def fake_train(config: RunConfig, quiet: bool) -> SimpleNamespace:
        assert quiet  # the run's own lines would break the JSON, or -q
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        trained.append(True)
        return SimpleNamespace(run_dir=run_dir, data_warnings=["class dot is rare"])

    def fake_write(plan: FakePlan, path: str, force: bool = False) -> Path:
        Path(path).write_text("epochs = 1\n")
        return Path(path)

    monkeypatch.setattr(planner, "make_plan", lambda *a, **k: FakePlan())
    monkeypatch.setattr(files, "write_plan", fake_write)
    monkeypatch.setattr(RunConfig, "from_file", classmethod(lambda cls, p: RunConfig()))
    monkeypatch.setattr(engine, "train", fake_train)
    plan_file = tmp_path / "plan.toml"
    assert main(["plan", str(tmp_path), "--out", str(plan_file), "--run", flag]) == 0
    assert trained == [True]
    out, err = capsys.readouterr()
    assert err == "segkit: warning (data): class dot is rare\n"
    if flag == "--json":
        printed = json.loads(out)  # one object: the plan, then the run
        assert printed["file"] == str(plan_file) and printed["settings"] == {"epochs": 1}
        assert printed["run"] == {
            "run_dir": str(run_dir),
            "summary_json": str(run_dir / "summary.json"),
            "test_dice": 0.5,
        }
    else:
        assert out.splitlines()[-1] == "test dice 0.5000  run runs/planned"
