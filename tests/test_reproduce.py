"""A run folder's record of what decides its numbers, and what a rerun from its
``config.json`` says differs (segkit.training.reproduce)."""

from __future__ import annotations

import copy
import json
import platform
from pathlib import Path
from typing import Any

import pytest
from helpers import run_folder

from segkit import __version__
from segkit.errors import ConfigError
from segkit.reports.compare import compare
from segkit.training import checkpoint as ckpt_io
from segkit.training import reproduce
from segkit.training.engine import _recorded_run

RECORDED = {
    "device": "cpu",
    "device_name": "cpu",
    "precision": "fp32",
    "threads": 2,
    "torch": "2.14.1+cu130",
    "environment": {
        "python": "3.11.7",
        "segkit": "0.1.0",
        "numpy": "2.4.6",
        "timm": "1.0.31",
        "albumentations": "2.0.8",
        "dali": None,
        "platform": "linux x86_64",
        "cpu": "Intel(R) Xeon(R) Processor",
    },
    "data_root": "/data/pets",
    "plugins": {
        "models": {"name": "unet", "distribution": "segkit", "version": "0.1.0"},
        "loaders": {"name": "albumentations", "distribution": "segkit", "version": "0.1.0"},
    },
    "splits": {
        "train": {"count": 27, "ids": "2b707f8f81f4ec0c"},
        "valid": {"count": 3, "ids": "7e439ab358e0375e"},
        "test": {"count": 10, "ids": "b10a746618bdeae9"},
    },
}


def test_the_environment_names_python_segkit_the_libraries_and_the_cpu() -> None:
    env = reproduce.environment()
    assert env["python"] == platform.python_version() and env["segkit"] == __version__
    import numpy

    assert env["numpy"] == numpy.__version__
    assert set(env) >= {"timm", "albumentations", "dali", "platform", "cpu"}
    assert env["cpu"] and isinstance(env["cpu"], str)
    json.dumps(env)  # config.json holds it as is


def test_a_rerun_on_the_same_machine_and_data_says_nothing() -> None:
    assert reproduce.rerun_notes("c.json", RECORDED, copy.deepcopy(RECORDED), "albumentations") == (
        None,
        None,
    )


def test_a_rerun_names_each_thing_that_decides_the_numbers_and_differs() -> None:
    now = copy.deepcopy(RECORDED)
    now["torch"] = "2.15.0"
    now["threads"] = 1
    now["environment"]["albumentations"] = "2.1.0"
    now["environment"]["segkit"] = "0.2.0"
    now["plugins"]["models"]["version"] = "0.2.0"
    now["environment"]["numpy"] = "3.0.0"  # not compared: torch computes, not numpy
    note, warning = reproduce.rerun_notes("runs/a/config.json", RECORDED, now, "albumentations")
    assert warning is None
    assert note == (
        "segkit: note: rerunning runs/a/config.json with torch 2.14.1+cu130 -> 2.15.0, "
        "segkit 0.1.0 -> 0.2.0, model unet segkit 0.1.0 -> segkit 0.2.0, "
        "albumentations 2.0.8 -> 2.1.0, threads 2 -> 1: the numbers may differ from the "
        "recorded run's accordingly"
    )


def test_the_loaders_library_counts_for_its_loader_only() -> None:
    now = copy.deepcopy(RECORDED)
    now["environment"]["albumentations"] = "2.1.0"
    assert reproduce.differences(RECORDED, now, "dali") == []
    assert reproduce.differences(RECORDED, now, "albumentations") == [
        "albumentations 2.0.8 -> 2.1.0"
    ]


def test_another_device_or_cpu_is_named() -> None:
    gpu = copy.deepcopy(RECORDED) | {"device": "cuda:0", "device_name": "NVIDIA H100"}
    assert reproduce.differences(RECORDED, gpu, "albumentations") == ["device cpu -> NVIDIA H100"]
    other_cpu = copy.deepcopy(RECORDED)
    other_cpu["environment"]["cpu"] = "AMD EPYC 9654"
    assert reproduce.differences(RECORDED, other_cpu, "albumentations") == [
        "CPU Intel(R) Xeon(R) Processor -> AMD EPYC 9654"
    ]


# ---------------------------------------------------------- the segkit commit of a checkout

A = "1a2b3c4d5e6f" + "0" * 28
B = "9f8e7d6c5b4a" + "1" * 28


def _checkout(root: Path, head: str, refs: dict[str, str] | None = None) -> Path:
    """A fake git checkout at ``root`` holding a ``segkit`` package folder: ``.git/HEAD``
    is ``head``, each of ``refs`` (path -> commit) a loose ref file."""
    (root / "segkit").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text(head + "\n")
    for ref, commit in (refs or {}).items():
        (root / ".git" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / ".git" / ref).write_text(commit + "\n")
    return root / "segkit"


