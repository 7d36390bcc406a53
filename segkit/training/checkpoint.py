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

import hashlib
import pickle
import random
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from segkit.contracts import SPLITS
from segkit.errors import CheckpointError, DataError
from segkit.system.file_hashes import cached_fingerprints
from segkit.system.files import atomic_open, os_hint, os_reason
from segkit.system.signals import signals_held
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
        threads: torch's CPU threads the run trains with: a resume of ``--threads auto``
            keeps them (CPU sums round differently on another count).
        plugins: Kind -> ``{"name", "distribution", "version"}`` of each plugin the run
            uses (``config.json``'s ``resolved.plugins``), so a checkpoint moved out of
            its run folder still names the package its model comes from.
    """

    epoch: int
    best: tuple[float, int]
    history: list[dict[str, Any]]
    early_stopping: dict[str, Any] | None = None
    threads: int | None = None
    plugins: dict[str, Any] | None = None


def training_state(parts: TrainingParts, precision: Precision, status: RunStatus) -> dict[str, Any]:
    """The checkpoint of a training run after ``status.epoch``: the config, model,
    optimizer and GradScaler state, the best epoch so far and its valid Dice (the best by
    ``--monitor``), the metrics history, every RNG state; with an EMA (``--ema``) its
    state under ``"ema"``; the early-stopping state under ``early_stopping``; under
    ``task`` the classes of a K-class run (:meth:`segkit.task.Task.record`; absent for
    binary); under ``plugins`` the distribution of each plugin used. The learning-rate schedule is not stored: resume recomputes its position.

    Args:
        parts: The run's built parts (:class:`segkit.build.Training`): its resolved
            ``config``, ``task``, ``model``, ``optimizer`` and ``ema`` are saved.
        precision: The precision object (its GradScaler state is saved).
        status: The epoch, best, history and early-stopping state.
    """
    extra: dict[str, Any] = {}
    if status.early_stopping is not None:
        extra["early_stopping"] = status.early_stopping
    if status.threads is not None:
        extra["threads"] = status.threads
    if status.plugins:
        extra["plugins"] = status.plugins
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
        **({"plugins": state["plugins"]} if "plugins" in state else {}),
        **{k: state[k] for k in ("splits", "fingerprints", "data_root") if k in state},
    }


def split_record(dataset: Any) -> dict[str, Any] | None:
    """Each split's size and a digest of its sample ids (what ``last.pt``, ``best.pt``
    and ``config.json`` record, so that a resume with another ``--data`` is checked to
    train on the same samples and ``segkit evaluate`` tells the run's own data from new
    data); None for a dataset that does not list its samples."""
    out = {}
    try:
        for split in SPLITS:
            try:
                ids = [str(s.id) for s in dataset.samples(split)]
            except DataError:  # a split the layout refuses to list (an empty one)
                ids = []
            digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
            out[split] = {"count": len(ids), "ids": digest}
    except Exception:  # noqa: BLE001 -- a dataset plugin without samples(): nothing recorded
        return None
    return out


def image_fingerprint(path: str | Path) -> int:
    """The 64-bit blake2b hash of an image file's bytes, as a signed int64 (what
    :func:`sample_fingerprints` records and ``segkit evaluate`` looks up)."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=8)).digest()
    return int.from_bytes(digest, "little", signed=True)


def fingerprints_of(samples: Sequence[Any]) -> list[int | None]:
    """:func:`image_fingerprint` of each sample's image, in order; None for an image that
    cannot be read. A file whose state (resolved path, size, modification time, inode) is
    the one remembered under ``$SEGKIT_CACHE/fingerprints`` is not read again
    (:func:`segkit.system.file_hashes.cached_fingerprints`); the others are read by a few
    threads (the hash releases the GIL) and remembered."""
    return cached_fingerprints([s.image for s in samples], image_fingerprint)


