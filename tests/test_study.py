"""segkit study (grids, resume, refusal of a changed file, --parallel) and segkit compare
(tables, curves, predictions, refusal of runs on other data)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_folder

from segkit.cli import main
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.errors import ConfigError
from segkit.reports import study as study_mod
from segkit.reports.compare import compare, mean_std
from segkit.reports.study import expand, prepare_folder, read_study, run_name, run_study
from segkit.training import checkpoint as ckpt_io
from segkit.training import engine
from segkit.training.run_folder import (
    FINISHED_BY,
    STOPPED_BY,
    UNFINISHED_BY,
    RunFolder,
    stopped_by_of,
)

#: A UNet at 32 px on the tiny pet set: about 3 s an epoch on 2 CPU cores.
TINY_BASE = """
[base]
model = "unet"
image_size = 32
batch_size = 4
num_workers = 0
grid_images = 2
data = "{data}"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tiny_study(tmp_path: Path, data: Path, body: str, name: str = "s.toml") -> Path:
    return write(tmp_path / name, TINY_BASE.format(data=data) + body)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- the grid


def test_axes_expand_to_their_product_in_file_order() -> None:
    runs = expand(
        {"epochs": 3, "model_options": {"a": 1}},
        {"model": ["unet", "resnet34_unet"], "augment": ["type1", "type3"], "seed": [0, 1]},
    )
    assert [r.name for r in runs] == [
        "unet-type1-seed0", "unet-type1-seed1", "unet-type3-seed0", "unet-type3-seed1",
        "resnet34_unet-type1-seed0", "resnet34_unet-type1-seed1",
        "resnet34_unet-type3-seed0", "resnet34_unet-type3-seed1",
    ]  # fmt: skip
    last = runs[-1].settings
    assert last == {"epochs": 3, "model_options": {"a": 1}, "model": "resnet34_unet",
                    "recipe": "type3", "seed": 1}  # fmt: skip
    assert runs[-1].config().recipe == "type3"  # `augment`, the old name, is read as recipe


def test_an_explicit_list_runs_as_given_and_crosses_the_axes() -> None:
    runs = expand(
        {"epochs": 2, "model_options": {"encoder": "resnet18", "x": 1}},
        {"seed": [0, 1]},
        [
            {"model": "unet"},
            {"model": "timm_unet", "model_options": {"encoder": "efficientnet_b0"}, "lr": 1e-4},
            {"name": "baseline"},
        ],
    )
    assert [r.name for r in runs] == [
        "unet-seed0", "unet-seed1",
        "timm_unet-encoder-efficientnet_b0-lr0.0001-seed0",
        "timm_unet-encoder-efficientnet_b0-lr0.0001-seed1",
        "baseline-seed0", "baseline-seed1",
    ]  # fmt: skip
    # *_options merge key by key over the base, as on the command line.
    assert runs[2].settings["model_options"] == {"encoder": "efficientnet_b0", "x": 1}
    assert runs[2].settings["lr"] == 1e-4 and runs[4].settings == {
        "epochs": 2, "model_options": {"encoder": "resnet18", "x": 1}, "seed": 0
    }  # fmt: skip
    only_list = expand({}, {}, [{"model": "unet"}, {"model": "resnet34_unet"}])
    assert [r.name for r in only_list] == ["unet", "resnet34_unet"]


@pytest.mark.parametrize(
    ("table", "key", "match"),
    [
        ("axes", "modle", r"\[axes\]: unknown setting\(s\) 'modle' \(did you mean 'model'\?\)"),
        ("base", "learning_rate", r"\[base\]: unknown setting\(s\) 'learning_rate'"),
        (
            "runs",
            "epoch",
            r"\[\[runs\]\] 1: unknown setting\(s\) 'epoch' \(did you mean 'epochs'\?\)",
        ),
    ],
)
def test_a_key_that_is_not_a_run_setting_is_named(
    tmp_path: Path, table: str, key: str, match: str
) -> None:
    value = '["unet"]' if table == "axes" else "1"
    text = f"[[runs]]\n{key} = {value}\n" if table == "runs" else f"[{table}]\n{key} = {value}\n"
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=str(path).replace(".", r"\.") + " " + match):
        read_study(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "[axes]\nseed = 3\n",
            r"\[axes\] seed = 3: expected a non-empty list of values, e\.g\. seed = \[3, \.\.\.\]",
        ),
        ("[axes]\nseed = []\n", r"\[axes\] seed = \[\]: expected a non-empty list"),
        ("[base]\nout = 'x'\n", r"\[base\]: out cannot be set in a study.*--out"),
        ("[axes]\nname = ['a', 'b']\n", r"\[axes\]: name cannot be set in a study"),
        ("[grid]\nseed = [1]\n", r"unknown table or key 'grid'; a study file holds \[base\]"),
        (
            "[axes]\nepochs = [2, 0]\n",
            r"bad\.toml: run epochs0: key 'epochs' = 0: expected a positive integer",
        ),
        ("[axes]\nseed = [1]\n[[runs]]\nseed = 2\n", r"\[\[runs\]\] 1: seed is also an axis"),
        (
            "[[runs]]\nmodel = 'unet'\n[[runs]]\nmodel = 'unet'\n",
            r"two configurations get the run folder name 'unet' \(they are the same configuration",
        ),
        ("[base\n", r"not valid TOML"),
    ],
)
def test_bad_study_files_are_refused_with_the_file_and_the_fix(
    tmp_path: Path, text: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        read_study(write(tmp_path / "bad.toml", text))


def test_run_names_are_folder_names() -> None:
    assert run_name({"model": "unet", "lr": 0.001, "compile": False, "ema": None}) == (
        "unet-lr0.001-no-compile-ema-none"
    )
    assert run_name({"data": "/data/my pets"}) == "-data-my-pets"
    assert run_name({}) == "run"


def test_the_shipped_studies_expand() -> None:
    root = Path(__file__).resolve().parents[1] / "studies"
    lab = read_study(root / "lab.toml")
    assert len(lab.runs) == 6 and lab.out == Path("runs/lab")
    config = lab.runs[0].config()
    assert (config.image_size, config.epochs, config.batch_size, config.lr, config.lr_gamma) == (
        256,
        200,
        32,
        1e-5,
        0.99,
    )
    assert (config.loss, config.schedule) == ("bce_dice", "exponential")
    assert {(r.settings["model"], r.settings["recipe"]) for r in lab.runs} == {
        (m, r) for m in ("unet", "resnet34_unet") for r in ("type1", "type2", "type3")
    }
    demo = read_study(root / "demo.toml")
    assert len(demo.runs) == 12
    assert {r.settings["seed"] for r in demo.runs} == {0, 1}
    assert all(r.config().image_size == 64 and r.config().data is None for r in demo.runs)


# ----------------------------------------------------------------------------- the folder


def test_a_changed_file_is_refused_and_force_replaces_only_the_changed_runs(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "s.toml", "[base]\nepochs = 2\n[axes]\nseed = [0, 1]\n")
    study = read_study(path, tmp_path / "out")
    prepare_folder(study, say=lambda _: None)
    (tmp_path / "out" / "seed0").mkdir()
    (tmp_path / "out" / "seed1").mkdir()
    assert (tmp_path / "out" / "study.toml").read_text() == path.read_text()
    prepare_folder(read_study(path, tmp_path / "out"))  # unchanged: fine

    write(path, "[base]\nepochs = 2\n[axes]\nseed = [0, 2]\n[[runs]]\nlr = 0.01\n")
    changed = read_study(path, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"s\.toml differs from the study in .*out \(") as e:
        prepare_folder(changed)
    # seed0 given lr 0.01 is an edit (one setting, which renames it); so is seed1 -> seed2
    # with lr 0.01 too (two settings; each run the other's closest): every change listed.
    assert "--force" in str(e.value) and "added" not in str(e.value)
    assert (
        "(2 run(s) changed, and named anew by it (seed0 -> lr0.01-seed0: lr 0.001 -> 0.01, "
        "seed1 -> lr0.01-seed2: lr 0.001 -> 0.01 and seed 1 -> 2)): pass --force"
    ) in str(e.value)

    write(path, "[base]\nepochs = 3\n[axes]\nseed = [0, 1]\n")
    with pytest.raises(ConfigError, match=r"\(epochs 2 -> 3 in seed0, seed1\): pass --force"):
        prepare_folder(read_study(path, tmp_path / "out"))
    # The same configurations, written otherwise: not a change.
    write(path, "# seeds\n[axes]\nseed = [0, 1]\n[base]\nepochs = 2 # the same\n")
    prepare_folder(read_study(path, tmp_path / "out"))

    # --force: runs no longer in the file are moved aside with a line each, never deleted
    # (left in the study folder, they would pass for runs of the study).
    (tmp_path / "out" / "seed0" / "marker").write_text("kept")
    write(path, "[base]\nepochs = 2\n[axes]\nseed = [5]\n")
    lines: list[str] = []
    prepare_folder(read_study(path, tmp_path / "out"), force=True, say=lines.append)
    replaced = tmp_path / "out" / "replaced"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "replaced", "study.json", "study.toml"
    ]  # fmt: skip
    assert (replaced / "seed0" / "marker").read_text() == "kept"
    assert lines == [  # seed0 edited to 5 (its place in the file, one setting): a change
        f"segkit study: seed0 changed (seed 0 -> 5) and is now named seed5; its old run "
        f"folder is now {replaced / 'seed0'}, and it is trained again",
        f"segkit study: seed1 is no longer in the study; its old run folder is now "
        f"{replaced / 'seed1'}",
    ]
    state = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [r["name"] for r in state["runs"]] == ["seed5"]


