"""The training step captured once as a CUDA graph and replayed (``--cuda-graphs``).

A step of ResNet34-UNet launches about a thousand short kernels; on an H100 the host
takes longer to launch them than the GPU to run them (the issue 26 profile: 14.6 ms of
kernels in a 23 ms step). A CUDA graph records the launches of one whole step (forward,
loss, backward, the fused Adam update) and replays them with one call.

:class:`GraphStep` is a :class:`~segkit.training.loops.TrainStep` (same
:class:`~segkit.training.loops.StepContext`, same ``begin_epoch``, ``__call__`` and
``counts``, so :func:`~segkit.training.loops.train_one_epoch` drives it unchanged). Its
life, following PyTorch's whole-network capture (the CUDA semantics notes, "CUDA Graphs"):

1. **Warm-up.** The first ``warmup`` full batches (at least one) are ordinary eager steps
   on a side stream: they train, as any step, and on the way cudnn's autotuner picks its
   kernels, Adam creates its state, and the first step checks the model's logits and the
   loss (:mod:`segkit.training.outputs`), none of which may happen under capture.
2. **Capture.** The next full batch is copied into static input buffers and the step is
   captured on the same side stream, with the gradients set to None first (the captured
   backward then writes them into the graph's own memory), autocast without its weight
   cache, and Adam ``capturable`` with its learning rate as a device tensor. Capturing
   runs nothing, so the graph is replayed at once for that batch.
3. **Trial** (``--cuda-graphs auto``: ``trial`` steps). Before the capture, ``trial``
   eager steps are timed, and after it ``trial`` replays, each alone (the device
   synchronized before and after it, so the loader's time between steps is not counted).
   The graph is kept only if the median replay is at least :data:`MIN_GAIN` faster
   than the median eager step; else it is dropped, its memory given back, and the run
   goes on eagerly. Either way one line gives both times. A graph pays where the host,
   not the GPU, is the bottleneck (many short kernels); on a busy GPU it only costs
   its capture, and the trial says so for this model, batch and machine.
4. **Replay.** Every later batch of the captured shape is copied into the static buffers
   (one host-to-device or device-to-device copy each), the learning rate the schedule
   set is written into the device tensor, and the graph is replayed. The EMA
   (``--ema``) is updated after it on the device, and the schedule stepped on the host,
   as in the eager step. The step's logits, targets and loss are the graph's static
   outputs: the epoch's meter reads them before the next replay overwrites them, on the
   same stream, so nothing waits for the GPU.

A batch of another shape (a kept last batch, ``--last-batch keep``) runs the eager step
with the same weights and optimizer: the graph's memory stays its own, and the next
replay reads the weights and Adam state the eager step left, since both update the same
tensors in place.

What a graph cannot serve is refused before the first epoch
(:mod:`segkit.training.graph_policy`). A capture that fails anyway (a loss or model that
synchronizes with the host, or changes shape with the data) is an error with
``--cuda-graphs on``, and falls back to the eager step, with one line, under ``auto``.

Checkpoints are those of an eager run: the learning-rate tensor and the ``capturable``
flag are put into the optimizer only for the capture, and its state is the same tensors
either way (fused Adam keeps its step counts on the device).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from segkit.config import named
from segkit.errors import ConfigError, described
from segkit.training import ema as ema_mod
from segkit.training.loops import StepContext, StepOutput, TrainStep, step_schedule

#: How much faster than the eager step a replay must be for ``auto`` to keep the graph
#: (the trial's medians): below it the gain is within the noise of a few steps, and the
#: eager step is the simpler one to debug.
MIN_GAIN = 0.05
#: Steps ``--cuda-graphs auto`` times each way: at ResNet34-UNet's ~23 ms a step on an
#: H100, well under a second of a 103-step epoch.
TRIAL_STEPS = 8


class CudaGraph:
    """A ``torch.cuda.CUDAGraph`` captured on ``stream``: ``capture(body)`` records what
    ``body()`` launches (and runs nothing), ``replay()`` launches it on the current stream.

    ``capture_error_mode="thread_local"``: other threads of the process (the DataLoader's
    pin-memory thread, DALI's workers, the checkpoint writer) may allocate pinned memory
    or query events during the capture; only this thread's calls are checked.
    """

    def __init__(self, stream: torch.cuda.Stream) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.stream = stream

    def capture(self, body: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
            body()

    def replay(self) -> None:
        self.graph.replay()


class GraphStep(TrainStep):
    """The training step as a CUDA graph, replayed (see the module docstring).

    Args:
        context: The step's parts and settings; one optimizer step per batch
            (``accumulate`` 1), ``on_nan`` ``stop`` (the rules of
            :mod:`segkit.training.graph_policy`).
        batch_size: The size of a full batch: the shape captured. Batches of another
            size run eagerly.
        warmup: Eager steps of full batches before the capture (PyTorch's examples take 3;
            DDP, which is not captured here, would need 11); at least 1: the first step
            checks what the model and the loss return
            (:mod:`segkit.training.outputs`), which a capture must not do.
        fallback: A failed capture falls back to the eager step for the rest of the run,
            with one line (``--cuda-graphs auto``); False raises (``on``).
        graph: Makes the graph object: ``graph(stream) -> obj`` with ``capture(body)`` and
            ``replay()``. Default :class:`CudaGraph`; tests on the CPU pass a stand-in.
        say: Where the fallback and trial lines go (default: printed).
        trial: Steps timed each way (eager before the capture, replays after it) before
            the graph is kept or dropped (``auto``); 0 keeps it untimed (``on``).
        clock: The trial's clock (seconds; tests pass a scripted one).

    Raises:
        ValueError: a context a graph cannot serve (the policy refuses such runs first).
    """

    def __init__(
        self,
        context: StepContext,
        *,
        batch_size: int,
        warmup: int = 3,
        fallback: bool = False,
        graph: Callable[[Any], Any] | None = None,
        say: Callable[[str], None] | None = None,
        trial: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(context)
        why = _unservable(context, custom_graph=graph is not None)
        if why:
            raise ValueError(f"GraphStep: {why}")
        if batch_size < 1 or warmup < 1 or trial < 0:
            raise ValueError(
                f"GraphStep: batch_size {batch_size}, warmup {warmup}, trial {trial}: expected "
                "batch_size >= 1, warmup >= 1 (the first step checks the model's and the "
                "loss's outputs eagerly, never under capture) and trial >= 0"
            )
        device = context.runtime.device
        self.batch_size = batch_size
        self.warmup = warmup
        self.fallback = fallback
        self.make_graph = graph if graph is not None else CudaGraph
        self.say = say if say is not None else _print
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.warmed = 0  # eager warm-up steps taken
        self.graph: Any = None  # once captured
        self.failed: str | None = None  # why no graph: a failed capture, a lost trial (eager)
        self.key: tuple[Any, ...] | None = None  # shapes and dtypes of the captured batch
        self.static_images: torch.Tensor | None = None
        self.static_masks: torch.Tensor | None = None
        self.lrs: list[torch.Tensor] = []  # each parameter group's lr, on the device
        self.out: StepOutput | None = None  # the graph's outputs
        self.replays = 0  # this epoch's
        self.eager_batches = 0  # this epoch's batches of another shape
        self.trial = trial
        self.clock = clock
        self.timed: dict[str, list[float]] = {"eager": [], "graph": []}  # the trial's seconds

    def begin_epoch(self, loader: Any) -> None:
        super().begin_epoch(loader)
        self.replays = 0
        self.eager_batches = 0

    def __call__(self, batch: Any) -> StepOutput | None:
        images, masks = batch.images, batch.masks
        if self.failed is not None:
            return super().__call__(batch)
        if self.graph is not None and _key(images, masks) == self.key:
            if len(self.timed["graph"]) < self.trial:
                out = self._time("graph", lambda: self._replay(images, masks))
                if len(self.timed["graph"]) == self.trial:
                    self._decide()
                return out
            return self._replay(images, masks)
        rt = self.context.runtime
        images = _on_device(images, rt)
        masks = masks.to(rt.device, non_blocking=True)
        if images.shape[0] != self.batch_size or self.graph is not None:
            self.eager_batches += 1  # another shape: the eager step, same weights
            return self.eager(images, masks)
        if self.warmed < self.warmup:
            self.warmed += 1
            return self._warm_up(images, masks)
        if len(self.timed["eager"]) < self.trial:
            return self._time("eager", lambda: self._warm_up(images, masks))
        return self._capture(images, masks)

    def graph_record(self) -> dict[str, Any]:
        """Whether the graph is in use (``kept``), why not (``why_not``: a failed capture,
        a lost trial, or a trial or capture not reached yet), and the trial's median
        milliseconds (None without a trial)."""

        def median_ms(kind: str) -> float | None:
            times = self.timed[kind]
            return round(statistics.median(times) * 1e3, 3) if times else None

        kept = self.graph is not None and self.failed is None
        done = len(self.timed["graph"]) >= self.trial
        why = self.failed or (None if kept and done else "the trial or capture was not reached")
        return {
            "kept": kept and done,
            "why_not": why,
            "eager_ms": median_ms("eager"),
            "replay_ms": median_ms("graph"),
            "trial_steps": self.trial,
        }

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Every step of this one, eager or captured, runs under the capture's autocast
        (its weight cache off): a ``torch.compile``-d model guards on the autocast state,
        and a capture under another state than its warm-up would recompile inside the
        capture. The values are the same either way."""
        rt = self.context.runtime
        return _autocast_for_capture(rt.precision, rt.device)

    def counts(self) -> dict[str, int]:
        """:meth:`TrainStep.counts`, and the epoch's replays (``graph_replays``) and
        batches of another shape run eagerly (``eager_batches``)."""
        return {
            **super().counts(),
            "graph_replays": self.replays,
            "eager_batches": self.eager_batches,
        }

    # ------------------------------------------------------------------ the three phases

    def _warm_up(self, images: torch.Tensor, masks: torch.Tensor) -> StepOutput | None:
        """An eager step on the side stream the capture will use. The side stream waits
        for the work queued so far (the batch's copy) and the main stream for it: what it
        allocates and frees is reused only by later side-stream work, which waits again."""
        if self.side is None:
            return self.eager(images, masks)
        main = torch.cuda.current_stream(self.side.device)
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            out = self.eager(images, masks)
        main.wait_stream(self.side)
        return out

    def _capture(self, images: torch.Tensor, masks: torch.Tensor) -> StepOutput | None:
        """Capture the step with this batch in the static buffers, then replay it (the
        capture ran nothing); a failure raises or falls back (``fallback``)."""
        c = self.context
        self.static_images = torch.empty_like(images)
        self.static_images.copy_(images)
        self.static_masks = torch.empty_like(masks)
        self.static_masks.copy_(masks)
        groups = c.optimizer.param_groups
        self.lrs = [_lr_tensor(g["lr"], c.runtime.device) for g in groups]
        saved = [(g["lr"], g.get("capturable", False)) for g in groups]
        main = torch.cuda.current_stream(self.side.device) if self.side is not None else None
        graph = self.make_graph(self.side)
        error: Exception | None = None
        try:
            for g, lr in zip(groups, self.lrs, strict=True):
                g["lr"], g["capturable"] = lr, True
            c.optimizer.zero_grad(set_to_none=True)  # the graph's backward owns the grads
            graph.capture(self._body)
        except Exception as e:  # noqa: BLE001 - any capture failure is reported or falls back
            error = e
        finally:
            for g, (lr, capturable) in zip(groups, saved, strict=True):
                g["lr"], g["capturable"] = lr, capturable
        if error is not None:
            if main is not None:  # a failed capture_end leaves the capture stream current
                torch.cuda.set_stream(main)
            return self._failed(error, images, masks)
        self.graph = graph
        self.key = _key(images, masks)
        self.index += 1
        return self._run_graph()

    def _body(self) -> None:
        """The captured step: forward and loss under autocast (its weight cache off, as
        capture requires), backward, the optimizer step (Adam capturable, reading its
        learning rate from the device)."""
        c = self.context
        assert self.static_images is not None and self.static_masks is not None
        target = c.task.target(self.static_masks)
        with self.autocast():
            logits = c.model(self.static_images)
            loss = c.loss_fn(logits, target)
        c.runtime.precision.backward(loss)
        c.runtime.precision.step(c.optimizer)
        self.out = StepOutput(logits.detach(), target, loss.detach())

    def _replay(self, images: torch.Tensor, masks: torch.Tensor) -> StepOutput | None:
        """Copy the batch into the static buffers (from pinned host memory or the
        device, without waiting) and replay."""
        assert self.static_images is not None and self.static_masks is not None
        self.static_images.copy_(images, non_blocking=True)
        self.static_masks.copy_(masks, non_blocking=True)
        self.index += 1
        return self._run_graph()

    def _run_graph(self) -> StepOutput | None:
        """Replay with the schedule's current learning rate, then what the eager step does
        after its optimizer step: the EMA, the schedule, the count."""
        c = self.context
        for g, lr in zip(c.optimizer.param_groups, self.lrs, strict=True):
            lr.fill_(float(g["lr"]))  # a kernel with the value as its argument: no sync
        self.graph.replay()
        self.replays += 1
        if c.ema is not None:
            ema_mod.update(c.ema, c.model)
        step_schedule(c.scheduler, self.updates)
        self.updates += 1
        return self.out

    def _time(self, kind: str, step: Callable[[], StepOutput | None]) -> StepOutput | None:
        """Run one step of the trial, alone on the device, and keep its seconds."""
        sync = self.context.runtime.synchronize
        sync()
        start = self.clock()
        out = step()
        sync()
        self.timed[kind].append(self.clock() - start)
        return out

    def _decide(self) -> None:
        """The trial is over: keep the graph if its median replay is at least
        :data:`MIN_GAIN` faster than the median eager step, else drop it and go on
        eagerly; one line either way."""
        eager = statistics.median(self.timed["eager"])
        graph = statistics.median(self.timed["graph"])
        times = (
            f"a replay took {graph * 1e3:.1f} ms against {eager * 1e3:.1f} ms for the eager "
            f"step (medians of {self.trial} each)"
        )
        if graph <= eager * (1 - MIN_GAIN):
            self.say(f"segkit: cuda graphs: on, {times}")
            return
        self.graph = None  # its memory pool goes with the last tensors in it
        self.static_images = self.static_masks = None
        self.out = None
        self.context.optimizer.zero_grad(set_to_none=True)  # the grads live in the pool
        self.failed = f"not {MIN_GAIN:.0%} faster"
        self.say(
            f"segkit: cuda graphs: off, {times}; a graph must be at least {MIN_GAIN:.0%} "
            "faster; eager steps"
        )

    def _failed(
        self, error: Exception, images: torch.Tensor, masks: torch.Tensor
    ) -> StepOutput | None:
        """A capture failed: raise (``on``), or run this batch and the rest eagerly."""
        self.graph = None
        self.static_images = self.static_masks = None
        self.out = None
        self.context.optimizer.zero_grad(set_to_none=True)  # the failed capture's grads
        self.failed = described(error)
        if not self.fallback:
            raise ConfigError(
                f"{named('cuda_graphs', 'on', as_typed=True)}: the training step could not "
                f"be captured as a CUDA graph ({self.failed}); the model or loss synchronizes "
                "with the host or changes shape with the data. Use "
                f"{named('cuda_graphs', 'off', as_typed=True)}"
            ) from error
        self.say(f"segkit: cuda graphs: off, the capture failed ({self.failed}); eager steps")
        return self.eager(images, masks)


def _unservable(context: StepContext, *, custom_graph: bool) -> str | None:
    """Why ``context`` cannot be captured (None if it can)."""
    rt = context.runtime
    if rt.device.type != "cuda" and not custom_graph:
        return f"a CUDA graph needs a CUDA device, the runtime is on {rt.device}"
    if context.accumulate != 1:
        return f"accumulate {context.accumulate}: a graph step is one optimizer step"
    if context.on_nan != "stop":
        return f"on_nan {context.on_nan!r} reads the loss on the host"
    if rt.dist.enabled:
        return "DDP's all-reduce is not captured"
    return None


def _key(images: torch.Tensor, masks: torch.Tensor) -> tuple[Any, ...]:
    return (tuple(images.shape), images.dtype, tuple(masks.shape), masks.dtype)


def _on_device(images: torch.Tensor, rt: Any) -> torch.Tensor:
    from segkit.training.loops import to_device

    return to_device(images, rt.device, rt.channels_last)


def _lr_tensor(lr: Any, device: torch.device) -> torch.Tensor:
    """A learning rate as a float32 device tensor (what fused Adam reads under capture)."""
    value = float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)
    return torch.full((), value, dtype=torch.float32, device=device)


def _autocast_for_capture(precision: Any, device: torch.device) -> Any:
    """The precision's autocast with its weight cache off: a cast cached during capture
    would live in the graph's memory and be reused as if current. The values are the
    same, the cache only saves recasting."""
    dtype = getattr(precision, "dtype", None)
    if dtype is None:  # fp32
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def _print(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