def split_fingerprints(dataset: Any) -> dict[str, list[tuple[Any, int | None]]] | None:
    """Each split's samples, in order, with their images' :func:`image_fingerprint` (None
    for one that cannot be read); a split the layout refuses to list (an empty one) has
    none. None for a dataset that does not list its samples."""
    out = {}
    try:
        for split in SPLITS:
            try:
                samples = list(dataset.samples(split))
            except DataError:  # a split the layout refuses to list (an empty one)
                samples = []
            out[split] = list(zip(samples, fingerprints_of(samples), strict=True))
    except Exception:  # noqa: BLE001 -- a dataset plugin without samples(): nothing recorded
        return None
    return out


def recordable(each: dict[str, list[tuple[Any, int | None]]]) -> dict[str, torch.Tensor]:
    """What a checkpoint records of :func:`split_fingerprints`: each split's fingerprints
    as a sorted int64 tensor (those of images that could not be read left out)."""
    return {
        split: torch.tensor(sorted({f for _, f in pairs if f is not None}), dtype=torch.int64)
        for split, pairs in each.items()
    }


def sample_fingerprints(dataset: Any) -> dict[str, torch.Tensor] | None:
    """Each split's images, as a sorted int64 tensor of their files' fingerprints
    (:func:`image_fingerprint`; 8 bytes an image: 26 KB for 3312 images), which ``last.pt`` and
    ``best.pt`` record beside :func:`split_record`'s digest so that ``segkit evaluate``
    finds the images of a folder that trained the model. The key is the image's bytes,
    not its name: a copy in another folder or under another name is found; another image
    under a training image's name is not taken for it; a re-encoded or resized copy is
    not found. None for a dataset that does not list its samples."""
    each = split_fingerprints(dataset)
    return None if each is None else recordable(each)


#: How many changed images a line names (the rest are counted).
NAMED = 5


@dataclass(frozen=True)
class Changed:
    """The images of a split whose bytes are none of those a checkpoint recorded for that
    split (:func:`changed_images`): the data changed under the same names since.

    Attributes:
        split: The split.
        images: Its images now.
        names: The changed images' file names, in the split's order.
        elsewhere: Split -> how many of them have the bytes of an image the checkpoint
            recorded in that other split (a train image now holding a test image's bytes).
    """

    split: str
    images: int
    names: tuple[str, ...]
    elsewhere: dict[str, int]

    def words(self, since: str) -> str:
        """``3 of 40 test images changed since SINCE (same names, other bytes): a.jpg,
        b.jpg, c.jpg``, then ``; 1 of them has the bytes of an image of its train split``
        where some have another split's."""
        n = len(self.names)
        shown = ", ".join(self.names[:NAMED])
        more = f" and {n - NAMED} more" if n > NAMED else ""
        words = (
            f"{n} of {self.images} {self.split} image{'s' if self.images != 1 else ''} "
            f"changed since {since} (same names, other bytes): {shown}{more}"
        )
        for split, k in self.elsewhere.items():
            whose = "it has" if n == 1 else f"{k} of them {'has' if k == 1 else 'have'}"
            what = "an image" if k == 1 else "images"
            words += f"; {whose} the bytes of {what} of its {split} split"
        return words


def changed_images(
    recorded: dict[str, torch.Tensor], split: str, pairs: Sequence[tuple[Any, int | None]]
) -> Changed | None:
    """The images of ``pairs`` (a split's samples with their fingerprints now,
    :func:`split_fingerprints`) whose bytes are not among those ``recorded`` (a
    checkpoint's :func:`sample_fingerprints`) for ``split``; None where none changed, or
    the checkpoint records no fingerprints of ``split``. An image that cannot be read is
    not counted (reading it fails with its own message)."""
    if split not in recorded:
        return None
    known = set(recorded[split].tolist())
    changed = [(s, f) for s, f in pairs if f is not None and f not in known]
    if not changed:
        return None
    others = {name: set(t.tolist()) for name, t in recorded.items() if name != split}
    elsewhere: dict[str, int] = {}
    for _, f in changed:
        found = next((name for name, held in others.items() if f in held), None)
        if found is not None:
            elsewhere[found] = elsewhere.get(found, 0) + 1
    names = tuple(Path(str(s.image)).name for s, _ in changed)
    return Changed(split, len(pairs), names, elsewhere)


