"""Image fingerprints are remembered by each file's state under $SEGKIT_CACHE/fingerprints:
an unchanged file is hashed once across commands, a changed one again; the cache file is
written atomically, merged with a concurrent writer's, and a damaged or unreadable one is
ignored and rewritten, never an error (segkit.system.file_hashes)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from segkit.system import file_hashes
from segkit.system.file_hashes import cached_fingerprints
from segkit.training import checkpoint as ckpt_io

#: The hash itself (a test replaces the module's name with a counting one).
HASH = ckpt_io.image_fingerprint

#: A modification time well before "now" (files this old are remembered).
OLD_NS = time.time_ns() - 3600 * 10**9


class Counting:
    """:func:`ckpt_io.image_fingerprint`, counting the files it reads."""

    def __init__(self) -> None:
        self.read: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, path: str | Path) -> int:
        with self.lock:
            self.read.append(Path(path).name)
        return HASH(path)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fingerprints"


def _images(folder: Path, n: int, *, old: bool = True) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img {i}.jpg"  # a space in the name: the name ends the cache line
        path.write_bytes(bytes([i]) * (100 + i))
        if old:
            os.utime(path, ns=(OLD_NS, OLD_NS))
        paths.append(path)
    return paths


def test_an_unchanged_file_is_hashed_once_across_calls(tmp_path: Path, cache: Path) -> None:
    paths = _images(tmp_path / "data", 4)
    counting = Counting()
    first = cached_fingerprints(paths, counting)
    assert first == [HASH(p) for p in paths]
    assert len(counting.read) == 4 and len(list(cache.iterdir())) == 1
    counting.read.clear()
    # Another call (another command): nothing read, the same fingerprints, by any path
    # that resolves to the same file.
    again = [tmp_path / "data" / ".." / "data" / p.name for p in paths]
    assert cached_fingerprints(again, counting) == first and counting.read == []


def test_a_changed_file_is_hashed_again(tmp_path: Path, cache: Path) -> None:
    a, b, c, d = _images(tmp_path / "data", 4)
    counting = Counting()
    cached_fingerprints([a, b, c, d], counting)
    counting.read.clear()
    a.write_bytes(b"other bytes, another size")  # another size
    os.utime(a, ns=(OLD_NS, OLD_NS))
    b.write_bytes(bytes([9]) * 101)  # the same size, another modification time
    os.utime(b, ns=(OLD_NS + 1, OLD_NS + 1))
    replaced = tmp_path / "new.jpg"  # the same size and time, another file renamed in
    replaced.write_bytes(bytes([7]) * 102)
    os.utime(replaced, ns=(OLD_NS, OLD_NS))
    os.replace(replaced, c)
    got = cached_fingerprints([a, b, c, d], counting)
    assert sorted(counting.read) == [a.name, b.name, c.name]
    assert got == [HASH(p) for p in (a, b, c, d)]


def test_a_file_modified_just_now_is_not_remembered(tmp_path: Path, cache: Path) -> None:
    """Its modification time may not yet tell the next edit (a coarse clock's tick)."""
    (fresh,) = _images(tmp_path / "data", 1, old=False)
    counting = Counting()
    cached_fingerprints([fresh], counting)
    cached_fingerprints([fresh], counting)
    assert counting.read == [fresh.name, fresh.name]


def test_unreadable_files_are_none_and_not_remembered(tmp_path: Path, cache: Path) -> None:
    (image,) = _images(tmp_path / "data", 1)
    missing = tmp_path / "data" / "gone.jpg"
    got = cached_fingerprints([missing, image, tmp_path / "data"], Counting())
    assert got == [None, HASH(image), None]


@pytest.mark.parametrize(
    "damage",
    [b"", b"\x00\xff garbage \x80", b"segkit-fingerprints 0\n", b"segkit-fingerprints 1\nzz 1 2"],
)
def test_a_damaged_cache_file_is_ignored_and_rewritten(
    tmp_path: Path, cache: Path, damage: bytes
) -> None:
    paths = _images(tmp_path / "data", 3)
    cached_fingerprints(paths, Counting())
    (file,) = cache.iterdir()
    file.write_bytes(damage)
    counting = Counting()
    assert cached_fingerprints(paths, counting) == [HASH(p) for p in paths]
    assert len(counting.read) == 3  # read again, and remembered again:
    counting.read.clear()
    cached_fingerprints(paths, counting)
    assert counting.read == []


def test_a_damaged_line_is_skipped_the_others_kept(tmp_path: Path, cache: Path) -> None:
    paths = _images(tmp_path / "data", 3)
    cached_fingerprints(paths, Counting())
    (file,) = cache.iterdir()
    lines = file.read_text().splitlines()
    lines[1] = lines[1][:20]  # cut short (a line of the first image)
    lines.append("ffffffffffffffffff 1 2 3 too-big.jpg")  # 72 bits: not a fingerprint
    file.write_text("\n".join(lines) + "\n")
    counting = Counting()
    cached_fingerprints(paths, counting)
    assert len(counting.read) == 1


def test_a_cache_that_cannot_be_read_or_written_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("SEGKIT_CACHE", str(blocked))
    paths = _images(tmp_path / "data", 2)
    counting = Counting()
    assert cached_fingerprints(paths, counting) == [HASH(p) for p in paths]
    assert cached_fingerprints(paths, counting) == [HASH(p) for p in paths]
    assert len(counting.read) == 4  # nothing remembered, nothing failed
    # A folder where its file would be: the same.
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    file = file_hashes._cache_file(str(paths[0].parent.resolve()))
    file.mkdir(parents=True)
    assert cached_fingerprints(paths, Counting()) == [HASH(p) for p in paths]


def test_a_writer_merges_what_another_wrote_meanwhile(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands on one folder at once: the second writer's file keeps the first's
    entries (it merges into the file as it is just before its rename)."""
    a, b = _images(tmp_path / "data", 2)
    real_write = file_hashes._write

    def slow_write(folder: str, new: dict) -> None:
        monkeypatch.setattr(file_hashes, "_write", real_write)
        cached_fingerprints([b], Counting())  # another command writes first
        real_write(folder, new)

    monkeypatch.setattr(file_hashes, "_write", slow_write)
    cached_fingerprints([a], Counting())
    counting = Counting()
    cached_fingerprints([a, b], counting)
    assert counting.read == []


def test_threads_writing_at_once_leave_a_whole_file(tmp_path: Path, cache: Path) -> None:
    """Eight writers on one folder's file, each with its own files: the file always reads
    back whole (atomic renames); what one lost to another's rename is hashed again, right."""
    paths = _images(tmp_path / "data", 40)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for _ in range(5):
                mine = paths[k::8]
                got = cached_fingerprints(mine, HASH)
                assert got == [HASH(p) for p in mine]
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    (file,) = cache.iterdir()
    assert file.read_text().startswith(file_hashes.HEADER + "\n")
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporaries left
    assert cached_fingerprints(paths, Counting()) == [HASH(p) for p in paths]


def test_files_gone_from_the_folder_are_forgotten(tmp_path: Path, cache: Path) -> None:
    a, b, c = _images(tmp_path / "data", 3)
    cached_fingerprints([a, b], Counting())
    b.unlink()
    cached_fingerprints([c], Counting())
    (file,) = cache.iterdir()
    names = [line.split(" ", 4)[4] for line in file.read_text().splitlines()[1:]]
    assert sorted(names) == [a.name, c.name]


def test_the_checkpoint_fingerprints_use_the_cache(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a run records and evaluate looks up (fingerprints_of) reads a file once."""
    from types import SimpleNamespace

    samples = [SimpleNamespace(image=p) for p in _images(tmp_path / "data", 70)]
    counting = Counting()
    monkeypatch.setattr(ckpt_io, "image_fingerprint", counting)
    first = ckpt_io.fingerprints_of(samples)  # 70: hashed by a pool of threads
    assert len(counting.read) == 70 and None not in first
    assert ckpt_io.fingerprints_of(samples) == first and len(counting.read) == 70
