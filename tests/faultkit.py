"""Tools of the fault campaign (tests/test_faults.py): running a process and proving that
none of its helpers outlives it, checking a run folder after a kill, and a seeded mutator
of image and mask files.

Processes are followed two ways, as the issue asks: by session (a run started with
``start_new_session=True`` leads its own session, which its fork server and workers
inherit) and by parent chain (torchrun's ranks start sessions of their own, so a watcher
thread records every descendant while the process runs). A process counts as gone when
its ``/proc`` entry is gone or a zombie (dead; this machine's init does not always reap).
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHIM = Path(__file__).resolve().parent / "fault_shim.py"

# --------------------------------------------------------------------------- processes


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """``(state, ppid, session, start time)`` of a live process, from /proc; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def _table() -> dict[int, tuple[str, int, int, int]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def related(root: int, session: int | None = None) -> dict[int, int]:
    """Live descendants of ``root`` (itself included) and members of ``session``, as
    ``pid -> start time`` (to tell a reused pid from the original)."""
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found[pid] = table[pid][3]
            todo += children.get(pid, [])
    if session is not None:
        found.update({p: st[3] for p, st in table.items() if st[2] == session})
    return {p: t for p, t in found.items() if table[p][0] != "Z"}


def still_alive(pids: dict[int, int]) -> set[int]:
    """Which of ``pids`` (pid -> start time) still run (zombies are dead)."""
    alive = set()
    for pid, start in pids.items():
        st = _stat(pid)
        if st is not None and st[0] != "Z" and st[3] == start:
            alive.add(pid)
    return alive


def describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd[:160]}")
    return out


@dataclass
class Finished:
    """What :func:`run` saw."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    #: Every process of the run (the process and its helpers), pid -> start time.
    members: dict[int, int]
    #: Those still alive ``gone_limit`` seconds after the process ended.
    leftover: set[int]
    #: Seconds from the end of the process until the last helper was gone.
    gone_s: float

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def error_lines(self) -> list[str]:
        """stderr's lines, less the note on a busy machine's CPU threads
        (:mod:`segkit.system.threads`), which depends on the load, not on the run."""
        return [
            ln
            for ln in self.stderr.splitlines()
            if ln.strip() and not ln.startswith("segkit: load average ")
        ]


def env_for_children(**extra: str) -> dict[str, str]:
    """The environment a spawned segkit needs: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    env.update(extra)
    return env


def run(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    kill_after: float | None = None,
    kill: Callable[[int, dict[int, int]], bool] | None = None,
    timeout: float = 300,
    gone_limit: float = 10,
    script: Path | None = None,
    file_size_limit: int | None = None,
) -> Finished:
    """Run ``python -m segkit ARGS`` (or ``python SCRIPT ARGS``) in a session of its own,
    recording its processes; SIGKILL it after ``kill_after`` seconds if it still runs, or
    poll ``kill(pid, members)`` every 0.1 s until it returns True (it does the harm it
    wants: kill the run, or one of its processes). Then wait up to ``gone_limit`` seconds
    for every process it had to end. ``file_size_limit``: the process's ``RLIMIT_FSIZE``
    (``ulimit -f``) in bytes, set in the child before it starts (its helpers inherit it).
    """
    cmd = [sys.executable, *([str(script)] if script else ["-m", "segkit"]), *args]
    preexec = None
    if file_size_limit is not None:
        import resource

        def preexec() -> None:  # in the forked child, before exec: the limit is inherited
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, hard))

    t0 = time.monotonic()
    with open(os.devnull, "rb") as null:
        proc = subprocess.Popen(
            cmd,
            stdin=null,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or env_for_children(),
            start_new_session=True,
            text=True,
            preexec_fn=preexec,
        )
    members: dict[int, int] = {}
    done = threading.Event()
    pending_kill = [kill]

    def watch() -> None:
        while not done.is_set():
            members.update(related(proc.pid, proc.pid))
            if pending_kill[0] is not None and pending_kill[0](proc.pid, dict(members)):
                pending_kill[0] = None
            if kill_after is not None and time.monotonic() - t0 >= kill_after:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                done.wait(0.1)
            done.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        stderr += f"\n[faultkit: killed after the {timeout} s time limit]"
    seconds = time.monotonic() - t0
    done.set()
    watcher.join()
    members.update(related(proc.pid, proc.pid))  # helpers that outlived it keep the session
    members.pop(proc.pid, None)
    end = time.monotonic()
    while True:
        left = still_alive(members)
        if not left or time.monotonic() - end > gone_limit:
            break
        time.sleep(0.05)
    gone_s = time.monotonic() - end
    for pid in left:  # leave nothing behind for the next test; the assertion reports them
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Finished(proc.returncode, stdout, stderr, seconds, members, left, gone_s)


