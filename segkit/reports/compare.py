"""``segkit compare``: finished run folders side by side.

Reads each run folder (``config.json``, ``summary.json``, ``metrics.csv``,
``test_scores.csv``, ``best.pt``) and writes into the output folder:

* ``comparison.csv``: one row per run; the settings that differ between the runs first,
  then those they share, then the results (parameters, ``best.pt`` size, best epoch,
  valid Dice, test Dice and IoU, mean train seconds per epoch and images/s, as
  ``summary.json`` has them).
* ``comparison.md``: the same as tables a person reads: the shared settings once, then
  one row per run; with ``group_seeds`` (``segkit study``) first a table of the runs
  grouped over their seeds, each number the mean ± the standard deviation over the seeds.
* ``curves.png``: validation Dice and training loss per epoch, every run (or group: its
  mean, a band of ± one standard deviation) on shared axes.
* ``predictions.png``: the same test images for every run: the image, the truth, then
  each run's prediction over the image (green hit, red false positive, blue miss).

Every folder given gets a row, in the order given; what ended each run is its ``stopped
by`` column (all epochs, early stopping, the time limit; for a run that did not finish:
interrupted, failed, running, or unknown where the folder records nothing of it). A run
that has not finished (or a folder that is no run's) is not compared: its row has what it
recorded so far (the best validation epoch of ``metrics.csv``) and a note under the table
says what it is and what to do; only when no folder holds a finished run is that an
error. A folder given twice (by any spelling: paths are resolved) is compared once.

Runs are only comparable on the same data: runs of different datasets or image sizes
are refused unless ``force``. Models are rebuilt from ``best.pt`` on the build path
(:mod:`segkit.inference.trained`), which also counts their parameters.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from segkit.build import build_dataset, resolve_device
from segkit.config import RunConfig
from segkit.data.check import split_samples
from segkit.data.reading import read_sample
from segkit.errors import ConfigError, DataError, plural
from segkit.inference.evaluate import as_logits
from segkit.inference.forward import resize_to, resized_batch
from segkit.inference.predictor import Predictor
from segkit.inference.trained import Trained, open_trained
from segkit.reports import figures as report
from segkit.system.files import atomic_open
from segkit.task import Task
from segkit.training import checkpoint as ckpt_io
from segkit.training.early_stopping import MONITORS, EarlyStopping
from segkit.training.run_folder import (
    UNFINISHED_BY,
    RunFolder,
    headline_scores,
    stopped_by_of,
    timing,
)

#: Settings every row shows, in this order, before any other setting that differs.
MAIN_SETTINGS = ("model", "loss", "recipe", "loader", "precision", "epochs")
#: Results, in the order of the columns: key -> heading in comparison.md.
RESULTS = {
    "parameters": "parameters",
    "checkpoint_mb": "best.pt MB",
    "epochs_run": "epochs run",
    "stopped_by": "stopped by",
    "best_epoch": "best epoch",
    "valid_dice": "valid Dice",
    "test_dice": "test Dice",
    "test_iou": "test IoU",
    "train_s_per_epoch": "train s/epoch",
    "images_per_s": "images/s",
}
#: Result columns of a defect set's runs (binary, empty test masks), after the others:
#: only where a run's summary.json counts empty test masks (``test_metrics``' ``missed``
#: and ``false_alarms``, the images found or not). ``missed_rate`` is ``missed`` over the
#: test images with foreground, ``false_alarm_rate`` ``false_alarms`` over the empty ones.
DETECTION = {
    "test_missed": "missed",
    "missed_rate": "missed rate",
    "test_false_alarms": "false alarms",
    "false_alarm_rate": "false-alarm rate",
}
#: The result columns and the summary.json keys they repeat.
FROM_SUMMARY = {
    "epochs_run": "epochs_run",
    "best_epoch": "best_epoch",
    "valid_dice": "best_valid_dice",
    "test_dice": "test_dice",
    "test_iou": "test_iou",
    "train_s_per_epoch": "epoch_seconds",
    "images_per_s": "images_per_second",
}
#: Test images in predictions.png.
PREDICTION_IMAGES = 6
#: summary.json's ``stopped_by`` (:data:`segkit.training.run_folder.STOPPED_BY`) -> the
#: ``stopped by`` column.
STOPPED_BY = {"epochs": "all epochs", "patience": "early stopping", "max_time": "time limit"}
#: Result columns that are not numbers (no mean over seeds, no ``_mean``/``_std``).
WORDS = ("stopped_by",)


@dataclass
class Run:
    """One finished run folder, read."""

    path: Path
    config: RunConfig
    resolved: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, float]]
    #: test_scores.csv: (id, dice, iou) per test image, in the test split's order.
    scores: list[tuple[str, float, float]]
    settings: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        """The headline, for a notebook cell: the folder, model, test scores, best epoch
        and what the fields hold (``run.config``, ``run.summary``, ``run.history``...)."""
        return (
            f"Run(path={self.path!r}, model={self.config.model!r}, "
            f"test={headline_scores(self.summary, 'test_')}, "
            f"best_epoch={self.summary.get('best_epoch')!r}, "
            f"stopped_by={self.summary.get('stopped_by')!r}, "
            f"history=<{plural(len(self.history), 'epoch')}>, "
            f"scores=<{plural(len(self.scores), 'test image')}>)"
        )


@dataclass
class Unfinished:
    """A folder given to compare that holds no finished run: its row shows what it is
    (``stopped_by``: ``running``, ``interrupted``, ``failed``, ``unknown``, ``not a run``,
    ``unreadable``) and what it recorded so far; ``note`` says it in a line, with what to
    do."""

    path: Path
    stopped_by: str
    note: str
    #: Read from config.json where it has a readable one (None: not a run folder).
    config: RunConfig | None = None
    resolved: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Group:
    """Runs that differ in their seed only."""

    label: str
    settings: dict[str, Any]
    runs: list[Run]

    @property
    def seeds(self) -> list[int]:
        return [r.config.seed for r in self.runs]


@dataclass
class Comparison:
    """What :func:`compare` found and wrote."""

    #: The finished runs, compared.
    runs: list[Run]
    #: Settings whose values differ between the rows (the first columns), and the others.
    differing: list[str]
    shared: list[str]
    groups: list[Group]
    files: dict[str, Path]
    grouped: bool = False
    #: Test images drawn in predictions.png.
    predicted: int = 0
    #: Every row, in the order the folders were given: the finished runs and the folders
    #: that hold none (:class:`Unfinished`).
    rows: list[Run | Unfinished] = field(default_factory=list)
    #: One line each: a folder given twice, a run not finished (its note).
    notes: list[str] = field(default_factory=list)
    #: The result columns (key -> heading): :data:`RESULTS`, and :data:`DETECTION` where
    #: a run's test split held empty masks.
    columns: dict[str, str] = field(default_factory=lambda: dict(RESULTS))

    @property
    def unfinished(self) -> list[Unfinished]:
        return [r for r in self.rows if isinstance(r, Unfinished)]


def read_run(path: Path | str) -> Run:
    """Read a finished run folder.

    Raises:
        ConfigError: not a run folder, or one whose run has not finished (the message
            says how to finish it).
    """
    folder = RunFolder(path)
    if not folder.config.is_file():
        raise ConfigError(
            f"{folder.path}: not a run folder (no config.json); pass folders made by segkit run"
        )
    if not folder.summary_json.is_file():
        try:
            asked = json.loads(folder.config.read_text())
        except (OSError, ValueError):
            asked = {}
        hint = _unfinished(folder, asked if isinstance(asked, dict) else {})
        raise ConfigError(f"{folder.path}: the run has not finished (no summary.json); {hint}")
    raw = json.loads(folder.config.read_text())
    config = RunConfig.from_dict(raw, source=str(folder.config))
    summary = json.loads(folder.summary_json.read_text())
    history = _read_history(folder)
    scores = []
    if folder.test_scores.is_file():
        with folder.test_scores.open(newline="") as f:
            for row in csv.DictReader(f):
                # A K-class run's columns are its per-image mDice and mIoU.
                dice, iou = (
                    (row["dice"], row["iou"]) if "dice" in row else (row["mdice"], row["miou"])
                )
                scores.append((row["id"] or row["index"], float(dice), float(iou)))
    return Run(folder.path, config, raw.get("resolved") or {}, summary, history, scores)


def _unfinished(folder: RunFolder, asked: dict) -> str:
    """What to do with a run folder without summary.json: finish it from its ``last.pt``;
    without one, start it again (in a new folder where it keeps ``best.pt`` or metrics).
    The same words however this is called: they go into compare's and a study's report
    files, read by users of both, so the shell command is said to be one, with the
    Python call beside it. A ``last.pt`` that the cheap checks find damaged (empty, not a
    zip archive, cut short) is said to be, with what the resume would advise instead."""
    if folder.last.is_file():
        try:
            wrong = ckpt_io.damage(folder.last)
        except OSError as e:
            wrong = (f"cannot be read ({e.strerror or e})", False)
        if wrong is None:
            return (
                f"finish it with: segkit run --resume {folder.path} (a shell command; "
                f"segkit.resume({str(folder.path)!r}) in Python)"
            )
        advice = folder.without_last(asked or None, report=True)
        return f"{folder.last}: {wrong[0]}. {advice}" + (" (a shell command)" if asked else "")
    save_every = asked.get("save_every")
    every = save_every if isinstance(save_every, int) else 1
    kept = folder.unresumable(asked, save_every=every, report=True)
    if kept is not None:
        return f"{kept[0]}. {kept[1]}"
    return (
        "it stopped before its first epoch was recorded; start it again with the shell "
        f"command: {folder.restart_command(asked)}"
    )


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def inspect_run(path: Path | str) -> Run | Unfinished:
    """A folder given to compare: its :class:`Run` when it holds a finished run, else
    what it is (:class:`Unfinished`), never an error. A folder a live process holds is
    ``running`` (even one whose earlier finish left a ``summary.json``: it trains on)."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        what = "not a folder" if folder.path.exists() else "no such folder"
        return Unfinished(folder.path, "not a run", f"{what}; pass folders made by segkit run")
    if not folder.config.is_file():
        return Unfinished(
            folder.path,
            "not a run",
            "not a run folder (no config.json); pass folders made by segkit run",
        )
    try:
        raw = json.loads(folder.config.read_text())
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object")
        config = RunConfig.from_dict(raw, source=str(folder.config))
    except (OSError, ValueError) as e:  # ConfigError is a ValueError
        return Unfinished(folder.path, "unreadable", f"{folder.config} cannot be read: {e}")
    running = folder.in_use()
    if folder.summary_json.is_file() and not running:
        try:
            return read_run(folder.path)
        except (OSError, ValueError) as e:
            return Unfinished(
                folder.path, "unreadable", f"{folder.summary_json} cannot be read: {e}", config
            )
    history = _read_history(folder)
    done, epochs = int(history[-1]["epoch"]) if history else 0, config.epochs
    at = f"at epoch {done} of {epochs}" if done else f"before its first epoch ({epochs} asked)"
    record = folder.read_stopped()
    if running:
        stopped_by = "running"
        note = (
            f"still running, {done} of {epochs} epochs recorded (a live process holds the "
            "folder); compare it again when it has finished"
        )
    elif record is not None and record.get("stopped_by") in UNFINISHED_BY:
        stopped_by = str(record["stopped_by"])
        why = f"{stopped_by} {record.get('when', '')}".strip()
        note = f"unfinished {at}: {why} ({record.get('reason', 'reason not recorded')}); "
        note += _unfinished(folder, raw)
    else:
        stopped_by = "unknown"
        note = (
            f"unfinished {at}: nothing records what ended it (killed outright: SIGKILL, out "
            "of memory, a lost machine; or a segkit older than stopped.json); "
        ) + _unfinished(folder, raw)
    return Unfinished(folder.path, stopped_by, note, config, raw.get("resolved") or {}, history)


