"""Checkpoints: written atomically, off the training path, loaded safely.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)``: nothing in it can run code. It records the run
config (plugin names and options), so ``segkit evaluate`` and ``segkit predict`` rebuild
the model without being told which one it was. Its layout lives here alone. There are
two kinds:

- the training state (``last.pt``): :func:`training_state` writes it,
  :func:`restore_training` reads it back; model, optimizer, GradScaler, RNG states and
  history, everything resume needs (578 MB for ResNet34-UNet with Adam's moments), and
  with ``--ema`` the averaged model's state (``"ema"``) besides the raw weights;
- the weights (``best.pt``): :func:`weights_state`, the model's ``state_dict`` and the
  config that rebuilds it (``"kind": "weights"``; a third of the size). Inference reads
  either kind, so an older run's full ``best.pt`` still works.

The engine writes them with :class:`BackgroundWriter`, each file through
:func:`save_atomic`: on an accelerator from a :class:`Snapshot` (a CPU copy of the
tensors, taken between epochs) in a thread while the next epoch trains, one write at a
time; on the CPU in the training loop.
"""

from __future__ import annotations

import pickle
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from segkit.errors import CheckpointError
from segkit.system.files import atomic_open
from segkit.training import ema as ema_mod

if TYPE_CHECKING:
    from segkit.config import RunConfig
    from segkit.training.precision import Precision

FORMAT = "segkit-checkpoint"
VERSION = 1


class TrainingParts(Protocol):
    """What :func:`training_state` saves of a run's built parts (a
    :class:`segkit.build.Training` is one)."""

    config: RunConfig  # resolved for the dataset
    task: Any  # a segkit.task.Task: its record() is saved
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: Any  # an AveragedModel (--ema), or None


@dataclass
class RunStatus:
    """Where a run stands after an epoch: what a training checkpoint records besides the
    parts.

    Attributes:
        epoch: The epoch just done.
        best: ``(valid Dice, epoch)`` of the best epoch so far by ``--monitor``.
        history: The metrics rows, one per epoch.
        early_stopping: The state of :class:`segkit.training.early_stopping.EarlyStopping`
            (the monitored best and the patience counter); a checkpoint without it
            resumes with the counter at 0.
    """

    epoch: int
    best: tuple[float, int]
    history: list[dict[str, Any]]
    early_stopping: dict[str, Any] | None = None


def training_state(parts: TrainingParts, precision: Precision, status: RunStatus) -> dict[str, Any]:
    """The checkpoint of a training run after ``status.epoch``: the config, model,
    optimizer and GradScaler state, the best epoch so far and its valid Dice (the best by
    ``--monitor``), the metrics history, every RNG state; with an EMA (``--ema``) its
    state under ``"ema"``; the early-stopping state under ``early_stopping``; under
    ``task`` the classes of a K-class run (:meth:`segkit.task.Task.record`; absent for
    binary). The learning-rate schedule is not stored: resume recomputes its position.

    Args:
        parts: The run's built parts (:class:`segkit.build.Training`): its resolved
            ``config``, ``task``, ``model``, ``optimizer`` and ``ema`` are saved.
        precision: The precision object (its GradScaler state is saved).
        status: The epoch, best, history and early-stopping state.
    """
    extra = {} if status.early_stopping is None else {"early_stopping": status.early_stopping}
    task = parts.task.record()
    if task:
        extra["task"] = task
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": parts.config.to_dict(),
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "precision": precision.state_dict(),
        "epoch": status.epoch,
        "best_valid_dice": status.best[0],
        "best_epoch": status.best[1],
        "history": status.history,
        "rng": rng_state(),
        **extra,
    }
    if parts.ema is not None:
        state["ema"] = parts.ema.state_dict()
    return state