# --------------------------------------------------------------------------- run folders


def temporaries(folder: Path) -> list[str]:
    from segkit.system.files import is_temporary

    return (
        sorted(p.name for p in folder.iterdir() if is_temporary(p.name)) if folder.is_dir() else []
    )


def folder_problems(folder: Path) -> list[str]:
    """What a kill must never leave in a run folder: an unloadable checkpoint, a
    metrics.csv with a partial, duplicate or out-of-order row, an unreadable JSON file.
    (Temporary files are counted separately: a kill mid-write leaves one until the next
    resume clears it.)"""
    import json

    from segkit.errors import CheckpointError
    from segkit.training import checkpoint as ckpt_io

    problems = []
    for name in ("best.pt", "last.pt"):
        if (folder / name).exists():
            try:
                ckpt_io.load(folder / name)
            except CheckpointError as e:
                problems.append(str(e))
    if (folder / "metrics.csv").exists():
        text = (folder / "metrics.csv").read_text()
        rows = list(csv.reader(io.StringIO(text)))
        if not text.endswith("\n"):
            problems.append("metrics.csv: the last row is partial (no newline)")
        header, body = rows[0], rows[1:]
        for row in body:
            if len(row) != len(header) or any(v == "" for v in row[: header.index("lr") + 1]):
                problems.append(f"metrics.csv: partial row {row}")
        epochs = [int(r[0]) for r in body if r and r[0].isdigit()]
        if epochs != list(range(1, len(epochs) + 1)):
            problems.append(f"metrics.csv: epochs {epochs} (a duplicate or a gap)")
    for name in ("config.json", "summary.json"):
        if (folder / name).exists():
            try:
                json.loads((folder / name).read_text())
            except ValueError as e:
                problems.append(f"{name}: {e}")
    return problems


def comparable(folder: Path) -> dict[str, object]:
    """What an interrupted and resumed run must share with an unbroken one: every epoch's
    training and validation numbers, the test scores and the summary's test metrics."""
    import json

    keep = ("epoch", "train_loss", "train_dice", "valid_loss", "valid_dice", "valid_iou", "lr")
    with (folder / "metrics.csv").open(newline="") as f:
        metrics = [{k: float(r[k]) for k in keep} for r in csv.DictReader(f)]
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "metrics": metrics,
        "test_scores": (folder / "test_scores.csv").read_text(),
        "summary": {k: summary[k] for k in ("test_dice", "test_iou", "best_epoch")},
    }


def same_numbers(a: dict[str, object], b: dict[str, object], rel: float = 1e-5) -> bool:
    def close(x: object, y: object) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rel)
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(close(p, q) for p, q in zip(x, y, strict=True))
        return x == y

    return close(a, b)


# --------------------------------------------------------------------------- fuzzed files


@dataclass
class Mutant:
    """One fuzzed file: which sample, which of its files, how it was made, and whether the
    file still holds the original content (so a reader must return the sample as it was)."""

    stem: str
    role: str  # "image" or "mask"
    mutation: str
    path: Path
    lossless: bool
    mask: np.ndarray = field(repr=False)  # the sample's 0/1 mask, as made


#: Mutations that keep the content, stored another way: a reader must return the sample
#: as it was. Per role, as a mask has no CMYK or progressive form.
LOSSLESS = {
    "image": ("png16", "palette", "wrong_ext", "progressive", "cmyk", "rgba", "grayscale"),
    "mask": ("png16", "palette", "wrong_ext", "one_bit", "rgb"),
}
#: Mutations that damage the file: a reader returns a well-formed sample or a DataError
#: naming the file.
DAMAGING = (
    "truncate",
    "bit_flips",
    "header",
    "zero_bytes",
    "empty",
    "garbage",
    "bomb",
    "huge_dims",
    "swap_format",
)