class Fingerprinting:
    """:func:`sample_fingerprints` of a dataset, taken in a daemon thread from the moment
    the run's parts are built, so that reading and hashing every image overlaps the model's
    set-up and the first epoch (it reads each file once, and leaves it in the page cache for
    the loader) instead of adding to the set-up; :meth:`result` waits for it (the first
    checkpoint). A run stopped before then does not wait for it at exit. Files hashed
    before, unchanged, are not read again (:func:`fingerprints_of`)."""

    def __init__(self, dataset: Any) -> None:
        self._value: dict[str, torch.Tensor] | None = None
        self._each: dict[str, list[tuple[Any, int | None]]] | None = None
        self._thread = threading.Thread(
            target=self._take, args=(dataset,), name="segkit-fingerprints", daemon=True
        )
        self._thread.start()

    def _take(self, dataset: Any) -> None:
        self._each = split_fingerprints(dataset)
        self._value = None if self._each is None else recordable(self._each)

    def done(self, wait: float = 0.0) -> bool:
        """Whether the fingerprints are taken (waiting up to ``wait`` seconds for them)."""
        self._thread.join(wait)
        return not self._thread.is_alive()

    def result(self) -> dict[str, torch.Tensor] | None:
        """The fingerprints (None for a dataset that does not list its samples)."""
        self._thread.join()
        return self._value

    def changed_since(self, recorded: Any) -> list[Changed]:
        """Each split whose images changed under the same names since ``recorded`` (a
        checkpoint's fingerprints) was taken (:func:`changed_images`; waits for them);
        none where either side has no fingerprints."""
        self.result()
        if not isinstance(recorded, dict) or self._each is None:
            return []
        found = (changed_images(recorded, split, pairs) for split, pairs in self._each.items())
        return [c for c in found if c is not None]


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
            "the checkpoint holds model weights only (a best.pt), not the training state "
            "resume needs. Put the run's own last.pt back, or start a new run"
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


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written; the previous file at its name is intact.

    Attributes:
        path: The checkpoint.
        reason: Why, in words: the operating system's (``No space left on device``,
            ``File too large (the file-size limit, ulimit -f, is 4 MiB)``) where it gave one.
        hint: What to do about it, a sentence without its final stop.
    """

    def __init__(self, path: Path, reason: str, hint: str, then: str | None = None) -> None:
        self.path, self.reason, self.hint = Path(path), reason, hint
        super().__init__(
            f"{self.path}: could not write checkpoint ({reason}); the previous checkpoint, if "
            f"any, is unchanged. {hint}" + (f", then {then}" if then else "")
        )

    def then(self, step: str) -> CheckpointWriteError:
        """The same error, its message ending with the step that goes on after the fix
        (the engine adds the resume or restart command)."""
        return CheckpointWriteError(self.path, self.reason, self.hint, step)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same folder, synced to the
    disk, and a rename (:func:`segkit.system.files.atomic_open`).

    A crash, a kill or a full disk during the write leaves the previous file at ``path``
    intact.

    Raises:
        CheckpointWriteError: the write failed; the message names the path, the
            operating system's reason and what to do.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb", fsync=True) as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as e:  # torch's zip writer raises RuntimeError on a full disk
        raise _write_error(path, e) from e


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e``: itself, or the one torch's zip writer was handling when it
    raised its own ``[enforce fail at inline_container.cc:...] unexpected pos ...`` (the
    file object's ``write`` failed: a full disk, EFBIG past ``ulimit -f``)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _write_error(path: Path, e: BaseException) -> CheckpointWriteError:
    os_error = _os_error(e)
    if os_error is not None:
        hint = os_hint(os_error)
        return CheckpointWriteError(path, os_reason(os_error), hint[0].upper() + hint[1:])
    return CheckpointWriteError(
        path,
        f"{type(e).__name__}: {_first_sentence(str(e))}",
        "Check that the folder is on a working disk with room for the checkpoint",
    )


def _first_sentence(text: str, limit: int = 300) -> str:
    """The first sentence of a library's message (its first line, up to the first full
    stop), never cut inside a word; ``repr`` of nothing for an empty one."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.split(". ", 1)[0].rstrip(".")
    if len(line) > limit:
        line = line[:limit].rsplit(" ", 1)[0] + " ..."
    return line or "no message"