def test_the_commit_of_a_checkout_is_read_from_its_git_files(tmp_path: Path) -> None:
    on_branch = _checkout(tmp_path / "a", "ref: refs/heads/main", {"refs/heads/main": A})
    assert reproduce.git_commit(on_branch) == A
    detached = _checkout(tmp_path / "b", B)
    assert reproduce.git_commit(detached) == B
    packed = _checkout(tmp_path / "c", "ref: refs/heads/dev")  # after `git gc`
    (tmp_path / "c" / ".git" / "packed-refs").write_text(
        f"# pack-refs with: peeled fully-peeled sorted\n{A} refs/heads/main\n{B} refs/heads/dev\n"
    )
    assert reproduce.git_commit(packed) == B


def test_a_worktree_reads_its_head_and_the_shared_refs(tmp_path: Path) -> None:
    """``git worktree add``: ``.git`` is a file naming the worktree's git folder, whose
    ``commondir`` leads to the clone's (where the branches are)."""
    _checkout(tmp_path / "main", "ref: refs/heads/main", {"refs/heads/feature": B})
    own = tmp_path / "main" / ".git" / "worktrees" / "wt"
    own.mkdir(parents=True)
    (own / "HEAD").write_text("ref: refs/heads/feature\n")
    (own / "commondir").write_text("../..\n")
    (tmp_path / "wt" / "segkit").mkdir(parents=True)
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {own}\n")
    assert reproduce.git_commit(tmp_path / "wt" / "segkit") == B


def test_no_checkout_or_unreadable_git_files_record_nothing(tmp_path: Path) -> None:
    wheel = tmp_path / "site-packages" / "segkit"  # installed: no .git beside it
    wheel.mkdir(parents=True)
    assert reproduce.git_commit(wheel) is None
    assert reproduce.git_commit(_checkout(tmp_path / "a", "ref: refs/heads/gone")) is None
    assert reproduce.git_commit(_checkout(tmp_path / "b", "not a commit")) is None
    outside = _checkout(tmp_path / "c", "ref: ../../../etc/passwd")
    assert reproduce.git_commit(outside) is None
    (tmp_path / "x").write_text(A)  # a commit-like file outside .git: not read
    assert reproduce.git_commit(_checkout(tmp_path / "e", f"ref: {tmp_path}/x")) is None
    (tmp_path / "d" / "segkit").mkdir(parents=True)
    (tmp_path / "d" / ".git").write_text("garbage")
    assert reproduce.git_commit(tmp_path / "d" / "segkit") is None


def test_the_environment_records_the_commit_and_a_rerun_names_another(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from segkit.cli import main

    monkeypatch.setattr(reproduce, "segkit_commit", lambda: A)
    assert reproduce.environment()["segkit_commit"] == A
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"segkit {__version__} (git 1a2b3c4d5e6f)\n"
    monkeypatch.setattr(reproduce, "segkit_commit", lambda: None)  # a wheel
    assert "segkit_commit" not in reproduce.environment()
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"segkit {__version__}\n"

    recorded, now = copy.deepcopy(RECORDED), copy.deepcopy(RECORDED)
    recorded["environment"]["segkit_commit"] = A
    now["environment"]["segkit_commit"] = B
    note, _ = reproduce.rerun_notes("runs/a/config.json", recorded, now, "albumentations")
    assert note == (
        "segkit: note: rerunning runs/a/config.json with segkit commit 1a2b3c4d5e6f -> "
        "9f8e7d6c5b4a: the numbers may differ from the recorded run's accordingly"
    )
    # One side from a wheel (or a record of an older segkit): the versions alone compared.
    del now["environment"]["segkit_commit"]
    assert reproduce.differences(recorded, now, "albumentations") == []
    assert reproduce.differences(now, recorded, "albumentations") == []


def test_a_record_of_an_older_segkit_is_compared_on_what_it_holds() -> None:
    old = {k: v for k, v in RECORDED.items() if k != "environment"}
    assert reproduce.differences(old, copy.deepcopy(RECORDED), "albumentations") == []


def test_other_data_is_a_warning_naming_each_split() -> None:
    now = copy.deepcopy(RECORDED)
    now["data_root"] = "/new/pets"
    now["splits"]["train"] = {"count": 30, "ids": "0000000000000000"}
    now["splits"]["test"]["ids"] = "1111111111111111"
    note, warning = reproduce.rerun_notes("c.json", RECORDED, now, "albumentations")
    assert note is None
    assert warning == (
        "data /new/pets is not the data c.json recorded (train: 27 images -> 30; test: other "
        "images, 10 as recorded): the splits hold other samples, so the numbers will differ; "
        "pass --data with the run's data to repeat it"
    )


def test_the_same_data_at_another_path_is_not_other_data() -> None:
    now = copy.deepcopy(RECORDED) | {"data_root": "/moved/pets"}
    assert reproduce.rerun_notes("c.json", RECORDED, now, "albumentations") == (None, None)


def test_only_a_run_folders_config_json_is_a_record_to_compare(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"epochs": 2, "resolved": RECORDED}))
    assert _recorded_run(run / "config.json") == (str(run / "config.json"), RECORDED)
    assert _recorded_run(run) == (str(run / "config.json"), RECORDED)  # the folder
    own = tmp_path / "study.json"
    own.write_text(json.dumps({"epochs": 2}))
    toml = tmp_path / "study.toml"
    toml.write_text("epochs = 2\n")
    assert _recorded_run(own) is None and _recorded_run(toml) is None
    assert _recorded_run(None) is None