def _encode(array: object, fmt: str, **kw: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    im = array if isinstance(array, Image.Image) else Image.fromarray(array)
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png_by_hand(width: int, height: int, depth: int, colour: int, raw: bytes) -> bytes:
    """A PNG from its IHDR fields and filtered scanlines: PIL writes no 16-bit RGB PNG,
    and a bomb needs a header that promises more than its data hold."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def mutate(
    rng: random.Random, mutation: str, role: str, image: np.ndarray, mask: np.ndarray
) -> tuple[bytes, str]:
    """The bytes of one fuzzed file and the suffix to give it. ``image`` is RGB uint8,
    ``mask`` the 0/1 mask (uint8)."""
    from PIL import Image

    clean = _encode(image, "JPEG", quality=90) if role == "image" else _encode(mask, "PNG")
    suffix = ".jpg" if role == "image" else ".png"
    if mutation == "truncate":
        return clean[: rng.randint(0, len(clean) - 1)], suffix
    if mutation == "bit_flips":
        data = bytearray(clean)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), suffix
    if mutation == "header":
        data = bytearray(clean)
        for i in rng.sample(range(min(64, len(data))), rng.randint(1, 6)):
            data[i] = rng.randrange(256)
        return bytes(data), suffix
    if mutation == "zero_bytes":
        data = bytearray(clean)
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randint(1, 256))
        data[start:end] = bytes(end - start)
        return bytes(data), suffix
    if mutation == "empty":
        return b"", suffix
    if mutation == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 2048))), suffix
    if mutation == "bomb":  # a header declaring 0.4-4.2 gigapixels, a few bytes of data
        side = rng.choice([20_000, 40_000, 65_000])
        return _png_by_hand(side, side, 8, 0, bytes(4096)), suffix
    if mutation == "huge_dims":  # over segkit's limit, under PIL's own error threshold
        if role == "image":
            data = bytearray(clean)
            i = data.index(b"\xff\xc0")  # SOF0: length, precision, height, width
            data[i + 5 : i + 9] = (12_000).to_bytes(2, "big") * 2
            return bytes(data), suffix
        return _png_by_hand(12_000, 12_000, 8, 0, bytes(4096)), suffix
    if mutation == "swap_format":  # other content, a GIF or BMP, under the usual name
        return _encode(np.full((7, 5, 3), 128, np.uint8), rng.choice(["GIF", "BMP"])), suffix
    h, w = mask.shape
    if role == "mask":
        if mutation == "png16":
            return _encode(mask.astype(np.uint16), "PNG"), ".png"
        if mutation == "palette":  # indices = the values, as a labelling tool writes them
            im = Image.new("P", (w, h))
            im.putdata(mask.ravel().tolist())
            im.putpalette([0, 0, 0, 255, 255, 255])
            return _encode(im, "PNG"), ".png"
        if mutation == "wrong_ext":  # a BMP named .png
            return _encode(mask, "BMP"), ".png"
        if mutation == "one_bit":
            return _encode(mask.astype(bool), "PNG"), ".png"
        if mutation == "rgb":  # grey in three equal channels
            return _encode(np.dstack([mask] * 3), "PNG"), ".png"
    else:
        if mutation == "png16":
            rows = (image.astype(">u2") * 257).reshape(h, w * 3)
            return _png_by_hand(w, h, 16, 2, b"".join(b"\0" + r.tobytes() for r in rows)), ".png"
        if mutation == "palette":
            return _encode(Image.fromarray(image).quantize(16), "PNG"), ".png"
        if mutation == "wrong_ext":  # a PNG named .jpg
            return _encode(image, "PNG"), ".jpg"
        if mutation == "progressive":
            return _encode(image, "JPEG", quality=95, progressive=True), ".jpg"
        if mutation == "cmyk":
            return _encode(Image.fromarray(image).convert("CMYK"), "JPEG", quality=95), ".jpg"
        if mutation == "rgba":
            alpha = np.full((h, w, 1), 255, np.uint8)
            return _encode(np.concatenate([image, alpha], axis=2), "PNG"), ".png"
        if mutation == "grayscale":
            return _encode(image[..., 0], "PNG"), ".png"
    raise ValueError(f"{role} mutation {mutation!r}")


def write_fuzzed_folder(root: Path, count: int, seed: int, size: int = 24) -> list[Mutant]:
    """A ``folder``-layout dataset of ``count`` samples, each with exactly one fuzzed file
    (the image of even samples, the mask of odd ones) and a clean partner, all in the test
    split (train and valid list the first sample). Masks are 0/1 discs. Returns the
    mutants in sample order."""
    rng = random.Random(seed)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True)
    mutants = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        stem = f"f{i:04d}"
        cx, cy, r = rng.randint(6, size - 6), rng.randint(6, size - 6), rng.randint(3, 8)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)
        image = np.dstack([np.where(mask, 200 - 30 * c, 40 + 20 * c) for c in range(3)])
        image = image.astype(np.uint8)
        role = "image" if i % 2 == 0 else "mask"
        mutation = rng.choice([*LOSSLESS[role], *DAMAGING])
        data, suffix = mutate(rng, mutation, role, image, mask)
        path = root / ("images" if role == "image" else "masks") / f"{stem}{suffix}"
        path.write_bytes(data)
        if role == "image":
            (root / "masks" / f"{stem}.png").write_bytes(_encode(mask, "PNG"))
        else:
            (root / "images" / f"{stem}.png").write_bytes(_encode(image, "PNG"))
        mutants.append(Mutant(stem, role, mutation, path, mutation in LOSSLESS[role], mask))
    (root / "splits" / "test.txt").write_text("".join(f"{m.stem}\n" for m in mutants))
    for split in ("train", "valid"):  # one clean sample each: the folder reader wants them
        (root / "images" / f"{split}.png").write_bytes(_encode(image, "PNG"))
        (root / "masks" / f"{split}.png").write_bytes(_encode(mask, "PNG"))
        (root / "splits" / f"{split}.txt").write_text(f"{split}\n")
    return mutants


#: Side of the fuzzed images; the loaders resize to it (a no-op) for an exact mask check.
FUZZ_SIZE = 24


class _Remaining:
    """A dataset whose test split is the samples not read yet (the rest of the epoch a
    loader stopped in)."""

    def __init__(self, dataset: object, samples: list) -> None:
        self.root = dataset.root  # type: ignore[attr-defined]
        self.mask_spec = dataset.mask_spec  # type: ignore[attr-defined]
        self._samples = samples

    def samples(self, split: str) -> list:
        return list(self._samples)


def read_through(root: Path, loader: str, expected: dict[str, np.ndarray]) -> dict[str, dict]:
    """Read the test split of the fuzzed folder ``root`` through the loader plugin
    ``loader`` (batches of one, in order). A DataError ends the loader's epoch: the sample
    it names is recorded and a new loader reads on from the next one. Returns, per sample
    id, ``{"sample": {...checks}}``, ``{"data_error": message}`` or ``{"other": repr}``."""
    import segkit
    from segkit import registry
    from segkit.errors import DataError

    dataset = registry.create("datasets", "folder", root)
    recipe = segkit.create_recipe("type1", image_size=FUZZ_SIZE)
    mean = np.array(recipe.eval[-1].mean).reshape(3, 1, 1)
    std = np.array(recipe.eval[-1].std).reshape(3, 1, 1)
    remaining = dataset.samples("test")
    results: dict[str, dict] = {}
    while remaining:
        part = _Remaining(dataset, remaining)
        done = 0
        try:
            ld = registry.create("loaders", loader, part, "test", recipe, 1, train=False)
            for batch in ld:
                sample = remaining[done]
                image = batch.images[0].cpu().numpy()
                mask = batch.masks[0, 0].cpu().numpy()
                pixels = image * std * 255 + mean * 255  # back to 0-255
                results[sample.id] = {
                    "sample": {
                        "shape_ok": image.shape == (3, FUZZ_SIZE, FUZZ_SIZE),
                        "finite": bool(np.isfinite(image).all()),
                        "mask_ok": bool((mask == expected[sample.id]).all()),
                        "pixels": pixels.transpose(1, 2, 0).tolist(),
                    }
                }
                done += 1
            remaining = []
        except DataError as e:
            rest = remaining[done:]
            named = [s for s in rest if s.image.name in str(e) or s.mask.name in str(e)]
            bad = named[0] if named else rest[0]
            results[bad.id] = {"data_error": str(e), "named": bool(named)}
            remaining = [s for s in rest if s is not bad]
        except Exception as e:  # noqa: BLE001 -- reported; the test fails on any
            rest = remaining[done:]
            results[rest[0].id] = {"other": f"{type(e).__name__}: {e}"[:500]}
            remaining = rest[1:]
    return results


if __name__ == "__main__":  # python faultkit.py ROOT LOADER EXPECTED.npz OUT.json
    import json

    root, loader, expected_file, out = sys.argv[1:5]
    expected = dict(np.load(expected_file))
    Path(out).write_text(json.dumps(read_through(Path(root), loader, expected)))