def _read_history(folder: RunFolder) -> list[dict[str, float]]:
    """``metrics.csv``'s rows as numbers (none without the file; a row without a
    number for its epoch, which segkit never writes, left out)."""
    history: list[dict[str, float]] = []
    if not folder.metrics.is_file():
        return history
    with folder.metrics.open(newline="") as f:
        for row in csv.DictReader(f):
            numbers = {k: _number(v) for k, v in row.items() if isinstance(v, str)}
            if math.isfinite(numbers.get("epoch", math.nan)):
                history.append(numbers)
    return history


def _stopped_by(summary: dict[str, Any]) -> str:
    """A finished run's ``stopped by`` from its ``summary.json`` (an older segkit's null
    read as ``epochs``: :func:`~segkit.training.run_folder.stopped_by_of`); a summary
    that says it stopped early but not by what says so."""
    by = stopped_by_of(summary)
    if by is not None:
        return STOPPED_BY[by]
    if summary.get("stopped_early"):
        return "stopped early (by what: not recorded)"
    return str(summary.get("stopped_by"))


def _so_far(row: Unfinished) -> dict[str, Any]:
    """The results of a run that has not finished, from its ``metrics.csv`` so far: the
    best validated epoch by its ``--monitor`` and that epoch's valid Dice, the epochs
    recorded, the timing; no test scores, and no parameters (its model is not rebuilt)."""
    nan = math.nan
    results: dict[str, Any] = {key: nan for key in (*RESULTS, *DETECTION)}
    results["parameters"] = None
    results["stopped_by"] = row.stopped_by
    best = RunFolder(row.path).best
    results["checkpoint_mb"] = best.stat().st_size / 1e6 if best.is_file() else nan
    history = row.history
    results["epochs_run"] = int(history[-1]["epoch"]) if history else 0
    if row.config is None:
        results["epochs_run"] = nan
        return results
    # The validated epochs replayed through the rule that picks best.pt (a tie keeps the
    # earlier epoch).
    monitor = row.config.monitor if row.config.monitor in MONITORS else "valid_dice"
    tracker = EarlyStopping(monitor)
    for r in history:
        if math.isfinite(value := r.get(f"valid_{tracker.key}", nan)):
            tracker.update(value, int(r["epoch"]))
    if tracker.best_epoch >= 0:
        top = next(r for r in history if r["epoch"] == tracker.best_epoch)
        results["best_epoch"] = tracker.best_epoch
        results["valid_dice"] = top.get("valid_dice", nan)
    if history and all("epoch_seconds" in r and "train_images" in r for r in history):
        results["train_s_per_epoch"], results["images_per_s"] = timing(history)
    return results


