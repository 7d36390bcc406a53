"""The training engine: one flat run, top to bottom.

``train(config)`` resolves the runtime and builds every part through :mod:`segkit.build`,
trains with Adam and a learning-rate schedule (by default the lab's per-epoch
exponential decay; or cosine, with optional warm-up), validates each epoch, keeps the
best weights by the monitored metric (``--monitor``, validation Dice by default; with
``--patience`` it stops early, :mod:`segkit.training.early_stopping`), evaluates them on the test
split and writes the run folder (:mod:`segkit.training.run_folder`).

Read it from :func:`_run` down: the epoch loop is there, and :class:`Run` owns the run's
state (configuration, runtime, built parts and training step, run folder, checkpoint
writer and snapshot, early stopping, history, TensorBoard log, printer), one method per
stage. The loops themselves, and the training step, are in :mod:`segkit.training.loops`.

Checkpoints stay off the training path on an accelerator: after an epoch the engine
copies the state's tensors to the CPU (:class:`~segkit.training.checkpoint.Snapshot`) and a thread
writes them (:class:`~segkit.training.checkpoint.BackgroundWriter`) while the next epoch trains.
One write is in flight at most; the engine waits for it before the next snapshot, at the
end of the run and on any error, where a failed write is raised. Training on the CPU
writes in the loop instead (:func:`_write_in_background` says why). Each epoch records
its training, validation and checkpoint seconds (the last: what the training loop spent
on checkpointing, i.e. the snapshot and any wait for the previous write, or the write).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from segkit import build
from segkit.config import (
    PYTHON,
    RunConfig,
    checked_keywords,
    given,
    named,
    unknown_keywords,
    with_settings,
)
from segkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MainGuardError,
    RunInterrupted,
    UnknownSettingError,
    described,
    interrupted_setting_up,
    plural,
)
from segkit.metrics.definitions import detection_line, predicts_nothing, scores_from_meter
from segkit.recipes import RandomCrop, Recipe
from segkit.registry import default_registry
from segkit.reports import figures as report
from segkit.reports import tb_log
from segkit.system.files import atomic_path, check_file_size, check_writable, is_temporary
from segkit.system.main_guard import exit_if_reimporting_main
from segkit.system.signals import signals_held
from segkit.system.threads import note as threads_note
from segkit.system.workers import recorded_workers
from segkit.training import checkpoint as ckpt_io
from segkit.training import distributed, progress, reproduce
from segkit.training import ema as ema_mod
from segkit.training.early_stopping import EarlyStopping
from segkit.training.loops import evaluate, train_one_epoch
from segkit.training.profiling import ProfiledLoader
from segkit.training.run_folder import RunClock, RunFolder, RunResult, time_line, timing

__all__ = ["RunResult", "resume", "train"]


@checked_keywords(
    "segkit.train",
    RunConfig,
    listed="it takes config, quiet, rerun_of and the RunConfig fields, which help(segkit.RunConfig)"
    " lists",
)
def train(
    config: RunConfig | None = None,
    *,
    quiet: bool = False,
    rerun_of: str | Path | None = None,
    **settings: Any,
) -> RunResult:
    """Train, validate, test and report into a new run folder.

    The settings are a :class:`~segkit.config.RunConfig` or its fields as keywords, which
    replace the config's where both are given::

        result = segkit.train(data="pets", image_size=64, epochs=2)
        result = segkit.train(config, epochs=20, name="longer")

    Each call makes a new run folder, ``<out>/<name>``: a taken name gets ``-2``, ``-3``...
    (said on the first line), so running a cell again keeps the first run's record.

    Args:
        config: The run configuration (default: every field's default).
        quiet: Print nothing (the CLI then prints the summary line itself).
        rerun_of: A run folder's ``config.json`` (or the folder) that ``config`` was read
            from: the run compares what it resolves to with what that run recorded and
            says what differs before its first epoch (the versions, threads and device
            that decide the numbers in a note; other data in a warning), as
            ``segkit run --config RUN/config.json`` does.
        **settings: RunConfig fields (``epochs=2``), over ``config``'s.

    Returns:
        A :class:`~segkit.training.run_folder.RunResult`: the run folder, ``test`` (the
        best checkpoint's test scores, ``result.test["dice"]``, with the ``definitions``
        dict and, for K classes, the ``confusion`` matrix), the history and timings.

    Raises:
        SegkitError: bad configuration, data or checkpoint (a subclass says which).
        RunInterrupted: Ctrl-C; the message says how to resume, ``run_dir`` is the folder.
        MainGuardError: loader worker processes re-ran a script without the main guard.
        UnknownSettingError: a keyword ``train`` does not take (no RunConfig field has
            it), with its close match.
    """
    config = with_settings("segkit.train", config, settings)
    exit_if_reimporting_main()
    try:
        return _run(config, None, None, quiet, rerun_of=_recorded_run(rerun_of))
    except MainGuardError as e:  # the script's own lines and this one are all it needs
        raise e.with_traceback(None) from None


#: The settings ``--resume`` may change besides ``--epochs`` and ``--max-time``: where the
#: data is, the machine and how the run is watched; none changes what is trained (the
#: model, loss, recipe, data samples, optimizer and schedule, batches, seed). A new
#: ``--precision`` (or a device whose ``auto`` resolves differently) changes the numerics
#: of the epochs from here: one line says so.
CHANGEABLE_ON_RESUME = (
    "data",
    "device",
    "precision",
    "num_workers",
    "threads",
    "channels_last",
    "compile",
    "cuda_graphs",
    "save_every",
    "keep_last",
    "grid_images",
    "profile",
    "log_every",
    "log",
    "log_images_every",
)


@checked_keywords("segkit.resume")
def resume(
    run_dir: Path | str,
    *,
    epochs: int | None = None,
    max_time: str | None = None,
    quiet: bool = False,
    settings: dict[str, Any] | None = None,
) -> RunResult:
    """Continue a run from its ``last.pt``: model, optimizer, GradScaler, RNG
    states, best score and history are restored (the learning-rate schedule is positioned
    from the epochs done), and training goes on at the epoch after the one ``last.pt``
    holds (loaders are positioned by ``set_epoch``, so the epoch sees the same batches it
    would have). With ``--save-every K`` that can be up to K-1 epochs before the run
    stopped: those are trained again. ``epochs`` extends the run; by default it keeps its
    own. The patience counter of ``--patience`` goes on where it was. A run that stopped
    early is finished: resumed without ``epochs`` it trains nothing and tests its best
    checkpoint again; with ``epochs`` it trains on, its counter kept (so the next
    validation without an improvement stops it again). ``--max-time`` counts from this
    process's start; ``max_time`` replaces the run's. ``epochs`` below the epochs
    ``last.pt`` holds is refused; equal to them, the run trains nothing and finishes now
    (tests its ``best.pt`` and writes the reports).

    ``settings``: new values of :data:`CHANGEABLE_ON_RESUME` (a moved ``data`` folder must
    hold the same samples: the split sizes and ids are checked against the checkpoint's).

    Raises:
        ConfigError: another process trains in ``run_dir`` (or resumes it); ``epochs``
            below the epochs done; a setting that changes what is trained; a bad value
            (named as given: ``epochs=3`` in Python, ``--epochs 3`` by ``segkit run``).
        UnknownSettingError: a keyword ``resume`` does not take, or a key of
            ``settings`` no RunConfig field has, with its close match (a ConfigError and
            a TypeError).
        CheckpointError: ``run_dir/last.pt`` is missing or unreadable.
        DataError: a new ``data`` folder holds other samples than the run trained on.
    """
    _check_settings(settings)
    exit_if_reimporting_main()
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise CheckpointError(
            f"{folder.path}: run folder not found. Pass a folder made by a run (in its "
            f"{named('out')}, runs/ by default)"
        )
    # The lock first: a folder in use is refused as in use, whatever its run has written
    # (in its first epoch there is no last.pt yet, and "start it again" would start a
    # duplicate beside it). Rank 0 alone holds it, as it alone writes there.
    main = distributed.from_env().main
    if main:
        folder.lock()
    try:
        _check_resumable(folder, clear=main)
        state = ckpt_io.load(folder.last, map_location="cpu", then=_without_last(folder))
        config = _resumed_config(folder, state, settings, max_time, epochs)
        _check_machine(folder, config, settings)
        _check_data_there(folder, config, settings)
        # --threads auto re-decides from the load now; the count the run started with
        # keeps a seeded resume equal to the unbroken run (sums round by thread count)
        kept = state.get("threads") if config.threads == "auto" else None
        return _run(config, state, folder, quiet, threads=kept)
    except MainGuardError as e:
        folder.release()
        raise e.with_traceback(None) from None
    except KeyboardInterrupt:  # reading last.pt, checking the machine and data: set-up
        folder.release()
        raise _setup_interrupted(None, folder, resumed=True) from None
    except BaseException:
        folder.release()  # the run is over (a finished one let go already)
        raise


def _check_settings(settings: dict[str, Any] | None) -> None:
    """Refuse a key of ``settings`` that no RunConfig field has, or one a resumed run
    may not change (:data:`CHANGEABLE_ON_RESUME`).

    Raises:
        UnknownSettingError: an unknown key, with its close match.
        ConfigError: a setting that changes what is trained.
    """
    names = [f.name for f in fields(RunConfig)]
    unknown = {k: v for k, v in (settings or {}).items() if k not in names}
    if unknown:
        raise UnknownSettingError(
            unknown_keywords(
                "settings=dict",
                unknown,
                names,
                what="setting",
                listed=f"resume may change: epochs, max_time, {', '.join(CHANGEABLE_ON_RESUME)}",
            )
        )
    refused = sorted(set(settings or {}) - set(CHANGEABLE_ON_RESUME))
    if refused:
        raise ConfigError(
            f"resume: {', '.join(refused)} would change what the run trains; a resumed run "
            f"keeps its checkpoint's. It may change only: epochs, max_time, "
            f"{', '.join(CHANGEABLE_ON_RESUME)}"
        )


def _resumed_config(
    folder: RunFolder,
    state: dict[str, Any],
    settings: dict[str, Any] | None,
    max_time: str | None,
    epochs: int | None,
) -> RunConfig:
    """The configuration ``last.pt`` holds, with the new ``settings``, ``max_time`` and
    ``epochs`` (each validated as it is set). More ``epochs`` for a run that stopped early
    clear its stop in ``state``: it trains on, its patience counter kept."""
    config = RunConfig.from_dict(state["config"], source=str(folder.last))
    from segkit.inference.trained import check_plugins_installed

    check_plugins_installed(folder.last, config, state)
    if "num_workers" not in (settings or {}):  # from a bigger machine: this one's default
        config.num_workers = recorded_workers(config.num_workers)
    if settings:
        for key, value in settings.items():
            setattr(config, key, value)
        if "data" in settings:
            config.data_as_typed = None  # as typed now (validate makes data absolute)
        config.validate()
    if max_time is not None:
        config.max_time = max_time
        config.validate()
    if epochs is not None:
        _check_epochs(folder, epochs, state["epoch"])
        config.epochs = epochs
        config.validate()
        stopping = state.get("early_stopping")
        if stopping and stopping.get("stopped"):
            stopping["stopped"] = False  # trains on; the patience counter is kept
    return config


def _check_machine(folder: RunFolder, config: RunConfig, settings: dict[str, Any] | None) -> None:
    """A run that recorded a CUDA device (``--device cuda``), ``--cuda-graphs on`` or
    ``--precision fp16`` (which need one too), resumed where it has no such GPU, or with
    ``--device cpu``: one error naming what the checkpoint records and the whole resume
    command that goes on here on the CPU (instead of one refusal per setting, each naming a
    flag that was never typed).

    Raises:
        ConfigError: naming the run folder, the recorded settings and the command.
    """
    given_now = settings or {}
    changes: dict[str, Any] = {}
    device = str(config.device)
    if device.startswith("cuda") and "device" not in given_now:
        index = torch.device(device).index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            changes["device"] = device = "cpu"
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if on_cpu and config.cuda_graphs == "on" and "cuda_graphs" not in given_now:
        changes["cuda_graphs"] = "auto"
    if on_cpu and config.precision == "fp16" and "precision" not in given_now:
        changes["precision"] = "auto"
    if not changes:
        return
    recorded = ", ".join(named(k, getattr(config, k), as_typed=True) for k in changes)
    why = (
        "this machine has no CUDA GPU"
        if not torch.cuda.is_available()
        else (f"this machine has no GPU {config.device}" if "device" in changes else "")
    ) or f"{named('device', 'cpu', as_typed=True)} has no GPU"
    typed = {**given_now, **changes}
    if given() == PYTHON:
        command = f"segkit.resume({str(folder.path)!r}, settings={typed!r})"
    else:
        flags = " ".join(named(k, v, as_typed=True) for k, v in typed.items())
        command = f"segkit run --resume {folder.path} {flags}"
    raise ConfigError(
        f"{folder.path}: the run trained with {recorded} ({folder.last} records them) and "
        f"{why}. Resume it on the CPU with: {command} (the epochs from here round "
        "differently from an unbroken run's), or resume it on a machine with the GPU"
    )


def _check_data_there(
    folder: RunFolder, config: RunConfig, settings: dict[str, Any] | None
) -> None:
    """The dataset folder the run recorded has gone (moved, another machine) and no new
    ``data`` was given: one error naming it and the resume command that passes where it
    is now (the dataset plugin's own error suggests ``--data`` without the resume).

    Raises:
        DataError: naming the recorded folder, the run folder and the command.
    """
    if not config.data or "data" in (settings or {}) or Path(config.data).exists():
        return
    typed = config.data_as_typed
    here = Path(typed).expanduser().absolute() if typed else None
    where = str(typed) if here is not None and here.is_dir() else "PATH"  # relative, found here
    if given() == PYTHON:
        command = f"segkit.resume({str(folder.path)!r}, settings={{'data': {where!r}}})"
        command = command.replace("'PATH'", "PATH")
    else:
        command = f"segkit run --resume {folder.path} --data {where}"
    found = f" ({typed!r} from here is {here})" if where != "PATH" else ""
    raise DataError(
        f"{config.data}: data folder not found: {folder.path} trained on it and it has moved "
        f"or gone. Resume with the dataset where it is now{found}: {command} (its splits are "
        "checked to hold the samples the run trained on)"
    )


def _check_epochs(folder: RunFolder, epochs: int, done: int) -> None:
    """Refuse ``--epochs`` below the epochs ``last.pt`` holds: the run would train nothing
    and finish at fewer epochs than it has done (deleting ``last.pt``).

    Raises:
        ConfigError: naming the epochs done and the smallest valid value.
    """
    if epochs < done:
        raise ConfigError(
            f"{named('epochs', epochs)}: {folder.path} has done {done} epochs ({folder.last} "
            f"holds epoch {done}), so it cannot end at {epochs}. Pass "
            f"{named('epochs', done + 1)} or more to train on, {named('epochs', done)} to "
            "finish it now (test best.pt and write the reports), or leave "
            f"{named('epochs')} out to go on to its own"
        )


def _check_resumable(folder: RunFolder, *, clear: bool) -> None:
    """Raise, saying what to do instead, unless ``folder`` has a ``last.pt`` to resume.
    With ``clear`` (the caller holds the folder's lock), a folder without one loses the
    temporary files of the writes a kill interrupted first (the next run may take the
    folder: :meth:`RunFolder.create`).

    Raises:
        CheckpointError: no ``last.pt``: the finished run deleted it (no ``--keep-last``),
            or the run stopped before its first checkpoint.
    """
    if folder.last.exists():
        return
    asked = _asked(folder)
    if folder.summary_json.exists() and asked is not None:
        gone = "deleted its last.pt" if asked.get("keep_last") is False else "has no last.pt"
        new = folder.restart_elsewhere(asked)[0]
        command = folder.restart_call(asked, into=new, more={"epochs": "N", "keep_last": True})
        raise CheckpointError(
            f"{folder.path}: the run finished and {gone} (a finished run keeps it only "
            "with --keep-last, keep_last=True in a RunConfig), so it cannot be resumed or "
            "extended; its best.pt still evaluates and predicts. To train longer, start a "
            f"new run from epoch 1 (in {new}; {named('keep_last', True)} to extend it "
            f"later): {command}"
        )
    entries = [p.name for p in folder.path.iterdir()]
    killed_writes = [n for n in entries if is_temporary(n)]
    gone = ""
    # A run folder's leftovers only: a folder that is no run's is left as it is.
    if clear and killed_writes and (asked is not None or len(killed_writes) == len(entries)):
        folder.remove_temporaries()
        if asked is None:  # killed while writing config.json: nothing else in it
            folder.release()
            folder.path.rmdir()
            gone = " (it held only the temporary file of a killed write, and is removed)"
    if asked is not None:
        save_every = asked.get("save_every")
        every = save_every if isinstance(save_every, int) else 1
        kept = folder.unresumable(asked, save_every=every)
        if kept is not None:  # best.pt or metrics rows: a record, which a restart does not take
            raise CheckpointError(f"{folder.last}: checkpoint not found: {kept[0]}. {kept[1]}")
    again = folder.restart_call(asked) if asked is not None else "the command that started it"
    raise CheckpointError(
        f"{folder.last}: checkpoint not found: the run stopped before its first checkpoint "
        f"(or this is not a run folder){gone}, so there is nothing to resume; start it "
        f"again with {again}"
    )


def _without_last(folder: RunFolder) -> str:
    """What to do when ``folder``'s ``last.pt`` is there but cannot be read
    (:meth:`RunFolder.without_last`)."""
    return folder.without_last(_asked(folder))


def _asked(folder: RunFolder) -> dict[str, Any] | None:
    """The settings ``config.json`` records, or None without a readable one."""
    try:
        asked = json.loads(folder.config.read_text())
    except (OSError, ValueError):
        return None
    return asked if isinstance(asked, dict) else None


def _run(
    config: RunConfig,
    state: dict[str, Any] | None,
    folder: RunFolder | None,
    quiet: bool,
    threads: int | None = None,
    rerun_of: tuple[str, dict[str, Any]] | None = None,
) -> RunResult:
    """The run, top to bottom: set it up, train the epochs (rank 0 validates, checkpoints
    and logs each), test the best weights and report. ``threads``: the CPU threads a
    resumed ``--threads auto`` run started with (None: resolve ``config.threads``);
    ``rerun_of``: the ``config.json`` a rerun was read from and its ``resolved`` record."""
    try:
        run = Run(config, quiet, threads)
        run.rerun_of = rerun_of
    except KeyboardInterrupt:  # resolving the runtime, joining a torchrun job
        raise _setup_interrupted(config, folder, resumed=state is not None) from None
    with run.end_recorded():
        with run.no_empty_folder_left():
            with run.setup_explained():
                run.setup(state, folder)
            run.clock.mark("setup")
            with run.failures_explained():
                _train_epochs(run)
                run.wait_for_writes()  # the last epoch's write: the test reads best.pt
            run.clock.mark("epochs")
        return run.finish()


def _train_epochs(run: Run) -> None:
    """Train the epochs from ``run.start`` to ``run.end`` (rank 0 validates, checkpoints
    and logs each), or until the run stops early."""
    for epoch in range(run.start, run.end + 1):
        run.epoch = epoch
        trained = run.train_epoch(epoch)
        if run.dist.main:
            run.end_epoch(trained)
        run.recorded = epoch
        distributed.barrier(run.dist)
        if run.may_stop_early() and run.stops_early():
            break


@dataclass
class EpochTrained:
    """What an epoch's training gave: its metrics (:func:`train_one_epoch`'s, with the
    learning rate of its first step), its training seconds (the device synchronized) and
    when it started (``perf_counter``)."""

    epoch: int
    metrics: dict[str, float]
    seconds: float
    started: float


#: A row's validation values in an epoch that ``--validate-every`` skips.
_NOT_VALIDATED = {"loss": math.nan, "dice": math.nan, "iou": math.nan}


class Run:
    """One training run's state, in one place: its configuration and runtime, the built
    parts (:class:`segkit.build.Training`) and the training step, the run folder (rank
    0), the checkpoint writer and snapshot, the early stopping, the history of metrics
    rows, the TensorBoard log and the printer.

    :func:`_run` drives it; each method is one stage of an epoch or of the run. Rank 0
    alone has a run folder, a writer and a log (``None`` elsewhere), and prints.
    """

    def __init__(self, config: RunConfig, quiet: bool, threads: int | None = None) -> None:
        """Resolve the runtime and join the torchrun job (the process group is up);
        ``threads`` overrides ``config.threads`` (a resume keeps its count)."""
        self.started = time.perf_counter()
        self.clock = RunClock(self.started)
        self.dist = distributed.from_env()
        self.quiet = quiet
        self.say = _printer(quiet or not self.dist.main)  # one voice: rank 0 reports
        self.warn = _printer(quiet or not self.dist.main, sys.stderr)  # warnings: stderr
        self.runtime = build.resolve_runtime(config, self.dist, threads=threads)
        self.kept_threads = threads is not None
        tb_log.require(config)
        distributed.init(self.dist, self.runtime.device)
        self.config = config
        self.folder: RunFolder | None = None
        self.made_folder = False  # rank 0 made self.folder (not a resumed run's)
        self.log: tb_log.TensorBoardLog | None = None  # --log tensorboard: rank 0 writes
        self.writer: ckpt_io.BackgroundWriter | None = None  # rank 0 alone writes checkpoints
        self.snapshot = ckpt_io.Snapshot()
        self.resolved: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.start = self.end = self.epoch = 1
        self.recorded = 0  # the last epoch end_epoch finished (its row written)
        self.splits: dict[str, Any] | None = None  # each split's size and ids' digest
        #: Each split's images' fingerprints, taken in the background (rank 0: evaluate finds
        #: training images by them)
        self.fingerprints: ckpt_io.Fingerprinting | None = None
        #: A resumed run's last.pt fingerprints, until its images are checked against them
        self.resumed_prints: dict[str, Any] | None = None
        self.time_stop: str | None = None  # why --max-time stops the run after this epoch
        self.finishing = False  # the epochs are over: testing best.pt, writing the reports
        self.setting_up = True  # before the first epoch: building, restoring, the folder
        self.resumed_folder: RunFolder | None = None  # a resumed run's (set by setup)
        #: A rerun's config.json and its ``resolved`` record (compared at set-up)
        self.rerun_of: tuple[str, dict[str, Any]] | None = None
        self.rerun_note: str | None = None  # said after the header: what differs

    # ------------------------------------------------------------------------ setup

    def setup(self, state: dict[str, Any] | None, folder: RunFolder | None) -> None:
        """Build every part, restore ``state`` (a resumed run's ``last.pt``), make or
        reopen the run folder (rank 0) and get the epochs ready."""
        self.resumed_folder = folder if state is not None else None
        if self.dist.main:  # a read-only or full --out: one line now, not after the first epoch
            if folder is None:
                check_writable(Path(self.config.out).expanduser(), "--out", create=False)
            else:  # a resume: the run folder (moved, it resumes where it is)
                moved = "move the run folder where it can be written and resume it there"
                check_writable(folder.path, "--resume", create=False, elsewhere=moved)
        # Everything is built before the run folder is made: a bad name or path leaves no trace.
        self.parts = build.build_training(self.config, self.runtime, restoring=state is not None)
        self.config = self.parts.config  # --loss auto and --monitor auto resolved for the dataset
        self.splits = ckpt_io.split_record(self.parts.dataset)
        if state is not None:
            _check_same_samples(self.config, state, self.splits)
        if self.dist.main:
            self.fingerprints = ckpt_io.Fingerprinting(self.parts.dataset)
            if state is not None and isinstance(state.get("fingerprints"), dict):
                self.resumed_prints = state["fingerprints"]
        c = self.config
        self.stopper = EarlyStopping(c.monitor, c.patience, c.min_delta)
        if state is not None:
            self._restore(state)
        if self.dist.main:  # a file-size limit below a checkpoint: one line now, not after an epoch
            out = folder.path if folder else Path(c.out).expanduser()
            images = sum(s["count"] for s in self.splits.values()) if self.splits else 0
            check_file_size(out, "--out", ckpt_io.expected_size(self.parts, images))
            self._open_folder(folder, state)
        self._prepare_epochs(state)

    def _restore(self, state: dict[str, Any]) -> None:
        t = self.parts
        self.start, best, self.history = ckpt_io.restore_training(
            state, t.model, t.optimizer, self.runtime.precision
        )
        _restore_ema(state, t, self.say)
        # A checkpoint of an older segkit has no early_stopping: its monitor is valid Dice
        # (only binary runs are that old).
        self.stopper.load_state_dict(
            state.get("early_stopping") or {"best": best[0], "best_epoch": best[1]}
        )

    def _open_folder(self, folder: RunFolder | None, state: dict[str, Any] | None) -> None:
        """Rank 0: the run folder (new, or the resumed one cut back to its checkpoint),
        the TensorBoard log, ``config.json`` and ``bad_samples.txt``."""
        t, config = self.parts, self.config
        self.made_folder = folder is None or state is None
        before = _asked(folder) if folder is not None and state is not None else None
        self.folder = folder = _prepare_folder(config, folder, state, self.history, self.say)
        if folder.instead_of is not None:
            self.say(f"segkit: {folder.instead_of} exists; this run writes {folder.path}")
        if before is not None:
            self.say_runtime_changes(before.get("resolved") or {})
        distributed.note_run_folder(self.dist, folder.path)
        if config.log == "tensorboard":
            self.log = tb_log.TensorBoardLog(folder.path, config, self.start)
        self.resolved = _resolved(config, self.runtime, t)
        if self.splits is not None:
            self.resolved["splits"] = self.splits
        folder.write_config(config, self.resolved)
        if self.rerun_of is not None:
            source, recorded = self.rerun_of
            self.rerun_note, data_warning = reproduce.rerun_notes(
                source, recorded, self.resolved, config.loader
            )
            if data_warning:
                self.warn(f"segkit: warning: {data_warning}")
        if t.bad_samples:
            folder.write_bad_samples(t.bad_samples)
            self.say(
                f"segkit: left out {len(t.bad_samples)} unreadable samples, listed in "
                f"{folder.bad_samples}"
            )
        for warning in t.data_warnings:  # class coverage, EXIF tags: before any training
            self.warn(f"segkit: warning: {warning}")

    def say_runtime_changes(self, before: dict[str, Any]) -> None:
        """On resume, one line where the device or the precision differs from what the
        run trained with so far (``config.json``'s ``resolved``)."""
        now = self.runtime.record()
        device, precision = before.get("device"), before.get("precision")
        if precision and precision != now.get("precision"):
            self.say(
                f"segkit: note: precision {now.get('precision')} from here; the epochs so far "
                f"trained in {precision} (on {device}): the resumed epochs round differently, "
                "so they will not equal an unbroken run's"
            )
        elif device and device != now.get("device"):
            self.say(f"segkit: resuming on {now.get('device')}; the epochs so far ran on {device}")

    def say_changed_images(self, *, wait: bool) -> None:
        """A resumed run: warn, once, where images changed under the same names since its
        last.pt (the fingerprints it records), as soon as they are taken (``wait``: wait
        for them; else only if they are taken within a second)."""
        taking, recorded = self.fingerprints, self.resumed_prints
        if taking is None or recorded is None or not (wait or taking.done(1.0)):
            return
        self.resumed_prints = None
        changed = taking.changed_since(recorded)
        if changed:
            words = "; ".join(c.words("last.pt recorded them") for c in changed)
            self.warn(
                f"segkit: warning: {self.config.data or '(generated data)'}: {words}: the run "
                "goes on with the images as they are now"
            )

    def _prepare_epochs(self, state: dict[str, Any] | None) -> None:
        """The learning-rate schedule (positioned after the epochs done), the training
        step, the header line, the checkpoint writer, the progress and the epoch range."""
        t, config, runtime = self.parts, self.config, self.runtime
        steps = t.steps_per_epoch
        done = (self.start - 1) * steps
        scheduler = build.build_scheduler(t.optimizer, config, steps, steps_done=done)
        self.step = build.build_step(t, runtime, scheduler, say=self.say)
        self.say(self._header())
        if t.monitor_note:  # --monitor auto on a defect set
            self.say(f"segkit: --monitor auto: best.pt by valid_dice_dataset, as {t.monitor_note}")
        if self.rerun_note:
            self.say(self.rerun_note)
        if self.step.note:  # --cuda-graphs: captured, or why not
            self.say(f"segkit: {self.step.note}")
        self.say_changed_images(wait=False)  # else at the first checkpoint
        if self.dist.main:
            saved = state["epoch"] if state else None
            self.writer = ckpt_io.BackgroundWriter(saved, background=_write_in_background(runtime))
        self.progress = self._progress(resumed=state is not None)
        self.eval = t.eval_context(runtime)
        self.end = config.epochs
        if state is not None and self.start > self.end and not self.stopper.stopped:
            self.say(
                f"segkit: {named('epochs', config.epochs)}: the run has done them all; "
                "nothing to train: testing its best checkpoint and finishing it"
                + (
                    ""
                    if config.keep_last
                    else f" (last.pt is deleted then; {named('keep_last', True)} keeps it)"
                )
            )
        if self.stopper.stopped:  # resumed after an early stop, without --epochs: finished
            self.end = self.start - 1
            self.say(
                f"segkit: the run stopped early after epoch {self.end}: "
                f"{self.stopper.reason()}; testing its best checkpoint again (resume with "
                f"{named('epochs')} to train on)"
            )
        self.epoch = self.start
        self.setting_up = False

    def _header(self) -> str:
        config, t, d = self.config, self.parts, self.dist
        ranks = f" x {plural(d.world, 'process', 'processes')}" if d.enabled else ""
        classes = f", {t.task.describe()}" if t.task.multiclass else ""
        where = self.folder.path if self.folder else "(rank 0 writes)"
        if self.runtime.device.type == "cpu":
            kept = " (as when it started: CPU sums round by thread count)"
            ranks += f", {threads_note(self.runtime.threads)}{kept * self.kept_threads}"
        return (
            f"segkit: {config.model} + {config.loss} + {config.recipe} via {config.loader} on "
            f"{config.resolved_dataset()} ({t.dataset.root}{classes}); device "
            f"{self.runtime.device}{ranks}, precision {self.runtime.precision.name}, "
            f"{plural(config.epochs, 'epoch')}{_crops_note(config, t.recipe)} -> {where}"
        )

    def _progress(self, resumed: bool) -> progress.ProgressSettings:
        config = self.config
        limit = config.max_time_s
        estimate = progress.RunEstimate(
            self.say,
            config.epochs - self.start + 1,
            self.runtime.device.type,
            resumed=resumed,
            max_time=config.max_time,
            time_left=(lambda: limit - (time.perf_counter() - self.started)) if limit else None,
        )
        silent = self.quiet or not self.dist.main
        return progress.ProgressSettings(
            epochs=config.epochs,
            batch_size=config.batch_size * self.dist.world,
            say=_printer(silent),
            estimate=None if silent else estimate,
            log_every=config.log_every,
            quiet=silent,
        )

    # ------------------------------------------------------------------------ an epoch

    def train_epoch(self, epoch: int) -> EpochTrained:
        """Train one epoch (every rank)."""
        started = time.perf_counter()
        loader = self.parts.loaders["train"]
        loader.set_epoch(epoch)
        bar = progress.EpochProgress(self.progress, epoch, len(loader))
        lr = self.parts.optimizer.param_groups[0]["lr"]  # at the epoch's first step
        profiled = None
        if self.config.profile and epoch == self.start and self.dist.main:
            loader = profiled = ProfiledLoader(loader, self.config.profile, self.runtime.device)
        t0 = time.perf_counter()
        metrics = train_one_epoch(self.step, loader, epoch=epoch, progress=bar)
        self.runtime.synchronize()
        seconds = time.perf_counter() - t0
        bar.close(seconds)
        if profiled is not None:
            self._write_profile(profiled, epoch)
        return EpochTrained(epoch, {**metrics, "lr": lr}, seconds, started)

    def _write_profile(self, profiled: ProfiledLoader, epoch: int) -> None:
        """``--profile``: the report of the steps profiled, into the run folder (rank 0).
        A report that cannot be written costs a line, not the run."""
        assert self.folder is not None
        try:
            line = profiled.report(self.folder.path, epoch)
        except Exception as e:  # noqa: BLE001 -- a diagnostic: the training goes on
            line = f"segkit: {named('profile')}: could not write the profile ({described(e)})"
        self.say(line)

    def end_epoch(self, trained: EpochTrained) -> None:
        """Rank 0, after each epoch: validate (when due), update the early stopping (the
        best epoch; ``stopped`` when ``--patience`` runs out before the last epoch),
        decide whether ``--max-time`` allows another epoch, checkpoint (when due, in the
        background), log the epoch's row (``metrics.csv``, TensorBoard) and print its
        line."""
        assert self.folder is not None
        epoch, config = trained.epoch, self.config
        validated = epoch % config.validate_every == 0 or epoch == config.epochs
        self.time_stop = self._time_stop(trained, validated)
        validated = validated or self.time_stop is not None  # the last epoch trained counts
        t0 = time.perf_counter()
        valid = self.validate() if validated else dict(_NOT_VALIDATED)
        valid_s = time.perf_counter() - t0
        row = self._row(trained, valid, valid_s)
        self.history.append(row)
        improved = validated and self._update_stopper(epoch, valid)
        # A Ctrl-C or SIGTERM from here waits for the epoch to be recorded whole: its
        # checkpoint (written now on the CPU), its row and its line, then stops the run
        # "after epoch N" with last.pt and metrics.csv agreeing.
        with signals_held():
            self.checkpoint(trained, row, improved)
            self.folder.append_metrics(row)
            if self.log is not None:
                self._log_epoch(row, validated)
            self.say(self._epoch_line(trained, row, validated, improved))
            self.recorded = epoch  # before a held signal stops the run

    def validate(self) -> dict[str, Any]:
        """The validation metrics of the weights validation evaluates (the EMA's with
        ``--ema``), the device synchronized."""
        valid = evaluate(self.parts.eval_model, self.parts.loaders["valid"], self.eval)
        self.runtime.synchronize()
        return valid

    def _row(self, trained: EpochTrained, valid: dict[str, Any], valid_s: float) -> dict[str, Any]:
        """The epoch's ``metrics.csv`` row (its checkpoint and wall seconds set later)."""
        train = trained.metrics
        return {
            "epoch": trained.epoch,
            "train_loss": train["loss"],
            "train_dice": train["dice"],
            "valid_loss": valid["loss"],
            "valid_dice": valid["dice"],
            "valid_iou": valid["iou"],
            "lr": train["lr"],
            "epoch_seconds": trained.seconds,  # training
            "valid_s": valid_s,
            "checkpoint_s": 0.0,  # set by checkpoint()
            "epoch_wall_s": math.nan,  # set by checkpoint()
            "train_images": int(train["images"]),
            "skipped_steps": train["skipped_nan"] + train["skipped_overflow"],
            **_class_columns(self.parts.task, valid),
            **_monitor_column(self.config.monitor, valid),
        }

    def _update_stopper(self, epoch: int, valid: dict[str, Any]) -> bool:
        """Whether the validated epoch is the best so far; an exhausted ``--patience``
        stops the run unless this was the last epoch anyway."""
        improved = self.stopper.update(valid[self.stopper.key], epoch)
        self.stopper.stopped = self.stopper.should_stop and epoch < self.config.epochs
        return improved

    def _time_stop(self, trained: EpochTrained, validate_now: bool) -> str | None:
        """Why ``--max-time`` stops the run after this epoch, without the limit: ``epoch 5
        would end about 8m02s after the start`` (None: the next epoch is
        expected to end in time, or there is no limit, or no next epoch). Decided before
        this epoch's validation, which then runs even where ``--validate-every`` skips it.

        Expected: the seconds since the run started, this epoch's validation (when due)
        and checkpoint, and the next epoch's training, validation (when due) and
        checkpoint, each as long as the longer of this process's last two (its first
        epoch's training left out once there is another; a resumed run counts from its
        own start)."""
        config, epoch = self.config, trained.epoch
        limit = config.max_time_s
        if limit is None or epoch >= config.epochs:
            return None
        mine = self.own_history()  # earlier epochs
        # Not the process's first epoch once there is another: it pays the warm-up (cudnn's
        # autotuner, the loader's start), which the next epoch does not.
        train = max([trained.seconds] + [r["epoch_seconds"] for r in mine[1:][-1:]])
        validations = [r["valid_s"] for r in mine if not math.isnan(r["valid_loss"])]
        valid = max(validations[-2:], default=0.0)
        checkpoint = max((r["checkpoint_s"] for r in mine[-2:]), default=0.0)
        due = (epoch + 1) % config.validate_every == 0 or epoch + 1 == config.epochs
        now = time.perf_counter() - self.started
        end = now + valid * (validate_now + due) + 2 * checkpoint + train
        if end <= limit:
            return None
        return f"epoch {epoch + 1} would end about {progress.duration(end)} after the start"

    def own_history(self) -> list[dict[str, Any]]:
        """The rows of the epochs this process trained (a resumed run's history also holds
        those before its resume)."""
        return [r for r in self.history if r["epoch"] >= self.start]

    def stopped_by(self) -> str | None:
        """What stops the run after this epoch, before ``--epochs``: ``patience`` (which
        wins when both do), ``max_time``, or None."""
        if self.stopper.stopped:
            return "patience"
        return "max_time" if self.time_stop is not None else None

    def may_stop_early(self) -> bool:
        """Whether the run can stop before ``--epochs`` (``--patience``, ``--max-time``):
        only then do the ranks agree on it after each epoch (a collective)."""
        return self.config.patience is not None or self.config.max_time is not None

    def checkpoint(self, trained: EpochTrained, row: dict[str, Any], improved: bool) -> None:
        """Write ``best.pt`` when the epoch improved and ``last.pt`` when due
        (``--save-every``, the last epoch, an early stop): in the background from a
        snapshot on an accelerator, here on the CPU. Sets the row's checkpoint seconds
        (what the training loop spent: the snapshot and any wait for the previous write,
        or the write) and wall seconds."""
        epoch, config = trained.epoch, self.config
        save_last = epoch % config.save_every == 0 or epoch == config.epochs
        save_last = save_last or self.stopped_by() is not None
        t0 = time.perf_counter()
        state: dict[str, Any] = {}
        files: list[tuple[dict[str, Any], Path]] = []
        if save_last or improved:
            state, files = self._checkpoint_files(epoch, save_last, improved)
        row["checkpoint_s"] = time.perf_counter() - t0
        row["epoch_wall_s"] = time.perf_counter() - trained.started
        assert self.writer is not None
        if files and self.writer.background:
            if save_last:  # the copy of this row in the checkpoint gets the times too
                times = {k: row[k] for k in ("checkpoint_s", "epoch_wall_s")}
                state["history"][-1].update(times)
            self.writer.submit(files, epoch if save_last else None)

    def _checkpoint_files(
        self, epoch: int, save_last: bool, improved: bool
    ) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Path]]]:
        """The state to write and its files, after the previous write is done (a failed
        one is raised here); on the CPU they are written now (the row in them lacks the
        epoch's checkpoint and wall seconds)."""
        assert self.writer is not None and self.folder is not None
        self.writer.wait()
        status = ckpt_io.RunStatus(
            epoch,
            self.best(),
            self.history,
            early_stopping=self.stopper.state_dict(),
            threads=self.runtime.threads,
            plugins=self.resolved.get("plugins"),
        )
        state = ckpt_io.training_state(self.parts, self.runtime.precision, status)
        if self.splits is not None:
            state["splits"] = self.splits  # a resume with another --data checks them
        self.say_changed_images(wait=True)
        recorded = self.fingerprints.result() if self.fingerprints is not None else None
        if recorded is not None:  # evaluate leaves out the images that trained it
            state["fingerprints"] = recorded
        if getattr(self.parts.dataset, "root", None) is not None:  # evaluate tells its own data
            state["data_root"] = str(self.parts.dataset.root)
        if not save_last:
            state = ckpt_io.weights_state(state)
        if self.writer.background:  # the thread writes a copy while training changes the tensors
            state = self.snapshot.take(state)
        files = self.folder.checkpoint_files(state, last=save_last, best=improved)
        if not self.writer.background:
            self.writer.submit(files, epoch if save_last else None)
        return state, files

    def _log_epoch(self, row: dict[str, Any], validated: bool) -> None:
        """The TensorBoard events: the row, and the prediction grid when due."""
        assert self.log is not None
        self.log.epoch(row)
        epoch = row["epoch"]
        if validated and self.log.wants_grid(epoch):
            t = self.parts
            self.log.grid(epoch, t.eval_model, t.loaders["valid"], self.eval, t.dataset)

    def _epoch_line(
        self, trained: EpochTrained, row: dict[str, Any], validated: bool, improved: bool
    ) -> str:
        config, mc, stopper = self.config, self.parts.task.multiclass, self.stopper
        if not validated:
            shown = "(not validated)"
        elif mc:
            shown = f"valid mIoU {row['valid_iou']:.4f}  mDice {row['valid_dice']:.4f}"
        else:
            shown = f"valid dice {row['valid_dice']:.4f}"
        usual = ("valid_miou", "valid_mdice", "valid_iou", "valid_dice") if mc else ("valid_dice",)
        if validated and config.monitor not in usual:
            named_as = config.monitor.replace("_", " ", 1)  # valid dice_dataset, valid iou
            shown += f"  {named_as} {row[f'valid_{stopper.key}']:.4f}"
        stop = f"  early stop: {stopper.reason()}" if stopper.stopped else ""
        if self.time_stop is not None and not stopper.stopped:
            limit = named("max_time", config.max_time, as_typed=True)  # as given: a console line
            stop = f"  time limit: stopping, {self.time_stop}, past {limit}"
        return (
            f"epoch {trained.epoch:>3}/{config.epochs}  loss {row['train_loss']:.4f}  "
            f"train {'mDice' if mc else 'dice'} {row['train_dice']:.4f}  {shown}  "
            f"train {trained.seconds:.1f}s  valid {row['valid_s']:.1f}s  "
            f"checkpoint {row['checkpoint_s']:.2f}s{'  *best' if improved else ''}"
            f"{_step_notes(trained.metrics, self.runtime)}{stop}"
        )

    def stops_early(self) -> bool:
        """Whether the run stops early after this epoch (``--patience``, ``--max-time``):
        rank 0 decided, every rank learns it (a collective, only where
        :meth:`may_stop_early`)."""
        stopped = self.stopped_by() is not None
        if not self.dist.enabled:
            return stopped
        stop = float(stopped and self.dist.main)
        flag = torch.tensor([stop], device=self.runtime.device)
        return bool(distributed.all_reduce_sum(flag, self.dist).item() > 0)

    def best(self) -> tuple[float, int]:
        """(the valid Dice of the best epoch by ``--monitor``, that epoch): what
        checkpoints and the summary call the best; ``(-inf, -1)`` before any validation."""
        stopper = self.stopper
        if stopper.best_epoch < 0:
            return -math.inf, -1
        if stopper.key == "dice":
            return stopper.best, stopper.best_epoch
        row = next(r for r in self.history if r["epoch"] == stopper.best_epoch)
        return row["valid_dice"], stopper.best_epoch

    # ------------------------------------------------------------------------ the run's edges

    @contextlib.contextmanager
    def no_empty_folder_left(self) -> Iterator[None]:
        """Around the setup and the epochs (rank 0): a run that fails before its first
        epoch is recorded removes the folder it made (:meth:`RunFolder.discard`), so a
        failed start leaves no trace and frees its name; so does one whose checkpoint write
        fails in its first epoch before any ``last.pt`` was written (a full disk: its
        ``best.pt`` would fill the restart's disk again). Interrupted there (Ctrl-C,
        SIGTERM), the folder stays for the restart its message gives, which takes it
        again; so does a torchrun job's (the launcher's message names it). A checkpoint
        that could not be written ends with what comes after the fix: the resume, or
        the restart. Either way the folder's lock is let go (the writes are over): in
        this process too, the next run or resume may take it."""
        try:
            yield
        except BaseException as e:
            folder = self.folder
            if folder is None or not self.dist.main:
                raise
            interrupted = isinstance(e, (KeyboardInterrupt, RunInterrupted))
            removed = False
            if self.made_folder and not self.dist.enabled:
                if not (interrupted and folder.config.exists()):
                    # a checkpoint write failed before any last.pt: nothing to resume from
                    failed_write = isinstance(e, ckpt_io.CheckpointWriteError)
                    removed = folder.discard(unresumable=failed_write)
            folder.release()
            if isinstance(e, ckpt_io.CheckpointWriteError):
                step = (
                    f"start the run again with the command that started it (its folder "
                    f"{folder.path} is removed: it held no training state to resume from)"
                    if removed
                    else _next_step(self)
                )
                raise e.then(step) from e.__cause__
            raise

    @contextlib.contextmanager
    def end_recorded(self) -> Iterator[None]:
        """Around the whole run (rank 0): a run that ends without finishing and leaves a
        folder that records it (not a failed start's, :meth:`RunFolder.records_nothing`)
        writes ``stopped.json`` there, saying what ended it (``interrupted`` or
        ``failed``), when, and the error: what ``segkit compare`` shows for it. A write that
        fails (a full disk) leaves the run's own error to be raised."""
        try:
            yield
        except BaseException as e:
            self._record_stop(e)
            raise

    def _record_stop(self, e: BaseException) -> None:
        """Write ``stopped.json`` for the error ``e`` that ended the run, where rank 0
        has a folder that records the run; a failed write is ignored."""
        folder = self.folder
        if folder is None or not self.dist.main or not folder.config.is_file():
            return
        if folder.records_nothing():
            return
        interrupted = isinstance(e, (KeyboardInterrupt, RunInterrupted))
        with contextlib.suppress(OSError):
            folder.write_stopped(
                "interrupted" if interrupted else "failed",
                self.stopped_when(),
                "Ctrl-C or SIGTERM" if interrupted else described(e),
            )

    def stopped_when(self) -> str:
        """When the run stopped, for ``stopped.json``: ``setting up, before any epoch was
        trained`` (a resume's), ``during epoch N``, ``after epoch N``, or ``testing
        best.pt and writing the reports``."""
        if self.finishing:
            return "testing best.pt and writing the reports"
        if self.setting_up:
            return "setting up, before any epoch was trained"
        if self.recorded >= self.epoch:
            return f"after epoch {self.recorded}"
        return f"during epoch {self.epoch}"

    def wait_for_writes(self) -> None:
        if self.writer is not None:
            self.writer.wait()

    @contextlib.contextmanager
    def setup_explained(self) -> Iterator[None]:
        """Around the set-up (building the parts, listing the data, restoring a resumed
        run, making the folder): a Ctrl-C there ends in one line too (:meth:`interrupted`),
        as one during the epochs does (:meth:`failures_explained`)."""
        try:
            yield
        except KeyboardInterrupt:
            raise self.interrupted() from None

    def interrupted(self) -> RunInterrupted:
        """The error of a Ctrl-C now, saying what to do: during the set-up, that nothing
        was trained and how to start again (:func:`_setup_interrupted`); after it, when it
        came and how to resume (:func:`_resume_hint`), with the folder as ``run_dir``.
        Another rank's says no more (rank 0 says it)."""
        if not self.dist.main:
            return RunInterrupted("interrupted")
        if self.setting_up:
            resumed = self.resumed_folder
            folder = resumed or self.folder
            return _setup_interrupted(self.config, folder, resumed=resumed is not None)
        if self.folder is None:
            return RunInterrupted("interrupted")
        return RunInterrupted(
            f"{self.interrupted_when()}; {_resume_hint(self)}", run_dir=self.folder.path
        )

    @contextlib.contextmanager
    def failures_explained(self) -> Iterator[None]:
        """Around the epochs: a write in flight is never left behind unreported nor half
        done, and a bad file, a Ctrl-C or a lost peer end in one line saying what to do."""
        d = self.dist
        try:
            try:
                yield
            except BaseException:
                _drain(self.writer)
                raise
        except DataError as e:
            if self.config.skip_bad_samples:
                raise
            raise DataError(
                f"{e} (or pass {named('skip_bad_samples', True)} to leave unreadable files out)"
            ) from None
        except KeyboardInterrupt:
            raise self.interrupted() from None
        except RuntimeError as e:  # a collective whose peer died or hangs: one line, no traceback
            if not (d.enabled and distributed.is_collective_failure(e)):
                raise
            hint = f" {_resume_hint(self)}" if d.main and self.folder else ""
            raise distributed.lost_contact(d, self.epoch, e, hint) from None

    def interrupted_when(self) -> str:
        """``interrupted during epoch N``, or between epochs ``interrupted after epoch N``
        (its row written, the next one not begun)."""
        if self.recorded >= self.epoch:
            return f"interrupted after epoch {self.recorded}, before epoch {self.recorded + 1}"
        return f"interrupted during epoch {self.epoch}"

    def finish(self) -> RunResult:
        """Test the best weights and report (rank 0); shut the process group down."""
        self.finishing = True
        in_sync = distributed.weights_in_sync(self.parts.model, self.dist)  # every rank takes part
        best = self.best()
        if not self.dist.main:
            distributed.shutdown(self.dist)
            return RunResult(Path(), {}, best[1], best[0], math.nan, math.nan, self.history)
        assert self.folder is not None
        result = self.test_and_report(best, in_sync)
        if self.log is not None:
            self.log.test(result.test, result.epochs_run)
            self.log.close()
        if not self.config.keep_last:  # finished: the reports and best.pt are what is kept
            self.folder.last.unlink(missing_ok=True)
        self.say(time_line(result.time))
        self.say(self.folder.summary_txt.read_text().strip())
        self._say_detection(result.test.get("definitions", {}))
        if result.data_warnings:  # what the test scores above do not show, in brief
            gist = "; ".join(_gist(w, self.parts.dataset.root) for w in result.data_warnings)
            self.warn(f"segkit: warning (data, said before training; summary.json): {gist}")
        self.folder.release()
        distributed.shutdown(self.dist)
        return result

    def _say_detection(self, scores: dict[str, Any]) -> None:
        """A binary run on a test split with empty masks: its image-level result (found,
        missed, false alarms), and a warning where it predicted nothing at all."""
        if self.parts.task.multiclass or not scores.get("empty_truth"):
            return
        self.say(f"segkit: {detection_line(scores)}")
        nothing = predicts_nothing(scores)
        if nothing:
            self.say(f"segkit: warning: {nothing}")

    def test_and_report(self, best: tuple[float, int], in_sync: bool) -> RunResult:
        """Test the best weights, draw the curves and predictions, write the summary."""
        folder, t, runtime = self.folder, self.parts, self.runtime
        assert folder is not None
        if not folder.best.exists():
            raise ConfigError(
                f"{folder.path}: no epoch to evaluate "
                f"({named('epochs', self.config.epochs)} already done?)"
            )
        t.model.load_state_dict(ckpt_io.load(folder.best, map_location=runtime.device)["model"])
        meter = t.task.meter(runtime.device, per_image=True)  # for test_scores.csv and the grid
        test = evaluate(t.model, t.loaders["test"], self.eval, meter=meter)
        dice, iou = meter.per_image_scores()
        test["definitions"] = scores_from_meter(meter, t.task)  # summary.json's test_metrics
        scores = report.ImageScores(dice, iou, _test_ids(t.dataset, len(dice)))
        folder.write_test_scores(
            dice.tolist(), iou.tolist(), scores.ids, multiclass=t.task.multiclass
        )
        self.clock.mark("test")
        result = self._result(test, best, in_sync)
        with atomic_path(folder.curves) as path:
            report.write_curves(
                path, self.history, best_epoch=best[1], multiclass=t.task.multiclass
            )
        with atomic_path(folder.predictions) as path:
            report.write_prediction_grid(
                path, t.model, t.loaders["test"], self.eval, scores, self.config.grid_images
            )
        self.clock.mark("reports")  # the summary's writing is left: a few milliseconds
        result.time = self.clock.breakdown(self.own_history())
        result.wall_s = result.time["wall_s"]
        if runtime.device.type == "cuda":
            result.peak_gpu_memory_mb = round(
                torch.cuda.max_memory_allocated(runtime.device) / 2**20, 1
            )
        folder.write_summary(self.config, result, self.resolved)
        return result

    def _result(self, test: dict[str, Any], best: tuple[float, int], in_sync: bool) -> RunResult:
        assert self.writer is not None and self.folder is not None
        epoch_seconds, ips = timing(self.history)
        stopper, writes = self.stopper, self.writer.write_seconds
        result = RunResult(
            self.folder.path,
            test,
            best[1],
            best[0],
            epoch_seconds,
            ips,
            self.history,
            self.dist.world,
            in_sync,
            checkpoint_writes=len(writes),
            monitor=self.config.monitor,
            best_value=stopper.best,
            stopped_early=self.stopped_by() is not None,
            stop_reason=_stop_reason(stopper, self.time_stop, self.config.max_time),
            stopped_by=self.stopped_by() or "epochs",
            cuda_graphs=self.step.graph_record(),
            epochs_run=self.history[-1]["epoch"] if self.history else 0,
            task=self.parts.task,
            data_warnings=list(self.parts.data_warnings),
        )
        if writes:
            result.checkpoint_write_s = sum(writes) / len(writes)
        return result


def _stop_reason(stopper: EarlyStopping, time_stop: str | None, max_time: str | None) -> str | None:
    """Why the run stopped before ``--epochs`` (None if it did not), for ``summary.json``:
    worded by the setting's name (``max_time 7m30s: epoch 5 would end ...``) however the
    run was started, as every file of a run folder is (compare reads runs of both)."""
    if stopper.stopped:
        return stopper.reason()
    return f"max_time {max_time}: {time_stop}" if time_stop else None


def _restore_ema(state: dict[str, Any], t: build.Training, say: Callable[[str], None]) -> None:
    """Put the checkpoint's EMA back (``--ema``); a checkpoint without one (saved before
    ``--ema`` was on) starts it from the restored weights."""
    if t.ema is None:
        return
    if "ema" in state:
        t.ema.load_state_dict(state["ema"])
    else:
        ema_mod.reset(t.ema, t.model)
        say("segkit: note: last.pt holds no EMA; the EMA starts from its weights")


def _prepare_folder(
    config: RunConfig,
    folder: RunFolder | None,
    state: dict[str, Any] | None,
    history: list[dict[str, Any]],
    say: Callable[[str], None],
) -> RunFolder:
    """A new run folder, or the resumed one with its metrics cut back to the checkpoint."""
    if folder is None or state is None:
        return RunFolder.create(config)
    folder.lock()  # refused while another process trains here
    folder.remove_temporaries()  # of writes a kill interrupted
    folder.stopped.unlink(missing_ok=True)  # what ended it before: it goes on now
    folder.repair_best(state)
    differed = folder.rewrite_metrics(history)  # drop the rows of epochs after the checkpoint
    if differed:
        say(
            f"segkit: note: {folder.metrics} differed from {folder.last} at "
            f"epoch{'s' * (len(differed) > 1)} {', '.join(map(str, differed))} (edited by "
            f"hand?); its rows up to epoch {state['epoch']} are written again from last.pt"
        )
    say(f"segkit: resuming {folder.path} after epoch {state['epoch']} of {config.epochs}")
    return folder


def _check_same_samples(
    config: RunConfig, state: dict[str, Any], splits: dict[str, Any] | None
) -> None:
    """A resumed run's data must hold the samples it trained on: the split sizes and ids
    ``last.pt`` records (a checkpoint of an older segkit records none: not checked).

    Raises:
        DataError: naming the data folder, the split, what the run had and what it has.
    """
    recorded = state.get("splits")
    if not recorded or splits is None or recorded == splits:
        return
    for split, was in recorded.items():
        now = splits.get(split) or {"count": 0, "ids": ""}
        if was == now:
            continue
        differs = (
            f"{now['count']} samples where the run had {was['count']}"
            if now["count"] != was["count"]
            else f"other sample ids than the run's {was['count']}"
        )
        raise DataError(
            f"{config.data or '(generated data)'}: its {split} split has {differs}: it is not "
            "the dataset this run trained on, and a resume must go on with the same samples. "
            f"Pass {named('data')} naming the run's dataset (moved, with the same files), or "
            "start a new run on this one"
        )


def _recorded_run(path: str | Path | None) -> tuple[str, dict[str, Any]] | None:
    """``path`` (a run folder's ``config.json``, or the folder) and the ``resolved`` record
    it holds; None for no path, and for a configuration file that is not a run's (no
    ``resolved``: nothing recorded to compare with)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    try:
        recorded = json.loads(path.read_text()).get("resolved")
    except (OSError, ValueError, AttributeError):  # TOML, YAML: not a run's record
        return None
    return (str(path), recorded) if isinstance(recorded, dict) else None


def _crops_note(config: RunConfig, recipe: Recipe) -> str:
    """The header's words for ``--crops-per-image`` above 1 (what an epoch is) and for crops
    placed on the foreground (``--crop-foreground``, or a recipe file's ``RandomCrop``)."""
    n = config.crops_per_image
    note = f" of {n} crops of each train image" if n > 1 else ""
    placed = max((op.foreground for op in recipe.train if isinstance(op, RandomCrop)), default=0.0)
    if placed:
        note += (
            f", {placed:.0%} centred on the foreground"
            if n > 1
            else f" ({placed:.0%} of the crops centred on the foreground)"
        )
    return note


def _resolved(config: RunConfig, runtime: build.Runtime, t: build.Training) -> dict[str, Any]:
    """What ``config.json`` records under ``resolved``: the runtime, the environment
    (:func:`segkit.training.reproduce.environment`: Python, segkit, numpy, timm,
    albumentations, DALI, the platform and the CPU), the dataset folder and the
    distribution and version of every plugin used."""

    reg = default_registry()
    plugins = {}
    for kind, name in config.plugins().items():
        info = reg.info(kind, name)
        plugins[kind] = {"name": name, "distribution": info.distribution, "version": info.version}
    return {
        **runtime.record(),
        "environment": reproduce.environment(),
        "data_root": str(t.dataset.root),
        "steps_per_epoch": t.steps_per_epoch,
        **({"evaluation": t.eval_plan.record()} if t.eval_plan is not None else {}),
        "plugins": plugins,
        **({"task": t.task.record()} if t.task.multiclass else {}),
        # pos_weight=auto resolved to the train split's background/foreground pixels
        **({"loss_options": t.loss_options} if t.loss_options != config.loss_options else {}),
    }


def _class_columns(task: Any, valid: dict[str, Any]) -> dict[str, float]:
    """The extra ``metrics.csv`` columns of a K-class run (none for binary): validation
    pixel accuracy, the per-image means, and each class's IoU. ``valid_dice`` and
    ``valid_iou`` are then the dataset-level mDice and mIoU."""
    if not task.multiclass:
        return {}
    nan = math.nan
    out = {
        "valid_pixel_acc": valid.get("pixel_acc", nan),
        "valid_miou_images": valid.get("miou_images", nan),
        "valid_mdice_images": valid.get("mdice_images", nan),
    }
    for name in task.classes:
        out[f"valid_iou_{name}"] = valid.get(f"iou_{name}", nan)
    return out


def _monitor_column(monitor: str, valid: dict[str, Any]) -> dict[str, float]:
    """The ``metrics.csv`` column of a monitor that the usual columns lack:
    ``valid_dice_dataset`` (the pooled valid Dice) for a run that follows it, else none."""
    if monitor != "valid_dice_dataset":
        return {}
    return {"valid_dice_dataset": valid.get("dice_dataset", math.nan)}


def _test_ids(dataset: Any, count: int) -> list[str] | None:
    """The ids of the test images in the test loader's order: the dataset's test samples,
    which a loader reads in order when not training (both built-in loaders do:
    :func:`segkit.data.sampling.epoch_order` without shuffle). None where the counts differ."""
    samples = dataset.samples("test")
    return [s.id for s in samples] if len(samples) == count else None


def _write_in_background(runtime: build.Runtime) -> bool:
    """Whether a thread writes checkpoints while the next epoch trains: on an accelerator,
    whose host has cores to spare. Training on the CPU keeps every core busy (one
    intra-op thread per core), so there the write is done between epochs in the training
    loop: measured with ResNet34-UNet on 2 cores, a writer thread of equal priority made
    epochs up to 8 times longer (each parallel operation waits for the worker it
    preempts), and one of the lowest priority barely ran until the next checkpoint had to
    wait for it (1.2-1.5 s against 0.5 s for writing in the loop)."""
    return runtime.device.type != "cpu"


def _drain(writer: ckpt_io.BackgroundWriter | None) -> None:
    """On the way out with another error: wait for the write in flight, and say so if it
    failed too (the other error is the one raised)."""
    if writer is None:
        return
    try:
        writer.wait()
    except CheckpointError as e:
        print(f"segkit: error: {e}", file=sys.stderr, flush=True)


def _resume_hint(run: Run) -> str:
    """What the last checkpoint holds and the command that continues the run (or, before
    the first checkpoint, the one that starts it again, in the same folder)."""
    folder, writer, d = run.folder, run.writer, run.dist
    assert folder is not None
    devices = f" --devices {d.world}" if d.enabled else ""
    saved = writer.saved_epoch if writer is not None else None
    if saved is not None and folder.last.exists():
        return (
            f"the last checkpoint ({folder.last}) holds epoch {saved}. Resume with: "
            f"{_resume_call(folder.path, devices)}"
        )
    kept = folder.unresumable(run.config, save_every=run.config.save_every, extra=devices)
    if kept is not None:  # best.pt or metrics rows: a record, which a restart does not take
        return f"{kept[0]}. {kept[1]}"
    return (
        f"no checkpoint had been written yet. Start it again with: "
        f"{_restart_call(folder, run.config, devices)}"
    )


def _restart_call(folder: RunFolder, config: RunConfig, devices: str) -> str:
    """The call that starts the run in ``folder`` again, in that folder (which records
    nothing yet): the command, and ``segkit.train`` first for a run started from Python
    (:meth:`RunFolder.restart_call`)."""
    return folder.restart_call(config, extra=devices)


def _resume_call(path: Path, devices: str) -> str:
    """The call that resumes the run in ``path``: the command, and ``segkit.resume`` first
    for a run started from Python (a notebook's user typed no command)."""
    command = f"segkit run --resume {path}{devices}"
    if given() == PYTHON and not devices:
        return f"segkit.resume({str(path)!r}) (or: {command})"
    return command


def _setup_interrupted(
    config: RunConfig | None, folder: RunFolder | None, *, resumed: bool
) -> RunInterrupted:
    """The error of a Ctrl-C before the first epoch: nothing was trained; how to start
    again. A resumed run's ``last.pt`` is as it was: the resume again. A new run's folder,
    once it holds ``config.json`` (all it holds then), stays and is taken again by the
    restart it names (:meth:`RunFolder.create`); before that it is removed
    (:meth:`Run.no_empty_folder_left`), and the same call or command starts the run."""
    d = distributed.from_env()
    devices = f" --devices {d.world}" if d.enabled else ""
    said = "interrupted while setting up, before any epoch was trained"
    if resumed and folder is not None:
        return RunInterrupted(
            f"{said}: nothing was trained, and {folder.last} is as it was. Resume with: "
            f"{_resume_call(folder.path, devices)}",
            run_dir=folder.path,
        )
    if config is not None and folder is not None and folder.config.is_file():
        return RunInterrupted(
            f"{said}: nothing was trained, and {folder.path} holds only its config.json. "
            f"Start it again with: {_restart_call(folder, config, devices)} (it takes that "
            "folder again)",
            run_dir=folder.path,
        )
    return interrupted_setting_up()


def _next_step(run: Run) -> str:
    """After a failed checkpoint write is fixed: resume from the last checkpoint, or start
    the run again (in its folder) when there is none."""
    folder, writer, d = run.folder, run.writer, run.dist
    assert folder is not None
    devices = f" --devices {d.world}" if d.enabled else ""
    if writer is not None and writer.saved_epoch is not None and folder.last.exists():
        return f"resume with: {_resume_call(folder.path, devices)}"
    kept = folder.unresumable(run.config, save_every=run.config.save_every, extra=devices)
    if kept is not None:
        return f"start the run again: {kept[0]}. {kept[1]}"
    return f"start the run again with: {_restart_call(folder, run.config, devices)}"


def _gist(warning: str, root: Any) -> str:
    """A data warning's finding without its folder and advice: ``class car has no pixels
    in train (it is in test 1.8%)``."""
    return warning.removeprefix(f"{root}: ").split(": ", 1)[0]


def _printer(quiet: bool, stream: Any = None) -> Callable[[str], None]:
    """Print a line and flush, unless ``quiet``: on stdout, or on ``stream`` (stderr
    for warnings, so a log redirected with ``2>`` keeps them apart from the results)."""

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=stream or sys.stdout, flush=True)

    return say


def _step_notes(metrics: dict[str, float], runtime: build.Runtime) -> str:
    notes = ""
    if metrics["skipped_nan"]:
        notes += f"  ({int(metrics['skipped_nan'])} steps skipped: NaN/inf loss)"
    overflow = metrics["skipped_overflow"]
    steps = metrics.get("optimizer_steps", metrics["steps"])
    if overflow and overflow > 0.25 * max(steps, 1):
        notes += (
            f"  ({int(overflow)} of {int(steps)} steps skipped by the "
            f"{runtime.precision.name} GradScaler for inf/NaN gradients; if this persists use "
            "bf16 or fp32)"
        )
    return notes
