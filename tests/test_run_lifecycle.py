"""The run lifecycle's edges: --epochs at resume below the epochs done, a folder with
best.pt but no last.pt (--save-every), a full disk in the first epoch, settings a resume
may change (--data moved, --device, ...), Ctrl-C between epochs, metrics.csv's rows kept
on resume, a taken --name."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import types
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN
from helpers import rows, tiny

from segkit.cli import main
from segkit.config import COMMAND_LINE, PYTHON, RunConfig, given_as
from segkit.errors import CheckpointError, ConfigError, DataError, RunInterrupted
from segkit.reports.compare import Run, Unfinished, inspect_run, read_run
from segkit.training import checkpoint as ckpt_io
from segkit.training import distributed, engine
from segkit.training.engine import resume, train
from segkit.training.run_folder import RunFolder


def _config_json(folder: Path, **settings: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {**RunConfig(out=str(folder.parent), name=folder.name).to_dict(), **settings}
    (folder / "config.json").write_text(json.dumps(data))


def _metrics(folder: Path, rows_: list[dict[str, object]]) -> None:
    with (folder / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows_[0]))
        writer.writeheader()
        writer.writerows(rows_)


# ------------------------------------------------------------------ 1. --epochs below done


def test_epochs_below_the_epochs_done_is_refused_naming_both(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "intr2")
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as e:
        engine._check_epochs(folder, 1, 2)  # segkit run --resume --epochs 1
    assert str(e.value) == (
        f"--epochs 1: {folder.path} has done 2 epochs ({folder.last} holds epoch 2), so it "
        "cannot end at 1. Pass --epochs 3 or more to train on, --epochs 2 to finish it now "
        "(test best.pt and write the reports), or leave --epochs out to go on to its own"
    )
    with pytest.raises(ConfigError) as e:
        engine._check_epochs(folder, 1, 2)  # segkit.resume(run, epochs=1)
    assert str(e.value).startswith(f"epochs=1: {folder.path} has done 2 epochs")
    assert "Pass epochs=3 or more to train on, epochs=2 to finish it now" in str(e.value)
    engine._check_epochs(folder, 2, 2)  # equal: finish now
    engine._check_epochs(folder, 3, 2)


@pytest.mark.slow
def test_resume_with_fewer_epochs_keeps_last_pt_and_equal_finishes(
    tiny_pets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(tiny(tiny_pets, tmp_path, epochs=2, name="intr2", keep_last=True), quiet=True)
    run = tmp_path / "intr2"
    (run / "summary.json").unlink()  # as if interrupted after epoch 2
    with pytest.raises(ConfigError, match="has done 2 epochs .* Pass epochs=3 or more"):
        resume(run, epochs=1, quiet=True)
    assert ckpt_io.load(run / "last.pt")["epoch"] == 2
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    capsys.readouterr()
    result = resume(run, epochs=2)
    out = capsys.readouterr().out
    assert "epochs=2: the run has done them all; nothing to train" in out  # Python's words
    assert result.epochs_run == 2 and (run / "summary.json").exists()
    assert (run / "last.pt").exists()  # --keep-last: kept


# ------------------------------------------------------- 2. best.pt kept, no last.pt


def test_a_folder_with_best_pt_but_no_last_pt_says_what_is_kept(tmp_path: Path) -> None:
    run = tmp_path / "se"
    _config_json(run, save_every=3)
    (run / "best.pt").write_bytes(b"x" * 2_000_000)
    _metrics(run, [{"epoch": 1, "valid_dice": 0.1}, {"epoch": 2, "valid_dice": 0.2}])
    asked = json.loads((run / "config.json").read_text())
    with given_as(COMMAND_LINE):
        why, restart = RunFolder(run).unresumable(asked, save_every=3)
    assert why == (
        f"{run} keeps best.pt (the best weights so far: it evaluates and predicts) and "
        "metrics.csv (epochs 1-2) but no training state (last.pt: --save-every 3 writes it "
        "every 3 epochs and the run stopped before the first), so it cannot be resumed"
    )
    # From Python the keyword; in a report file (compare's notes) the setting's name.
    said = {
        "python": RunFolder(run).unresumable(asked, save_every=3)[0],
        "report": RunFolder(run).unresumable(asked, save_every=3, report=True)[0],
    }
    assert said == {
        "python": why.replace("--save-every 3", "save_every=3"),
        "report": why.replace("--save-every 3", "save_every 3"),
    }
    with given_as(COMMAND_LINE):  # a report reads the same whoever writes it
        assert RunFolder(run).unresumable(asked, save_every=3, report=True)[0] == said["report"]
    assert restart == (
        f"{run} (2 MB) can be deleted if its best.pt is not wanted (rm -r {run}); the run "
        f"starts again in a new folder, {tmp_path / 'se-2'}: start it again with segkit run "
        f"--config {run / 'config.json'} --name se-2"
    )
    # --resume says the same, not "stopped before its first checkpoint"
    with given_as(COMMAND_LINE), pytest.raises(CheckpointError) as e:
        resume(run, quiet=True)
    assert "stopped before its first checkpoint" not in str(e.value)
    assert str(e.value) == f"{run / 'last.pt'}: checkpoint not found: {why}. {restart}"
    with pytest.raises(CheckpointError) as e:  # segkit.resume: the keyword, the call first
        resume(run, quiet=True)
    call = (
        f"segkit.train(segkit.RunConfig.from_file({str(run / 'config.json')!r}), "
        f"out={str(tmp_path)!r}, name='se-2') (or: segkit run --config {run / 'config.json'} "
        "--name se-2)"
    )
    in_python = restart.replace(f"segkit run --config {run / 'config.json'} --name se-2", call)
    assert str(e.value) == f"{run / 'last.pt'}: checkpoint not found: {said['python']}. {in_python}"
    # and compare, whose notes go into report files: the setting's name
    for origin in (PYTHON, COMMAND_LINE):
        with given_as(origin), pytest.raises(ConfigError) as e:
            read_run(run)
        assert str(e.value) == (
            f"{run}: the run has not finished (no summary.json); {said['report']}. {restart}"
        )
    # a taken se-2 that records nothing is what the restart takes; a record is passed over
    _config_json(tmp_path / "se-2")
    assert RunFolder(run).restart_elsewhere({"name": "se"})[0] == tmp_path / "se-2"
    (tmp_path / "se-2" / "best.pt").write_bytes(b"x")
    assert RunFolder(run).restart_elsewhere({"name": "se"})[0] == tmp_path / "se-3"


@pytest.mark.parametrize("damage", ["empty", "cut short", "a text file"])
def test_a_damaged_last_pt_says_how_the_run_goes_on_without_it(damage: str, tmp_path: Path) -> None:
    """An empty, truncated or foreign last.pt (a copy that stopped, a full disk): resume
    names the file and what is wrong, then how to go on: copy it again, or start the run
    again in a new folder (this one keeps best.pt and metrics.csv), the command named;
    not the general advice to pass another checkpoint, which resume cannot take."""
    run = tmp_path / "long"
    _config_json(run, epochs=8)
    _metrics(run, [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.4}])
    ckpt_io.save_atomic({"format": ckpt_io.FORMAT, "model": {}}, run / "best.pt")
    whole = (run / "best.pt").read_bytes()
    (run / "last.pt").write_bytes(
        {"empty": b"", "cut short": whole[: len(whole) // 2], "a text file": b"epoch 2\n"}[damage]
    )
    with given_as(COMMAND_LINE), pytest.raises(CheckpointError) as e:
        resume(run, quiet=True)
    what = {
        "empty": "the file is empty (0 bytes",
        "cut short": "the file is truncated",
        "a text file": "this one starts with b'epoc'",
    }[damage]
    assert str(e.value).startswith(f"{run / 'last.pt'}: not a")
    assert what in str(e.value)
    assert str(e.value).endswith(
        "The run cannot be resumed from it: if the run folder was copied, copy last.pt again; "
        f"else {run} keeps best.pt (the best weights so far: it evaluates and predicts) and "
        f"metrics.csv (epochs 1-2); start the run again in a new folder, {run}-2, with "
        f"segkit run --config {run / 'config.json'} --name long-2"
    )
    with pytest.raises(CheckpointError) as e:  # segkit.resume: the segkit.train call first
        resume(run, quiet=True)
    assert str(e.value).endswith(
        f"{run}-2, with segkit.train(segkit.RunConfig.from_file({str(run / 'config.json')!r}), "
        f"out={str(tmp_path)!r}, name='long-2') (or: segkit run --config {run / 'config.json'} "
        "--name long-2)"
    )
    assert (run / "last.pt").exists() and RunFolder(run).lock() is None  # kept; released


def test_extending_a_finished_run_without_last_pt_gives_the_new_run_command(
    tmp_path: Path,
) -> None:
    """A finished run deleted last.pt (no --keep-last): --resume --epochs says so and gives
    the command of the longer run, in the folder beside it (was: "start a new run")."""
    run = tmp_path / "fin"
    _config_json(run, epochs=3, keep_last=False)
    (run / "summary.json").write_text("{}")
    with given_as(COMMAND_LINE), pytest.raises(CheckpointError) as e:
        resume(run, epochs=5, quiet=True)
    assert str(e.value).endswith(
        f"To train longer, start a new run from epoch 1 (in {tmp_path / 'fin-2'}; --keep-last "
        f"to extend it later): segkit run --config {run / 'config.json'} --name fin-2 "
        "--epochs N --keep-last"
    )
    with pytest.raises(CheckpointError) as e:  # segkit.resume: the call, then the command
        resume(run, epochs=5, quiet=True)
    assert str(e.value).endswith(
        f"(in {tmp_path / 'fin-2'}; keep_last=True to extend it later): segkit.train("
        f"segkit.RunConfig.from_file({str(run / 'config.json')!r}), out={str(tmp_path)!r}, "
        f"name='fin-2', epochs=N, keep_last=True) (or: segkit run --config "
        f"{run / 'config.json'} --name fin-2 --epochs N --keep-last)"
    )


def test_compare_of_a_run_stopped_before_its_first_epoch_gives_the_restart(tmp_path: Path) -> None:
    run = tmp_path / "early"
    _config_json(run)
    with pytest.raises(
        ConfigError, match=f"again with the shell command: segkit run --config {run}"
    ):
        read_run(run)


@pytest.mark.slow
def test_ctrl_c_in_epoch_3_with_save_every_3_says_best_pt_is_kept(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine.train_one_epoch

    def interrupted_in_epoch_3(*args, **kwargs):
        if kwargs["epoch"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupted_in_epoch_3)
    with pytest.raises(RunInterrupted) as e:
        train(tiny(tiny_pets, tmp_path, epochs=4, save_every=3, name="se"), quiet=True)
    run = tmp_path / "se"
    assert e.value.run_dir == run  # for a notebook: segkit.resume(e.run_dir), no parsing
    message = str(e.value)
    assert message.startswith(f"interrupted during epoch 3; {run} keeps best.pt")
    assert "metrics.csv (epochs 1-2)" in message and "save_every=3 writes it every 3" in message
    assert "no checkpoint had been written" not in message
    assert message.endswith(
        f"in a new folder, {tmp_path / 'se-2'}: start it again with segkit.train(segkit."
        f"RunConfig.from_file({str(run / 'config.json')!r}), out={str(tmp_path)!r}, "
        f"name='se-2') (or: segkit run --config {run / 'config.json'} --name se-2)"
    )  # started from Python: the call first
    assert (run / "best.pt").exists() and not (run / "last.pt").exists()
    # what ended it is recorded, for compare
    assert RunFolder(run).read_stopped() == {
        "stopped_by": "interrupted",
        "when": "during epoch 3",
        "reason": "Ctrl-C or SIGTERM",
        "time": RunFolder(run).read_stopped()["time"],  # type: ignore[index]
    }
    row = inspect_run(run)
    assert row.stopped_by == "interrupted"  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_failed_run_records_what_ended_it_and_a_resume_clears_it(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine.train_one_epoch

    def broken_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 2:
            raise DataError("pets/images/Bengal_12.jpg: cannot be read")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", broken_in_epoch_2)
    with pytest.raises(DataError):
        train(tiny(tiny_pets, tmp_path, epochs=2, name="f"), quiet=True)
    run = tmp_path / "f"
    stopped = RunFolder(run).read_stopped()
    assert stopped is not None and stopped["stopped_by"] == "failed"
    assert stopped["when"] == "during epoch 2"
    assert stopped["reason"].startswith("DataError: pets/images/Bengal_12.jpg: cannot be read")
    row = inspect_run(run)
    assert isinstance(row, Unfinished) and row.stopped_by == "failed"
    assert row.note.startswith(
        "unfinished at epoch 1 of 2: failed during epoch 2 (DataError: pets/images/Bengal_12"
    )
    assert row.note.endswith(
        f"finish it with: segkit run --resume {run} (a shell command; "
        f"segkit.resume({str(run)!r}) in Python)"
    )
    monkeypatch.setattr(engine, "train_one_epoch", real)
    resume(run, quiet=True)
    assert not (run / "stopped.json").exists() and (run / "summary.json").exists()
    assert isinstance(inspect_run(run), Run)  # finished now


# ------------------------------------------------------------ 3. a full disk in epoch 1


def test_discard_of_an_unresumable_first_epoch(tmp_path: Path) -> None:
    run = tmp_path / "full"
    _config_json(run)
    (run / "best.pt").write_bytes(b"x")
    folder = RunFolder(run)
    assert not folder.discard()  # a failed start only
    _metrics(run, [{"epoch": 1}])
    assert folder.discard(unresumable=True) and not run.exists()
    # two epochs recorded, or a last.pt: kept
    _config_json(run)
    (run / "best.pt").write_bytes(b"x")
    _metrics(run, [{"epoch": 1}, {"epoch": 2}])
    assert not folder.discard(unresumable=True) and run.exists()
    (run / "metrics.csv").unlink()
    (run / "last.pt").write_bytes(b"x")
    assert not folder.discard(unresumable=True) and run.exists()


@pytest.mark.slow
@pytest.mark.parametrize("background", [False, True], ids=["in-loop", "background"])
def test_a_full_disk_writing_last_pt_in_epoch_1_leaves_no_folder(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool
) -> None:
    monkeypatch.setattr(engine, "_write_in_background", lambda runtime: background)
    real_save = torch.save

    def full_at_last_pt(obj, f, *a, **k):
        if obj.get("kind") != "weights":  # best.pt goes through, last.pt fills the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_at_last_pt)
    with pytest.raises(CheckpointError) as e:
        train(tiny(tiny_pets, tmp_path, epochs=2, name="full"), quiet=True)
    assert "No space left on device" in str(e.value)
    assert f"its folder {tmp_path / 'full'} is removed: it held no training state" in str(e.value)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------- 4. settings a resume may change


def test_resume_refuses_settings_that_change_what_is_trained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"resume: lr, seed would change what the run trains"):
        resume(tmp_path, settings={"lr": 0.1, "seed": 2, "device": "cpu"}, quiet=True)


@pytest.mark.parametrize(
    "flags",
    [
        ["--data", "/elsewhere"],
        ["--device", "cpu", "--num-workers", "0", "--threads", "1"],
        ["--log-every", "5", "--keep-last", "--profile", "3"],
        ["--precision", "fp32"],
    ],
)
def test_the_cli_passes_machine_settings_to_resume(
    flags: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = {}

    def fake_resume(run_dir, *, epochs, max_time, quiet, settings):
        seen.update(settings)
        raise ConfigError("stop here")

    monkeypatch.setattr(engine, "resume", fake_resume)
    assert main(["run", "--resume", str(tmp_path), *flags]) == 2
    assert seen and all(k in engine.CHANGEABLE_ON_RESUME for k in seen)


def test_the_cli_still_refuses_what_changes_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--resume", str(tmp_path), "--batch-size", "8", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size cannot change them" in err and "--device" in err.split("It may")[1]
    # the new run's command gives what was typed again, not "[options]"
    args = ["--lr", "0.01", "--epochs", "20", "--no-keep-last", "--model-opt", "init=torch"]
    assert main(["run", "--resume", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.endswith(
        "Start a new run with them (from epoch 1, in a new folder): segkit run --config "
        f"{tmp_path / 'config.json'} --model-opt init=torch --epochs 20 --lr 0.01 "
        "--no-keep-last\n"
    )


def test_a_gpu_run_resumed_without_its_gpu_gets_the_whole_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint recording --device cuda, --cuda-graphs on and --precision fp16, resumed
    on a machine without CUDA: one error naming what last.pt records and the resume command
    that goes on here (before: "--device cuda: no CUDA GPU is available here", a flag never
    typed, and after --device cpu a second refusal for --cuda-graphs)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recorded = RunConfig(device="cuda", cuda_graphs="on", precision="fp16", epochs=4)
    monkeypatch.setattr(ckpt_io, "load", lambda *a, **k: {"config": recorded.to_dict(), "epoch": 2})
    run = tmp_path / "gpu"
    _config_json(run)
    (run / "last.pt").write_bytes(b"")
    assert main(["run", "--resume", str(run), "--data", "/moved"]) == 2
    err = capsys.readouterr().err
    assert (
        f"segkit: error: {run}: the run trained with --device cuda, --cuda-graphs on, "
        f"--precision fp16 ({run / 'last.pt'} records them) and this machine has no CUDA GPU. "
        f"Resume it on the CPU with: segkit run --resume {run} --data /moved --device cpu "
        "--cuda-graphs auto --precision auto (the epochs"
    ) in err
    # --device cpu typed: what still needs a GPU is named, the command keeps --device cpu
    with pytest.raises(ConfigError) as e:
        resume(run, settings={"device": "cpu"}, quiet=True)
    assert "trained with cuda_graphs='on', precision='fp16'" in str(e.value)
    assert (
        f"segkit.resume({str(run)!r}, settings={{'device': 'cpu', 'cuda_graphs': 'auto', "
        "'precision': 'auto'})"
    ) in str(e.value)
    # what the machine has: nothing to say (the run goes on to its own checks)
    engine._check_machine(RunFolder(run), RunConfig(device="cpu"), None)
    engine._check_machine(RunFolder(run), RunConfig(device="auto", precision="bf16"), None)


def test_a_resume_on_a_full_disk_names_the_run_folder_and_moving_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run folder of a resume on a full disk is --resume's (not an --out never typed),
    and the way out besides freeing space is moving the folder (it resumes anywhere), not
    choosing another folder; nothing in it is touched."""
    from segkit.system import files

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(
        ckpt_io, "load", lambda *a, **k: {"config": RunConfig().to_dict(), "epoch": 1}
    )
    run = tmp_path / "long"
    _config_json(run)
    (run / "last.pt").write_bytes(b"state")
    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(ConfigError) as e:
        resume(run, quiet=True)
    assert str(e.value) == (
        f"--resume {run}: cannot write there (No space left on device); free some space, or "
        "move the run folder where it can be written and resume it there"
    )
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "last.pt"]