def dataset_of(run: Run | Unfinished) -> str:
    """What a run was trained and tested on: the dataset plugin, its folder (as resolved)
    and its options."""
    c = run.config
    assert c is not None
    root = run.resolved.get("data_root") or c.data or "(generated)"
    options = f" {_text(c.dataset_options)}" if c.dataset_options else ""
    return f"{c.resolved_dataset()} {root}{options}"


def same_data(a: Run | Unfinished, b: Run | Unfinished) -> bool:
    """Whether two runs were trained and tested on the same data: the same dataset, folder
    and options (:func:`dataset_of`), or the same dataset and options at another path
    whose splits hold the same samples (``resolved.splits``, each split's count and ids'
    digest: a run folder rerun with its data moved, ``--config RUN/config.json --data NEW``)."""
    if dataset_of(a) == dataset_of(b):
        return True
    ca, cb = a.config, b.config
    assert ca is not None and cb is not None
    splits = a.resolved.get("splits")
    return (
        splits is not None
        and splits == b.resolved.get("splits")
        and (ca.resolved_dataset(), ca.dataset_options)
        == (cb.resolved_dataset(), cb.dataset_options)
    )


def check_comparable(runs: Sequence[Run | Unfinished]) -> None:
    """Refuse runs of different datasets or image sizes (:func:`same_data`: the same
    samples at another path are the same dataset).

    Raises:
        ConfigError: naming two runs that differ and both values.
    """
    first = runs[0]
    for run in runs[1:]:
        if not same_data(first, run):
            raise ConfigError(
                f"{first.path} and {run.path} were trained on different datasets "
                f"({dataset_of(first)} vs {dataset_of(run)}): their scores are not comparable; "
                "pass --force to compare them anyway"
            )
        size, first_size = run.config.image_size, first.config.image_size  # type: ignore[union-attr]
        if size != first_size:
            raise ConfigError(
                f"{first.path} and {run.path} were trained at different image sizes "
                f"({first_size} vs {size} px): their scores are "
                "not comparable; pass --force to compare them anyway"
            )


def _setting_names() -> list[str]:
    """Every setting a comparison looks at: the main ones, then every other
    :class:`RunConfig` field except the output options (folder names, logging)."""
    others = [
        f.name
        for f in dataclasses.fields(RunConfig)
        if f.metadata.get("group") != "output" and f.name not in MAIN_SETTINGS
    ]
    return [*MAIN_SETTINGS, *others]