def weights_state(state: dict[str, Any]) -> dict[str, Any]:
    """The weights-only checkpoint (``best.pt``) of a :func:`training_state`: the model's
    tensors (the same objects, not copies), the config and task (K classes) that rebuild
    the model, the epoch and its validation Dice. Enough for ``segkit evaluate`` and ``segkit predict``; not
    for resume. With an EMA (``--ema``) the weights are the EMA's: the ones validated."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "weights",
        "config": state["config"],
        "model": ema_mod.weights(state["ema"]) if "ema" in state else state["model"],
        "epoch": state["epoch"],
        "best_valid_dice": state["best_valid_dice"],
        "best_epoch": state["best_epoch"],
        **({"task": state["task"]} if "task" in state else {}),
    }


def restore_training(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
) -> tuple[int, tuple[float, int], list[dict[str, Any]]]:
    """Load a :func:`training_state` into built parts and restore the RNG states.

    Returns:
        ``(first epoch to run, (best valid Dice, best epoch), history)``.

    Raises:
        CheckpointError: ``state`` holds weights only (a ``best.pt``), not a training state.
    """
    if state.get("kind") == "weights" or "optimizer" not in state:
        raise CheckpointError(
            "the checkpoint holds model weights only (a best.pt); resume needs the training "
            "state in the run folder's last.pt"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    match_parameter_layout(optimizer)
    precision.load_state_dict(state["precision"])
    set_rng_state(state["rng"])
    best = (state["best_valid_dice"], state["best_epoch"])
    return state["epoch"] + 1, best, list(state["history"])


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t`` is contiguous in some memory format (so its strides can be copied)."""
    return t.is_contiguous() or (
        t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    )


def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each parameter-shaped state tensor (Adam's moments) its parameter's strides.

    A checkpoint may hold them in another layout than the built model's parameters (one
    saved contiguous, loaded into channels_last weights); the fused CUDA Adam then fails
    with "params, grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and
    layout". Values are unchanged.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        state = optimizer.state.get(p) or {}
        for key, v in state.items():
            if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                state[key] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same folder, synced to the
    disk, and a rename (:func:`segkit.system.files.atomic_open`).

    A crash, a kill or a full disk during the write leaves the previous file at ``path``
    intact.

    Raises:
        CheckpointError: the write failed; the message names the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb", fsync=True) as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as e:  # torch's zip writer raises RuntimeError on a full disk
        raise _write_error(path, e) from e


def _write_error(path: Path, e: Exception) -> CheckpointError:
    lines = str(e).splitlines()
    reason = (e.strerror if isinstance(e, OSError) else None) or (lines[0] if lines else repr(e))
    return CheckpointError(
        f"{path}: could not write checkpoint ({reason}); the previous "
        "checkpoint, if any, is unchanged. Free disk space or choose another --out"
    )