#: What a checkpoint file adds to the bytes of its tensors, generously: per tensor, its
#: zip record (a local header and a central directory entry with the record's name, and
#: padding to 64 bytes) and its pickle entry; per file, the pickled config, metrics
#: history and RNG states.
_BYTES_PER_TENSOR = 512
_BYTES_PER_FILE = 256 << 10


def expected_size(parts: TrainingParts, images: int = 0) -> int:
    """About how many bytes a training checkpoint (``last.pt``, the largest file a run
    writes) of ``parts`` takes, never less: the model's state (and the EMA's, with
    ``--ema``) and the optimizer's, measured from the built parts, the fingerprints of
    the run's ``images`` it records (:func:`sample_fingerprints`, 8 bytes an image, at
    most: duplicates are recorded once), plus the file's own
    overhead. Before the first step Adam has made no moments yet; they are counted as
    they will be, two per parameter of its dtype (three with ``amsgrad``), besides its
    step count (the optimizers :func:`segkit.build.build_optimizer` makes are Adam).

    What ``--out``'s file-size check (:func:`segkit.system.files.check_file_size`)
    compares with ``ulimit -f`` before the first epoch.
    """
    tensors = _tensors(parts.model.state_dict())
    if parts.ema is not None:
        tensors += _tensors(parts.ema.state_dict())
    optimizer = parts.optimizer
    if optimizer.state:  # a resumed run's, restored: measured
        tensors += _tensors(optimizer.state_dict()["state"])
        extra, count = 0, 0
    else:
        extra = count = 0
        for group in optimizer.param_groups:
            if "betas" in group:  # Adam, AdamW: exp_avg, exp_avg_sq (and max_exp_avg_sq)
                moments = 3 if group.get("amsgrad") else 2
            else:  # SGD: a momentum buffer, if any
                moments = 1 if group.get("momentum") else 0
            for p in group["params"]:
                extra += moments * p.numel() * p.element_size() + 8  # + the step count
                count += moments + 1
    if images:  # a tensor of fingerprints for each split
        extra, count = extra + 8 * images, count + len(SPLITS)
    data = sum(t.numel() * t.element_size() for t in tensors) + extra
    return data + (len(tensors) + count) * _BYTES_PER_TENSOR + _BYTES_PER_FILE


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


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
    has no idle core for a thread: see ``engine._write_in_background``); a Ctrl-C or
    SIGTERM arriving then is held until the write is done
    (:func:`segkit.system.signals.signals_held`).
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
            # Ctrl-C or SIGTERM now would cut the file (torch's writer reports it as a
            # failed write): they wait for the write, then stop the run.
            with signals_held():
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
            except BaseException as e:  # MemoryError, an object torch cannot save, ...
                self._error = CheckpointWriteError(
                    path,
                    f"{type(e).__name__}: {_first_sentence(str(e))}",
                    "Fix its cause (memory, or a part of the state that torch cannot save)",
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


def folder_given(path: Path) -> str:
    """What to say of a folder given where a checkpoint file is expected: the file to
    pass (its ``best.pt``, else its ``last.pt``), or that it holds neither."""
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            return f"{path} is a folder; pass the checkpoint file in it: {path / name}" + (
                " (the best epoch's weights)" if name == "best.pt" else ""
            )
    found = sorted(p.name for p in path.glob("*.pt"))[:3]
    held = f"; its .pt files: {', '.join(found)}" if found else ""
    return (
        f"{path} is a folder without best.pt or last.pt{held}: pass the path of a best.pt "
        "or last.pt in a run folder made by segkit run (a run writes them at the end of "
        "its first epoch)"
    )


def load(
    path: Path, map_location: str | torch.device = "cpu", *, then: str | None = None
) -> dict[str, Any]:
    """Load a segkit checkpoint with ``weights_only=True``.

    ``then``: what to do when the file is there but cannot be used, ending the message
    instead of the general advice (``--resume`` says how the run goes on without it).

    Raises:
        CheckpointError: the file is missing, truncated, damaged, not a segkit checkpoint,
            or holds pickled objects other than tensors and plain containers (refused
            unread). The message ends with what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(folder_given(path))
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found. Pass the path of a best.pt or last.pt in a run "
            "folder made by segkit run"
        )
    again = then or (
        "Copy it again from where it came from, or use another checkpoint of the run "
        "(best.pt or last.pt)"
    )
    wrong = damage(path)
    if wrong is not None:
        what, foreign = wrong
        advice = (
            (then or "Pass a best.pt or last.pt from a segkit run folder") if foreign else again
        )
        raise CheckpointError(f"{path}: {what}. {advice}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickling_reason(str(e))
        if "GLOBAL" in reason or "global" in reason:
            raise CheckpointError(
                f"{path}: refused: the file holds pickled objects that are not tensors or "
                f"plain containers, and loading it could run code (torch: {reason}). Load "
                "only checkpoints written by segkit (a run folder's best.pt or last.pt)"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint (torch: {reason}); the file is damaged or "
            f"was not written by torch.save. {again}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (torch: {_first_sentence(str(e))}); the "
            f"file is damaged or was not written by torch.save. {again}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a segkit checkpoint (no '{FORMAT}' marker). "
            + (then or "Pass a best.pt or last.pt from a segkit run folder")
        )
    return ckpt


def damage(path: Path) -> tuple[str, bool] | None:
    """What is wrong with the checkpoint file ``path``, found the cheap way (its size, its
    first bytes and a zip archive's directory; nothing is unpickled): the words (``not a
    readable checkpoint: the file is empty (0 bytes: ...)``), and whether the file is
    foreign (not a torch.save file at all) rather than damaged. None where these checks
    find nothing (:func:`load` may still refuse it).

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return (
            "not a readable checkpoint: the file is empty (0 bytes: a copy stopped before "
            "writing it, or the disk was full)",
            False,
        )
    # torch.save writes a zip archive (its legacy format, a bare pickle, starts with 0x80).
    # Anything else would reach the unpickler and be reported as "unsafe pickled objects",
    # which misleads someone who passed a JPEG or a text file by mistake.
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):
        return (
            f"not a checkpoint: a torch.save file is a zip archive, and this one starts "
            f"with {head!r}",
            True,
        )
    # A zip archive ends with its directory: a file cut short has none, and torch would
    # say "failed finding central directory" or "[Errno 22] Invalid argument".
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        return (
            f"not a readable checkpoint: the file is truncated (its {path.stat().st_size:,} "
            "bytes end before the directory that torch.save writes last: a copy or download "
            "stopped, or the disk was full)",
            False,
        )
    return None


def _unpickling_reason(text: str) -> str:
    """The reason in torch's weights-only unpickling error, which opens with general
    advice that is the same whatever went wrong (and suggests ``weights_only=False``,
    which segkit never does): the part after ``WeightsUnpickler error:`` where there is
    one, else the first line that is not advice."""
    if "WeightsUnpickler error:" in text:
        return _first_sentence(text.split("WeightsUnpickler error:", 1)[1])
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation", "(")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(advice):
            return _first_sentence(line)
    return _first_sentence(text)