def _settings(run: Run | Unfinished) -> dict[str, Any]:
    """A row's settings; ``-`` each for a folder without a readable config.json."""
    if run.config is None:
        return dict.fromkeys(_setting_names(), "-")
    values = {name: getattr(run.config, name) for name in _setting_names()}
    # What the run actually used where the config left it to the machine.
    values["precision"] = run.resolved.get("precision", run.config.precision)
    values["dataset"] = run.config.resolved_dataset()
    values["threads"] = _threads(run.config.threads, run.resolved)
    return values


def _threads(setting: str | int, resolved: dict[str, Any]) -> Any:
    """The CPU threads a run used (``config.json``'s ``resolved.threads``); a run of an
    older segkit that did not record the count shows its setting, marked where that was
    ``auto``."""
    used = resolved.get("threads")
    if isinstance(used, int):
        return used
    return f"{setting} (count not recorded)" if setting == "auto" else setting


def _read_all(run_dirs: Sequence[Path | str]) -> tuple[list[Run | Unfinished], list[str]]:
    """Every folder given, once (by its resolved path; the first spelling is kept), read
    (:func:`inspect_run`); and a note for each folder given again. A study folder (``segkit
    study``'s, with a ``study.json``) stands for the run folders of its study."""
    rows: list[Run | Unfinished] = []
    notes: list[str] = []
    seen: dict[Path, str] = {}
    for given in _study_runs(run_dirs, notes):
        path = Path(given)
        key = path.expanduser().resolve()
        if key in seen:
            same = "" if seen[key] == str(given) else f" as `{seen[key]}`"
            notes.append(f"`{given}`: the same folder given again{same}; compared once")
            continue
        seen[key] = str(given)
        rows.append(inspect_run(path.expanduser()))
    return rows, notes


def _study_runs(run_dirs: Sequence[Path | str], notes: list[str]) -> list[Path | str]:
    """``run_dirs`` with each study folder (no ``config.json``, a ``study.json``) replaced
    by the run folders of its study that exist, in the study's order: never ``replaced/``
    (runs changed or removed by ``segkit study --force``) or another folder there. A note
    says so for each study folder."""
    expanded: list[Path | str] = []
    for given in run_dirs:
        folder = Path(given).expanduser()
        state = folder / "study.json"
        if not state.is_file() or (folder / "config.json").is_file():
            expanded.append(given)
            continue
        try:
            names = [r["name"] for r in json.loads(state.read_text())["runs"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"{state}: not a study's study.json ({e}); run the study again "
                f"(segkit study FILE --out {folder}) to write it, or name its run folders"
            ) from None
        there = [folder / n for n in names if (folder / n).is_dir()]
        missing = len(names) - len(there)
        notes.append(
            f"`{given}`: a study folder: its {plural(len(there), 'run')} as its study.json "
            "lists them"
            + (f" ({missing} not started yet)" if missing else "")
            + (", not the runs moved to replaced/" if (folder / "replaced").is_dir() else "")
        )
        expanded += there or [given]
    return expanded


def compare(
    run_dirs: Sequence[Path | str],
    out: Path | str,
    *,
    force: bool = False,
    group_seeds: bool = False,
    device: str = "auto",
    notes: Sequence[str] = (),
) -> Comparison:
    """Compare finished runs and write the report into ``out`` (see the module's doc).

    Args:
        run_dirs: Run folders, in the order of the rows.
        out: The folder for the report (made if needed).
        force: Compare runs of different datasets or image sizes too.
        group_seeds: Also group the runs that differ in their seed only (mean ± std).
        device: Where the models predict for ``predictions.png``.
        notes: More notes for under the table (``segkit study``: runs that have no
            folder to compare, and why).

    Raises:
        ConfigError: no runs, no folder that holds a finished run (naming each folder and
            what it is), or runs of different datasets or image sizes without ``force``.
    """
    if not run_dirs:
        raise ConfigError("segkit compare: name at least one run folder")
    extra = list(notes)
    rows, notes = _read_all(run_dirs)
    runs = [r for r in rows if isinstance(r, Run)]
    if not runs:
        whats = "; ".join(f"{r.path}: {r.note}" for r in rows if isinstance(r, Unfinished))
        raise ConfigError(f"segkit compare: no finished run to compare: {whats}")
    configured = [r for r in rows if r.config is not None]
    if not force:
        check_comparable(configured)
    for row in rows:
        row.settings = _settings(row)
        row.results = _results(row) if isinstance(row, Run) else _so_far(row)
    names = _setting_names()
    differing = [n for n in names if len({_text(r.settings[n]) for r in configured}) > 1]
    shared = [n for n in names if n not in differing]
    groups = (
        _groups(runs, differing)
        if group_seeds
        else [Group(_label(r, differing), r.settings, [r]) for r in runs]
    )
    notes += [f"`{r.name}`: {r.note}" for r in rows if isinstance(r, Unfinished)] + extra
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    comparison = Comparison(
        runs, differing, shared, groups, {}, grouped=group_seeds, rows=rows, notes=notes
    )
    if any(math.isfinite(r.results["false_alarm_rate"]) for r in runs):
        comparison.columns.update(DETECTION)
    _predictions(comparison, out / "predictions.png", device)  # also counts parameters
    comparison.files["csv"] = _write_csv(comparison, out / "comparison.csv")
    if group_seeds:
        comparison.files["groups_csv"] = _write_groups_csv(
            comparison, out / "comparison_groups.csv"
        )
    comparison.files["curves"] = _write_curves(comparison, out / "curves.png")
    comparison.files["md"] = _write_md(comparison, out / "comparison.md")
    return comparison


def _results(run: Run) -> dict[str, Any]:
    results: dict[str, Any] = {"parameters": None}
    best = RunFolder(run.path).best
    results["checkpoint_mb"] = best.stat().st_size / 1e6 if best.is_file() else math.nan
    for key, summary_key in FROM_SUMMARY.items():
        results[key] = run.summary.get(summary_key, math.nan)
    results["stopped_by"] = _stopped_by(run.summary)
    results.update(_detection(run.summary))
    return results


def _detection(summary: dict[str, Any]) -> dict[str, float]:
    """:data:`DETECTION`'s values from a summary's test counts: NaN each where the test
    split held no empty mask (then nothing is a false alarm to count) or the summary has
    no counts (K classes, or an older segkit)."""
    out = dict.fromkeys(DETECTION, math.nan)
    m = summary.get("test_metrics") or {}
    try:
        images, empty = int(m["images"]), int(m["empty_truth"])
        missed, alarms = int(m["missed"]), int(m["false_alarms"])
    except (KeyError, TypeError, ValueError):
        return out
    if summary.get("test_mdice") is not None or not empty:  # K classes: pairs, not images
        return out
    held = images - empty
    out.update(
        test_missed=missed,
        missed_rate=missed / held if held else math.nan,
        test_false_alarms=alarms,
        false_alarm_rate=alarms / empty,
    )
    return out


def _label(run: Run, differing: Sequence[str], leave_out: Sequence[str] = ()) -> str:
    """A run's name in legends and headings: the values of the settings that differ
    (the folder name where none do)."""
    parts = [_short(n, run.settings[n]) for n in differing if n not in leave_out]
    return " ".join(parts) if parts else run.name


def _short(name: str, value: Any) -> str:
    if isinstance(value, str) and name in ("model", "loss", "recipe", "loader", "dataset"):
        return value
    return f"{name}={_text(value)}"


def _groups(runs: Sequence[Run], differing: Sequence[str]) -> list[Group]:
    keys = [n for n in differing if n != "seed"]
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        key = tuple(_text(run.settings[n]) for n in keys)
        if key not in groups:
            groups[key] = Group(_label(run, keys), run.settings, [])
        groups[key].runs.append(run)
    return list(groups.values())


def _text(value: Any) -> str:
    """A setting as a table shows it."""
    if isinstance(value, dict):
        return ",".join(f"{k}={_text(v)}" for k, v in sorted(value.items())) or "-"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ----------------------------------------------------------------------------- numbers


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value), NaNs left out."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std