class Snapshot:
    """A CPU copy of a checkpoint's tensors, taken between epochs so that a background
    thread can write it while the next epoch changes the originals.

    The copies go into buffers kept from the previous snapshot (same shapes every epoch),
    so a snapshot after the first allocates nothing; CUDA tensors are copied without
    blocking into pinned buffers and waited for once. The buffers are reused, so a
    snapshot must not be taken while the previous one is being written
    (:meth:`BackgroundWriter.wait` first). They cost one checkpoint's worth of host memory.
    """

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []

    def take(self, state: Any) -> Any:
        """``state`` with every tensor replaced by its CPU copy and every dict, list and
        tuple rebuilt (later changes to the originals do not reach the copy)."""
        self._n = 0
        self._cuda = False
        copied = self._copy(state)
        if self._cuda:
            torch.cuda.synchronize()
        return copied

    def _copy(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj)
        if isinstance(obj, dict):
            return {k: self._copy(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._copy(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self._copy(v) for v in obj)
        return obj  # numbers, strings, None: immutable

    def _tensor(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        i = self._n
        self._n += 1
        buf = self._buffers[i] if i < len(self._buffers) else None
        if (
            buf is None
            or buf.shape != t.shape
            or buf.dtype != t.dtype
            or (buf.stride() != t.stride())
        ):
            pin = t.is_cuda and torch.cuda.is_available()
            # The same strides as the tensor: a channels_last weight's Adam moments must
            # come back channels_last (the fused CUDA Adam refuses mixed layouts).
            if _dense(t):
                buf = torch.empty_strided(
                    t.size(), t.stride(), dtype=t.dtype, device="cpu", pin_memory=pin
                )
            else:
                buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pin)
            if i < len(self._buffers):
                self._buffers[i] = buf
            else:
                self._buffers.append(buf)
        buf.copy_(t, non_blocking=t.is_cuda)
        self._cuda |= t.is_cuda
        return buf


class BackgroundWriter:
    """Writes checkpoints in a thread, one job at a time, each file with
    :func:`save_atomic` (a temporary file, fsync, rename): a crash, a kill or a full
    disk during a write leaves the previous file at each name loadable.

    :meth:`submit` starts a job; :meth:`wait` waits for the job in flight and raises its
    error, if it failed, as a :class:`CheckpointError` naming the file. The engine waits
    before the next snapshot, at the end of the run and on any error, so a failed write
    always surfaces. The thread is not a daemon: the interpreter finishes a write in
    flight before it exits.

    With ``background=False`` a job is written in the calling thread and its error
    raised by :meth:`submit` itself (the engine's choice when training on the CPU, which
    has no idle core for a thread: see ``engine._write_in_background``).
    """

    def __init__(self, saved_epoch: int | None = None, *, background: bool = True) -> None:
        #: The epoch of the newest training state written (``last.pt``), or None.
        self.saved_epoch = saved_epoch
        #: Whether jobs run in a thread (else in :meth:`submit`).
        self.background = background
        #: Seconds each finished job took in the thread.
        self.write_seconds: list[float] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, files: list[tuple[dict[str, Any], Path]], epoch: int | None) -> None:
        """Write each ``(state, path)`` in order, in the background. ``epoch`` is the
        epoch of the training state among them (None if there is none)."""
        self.wait()  # at most one write in flight (the engine has waited already)
        if not self.background:
            self._write(files, epoch)
            self.wait()  # raises its error now
            return
        self._thread = threading.Thread(
            target=self._write, args=(files, epoch), name="segkit-checkpoint", daemon=False
        )
        self._thread.start()

    def _write(self, files: list[tuple[dict[str, Any], Path]], epoch: int | None) -> None:
        t0 = time.perf_counter()
        for state, path in files:
            try:
                save_atomic(state, path)
            except CheckpointError as e:  # reported by wait(), in the training thread
                self._error = e
                return
            except BaseException as e:
                self._error = CheckpointError(
                    f"{path}: could not write checkpoint ({type(e).__name__}: {e}); the "
                    "previous checkpoint, if any, is unchanged"
                )
                self._error.__cause__ = e
                return
        self.write_seconds.append(time.perf_counter() - t0)
        if epoch is not None:
            self.saved_epoch = epoch

    def wait(self) -> None:
        """Wait for the job in flight, if any.

        Raises:
            CheckpointError: it failed; the message names the file and the reason
                (e.g. no space left on device). The previous file at that name is intact.
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and ints (``weights_only``-safe)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    v, s, g = state["python"]
    random.setstate((v, tuple(s), g))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a segkit checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated, not a segkit checkpoint, or holds
            pickled objects other than tensors and plain containers (refused unread).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (its legacy format, a bare pickle, starts with 0x80).
    # Anything else would reach the unpickler and be reported as "unsafe pickled objects",
    # which misleads someone who passed a JPEG or a text file by mistake.
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):
        raise CheckpointError(
            f"{path}: not a checkpoint (a torch.save file is a zip archive; this one starts "
            f"with {head!r}); pass a best.pt or last.pt from a segkit run folder"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: the file holds pickled objects that are not tensors or plain "
            f"containers, and loading it could run code ({str(e).splitlines()[0][:200]}). "
            "Only load checkpoints written by segkit"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:200]}); "
            "the file is truncated or not written by torch.save"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a segkit checkpoint (no '{FORMAT}' marker); pass a best.pt or "
            "last.pt from a segkit run folder"
        )
    return ckpt
