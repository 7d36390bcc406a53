"""The training and evaluation loops: one pass over a loader each.

Nothing here builds anything or writes files: the loops take built parts (see
:mod:`segkit.build`) and return metrics. Metrics stay on the device until the end of the
pass (:class:`~segkit.metrics.binary.DiceMeter`), so a step never waits for the GPU.

:func:`train_one_epoch` runs a :class:`TrainStep` (one batch: forward, backward, and the
optimizer step at the end of its accumulation group) over the loader; the step's parts
and settings travel together in a :class:`StepContext`. :func:`evaluate` takes an
:class:`EvalContext`: the runtime, task, loss and native forward that every evaluation
of a run shares.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from segkit.config import named
from segkit.contracts import Loader
from segkit.errors import NumericalError
from segkit.task import Task
from segkit.training import distributed
from segkit.training import ema as ema_mod
from segkit.training.distributed import Dist
from segkit.training.outputs import PluginRef, check_logits, check_loss
from segkit.training.precision import Precision
from segkit.training.runtime import Runtime

_BINARY = Task()


def to_device(t: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Move a batch tensor (from pinned memory, without waiting) and set its layout."""
    t = t.to(device, non_blocking=True)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalContext:
    """How a run's model is evaluated and drawn: what stays the same from one evaluation
    to the next, whichever weights and split.

    Attributes:
        runtime: Device, precision (autocast) and layout of the batches.
        task: Binary, or K classes (class-map targets, mIoU and mDice).
        forward: How a batch reaches the model, ``forward(model, images) -> logits`` at the
            masks' size (:class:`segkit.inference.native.NativeForward` for native-size
            evaluation: padding, tiling or resizing, with its own autocast); None calls
            the model on the batch as the loader made it.
        loss_fn: The loss :func:`evaluate` reports (unused by the pictures).
        normalization: The ``(mean, std)`` the recipe normalized batches with, to turn
            them back into pictures (:func:`segkit.build.normalization`); the default
            draws them as they are.
    """

    runtime: Runtime
    task: Task = _BINARY
    forward: Any = None
    loss_fn: torch.nn.Module | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] = ((0.0,) * 3, (1.0,) * 3)

    def logits(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``model``'s logits of a batch of normalized images (moved to the device)."""
        x = to_device(images, self.runtime.device, self.runtime.channels_last)
        if self.forward is not None:
            return self.forward(model, x)
        with self.runtime.precision.autocast():
            return model(x)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: Loader, context: EvalContext, *, meter: Any = None
) -> dict[str, Any]:
    """Mean per-image Dice and IoU, and mean batch loss (``context.loss_fn``), over
    ``loader`` (for K classes, ``context.task``: the
    :class:`~segkit.task.MultiClassMeter`'s scores, mIoU and mDice first).

    ``meter``: a fresh meter of the task (:meth:`~segkit.task.Task.meter`) to accumulate
    into, e.g. one made with ``per_image=True`` to read each image's scores after the pass
    (the engine's test pass does, for ``test_scores.csv`` and the prediction grid); the
    means are the same.
    """
    model.eval()
    rt, task, loss_fn = context.runtime, context.task, context.loss_fn
    if loss_fn is None:
        raise ValueError("evaluate: the EvalContext has no loss_fn; give it the run's loss")
    meter = task.meter(rt.device) if meter is None else meter
    for batch in loader:
        images = to_device(batch.images, rt.device, rt.channels_last)
        masks = task.target(to_device(batch.masks, rt.device, False))
        if context.forward is None:
            with rt.precision.autocast():
                logits = model(images)
                loss = loss_fn(logits, masks)
        else:
            logits = context.forward(model, images)
            with rt.precision.autocast():
                loss = loss_fn(logits, masks)
        meter.update(logits, masks, loss)
    return meter.compute()


# ----------------------------------------------------------------------------- training