def test_a_resume_whose_data_moved_gives_the_command_with_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dataset folder the run recorded has gone: the error names it and the resume
    command that says where it is now (before: the dataset plugin's "pass --data pointing at
    a folder with images/", without the resume)."""
    gone = tmp_path / "pets"
    recorded = RunConfig(data=str(gone))
    monkeypatch.setattr(ckpt_io, "load", lambda *a, **k: {"config": recorded.to_dict(), "epoch": 2})
    run = tmp_path / "long"
    _config_json(run)
    (run / "last.pt").write_bytes(b"state")
    assert main(["run", "--resume", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"segkit: error: {gone}: data folder not found: {run} trained on it and it has moved or "
        f"gone. Resume with the dataset where it is now: segkit run --resume {run} --data PATH "
        "(its splits are checked to hold the samples the run trained on)\n"
    )
    with pytest.raises(DataError, match=r"segkit\.resume\(.*, settings=\{'data': PATH\}\)"):
        resume(run, quiet=True)
    # recorded from a relative --data that names a folder from here: that one is offered
    (tmp_path / "here" / "pets").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "here")
    recorded.data_as_typed = "pets"
    with pytest.raises(DataError) as e:
        resume(run, quiet=True)
    assert (
        f"now ('pets' from here is {tmp_path / 'here' / 'pets'}): segkit.resume({str(run)!r}, "
        "settings={'data': 'pets'})"
    ) in str(e.value)


def test_another_dataset_is_refused_at_resume(tmp_path: Path) -> None:
    config = RunConfig(data=str(tmp_path / "other"))
    recorded = {"train": {"count": 13, "ids": "a"}, "valid": {"count": 2, "ids": "b"}}
    engine._check_same_samples(config, {"splits": recorded}, dict(recorded))
    engine._check_same_samples(config, {}, None)  # an older checkpoint: not checked
    with pytest.raises(DataError) as e:
        engine._check_same_samples(
            config, {"splits": recorded}, {**recorded, "train": {"count": 12, "ids": "c"}}
        )
    assert str(e.value).startswith(
        f"{tmp_path / 'other'}: its train split has 12 samples where the run had 13: it is not "
        "the dataset this run trained on"
    )
    with pytest.raises(DataError, match="valid split has other sample ids than the run's 2"):
        engine._check_same_samples(
            config, {"splits": recorded}, {**recorded, "valid": {"count": 2, "ids": "z"}}
        )


@pytest.mark.slow
def test_resume_with_the_data_moved_and_machine_settings(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    data = tmp_path / "pets"
    shutil.copytree(tiny_pets, data)
    out = tmp_path / "runs"
    train(tiny(data, out, epochs=1, name="mv", keep_last=True), quiet=True)
    run = out / "mv"
    (run / "summary.json").unlink()
    assert ckpt_io.load(run / "last.pt")["splits"]["train"]["count"] == 13
    moved = tmp_path / "moved"
    data.rename(moved)
    assert main(["run", "--resume", str(run), "-q"]) == 2  # the resume command with --data
    assert f"segkit run --resume {run} --data PATH" in capsys.readouterr().err
    # fewer samples: refused, nothing written
    fewer = tmp_path / "fewer"
    shutil.copytree(moved, fewer)
    (fewer / "annotations" / "trainval.txt").write_text(
        "".join((fewer / "annotations" / "trainval.txt").read_text().splitlines(True)[:-3])
    )
    assert main(["run", "--resume", str(run), "--data", str(fewer), "-q"]) == 2
    assert "split has" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["data"] == str(data)
    args = ["run", "--resume", str(run), "--data", str(moved), "--epochs", "2", "--device", "cpu"]
    assert main([*args, "--threads", "1", "--num-workers", "0", "--log-every", "1"]) == 0
    assert [int(r["epoch"]) for r in rows(run)] == [1, 2]
    assert json.loads((run / "config.json").read_text())["data"] == str(moved)


# ----------------------------------------------------------- 5. Ctrl-C between epochs


@pytest.mark.slow
def test_ctrl_c_between_epochs_names_the_epoch_done(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = distributed.barrier
    calls = []

    def interrupted_after_epoch_1(d):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(d)

    monkeypatch.setattr(distributed, "barrier", interrupted_after_epoch_1)
    with pytest.raises(RunInterrupted) as e:
        train(tiny(tiny_pets, tmp_path, epochs=3, name="between"), quiet=True)
    assert str(e.value) == (
        f"interrupted after epoch 1, before epoch 2; the last checkpoint "
        f"({tmp_path / 'between' / 'last.pt'}) holds epoch 1. Resume with: "
        f"segkit.resume({str(tmp_path / 'between')!r}) (or: segkit run --resume "
        f"{tmp_path / 'between'})"
    )  # trained from Python: segkit.resume first; the command (test_long_runs) names itself


# ---------------------------------------------------- 6. metrics.csv's rows on resume


def test_resume_keeps_the_rows_metrics_csv_has(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    on_disk = [
        {"epoch": 1, "train_loss": 0.5, "checkpoint_s": 0.98, "epoch_wall_s": 3.5},
        {"epoch": 2, "train_loss": 0.4, "checkpoint_s": 0.97, "epoch_wall_s": 3.4},
        {"epoch": 3, "train_loss": 0.3, "checkpoint_s": 0.96, "epoch_wall_s": 3.3},
    ]
    _metrics(tmp_path, on_disk)
    before = (tmp_path / "metrics.csv").read_text().splitlines()
    # the checkpoint of epoch 2, written in the loop: its rows lack the seconds
    history = [{**r, "checkpoint_s": 0.0, "epoch_wall_s": float("nan")} for r in on_disk[:2]]
    folder.rewrite_metrics(history)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == before[:3]
    assert [r["checkpoint_s"] for r in history] == [0.98, 0.97]
    assert [r["epoch_wall_s"] for r in history] == [3.5, 3.4]
    folder.rewrite_metrics([])
    assert not (tmp_path / "metrics.csv").exists()


def test_resume_writes_rows_edited_by_hand_again_from_the_checkpoint(tmp_path: Path) -> None:
    """last.pt is the record: a metrics.csv row edited (or damaged) by hand is written again
    as the run had it, so the resumed file equals an unbroken run's; the file keeps only the
    seconds filled after the checkpoint, and the epochs that differed are returned."""
    folder = RunFolder(tmp_path)
    history = [
        {"epoch": 1, "train_loss": 0.5, "lr": 0.001, "checkpoint_s": 0.0, "epoch_wall_s": 1.0},
        {"epoch": 2, "train_loss": 0.4, "lr": 0.00099, "checkpoint_s": 0.0, "epoch_wall_s": 1.0},
    ]
    on_disk = [
        {**history[0], "checkpoint_s": 0.98, "epoch_wall_s": 3.5},
        {**history[1], "train_loss": 9.4, "checkpoint_s": 0.97, "epoch_wall_s": 3.4},
        {**history[1], "epoch": 3, "train_loss": 0.3},
    ]
    _metrics(tmp_path, on_disk)
    assert folder.rewrite_metrics([dict(r) for r in history]) == [2]
    assert [(r["epoch"], r["train_loss"], r["checkpoint_s"]) for r in rows(tmp_path)] == [
        ("1", "0.5", "0.98"),
        ("2", "0.4", "0.97"),
    ]
    # unedited: nothing differs, the text is as it was
    before = (tmp_path / "metrics.csv").read_text()
    assert folder.rewrite_metrics([dict(r) for r in history]) == []
    assert (tmp_path / "metrics.csv").read_text() == before


@pytest.mark.slow
def test_resume_after_an_interrupt_keeps_the_earlier_rows(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine.train_one_epoch

    def interrupted_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupted_in_epoch_2)
    with pytest.raises(RunInterrupted, match="during epoch 2"):
        train(tiny(tiny_pets, tmp_path, epochs=2, name="intr"), quiet=True)
    monkeypatch.setattr(engine, "train_one_epoch", real)
    first = (tmp_path / "intr" / "metrics.csv").read_text().splitlines()
    assert float(rows(tmp_path / "intr")[0]["checkpoint_s"]) > 0
    resume(tmp_path / "intr", quiet=True)
    assert (tmp_path / "intr" / "metrics.csv").read_text().splitlines()[:2] == first


# ------------------------------------------------------------------- 7. a taken --name


def test_a_taken_name_is_said(tmp_path: Path) -> None:
    config = RunConfig(out=str(tmp_path), name="normal")
    first = RunFolder.create(config)
    assert first.instead_of is None
    (first.path / "best.pt").write_bytes(b"x")  # a record: not taken again
    second = RunFolder.create(config)
    assert second.path == tmp_path / "normal-2" and second.instead_of == tmp_path / "normal"
    first.release()
    second.release()


@pytest.mark.slow
def test_a_taken_name_prints_one_line(
    tiny_pets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(tiny(tiny_pets, tmp_path, epochs=1, name="normal"), quiet=True)
    train(tiny(tiny_pets, tmp_path, epochs=1, name="normal"))
    out = capsys.readouterr().out
    assert f"segkit: {tmp_path / 'normal'} exists; this run writes {tmp_path / 'normal-2'}\n" in out


@pytest.mark.parametrize("origin", [PYTHON, COMMAND_LINE])
def test_bad_samples_txt_names_the_setting_however_the_run_was_started(
    tmp_path: Path, origin: str
) -> None:
    # A file of the run folder: the same words for a run of `segkit run` and of Python.
    folder = RunFolder(tmp_path / "r")
    folder.path.mkdir()
    sample = types.SimpleNamespace(id="cat_1")
    with given_as(origin):
        folder.write_bad_samples([("train", sample, "cannot decode image")])
    assert folder.bad_samples.read_text() == (
        "# 1 samples left out by skip_bad_samples\ntrain\tcat_1\tcannot decode image\n"
    )


def test_resume_of_a_missing_folder_names_out_as_it_was_given(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"run folder not found\. .* \(in its out, runs/"):
        resume(tmp_path / "nope")
    with given_as(COMMAND_LINE), pytest.raises(CheckpointError, match=r"\(in its --out, runs/"):
        resume(tmp_path / "nope")


# ------------------------------------------------------- 7. Ctrl-C before the first epoch


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_while_building_says_nothing_was_trained_and_leaves_no_folder(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Listing the data and building the model come before the folder: a Ctrl-C there
    (a notebook's interrupt, the command's) is one line, not a traceback, and no trace."""
    monkeypatch.setattr(engine.build, "build_training", _interrupt)
    with pytest.raises(RunInterrupted) as e:
        train(tiny(tiny_pets, tmp_path, name="early"), quiet=True)
    assert str(e.value) == (
        "interrupted while setting up, before any epoch was trained: nothing was trained "
        "and no run folder was made; start it again with the same segkit.train call"
    )
    assert e.value.run_dir is None and list(tmp_path.iterdir()) == []
    args = ["run", "--data", str(tiny_pets), "--out", str(tmp_path), "--name", "early"]
    assert main(args) == 130
    assert capsys.readouterr().err == (
        "segkit: interrupted while setting up, before any epoch was trained: nothing was "
        "trained and no run folder was made; start it again with the same segkit run "
        "command\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_after_the_folder_is_made_names_the_restart_that_takes_it(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(engine.build, "build_step", _interrupt)  # after config.json
    with pytest.raises(RunInterrupted) as e:
        train(tiny(tiny_pets, tmp_path / "runs", name="early"), quiet=True)
    run = tmp_path / "runs" / "early"
    assert str(e.value) == (
        f"interrupted while setting up, before any epoch was trained: nothing was trained, "
        f"and {run} holds only its config.json. Start it again with: "
        f"segkit.train(segkit.RunConfig.from_file({str(run / 'config.json')!r})) (or: "
        f"segkit run --config {run / 'config.json'}) (it takes that folder again)"
    )
    assert e.value.run_dir == run and sorted(p.name for p in run.iterdir()) == ["config.json"]
    assert not (run / "stopped.json").exists()  # it records nothing: compare lists nothing
    monkeypatch.chdir(tmp_path)  # the same command again takes the folder, not early-2
    args = ["run", "--data", str(tiny_pets), "--out", "runs", "--name", "early", *TINY_RUN]
    assert main(args) == 130
    assert capsys.readouterr().err == (
        "segkit: interrupted while setting up, before any epoch was trained: nothing was "
        "trained, and runs/early holds only its config.json. Start it again with: segkit run "
        "--config runs/early/config.json (it takes that folder again)\n"
    )
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["early"]


def test_ctrl_c_while_reading_last_pt_says_the_run_is_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "last.pt").write_bytes(b"weights")
    monkeypatch.setattr(engine.ckpt_io, "load", _interrupt)
    with pytest.raises(RunInterrupted) as e:
        resume(run)
    assert str(e.value) == (
        f"interrupted while setting up, before any epoch was trained: nothing was trained, "
        f"and {run / 'last.pt'} is as it was. Resume with: segkit.resume({str(run)!r}) (or: "
        f"segkit run --resume {run})"
    )
    assert e.value.run_dir == run
    from segkit.training import run_folder

    assert str(run.resolve()) not in run_folder._LOCKS  # let go: the next resume may take it
    assert main(["run", "--resume", str(run)]) == 130
    assert capsys.readouterr().err.endswith(f"Resume with: segkit run --resume {run}\n")
