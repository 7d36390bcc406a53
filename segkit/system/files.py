"""Output files that a process killed at any instant leaves whole or as they were.

Every file segkit writes into a run folder or a prediction folder goes through
:func:`atomic_open` (or :func:`atomic_path` for writers that want a path): the bytes go to
a hidden temporary file beside the target, which is renamed over it once complete. A
rename within one folder is atomic, so a reader, or a process resuming after a SIGKILL,
sees the old file or the new one, never half of one. Checkpoints are also synced to the
disk before the rename (``fsync=True``), so they survive a power cut as well.

A process killed during a write leaves that one temporary file behind;
:func:`remove_temporaries` clears them from a folder (``segkit run --resume`` does, even one
that refuses, and so does the next run that takes a run folder that records nothing; each
holding the folder's lock, so no live writer's file is taken). :func:`check_writable` tells
a command before any work that its output folder is read-only or full, and
:func:`check_file_size` that the file-size limit (``ulimit -f``) is below a file it will
write; :func:`os_reason` and :func:`os_hint` put an OSError in words for the messages.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from segkit.errors import ConfigError

#: The names of the temporary files: ``.<name>.<8 random characters>.tmp`` (``mkstemp``'s),
#: with the target's suffix after it when a writer needs it to pick the format; and the
#: fixed ``metrics.csv.tmp`` of older segkit versions.
_TEMPORARY = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$|^metrics\.csv\.tmp$")

#: Bytes :func:`check_writable` writes (and syncs) to prove there is room.
PROBE_BYTES = 1 << 20

#: What to do about each error an output file can meet, after the OS's own words.
_HINTS = {
    errno.ENOSPC: "free some space, or choose another folder",
    errno.EDQUOT: "free some space under your quota, or choose another folder",
    errno.EFBIG: "raise the limit (`ulimit -f unlimited` in the shell that starts segkit) or "
    "ask the administrator to raise it",
}


def os_reason(e: OSError) -> str:
    """The operating system's reason for ``e`` in words, e.g. ``No space left on device``
    or ``File too large (the file-size limit, ulimit -f, is 512 KiB)``."""
    reason = e.strerror or type(e).__name__
    if e.errno == errno.EFBIG:
        limit = file_size_limit()
        if limit is not None:
            reason += f" (the file-size limit, ulimit -f, is {_size(limit)})"
    return reason


def os_hint(e: OSError) -> str:
    """What to do about ``e``: free space, raise the file-size limit, or another folder."""
    return _HINTS.get(e.errno or 0, "choose another folder")


def file_size_limit() -> int | None:
    """This process's limit on the size of a file it writes (``ulimit -f``), in bytes, or
    None when there is none (or the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written: a write may be short (a file-size limit or a
    nearly full disk), and the next one then raises the reason (EFBIG, ENOSPC)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _temporary(path: Path, keep_suffix: bool) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.",
        suffix=".tmp" + (path.suffix if keep_suffix else ""),
        dir=path.parent,
    )
    os.fchmod(fd, 0o644)  # mkstemp makes 0600; these are ordinary output files
    return fd, tmp


@contextlib.contextmanager
def atomic_open(
    path: Path | str, mode: str = "w", *, fsync: bool = False, **kwargs: Any
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on leaving the block without an
    error, rename it to ``path`` (after ``fsync``, if asked); on an error, remove it.

    Args:
        path: The file to (re)write; its folder must exist.
        mode: ``"w"`` or ``"wb"``.
        fsync: Sync the data to the disk before the rename (checkpoints: a power cut
            then keeps the old file or the new one; a killed process does either way).
        **kwargs: For :func:`open` (``newline``, ``encoding``).

    Raises:
        OSError: creating, writing or renaming failed; the target is unchanged.
    """
    path = Path(path)
    fd, tmp = _temporary(path, keep_suffix=False)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Like :func:`atomic_open`, for a writer that takes a path (matplotlib, PIL): yields a
    temporary path with ``path``'s suffix, renamed to ``path`` when the block succeeds."""
    path = Path(path)
    fd, tmp = _temporary(path, keep_suffix=True)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of the temporary files of :func:`atomic_open`."""
    return _TEMPORARY.match(name) is not None


def remove_temporaries(folder: Path | str, of: set[str] | None = None) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder`` (not below it),
    or only those of the targets named in ``of``. Only call it while no other process
    writes there (those targets). Returns what was removed."""
    removed = []
    for entry in Path(folder).iterdir():
        found = _TEMPORARY.match(entry.name)
        if found and (of is None or found.group(1) in of) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def check_writable(
    folder: Path | str,
    what: str,
    *,
    create: bool = True,
    largest: int = 0,
    elsewhere: str = "choose another folder",
) -> Path:
    """Prove that files can be written in ``folder`` before any work: write, sync and
    remove :data:`PROBE_BYTES` bytes there, and check that the file-size limit
    (``ulimit -f``) lets the largest file the command will write through.

    Args:
        folder: The output folder.
        what: The option or role that named it, for the message (e.g. ``--out``).
        create: Make ``folder`` (and its parents) first; otherwise, if it does not exist
            yet, probe the nearest folder above it that does (it will be made there).
        largest: The size of the largest file the command will write, in bytes, for
            :func:`check_file_size` (0: not known yet).
        elsewhere: The other way out the message offers (a resumed run's folder is
            moved, not chosen again).

    Returns:
        ``folder`` as a Path.

    Raises:
        ConfigError: one line naming the folder, the reason (read-only file system,
            permission denied, no space left on device, a file in the way) and what to do.
    """
    folder = Path(folder)
    probed = folder
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        else:
            while not probed.exists() and probed != probed.parent:
                probed = probed.parent
        fd, tmp = _temporary(probed / "write-check", keep_suffix=False)
        try:
            _write_all(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)  # a full disk may only say so when the data reach it
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        reason, hint = os_reason(e), os_hint(e)
        in_way = next((p for p in (folder, *folder.parents) if p.exists()), folder)
        if isinstance(e, (FileExistsError, NotADirectoryError)) or not in_way.is_dir():
            it = "it" if in_way == folder else str(in_way)  # a file above the folder
            reason, hint = f"{it} is a file, not a folder", "choose another folder"
        hint = hint.replace("choose another folder", elsewhere)
        raise ConfigError(f"{what} {folder}: cannot write there ({reason}); {hint}") from None
    check_file_size(folder, what, largest)
    return folder


def check_file_size(folder: Path | str, what: str, largest: int) -> None:
    """Check that the file-size limit (``ulimit -f``) lets the largest file a command will
    write in ``folder`` through (a run's checkpoints: their size is known once its parts
    are built, after :func:`check_writable` has probed the folder).

    Args:
        folder: The output folder, for the message.
        what: The option or role that named it (e.g. ``--out``).
        largest: The size of the largest file, in bytes.

    Raises:
        ConfigError: one line naming the folder, the limit, the size and what to do.
    """
    limit = file_size_limit()
    if limit is not None and largest > limit:
        raise ConfigError(
            f"{what} {folder}: the file-size limit (ulimit -f) is {_size(limit)}, and this "
            f"run writes files of about {_size(largest)} (checkpoints); "
            f"{_HINTS[errno.EFBIG]}"
        )


def cache_dir() -> Path:
    """segkit's cache: ``$SEGKIT_CACHE``, or ``~/.cache/segkit`` (not created here)."""
    return Path(os.environ.get("SEGKIT_CACHE") or "~/.cache/segkit").expanduser()