@dataclass
class StepContext:
    """What a training step works with: the parts it changes and the run's settings for
    it (the same every epoch).

    Attributes:
        model: The module the step calls: the model itself, or compiled, or wrapped in
            DistributedDataParallel (:func:`segkit.build.step_model`).
        loss_fn: ``loss_fn(logits, target) -> scalar``.
        optimizer: Steps once per ``accumulate`` batches.
        runtime: Device, precision (autocast, backward, GradScaler) and layout, and the
            torchrun world (metrics are summed over it).
        task: Binary, or K classes (class-map targets, mDice as the Dice).
        scheduler: Stepped after every optimizer step, skipped ones included, so the
            learning rate depends only on the step count.
        ema: An average of the weights (:mod:`segkit.training.ema`) updated on the device
            after every optimizer step.
        accumulate: N: the gradients of N batches are summed before each optimizer step
            (each batch's loss divided by N, so a step sees the mean loss of its N
            batches); an epoch takes ``ceil(batches / N)`` optimizer steps: a trailing
            group of fewer than N batches steps too, its losses divided by its own size.
            Under DDP only the last batch of a group all-reduces the gradients
            (``no_sync`` on the others).
        on_nan: ``stop``: a NaN or infinite loss stops the run (found without a host sync
            per step, see :class:`_BadStepWatch`); ``skip``: such a batch is skipped, at
            the cost of one host sync per step.
        plugins: The model and loss plugins (:class:`~segkit.training.outputs.PluginRef`),
            named when the first step finds their output breaks the contract; None: the
            parts were built outside the registry, and the message says so.
    """

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    runtime: Runtime
    task: Task = _BINARY
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    ema: AveragedModel | None = None
    accumulate: int = 1
    on_nan: str = "stop"
    plugins: tuple[PluginRef, PluginRef] | None = None


@dataclass
class StepOutput:
    """What a training step leaves for the epoch's metrics: the batch's logits, its
    targets on the device, and its loss (undivided by ``accumulate``)."""

    logits: torch.Tensor
    masks: torch.Tensor
    loss: torch.Tensor


class TrainStep:
    """One training batch, eagerly: ``step(batch)`` moves it to the device, runs forward
    and backward under the precision's autocast, and at the end of its accumulation
    group steps the optimizer (and the EMA) and the learning-rate schedule. It returns
    the batch's :class:`StepOutput`, or None for a batch ``--on-nan skip`` skipped.

    :func:`train_one_epoch` needs nothing else from a step than :meth:`begin_epoch`,
    ``__call__`` and :meth:`counts`, so a step captured once as a CUDA graph and replayed
    (:class:`segkit.training.graphs.GraphStep`, ``--cuda-graphs``) stands in for this one
    with the same :class:`StepContext`.
    """

    def __init__(self, context: StepContext) -> None:
        self.context = context
        n = context.accumulate
        self.no_sync = getattr(context.model, "no_sync", None) if n > 1 else None  # DDP's
        self.batches = 0  # of the epoch (read with accumulate > 1 only)
        self.index = 0  # batches seen this epoch
        self.updates = 0  # optimizer steps taken or skipped
        self.grads = False  # a batch of the current group has added gradients
        self.skipped_nan = 0
        #: A line for the run's log about how the step was chosen (``--cuda-graphs``), or
        #: None: set by :func:`segkit.build.create_step`.
        self.note: str | None = None
        #: The first step checks the model's logits and the loss (:meth:`_check`); later
        #: steps only read this flag.
        self.checked = False

    def graph_record(self) -> dict[str, Any] | None:
        """What ``--cuda-graphs`` did, for ``summary.json``: None for the eager step (a
        :class:`~segkit.training.graphs.GraphStep` says whether it kept its graph)."""
        return None

    def begin_epoch(self, loader: Loader) -> None:
        """Reset the epoch's counts; the model goes into training mode. ``loader``'s
        length (read with ``accumulate`` > 1 only) sizes the trailing group."""
        c = self.context
        c.model.train()
        c.runtime.precision.take_skipped()  # count this epoch's overflow skips only
        self.batches = len(loader) if c.accumulate > 1 else 0
        self.index = 0
        self.updates = 0  # optimizer steps taken or skipped
        self.grads = False  # a batch of the current group has added gradients
        self.skipped_nan = 0

    def __call__(self, batch: Any) -> StepOutput | None:
        rt = self.context.runtime
        images = to_device(batch.images, rt.device, rt.channels_last)
        return self.eager(images, to_device(batch.masks, rt.device, False))

    def eager(self, images: torch.Tensor, masks: torch.Tensor) -> StepOutput | None:
        """The step of one batch already on the device (``masks`` as the loader made
        them): what ``__call__`` does once it has moved the batch."""
        c = self.context
        i = self.index
        self.index += 1
        n = c.accumulate
        last = n == 1 or i % n == n - 1 or i == self.batches - 1  # of its group
        masks = c.task.target(masks)
        syncing = self.no_sync is None or last
        with contextlib.nullcontext() if syncing else self.no_sync():
            with self.autocast():
                logits = c.model(images)
                if not self.checked:
                    self._check("logits", logits, images)
                loss = c.loss_fn(logits, masks)
                if not self.checked:
                    self._check("loss", loss, images)
                    self.checked = True
            if c.on_nan == "skip" and not self._finite_everywhere(loss):
                self._skip(last)
                return None
            self._backward(loss, i, last)
        if last:
            self._update()
        return StepOutput(logits, masks, loss)

    def _check(self, what: str, value: Any, images: torch.Tensor) -> None:
        """The first step's check of the model's logits (``what`` "logits") or the loss's
        value ("loss"), on the tensors it computed (metadata only: no sync, no extra
        forward).

        Raises:
            PluginContractError: naming the plugin, what it returned and what was expected.
        """
        c = self.context
        model, loss = c.plugins or (PluginRef.unnamed("models"), PluginRef.unnamed("losses"))
        autocast = getattr(c.runtime.precision, "dtype", None)
        if what == "logits":
            check_logits(value, images, c.task.num_classes, autocast=autocast, model=model)
        else:
            check_loss(value, autocast=autocast, plugin=loss)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward's and loss's autocast: the precision's."""
        return self.context.runtime.precision.autocast()

    def counts(self) -> dict[str, int]:
        """The epoch's batches, optimizer steps and skipped steps (reading the fp16
        overflow count is a host sync: once, at the end of the epoch)."""
        return {
            "steps": self.index,
            "optimizer_steps": self.updates,
            "skipped_nan": self.skipped_nan,
            "skipped_overflow": self.context.runtime.precision.take_skipped(),
        }

    def _finite_everywhere(self, loss: torch.Tensor) -> bool:
        # The user asked for this check: one host sync per step. Ranks agree on it, so all
        # of them skip together and their collectives stay matched.
        d = self.context.runtime.dist
        return int(distributed.all_reduce_sum(torch.isfinite(loss.detach()).long(), d)) >= d.world

    def _skip(self, last: bool) -> None:
        c = self.context
        self.skipped_nan += 1
        if not last:
            return
        if self.grads:  # the group's earlier batches still step
            _all_reduce_grads(c.model, self.no_sync is not None, c.runtime.dist)
            _optimizer_step(c.optimizer, c.runtime.precision, c.model, c.ema)
        if c.scheduler is not None:
            step_quietly(c.scheduler)
        self.updates += 1
        self.grads = False

    def _backward(self, loss: torch.Tensor, i: int, last: bool) -> None:
        c, n = self.context, self.context.accumulate
        if not self.grads:  # the group's first batch
            c.optimizer.zero_grad(set_to_none=True)
        if n == 1:
            c.runtime.precision.backward(loss)
            return
        size = min(n, self.batches - i + i % n)  # batches in this group
        c.runtime.precision.backward(loss / size)
        self.grads = not last

    def _update(self) -> None:
        c = self.context
        _optimizer_step(c.optimizer, c.runtime.precision, c.model, c.ema)
        step_schedule(c.scheduler, self.updates)
        self.updates += 1


