"""Checkpoints: written atomically, loaded safely.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)``: nothing in it can run code. It records the run
config (plugin names and options), so ``segkit evaluate`` and ``segkit predict`` rebuild
the model without being told which one it was. Its layout lives here alone:
:func:`training_state` writes it, :func:`restore_training` reads it back.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segkit.errors import CheckpointError

if TYPE_CHECKING:
    from segkit.config import RunConfig
    from segkit.precision import Precision

FORMAT = "segkit-checkpoint"
VERSION = 1


def training_state(
    config: RunConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    epoch: int,
    best: tuple[float, int],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """The checkpoint of a training run after ``epoch``: the config, model, optimizer and
    GradScaler state, the best (valid Dice, epoch) so far, the metrics history and every
    RNG state. The learning-rate schedule is not stored: resume recomputes its position."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "precision": precision.state_dict(),
        "epoch": epoch,
        "best_valid_dice": best[0],
        "best_epoch": best[1],
        "history": history,
        "rng": rng_state(),
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
    """
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    precision.load_state_dict(state["precision"])
    set_rng_state(state["rng"])
    best = (state["best_valid_dice"], state["best_epoch"])
    return state["epoch"] + 1, best, list(state["history"])


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same folder and a rename.

    A crash or a full disk during the write leaves the previous file at ``path`` intact.

    Raises:
        CheckpointError: the write failed; the message names the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a checkpoint is an ordinary output file
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_error(path, e) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def link_atomic(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (a hard link, or a copy where links are not
    supported), replacing ``dst`` atomically.

    The engine writes ``last.pt`` and then links ``best.pt`` to it when the epoch is the
    best so far: one write of a checkpoint instead of two (578 MB each for ResNet34-UNet
    with Adam's moments). A later ``save_atomic`` of ``last.pt`` renames a new file over
    the name, so the linked ``best.pt`` keeps its contents.

    Raises:
        CheckpointError: the link or copy failed; the message names ``dst``.
    """
    import shutil

    tmp = dst.with_name(f".{dst.name}.link.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # file systems without hard links
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_error(dst, e) from e


def _write_error(path: Path, e: OSError) -> CheckpointError:
    return CheckpointError(
        f"{path}: could not write checkpoint ({e.strerror or e}); the previous "
        "checkpoint, if any, is unchanged. Free disk space or choose another --out"
    )


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