_DIGITS = {
    "valid_dice": 4,
    "test_dice": 4,
    "test_iou": 4,
    "train_s_per_epoch": 2,
    "images_per_s": 1,
    "checkpoint_mb": 1,
    "best_epoch": 1,
    "epochs_run": 1,
}


def _show(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, str):
        return value
    if key == "parameters":
        return f"{value / 1e6:.2f}M"
    if key in ("best_epoch", "epochs_run", "test_missed", "test_false_alarms"):
        return str(int(value))
    if key.endswith("_rate"):
        return f"{value:.0%}"
    return f"{value:.{_DIGITS.get(key, 4)}f}"


def _show_mean(key: str, values: Sequence[float]) -> str:
    """``mean ± std`` of a group's values; one value (and the parameters, the same for
    every seed) as it is."""
    if key in ("parameters", "checkpoint_mb") or len(values) == 1:
        return _show(key, values[0])
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return "-"
    if key.endswith("_rate"):
        return f"{mean:.0%} ± {std:.0%}"
    digits = _DIGITS.get(key, 4)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _show_words(values: Sequence[str]) -> str:
    """A group's words (``stopped by``): the one they share, else each with its count."""
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if len(counts) == 1:
        return values[0]
    return ", ".join(f"{n}x {v}" for v, n in counts.items())


def _row_results(row: Run | Unfinished, columns: dict[str, str]) -> list[str]:
    """A row's results (``columns``) as the tables show them: a run that has not
    finished shows its epochs as ``k of N``."""
    shown = [_show(key, row.results[key]) for key in columns]
    if isinstance(row, Unfinished) and row.config is not None:
        k = row.results["epochs_run"]
        shown[list(RESULTS).index("epochs_run")] = f"{k} of {row.config.epochs}"
    return shown


# ----------------------------------------------------------------------------- files


def _write_csv(c: Comparison, path: Path) -> Path:
    """Every row, the numbers as ``summary.json`` has them; ``note`` says what a row that
    is not a finished run is (blank for a finished one)."""
    columns = ["run", *c.differing, *c.shared, *c.columns, "note"]
    notes = {id(r): r.note for r in c.unfinished}
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in c.rows:
            values = {**row.settings, **row.results}
            cells = [_csv_value(values[k]) for k in columns[1:-1]]
            writer.writerow([str(row.path), *cells, notes.get(id(row), "")])
    return path


def _csv_value(value: Any) -> Any:
    if isinstance(value, dict | type(None)) or isinstance(value, bool):
        return _text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ""  # nothing recorded (a run not finished has no test scores)
    return value  # numbers exactly as summary.json has them (repr)


def _write_groups_csv(c: Comparison, path: Path) -> Path:
    """One row per group: its seeds, ``n``, and per result its mean and sample standard
    deviation over the seeds (the std blank for a group of one seed: no spread)."""
    keys = [n for n in c.differing if n != "seed"]
    numbers = [k for k in c.columns if k not in WORDS]
    columns = [*keys, "seeds", "n", *WORDS]
    for key in numbers:
        columns += [f"{key}_mean", f"{key}_std"]
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for g in c.groups:
            row: list[Any] = [_text(g.settings[k]) for k in keys]
            row += [" ".join(map(str, g.seeds)), len(g.runs)]
            row += [_show_words([r.results[k] for r in g.runs]) for k in WORDS]
            for key in numbers:
                mean, std = mean_std([r.results[key] for r in g.runs])
                row += [mean, std if len(g.runs) > 1 else ""]
            writer.writerow(row)
    return path