def train_one_epoch(
    step: TrainStep, loader: Loader, *, epoch: int = 0, progress: Any = None
) -> dict[str, Any]:
    """One pass of ``step`` (a :class:`TrainStep`, or a
    :class:`~segkit.training.graphs.GraphStep`) over ``loader``. Returns mean loss and
    Dice (over every rank's images), images seen, batches (``steps``), optimizer steps
    and skipped steps. ``progress``: the epoch's progress object
    (:class:`segkit.training.progress.EpochProgress`: ``update``, ``set_postfix``), fed
    without a host sync.

    Raises:
        NumericalError: a loss was NaN or infinite and ``on_nan`` is "stop" (``epoch`` is
            named in the message).
    """
    c = step.context
    d, device = c.runtime.dist, c.runtime.device
    step.begin_epoch(loader)
    meter = c.task.meter(device)
    # Under DDP every rank must run the same steps, so only the end-of-epoch check
    # (agreed across ranks) may stop it.
    watch = _BadStepWatch(device, poll=not d.enabled) if c.on_nan == "stop" else None
    shown = _ShownLoss(progress, device) if progress is not None else None
    for i, batch in enumerate(loader):
        out = step(batch)
        if out is None:  # skipped: --on-nan skip
            continue
        meter.update(out.logits, out.masks, out.loss)
        if watch is not None and watch.update(out.loss, i):
            break
        if shown is not None:
            shown.update(out.loss, i)
    if watch is not None:
        _stop_on_bad_step(watch, epoch, device, d)
    meter.load_state(distributed.all_reduce_sum(meter.state(), d))
    return {**meter.compute(), **step.counts()}


def _optimizer_step(
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    model: torch.nn.Module,
    ema: AveragedModel | None,
) -> None:
    precision.step(optimizer)  # fp16 may skip it; counted on the device
    if ema is not None:
        ema_mod.update(ema, model)


