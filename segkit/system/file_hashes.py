"""Image fingerprints remembered across commands, by each file's state.

A checkpoint records the fingerprints of its run's images (64-bit blake2b of each file's
bytes, :func:`segkit.training.checkpoint.image_fingerprint`); a resumed run takes them
again and ``segkit evaluate`` looks up the images it scores. :func:`cached_fingerprints`
hashes a file once: under ``$SEGKIT_CACHE/fingerprints/`` (the data check's cache folder,
:func:`segkit.system.files.cache_dir`) one small text file per folder of images holds each
file's name, size, modification time in nanoseconds and inode with its fingerprint, and a
file whose state is the same is not read again. A file edited in place (another size or
modification time) or replaced (another inode) is hashed again.

The cache never decides anything on its own and never fails a command:

- a cache file that cannot be read, or is damaged or of another version, is ignored (and
  rewritten with what this command hashed); a line that does not parse is skipped;
- a cache that cannot be written (read-only, full disk) remembers nothing;
- writes are atomic (a temporary file and a rename: :func:`~segkit.system.files.atomic_open`),
  and each writer merges its entries into the file as it is just before its write, so two
  commands at once (two runs on one dataset) leave a whole file; an entry one of them
  loses to the other's rename is hashed again next time;
- a file modified in the :data:`SETTLE_NS` before it was hashed is not remembered: an
  edit in the same tick of a coarse clock (FAT's 2 s) could keep its size and time.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from segkit.system.files import atomic_open, cache_dir

#: The first line's words; bump the version when the hash or the layout changes.
HEADER = "segkit-fingerprints 1"

#: A file modified this recently (ns) when it was hashed is not remembered.
SETTLE_NS = 2_000_000_000

#: Files fewer than this are hashed in the calling thread (a pool costs more than it saves).
POOL_FROM = 64

#: (size, mtime_ns, inode): what must be unchanged for a remembered fingerprint to stand.
State = tuple[int, int, int]


def cache_folder() -> Path:
    """Where the fingerprints are kept: ``$SEGKIT_CACHE/fingerprints`` (not created here)."""
    return cache_dir() / "fingerprints"


def _cache_file(folder: str) -> Path:
    key = hashlib.sha256(folder.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_folder() / f"{key}.txt"


def _read(path: Path) -> dict[str, tuple[State, int]]:
    """Name -> (state, fingerprint) of a cache file; {} where it is missing, unreadable,
    damaged or of another version (its lines that do not parse are left out)."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except (OSError, ValueError):
        return {}
    header, _, body = text.partition("\n")
    if header != HEADER:
        return {}
    out: dict[str, tuple[State, int]] = {}
    for line in body.split("\n"):
        fields = line.split(" ", 4)
        if len(fields) != 5 or not fields[4]:
            continue
        try:
            digest, size, mtime, inode = int(fields[0], 16), *map(int, fields[1:4])
        except ValueError:
            continue
        if not 0 <= digest < 2**64:
            continue
        signed = digest - 2**64 if digest >= 2**63 else digest  # as image_fingerprint's
        out[fields[4]] = ((size, mtime, inode), signed)
    return out


def _write(folder: str, new: dict[str, tuple[State, int]]) -> None:
    """Merge ``new`` (files of ``folder``) into its cache file as it is now, less the files
    gone from the folder, and write it atomically (best effort: a cache that cannot be
    written remembers nothing)."""
    path = _cache_file(folder)
    entries = _read(path) | new
    try:  # files gone from the folder are forgotten
        there = set(os.listdir(folder))
        entries = {name: entry for name, entry in entries.items() if name in there}
    except OSError:
        pass
    lines = [HEADER]
    for name, ((size, mtime, inode), digest) in entries.items():
        lines.append(f"{digest & (2**64 - 1):016x} {size} {mtime} {inode} {name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join(lines) + "\n")
    except (OSError, ValueError):
        pass


def _state(path: str | Path) -> tuple[str, str, State] | None:
    """``(folder, name, state)`` of the file ``path`` resolved; None where it cannot be
    stat'ed or its name cannot go on a line of the cache."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except (OSError, TypeError, ValueError):
        return None
    folder, name = os.path.split(real)
    if "\n" in name or "\r" in name:
        return None
    return folder, name, (st.st_size, st.st_mtime_ns, st.st_ino)


def cached_fingerprints(
    paths: Sequence[str | Path], fingerprint: Callable[[str | Path], int]
) -> list[int | None]:
    """``fingerprint(path)`` of each of ``paths``, in order, reading only the files whose
    state (resolved path, size, modification time, inode) is not the one remembered; None
    for a file that cannot be read (``fingerprint`` raised OSError, TypeError or ValueError).
    The files read are hashed by a few threads (the hash releases the GIL) and remembered."""
    states = [_state(p) for p in paths]
    remembered: dict[str, dict[str, tuple[State, int]]] = {}
    for st in states:
        if st is not None and st[0] not in remembered:
            remembered[st[0]] = _read(_cache_file(st[0]))
    out: list[int | None] = [None] * len(paths)
    todo: list[int] = []
    for i, st in enumerate(states):
        known = remembered[st[0]].get(st[1]) if st is not None else None
        if known is not None and st is not None and known[0] == st[2]:
            out[i] = known[1]
        else:
            todo.append(i)
    if not todo:
        return out
    started = time.time_ns()
    for i, got in zip(todo, _hash_all([paths[i] for i in todo], fingerprint), strict=True):
        out[i] = got
    new: dict[str, dict[str, tuple[State, int]]] = {}
    for i in todo:
        st, got = states[i], out[i]
        if st is None or got is None or st[2][1] > started - SETTLE_NS:
            continue
        # The state before the read: a file changed during it is read again next time.
        new.setdefault(st[0], {})[st[1]] = (st[2], got)
    for folder, entries in new.items():
        _write(folder, entries)
    return out


def _hash_all(
    paths: Sequence[str | Path], fingerprint: Callable[[str | Path], int]
) -> list[int | None]:
    def one(path: str | Path) -> int | None:
        try:
            return fingerprint(path)
        except (OSError, TypeError, ValueError):
            return None

    if len(paths) < POOL_FROM:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, paths, chunksize=32))