def _md_table(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table whose columns line up in a terminal too (each cell padded to its
    column's width; numbers to the right)."""
    numbers = [*RESULTS.values(), *DETECTION.values()]
    right = [h in numbers and h != RESULTS["stopped_by"] or h == "n (seeds)" for h in headings]
    widths = [max(len(h), 3, *(len(r[i]) for r in rows)) for i, h in enumerate(headings)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if r else "-" * w for w, r in zip(widths, right, strict=True)]
    return [line(headings), "| " + " | ".join(rule) + " |", *(line(r) for r in rows)]


def _write_md(c: Comparison, path: Path) -> Path:
    n, given = len(c.runs), len(c.rows)
    title = f"# Comparison of {plural(n, 'run')}"
    if given > n:
        title += f" (and {plural(given - n, 'folder')} not finished or not a run: see the notes)"
    lines = [title, ""]
    first = c.runs[0].settings
    # The main settings and the training recipe, then whatever else is not the default;
    # the data has its own line.
    listed = (*MAIN_SETTINGS, "image_size", "batch_size", "lr", "lr_gamma", "schedule")
    data = ("data", "dataset", "dataset_options")
    shared = [s for s in c.shared if s in listed]
    shared += [
        s
        for s in c.shared
        if s not in shared and s not in data and _text(first[s]) != _text(_default(s))
    ]
    said = [f"{s} {_text(first[s])}" for s in shared]
    model = {"parameters": "parameters {}", "checkpoint_mb": "best.pt {} MB"}
    said += [model[k].format(_show(k, c.runs[0].results[k])) for k in _said_once(c)]
    lines.append("Same for every run: " + ", ".join(said) + ".")
    config = c.runs[0].config
    where = config.data or "generated in segkit's cache"
    options = f" ({_text(config.dataset_options)})" if config.dataset_options else ""
    lines.append(f"Data: {config.resolved_dataset()}{options}, {where}.")
    lines.append("")
    if c.grouped:
        lines += _groups_md(c)
    once = _said_once(c)
    keys = [k for k in c.columns if k not in once]
    rows = []
    for row in c.rows:
        cells = [f"`{row.name}`", *(_text(row.settings[k]) for k in c.differing)]
        shown = dict(zip(c.columns, _row_results(row, c.columns), strict=True))
        rows.append(cells + [shown[k] for k in keys])
    lines += _md_table(["run", *c.differing, *(c.columns[k] for k in keys)], rows)
    lines += [""]
    if c.notes:
        lines += ["Notes:", "", *(f"- {note}" for note in c.notes), ""]
    lines += [
        "Valid Dice is the best epoch's (it picked `best.pt`), test Dice and IoU are "
        "`best.pt`'s on the test split: each run's `summary.json` (for a run not finished, "
        "its best epoch so far in `metrics.csv`); stopped by: what ended "
        "the run (all epochs, early stopping by --patience, the --max-time limit; for a run "
        "that has not finished, interrupted, failed, running, or unknown where its folder "
        "records nothing of it). The full table, every setting included, is "
        "`comparison.csv`."
        + (
            " Missed and false alarms: test images with a defect in which nothing was "
            "predicted, and empty ones in which something was; their rates are of the "
            "images with foreground and of the empty images (docs/metrics.md, Empty masks)."
            if "test_missed" in c.columns
            else ""
        ),
        "",
        f"![valid Dice and train loss per epoch]({c.files['curves'].name})",
        "",
    ]
    if "predictions" in c.files:
        shown = " (one seed of each group)" if c.grouped and len(c.groups) < len(c.runs) else ""
        lines += [
            f"![the same test images segmented by every run]({c.files['predictions'].name})",
            "",
            f"`{c.files['predictions'].name}`: {c.predicted} test images, the best, median "
            f"and worst by their mean Dice over the runs; the image, the truth, then each "
            f"run's prediction{shown}, with the Dice of the picture shown (the image read "
            "again at the run's size, as `segkit predict` does).",
            "",
        ]
    with atomic_open(path) as f:
        f.write("\n".join(lines))
    return path


def _said_once(c: Comparison) -> list[str]:
    """The model's columns (parameters, ``best.pt`` size) where every finished run has
    the same: ``comparison.md`` says them once, with the shared settings, for a narrower
    table (``comparison.csv`` has every column)."""
    return [
        k
        for k in ("parameters", "checkpoint_mb")
        if len({_show(k, r.results[k]) for r in c.runs}) == 1
    ]


def _groups_md(c: Comparison) -> list[str]:
    """The table over seeds (``segkit study``, ``--group-seeds``): with two seeds or more
    in a group, each number is its mean ± std; with one seed in every group, no such
    table (it would be the table of every run), but a line saying there is no spread."""
    keys = [k for k in c.differing if k != "seed"]
    if all(len(g.runs) == 1 for g in c.groups):
        seeds = {g.runs[0].config.seed for g in c.groups}
        seed = f" ({next(iter(seeds))})" if len(seeds) == 1 else ""
        return [
            f"One seed per configuration (seeds=1{seed}): one run each gives no spread over "
            "seeds, so the table shows each run's own values, no mean ± standard "
            "deviation. Run more seeds (in a study, `seed = [0, 1, 2]` under `[axes]`) to "
            "see how much of a difference is the seed's.",
            "",
        ]
    once = _said_once(c)
    results = [k for k in c.columns if k not in once]
    rows = []
    for g in c.groups:
        row = [_text(g.settings[k]) for k in keys]
        row += [f"{len(g.runs)} ({', '.join(map(str, g.seeds))})"]
        for key in results:
            values = [r.results[key] for r in g.runs]
            row.append(_show_words(values) if key in WORDS else _show_mean(key, values))
        rows.append(row)
    return [
        "## Mean ± standard deviation over seeds",
        "",
        *_md_table([*keys, "n (seeds)", *(c.columns[k] for k in results)], rows),
        "",
        "n (seeds): how many seeds finished, and which. With two or more, each number is "
        "the mean over them ± the sample standard deviation (n - 1); with one, the run's "
        "own value (no spread). Train s/epoch and images/s leave each run's first epoch "
        "out.",
        "",
        *_ranking_md(c),
        "## Every run",
        "",
    ]


def _ranking_md(c: Comparison) -> list[str]:
    """Which configuration has the best mean test Dice, and which of the others the seeds
    do not separate from it: a difference of means under twice its standard error,
    sqrt(s1²/n1 + s2²/n2) (a rough guide with 2 or 3 seeds, a stricter one with more). A
    configuration with one seed has no spread to judge by: said so, not ranked."""
    scored = []
    for g in c.groups:
        mean, std = mean_std([r.results["test_dice"] for r in g.runs])
        if math.isfinite(mean):
            scored.append((g, mean, std, len(g.runs)))
    if len(scored) < 2:
        return []
    best, mean, std, n = max(scored, key=lambda x: x[1])
    if n < 2:
        return [
            f"Best mean test Dice: {best.label} ({mean:.4f}), from one seed: no spread over "
            "seeds to say whether the others differ from it by more than chance; run more "
            "seeds to tell.",
            "",
        ]
    close, behind, single = [], [], []
    for g, m, sd, k in sorted(scored, key=lambda x: -x[1]):  # each list best first
        if g is best:
            continue
        text = f"{g.label} ({m:.4f} ± {sd:.4f})" if k > 1 else f"{g.label} ({m:.4f})"
        if k < 2:
            single.append(text)
        elif mean - m < 2 * math.sqrt(std**2 / n + sd**2 / k):
            close.append(text)
        else:
            behind.append(text)
    lines = [f"**Best mean test Dice: {best.label}** ({mean:.4f} ± {std:.4f}, {n} seeds)."]
    if close:
        lines.append(
            f"Within the seeds' noise of it: {', '.join(close)}; these differ from the best by "
            "less than twice the standard error of the difference (sqrt(s1²/n1 + s2²/n2)): "
            "the seeds do not separate them, so this study does not rank them."
        )
    if behind:
        lines.append(f"Behind it by more than the seeds' noise: {', '.join(behind)}.")
    if single:
        lines.append(f"One seed, no spread to judge by: {', '.join(single)}.")
    same = [g.label for g, _, sd, k in scored if k > 1 and round(sd, 4) == 0]
    if same:
        lines.append(
            f"The same test Dice in every seed, to four places: {', '.join(same)}; seeds "
            "that train apart rarely agree so, a model that predicts one class for every "
            "pixel does: see predictions.png."
        )
    return [" ".join(lines), ""]


def _default(name: str) -> Any:
    f = RunConfig.__dataclass_fields__[name]
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def _write_curves(c: Comparison, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_dice, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, g in enumerate(c.groups):
        colour = f"C{i % 10}"
        for ax, key in ((ax_dice, "valid_dice"), (ax_loss, "train_loss")):
            curves = [
                {
                    int(r["epoch"]): r[key]
                    for r in run.history
                    if math.isfinite(r.get(key, math.nan))
                }
                for run in g.runs
            ]
            epochs = sorted(set.intersection(*(set(cv) for cv in curves))) if curves else []
            if not epochs:
                continue
            stats = [mean_std([cv[e] for cv in curves]) for e in epochs]
            mean = [m for m, _ in stats]
            ax.plot(
                epochs, mean, color=colour, marker="." if len(epochs) < 30 else None, label=g.label
            )
            if len(g.runs) > 1:
                lo = [m - s for m, s in stats]
                hi = [m + s for m, s in stats]
                ax.fill_between(epochs, lo, hi, color=colour, alpha=0.18, linewidth=0)
    for j, row in enumerate(r for r in c.unfinished if r.history):
        # What a run not finished recorded so far, dashed.
        colour = f"C{(len(c.groups) + j) % 10}"
        for ax, key in ((ax_dice, "valid_dice"), (ax_loss, "train_loss")):
            points = [
                (int(r["epoch"]), r[key])
                for r in row.history
                if math.isfinite(r.get(key, math.nan))
            ]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    color=colour,
                    linestyle="--",
                    marker=".",
                    label=f"{row.name} ({row.stopped_by})",
                )
    ax_dice.set(title="valid Dice", xlabel="epoch", ylim=(0, 1))
    ax_loss.set(title="train loss", xlabel="epoch")
    for ax in (ax_dice, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    seeds = " (mean over seeds, band: ± std)" if c.grouped and len(c.groups) < len(c.runs) else ""
    handles, labels = ax_dice.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(3, max(1, len(labels))),
        fontsize=9,
        title=seeds.strip(" ()") or None,
    )
    rows = math.ceil(len(labels) / 3)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * rows, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- predictions


def _predictions(c: Comparison, path: Path, device: str) -> None:
    """Count each run's parameters and draw ``predictions.png``: the same
    :data:`PREDICTION_IMAGES` test images (chosen from the runs' mean per-image Dice by
    :func:`segkit.reports.figures.grid_rows`) for every run (one per group of seeds)."""
    first = c.runs[0]
    dataset = _first_data(c)
    if dataset is None:  # no run's data folder is here: the parameters alone
        for run in c.runs:
            trained = open_trained(RunFolder(run.path).best, device="cpu", precision="fp32")
            run.results["parameters"] = sum(p.numel() for p in trained.model.parameters())
        return
    task = Task.of(dataset)
    samples = split_samples(dataset, "test", first.config.resolved_dataset())
    picks = _pick_images(c.runs, [s.id for s in samples])
    size = first.config.image_size
    raw = [read_sample(samples[i], dataset.mask_spec) for i in picks]
    images = [img for img, _ in raw]
    # Masks resized by nearest neighbour: 0/1 (binary) or class indices stay as they are.
    maps = [np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST)) for _, m in raw]
    truths = np.stack(maps) if task.multiclass else np.stack(maps) > 0
    target = torch.from_numpy(truths) if task.multiclass else torch.from_numpy(truths[:, None])
    target = target if task.multiclass else target.float()
    dev = resolve_device(device)
    shown = {id(g.runs[0]) for g in c.groups}
    columns: list[tuple[Run, np.ndarray, list[float]]] = []
    for run in c.runs:
        # fp32: the picture is the same whatever the GPU.
        trained = open_trained(RunFolder(run.path).best, device=str(dev), precision="fp32")
        run.results["parameters"] = sum(p.numel() for p in trained.model.parameters())
        if id(run) not in shown or not picks:
            continue
        logits = _grid_logits(replace(trained, task=task), images, size)
        dice, _ = report.per_image_scores(logits, target, task)
        columns.append((run, report.predicted(logits, task), dice.tolist()))
    if not picks:
        return
    pictures = [
        np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images
    ]
    rows = _prediction_rows(c, task, samples, picks, (pictures, truths), columns)
    headings = ["image", "truth", *(_column_label(c, run) for run, _, _ in columns)]
    report.draw_tiles(headings, rows, report.legend_of(task)).save(path)
    c.files["predictions"] = path
    c.predicted = len(picks)