def _all_reduce_grads(model: torch.nn.Module, ddp: bool, d: Dist) -> None:
    """Average the gradients across ranks by hand: under DDP with accumulation, when the
    last batch of a group was skipped (``--on-nan skip``), its synchronizing backward
    never ran. Every rank skipped it (they agree), so all of them come here."""
    if not (ddp and d.enabled):
        return
    for p in model.parameters():
        if p.grad is not None:
            distributed.all_reduce_sum(p.grad, d)
            p.grad.div_(d.world)


def _stop_on_bad_step(watch: _BadStepWatch, epoch: int, device: torch.device, d: Dist) -> None:
    """Raise if a loss was not finite on any rank this epoch (every rank agrees)."""
    bad = watch.read()
    anywhere = distributed.all_reduce_sum(torch.tensor([int(bad >= 0)], device=device), d)
    if int(anywhere) > 0:
        where = f"step {bad + 1}" if bad >= 0 else "a step on another rank"
        raise NumericalError(
            f"epoch {epoch}, {where}: the loss is NaN or infinite. The run stopped and "
            f"its checkpoints hold the last good epoch. Lower {named('lr')}, use "
            f"{named('precision', 'fp32', as_typed=True)} or bf16, check the data, or pass "
            f"{named('on_nan', 'skip', as_typed=True)} to skip such steps"
        )


def step_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler | None, updates: int) -> None:
    """Step ``scheduler`` (if any) after an optimizer step, the run's ``updates``-th
    (0-based). The schedule counts optimizer steps, skipped ones included, so the learning
    rate depends only on the step count. An fp16 skip of the very first step makes torch
    warn that the scheduler stepped before the optimizer: intended, so that first step is
    quiet."""
    if scheduler is None:
        return
    if updates == 0:
        step_quietly(scheduler)
    else:
        scheduler.step()


def step_quietly(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Step ``scheduler`` where the optimizer did not step (a skipped batch, or positioning
    on resume). Torch warns about "lr_scheduler.step() before optimizer.step()" then; the
    schedule counts batches, so that is intended. Kept off the normal path: entering
    ``catch_warnings`` resets every module's warning registry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


class _DeviceScalar:
    """A device scalar read without waiting for the device.

    :meth:`request` starts a copy into pinned host memory behind the work already
    queued; :meth:`poll` returns the value once the device got there (``None`` before).
    On the CPU the value is there at once.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = torch.zeros((), dtype=torch.float64, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending = False
        self.value: float | None = None

    def request(self, t: torch.Tensor) -> None:
        if self.pending:  # the last copy has not landed yet: keep that one
            return
        if self.event is None:
            self.value = float(t)
            return
        self.host.copy_(t.double(), non_blocking=True)
        self.event.record()
        self.pending = True

    def poll(self) -> float | None:
        if self.pending and self.event is not None and self.event.query():
            self.value = float(self.host)
            self.pending = False
        return self.value


class _ShownLoss:
    """The loss on the progress bar: every 20th batch's is requested, and shown once the
    device got there (no host sync)."""

    EVERY = 20

    def __init__(self, progress: Any, device: torch.device) -> None:
        self.progress = progress
        self.value = _DeviceScalar(device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        self.progress.update(1)
        if step % self.EVERY == 0:
            self.value.request(loss.detach())
        if (value := self.value.poll()) is not None:
            self.progress.set_postfix(loss=f"{value:.4f}")


class _BadStepWatch:
    """Finds the first non-finite loss of an epoch without a host sync per step.

    The check runs on the device every step. Every ``READ_EVERY`` steps the host asks for
    the flag without waiting (:class:`_DeviceScalar`) and looks at what has arrived, so a
    NaN stops the run a few dozen steps late at most (the weights of those steps are
    never checkpointed); :meth:`read` at the end of the epoch waits for the final value.
    With ``poll`` False (under DDP, where every rank must run the same steps) only that
    end-of-epoch check, agreed across ranks, stops the run.
    """

    READ_EVERY = 25

    def __init__(self, device: torch.device, *, poll: bool = True) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.seen = _DeviceScalar(device)
        self.polls = poll

    def update(self, loss: torch.Tensor, step: int) -> bool:
        """Record whether ``loss`` (of batch ``step``) is finite; True when a bad step
        has been seen and the epoch should stop now."""
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)
        return self.polls and step % self.READ_EVERY == 0 and self.poll() >= 0

    def poll(self) -> int:
        """The first bad step seen so far, -1 if none (or not arrived yet); no sync."""
        self.seen.request(self.first_bad)
        value = self.seen.poll()
        return -1 if value is None else int(value)

    def read(self) -> int:
        return int(self.first_bad.item())
