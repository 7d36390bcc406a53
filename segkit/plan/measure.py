"""Measurements through the one build path: a training step's memory and time at a
batch size (:class:`StepProbe`, :func:`fit_batch`), and what a whole run's parts cost on
this machine (:func:`time_run`: setup, an epoch, a validation, the test, a checkpoint).

Nothing here knows a model: the step is built by :mod:`segkit.build` from the
configuration (``build_model``, ``build_optimizer``, ``build_step``), so a third party's
model is measured the same way as a built-in one, on synthetic batches of the training
size (the step probe) or on the real loaders (:func:`time_run`).
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from segkit.plan.machine import MemoryProbe
from segkit.system.memory import OUT_OF_MEMORY, release

if TYPE_CHECKING:
    from segkit.config import RunConfig
    from segkit.task import Task
    from segkit.training.runtime import Runtime

#: Timed steps per measurement after a first, untimed one (cudnn's autotuner, the
#: allocator and the CPU caches warm up on it). The median is kept: on a shared machine
#: one step in a few is slowed by other work.
TIMED_STEPS = 3
#: On a GPU a larger batch keeps growing while it fits (the largest that fits). On the
#: CPU a step's time grows with its images, so a larger batch only buys fewer optimizer
#: steps, unless it is this much faster per image.
CPU_BATCH_GAIN = 1.10


# ----------------------------------------------------------------------------- one step


class StepProbe:
    """A run's training step built through :mod:`segkit.build` (model, loss, optimizer,
    :class:`segkit.training.loops.TrainStep`), fed synthetic batches of the training
    size: random images, random masks of the task's classes.

    Args:
        config: The candidate run (its ``model``, ``model_options``, ``image_size``,
            ``loss`` resolved to a name, ``compile``, ``accumulate``...).
        runtime: Device, precision and layout.
        task: Binary or K classes (the logit channels and the masks' form).
        loss_options: The loss's options as the run resolves them (``pos_weight``
            a number).
    """

    def __init__(
        self, config: RunConfig, runtime: Runtime, task: Task, loss_options: dict[str, Any]
    ) -> None:
        from segkit import build, registry

        self.config, self.runtime, self.task = config, runtime, task
        self.model = build.build_model(
            config, runtime, restoring=True, out_channels=task.num_classes
        )  # restoring: initial weights change no cost, and are not downloaded
        loss = registry.create("losses", config.loss, **loss_options)
        self.optimizer = build.build_optimizer(self.model, config)
        # A probe has no dataset, recipe or loaders: the step is built from its parts,
        # over whole batches (the last-batch rule gives the run one shape too).
        self.step = build.create_step(
            config,
            runtime,
            model=self.model,
            loss=loss,
            optimizer=self.optimizer,
            task=task,
            train_images=config.batch_size * 8,
        )
        self.step.begin_epoch([])  # type: ignore[arg-type]  # its length is unused here

    @property
    def size(self) -> int:
        return self.config.image_size

    def batch(self, n: int) -> Any:
        """A synthetic batch of ``n`` images (a :class:`segkit.contracts.Batch`)."""
        from segkit.contracts import Batch

        s = self.size
        g = torch.Generator().manual_seed(n)
        images = torch.randn(n, 3, s, s, generator=g)
        if self.task.multiclass:
            masks = torch.randint(0, self.task.num_classes, (n, s, s), generator=g).to(torch.uint8)
        else:
            masks = (torch.rand(n, 1, s, s, generator=g) > 0.5).float()
        return Batch(images, masks)

    def run(self, batch: Any) -> None:
        """One training step of ``batch``, the device synchronized."""
        self.step(batch)
        self.runtime.synchronize()

    def resident(self) -> int:
        """Bytes held between steps: weights, gradients and optimizer state."""
        seen: set[int] = set()
        total = 0
        tensors = [p for p in self.model.parameters()]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        for t in tensors:
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total

    def seconds(self, batch: Any, steps: int = TIMED_STEPS) -> float:
        """The median seconds of ``steps`` training steps of ``batch``."""
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            self.run(batch)
            times.append(time.perf_counter() - t0)
        return float(statistics.median(times))


@dataclass
class Trial:
    """One batch size tried: whether it fit, its peak memory and its seconds per step."""

    batch: int
    fits: bool
    peak: int | None = None
    seconds: float | None = None
    note: str = ""

    @property
    def images_per_s(self) -> float:
        return self.batch / self.seconds if self.seconds else 0.0


@dataclass
class BatchSearch:
    """The result of :func:`fit_batch`: the batch chosen, every trial, and why it stopped."""

    batch: int
    trials: list[Trial] = field(default_factory=list)
    stopped: str = ""

    @property
    def chosen(self) -> Trial:
        return next(t for t in self.trials if t.batch == self.batch and t.fits)


def try_batch(probe: StepProbe, memory: MemoryProbe, batch: int, steps: int = TIMED_STEPS) -> Trial:
    """Run one step of ``batch`` images under ``memory`` (catching running out of it),
    then, if it fit, time ``steps`` more."""
    data = probe.batch(batch)
    limit = memory.limit()
    try:
        peak = memory.peak(lambda: probe.run(data), batch=batch, resident=probe.resident())
    except OUT_OF_MEMORY as e:
        del data
        release(probe.runtime.device)
        return Trial(batch, False, note=f"out of memory ({type(e).__name__})")
    if peak > limit:
        return Trial(batch, False, peak, note=f"needs {_gib(peak)} of {_gib(limit)}")
    return Trial(batch, True, peak, probe.seconds(data, steps))


@dataclass(frozen=True)
class BatchPolicy:
    """How :func:`fit_batch` searches for the batch size.

    Attributes:
        start: The first batch size tried.
        cap: The largest batch size allowed.
        grow_while_faster: Grow only while the larger batch is ``gain`` times faster per
            image (the CPU), not while it fits (an accelerator).
        cap_why: Where the cap comes from, in the reason a search stopped at it.
        gain: How much faster per image a larger batch must be, with ``grow_while_faster``.
        steps: Timed steps per batch size tried.
    """

    start: int
    cap: int
    grow_while_faster: bool
    cap_why: str = ""
    gain: float = CPU_BATCH_GAIN
    steps: int = TIMED_STEPS


def fit_batch(probe: StepProbe, memory: MemoryProbe, policy: BatchPolicy) -> BatchSearch:
    """The batch size: double from ``policy.start`` while a step fits in memory (measured
    by ``memory``, running out of it caught) and stays within the cap; with
    ``grow_while_faster`` (the CPU) only while the larger batch is ``gain`` times faster
    per image. When the start does not fit, halve it until one fits.

    Raises:
        ConfigError: not even one image fits.
    """
    from segkit.errors import ConfigError

    search = BatchSearch(batch=0)
    first = max(1, min(policy.start, policy.cap))
    best = _grow(probe, memory, policy, search, first)
    if best is None:  # the first size did not fit: go down
        best = _shrink(probe, memory, policy, search, first)
    if best is None:
        raise ConfigError(
            f"model '{probe.config.model}' at {probe.size} px: not even one image fits in "
            f"{_gib(memory.limit())} of {memory.where} memory ({search.stopped}); use a "
            "smaller --image-size or another --model"
        )
    search.batch = best.batch
    return search


def _grow(
    probe: StepProbe, memory: MemoryProbe, policy: BatchPolicy, search: BatchSearch, b: int
) -> Trial | None:
    """Double the batch from ``b`` until one does not fit, is not worth it or would pass
    the cap, each trial and the reason it stopped recorded in ``search``; the largest
    batch kept (``None``: ``b`` itself did not fit)."""
    best: Trial | None = None
    while True:
        trial = try_batch(probe, memory, b, policy.steps)
        search.trials.append(trial)
        if not trial.fits:
            search.stopped = f"batch {b} does not fit: {trial.note}"
            return best
        if (
            best is not None
            and policy.grow_while_faster
            and trial.images_per_s < policy.gain * best.images_per_s
        ):
            search.stopped = (
                f"batch {b} is {trial.images_per_s / best.images_per_s:.2f}x as fast per image "
                f"as {best.batch}: not worth half the optimizer steps"
            )
            return best
        best = trial
        if b * 2 > policy.cap:
            why = f" ({policy.cap_why})" if policy.cap_why else ""
            search.stopped = f"batch {b * 2} would exceed the cap of {policy.cap}{why}"
            return best
        b *= 2


def _shrink(
    probe: StepProbe, memory: MemoryProbe, policy: BatchPolicy, search: BatchSearch, b: int
) -> Trial | None:
    """Halve the batch from ``b`` (which did not fit) until one fits, each trial recorded
    in ``search``; that one (``None``: not even one image fits)."""
    b //= 2
    while b >= 1:
        trial = try_batch(probe, memory, b, policy.steps)
        search.trials.append(trial)
        if trial.fits:
            return trial
        b //= 2
    return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


# ----------------------------------------------------------------------------- a whole run


@dataclass
class RunTiming:
    """What the parts of a run cost, measured on the real data and loaders.

    Attributes:
        setup_s: Building the run (dataset, the check of every file, model, loaders).
        train_start_s: The training loader's first batch (its workers start once: they
            persist from epoch to epoch).
        eval_start_s: An evaluation loader's first batch (validation's and the test's
            loaders each start once).
        steps_per_epoch: Training batches an epoch.
        step_s: One training step with the wait for the next batch (median).
        valid_batches, test_batches: Evaluation batches of each split.
        eval_batch_s: One evaluation batch (model and metrics, with the wait for the
            next).
        last_s: Writing ``last.pt`` (the training state).
        best_s: Writing ``best.pt`` (the weights).
        grid_images: Test images drawn in ``predictions.png``.
    """

    setup_s: float
    train_start_s: float
    eval_start_s: float
    steps_per_epoch: int
    step_s: float
    valid_batches: int
    test_batches: int
    eval_batch_s: float
    last_s: float
    best_s: float
    grid_images: int = 8

    @property
    def start_s(self) -> float:
        """Everything paid once before the first epoch: the build and the three loaders'
        workers starting."""
        return self.setup_s + self.train_start_s + 2 * self.eval_start_s

    @property
    def epoch_s(self) -> float:
        """Training seconds of one epoch."""
        return self.steps_per_epoch * self.step_s

    @property
    def valid_s(self) -> float:
        return self.valid_batches * self.eval_batch_s

    @property
    def test_s(self) -> float:
        """The test pass and the reports: the prediction grid predicts its images again
        (one batch each, at most) and the figures take about a second."""
        grid = min(self.test_batches, self.grid_images)
        return (self.test_batches + grid) * self.eval_batch_s + 1.0

    def to_dict(self) -> dict[str, float]:
        out = {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items()}
        for name in ("start_s", "epoch_s", "valid_s", "test_s"):
            out[name] = round(getattr(self, name), 3)
        return out


def time_run(
    config: RunConfig,
    runtime: Runtime,
    *,
    steps: int = TIMED_STEPS,
    eval_batches: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> RunTiming:
    """Build ``config``'s run with :func:`segkit.build.build_training` (``restoring``:
    initial ``weights`` are not loaded, they change no cost) and time it: the setup, the
    training loader's first batch, ``steps`` training steps (after an untimed one), the
    validation loader's first batch and up to ``eval_batches`` evaluation batches, and one
    write each of ``last.pt`` and ``best.pt`` (into a temporary folder in ``config.out``'s
    file system).
    """
    from segkit import build

    t0 = clock()
    parts = build.build_training(config, runtime, restoring=True)
    setup = clock() - t0
    train_start, step_s = _training_seconds(parts, runtime, steps, clock)
    eval_start, eval_batch = _evaluation_seconds(parts, runtime, eval_batches, clock)
    last, best = _checkpoint_seconds(parts, runtime, Path(config.out).expanduser(), clock)
    return RunTiming(
        setup_s=setup,
        train_start_s=train_start,
        eval_start_s=eval_start,
        steps_per_epoch=len(parts.loaders["train"]),
        step_s=step_s,
        valid_batches=len(parts.loaders["valid"]),
        test_batches=len(parts.loaders["test"]),
        eval_batch_s=eval_batch,
        last_s=last,
        best_s=best,
        grid_images=config.grid_images,
    )


def _training_seconds(
    parts: Any, runtime: Runtime, steps: int, clock: Callable[[], float]
) -> tuple[float, float]:
    """The training loader's first batch, and the median of ``steps`` training steps
    (after an untimed one), each with the wait for the next batch; an epoch that ends
    on the way starts the next, as the engine does."""
    from segkit import build

    step = build.build_step(parts, runtime)
    loader = parts.loaders["train"]
    epoch = 1
    loader.set_epoch(epoch)
    step.begin_epoch(loader)
    t0 = clock()
    batches = iter(loader)
    batch = next(batches)
    train_start = clock() - t0
    times: list[float] = []
    for i in range(steps + 1):  # the first step is not timed
        t0 = clock()
        step(batch)
        runtime.synchronize()
        nxt = next(batches, None)
        if nxt is None:  # the epoch ended: the persistent workers start the next one
            epoch += 1
            loader.set_epoch(epoch)
            step.begin_epoch(loader)
            batches = iter(loader)
            nxt = next(batches)
        if i:
            times.append(clock() - t0)
        batch = nxt
    del batches, batch
    return train_start, float(statistics.median(times))


def _evaluation_seconds(
    parts: Any, runtime: Runtime, eval_batches: int, clock: Callable[[], float]
) -> tuple[float, float]:
    """The validation loader's first batch, and one evaluation batch (model and metrics,
    with the wait for the next): the mean of up to ``eval_batches``."""
    from segkit.training.loops import evaluate

    valid = parts.loaders["valid"]
    context = parts.eval_context(runtime)
    t0 = clock()
    batches = iter(valid)
    first = next(batches)
    eval_start = clock() - t0
    k = max(1, min(eval_batches, len(valid)))
    t0 = clock()
    evaluate(parts.model, itertools.chain([first], itertools.islice(batches, k - 1)), context)  # type: ignore[arg-type]
    eval_batch = (clock() - t0) / k
    del batches, first
    return eval_start, eval_batch


def _checkpoint_seconds(
    parts: Any, runtime: Runtime, out: Path, clock: Callable[[], float]
) -> tuple[float, float]:
    """What writing ``last.pt`` and ``best.pt`` costs the training loop, the way the
    engine writes them (``engine._write_in_background``): on the CPU the writes
    themselves (the engine writes there, in the loop); on an accelerator the snapshot to
    host memory (a thread writes it while the next epoch trains), taken twice so the
    second, with its buffers kept, is the one timed. The thread's write is not counted:
    it overlaps the next epoch, and the loop waits for it only when a checkpoint comes
    due before it ends (an epoch shorter than a write, which :func:`rules.fit_schedule`'s
    spacing of ``last.pt`` makes rare)."""
    from segkit.training import checkpoint as ckpt_io
    from segkit.training.engine import _write_in_background

    status = ckpt_io.RunStatus(1, (0.0, 1), [])
    state = ckpt_io.training_state(parts, runtime.precision, status)
    if _write_in_background(runtime):
        seconds = []
        for kind in (state, ckpt_io.weights_state(state)):
            snapshot = ckpt_io.Snapshot()
            snapshot.take(kind)
            t0 = clock()
            snapshot.take(kind)
            seconds.append(clock() - t0)
        return seconds[0], seconds[1]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".segkit-plan-") as tmp:
        t0 = clock()
        ckpt_io.save_atomic(state, Path(tmp) / "last.pt")
        last = clock() - t0
        t0 = clock()
        ckpt_io.save_atomic(ckpt_io.weights_state(state), Path(tmp) / "best.pt")
        best = clock() - t0
    return last, best