def _first_data(c: Comparison) -> Any:
    """The dataset of the first run whose data folder is here (a run folder copied from
    another machine, or whose data moved, records a folder that may be gone: a rerun's
    is then the same samples, :func:`same_data`); None, with a note in ``c.notes``, where
    no run's is."""
    missing = []
    for run in c.runs:
        try:
            return build_dataset(run.config)
        except DataError as e:
            missing.append(f"`{run.name}`: {e}")
    c.notes.append(
        "predictions.png not drawn: no run's data folder is here ("
        + "; ".join(missing)
        + "); the scores are the runs' own"
    )
    return None


@torch.no_grad()
def _grid_logits(trained: Trained, images: list[np.ndarray], size: int) -> torch.Tensor:
    """The logits of ``images`` at ``size`` x ``size`` on the CPU, as ``segkit predict``
    sees them: resized to the run's training size (the evaluation recipe's Resize,
    OpenCV-style bilinear, and Normalize), or, for a model trained at native resolution,
    each image predicted whole at its own size (the predictor's auto mode); then resized
    to the grid's size."""
    task = trained.task
    if trained.native:
        probs = Predictor.of(trained).predict_batch(images)
        shape = (None,) if task.multiclass else (None, None)
        logits = torch.cat(
            [
                resize_to(as_logits(torch.from_numpy(p)[shape], task.multiclass), (size, size))
                for p in probs
            ]
        )
    else:
        x = resized_batch(images, trained.image_size, trained.device)
        logits = trained.logits(trained.normalize(x)).cpu()
    if logits.shape[-1] != size or logits.shape[-2] != size:
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    return logits