def test_force_moves_a_changed_run_aside(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", "[base]\nepochs = 2\n[axes]\nseed = [0]\n")
    prepare_folder(read_study(path, tmp_path / "out"))
    (tmp_path / "out" / "seed0").mkdir()
    (tmp_path / "out" / "seed0" / "marker").write_text("old")
    write(path, "[base]\nepochs = 3\n[axes]\nseed = [0]\n")
    lines: list[str] = []
    prepare_folder(read_study(path, tmp_path / "out"), force=True, say=lines.append)
    assert (tmp_path / "out" / "replaced" / "seed0" / "marker").read_text() == "old"
    assert not (tmp_path / "out" / "seed0").exists()
    assert lines[0] == (
        "segkit study: seed0 changed (epochs 2 -> 3) but cannot be resumed to it: it has no "
        f"last.pt to resume from; its old run folder is now {tmp_path / 'out' / 'replaced' / 'seed0'}"
        ", and it is trained again"
    )


def finished_folder(
    folder: Path, epochs: int, *, last: bytes | None = None, **summary: object
) -> Path:
    """A study run's folder as a finished run leaves it, made without training:
    config.json asking ``epochs``, summary.json (all epochs run, or ``summary``'s values)
    and, with ``last``, a last.pt: a real (tiny) torch.save file for ``b"real"``, else
    those bytes."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"epochs": epochs, "seed": 0}))
    done = {"epochs_run": epochs, "stopped_by": "epochs", **summary}
    (folder / "summary.json").write_text(json.dumps(done))
    if last == b"real":
        torch.save({"format": ckpt_io.FORMAT, "epoch": epochs}, folder / "last.pt")
    elif last is not None:
        (folder / "last.pt").write_bytes(last)
    return folder


def force_to(path: Path, out: Path, base: str) -> list[str]:
    """``base`` written as the study file's [base] (one run, seed0), prepared with
    ``force``; the lines said."""
    write(path, f"[base]\n{base}\n[axes]\nseed = [0]\n")
    lines: list[str] = []
    prepare_folder(read_study(path, out), force=True, say=lines.append)
    return lines


def test_force_resumes_a_run_whose_only_change_is_more_epochs(tmp_path: Path) -> None:
    path, out = tmp_path / "s.toml", tmp_path / "out"
    force_to(path, out, "epochs = 2")
    folder = finished_folder(out / "seed0", 2, last=b"real")
    run = read_study(path, out).runs[0]
    assert study_mod.state_of(folder, run) == "done"

    lines = force_to(path, out, "epochs = 3")
    assert lines == [
        "segkit study: seed0: epochs 2 -> 3; it keeps its run folder and resumes from its "
        "last.pt to 3 epochs, not trained again"
    ]
    assert folder.is_dir() and not (out / "replaced").exists()
    run = read_study(path, out).runs[0]
    assert study_mod.state_of(folder, run) == "extend"
    assert study_mod.state_of(folder) == "done"  # a folder alone: finished
    assert study_mod._resume_to(folder, run, "extend") == {"epochs": 3}
    # Killed in the extension: the resume rewrote config.json, the summary is the first
    # finish's, so it is still to extend (its last.pt may hold epoch 2's config)...
    (folder / "config.json").write_text(json.dumps({"epochs": 3, "seed": 0}))
    assert study_mod.state_of(folder, run) == "extend"
    assert study_mod._resume_to(folder, run, "extend") == {"epochs": 3}
    # ... and once it finished, done.
    (folder / "summary.json").write_text(json.dumps({"epochs_run": 3, "stopped_by": "epochs"}))
    assert study_mod.state_of(folder, run) == "done"
    # An extension interrupted by Ctrl-C or a failure leaves a stopped.json after the finish.
    (folder / "stopped.json").write_text(json.dumps({"stopped_by": "interrupted"}))
    assert study_mod.state_of(folder, run) == "extend"

    # A longer max_time (with more epochs) resumes too, the new limit passed on.
    (folder / "stopped.json").unlink()
    lines = force_to(path, out, "epochs = 4\nmax_time = '1h'")
    assert lines == [
        "segkit study: seed0: epochs 3 -> 4, max_time None -> '1h'; it keeps its run folder "
        "and resumes from its last.pt to 4 epochs (max_time 1h, counted from the resume), not "
        "trained again"
    ]
    run = read_study(path, out).runs[0]
    assert study_mod._resume_to(folder, run, "extend") == {"epochs": 4, "max_time": "1h"}


@pytest.mark.parametrize(
    "last, summary, base, why",
    [
        (None, {}, "epochs = 3", "it has no last.pt to resume from (keep_last = false deletes "
         "it when a run finishes)"),
        (b"", {}, "epochs = 3", "its {last}: not a readable checkpoint: the file is empty (0 "
         "bytes: a copy stopped before writing it, or the disk was full)"),
        (b"PK\x03\x04cut", {}, "epochs = 3", "its {last}: not a readable checkpoint: the file "
         "is truncated (its 7 bytes end before the directory"),
        (b"real", {}, "epochs = 1", "1 epochs are fewer than the 2 it ran (a resume only adds "
         "epochs)"),
        (b"real", {"epochs_run": 1, "stopped_by": "patience"}, "epochs = 3",
         "it stopped early (patience, after epoch 1): resumed with more epochs it would train "
         "on past that stop"),
        (b"real", {}, "epochs = 3\nschedule = 'cosine'", None),  # schedule changed too
        (b"real", {}, "epochs = 3\nlr = 0.01", None),
        (b"real", {}, "epochs = 2\nmax_time = '10m'", "a resume sets a new max_time but "
         "cannot lift one"),
        (b"real", {}, "epochs = 2\nmax_time = '30s'", "max_time 30s is shorter than its 1m"),
    ],
)  # fmt: skip
def test_force_trains_again_a_run_that_cannot_be_resumed_to_its_new_settings(
    tmp_path: Path, last: bytes | None, summary: dict, base: str, why: str | None
) -> None:
    """Saying why in its line; a change beyond epochs and max_time is a change as before."""
    path, out = tmp_path / "s.toml", tmp_path / "out"
    first = "epochs = 2\nmax_time = '1m'" if "max_time = '30s'" in base else "epochs = 2"
    if "lift" in (why or ""):
        first, base = "epochs = 2\nmax_time = '10m'", "epochs = 2"
    force_to(path, out, first)
    finished_folder(out / "seed0", 2, last=last, **summary)
    lines = force_to(path, out, base)
    target = out / "replaced" / "seed0"
    assert target.is_dir() and not (out / "seed0").exists()
    if why is None:
        change = "schedule 'exponential' -> 'cosine'" if "cosine" in base else "lr 0.001 -> 0.01"
        assert lines == [
            f"segkit study: seed0 changed (epochs 2 -> 3, {change}); its old run folder is now "
            f"{target}, and it is trained again"
        ]
    else:
        assert lines[0].startswith("segkit study: seed0 changed (")
        assert (
            f"but cannot be resumed to it: {why.format(last=out / 'seed0' / 'last.pt')}"
            in (lines[0])
        )
        assert lines[0].endswith(f"; its old run folder is now {target}, and it is trained again")


def test_a_cosine_run_given_more_epochs_is_trained_again(tmp_path: Path) -> None:
    path, out = tmp_path / "s.toml", tmp_path / "out"
    force_to(path, out, "epochs = 2\nschedule = 'cosine'")
    finished_folder(out / "seed0", 2, last=b"real")
    lines = force_to(path, out, "epochs = 3\nschedule = 'cosine'")
    assert (
        "but cannot be resumed to it: its cosine schedule takes the learning rate to 0 at "
        in (lines[0])
    )
    assert (out / "replaced" / "seed0").is_dir()


def sound_run(folder: Path, epochs: int, mark: str) -> Path:
    """A finished study run's folder (:func:`finished_folder`) with a best.pt, and a file
    ``mark`` to tell it by."""
    finished_folder(folder, epochs)
    torch.save({"format": ckpt_io.FORMAT}, folder / "best.pt")
    (folder / "mark").write_text(mark)
    return folder


def test_an_edited_run_is_said_changed_and_an_edit_reverted_brings_its_run_back(
    tmp_path: Path,
) -> None:
    """One run's lr edited renames it (the lr is in its name): --force says it changed,
    what changed, where its folder went and that it trains again. The edit reverted, the
    finished run of those settings comes back from replaced/ instead of training again;
    the edited run's folder goes to replaced/ first (a log with it), nothing deleted."""
    text = "[base]\nepochs = 1\n[[runs]]\nname = 'slow'\nlr = 0.0003\n[[runs]]\nname = 'fast'\nlr = {}\n"
    path = write(tmp_path / "lrs.toml", text.format(0.001))
    out, replaced = tmp_path / "out", tmp_path / "out" / "replaced"
    prepare_folder(read_study(path, out))
    for name in ("slow-lr0.0003", "fast-lr0.001"):
        sound_run(out / name, 1, name)
    write(path, text.format(0.003))
    with pytest.raises(ConfigError) as e:
        prepare_folder(read_study(path, out))
    assert "(1 run(s) changed, and named anew by it (fast-lr0.001 -> fast-lr0.003: lr 0.001 -> " \
        "0.003)): pass --force" in str(e.value)  # fmt: skip
    lines: list[str] = []
    prepare_folder(read_study(path, out), force=True, say=lines.append)
    assert lines == [
        "segkit study: fast-lr0.001 changed (lr 0.001 -> 0.003) and is now named fast-lr0.003; "
        f"its old run folder is now {replaced / 'fast-lr0.001'}, and it is trained again"
    ]
    study = read_study(path, out)
    assert [study_mod.state_of(study.run_dir(r), r) for r in study.runs] == ["done", "new"]
    sound_run(out / "fast-lr0.003", 1, "edited")
    (out / "logs").mkdir()  # --parallel's logs move with their runs
    (out / "logs" / "fast-lr0.003.log").write_text("edited run")

    write(path, text.format(0.001))  # reverted
    lines.clear()
    prepare_folder(read_study(path, out), force=True, say=lines.append)
    assert lines == [
        "segkit study: fast-lr0.003 changed (lr 0.003 -> 0.001) and is now named fast-lr0.001; "
        f"its old run folder is now {replaced / 'fast-lr0.003'}",
        f"segkit study: fast-lr0.001: {replaced / 'fast-lr0.001'} is a finished run of exactly "
        f"these settings; moved back to {out / 'fast-lr0.001'}, not trained again",
    ]
    assert (out / "fast-lr0.001" / "mark").read_text() == "fast-lr0.001"
    assert (replaced / "fast-lr0.003" / "mark").read_text() == "edited"
    assert (replaced / "logs" / "fast-lr0.003.log").read_text() == "edited run"
    assert sorted(p.name for p in replaced.iterdir()) == ["fast-lr0.003", "logs", "replaced.json"]
    study = read_study(path, out)
    assert [study_mod.state_of(study.run_dir(r), r) for r in study.runs] == ["done", "done"]
    # Once more to 0.003: that run comes back in its turn.
    write(path, text.format(0.003))
    prepare_folder(read_study(path, out), force=True, say=lambda _: None)
    assert (out / "fast-lr0.003" / "mark").read_text() == "edited"
    assert (replaced / "fast-lr0.001" / "mark").read_text() == "fast-lr0.001"


def test_an_edit_of_several_settings_is_said_changed_with_each_setting(
    tmp_path: Path,
) -> None:
    """A run's lr and batch size edited together renames it: --force tells it as the one
    run changed, every changed setting listed, not as one run removed and another added."""
    text = (
        "[base]\nepochs = 1\n[[runs]]\nname = 'slow'\nlr = 0.0003\n"
        "[[runs]]\nname = 'fast'\nlr = {}\nbatch_size = {}\n"
    )
    path = write(tmp_path / "lrs.toml", text.format(0.001, 8))
    out, replaced = tmp_path / "out", tmp_path / "out" / "replaced"
    prepare_folder(read_study(path, out))
    sound_run(out / "fast-lr0.001-batch_size8", 1, "first")
    write(path, text.format(0.003, 16))
    with pytest.raises(ConfigError) as e:
        prepare_folder(read_study(path, out))
    assert (
        "(1 run(s) changed, and named anew by it (fast-lr0.001-batch_size8 -> "
        "fast-lr0.003-batch_size16: batch_size 8 -> 16 and lr 0.001 -> 0.003)): pass --force"
    ) in str(e.value)
    lines: list[str] = []
    prepare_folder(read_study(path, out), force=True, say=lines.append)
    assert lines == [
        "segkit study: fast-lr0.001-batch_size8 changed (batch_size 8 -> 16, lr 0.001 -> "
        "0.003) and is now named fast-lr0.003-batch_size16; its old run folder is now "
        f"{replaced / 'fast-lr0.001-batch_size8'}, and it is trained again"
    ]


def test_runs_too_far_apart_or_paired_ambiguously_are_removed_and_added() -> None:
    """A removed run and an added one pair only when each is the other's closest, alone
    or at the same place in the file, and they differ in at most EDITED_AT_MOST settings."""
    before = {"a": {"lr": 0.1, "seed": 0}, "b": {"lr": 0.1, "seed": 1}}
    many = {"lr": 1.0, "seed": 9, "epochs": 9, "image_size": 64}  # 4 settings from each
    assert len(many) > study_mod.EDITED_AT_MOST
    # c is as close to a as to b (one setting), and at neither's place in the file.
    after = {"x": many, "y": many | {"seed": 8}, "c": {"lr": 0.1, "seed": 2}}
    assert study_mod._edited_runs(before, after, {}) == {}
    assert study_mod._changes(before, after) == [
        "3 run(s) added (x, y, c)", "2 run(s) removed (a, b)"
    ]  # fmt: skip
    # d at b's place: b and d; then a and c, each the other's closest (three settings).
    after = {"c": {"lr": 1.0, "seed": 5, "epochs": 7}, "d": {"lr": 0.1, "seed": 2}}
    assert study_mod._edited_runs(before, after, {}) == {"b": "d", "a": "c"}
    # d at a's place: a and d, then b and c.
    assert study_mod._edited_runs(before, {"d": after["d"], "c": after["c"]}, {}) == {
        "a": "d", "b": "c"
    }  # fmt: skip
    assert study_mod._edited_runs({"a": {}}, {"c": many}, {}) == {}


def test_a_base_edit_reverted_brings_back_the_run_of_that_name(tmp_path: Path) -> None:
    """The name stays (lr is in [base]): the edited run in the folder of that name goes to
    replaced/seed0-2 before the first run comes back from replaced/seed0."""
    path, out, replaced = tmp_path / "s.toml", tmp_path / "out", tmp_path / "out" / "replaced"
    force_to(path, out, "epochs = 1\nlr = 0.001")
    sound_run(out / "seed0", 1, "first")
    lines = force_to(path, out, "epochs = 1\nlr = 0.0003")
    assert lines == [
        "segkit study: seed0 changed (lr 0.001 -> 0.0003); its old run folder is now "
        f"{replaced / 'seed0'}, and it is trained again"
    ]
    sound_run(out / "seed0", 1, "second")
    lines = force_to(path, out, "epochs = 1\nlr = 0.001")
    assert lines == [
        f"segkit study: seed0 changed (lr 0.0003 -> 0.001); its old run folder is now "
        f"{replaced / 'seed0-2'}",
        f"segkit study: seed0: {replaced / 'seed0'} is a finished run of exactly these "
        f"settings; moved back to {out / 'seed0'}, not trained again",
    ]
    assert (out / "seed0" / "mark").read_text() == "first"
    assert (replaced / "seed0-2" / "mark").read_text() == "second"


@pytest.mark.parametrize(
    "harm, why",
    [
        ("summary.json", "it did not finish (it stopped after its last.pt: resumable, not finished)"),
        ("best.pt", "its {folder}/best.pt: not a readable checkpoint: the file is empty"),
        ("extending.json", "its extension to more epochs or a longer max_time did not finish"),
    ],
)  # fmt: skip
def test_an_edit_reverted_trains_again_when_the_old_run_is_unfinished_or_damaged(
    tmp_path: Path, harm: str, why: str
) -> None:
    path, out, replaced = tmp_path / "s.toml", tmp_path / "out", tmp_path / "out" / "replaced"
    force_to(path, out, "epochs = 1\nlr = 0.001")
    sound_run(out / "seed0", 1, "first")
    force_to(path, out, "epochs = 1\nlr = 0.0003")
    old = replaced / "seed0"
    if harm == "summary.json":  # interrupted: its last.pt, no summary
        (old / "summary.json").unlink()
        torch.save({"format": ckpt_io.FORMAT}, old / "last.pt")
    elif harm == "best.pt":
        (old / "best.pt").write_bytes(b"")
    else:
        RunFolder(old).write_extending(2, None)
    sound_run(out / "seed0", 1, "second")
    lines = force_to(path, out, "epochs = 1\nlr = 0.001")
    assert lines == [
        f"segkit study: seed0 changed (lr 0.0003 -> 0.001); its old run folder is now "
        f"{replaced / 'seed0-2'}, and it is trained again ({old} holds a run of these "
        f"settings, but {why.format(folder=old)}"
        + (
            " (0 bytes: a copy stopped before writing it, or the disk was full))"
            if harm == "best.pt"
            else ")"
        )
    ]
    assert not (out / "seed0").exists() and (old / "mark").read_text() == "first"
    # A run put back in the file (no changed line) says it the same way.
    lines = force_to(path, out, "epochs = 1\nlr = 0.0003")  # seed0-2 back: sound
    assert lines[-1].startswith("segkit study: seed0: ") and "moved back" in lines[-1]


def test_an_axis_added_renames_the_runs_it_keeps_instead_of_training_them_again(
    tmp_path: Path,
) -> None:
    """A model axis added to a study of recipes x seeds names every run anew
    (type1-seed0 -> unet-type1-seed0); the runs whose settings did not change keep their
    folders under the new name, and only the new model's runs are new."""
    path = write(tmp_path / "s.toml", "[axes]\nrecipe = ['type1', 'type3']\nseed = [0]\n")
    out = tmp_path / "out"
    prepare_folder(read_study(path, out))
    for name in ("type1-seed0", "type3-seed0"):
        (out / name).mkdir()
        (out / name / "marker").write_text(name)
    (out / "logs").mkdir()
    (out / "logs" / "type1-seed0.log").write_text("its log")
    write(path, "[axes]\nmodel = ['unet', 'resnet34_unet']\nrecipe = ['type1', 'type3']\n"
          "seed = [0]\n")  # fmt: skip
    with pytest.raises(ConfigError) as e:
        prepare_folder(read_study(path, out))
    assert (
        "(2 run(s) renamed, the same settings (type1-seed0 -> unet-type1-seed0, type3-seed0 "
        "-> unet-type3-seed0); 2 run(s) added (resnet34_unet-type1-seed0, "
        "resnet34_unet-type3-seed0)): pass --force"
    ) in str(e.value)
    lines: list[str] = []
    prepare_folder(read_study(path, out), force=True, say=lines.append)
    assert lines == [
        "segkit study: type1-seed0 is now named unet-type1-seed0 (the same settings); its run "
        "folder renamed, not trained again",
        "segkit study: type3-seed0 is now named unet-type3-seed0 (the same settings); its run "
        "folder renamed, not trained again",
    ]
    assert (out / "unet-type1-seed0" / "marker").read_text() == "type1-seed0"
    assert (out / "unet-type3-seed0" / "marker").read_text() == "type3-seed0"
    assert (out / "logs" / "unet-type1-seed0.log").read_text() == "its log"
    assert not (out / "replaced").exists()
    # A default written out is the same configuration: no change, nothing moved.
    write(path, f"[base]\nepochs = {RunConfig().epochs}\n[axes]\nmodel = ['unet', "
          "'resnet34_unet']\nrecipe = ['type1', 'type3']\nseed = [0]\n")  # fmt: skip
    prepare_folder(read_study(path, out), say=lines.append)
    assert len(lines) == 2 and (out / "unet-type1-seed0" / "marker").is_file()
    # The recipe axis taken out (type1 only, in [base]): the type3 run is removed, the
    # type1 one renamed again.
    write(path, "[base]\nrecipe = 'type1'\n[axes]\nmodel = ['unet', 'resnet34_unet']\n"
          "seed = [0]\n")  # fmt: skip
    prepare_folder(read_study(path, out), force=True, say=lines.append)
    assert lines[2:] == [
        "segkit study: unet-type3-seed0 is no longer in the study; its old run folder is now "
        f"{out / 'replaced' / 'unet-type3-seed0'}",
        "segkit study: unet-type1-seed0 is now named unet-seed0 (the same settings); its run "
        "folder renamed, not trained again",
    ]
    assert (out / "unet-seed0" / "marker").read_text() == "type1-seed0"


@pytest.mark.slow  # compare opens every run's best.pt and predicts (over 1.5 s)
def test_compare_of_a_study_folder_reads_only_the_studys_runs(
    tiny_pets: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    path = write(tmp_path / "s.toml", "[axes]\nseed = [0, 1, 2]\n")
    prepare_folder(read_study(path, out))
    for seed in (0, 1):
        run_folder(out / f"seed{seed}", tiny_pets, seed=seed)
    run_folder(out / "replaced" / "seed9", tiny_pets, seed=9)  # moved aside by --force
    run_folder(out / "stray", tiny_pets, seed=7)  # a folder the study does not list
    result = compare([out], tmp_path / "c")
    assert [r.name for r in result.rows] == ["seed0", "seed1"]
    assert result.notes == [
        f"`{out}`: a study folder: its 2 runs as its study.json lists them (1 not started "
        "yet), not the runs moved to replaced/"
    ]
    # the CLI, as a user types it
    assert main(["compare", str(out), "--out", str(tmp_path / "c2"), "--device", "cpu"]) == 0
    rows = csv_rows(tmp_path / "c2" / "comparison.csv")
    assert [Path(r["run"]).name for r in rows] == ["seed0", "seed1"]
    (out / "study.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"study\.json: not a study's study\.json"):
        compare([out], tmp_path / "c3")


def test_a_folder_that_holds_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    path = write(tmp_path / "s.toml", "[axes]\nseed = [0]\n")
    with pytest.raises(ConfigError, match=r"out: the folder exists and holds no study"):
        prepare_folder(read_study(path, tmp_path / "out"))


def test_parallel_on_the_cpu_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write(tmp_path / "s.toml", "[axes]\nseed = [0, 1]\n")
    code = main(["study", str(path), "--out", str(tmp_path / "out"), "--parallel", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "--parallel 2: there is no GPU here" in err and "use --parallel 1" in err
    assert not (tmp_path / "out").exists()


def test_a_misspelt_plugin_stops_the_study_before_any_run(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "s.toml", "[axes]\nmodel = ['unet', 'unte']\n")
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "unte" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_state_of_a_run_folder(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    assert study_mod.state_of(folder) == "new"
    folder.mkdir()
    assert study_mod.state_of(folder) == "started"
    # state_of reads no checkpoint (a damaged one is the resume's to refuse, with advice):
    # a real one here, so that the test says nothing of an empty file's state.
    torch.save({"format": ckpt_io.FORMAT, "epoch": 1}, folder / "last.pt")
    assert study_mod.state_of(folder) == "interrupted"
    (folder / "summary.json").write_text("{}")
    assert study_mod.state_of(folder) == "done"


def test_mean_std_is_the_sample_standard_deviation() -> None:
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, 0.1414213562))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert mean_std([0.5, float("nan"), 0.7])[0] == pytest.approx(0.6)


# ----------------------------------------------------------------------------- compare: crafted runs


def test_stopped_by_is_one_vocabulary_and_old_summaries_are_read_in_it(
    tiny_pets: Path, tmp_path: Path
) -> None:
    """summary.json (a finished run) and stopped.json (one that did not finish) say what
    ended a run in one vocabulary; an older summary's null is read as `epochs`."""
    assert set(FINISHED_BY) | set(UNFINISHED_BY) == set(STOPPED_BY)
    assert not set(FINISHED_BY) & set(UNFINISHED_BY)
    # Its words name each setting by its name (no flag, no keyword): run folders and the
    # reports that read them are read alike by users of segkit run and of Python.
    assert STOPPED_BY["epochs"] == "it ran all its epochs (epochs)"
    assert STOPPED_BY["patience"].startswith("early stopping (patience): ")
    assert STOPPED_BY["max_time"].startswith("the time limit (max_time): ")
    assert not [words for words in STOPPED_BY.values() if "--" in words or "=" in words]
    done = run_folder(tmp_path / "runs" / "done", tiny_pets, seed=0)
    summary = json.loads((done / "summary.json").read_text())
    assert summary["stopped_by"] == "epochs" and summary["stopped_early"] is False
    assert stopped_by_of(summary) == "epochs"
    # Older segkits: null for a run that ran all its epochs, or no key at all.
    assert stopped_by_of({"stopped_by": None}) == stopped_by_of({}) == "epochs"
    assert stopped_by_of({"stopped_early": True}) is None  # early, by what: not recorded
    assert stopped_by_of({"stopped_by": "max_time", "stopped_early": True}) == "max_time"
    (done / "summary.json").write_text(json.dumps({**summary, "stopped_by": None}))
    compare([done], tmp_path / "c")
    assert csv_rows(tmp_path / "c" / "comparison.csv")[0]["stopped_by"] == "all epochs"
    with pytest.raises(ValueError, match=r"stopped_by 'patience': expected one of"):
        RunFolder(done).write_stopped("patience", "after epoch 3", "")


@pytest.mark.slow  # compare opens every run's best.pt and predicts (over 1.5 s)
def test_compare_gives_every_folder_a_row_and_compares_the_finished_runs(
    tiny_pets: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    done = run_folder(runs / "done", tiny_pets, seed=0)
    early = run_folder(runs / "early", tiny_pets, seed=1, epochs=8, done=5, stopped_by="patience")
    timed = run_folder(runs / "timed", tiny_pets, seed=2, epochs=8, done=4, stopped_by="max_time")
    ctrl_c = run_folder(runs / "ctrl_c", tiny_pets, epochs=8, done=3, finished=False, last_pt=True)
    RunFolder(ctrl_c).write_stopped("interrupted", "during epoch 4", "Ctrl-C or SIGTERM")
    failed = run_folder(runs / "failed", tiny_pets, epochs=8, done=2, finished=False, last_pt=True)
    RunFolder(failed).write_stopped("failed", "during epoch 3", "DataError: x.jpg: truncated")
    killed = run_folder(runs / "killed", tiny_pets, epochs=8, done=2, finished=False)
    (runs / "notes").mkdir()
    result = compare(
        [done, early, timed, ctrl_c, failed, killed, runs / "notes", runs / "gone"],
        tmp_path / "c",
    )
    assert [r.name for r in result.runs] == ["done", "early", "timed"]
    rows = csv_rows(tmp_path / "c" / "comparison.csv")
    assert [Path(r["run"]).name for r in rows] == [
        *("done", "early", "timed", "ctrl_c", "failed", "killed", "notes", "gone")
    ]
    by = {Path(r["run"]).name: r for r in rows}
    assert {n: r["stopped_by"] for n, r in by.items()} == {
        "done": "all epochs",
        "early": "early stopping",
        "timed": "time limit",
        "ctrl_c": "interrupted",
        "failed": "failed",
        "killed": "unknown",
        "notes": "not a run",
        "gone": "not a run",
    }
    assert by["early"]["epochs_run"] == "5" and by["early"]["note"] == ""
    # what a run not finished recorded so far: the best epoch of metrics.csv, no test scores
    assert by["ctrl_c"]["epochs_run"] == "3" and by["ctrl_c"]["best_epoch"] == "2"
    assert by["ctrl_c"]["valid_dice"] == "0.7" and by["ctrl_c"]["test_dice"] == ""
    assert by["ctrl_c"]["note"] == (
        "unfinished at epoch 3 of 8: interrupted during epoch 4 (Ctrl-C or SIGTERM); "
        f"finish it with: segkit run --resume {ctrl_c} (a shell command; "
        f"segkit.resume({str(ctrl_c)!r}) in Python)"
    )
    assert by["failed"]["note"].startswith(
        "unfinished at epoch 2 of 8: failed during epoch 3 (DataError: x.jpg: truncated); "
    )
    assert by["killed"]["note"].startswith(
        "unfinished at epoch 2 of 8: nothing records what ended it (killed outright"
    )
    assert "so it cannot be resumed" in by["killed"]["note"]  # no last.pt
    assert (
        by["notes"]["note"] == "not a run folder (no config.json); pass folders made by segkit run"
    )
    assert by["gone"]["note"].startswith("no such folder")
    md = (tmp_path / "c" / "comparison.md").read_text()
    assert md.startswith(
        "# Comparison of 3 runs (and 5 folders not finished or not a run: see the notes)"
    )
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len({len(ln) for ln in table}) == 1  # the columns line up in a terminal
    ctrl_c_row = next(ln for ln in table if "`ctrl_c`" in ln)
    assert "3 of 8" in ctrl_c_row and "interrupted" in ctrl_c_row and "0.7000" in ctrl_c_row
    assert f"- `ctrl_c`: {by['ctrl_c']['note']}" in md
    # the model's columns, the same for every run, are said once above the table
    assert "parameters 0.14M, best.pt 0.6 MB." in md and "| parameters" not in md


def test_compare_of_no_finished_run_names_every_folder_and_why(
    tiny_pets: Path, tmp_path: Path, capsys
) -> None:
    half = run_folder(tmp_path / "half", tiny_pets, done=1, finished=False, last_pt=True)
    code = main(["compare", str(half), str(tmp_path), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and not (tmp_path / "c").exists()
    assert err == (
        f"segkit: error: segkit compare: no finished run to compare: {half}: unfinished at "
        "epoch 1 of 3: nothing records what ended it (killed outright: SIGKILL, out of memory, "
        "a lost machine; or a segkit older than stopped.json); finish it with: segkit run "
        f"--resume {half} (a shell command; segkit.resume({str(half)!r}) in Python); "
        f"{tmp_path}: not a run folder (no config.json); pass folders made "
        "by segkit run"
    )


@pytest.mark.parametrize(
    "damage, says",
    [
        ("empty", "not a readable checkpoint: the file is empty (0 bytes"),
        ("truncated", "not a readable checkpoint: the file is truncated (its "),
        ("foreign", "not a checkpoint: a torch.save file is a zip archive, and this one starts"),
    ],
)
def test_compare_says_what_is_wrong_with_a_damaged_last_pt_and_what_goes_on(
    tiny_pets: Path, tmp_path: Path, damage: str, says: str
) -> None:
    """An unfinished run whose last.pt the cheap checks find damaged is not told to
    --resume (which would fail): its note says what is wrong and the resume's own advice,
    a new folder's command included."""
    from segkit.reports.compare import inspect_run

    half = run_folder(tmp_path / "half", tiny_pets, done=1, finished=False, last_pt=True)
    last = half / "last.pt"
    whole = last.read_bytes()
    last.write_bytes({"empty": b"", "truncated": whole[: len(whole) // 2]}.get(damage, b"JFIF"))
    note = inspect_run(half).note
    assert "--resume" not in note and "segkit.resume" not in note
    assert f"{last}: {says}" in note
    asked = json.loads((half / "config.json").read_text())
    advice = RunFolder(half).without_last(asked, report=True)
    assert note.endswith(f"{advice} (a shell command)")
    assert f"start the run again in a new folder, {tmp_path / 'half-2'}, with segkit run" in note
    assert f"{half} keeps best.pt" in note
    with given_as(COMMAND_LINE), pytest.raises(ckpt_io.CheckpointError) as e:  # the resume's
        engine.resume(half, quiet=True)
    assert (
        str(e.value)
        == f"{last}: {note.split(f'{last}: ', 1)[1].removesuffix(' (a shell command)')}"
    )
    with pytest.raises(ckpt_io.CheckpointError) as e:  # segkit.resume: the call first
        engine.resume(half, quiet=True)
    assert str(e.value).endswith(f"{RunFolder(half).without_last(asked)}")
    assert "half-2, with segkit.train(segkit.RunConfig.from_file(" in str(e.value)


def test_a_run_folder_in_use_is_running(tiny_pets: Path, tmp_path: Path) -> None:
    import fcntl
    import os

    done = run_folder(tmp_path / "done", tiny_pets)
    # a run resumed with more --epochs: its old summary.json stays until it finishes again
    busy = run_folder(tmp_path / "busy", tiny_pets, epochs=8, done=4)
    fd = os.open(busy, os.O_RDONLY)  # another process's lock, as RunFolder.lock takes it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = compare([done, busy], tmp_path / "c")
    finally:
        os.close(fd)
    row = result.rows[1]
    assert row.stopped_by == "running"  # type: ignore[union-attr]
    assert row.note == (  # type: ignore[union-attr]
        "still running, 4 of 8 epochs recorded (a live process holds the folder); compare it "
        "again when it has finished"
    )
    assert not RunFolder(busy).in_use()  # the probe let go of its lock


def test_a_folder_given_twice_is_compared_once(tiny_pets: Path, tmp_path: Path) -> None:
    a = run_folder(tmp_path / "runs" / "a", tiny_pets)
    b = run_folder(tmp_path / "runs" / "b", tiny_pets, seed=1)
    (tmp_path / "link").symlink_to(a)
    given = [str(a), str(b), f"{tmp_path}/runs/./a/", str(tmp_path / "link"), str(b)]
    result = compare(given, tmp_path / "c")
    assert [r.name for r in result.rows] == ["a", "b"]
    assert result.notes == [
        f"`{given[2]}`: the same folder given again as `{a}`; compared once",
        f"`{given[3]}`: the same folder given again as `{a}`; compared once",
        f"`{b}`: the same folder given again; compared once",
    ]
    assert len(csv_rows(tmp_path / "c" / "comparison.csv")) == 2
    assert "\nNotes:\n\n- `" in (tmp_path / "c" / "comparison.md").read_text()


def test_the_threads_column_is_the_count_each_run_used(tiny_pets: Path, tmp_path: Path) -> None:
    runs = [
        run_folder(tmp_path / "auto2", tiny_pets, threads="auto", used_threads=2),
        run_folder(tmp_path / "fixed1", tiny_pets, threads=1, used_threads=1),
        run_folder(tmp_path / "old_auto", tiny_pets, threads="auto", used_threads=None),
        run_folder(tmp_path / "old_fixed", tiny_pets, threads=3, used_threads=None),
    ]
    result = compare(runs, tmp_path / "c")
    assert result.differing[-1] == "threads"
    assert [r["threads"] for r in csv_rows(tmp_path / "c" / "comparison.csv")] == [
        "2",
        "1",
        "auto (count not recorded)",
        "3",
    ]


def test_one_seed_per_configuration_shows_plain_values(tiny_pets: Path, tmp_path: Path) -> None:
    one = [
        run_folder(tmp_path / "one" / f"lr{lr}", tiny_pets, lr=lr, seed=0) for lr in (0.001, 0.01)
    ]
    compare(one, tmp_path / "c1", group_seeds=True)
    md = (tmp_path / "c1" / "comparison.md").read_text()
    assert "±" not in md.replace("mean ± standard deviation", "") and "nan" not in md
    assert "One seed per configuration (seeds=1 (0)): one run each gives no spread" in md
    groups = csv_rows(tmp_path / "c1" / "comparison_groups.csv")
    assert [(g["lr"], g["n"], g["test_dice_mean"], g["test_dice_std"]) for g in groups] == [
        ("0.001", "1", "0.4", ""),
        ("0.01", "1", "0.4", ""),
    ]
    # two seeds of one, one of the other: mean ± std and n where there are two
    two = [*one, run_folder(tmp_path / "one" / "lr0.001-1", tiny_pets, lr=0.001, seed=1)]
    compare(two, tmp_path / "c2", group_seeds=True)
    md = (tmp_path / "c2" / "comparison.md").read_text()
    table = md.split("## Mean ± standard deviation over seeds")[1].split("## Every run")[0]
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| lr    | n (seeds) |")
    assert "|  2 (0, 1) |" in lines[2] and "0.4050 ± 0.0071" in lines[2]
    assert "|     1 (0) |" in lines[3] and " ± " not in lines[3]


# ----------------------------------------------------------------------------- slow: runs


@pytest.fixture(scope="module")
def finished_study(tiny_pets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished study of 4 tiny runs: recipe type1/type2 x seed 0/1, one epoch each."""
    tmp = tmp_path_factory.mktemp("study")
    path = tiny_study(
        tmp, tiny_pets, "epochs = 1\n[axes]\nrecipe = ['type1', 'type2']\nseed = [0, 1]\n"
    )
    result = run_study(path, tmp / "out", quiet=True, say=lambda _: None)
    assert result.outcome == dict.fromkeys(
        ["type1-seed0", "type1-seed1", "type2-seed0", "type2-seed1"], "trained"
    )
    return tmp / "out"


@pytest.mark.slow
def test_the_report_numbers_are_each_runs_summary_json(finished_study: Path) -> None:
    rows = csv_rows(finished_study / "comparison.csv")
    assert [Path(r["run"]).name for r in rows] == [
        "type1-seed0",
        "type1-seed1",
        "type2-seed0",
        "type2-seed1",
    ]
    for row in rows:
        summary = json.loads((Path(row["run"]) / "summary.json").read_text())
        assert float(row["test_dice"]) == summary["test_dice"]
        assert float(row["test_iou"]) == summary["test_iou"]
        assert float(row["valid_dice"]) == summary["best_valid_dice"]
        assert int(row["best_epoch"]) == summary["best_epoch"]
        assert int(row["epochs_run"]) == summary["epochs_run"]
        assert float(row["train_s_per_epoch"]) == summary["epoch_seconds"]
        assert float(row["images_per_s"]) == summary["images_per_second"]
        assert int(row["parameters"]) == 31_037_633  # UNet
        assert float(row["checkpoint_mb"]) == (Path(row["run"]) / "best.pt").stat().st_size / 1e6
    groups = csv_rows(finished_study / "comparison_groups.csv")
    assert [(g["recipe"], g["seeds"], g["n"]) for g in groups] == [
        ("type1", "0 1", "2"),
        ("type2", "0 1", "2"),
    ]
    for group in groups:
        dice = [
            json.loads(
                (finished_study / f"{group['recipe']}-seed{s}" / "summary.json").read_text()
            )["test_dice"]
            for s in (0, 1)
        ]
        mean, std = mean_std(dice)
        assert float(group["test_dice_mean"]) == pytest.approx(mean, abs=0, rel=1e-15)
        assert float(group["test_dice_std"]) == pytest.approx(std, rel=1e-12)
    md = (finished_study / "comparison.md").read_text()
    assert "## Mean ± standard deviation over seeds" in md
    assert f"{mean:.4f} ± {std:.4f}" in md  # the last group's test Dice
    assert "![valid Dice and train loss per epoch](curves.png)" in md
    for name in ("curves.png", "predictions.png"):
        assert (finished_study / name).stat().st_size > 1000


@pytest.mark.slow
def test_compare_runs_that_differ_in_one_and_in_two_axes(
    finished_study: Path, tmp_path: Path
) -> None:
    from PIL import Image

    one = compare(
        [finished_study / "type1-seed0", finished_study / "type1-seed1"], tmp_path / "one"
    )
    assert one.differing == ["seed"]
    header = next(csv.reader((tmp_path / "one" / "comparison.csv").open()))
    assert header[:3] == ["run", "seed", "model"]  # what differs first, then what is shared
    assert header[-11:] == [
        "parameters",
        "checkpoint_mb",
        "epochs_run",
        "stopped_by",
        "best_epoch",
        "valid_dice",
        "test_dice",
        "test_iou",
        "train_s_per_epoch",
        "images_per_s",
        "note",
    ]
    md = (tmp_path / "one" / "comparison.md").read_text()
    assert "| run           | seed | epochs run | stopped by | best epoch |" in md
    assert "Same for every run: model unet, loss bce_dice, recipe type1" in md
    assert "parameters 31.04M, best.pt 124.2 MB." in md

    two = compare([finished_study / n for n in ("type1-seed0", "type2-seed1")], tmp_path / "two")
    assert two.differing == ["recipe", "seed"]
    assert [r.name for r in two.runs] == ["type1-seed0", "type2-seed1"]
    with Image.open(tmp_path / "two" / "predictions.png") as im:
        width = im.size[0]
    # image, truth, then one column per run; tiny_pets has 5 test images, all drawn.
    assert width == 4 * 160 + 3 * 4 and two.predicted == 5
    assert "recipe=type1" not in (tmp_path / "two" / "comparison.md").read_text()


@pytest.mark.slow
def test_compare_refuses_runs_of_other_data_unless_forced(
    finished_study: Path, tmp_path: Path, capsys
) -> None:
    other = Path(shutil.copytree(finished_study / "type1-seed1", tmp_path / "other"))
    config = json.loads((other / "config.json").read_text())
    config["data"] = config["resolved"]["data_root"] = "/data/other-pets"
    first = str(finished_study / "type1-seed0")
    # The same samples at another path (the data moved, a colleague's rerun): the same data.
    (other / "config.json").write_text(json.dumps(config))
    assert main(["compare", first, str(other), "--out", str(tmp_path / "moved")]) == 0
    capsys.readouterr()
    # Other samples there: other data.
    config["resolved"]["splits"]["test"] = {"count": 7, "ids": "0123456789abcdef"}
    (other / "config.json").write_text(json.dumps(config))
    code = main(["compare", first, str(other), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "were trained on different datasets" in err and "/data/other-pets" in err
    assert "--force" in err and not (tmp_path / "c").exists()
    assert main(["compare", first, str(other), "--out", str(tmp_path / "c"), "--force"]) == 0
    assert "data" in next(csv.reader((tmp_path / "c" / "comparison.csv").open()))[:3]

    config["data"], config["resolved"]["data_root"] = config_data(finished_study)
    config["image_size"] = 64
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"different image sizes \(32 vs 64 px\)"):
        compare([first, other], tmp_path / "d")
    (other / "summary.json").unlink()  # a finished run keeps no last.pt (no --keep-last)
    note = compare([first, other], tmp_path / "d", force=True).notes[0]
    assert re.match(
        r"`other`: unfinished at epoch 1 of 1: nothing records what ended it .*keeps best\.pt "
        r".*no training state .*so it cannot be resumed",
        note,
    )
    shutil.copy(other / "best.pt", other / "last.pt")  # one that can be resumed
    note = compare([first, other], tmp_path / "d", force=True).notes[0]
    assert note.endswith(
        f"; finish it with: segkit run --resume {other} (a shell command; "
        f"segkit.resume({str(other)!r}) in Python)"
    )


def config_data(study: Path) -> tuple[str, str]:
    config = json.loads((study / "type1-seed0" / "config.json").read_text())
    return config["data"], config["resolved"]["data_root"]


@pytest.mark.slow
def test_a_study_killed_in_its_second_run_continues_where_it_stopped(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first run is 1 epoch, the second 2: killed once its epoch 1 is saved.
    runs = "[[runs]]\nseed = 0\nepochs = 1\n[[runs]]\nseed = 1\nepochs = 2\n"
    path = tiny_study(tmp_path, tiny_pets, runs)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segkit", "study", str(path), "--out", str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    first, second = out / "seed0-epochs1", out / "seed1-epochs2"
    try:
        deadline = time.monotonic() + 240
        while not (second / "last.pt").exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the second run wrote no checkpoint in 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert study_mod.state_of(first) == "done"
    assert study_mod.state_of(second) == "interrupted"
    first_files = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    assert ckpt_io.load(second / "last.pt")["epoch"] == 1
    trained: list[int] = []  # the epochs the re-run trains
    real = engine.train_one_epoch

    def recording(*args, **kwargs):
        trained.append(kwargs["epoch"])
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", recording)
    lines: list[str] = []
    result = run_study(path, out, quiet=True, say=lines.append)
    assert trained == [2]  # the first run not at all, the second from its checkpoint
    assert result.outcome == {first.name: "skipped", second.name: "resumed"}
    assert "(1 finished, 1 to resume, 0 to train)" in lines[0]
    assert "[1/2] seed0-epochs1: finished, skipped" in lines[1]
    assert "[2/2] seed1-epochs2: resuming" in lines[2]
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == first_files  # untouched
    assert [r["epoch"] for r in csv_rows(second / "metrics.csv")] == ["1", "2"]
    assert len(csv_rows(out / "comparison.csv")) == 2
    # Run again: everything finished, nothing trains; the report is written again.
    assert run_study(path, out, quiet=True, say=lambda _: None).outcome == {
        first.name: "skipped",
        second.name: "skipped",
    }


class _FakeProcess:
    """A run's process for ``_run_parallel`` without one: it exits with ``code`` after
    ``polls`` polls (``None``: never, until terminated)."""

    def __init__(self, code: int, polls: int | None) -> None:
        self.code, self.polls, self.signals = code, polls, []

    def poll(self) -> int | None:
        if self.polls is None:
            return None
        self.polls -= 1
        return self.code if self.polls <= 0 else None

    def terminate(self) -> None:
        self.signals.append("terminate")

    def wait(self) -> int:
        self.signals.append("wait")
        return -15


class _FakeLog:
    closed = False

    def close(self) -> None:
        self.closed = True


def _fake_parallel(monkeypatch, tmp_path: Path, plan: dict[str, tuple[int, int | None]]):
    """A study of one run per entry of ``plan`` (name -> its process's exit code and
    polls), run by ``_run_parallel`` on two GPU slots with faked processes."""
    body = "[base]\nepochs = 1\n" + "".join(f"[[runs]]\nname = '{n}'\n" for n in plan)
    study = read_study(write(tmp_path / "s.toml", body), tmp_path / "out")
    (tmp_path / "out").mkdir()
    started: list[tuple[str, str]] = []
    procs: dict[str, _FakeProcess] = {}
    logs: dict[str, _FakeLog] = {}

    def start(study, run, gpu, slots, quiet, say):
        started.append((run.name, gpu))
        procs[run.name], logs[run.name] = _FakeProcess(*plan[run.name]), _FakeLog()
        return procs[run.name], logs[run.name]

    monkeypatch.setattr(study_mod, "_start_run", start)
    monkeypatch.setattr(study_mod, "_ended", lambda s, r, code, say: "failed" if code else "done")
    monkeypatch.setattr(study_mod.time, "sleep", lambda s: None)
    return study, started, procs, logs


def test_parallel_runs_fill_the_free_gpus_and_none_starts_after_a_failure(
    tmp_path: Path, monkeypatch
) -> None:
    plan = {"a": (0, 1), "b": (1, 2), "c": (0, 3), "d": (0, 1), "e": (0, 1)}
    study, started, _, logs = _fake_parallel(monkeypatch, tmp_path, plan)
    outcome = study_mod._run_parallel(study, ["0", "1"], True, lambda _: None)
    # a ends first and c takes its GPU; b fails, so d and e never start; c finishes.
    assert started == [("a", "0"), ("b", "1"), ("c", "0")]
    assert outcome == {
        "a": "done",
        "b": "failed",
        "c": "done",
        "d": "not started",
        "e": "not started",
    }
    assert all(log.closed for log in logs.values())


def test_an_interrupted_parallel_study_terminates_its_runs_and_says_how_to_continue(
    tmp_path: Path, monkeypatch
) -> None:
    from segkit.errors import RunInterrupted

    study, started, procs, _ = _fake_parallel(
        monkeypatch, tmp_path, {"a": (0, None), "b": (0, None)}
    )

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(study_mod.time, "sleep", interrupt)
    with pytest.raises(RunInterrupted, match="interrupted; continue the study with: segkit study"):
        study_mod._run_parallel(study, ["0", "1"], True, lambda _: None)
    assert [name for name, _ in started] == ["a", "b"]
    assert all(p.signals == ["terminate", "wait"] for p in procs.values())


@pytest.mark.slow
def test_parallel_runs_each_configuration_in_its_own_process(
    tiny_pets: Path, tmp_path: Path
) -> None:
    # The GPU path on the CPU: two slots without a GPU ("" hides every CUDA device).
    path = tiny_study(tmp_path, tiny_pets, "epochs = 1\n[axes]\nseed = [0, 1]\n")
    lines: list[str] = []
    result = run_study(path, tmp_path / "out", quiet=True, gpus=["", ""], say=lines.append)
    assert result.outcome == {"seed0": "trained", "seed1": "trained"}
    assert sum("training on GPU (none)" in ln for ln in lines) == 2
    for name in ("seed0", "seed1"):
        assert (tmp_path / "out" / name / "summary.json").is_file()
        assert "test dice" in (tmp_path / "out" / "logs" / f"{name}.log").read_text()
    assert len(csv_rows(tmp_path / "out" / "comparison.csv")) == 2


@pytest.mark.slow  # compare opens every run's best.pt and predicts (over 1.5 s)
def test_the_ranking_lists_the_configurations_behind_the_best_best_first(
    tiny_pets: Path, tmp_path: Path
) -> None:
    """Test Dice is 0.4 + seed / 100: lr 0.01 (seeds 8, 9) is best; lr 0.001 (seeds 0, 1)
    comes first in the study but scores below lr 0.003 (seeds 4, 5): the list reads top
    down, as a ranking does."""
    seeds = {0.001: (0, 1), 0.003: (4, 5), 0.01: (8, 9)}
    runs = [
        run_folder(tmp_path / f"lr{lr}-s{s}", tiny_pets, lr=lr, seed=s)
        for lr, ss in seeds.items()
        for s in ss
    ]
    compare(runs, tmp_path / "c", group_seeds=True)
    md = (tmp_path / "c" / "comparison.md").read_text()
    assert (
        "Behind it by more than the seeds' noise: lr=0.003 (0.4450 ± 0.0071), "
        "lr=0.001 (0.4050 ± 0.0071)." in md
    )


@pytest.mark.slow  # compare opens every run's best.pt and predicts (over 1.5 s)
def test_the_report_names_the_best_configuration_and_what_the_seeds_do_not_separate(
    tiny_pets: Path, tmp_path: Path
) -> None:
    """run_folder's test Dice is 0.4 + seed / 100: lr 0.01 (seeds 2, 3) has the best mean,
    0.425; lr 0.1 (seeds 1, 2: 0.415) is within twice the standard error of the
    difference (0.0141), lr 0.001 (seeds 0, 1: 0.405) behind it; lr 0.0001 has one seed."""
    seeds = {0.001: (0, 1), 0.01: (2, 3), 0.1: (1, 2), 0.0001: (0,)}
    runs = [
        run_folder(tmp_path / f"lr{lr}-s{s}", tiny_pets, lr=lr, seed=s)
        for lr, ss in seeds.items()
        for s in ss
    ]
    compare(runs, tmp_path / "c", group_seeds=True)
    md = (tmp_path / "c" / "comparison.md").read_text()
    ranking = md.split("## Every run")[0].strip().splitlines()[-1]
    assert ranking == (
        "**Best mean test Dice: lr=0.01** (0.4250 ± 0.0071, 2 seeds). Within the seeds' noise "
        "of it: lr=0.1 (0.4150 ± 0.0071); these differ from the best by less than twice the "
        "standard error of the difference (sqrt(s1²/n1 + s2²/n2)): the seeds do not separate "
        "them, so this study does not rank them. Behind it by more than the seeds' noise: "
        "lr=0.001 (0.4050 ± 0.0071). One seed, no spread to judge by: lr=0.0001 (0.4000)."
    )
    # The best from one seed: no claim about the others.
    best_alone = [*runs, run_folder(tmp_path / "lr0.5-s9", tiny_pets, lr=0.5, seed=9)]
    compare(best_alone, tmp_path / "c2", group_seeds=True)
    md = (tmp_path / "c2" / "comparison.md").read_text()
    assert "Best mean test Dice: lr=0.5 (0.4900), from one seed: no spread over seeds" in md
    # Seeds that score the same to four places: said (a model stuck on one class).
    stuck = [
        *runs,
        *(run_folder(tmp_path / f"lr1-s{s}", tiny_pets, lr=1.0, seed=s) for s in (0, 1)),
    ]
    for run in stuck[-2:]:
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "test_dice": 0.3514}))
    compare(stuck, tmp_path / "c3", group_seeds=True)
    md = (tmp_path / "c3" / "comparison.md").read_text()
    assert "lr=1 (0.3514 ± 0.0000). One seed" in md
    assert "The same test Dice in every seed, to four places: lr=1; seeds that train" in md


def test_a_failed_run_stops_the_study_and_the_report_still_says_what_happened(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequential: seed0 finished earlier, seed1 fails before its folder is made (a model
    that cannot be built), seed2 is not started; the report of seed0 is written with a
    note for each of the others, then the error names the run and how to continue."""
    from segkit.errors import PluginError

    path = tiny_study(tmp_path, tiny_pets, "epochs = 1\n[axes]\nseed = [0, 1, 2]\n")
    out = tmp_path / "out"
    prepare_folder(read_study(path, out), say=lambda _: None)
    run_folder(out / "seed0", tiny_pets, seed=0)
    trained: list[str] = []

    def train(config, quiet=False):
        trained.append(config.name)
        raise PluginError("timm_unet: timm has no model named 'no_such_encoder'")

    monkeypatch.setattr(engine, "train", train)
    with pytest.raises(PluginError) as e:
        run_study(path, out, say=lambda _: None)
    assert trained == ["seed1"]  # seed2 not started
    assert str(e.value) == (
        "study run seed1: timm_unet: timm has no model named 'no_such_encoder' (the runs "
        f"before it are kept, and in the report {out / 'comparison.md'}; fix it and continue "
        f"with: segkit study {path} --out {out})"
    )
    md = (out / "comparison.md").read_text()
    assert "- `seed1`: failed before its run folder was made: timm_unet: timm has no " in md
    assert "- `seed2`: not started (the study stopped at a failed run)" in md
    assert [Path(r["run"]).name for r in csv_rows(out / "comparison.csv")] == ["seed0"]


@pytest.mark.parametrize(
    ("runs", "match"),
    [
        (
            "[[runs]]\nmodel = 'unet'\n[[runs]]\nmodel = 'timm_unet'\n"
            "model_options = { encoder = 'no_such_encoder' }\n",
            r"s\.toml: run timm_unet-encoder-no_such_encoder: timm_unet: timm has no model "
            r"named 'no_such_encoder'.* \(no run has started; fix the study file\)",
        ),
        (
            "[axes]\nimage_size = [64, 33]\n",
            r"s\.toml: run image_size33: image_size=33 is not divisible by 16, which model "
            r"'unet' needs; use 32 or 48 \(no run has started",
        ),
    ],
)
def test_a_model_its_factory_refuses_stops_the_study_before_any_run(
    tmp_path: Path, capsys, runs: str, match: str
) -> None:
    path = write(tmp_path / "s.toml", "[base]\nepochs = 1\n" + runs)
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(match, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_force_with_more_epochs_resumes_the_runs_that_kept_last_pt(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """epochs 1 -> 2: the run that kept its last.pt trains only epoch 2, and ends as an
    unbroken 2-epoch run of its settings does; the one that deleted it is trained again."""
    runs = "[[runs]]\nname = 'kept'\nkeep_last = true\n[[runs]]\nname = 'gone'\nkeep_last = false\n"
    path = tiny_study(tmp_path, tiny_pets, "epochs = 1\n" + runs)
    out = tmp_path / "out"
    run_study(path, out, quiet=True, say=lambda _: None)
    kept, gone = out / "kept-keep_last", out / "gone-no-keep_last"
    assert (kept / "last.pt").is_file() and not (gone / "last.pt").exists()

    tiny_study(tmp_path, tiny_pets, "epochs = 2\n" + runs)
    trained: list[int] = []  # the epochs trained, in the runs' order
    real = engine.train_one_epoch

    def recording(*args, **kwargs):
        trained.append(kwargs["epoch"])
        return real(*args, **kwargs)

    lines: list[str] = []
    with pytest.raises(ConfigError, match="only change is more epochs or a longer max_time"):
        run_study(path, out, quiet=True, say=lines.append)
    monkeypatch.setattr(engine, "train_one_epoch", recording)
    result = run_study(path, out, force=True, quiet=True, say=lines.append)
    assert lines[0] == (
        "segkit study: kept-keep_last: epochs 1 -> 2; it keeps its run folder and resumes from "
        "its last.pt to 2 epochs, not trained again"
    )
    assert lines[1] == (
        "segkit study: gone-no-keep_last changed (epochs 1 -> 2) but cannot be resumed to it: it "
        "has no last.pt to resume from (keep_last = false deletes it when a run finishes); its "
        f"old run folder is now {out / 'replaced' / gone.name}, and it is trained again"
    )
    assert "(0 finished, 0 to resume, 1 to train longer, 1 to train)" in lines[2]
    assert "[1/2] kept-keep_last: resuming to 2 epochs" in lines[3]
    assert result.outcome == {kept.name: "resumed", gone.name: "trained"}
    assert trained == [2, 1, 2]  # kept: epoch 2 alone; gone: both
    for folder in (kept, gone):
        assert [r["epoch"] for r in csv_rows(folder / "metrics.csv")] == ["1", "2"]
        assert json.loads((folder / "summary.json").read_text())["epochs_run"] == 2
        assert json.loads((folder / "config.json").read_text())["epochs"] == 2
    # The same as an unbroken 2-epoch run of its settings.
    unbroken = RunConfig.from_dict(dict(read_study(path, out).runs[0].settings))
    unbroken.out, unbroken.name = str(tmp_path / "unbroken"), "u"
    engine.train(unbroken, quiet=True)
    same = json.loads((tmp_path / "unbroken" / "u" / "summary.json").read_text())
    assert json.loads((kept / "summary.json").read_text())["test_dice"] == same["test_dice"]
    # Again: nothing to do.
    outcome = run_study(path, out, quiet=True, say=lambda _: None).outcome
    assert outcome == {kept.name: "skipped", gone.name: "skipped"}


def test_an_extension_to_a_longer_max_time_is_marked_until_its_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run the time limit stopped, given a longer max_time alone: extending.json is
    written before the resume starts, so a resume killed outright after rewriting
    config.json (its summary still the limit's stop, no stopped.json) is resumed again."""
    path, out = tmp_path / "s.toml", tmp_path / "out"
    force_to(path, out, "epochs = 3\nmax_time = '1m'\nkeep_last = true")
    folder = finished_folder(out / "seed0", 3, last=b"real", epochs_run=1, stopped_by="max_time")
    asked = {"epochs": 3, "seed": 0, "max_time": "1m", "keep_last": True}
    (folder / "config.json").write_text(json.dumps(asked))
    lines = force_to(path, out, "epochs = 3\nmax_time = '1h'\nkeep_last = true")
    assert (
        "resumes from its last.pt to 3 epochs (max_time 1h, counted from the resume)" in (lines[0])
    )
    study = read_study(path, out)
    run = study.runs[0]
    assert study_mod.state_of(folder, run) == "extend"
    calls = []

    def killed(run_dir, **to):  # rewrote config.json, then SIGKILL: nothing more written
        calls.append((RunFolder(run_dir).read_extending(), to))
        (Path(run_dir) / "config.json").write_text(json.dumps({**asked, "max_time": "1h"}))

    monkeypatch.setattr(engine, "resume", killed)
    assert study_mod.run_one(study, run) == "resumed"
    marker, to = calls[0]
    assert (marker["epochs"], marker["max_time"]) == (3, "1h")
    assert to == {"epochs": 3, "max_time": "1h", "quiet": False}
    # Without the marker this folder reads as finished: the new limit could have stopped it.
    assert study_mod.state_of(folder, run) == "extend"
    assert study_mod._resume_to(folder, run, "extend") == {"epochs": 3, "max_time": "1h"}
    (folder / "extending.json").unlink()
    assert study_mod.state_of(folder, run) == "done"
    (folder / "extending.json").write_text('{"epo')  # cut short by a kill: still marked
    assert study_mod.state_of(folder, run) == "extend"


@pytest.mark.slow
def test_a_max_time_extension_killed_with_sigkill_is_resumed_the_next_time(
    tiny_pets: Path, tmp_path: Path
) -> None:
    body = "epochs = 3\nkeep_last = true\nmax_time = '{}'\n[axes]\nseed = [0]\n"
    path = tiny_study(tmp_path, tiny_pets, body.format("1s"))
    out = tmp_path / "out"
    run_study(path, out, quiet=True, say=lambda _: None)
    folder = out / "seed0"
    first = json.loads((folder / "summary.json").read_text())
    assert (first["stopped_by"], first["epochs_run"]) == ("max_time", 1)

    tiny_study(tmp_path, tiny_pets, body.format("1h"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "segkit", "study", str(path), "--out", str(out), "-q", "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        # Killed once the resume rewrote config.json with the new limit.
        while json.loads((folder / "config.json").read_text()).get("max_time") != "1h":
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the resume did not start in 240 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert json.loads((folder / "summary.json").read_text()) == first  # the first finish's
    assert not (folder / "stopped.json").exists()  # SIGKILL: nothing said what ended it
    assert (folder / "extending.json").is_file()
    run = read_study(path, out).runs[0]
    assert study_mod.state_of(folder, run) == "extend"

    lines: list[str] = []
    result = run_study(path, out, quiet=True, say=lines.append)
    assert result.outcome == {"seed0": "resumed"}
    assert "(0 finished, 0 to resume, 1 to train longer, 0 to train)" in lines[0]
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["stopped_by"], summary["epochs_run"]) == ("epochs", 3)
    assert not (folder / "extending.json").exists()
    assert run_study(path, out, quiet=True, say=lambda _: None).outcome == {"seed0": "skipped"}
