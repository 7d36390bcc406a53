"""Masks of 1, 2 and 4 bits, grey or palette, stored as TIFF read as their PNG twins (the
same stored values): by ``decode_raw_mask``, :func:`inspect_mask`, ``segkit data check``,
the check before a run and a 1-epoch run; and palettes of greys whose index 0 is white
("inverted") are refused in both formats, at every bit depth, in the file's own format's
words.

PIL writes 1-bit TIFFs and palette PNGs of 1, 2 and 4 bits, but no grey PNG of 2 or 4 bits
and no TIFF of 2 or 4 bits (nor does OpenCV; tifffile is not a dependency): those are
written byte by byte here, as other tools write them, and checked against PIL's and
OpenCV's (libtiff's) reading.
"""

from __future__ import annotations

import csv
import json
import shlex
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import ready_folder
from PIL import Image

from segkit import registry
from segkit.cli import main
from segkit.data.encoding import inspect_mask
from segkit.data.reading import decode_raw_mask
from segkit.errors import DataError

SIZE = 32
N = 6
BLACK_WHITE = [(0, 0, 0), (255, 255, 255)]


def label(i: int) -> np.ndarray:
    """A SIZE x SIZE 0/1 map with a 10 px square placed by ``i``."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    y, x = 4 + i % 5 * 3, 3 + i % 7 * 2
    m[y : y + 10, x : x + 10] = 1
    return m


def _packed(values: np.ndarray, bits: int) -> bytes:
    """Rows of ``bits`` per pixel, first pixel in the high bits, each row padded to a byte."""
    per = 8 // bits
    out = bytearray()
    for row in values:
        packed = bytearray((len(row) + per - 1) // per)
        for x, v in enumerate(row):
            packed[x // per] |= int(v) << (8 - bits * (x % per + 1))
        out += packed
    return bytes(out)


def tiff(
    values: np.ndarray,
    bits: int,
    palette: list[tuple[int, int, int]] | None = None,
    *,
    white0=False,
) -> bytes:
    """An uncompressed little-endian TIFF of one strip: grey (black is zero; white is zero
    where ``white0``) or, with ``palette``, a palette image, of ``bits`` per pixel."""
    h, w = values.shape
    data = _packed(values, bits)
    photometric = 3 if palette is not None else 0 if white0 else 1
    short = [(256, w), (257, h), (258, bits), (259, 1), (262, photometric), (277, 1), (278, h)]
    count = len(short) + 2 + (palette is not None)
    data_at = 8 + 2 + 12 * count + 4
    entries = [struct.pack("<HHIHH", tag, 3, 1, v, 0) for tag, v in short]
    entries += [
        struct.pack("<HHII", 273, 4, 1, data_at),
        struct.pack("<HHII", 279, 4, 1, len(data)),
    ]
    colour_map = b""
    if palette is not None:
        colours = palette + [(0, 0, 0)] * (2**bits - len(palette))
        table = [c[channel] * 257 for channel in range(3) for c in colours]
        colour_map = struct.pack(f"<{len(table)}H", *table)
        entries.append(struct.pack("<HHII", 320, 3, len(table), data_at + len(data)))
    entries.sort(key=lambda e: struct.unpack("<H", e[:2])[0])  # TIFF: tags in order
    ifd = struct.pack("<H", count) + b"".join(entries) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + data + colour_map


def grey_png(values: np.ndarray, bits: int) -> bytes:
    """A grey PNG (colour type 0) of ``bits`` per pixel."""
    h, w = values.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    per_row = len(_packed(values[:1], bits))
    packed = _packed(values, bits)
    rows = b"".join(b"\0" + packed[y * per_row : (y + 1) * per_row] for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, bits, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def write_mask(path: Path, values: np.ndarray, bits: int, kind: str) -> None:
    """``values`` as a ``kind`` mask (``grey``, ``palette``: index 0 black, ``inverted``:
    a palette of greys whose index 0 is white) of ``bits``, in the format of ``path``."""
    palette = None if kind == "grey" else BLACK_WHITE[::-1] if kind == "inverted" else BLACK_WHITE
    if path.suffix == ".tif" and (bits != 1 or palette is not None):
        path.write_bytes(tiff(values, bits, palette))
    elif palette is None:  # PIL writes 1-bit files itself
        if bits == 1:
            Image.fromarray(values.astype(bool)).save(path)
        else:
            path.write_bytes(grey_png(values, bits))
    else:  # a palette of 2**bits entries: PIL writes as many bits as that needs
        im = Image.fromarray(values, "P")
        colours = palette + [(0, 0, 0)] * (2**bits - len(palette))
        im.putpalette([v for c in colours for v in c])
        im.save(path, bits=bits)


def folder(root: Path, suffix: str, bits: int, kind: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(N):
        lab = label(i)
        Image.fromarray(40 + lab * 150).save(root / "images" / f"img{i:03d}.jpg")
        write_mask(root / "masks" / f"img{i:03d}{suffix}", lab, bits, kind)
    return root


def twins(tmp_path: Path, bits: int, kind: str) -> tuple[Path, Path]:
    """The PNG folder and its TIFF twin."""
    return (
        folder(tmp_path / "png", ".png", bits, kind),
        folder(tmp_path / "tif", ".tif", bits, kind),
    )


def check(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[int, dict, str]:
    """``segkit data check --json`` and the text report, as a user runs them."""
    rc = main(["data", "check", "--data", str(root), "--json"])
    report = json.loads(capsys.readouterr().out)
    main(["data", "check", "--data", str(root)])
    return rc, report, capsys.readouterr().out


def as_png(text: str, png: Path, tif: Path) -> str:
    """The TIFF folder's words as the PNG folder's would be."""
    return text.replace(str(tif), str(png)).replace(".tif", ".png").replace("TIFF", "PNG")


CASES = [(bits, kind) for bits in (1, 2, 4) for kind in ("grey", "palette")]


def test_the_tiff_writer_writes_what_pil_reads_at_each_depth(tmp_path: Path) -> None:
    values = (np.arange(SIZE * 3).reshape(3, SIZE) % 16).astype(np.uint8)
    for bits, mode in ((2, "L;2"), (4, "L;4")):
        path = tmp_path / f"g{bits}.tif"
        path.write_bytes(tiff(values % 2**bits, bits))
        with Image.open(path) as im:
            assert (im.format, im.tile[0].args[0]) == ("TIFF", mode)  # as image_mode reads it
            np.testing.assert_array_equal(np.asarray(im), values % 2**bits * (255 // (2**bits - 1)))
        path.write_bytes(tiff(values % 2**bits, bits, [(g, g, g) for g in range(2**bits)]))
        with Image.open(path) as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.asarray(im), values % 2**bits)
    # OpenCV (libtiff, not PIL) reads the 4-bit palette file's colours at the same pixels;
    # it reads no 2- or 4-bit grey TIFF, and no 2-bit palette one.
    bgr = cv2.imdecode(np.fromfile(tmp_path / "g4.tif", np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgr[..., 0], values)  # index g is grey g


@pytest.mark.parametrize(("bits", "kind"), CASES)
def test_a_low_bit_tiff_mask_reads_as_its_png_twin(tmp_path: Path, bits: int, kind: str) -> None:
    png, tif = twins(tmp_path, bits, kind)
    spec = registry.create("datasets", "folder", tif).mask_spec
    assert spec == registry.create("datasets", "folder", png).mask_spec
    for i in range(N):
        a, b = png / "masks" / f"img{i:03d}.png", tif / "masks" / f"img{i:03d}.tif"
        np.testing.assert_array_equal(decode_raw_mask(b), label(i))
        np.testing.assert_array_equal(decode_raw_mask(b), decode_raw_mask(a))
        pi, ti = inspect_mask(a, spec), inspect_mask(b, spec)
        assert (ti.kind, ti.values, ti.palette, ti.problem) == (
            pi.kind,
            pi.values,
            pi.palette,
            None,
        )
        assert ti.described == pi.described.replace("PNG", "TIFF")


@pytest.mark.parametrize(("bits", "kind"), CASES)
def test_data_check_and_the_run_check_pass_low_bit_tiff_masks_as_png_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bits: int, kind: str
) -> None:
    png, tif = twins(tmp_path, bits, kind)
    (prc, preport, ptext), (trc, treport, ttext) = check(capsys, png), check(capsys, tif)
    assert prc == trc == 0, ttext
    assert as_png(ttext, png, tif) == ptext
    assert treport["problems"] == preport["problems"] == []
    assert {k.replace("PNG", "TIFF"): n for k, n in preport["mask_formats"].items()} == (
        treport["mask_formats"]
    )
    assert treport["classes"] == preport["classes"]
    for root in (tif, png):
        ready = ready_folder(root)
        assert ready.bad == ready.warnings == []


@pytest.mark.parametrize("bits", [2, 4])
def test_a_white_is_zero_grey_tiff_reads_its_stored_values(tmp_path: Path, bits: int) -> None:
    # TIFF may store grey "white is zero", which PIL shows inverted (a stored 1 is 170 or
    # 238 at 2 or 4 bits): read as stored, it is its PNG twin's 0/1 mask.
    path = tmp_path / "m.tif"
    path.write_bytes(tiff(label(3), bits, white0=True))
    with Image.open(path) as im:
        assert set(np.unique(np.asarray(im))) == {255, 255 - 255 // (2**bits - 1)}
    np.testing.assert_array_equal(decode_raw_mask(path), label(3))
    spec = registry.create("datasets", "folder", folder(tmp_path / "f", ".png", 1, "grey"))
    info = inspect_mask(path, spec.mask_spec)
    assert info.problem is None and info.values == {0: int((label(3) == 0).sum()), 1: 100}
    assert info.described == f"TIFF {bits}-bit grey (white is zero)"


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_an_inverted_low_bit_palette_is_refused_in_both_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bits: int
) -> None:
    png, tif = twins(tmp_path, bits, "inverted")
    for root in (png, tif):
        with Image.open(next((root / "masks").iterdir())) as im:
            args = im.tile[0].args  # PNG: the raw mode; TIFF: (raw mode, offset, ...)
            assert im.mode == "P" and (args if isinstance(args, str) else args[0]) == f"P;{bits}"
    (prc, preport, ptext), (trc, treport, ttext) = check(capsys, png), check(capsys, tif)
    assert prc == trc == 1
    assert [p["kind"] for p in treport["problems"]] == [p["kind"] for p in preport["problems"]]
    assert as_png(ttext, png, tif) == ptext
    spec = registry.create("datasets", "folder", tif).mask_spec
    assert inspect_mask(tif / "masks" / "img000.tif", spec).problem.startswith(
        f"{tif / 'masks' / 'img000.tif'}: a palette TIFF of greys (index 0 white, index 1 "
        "black) whose indices disagree with its colours"
    )
    assert f"{N} are palette TIFFs of greys read by index against their colours" in ttext
    assert "PNG" not in ttext
    with pytest.raises(DataError, match=r"are palette TIFFs of greys read by index"):
        ready_folder(tif)
    with pytest.raises(DataError, match=r"are palette PNGs of greys read by index"):
        ready_folder(png)
    # The printed fix saves each TIFF as the grey image it shows (index 0 white: a white
    # background around a black square), which then passes.
    command = next(line for line in ttext.splitlines() if "python -c" in line)
    argv = shlex.split(command[command.index("python -c") :])
    monkeypatch.setattr(sys, "argv", ["-c", *argv[3:]])
    exec(argv[2], {})  # noqa: S102 -- exactly the printed command
    assert check(capsys, tif)[0] == 0
    for i in range(N):
        shown = (1 - label(i)) * 255
        np.testing.assert_array_equal(decode_raw_mask(tif / "masks" / f"img{i:03d}.tif"), shown)


def test_the_inverted_palette_message_names_each_format_of_a_mixed_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "mixed", ".png", 2, "inverted")
    for i in range(3):
        (root / "masks" / f"img{i:03d}.png").unlink()
        write_mask(root / "masks" / f"img{i:03d}.tif", label(i), 2, "inverted")
    rc, _, text = check(capsys, root)
    assert rc == 1
    assert f"{N} are palette PNGs and TIFFs of greys read by index" in text


@pytest.mark.slow
@pytest.mark.parametrize(("bits", "kind"), [(1, "grey"), (2, "palette"), (4, "grey")])
def test_a_run_on_low_bit_tiff_masks_trains_as_on_their_png_twins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bits: int, kind: str
) -> None:
    from conftest import TINY_RUN

    metrics = []
    for root in twins(tmp_path, bits, kind):
        out = tmp_path / f"runs-{root.name}"
        args = ["run", *TINY_RUN, "--data", str(root), "--epochs", "1", "--seed", "0"]
        assert main([*args, "--out", str(out), "--name", "r", "-q"]) == 0, capsys.readouterr()
        rows = list(csv.DictReader((out / "r" / "metrics.csv").open()))
        assert len(rows) == 1
        metrics.append({k: v for k, v in rows[0].items() if "loss" in k or "dice" in k})
    assert metrics[0] == metrics[1] and metrics[0]
