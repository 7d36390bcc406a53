"""The training and evaluation loops: one pass over a loader each.

Nothing here builds anything or writes files: the loops take built parts (see
:mod:`segkit.build`) and return metrics. Metrics stay on the device until the end of the
pass (:class:`~segkit.metrics.binary.DiceMeter`), so a step never waits for the GPU.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from segkit.contracts import Loader
from segkit.errors import NumericalError
from segkit.task import Task
from segkit.training import distributed
from segkit.training import ema as ema_mod
from segkit.training.distributed import Dist
from segkit.training.precision import Precision

_BINARY = Task()


def to_device(t: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Move a batch tensor (from pinned memory, without waiting) and set its layout."""
    t = t.to(device, non_blocking=True)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Loader,
    loss_fn: torch.nn.Module,
    precision: Precision,
    device: torch.device,
    channels_last: bool = False,
    *,
    meter: Any = None,
    task: Task = _BINARY,
    forward: Any = None,
) -> dict[str, Any]:
    """Mean per-image Dice and IoU, and mean batch loss, over ``loader`` (for K classes,
    ``task``: the :class:`~segkit.task.MultiClassMeter`'s scores, mIoU and mDice first).

    ``forward``: how a batch reaches the model, ``forward(model, images) -> logits`` at
    the masks' size (:class:`segkit.inference.native.NativeForward` for native-size evaluation:
    padding, tiling or resizing, with its own autocast); None calls the model on the
    batch as the loader made it.

    ``meter``: a fresh meter of ``task`` (:meth:`~segkit.task.Task.meter`) to accumulate
    into, e.g. one made with ``per_image=True`` to read each image's scores after the pass
    (the engine's test pass does, for ``test_scores.csv`` and the prediction grid); the
    means are the same.
    """
    model.eval()
    meter = task.meter(device) if meter is None else meter
    for batch in loader:
        images = to_device(batch.images, device, channels_last)
        masks = task.target(to_device(batch.masks, device, False))
        if forward is None:
            with precision.autocast():
                logits = model(images)
                loss = loss_fn(logits, masks)
        else:
            logits = forward(model, images)
            with precision.autocast():
                loss = loss_fn(logits, masks)
        meter.update(logits, masks, loss)
    return meter.compute()


def train_one_epoch(
    model: torch.nn.Module,
    loader: Loader,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    device: torch.device,
    channels_last: bool,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    epoch: int = 0,
    on_nan: str = "stop",
    progress: Any = None,
    dist: Dist | None = None,
    accumulate: int = 1,
    ema: AveragedModel | None = None,
    task: Task = _BINARY,
) -> dict[str, Any]:
    """One pass over ``loader``. Returns mean loss and Dice (over every rank's images),
    images seen, batches (``steps``), optimizer steps and skipped steps. ``scheduler`` is
    stepped after every optimizer step, skipped ones included, so the learning rate
    depends only on the step count.

    ``accumulate`` N: the gradients of N batches are summed before each optimizer step
    (each batch's loss divided by N, so a step sees the mean loss of its N batches), and
    the epoch takes ``ceil(batches / N)`` optimizer steps: a trailing group of fewer than
    N batches steps too, its losses divided by its own size. Under DDP only the last
    batch of a group all-reduces the gradients (``no_sync`` on the others). ``ema``: an
    average (:mod:`segkit.training.ema`) updated on the device after every optimizer step.
    ``task``: binary, or K classes (class-map targets, mDice as the Dice).

    Raises:
        NumericalError: a loss was NaN or infinite and ``on_nan`` is "stop".
    """
    d = dist or Dist()
    model.train()
    meter = task.meter(device)
    watch = _BadStepWatch(device)
    skipped_nan = 0
    precision.take_skipped()  # count this epoch's overflow skips only
    shown_loss = _DeviceScalar(device) if progress is not None else None
    n = accumulate
    batches = len(loader) if n > 1 else 0
    no_sync = getattr(model, "no_sync", None) if n > 1 else None  # DDP's
    step = -1
    updates = 0  # optimizer steps taken or skipped
    grads = False  # a batch of the current group has added gradients
    for step, batch in enumerate(loader):
        last = n == 1 or step % n == n - 1 or step == batches - 1  # of its group
        images = to_device(batch.images, device, channels_last)
        masks = task.target(to_device(batch.masks, device, False))
        with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
            with precision.autocast():
                logits = model(images)
                loss = loss_fn(logits, masks)
            if on_nan == "skip":
                # The user asked for this check: one host sync per step. Ranks agree on
                # it, so all of them skip together and their collectives stay matched.
                finite = distributed.all_reduce_sum(torch.isfinite(loss.detach()).long(), d)
                if int(finite) < d.world:
                    skipped_nan += 1
                    if last:
                        if grads:  # the group's earlier batches still step
                            _all_reduce_grads(model, no_sync is not None, d)
                            _optimizer_step(optimizer, precision, model, ema)
                        if scheduler is not None:
                            step_quietly(scheduler)
                        updates += 1
                        grads = False
                    continue
            if not grads:  # the group's first batch
                optimizer.zero_grad(set_to_none=True)
            if n == 1:
                precision.backward(loss)
            else:
                size = min(n, batches - step + step % n)  # batches in this group
                precision.backward(loss / size)
                grads = not last
        if last:
            _optimizer_step(optimizer, precision, model, ema)
            if scheduler is not None:
                # The schedule counts optimizer steps, skipped ones included, so the
                # learning rate depends only on the step count. An fp16 skip of the very
                # first step makes torch warn that the scheduler stepped before the
                # optimizer: intended.
                if updates == 0:
                    step_quietly(scheduler)
                else:
                    scheduler.step()
            updates += 1
        meter.update(logits, masks, loss)
        if on_nan == "stop":
            watch.update(loss, step)
            # Under DDP every rank must run the same steps, so only the end-of-epoch check
            # (below, agreed across ranks) may stop it.
            if not d.enabled and step % _BadStepWatch.READ_EVERY == 0 and watch.poll() >= 0:
                break
        if progress is not None:
            progress.update(1)
            if step % 20 == 0:  # shown when the device gets there: no host sync
                shown_loss.request(loss.detach())
            if (value := shown_loss.poll()) is not None:
                progress.set_postfix(loss=f"{value:.4f}")
    if on_nan == "stop":
        _stop_on_bad_step(watch, epoch, device, d)
    meter.load_state(distributed.all_reduce_sum(meter.state(), d))
    out = meter.compute()
    out["steps"] = step + 1
    out["optimizer_steps"] = updates
    out["skipped_nan"] = skipped_nan
    out["skipped_overflow"] = precision.take_skipped()
    return out


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
            "its checkpoints hold the last good epoch. Lower --lr, use --precision fp32 "
            "or bf16, check the data, or pass --on-nan skip to skip such steps"
        )


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


class _BadStepWatch:
    """Finds the first non-finite loss of an epoch without a host sync per step.

    The check runs on the device every step. Every ``READ_EVERY`` steps the host asks for
    the flag without waiting (:class:`_DeviceScalar`) and looks at what has arrived, so a
    NaN stops the run a few dozen steps late at most (the weights of those steps are
    never checkpointed); :meth:`read` at the end of the epoch waits for the final value.
    """

    READ_EVERY = 25

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.seen = _DeviceScalar(device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)

    def poll(self) -> int:
        """The first bad step seen so far, -1 if none (or not arrived yet); no sync."""
        self.seen.request(self.first_bad)
        value = self.seen.poll()
        return -1 if value is None else int(value)

    def read(self) -> int:
        return int(self.first_bad.item())