def _prediction_rows(
    c: Comparison,
    task: Task,
    samples: Sequence[Any],
    picks: list[int],
    grid: tuple[Sequence[np.ndarray], np.ndarray],
    columns: list[tuple[Run, np.ndarray, list[float]]],
) -> list[Any]:
    """One row of tiles per picked image: the image, its truth (``grid``: the pictures
    and the masks at the grid's size), then each run's prediction with its Dice."""
    pictures, truths = grid
    size = truths.shape[-1]
    scale = report.tile_scale(size, size)
    mean_dice = _mean_scores(c.runs, [s.id for s in samples])
    score = "mDice" if task.multiclass else "Dice"
    rows = []
    for k, i in enumerate(picks):
        image = report.image_tile(pictures[k], scale)
        truth_tile = report.segment_tiles(image, truths[k], truths[k], scale, task)[0]
        tiles = [image, truth_tile]
        labels = ["", ""]
        for _, pred, dice in columns:
            # The overlay of each run's prediction (binary: against the truth).
            tiles.append(report.segment_tiles(image, truths[k], pred[k], scale, task)[2])
            labels.append(f"{score} {dice[k]:.3f}")
        caption = f"{samples[i].id}  (mean test {score} over the runs {mean_dice[i]:.3f})"
        rows.append(report.TileRow(caption, tiles, labels))
    return rows


def _column_label(c: Comparison, run: Run) -> str:
    """A prediction column's heading: its group's label, and its seed where the group
    has other seeds."""
    for g in c.groups:
        if g.runs[0] is run:
            return f"{g.label} seed {run.config.seed}" if len(g.runs) > 1 else g.label
    return run.name


def _mean_scores(runs: Sequence[Run], ids: Sequence[str]) -> list[float]:
    """Each test image's Dice averaged over the runs that scored it (by id)."""
    by_id: dict[str, list[float]] = {}
    for run in runs:
        for image_id, dice, _ in run.scores:
            by_id.setdefault(image_id, []).append(dice)
    return [mean_std(by_id.get(i, []) or [math.nan])[0] for i in ids]


def _pick_images(runs: Sequence[Run], ids: Sequence[str]) -> list[int]:
    """Indices into the test split of the images to draw: the best, median and worst by
    the runs' mean Dice (:func:`segkit.reports.figures.grid_rows`); images no run scored count
    as 0."""
    means = [m if math.isfinite(m) else 0.0 for m in _mean_scores(runs, ids)]
    return [i for i, _, _ in report.grid_rows(means, PREDICTION_IMAGES)]