# ------------------------------------------------- segkit compare: the original and its rerun


def _with_splits(run: Path, splits: dict[str, Any], data: Path | str) -> Path:
    """``run``'s config.json recording ``splits`` and ``data`` (as a run on it does)."""
    config = json.loads((run / "config.json").read_text())
    config["data"] = config["data_as_typed"] = config["resolved"]["data_root"] = str(data)
    config["resolved"]["splits"] = splits
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_compare_takes_a_rerun_on_moved_data_for_the_same_data(
    tiny_pets: Path, tiny_pets_dataset, tmp_path: Path
) -> None:
    """A colleague's run whose data folder is gone here, and its rerun on the same samples
    at another path: compared (not refused as other data), predictions.png drawn from the
    rerun's data; a run on other samples is still refused."""
    splits = ckpt_io.split_record(tiny_pets_dataset)
    gone = tmp_path / "colleague" / "pets"  # never made
    orig = _with_splits(run_folder(tmp_path / "orig", gone, dataset="oxford_pet"), splits, gone)
    rerun = _with_splits(
        run_folder(tmp_path / "rerun", tiny_pets, dataset="oxford_pet"), splits, tiny_pets
    )
    result = compare([orig, rerun], tmp_path / "c")
    assert result.predicted == 5 and (tmp_path / "c" / "predictions.png").is_file()
    assert result.runs[0].results["parameters"] == result.runs[1].results["parameters"]

    other = copy.deepcopy(splits)
    other["test"]["ids"] = "0" * 16
    _with_splits(rerun, other, tiny_pets)
    with pytest.raises(ConfigError, match="were trained on different datasets"):
        compare([orig, rerun], tmp_path / "d")


def test_compare_without_any_runs_data_here_notes_the_missing_picture(
    tiny_pets_dataset, tmp_path: Path
) -> None:
    splits = ckpt_io.split_record(tiny_pets_dataset)
    runs = [
        _with_splits(
            run_folder(tmp_path / name, tmp_path / "gone", dataset="oxford_pet", seed=seed),
            splits,
            tmp_path / "gone",
        )
        for seed, name in enumerate(("a", "b"))
    ]
    result = compare(runs, tmp_path / "c")
    assert not (tmp_path / "c" / "predictions.png").exists() and result.predicted == 0
    assert result.runs[0].results["parameters"] > 0  # counted from best.pt all the same
    assert result.notes[-1].startswith("predictions.png not drawn: no run's data folder is here")
    assert "data folder not found" in result.notes[-1]
    assert "predictions.png not drawn" in (tmp_path / "c" / "comparison.md").read_text()


def test_a_recorded_data_folder_that_is_gone_is_named_as_recorded_with_the_way_on(
    tiny_pets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run folder's config.json rerun without --data, its data moved: one line that
    says the file records the path and to pass --data, before anything is built; with
    --data, or where the folder is there, nothing is said."""
    from segkit.cli import main
    from segkit.config import RunConfig, check_recorded_data, given_as
    from segkit.errors import DataError

    run = run_folder(tmp_path / "run", tiny_pets)
    recorded = json.loads((run / "config.json").read_text())
    gone = tmp_path / "moved-away"
    (run / "config.json").write_text(json.dumps({**recorded, "data": str(gone)}))
    assert main(["run", "--config", str(run / "config.json")]) != 0
    err = capsys.readouterr().err
    assert err.strip() == (
        f"segkit: error: {gone}: data folder not found; {run / 'config.json'} records it as "
        "the run's data, and it has moved or is on another machine: pass --data NEWPATH "
        "naming where the dataset is now"
    )
    config = RunConfig.from_dict({**recorded, "data": str(gone)})
    with given_as("Python"), pytest.raises(DataError, match=r"pass data='NEWPATH' naming"):
        check_recorded_data(config, "best.pt")
    check_recorded_data(RunConfig.from_dict({**recorded, "data": str(tiny_pets)}), "best.pt")
    check_recorded_data(RunConfig(), "best.pt")  # generated data: no folder to look for
