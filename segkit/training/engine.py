"""The training engine: one flat run, top to bottom.

``train(config)`` resolves the runtime and builds every part through :mod:`segkit.build`,
trains with Adam and a learning-rate schedule (by default the lab's per-epoch
exponential decay; or cosine, with optional warm-up), validates each epoch, keeps the
best weights by the monitored metric (``--monitor``, validation Dice by default; with
``--patience`` it stops early, :mod:`segkit.training.early_stopping`), evaluates them on the test
split and writes the run folder (:mod:`segkit.training.run_folder`). Read it from :func:`_run` down; the loops themselves
are in :mod:`segkit.training.loops`.

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

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from segkit import build
from segkit.config import RunConfig
from segkit.errors import CheckpointError, ConfigError, DataError, MainGuardError, RunInterrupted
from segkit.reports import tb_log
from segkit.system.files import atomic_path, check_writable
from segkit.system.main_guard import exit_if_reimporting_main
from segkit.training import checkpoint as ckpt_io
from segkit.training import distributed, progress
from segkit.training import ema as ema_mod
from segkit.training.early_stopping import EarlyStopping
from segkit.training.loops import evaluate, train_one_epoch
from segkit.training.run_folder import RunFolder, RunResult, timing

__all__ = ["RunResult", "resume", "train"]


def train(config: RunConfig, *, quiet: bool = False) -> RunResult:
    """Train, validate, test and report into a new run folder.

    Args:
        config: The run configuration.
        quiet: Print nothing (the CLI then prints the summary line itself).

    Returns:
        The test metrics, timings and the run folder.

    Raises:
        SegkitError: bad configuration, data or checkpoint (a subclass says which).
        RunInterrupted: Ctrl-C; the message says how to resume.
        MainGuardError: loader worker processes re-ran a script without the main guard.
    """
    exit_if_reimporting_main()
    try:
        return _run(config, None, None, quiet)
    except MainGuardError as e:  # the script's own lines and this one are all it needs
        raise e.with_traceback(None) from None


def resume(run_dir: Path | str, *, epochs: int | None = None, quiet: bool = False) -> RunResult:
    """Continue a run from its ``last.pt``: model, optimizer, GradScaler, RNG
    states, best score and history are restored (the learning-rate schedule is positioned
    from the epochs done), and training goes on at the epoch after the one ``last.pt``
    holds (loaders are positioned by ``set_epoch``, so the epoch sees the same batches it
    would have). With ``--save-every K`` that can be up to K-1 epochs before the run
    stopped: those are trained again. ``epochs`` extends the run; by default it keeps its
    own. The patience counter of ``--patience`` goes on where it was. A run that stopped
    early is finished: resumed without ``epochs`` it trains nothing and tests its best
    checkpoint again; with ``epochs`` it trains on, its counter kept (so the next
    validation without an improvement stops it again).

    Raises:
        CheckpointError: ``run_dir/last.pt`` is missing or unreadable.
    """
    exit_if_reimporting_main()
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise CheckpointError(
            f"{folder.path}: run folder not found; pass a folder made by `segkit run`"
        )
    if not folder.last.exists() and folder.summary_json.exists() and folder.config.exists():
        asked = json.loads(folder.config.read_text())
        if asked.get("keep_last") is False:
            raise CheckpointError(
                f"{folder.path}: the run finished and deleted its last.pt (--no-keep-last), so "
                "it cannot be resumed or extended; start a new run (best.pt still evaluates "
                "and predicts)"
            )
    if not folder.last.exists():  # killed before its first checkpoint, or not a run folder
        again = (
            f"segkit run --config {folder.config}"
            if folder.config.exists()
            else "the command that started it"
        )
        raise CheckpointError(
            f"{folder.last}: checkpoint not found: the run stopped before its first "
            f"checkpoint (or this is not a run folder), so there is nothing to resume; "
            f"start it again with {again}"
        )
    state = ckpt_io.load(folder.last, map_location="cpu")
    config = RunConfig.from_dict(state["config"], source=str(folder.last))
    if epochs is not None:
        config.epochs = epochs
        config.validate()
        stopping = state.get("early_stopping")
        if stopping and stopping.get("stopped"):
            stopping["stopped"] = False  # trains on; the patience counter is kept
    try:
        return _run(config, state, folder, quiet)
    except MainGuardError as e:
        raise e.with_traceback(None) from None


def _run(
    config: RunConfig, state: dict[str, Any] | None, folder: RunFolder | None, quiet: bool
) -> RunResult:
    started = time.perf_counter()
    d = distributed.from_env()
    say = _printer(quiet or not d.main)  # one voice: rank 0 reports
    runtime = build.resolve_runtime(config, d)
    tb_log.require(config)
    distributed.init(d, runtime.device)
    if d.main:  # a read-only or full --out: one line now, not after the first epoch
        check_writable(
            folder.path if folder else Path(config.out).expanduser(), "--out", create=False
        )
    # Everything is built before the run folder is made: a bad name or path leaves no trace.
    t = build.build_training(config, runtime, restoring=state is not None)
    config = t.config  # --loss auto and --monitor auto resolved for the dataset's classes
    start, history = 1, []
    stopper = EarlyStopping(config.monitor, config.patience, config.min_delta)
    if state is not None:
        start, best, history = ckpt_io.restore_training(
            state, t.model, t.optimizer, runtime.precision
        )
        _restore_ema(state, t, say)
        # A checkpoint of an older segkit has no early_stopping: its monitor is valid Dice
        # (only binary runs are that old).
        stopper.load_state_dict(
            state.get("early_stopping") or {"best": best[0], "best_epoch": best[1]}
        )
    log = None  # --log tensorboard: rank 0 writes the events
    if d.main:
        folder = _prepare_folder(config, folder, state, history, say)
        distributed.note_run_folder(d, folder.path)
        if config.log == "tensorboard":
            log = tb_log.TensorBoardLog(folder.path, config, start)
        resolved = _resolved(config, runtime, t)
        folder.write_config(config, resolved)
        if t.bad_samples:
            folder.write_bad_samples(t.bad_samples)
            say(
                f"segkit: left out {len(t.bad_samples)} unreadable samples, listed in {folder.bad_samples}"
            )
    steps = t.steps_per_epoch
    scheduler = build.build_scheduler(t.optimizer, config, steps, steps_done=(start - 1) * steps)
    stepper = build.step_model(t.model, config, runtime)
    ranks = f" x {d.world} processes" if d.enabled else ""
    classes = f", {t.task.describe()}" if t.task.multiclass else ""
    say(
        f"segkit: {config.model} + {config.loss} + {config.recipe} via {config.loader} on "
        f"{config.resolved_dataset()} ({t.dataset.root}{classes}); device {runtime.device}{ranks}, "
        f"precision {runtime.precision.name}, {config.epochs} epochs -> "
        f"{folder.path if folder else '(rank 0 writes)'}"
    )

    writer = None  # rank 0 alone writes checkpoints
    if d.main:
        saved = state["epoch"] if state else None
        writer = ckpt_io.BackgroundWriter(saved, background=_write_in_background(runtime))
    snapshot = ckpt_io.Snapshot()
    estimate = progress.RunEstimate(
        say, config.epochs - start + 1, runtime.device.type, resumed=state is not None
    )
    end = config.epochs
    if stopper.stopped:  # resumed after an early stop, without --epochs: it is finished
        end = start - 1
        say(
            f"segkit: the run stopped early after epoch {end}: {stopper.reason()}; testing its "
            "best checkpoint again (resume with --epochs to train on)"
        )
    epoch = start
    try:
        try:
            for epoch in range(start, end + 1):
                epoch_start = time.perf_counter()
                seconds, train_metrics = _train_epoch(
                    config, runtime, t, stepper, scheduler, epoch, quiet, estimate
                )
                if d.main:
                    assert folder is not None and writer is not None
                    times = (epoch_start, seconds)
                    _end_epoch(
                        config,
                        runtime,
                        t,
                        folder,
                        writer,
                        snapshot,
                        epoch,
                        times,
                        train_metrics,
                        stopper,
                        history,
                        say,
                        log,
                    )
                distributed.barrier(d)
                if config.patience is not None and _stops(stopper, d, runtime.device):
                    break
            if writer is not None:
                writer.wait()  # the last epoch's write: test reads best.pt
        except BaseException:
            _drain(writer)  # never leave a write behind unreported, nor half done
            raise
    except DataError as e:
        if config.skip_bad_samples:
            raise
        raise DataError(f"{e} (or pass --skip-bad-samples to leave unreadable files out)") from None
    except KeyboardInterrupt:
        raise _interrupted(epoch, folder if d.main else None, writer, d) from None
    except RuntimeError as e:  # a collective whose peer died or hangs: one line, no traceback
        if not (d.enabled and distributed.is_collective_failure(e)):
            raise
        hint = f" {_resume_hint(folder, writer, d)}" if d.main and folder else ""
        raise distributed.lost_contact(d, epoch, e, hint) from None

    in_sync = distributed.weights_in_sync(t.model, d)  # a collective: every rank takes part
    best = _best(stopper, history)
    if not d.main:
        distributed.shutdown(d)
        return RunResult(Path(), {}, best[1], best[0], math.nan, math.nan, history)
    assert folder is not None and writer is not None
    result = _test_and_report(
        config, runtime, t, folder, best, history, in_sync, resolved, writer, started, stopper
    )
    if log is not None:
        log.test(result.test, result.epochs_run)
        log.close()
    if not config.keep_last:  # finished: the reports and best.pt are what is kept
        folder.last.unlink(missing_ok=True)
    say(folder.summary_txt.read_text().strip())
    folder.release()
    distributed.shutdown(d)
    return result


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
    folder.repair_best(state)
    folder.rewrite_metrics(history)  # drop the rows of epochs after the checkpoint
    say(f"segkit: resuming {folder.path} after epoch {state['epoch']} of {config.epochs}")
    return folder


def _resolved(config: RunConfig, runtime: build.Runtime, t: build.Training) -> dict[str, Any]:
    """What ``config.json`` records under ``resolved``: the runtime, the dataset folder and
    the distribution and version of every plugin used."""
    from segkit.registry import default_registry

    reg = default_registry()
    plugins = {}
    for kind, name in config.plugins().items():
        info = reg.info(kind, name)
        plugins[kind] = {"name": name, "distribution": info.distribution, "version": info.version}
    return {
        **runtime.record(),
        "data_root": str(t.dataset.root),
        "steps_per_epoch": t.steps_per_epoch,
        **({"evaluation": t.eval_plan.record()} if t.eval_plan is not None else {}),
        "plugins": plugins,
        **({"task": t.task.record()} if t.task.multiclass else {}),
        # pos_weight=auto resolved to the train split's background/foreground pixels
        **({"loss_options": t.loss_options} if t.loss_options != config.loss_options else {}),
    }


def _train_epoch(
    config: RunConfig,
    runtime: build.Runtime,
    t: build.Training,
    stepper: torch.nn.Module,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    quiet: bool,
    estimate: progress.RunEstimate | None = None,
) -> tuple[float, dict[str, float]]:
    """Train one epoch; return its seconds (the device synchronized) and metrics, with
    the learning rate of its first step."""
    loader = t.loaders["train"]
    loader.set_epoch(epoch)
    silent = quiet or not runtime.dist.main
    bar = progress.EpochProgress(
        epoch=epoch,
        epochs=config.epochs,
        steps=len(loader),
        batch_size=config.batch_size * runtime.dist.world,
        say=_printer(silent),
        estimate=None if silent else estimate,
        log_every=config.log_every,
        quiet=silent,
    )
    lr = t.optimizer.param_groups[0]["lr"]  # at the epoch's first step
    t0 = time.perf_counter()
    metrics = train_one_epoch(
        stepper,
        loader,
        t.loss,
        t.optimizer,
        runtime.precision,
        runtime.device,
        runtime.channels_last,
        scheduler=scheduler,
        epoch=epoch,
        on_nan=config.on_nan,
        progress=bar,
        dist=runtime.dist,
        accumulate=config.accumulate,
        ema=t.ema,
        task=t.task,
    )
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    bar.close(seconds)
    return seconds, {**metrics, "lr": lr}


def _end_epoch(
    config: RunConfig,
    runtime: build.Runtime,
    t: build.Training,
    folder: RunFolder,
    writer: ckpt_io.BackgroundWriter,
    snapshot: ckpt_io.Snapshot,
    epoch: int,
    times: tuple[float, float],
    train_metrics: dict[str, float],
    stopper: EarlyStopping,
    history: list[dict[str, Any]],
    say: Callable[[str], None],
    log: tb_log.TensorBoardLog | None = None,
) -> None:
    """Validate (when due), update ``stopper`` (the best epoch; ``stopped`` when
    ``--patience`` runs out before the last epoch), checkpoint (when due, in the
    background), log the epoch's row. ``times``: when the epoch started
    (``perf_counter``) and its training seconds. An early stop is a final epoch: it
    writes ``last.pt`` whatever ``--save-every``. ``log``: the TensorBoard events
    (``--log tensorboard``) get the row, and the prediction grid when due."""
    epoch_start, seconds = times
    validate = epoch % config.validate_every == 0 or epoch == config.epochs
    nan = math.nan
    valid: dict[str, Any] = {"loss": nan, "dice": nan, "iou": nan}
    t0 = time.perf_counter()
    if validate:
        valid = evaluate(
            t.eval_model,
            t.loaders["valid"],
            t.loss,
            runtime.precision,
            runtime.device,
            runtime.channels_last,
            task=t.task,
            forward=t.eval_forward(runtime),
        )
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
    valid_s = time.perf_counter() - t0
    row = {
        "epoch": epoch,
        "train_loss": train_metrics["loss"],
        "train_dice": train_metrics["dice"],
        "valid_loss": valid["loss"],
        "valid_dice": valid["dice"],
        "valid_iou": valid["iou"],
        "lr": train_metrics["lr"],
        "epoch_seconds": seconds,  # training
        "valid_s": valid_s,
        "checkpoint_s": 0.0,  # set below
        "epoch_wall_s": nan,  # set below
        "train_images": int(train_metrics["images"]),
        "skipped_steps": train_metrics["skipped_nan"] + train_metrics["skipped_overflow"],
        **_class_columns(t.task, valid),
    }
    history.append(row)
    improved = False
    if validate:
        improved = stopper.update(valid[stopper.key], epoch)
        stopper.stopped = stopper.should_stop and epoch < config.epochs
    save_last = epoch % config.save_every == 0 or epoch == config.epochs or stopper.stopped
    t0 = time.perf_counter()
    files, saved = [], epoch if save_last else None
    if save_last or improved:
        writer.wait()  # the previous write; a failed one is raised here
        state = ckpt_io.training_state(
            config,
            t.model,
            t.optimizer,
            runtime.precision,
            epoch,
            _best(stopper, history),
            history,
            t.ema,
            early_stopping=stopper.state_dict(),
            task=t.task.record(),
        )
        if not save_last:
            state = ckpt_io.weights_state(state)
        if writer.background:  # the thread writes a copy while training changes the tensors
            state = snapshot.take(state)
        files = folder.checkpoint_files(state, last=save_last, best=improved)
        if not writer.background:  # written here (the row in it lacks the two times below)
            writer.submit(files, saved)
    row["checkpoint_s"] = time.perf_counter() - t0
    row["epoch_wall_s"] = time.perf_counter() - epoch_start
    if files and writer.background:
        if save_last:  # the copy of this row in the checkpoint gets the times too
            state["history"][-1].update(
                checkpoint_s=row["checkpoint_s"], epoch_wall_s=row["epoch_wall_s"]
            )
        writer.submit(files, saved)
    folder.append_metrics(row)
    if log is not None:
        log.epoch(row)
        if validate and log.wants_grid(epoch):
            mean, std = build.normalization(t.recipe)
            log.grid(
                epoch,
                t.eval_model,
                t.loaders["valid"],
                runtime,
                mean,
                std,
                t.dataset,
                forward=t.eval_forward(runtime),
            )
    mc = t.task.multiclass
    if not validate:
        shown = "(not validated)"
    elif mc:
        shown = f"valid mIoU {row['valid_iou']:.4f}  mDice {row['valid_dice']:.4f}"
    else:
        shown = f"valid dice {row['valid_dice']:.4f}"
    if validate and config.monitor not in (
        ("valid_miou", "valid_mdice", "valid_iou", "valid_dice") if mc else ("valid_dice",)
    ):
        shown += f"  {config.monitor.replace('_', ' ')} {row[f'valid_{stopper.key}']:.4f}"
    stop = f"  early stop: {stopper.reason()}" if stopper.stopped else ""
    say(
        f"epoch {epoch:>3}/{config.epochs}  loss {row['train_loss']:.4f}  "
        f"train {'mDice' if mc else 'dice'} {row['train_dice']:.4f}  {shown}  "
        f"train {seconds:.1f}s  valid {valid_s:.1f}s  checkpoint {row['checkpoint_s']:.2f}s"
        f"{'  *best' if improved else ''}{_step_notes(train_metrics, runtime)}{stop}"
    )


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


def _best(stopper: EarlyStopping, history: list[dict[str, Any]]) -> tuple[float, int]:
    """(the valid Dice of the best epoch by ``--monitor``, that epoch): what checkpoints
    and the summary call the best; ``(-inf, -1)`` before any validation."""
    if stopper.best_epoch < 0:
        return -math.inf, -1
    if stopper.key == "dice":
        return stopper.best, stopper.best_epoch
    row = next(r for r in history if r["epoch"] == stopper.best_epoch)
    return row["valid_dice"], stopper.best_epoch


def _stops(stopper: EarlyStopping, d: distributed.Dist, device: torch.device) -> bool:
    """Whether the run stops early after this epoch: rank 0 decided, every rank learns it
    (a collective, only with ``--patience``)."""
    if not d.enabled:
        return stopper.stopped
    flag = torch.tensor([float(stopper.stopped and d.main)], device=device)
    return bool(distributed.all_reduce_sum(flag, d).item() > 0)


def _test_and_report(
    config: RunConfig,
    runtime: build.Runtime,
    t: build.Training,
    folder: RunFolder,
    best: tuple[float, int],
    history: list[dict[str, Any]],
    in_sync: bool,
    resolved: dict[str, Any],
    writer: ckpt_io.BackgroundWriter,
    started: float,
    stopper: EarlyStopping,
) -> RunResult:
    """Test the best weights, draw the curves and predictions, write the summary."""
    from segkit.metrics.definitions import scores_from_meter
    from segkit.reports import figures as report

    if not folder.best.exists():
        raise ConfigError(
            f"{folder.path}: no epoch to evaluate (--epochs {config.epochs} already done?)"
        )
    t.model.load_state_dict(ckpt_io.load(folder.best, map_location=runtime.device)["model"])
    test_loader = t.loaders["test"]
    args = (runtime.precision, runtime.device)
    meter = t.task.meter(runtime.device, per_image=True)  # for test_scores.csv and the grid
    forward = t.eval_forward(runtime)
    test = evaluate(
        t.model,
        test_loader,
        t.loss,
        *args,
        runtime.channels_last,
        meter=meter,
        task=t.task,
        forward=forward,
    )
    dice, iou = meter.per_image_scores()
    test["definitions"] = scores_from_meter(meter, t.task)  # summary.json's test_metrics
    ids = _test_ids(t.dataset, len(dice))
    folder.write_test_scores(dice.tolist(), iou.tolist(), ids, multiclass=t.task.multiclass)
    epoch_seconds, ips = timing(history)
    result = RunResult(
        folder.path,
        test,
        best[1],
        best[0],
        epoch_seconds,
        ips,
        history,
        runtime.dist.world,
        in_sync,
        checkpoint_writes=len(writer.write_seconds),
        monitor=config.monitor,
        best_value=stopper.best,
        stopped_early=stopper.stopped,
        stop_reason=stopper.reason() if stopper.stopped else None,
        epochs_run=history[-1]["epoch"] if history else 0,
        task=t.task,
    )
    if writer.write_seconds:
        result.checkpoint_write_s = sum(writer.write_seconds) / len(writer.write_seconds)
    with atomic_path(folder.curves) as path:
        report.write_curves(path, history, best_epoch=best[1], multiclass=t.task.multiclass)
    mean, std = build.normalization(t.recipe)
    with atomic_path(folder.predictions) as path:
        report.write_prediction_grid(
            path,
            t.model,
            test_loader,
            *args,
            mean,
            std,
            dice=dice,
            iou=iou,
            ids=ids,
            n=config.grid_images,
            channels_last=runtime.channels_last,
            task=t.task,
            forward=forward,
        )
    result.wall_s = time.perf_counter() - started
    if runtime.device.type == "cuda":
        result.peak_gpu_memory_mb = round(
            torch.cuda.max_memory_allocated(runtime.device) / 2**20, 1
        )
    folder.write_summary(config, result, resolved)
    return result


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


def _interrupted(
    epoch: int,
    folder: RunFolder | None,
    writer: ckpt_io.BackgroundWriter | None,
    d: distributed.Dist,
) -> RunInterrupted:
    """The Ctrl-C (or SIGTERM) message: what the checkpoint holds and how to resume."""
    if folder is None:  # another rank: rank 0 says it
        return RunInterrupted("interrupted")
    return RunInterrupted(f"interrupted during epoch {epoch}; {_resume_hint(folder, writer, d)}")


def _resume_hint(
    folder: RunFolder, writer: ckpt_io.BackgroundWriter | None, d: distributed.Dist
) -> str:
    """What the last checkpoint holds and the command that continues the run (or, before
    the first checkpoint, the one that starts it again)."""
    devices = f" --devices {d.world}" if d.enabled else ""
    saved = writer.saved_epoch if writer is not None else None
    if saved is not None and folder.last.exists():
        return (
            f"the last checkpoint ({folder.last}) holds epoch {saved}. Resume with: "
            f"segkit run --resume {folder.path}{devices}"
        )
    return (
        f"no checkpoint had been written yet. Start it again with: segkit run --config "
        f"{folder.config}{devices}"
    )


def _printer(quiet: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

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
