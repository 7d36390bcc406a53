"""The run folder: where a run's files are, and how each is written.

::

    runs/<name>/
        config.json       what was asked (a RunConfig) and, under "resolved", what it became
        metrics.csv       one row per epoch, with its seconds: epoch_seconds (training),
                          valid_s, checkpoint_s (the training loop blocked by checkpointing)
                          and epoch_wall_s (the whole epoch)
        last.pt           the training state after the newest saved epoch: every
                          --save-every K epochs and after the last (atomic writes)
        best.pt           the weights of the best epoch by --monitor, validation Dice by
                          default (atomic writes)
        bad_samples.txt   what --skip-bad-samples left out, if anything
        curves.png        loss and Dice per epoch (segkit.reports.figures)
        predictions.png   the best, median and worst test images by Dice: image, true
                          and predicted masks, overlay (segkit.reports.figures)
        test_scores.csv   each test image's Dice and IoU (index, id, dice, iou); their
                          mean is summary.json's test_dice
        profile.txt       with --profile N: where N steps of the first epoch spent their
                          time; profile-trace.json their timeline (a Chrome trace)
        summary.txt       the one summary line; summary.json the same, machine-readable
        stopped.json      what ended a run that did not finish (Ctrl-C or SIGTERM, or
                          the error), and when; removed when the run is resumed. A run
                          killed outright (SIGKILL, out of memory) or of a segkit older
                          than this record leaves none

On an accelerator checkpoints are written in the background while the next epoch trains
(:class:`segkit.training.checkpoint.BackgroundWriter`), so ``metrics.csv`` can be one write ahead
of ``last.pt``; with ``--save-every K`` up to K-1 epochs more. Resume cuts it back to the
checkpoint.

When a run finishes, ``last.pt`` is deleted unless ``--keep-last``: the reports and
``best.pt`` are what a finished run is for, and ``last.pt`` (Adam's moments too) is three
times ``best.pt``'s size. An interrupted run keeps it, for ``--resume``.

Nothing a run recorded is ever overwritten by a new run: a taken name gets ``-2``,
``-3``... A folder that records nothing (a run that stopped before its first epoch: only
``config.json``, and maybe ``bad_samples.txt``, ``tensorboard/`` and the temporary file of
a killed write) is no run's record: a run that fails that early removes its folder, and
one killed or interrupted there leaves it for the next run of that name, which takes it
(:meth:`RunFolder.create`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.config import COMMAND_LINE, PYTHON, RunConfig, given, given_as, named
from segkit.errors import CheckpointError, ConfigError, plural
from segkit.system.files import atomic_open, is_temporary, remove_temporaries
from segkit.task import per_class_rows
from segkit.training import checkpoint as ckpt_io
from segkit.training import profiling

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: Run folders this process holds (:meth:`RunFolder.lock`): resolved path -> open fd.
_LOCKS: dict[str, int] = {}

#: What ended a run: the one vocabulary of ``stopped_by``, in ``summary.json`` (a run that
#: finished: :data:`FINISHED_BY`) and in ``stopped.json`` (a run that did not:
#: :data:`UNFINISHED_BY`). Value -> what it means, naming the setting by its name (as the
#: files of a run folder do, however the run was started).
STOPPED_BY: dict[str, str] = {
    "epochs": "it ran all its epochs (epochs)",
    "patience": "early stopping (patience): the monitored score stopped improving",
    "max_time": "the time limit (max_time): the next epoch would have ended past it",
    "interrupted": "Ctrl-C or SIGTERM; resumable from last.pt",
    "failed": "an error (stopped.json's reason names it)",
}
FINISHED_BY = ("epochs", "patience", "max_time")
UNFINISHED_BY = ("interrupted", "failed")


def stopped_by_of(summary: dict[str, Any]) -> str | None:
    """``summary.json``'s ``stopped_by`` in :data:`STOPPED_BY`'s words, an older segkit's
    too: null (or no key) from a run that ran all its epochs is ``epochs``; None where the
    summary says it stopped early but not by what (a segkit before ``stopped_by``), or
    holds a value outside the vocabulary."""
    by = summary.get("stopped_by")
    if by is None:
        return None if summary.get("stopped_early") else "epochs"
    return by if by in FINISHED_BY else None


@dataclass
class RunResult:
    """What a training run returns (and ``summary.json`` records).

    ``test`` holds the best checkpoint's scores on the test split, numbers read as
    ``result.test["dice"]``, and two values that are not numbers:

    - binary: ``dice``, ``iou``, ``loss`` (floats), ``images`` (a count);
    - K classes: ``miou``, ``mdice``, ``miou_images``, ``mdice_images``, ``pixel_acc``,
      ``loss``, ``iou_<c>`` and ``dice_<c>`` per class index (floats), ``images``,
      ``images_scored``, ``pixels`` (counts) and ``confusion`` (the confusion matrix: a
      list of rows of pixel counts, rows the true class);
    - both: ``definitions``, a dict of Dice and IoU under the definitions papers and peer
      libraries use (:func:`segkit.metrics.definitions.side_by_side`; ``summary.json``'s
      ``test_metrics``).

    Hence ``dict[str, Any]``: ``float(result.test["dice"])`` where a type checker needs a
    float. A rank of a multi-GPU run other than the first returns an empty ``test``.
    """

    run_dir: Path
    #: The test split's scores (see the class docstring): floats by name, counts,
    #: ``confusion`` (K classes) and ``definitions``.
    test: dict[str, Any]
    best_epoch: int
    best_valid_dice: float
    epoch_seconds: float
    images_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1
    weights_in_sync: bool = True
    #: Seconds of the whole run (of this process; a resumed run counts from the resume).
    wall_s: float = math.nan
    #: Mean seconds a background checkpoint write took (not blocking training), and how
    #: many there were (this process).
    checkpoint_write_s: float = math.nan
    checkpoint_writes: int = 0
    #: The most GPU memory PyTorch's allocator held at once (MiB; None off CUDA).
    peak_gpu_memory_mb: float | None = None
    #: ``--monitor`` and its value at the best epoch (``best_valid_dice`` stays the Dice).
    monitor: str = "valid_dice"
    best_value: float = math.nan
    #: Whether ``--patience`` or ``--max-time`` ended the run before ``--epochs``, what
    #: ended it (:data:`STOPPED_BY`: ``epochs``, ``patience`` or ``max_time``), why, and
    #: its last epoch.
    stopped_early: bool = False
    stop_reason: str | None = None
    stopped_by: str = "epochs"
    #: ``--cuda-graphs``: the step's record (:meth:`TrainStep.graph_record
    #: <segkit.training.loops.TrainStep.graph_record>`), None for the eager step.
    cuda_graphs: dict[str, Any] | None = None
    epochs_run: int = 0
    #: The run's target (binary or K classes; a segkit.task.Task).
    task: Any = None
    #: Where the wall time went, in seconds (:meth:`RunClock.breakdown`).
    time: dict[str, float] = field(default_factory=dict)
    #: What the data check warned of before training (K classes: a class with no pixel
    #: in a split, or under 0.1% of the train pixels), one line each.
    data_warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        """The headline, for a notebook cell: the folder, the test scores without their
        per-class and per-definition detail, the best epoch and what ended the run; the
        fields hold the rest (``result.test``, ``result.history``, ``result.time``)."""
        return (
            f"RunResult(run_dir={self.run_dir!r}, test={headline_scores(self.test)}, "
            f"best_epoch={self.best_epoch}, monitor={self.monitor!r}, "
            f"best_value={_rounded(self.best_value)}, epochs_run={self.epochs_run}, "
            f"stopped_by={self.stopped_by!r}, history=<{plural(len(self.history), 'epoch')}>)"
        )


#: The scores a repr shows of a ``test`` dict, where present: binary, then K classes.
HEADLINE = ("dice", "iou", "miou", "mdice", "pixel_acc")


def headline_scores(scores: dict[str, Any], prefix: str = "") -> str:
    """``{'dice': 0.4852, 'iou': 0.3336}``: the :data:`HEADLINE` scores of ``scores`` (keys
    ``prefix + name``, as ``summary.json``'s ``test_dice``) to 4 places, for a repr."""
    shown = {k: _rounded(scores[prefix + k]) for k in HEADLINE if prefix + k in scores}
    return repr(shown)


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


#: What a run writes in its folder before its first epoch is recorded (besides temporary
#: files): a folder holding nothing else records no run. ``--profile``'s report is written
#: at the end of the first epoch's training.
_BEFORE_FIRST_EPOCH = ("config.json", "bad_samples.txt", *profiling.FILES)
_TENSORBOARD = "tensorboard"  # segkit.reports.tb_log.FOLDER (imports tensorboard lazily)
#: A metrics row's values set after the checkpoint of its epoch was taken.
_FILLED_AFTER_CHECKPOINT = ("checkpoint_s", "epoch_wall_s")

#: What summary.json repeats of config.json's resolved runtime.
_SUMMARY_RUNTIME = ("device", "device_name", "precision", "channels_last", "torch", "cuda")


class RunFolder:
    """The files of one run under ``path``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.csv"
        self.last = self.path / "last.pt"
        self.best = self.path / "best.pt"
        self.bad_samples = self.path / "bad_samples.txt"
        self.curves = self.path / "curves.png"
        self.predictions = self.path / "predictions.png"
        self.test_scores = self.path / "test_scores.csv"
        self.summary_txt = self.path / "summary.txt"
        self.summary_json = self.path / "summary.json"
        self.stopped = self.path / "stopped.json"
        self.extending = self.path / "extending.json"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @classmethod
    def create(cls, config: RunConfig) -> RunFolder:
        """``<out>/<name>``, made new; a name already taken gets ``-2``, ``-3``... Each
        name is claimed by an atomic ``mkdir``, so runs started at the same moment with
        the same ``--out`` and ``--name`` get one folder each. A taken folder that records
        no run (:meth:`records_nothing`: its run stopped before its first epoch, killed or
        interrupted) and that no live process holds is taken again, emptied. The folder
        comes locked (:meth:`lock`).

        Raises:
            ConfigError: the name is not a plain folder name, or the folder cannot be made.
        """
        base = Path(config.out).expanduser()
        name = config.name or f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        if "/" in name or name in ("", ".", ".."):
            raise ConfigError(f"{named('name', name)}: expected a plain folder name without '/'")
        path = base / name
        try:
            base.mkdir(parents=True, exist_ok=True)
            n = 2
            while not _claimed(path):  # taken, maybe a moment ago by another run
                left = cls(path)
                if left._take_over():
                    return left
                path = base / f"{name}-{n}"
                n += 1
        except OSError as e:
            raise ConfigError(f"{path}: cannot create the run folder ({e.strerror})") from None
        folder = cls(path)
        folder.lock()
        if path != base / name:
            folder.instead_of = base / name
        return folder

    #: The folder asked for when its name was taken and this one is a ``-2``, ``-3``...
    #: (:meth:`create`), else None.
    instead_of: Path | None = None

    def records_nothing(self, also: Sequence[str] = ()) -> bool:
        """Whether the folder holds only what a run writes before its first epoch is
        recorded: ``config.json``, ``bad_samples.txt``, ``--profile``'s report, a
        ``tensorboard/`` of event files, and temporary files of killed writes. No
        checkpoint, no ``metrics.csv``, nothing else (a file of the user's makes it a
        record). ``also``: more file names to pass over."""
        try:
            entries = list(self.path.iterdir())
        except OSError:
            return False
        for entry in entries:
            name = entry.name
            if entry.is_file() and (
                name in _BEFORE_FIRST_EPOCH or name in also or is_temporary(name)
            ):
                continue
            if entry.name == _TENSORBOARD and entry.is_dir():
                events = list(entry.iterdir())
                if all(e.is_file() and e.name.startswith("events.out.") for e in events):
                    continue
            return False
        return True

    def _take_over(self) -> bool:
        """Take a taken folder that records nothing and is not in use: lock it and empty it.

        Only a folder with a ``config.json`` is a candidate: a run writes it holding the
        lock, so a folder without one may be a run's that was made an instant ago and is
        not locked yet (taking its lock would make that run fail)."""
        if not (self.config.is_file() and self.records_nothing()):
            return False
        if str(self.path.resolve()) in _LOCKS:  # a run of this process trains there
            return False
        try:
            self.lock()
        except ConfigError:  # a live process holds it
            return False
        if not self.records_nothing():  # changed while we looked
            self.release()
            return False
        self._empty()
        return True

    def _empty(self) -> None:
        """Remove what a run wrote before its first epoch (the folder holds the lock)."""
        for entry in list(self.path.iterdir()):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()

    def discard(self, *, unresumable: bool = False) -> bool:
        """Remove the folder of a run that failed before its first epoch was recorded
        (:meth:`records_nothing`), and let go of its lock. Returns whether it was removed
        (a folder holding anything else is left as it is).

        ``unresumable``: the run failed before it wrote any training state: a folder
        without ``last.pt`` that holds besides at most ``best.pt`` and a ``metrics.csv`` of
        one epoch (a checkpoint write that failed in the first epoch, a full disk) is
        removed too: it cannot be resumed, and what it holds would fill the disk of the
        restart again."""
        if unresumable and not self.last.exists() and len(_read_rows(self.metrics)) <= 1:
            if not self.records_nothing(also=(self.best.name, self.metrics.name)):
                return False
        elif not self.records_nothing():
            return False
        self._empty()
        self.release()
        try:
            self.path.rmdir()
        except OSError:
            return False
        return True

    def restart_command(self, asked: dict[str, Any] | RunConfig, into: Path | None = None) -> str:
        """The command that starts this folder's run again, in this folder: ``segkit run
        --config <folder>/config.json``, with ``--out`` and ``--name`` where the settings
        ``asked`` (those config.json records) would not name it (a ``<model>-<time>``
        default name, a name that was taken, an ``--out`` relative to another directory).
        The next run takes the folder while it records nothing (:meth:`create`). ``into``:
        the folder the run goes to instead (:meth:`restart_elsewhere`)."""
        into = into or self.path
        where = self._restart_where(asked, into)
        return f"segkit run --config {self.config}" + "".join(
            f" --{k} {v}" for k, v in where.items()
        )

    def _restart_where(self, asked: dict[str, Any] | RunConfig, into: Path) -> dict[str, str]:
        """``out`` and ``name`` a restart from ``config.json`` gives to go to ``into``:
        those the settings ``asked`` would not name it by (:meth:`restart_command`)."""
        if isinstance(asked, RunConfig):
            asked = {"out": asked.out, "name": asked.name}
        where = {}
        out = asked.get("out")
        if out is None or Path(str(out)).expanduser().resolve() != into.parent.resolve():
            where["out"] = str(into.parent)
        if asked.get("name") != into.name:
            where["name"] = into.name
        return where

    def restart_call(
        self,
        asked: dict[str, Any] | RunConfig,
        into: Path | None = None,
        *,
        extra: str = "",
        more: dict[str, Any] | None = None,
    ) -> str:
        """The restart as the caller starts runs (:func:`~segkit.config.given`): from
        Python, the ``segkit.train`` call first and the command after it, ``segkit.train(
        segkit.RunConfig.from_file('runs/x/config.json'), out='runs', name='x-2') (or:
        segkit run --config runs/x/config.json --name x-2)``; from the command line (or
        with ``extra``, the ``--devices N`` the command ends with: torchrun's, no Python
        call) the command (:meth:`restart_command`). ``more``: RunConfig fields both end
        with, named as each gives them (``{"epochs": "N", "keep_last": True}``: ``epochs=N,
        keep_last=True`` and ``--epochs N --keep-last``); a string is written as it is
        (a placeholder for the user to fill in)."""
        into = into or self.path
        more = more or {}
        with given_as(COMMAND_LINE):  # the command's flags, whoever asks
            flags = "".join(f" {named(k, v, as_typed=True)}" for k, v in more.items())
        command = f"{self.restart_command(asked, into)}{flags}{extra}"
        if given() != PYTHON or extra:
            return command
        where = self._restart_where(asked, into)
        there = f", out={str(into.parent)!r}, name={into.name!r}" if where else ""
        then = "".join(f", {k}={v if isinstance(v, str) else repr(v)}" for k, v in more.items())
        call = f"segkit.train(segkit.RunConfig.from_file({str(self.config)!r}){there}{then})"
        return f"{call} (or: {command})"

    def restart_elsewhere(self, asked: dict[str, Any] | RunConfig) -> tuple[Path, str]:
        """Where a run started again from this folder's ``config.json`` goes when this
        folder is a record (it keeps ``best.pt`` or ``metrics.csv``, so it is not taken
        again): the first free ``<name>-2``, ``-3``... beside it, and the command, which
        names it."""
        if isinstance(asked, RunConfig):
            asked = {"out": asked.out, "name": asked.name}
        name = asked.get("name") or self.path.name
        n, path = 2, self.path.parent / name
        while path.exists() and not (
            RunFolder(path).config.is_file() and RunFolder(path).records_nothing()
        ):
            path = self.path.parent / f"{name}-{n}"
            n += 1
        return path, self.restart_command(asked, into=path)

    def kept(self) -> list[str]:
        """What this folder keeps of a run (for the messages of a run that cannot be
        resumed): ``best.pt`` and ``metrics.csv`` with the epochs its rows record."""
        out = []
        epochs = [r.get("epoch", "") for r in _read_rows(self.metrics)]
        if self.best.exists():
            out.append(f"{self.best.name} (the best weights so far: it evaluates and predicts)")
        if epochs:
            span = epochs[0] if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
            out.append(f"{self.metrics.name} (epoch{'s' * (len(epochs) > 1)} {span})")
        return out

    def size_text(self) -> str:
        """The folder's size on disk, in words (``124 MB``)."""
        total = 0
        for p in self.path.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
        return f"{total / 1e6:.0f} MB" if total >= 1e6 else f"{total / 1e3:.0f} kB"

    def unresumable(
        self,
        asked: dict[str, Any] | RunConfig,
        *,
        save_every: int = 1,
        extra: str = "",
        report: bool = False,
    ) -> tuple[str, str] | None:
        """For a run folder without ``last.pt`` that keeps more than a failed start
        (:meth:`kept`): why it cannot be resumed and what it keeps, and the honest
        restart, in a new folder (``extra`` ends its command, e.g. ``--devices 2``), with
        the folder's size and the command that deletes it. None when it keeps nothing.
        ``save_every`` is named as it was given (:func:`~segkit.config.named`: ``--save-every
        3`` or ``save_every=3``), or, for a ``report`` file read by users of both (compare's
        notes), by the setting's name (``save_every 3``)."""
        kept = self.kept()
        if not kept:
            return None
        setting = f"save_every {save_every}" if report else named("save_every", save_every)
        every = (
            f"{setting} writes it every {save_every} epochs and the run stopped before the first"
            if save_every > 1
            else "the run stopped before it was first written"
        )
        new = self.restart_elsewhere(asked)[0]
        command = (
            self.restart_command(asked, into=new) + extra
            if report
            else self.restart_call(asked, into=new, extra=extra)
        )
        why = (
            f"{self.path} keeps {' and '.join(kept)} but no training state "
            f"({self.last.name}: {every}), so it cannot be resumed"
        )
        restart = (
            f"{self.path} ({self.size_text()}) can be deleted if its best.pt is not wanted "
            f"(rm -r {self.path}); the run starts again in a new folder, {new}: start it "
            f"again with {command}"
        )
        return why, restart

    def without_last(self, asked: dict[str, Any] | None, *, report: bool = False) -> str:
        """What to do when this folder's ``last.pt`` is there but cannot be read (damaged,
        empty, cut short by a copy): copy it again, or start the run again in a new folder
        (this one keeps ``best.pt`` and ``metrics.csv``), the command named (and, for a
        caller in Python, the ``segkit.train`` call first; a ``report`` file's words name
        the command alone). ``asked``: the settings ``config.json`` records (None without a
        readable one)."""
        copy = "The run cannot be resumed from it: if the run folder was copied, copy last.pt again"
        if asked is None:
            return f"{copy}; else start the run again with the command that started it"
        new = self.restart_elsewhere(asked)[0]
        command = (
            self.restart_command(asked, into=new) if report else self.restart_call(asked, into=new)
        )
        kept = self.kept()
        keeps = f"{self.path} keeps {' and '.join(kept)}; " if kept else ""
        return f"{copy}; else {keeps}start the run again in a new folder, {new}, with {command}"

    def lock(self) -> None:
        """Hold the folder for this process (an exclusive ``flock`` on it) until
        :meth:`release` or the process ends, however it ends: another process's
        ``--resume`` of it is refused while this one trains (two writers would interleave
        their checkpoints), and leftovers of killed writers can be cleared safely.
        Taking it again in the same process is a no-op.

        Raises:
            ConfigError: another live process holds it; the message says which folder.
        """
        key = str(self.path.resolve())
        if key in _LOCKS or fcntl is None:  # no flock (Windows): unguarded
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"{self.path}: another segkit process is training in this run folder (or "
                "resuming it); wait for it to end or stop it, then resume"
            ) from None
        _LOCKS[key] = fd

    def release(self) -> None:
        """Let go of :meth:`lock` (the end of a run)."""
        fd = _LOCKS.pop(str(self.path.resolve()), None)
        if fd is not None:
            os.close(fd)

    def in_use(self) -> bool:
        """Whether a live process holds the folder (:meth:`lock`): a run trains (or
        resumes) there now. Probed with a shared lock taken and let go at once; a
        ``--resume`` of this folder starting in that instant would be refused as if the
        folder were in use (it says so; run it again). False where ``flock`` is missing."""
        if str(self.path.resolve()) in _LOCKS:
            return True
        if fcntl is None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing lets go of the probe's lock
        return False

    def write_stopped(self, stopped_by: str, when: str, reason: str) -> None:
        """``stopped.json``: a run that ends without finishing says what ended it
        (:data:`UNFINISHED_BY`: ``interrupted``, Ctrl-C or SIGTERM; ``failed``, an error),
        ``when`` (``during epoch 4``...) and ``reason`` (the error's type and first line).

        Raises:
            ValueError: ``stopped_by`` is not one of :data:`UNFINISHED_BY`.
        """
        if stopped_by not in UNFINISHED_BY:
            raise ValueError(f"stopped_by {stopped_by!r}: expected one of {UNFINISHED_BY}")
        _write_record(self.stopped, {"stopped_by": stopped_by, "when": when, "reason": reason})

    def read_stopped(self) -> dict[str, Any] | None:
        """What ``stopped.json`` records (:meth:`write_stopped`), or None without a
        readable one (a run still training, killed outright, or of an older segkit)."""
        try:
            data = json.loads(self.stopped.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_extending(self, epochs: int, max_time: str | None) -> None:
        """``extending.json``: this finished run is about to be resumed to ``epochs`` and
        ``max_time``. Written (atomically) before the resume starts; :meth:`write_summary`
        removes it when the extension ends normally (all epochs, or stopped by its limit),
        so a run that still has it was killed during the extension."""
        _write_record(self.extending, {"epochs": epochs, "max_time": max_time})

    def read_extending(self) -> dict[str, Any] | None:
        """What ``extending.json`` records (:meth:`write_extending`), or None without one.
        A file there that does not read (cut short) is still an extension not finished:
        ``{}``."""
        try:
            data = json.loads(self.extending.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remove_temporaries(self) -> list[Path]:
        """Remove what writers killed mid-write left here (temporary files; the targets
        are intact). Call it holding :meth:`lock`."""
        return remove_temporaries(self.path)

    # ------------------------------------------------------------------ writing

    def write_config(self, config: RunConfig, resolved: dict[str, Any]) -> None:
        """``config.json``: the settings as asked, and under ``resolved`` what the runtime
        made of them. ``segkit run --config`` reads it back (``resolved`` is ignored)."""
        data = {**config.to_dict(), "resolved": resolved}
        with atomic_open(self.config) as f:
            f.write(json.dumps(data, indent=2) + "\n")

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one epoch's row to ``metrics.csv`` (header written with the first row).
        The file is rewritten whole and renamed into place: a kill leaves no partial row."""
        _write_rows(self.metrics, [*_read_rows(self.metrics), row])

    def rewrite_metrics(self, history: Sequence[dict[str, Any]]) -> list[int]:
        """Cut ``metrics.csv`` back to a checkpoint's history: the rows of epochs after it
        are dropped; those up to it are ``history``'s (``last.pt`` is the record: a row
        edited or damaged by hand is written again as the run had it), with the file's
        checkpoint and wall seconds (the checkpoint's copy of its own epoch's row was
        taken before they were known), which ``history``'s rows take too.

        Returns:
            The epochs whose rows in the file differed from ``history`` (besides those
            seconds), for one line that says they were put back.
        """
        if not history:
            self.metrics.unlink(missing_ok=True)
            return []
        on_disk: dict[int, dict[str, str]] = {}
        for row in _read_rows(self.metrics):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                on_disk[int(float(row["epoch"]))] = row
        differed = []
        for row in history:
            kept = on_disk.get(int(row["epoch"]))
            if kept is not None and _cells(kept) != _cells(row):
                differed.append(int(row["epoch"]))
            for key in _FILLED_AFTER_CHECKPOINT:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    row[key] = float(kept[key])  # type: ignore[index]
        _write_rows(self.metrics, history)
        return differed

    def write_bad_samples(self, bad: Sequence[tuple[str, Any, str]]) -> None:
        """List the samples ``--skip-bad-samples`` left out: split, id and the reason. The
        header names the setting (``skip_bad_samples``), however the run was started: a
        file of the run folder reads the same for a run of ``segkit run`` or of Python."""
        with atomic_open(self.bad_samples) as f:
            f.write(f"# {len(bad)} samples left out by skip_bad_samples\n")
            for split, sample, reason in bad:
                f.write(f"{split}\t{sample.id}\t{reason}\n")

    def checkpoint_files(
        self, state: dict[str, Any], *, last: bool, best: bool
    ) -> list[tuple[dict[str, Any], Path]]:
        """What to write after an epoch, in order: ``best.pt`` (the weights of ``state``)
        when the epoch is the best so far, then ``last.pt`` (all of ``state``) when due.
        In this order a ``last.pt`` whose best epoch is its own epoch always has that
        ``best.pt`` beside it."""
        files = []
        if best:
            files.append((ckpt_io.weights_state(state), self.best))
        if last:
            files.append((state, self.last))
        return files

    def repair_best(self, state: dict[str, Any]) -> None:
        """On resume: where ``last.pt`` is the best epoch but ``best.pt`` is missing or
        holds another epoch (deleted, or a run of an older segkit killed between writing
        ``last.pt`` and linking ``best.pt`` to it), write ``best.pt`` from ``state``."""
        if state["best_epoch"] != state["epoch"]:
            return
        try:
            if ckpt_io.load(self.best)["epoch"] == state["epoch"]:
                return
        except CheckpointError:
            pass
        ckpt_io.save_atomic(ckpt_io.weights_state(state), self.best)

    def write_test_scores(
        self,
        dice: Sequence[float],
        iou: Sequence[float],
        ids: Sequence[str] | None = None,
        *,
        multiclass: bool = False,
    ) -> None:
        """``test_scores.csv``: one row per test image in the test loader's order
        (``index`` from 0), with its sample ``id`` (blank where unknown), ``dice`` and
        ``iou`` (float32 values, written exactly: 9 significant digits). For K classes
        the columns are ``mdice`` and ``miou``: each image's means over the classes in
        its target or prediction (``nan`` for an image whose pixels are all ignored)."""
        with atomic_open(self.test_scores, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["index", "id", *(("mdice", "miou") if multiclass else ("dice", "iou"))]
            )
            for i, (d, u) in enumerate(zip(dice, iou, strict=True)):
                writer.writerow([i, ids[i] if ids is not None else "", f"{d:.9g}", f"{u:.9g}"])

    def write_summary(self, config: RunConfig, result: RunResult, resolved: dict[str, Any]) -> str:
        """``summary.txt`` (the one line the CLI prints) and ``summary.json``, which also
        records the resolved runtime (device, precision, ...). Returns the line."""
        line = summary_line(config, result)
        with atomic_open(self.summary_txt) as f:
            f.write(line + "\n")
        data = {
            "test_dice": result.test["dice"],
            "test_iou": result.test["iou"],
            "test_loss": result.test["loss"],
            # Dice and IoU per image, over the dataset, and as MONAI and smp define them
            # (segkit.metrics.definitions), side by side.
            **(
                {"test_metrics": result.test["definitions"]} if "definitions" in result.test else {}
            ),
            "best_epoch": result.best_epoch,
            "best_valid_dice": result.best_valid_dice,
            "monitor": result.monitor,
            "best_value": result.best_value,
            "stopped_early": result.stopped_early,
            "stop_reason": result.stop_reason,
            "stopped_by": result.stopped_by,
            "cuda_graphs": result.cuda_graphs,
            "epochs_run": result.epochs_run,
            "epoch_seconds": result.epoch_seconds,
            "images_per_second": result.images_per_second,
            "world_size": result.world_size,
            "weights_in_sync": result.weights_in_sync,
            "wall_s": result.wall_s,
            # Where the wall time went (RunClock.breakdown): set-up, training, ... reports.
            "time": result.time,
            **epoch_means(result.history),
            "checkpoint_write_s": result.checkpoint_write_s,
            "checkpoint_writes": result.checkpoint_writes,
            "peak_gpu_memory_mb": result.peak_gpu_memory_mb,
            **{k: resolved[k] for k in _SUMMARY_RUNTIME if k in resolved},
            # --eval-size: whether the test scores are at native resolution, and how
            **({"evaluation": resolved["evaluation"]} if "evaluation" in resolved else {}),
            # What the data check warned of before training (EXIF tags; K classes: below).
            **({"data_warnings": list(result.data_warnings)} if result.data_warnings else {}),
            **class_summary(result),
        }
        with atomic_open(self.summary_json) as f:
            f.write(json.dumps(data, indent=2) + "\n")
        self.extending.unlink(missing_ok=True)  # an extension (if one) ended normally
        return line


class RunClock:
    """Where a run's wall time goes. The run marks the end of each of its parts in turn
    (``setup``, ``epochs``, ``test``, ``reports``); :meth:`breakdown` splits the epochs'
    part further with their ``metrics.csv`` rows. A resumed run counts from its resume."""

    #: The parts of :meth:`breakdown`, in order, and what the time line calls them.
    PARTS = {
        "setup_s": "set-up",
        "train_s": "training",
        "valid_s": "validation",
        "checkpoint_s": "checkpoints",
        "between_epochs_s": "between epochs",
        "test_s": "test",
        "reports_s": "reports",
    }

    def __init__(self, started: float) -> None:
        self.started = started
        self.parts: dict[str, float] = {}
        self._last = started

    def mark(self, part: str) -> None:
        """``part`` ended now: it took the seconds since the previous mark (or the start)."""
        now = time.perf_counter()
        self.parts[part] = self.parts.get(part, 0.0) + now - self._last
        self._last = now

    def breakdown(self, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Seconds of each part and of the whole run (``wall_s``, up to the last mark), the
        parts adding up to it: ``setup_s`` (building the data, model, loaders and step, the
        data checks, the run folder), ``train_s``, ``valid_s`` and ``checkpoint_s`` (the
        training loop blocked by checkpointing) summed over ``rows``, this process's
        epochs; ``between_epochs_s``, the rest of the epochs' loop (logging, the ranks'
        agreement, waiting for the last background write); ``test_s`` (loading
        ``best.pt``, the test pass, ``test_scores.csv``) and ``reports_s`` (the figures and
        the summary)."""

        def total(key: str) -> float:
            return sum(float(r[key]) for r in rows if key in r and r[key] == r[key])  # not NaN

        epochs = self.parts.get("epochs", 0.0)
        train, valid, ckpt = total("epoch_seconds"), total("valid_s"), total("checkpoint_s")
        out = {
            "setup_s": self.parts.get("setup", 0.0),
            "train_s": train,
            "valid_s": valid,
            "checkpoint_s": ckpt,
            "between_epochs_s": max(0.0, epochs - train - valid - ckpt),
            "test_s": self.parts.get("test", 0.0),
            "reports_s": self.parts.get("reports", 0.0),
        }
        out = {k: round(v, 3) for k, v in out.items()}
        out["wall_s"] = round(self._last - self.started, 3)
        return out


def time_line(breakdown: dict[str, float]) -> str:
    """One line for the end of a run: the wall time, its parts (those under 0.05 s left
    out) and the wall over the training, e.g. ``segkit: 32.7 s in all: set-up 3.5 s,
    training 22.7 s, ..., reports 1.6 s; the wall is 1.44x the training``."""
    wall = breakdown.get("wall_s", math.nan)
    parts = [
        f"{label} {breakdown[key]:.1f} s"
        for key, label in RunClock.PARTS.items()
        if breakdown.get(key, 0.0) >= 0.05
    ]
    train = breakdown.get("train_s", 0.0)
    ratio = f"; the wall is {wall / train:.2f}x the training" if train > 0 else ""
    return f"segkit: {wall:.1f} s in all: {', '.join(parts)}{ratio}"


def timing(history: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """Mean seconds per epoch and images per second, leaving out the first epoch (worker
    start, cudnn autotune and compilation) when there are others."""
    timed = list(history[1:] if len(history) > 1 else history)
    seconds = sum(r["epoch_seconds"] for r in timed)
    if not timed or seconds <= 0:
        return math.nan, math.nan
    return seconds / len(timed), sum(r["train_images"] for r in timed) / seconds


#: metrics.csv's seconds of an epoch -> their mean's key in summary.json.
_EPOCH_TIMES = {
    "epoch_seconds": "mean_train_s",
    "valid_s": "mean_valid_s",
    "checkpoint_s": "mean_checkpoint_s",
    "epoch_wall_s": "mean_epoch_wall_s",
}


def epoch_means(history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean training, validation, checkpoint and wall seconds per epoch, over every epoch
    that recorded them (rows written by an older segkit lack all but the first)."""
    means = {}
    for key, name in _EPOCH_TIMES.items():
        values = [float(r[key]) for r in history if key in r and r[key] == r[key]]
        means[name] = sum(values) / len(values) if values else math.nan
    return means


def class_summary(result: RunResult) -> dict[str, Any]:
    """What ``summary.json`` adds for a K-class run (nothing for binary): the classes,
    test mIoU and mDice (over the dataset, as ``test_iou``/``test_dice``, and over images),
    pixel accuracy, each class's IoU, Dice and pixels, the confusion matrix (rows:
    true class, columns: predicted), the ignored pixels of the truth (``test_ignored_pixels``,
    and their share of its pixels, ``test_ignored_share``: left out of every score), and
    the data check's warnings about the classes
    (``data_warnings``: a class with no pixel in a split, or too rare; one line each)."""
    task = result.task
    if task is None or not task.multiclass:
        return {}

    test = result.test
    return {
        "classes": list(task.classes),
        "test_miou": test["miou"],
        "test_mdice": test["mdice"],
        "test_miou_images": test["miou_images"],
        "test_mdice_images": test["mdice_images"],
        "test_pixel_acc": test["pixel_acc"],
        "test_per_class": per_class_rows(task, test),
        "test_confusion": test["confusion"],
        **_ignored(test),
        "data_warnings": list(result.data_warnings),
    }


def _ignored(test: dict[str, Any]) -> dict[str, Any]:
    """``test_ignored_pixels`` and ``test_ignored_share`` (of the truth's pixels, the
    scored and the ignored), where the test meter counted them."""
    ignored = test.get("ignored_pixels")
    if ignored is None:
        return {}
    total = ignored + test.get("pixels", 0)
    return {
        "test_ignored_pixels": int(ignored),
        "test_ignored_share": ignored / total if total else 0.0,
    }


def summary_line(config: RunConfig, result: RunResult) -> str:
    stopped = ""
    if result.stopped_early:
        # summary.txt: the setting's name, however the run was started (a file)
        by = " by max_time" if result.stopped_by == "max_time" else " early"
        stopped = f"; stopped{by} after epoch {result.epochs_run}"
    if result.task is not None and result.task.multiclass:
        t = result.test
        scores = (
            f"test mIoU {t['miou']:.4f}  test mDice {t['mdice']:.4f}  pixel acc "
            f"{t['pixel_acc']:.4f}  (best epoch {result.best_epoch}, valid "
            f"{_monitor_name(result.monitor)} {result.best_value:.4f}{stopped})  "
        )
    else:
        # A defect set's best epoch is chosen by the pooled valid Dice: that too.
        by = f" by valid dice_dataset {result.best_value:.4f}"
        by = by if result.monitor == "valid_dice_dataset" else ""
        scores = (
            f"test dice {result.test['dice']:.4f}  test iou {result.test['iou']:.4f}  "
            f"(best epoch {result.best_epoch}{by}, valid dice {result.best_valid_dice:.4f}"
            f"{stopped})  "
        )
    return (
        scores + f"{result.epoch_seconds:.2f} s/epoch  {result.images_per_second:.1f} images/s  "
        f"model {config.model}  loader {config.loader}  run {result.run_dir}"
    )


def _monitor_name(monitor: str) -> str:
    """``valid_miou`` -> ``mIoU`` for the summary line."""
    return {
        "valid_miou": "mIoU",
        "valid_iou": "mIoU",
        "valid_mdice": "mDice",
        "valid_dice": "mDice",
    }.get(monitor, monitor.removeprefix("valid_"))


def _read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (none if it does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _cell(value: Any) -> str:
    """A metrics value as ``metrics.csv`` writes it."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cells(row: dict[str, Any]) -> dict[str, str]:
    """A metrics row as the file has it, less the seconds filled after its checkpoint
    and blank cells (a column an older row lacks)."""
    return {
        k: _cell(v) for k, v in row.items() if k not in _FILLED_AFTER_CHECKPOINT and _cell(v) != ""
    }


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` as a CSV file, atomically. The columns are the last row's, then any
    other column of the earlier rows (a run of an older segkit, resumed), blank where a
    row has none."""
    columns = list(rows[-1])
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def _claimed(path: Path) -> bool:
    """Make the folder ``path``: True, or False where it exists (the atomic ``mkdir``
    that gives runs started at the same moment one folder each)."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    return True


def _write_record(path: Path, data: dict[str, Any]) -> None:
    """``data`` and the local time it was written (``time``) as ``path``'s JSON, atomically
    (``stopped.json``, ``extending.json``)."""
    data = {**data, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_open(path) as f:
        f.write(json.dumps(data, indent=2) + "\n")
