"""How a user's own files are read when they are not plain 8-bit RGB and 0/255 masks
(segkit.data.reading, segkit.data.encoding, segkit.data.check, segkit.data.prepare):
images of more than 8 bits, masks whose labels are in the alpha channel, splits whose
masks are all empty or all foreground, VOC-style 255 borders in binary masks, EXIF
orientation tags, and the threshold command for 0/1 masks.

Each test writes the folder a user would have: ``images/`` + ``masks/``, small images
with a square object.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ready_folder
from PIL import Image

from segkit import registry
from segkit.cli import main
from segkit.data.encoding import inspect_mask, threshold_command
from segkit.data.reading import decode_raw_mask, read_image, to_8bit
from segkit.errors import DataError

SIZE = 32
N = 12


def label(i: int) -> np.ndarray:
    """A SIZE x SIZE 0/1 map with a 10 px square placed by ``i``."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    y, x = 4 + i % 5 * 3, 3 + i % 7 * 2
    m[y : y + 10, x : x + 10] = 1
    return m


def folder(
    root: Path,
    mask: Callable[[int, np.ndarray], Image.Image],
    image: Callable[[int, np.ndarray], Image.Image] | None = None,
    *,
    n: int = N,
    image_suffix: str = ".jpg",
) -> Path:
    """``images/`` + ``masks/`` of ``n`` pairs: ``mask(i, label)`` and ``image(i, label)``
    (default: a grey JPEG with a brighter square) are saved as each file."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        lab = label(i)
        im = image(i, lab) if image else Image.fromarray(40 + lab * 150)
        im.save(root / "images" / f"img{i:03d}{image_suffix}")
        mask(i, lab).save(root / "masks" / f"img{i:03d}.png")
    return root


def plain(i: int, lab: np.ndarray) -> Image.Image:
    return Image.fromarray(lab * 255)


def alpha(i: int, lab: np.ndarray) -> Image.Image:
    """A white mask whose labels are drawn in its transparency."""
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = lab * 255
    return Image.fromarray(rgba)


def check(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[int, dict, str]:
    """``segkit data check --json`` and the text report, as a user runs them."""
    rc = main(["data", "check", "--data", str(root), "--json"])
    report = json.loads(capsys.readouterr().out)
    main(["data", "check", "--data", str(root)])
    return rc, report, capsys.readouterr().out


def kinds(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in report["problems"]:
        out.setdefault(p["kind"], []).append(p)
    return out


# ----------------------------------------------------------------------------- deep images


def test_a_16_bit_image_is_scaled_by_its_own_range_not_clipped(tmp_path: Path) -> None:
    # 12-bit camera data in a 16-bit PNG: PIL's own conversion clips it at 255.
    raw = label(0).astype(np.uint16) * 3000 + 900 + np.arange(SIZE, dtype=np.uint16)[None]
    Image.fromarray(raw).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode.startswith("I;16")
    assert (np.asarray(Image.open(tmp_path / "a.png").convert("RGB")) == 255).all()  # clipped

    rgb = read_image(tmp_path / "a.png")
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255
    expected = np.rint((raw - raw.min()) * 255.0 / (raw.max() - raw.min())).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    # The object stays brighter than the background: the information survives.
    assert rgb[..., 0][label(0) == 1].min() > rgb[..., 0][label(0) == 0].max()


def test_float_and_32_bit_images_are_scaled_and_flat_or_nan_ones_do_not_fail(
    tmp_path: Path,
) -> None:
    values = np.linspace(-1.5, 2.5, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    Image.fromarray(values).save(tmp_path / "f.tif")
    Image.fromarray((values * 1e6).astype(np.int32)).save(tmp_path / "i.tif")
    for name in ("f.tif", "i.tif"):
        rgb = read_image(tmp_path / name)
        assert (rgb.min(), rgb.max()) == (0, 255)
        assert (np.diff(rgb[..., 0].ravel().astype(int)) >= 0).all()  # order kept
    assert (to_8bit(np.full((4, 4), 7, np.uint16)) == 0).all()
    with_nan = np.array([[np.nan, 0.0], [1.0, np.inf]])
    np.testing.assert_array_equal(to_8bit(with_nan), [[0, 0], [255, 0]])


def test_data_check_says_how_deep_images_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(
        tmp_path / "deep",
        plain,
        lambda i, lab: Image.fromarray(lab.astype(np.uint16) * 2000 + 500),
        image_suffix=".png",
    )
    rc, report, text = check(capsys, root)
    assert rc == 0 and report["ok"]
    (note,) = kinds(report)["image_depth"]
    assert note["severity"] == "warning"
    assert "12 images" in note["message"] or "img000.png" in note["message"]
    assert "from its own darkest to its brightest value onto 0..255" in note["message"]
    assert "warning: " in text and "ok: nothing here would stop a run" in text


# ----------------------------------------------------------------------------- alpha masks


def test_a_mask_drawn_in_transparency_is_read_from_its_alpha(tmp_path: Path) -> None:
    lab = label(3)
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = 255  # one colour everywhere: white
    rgba[..., 3] = lab * 255
    Image.fromarray(rgba).save(tmp_path / "m.png")
    np.testing.assert_array_equal(decode_raw_mask(tmp_path / "m.png"), lab * 255)

    # Opaque: the colour is the mask, as before.
    rgba[..., 3] = 255
    rgba[..., :3] = (lab * 255)[..., None]
    Image.fromarray(rgba).save(tmp_path / "o.png")
    np.testing.assert_array_equal(decode_raw_mask(tmp_path / "o.png"), lab * 255)

    # A drawn mask with a see-through white background: the background reads 0.
    rgba[..., 3] = lab * 255
    rgba[..., :3] = 255
    rgba[lab == 1, :3] = 200
    Image.fromarray(rgba).save(tmp_path / "t.png")
    got = decode_raw_mask(tmp_path / "t.png")
    assert (got[lab == 0] == 0).all() and (got[lab == 1] > 0).all()


def test_alpha_masks_pass_the_check_with_their_true_foreground(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "alpha", alpha)
    assert inspect_mask(
        root / "masks" / "img000.png", registry.create("datasets", "folder", root).mask_spec
    ).from_alpha
    rc, report, _ = check(capsys, root)
    assert rc == 0 and report["ok"]
    fraction = report["splits"]["train"]["foreground_fraction"]
    assert 0.05 < fraction < 0.2  # a 10 px square in 32 x 32, not 100%
    assert report["suggestions"]["pos_weight"]["value"] > 1


# ----------------------------------------------------------------------------- degenerate


def test_every_train_mask_empty_stops_the_check_and_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "empty", lambda i, lab: Image.fromarray(lab * 0))
    rc, report, text = check(capsys, root)
    assert rc != 0 and not report["ok"]
    problems = kinds(report)["foreground"]
    train = [p for p in problems if "every train mask" in p["message"]]
    assert train and train[0]["severity"] == "error"
    assert "is empty (found only 0: background is 0); a model would learn" in text
    assert {p["severity"] for p in problems if "train" not in p["message"]} <= {"warning"}
    assert report["suggestions"]["pos_weight"]["value"] is None
    with pytest.raises(DataError, match=r"every train mask \(\d+\) is empty.*segkit data check"):
        ready_folder(root)


def test_every_train_mask_full_stops_and_no_pos_weight_of_zero_is_suggested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "full", lambda i, lab: Image.fromarray(np.full_like(lab, 255)))
    rc, report, text = check(capsys, root)
    assert rc != 0
    assert "is foreground everywhere (found only 255; every value but 0" in text
    pos = report["suggestions"]["pos_weight"]
    assert pos["value"] is None and "no background" in pos["why"]
    assert "pos_weight=0" not in text
    with pytest.raises(DataError, match="is foreground everywhere"):
        ready_folder(root)


def test_an_empty_test_split_is_only_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "ok", plain)
    dataset = registry.create("datasets", "folder", root)
    for s in dataset.samples("test"):  # blank the test masks only
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(s.mask)
    rc, report, _ = check(capsys, root)
    assert rc == 0 and report["ok"]
    (p,) = kinds(report)["foreground"]
    assert p["severity"] == "warning" and "test mask" in p["message"]
    ready_folder(root)  # trains


# ----------------------------------------------------------------------------- VOC borders


def test_binary_masks_with_1_and_255_borders_are_warned_with_the_classes_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def voc(i: int, lab: np.ndarray) -> Image.Image:
        m = lab.copy()
        grown = np.zeros_like(m)
        ys, xs = np.nonzero(m)
        grown[ys.min() - 1 : ys.max() + 2, xs.min() - 1 : xs.max() + 2] = 1
        m[(grown == 1) & (lab == 0)] = 255  # a 1 px void border
        im = Image.fromarray(m, "P")
        im.putpalette([0, 0, 0, 128, 0, 0] + [0] * (3 * 253) + [224, 224, 192])
        return im

    root = folder(tmp_path / "voc", voc)
    rc, report, _ = check(capsys, root)
    assert rc == 0
    (w,) = kinds(report)["void_border"]
    assert "hold both 1 and 255" in w["message"]
    assert "--dataset-opt classes=background,object" in w["message"]
    # The advice works: declared as two classes, 255 is ignored.
    rc = main(
        [
            "data",
            "check",
            "--data",
            str(root),
            "--dataset-opt",
            "classes=background,object",
            "--json",
        ]
    )
    fixed = json.loads(capsys.readouterr().out)
    assert rc == 0 and "void_border" not in kinds(fixed)
    assert fixed["splits"]["train"]["class_pixels"]["ignored"] > 0


# ----------------------------------------------------------------------------- EXIF


class _Rotated:
    """A JPEG stored as ``array`` with EXIF orientation 6 (shown turned a quarter)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def save(self, path: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(self.array).save(path, exif=exif, quality=95)


def test_a_square_image_with_an_exif_rotation_is_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "exif", plain, lambda i, lab: _Rotated(40 + lab * 150))
    rc, report, _ = check(capsys, root)
    assert rc == 0
    (w,) = kinds(report)["orientation"]
    assert "EXIF orientation tag" in w["message"] and "ImageOps.exif_transpose" in w["message"]


def test_a_mask_drawn_on_the_rotated_image_names_the_exif_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = np.zeros((20, SIZE), np.uint8)
    root = folder(
        tmp_path / "turned",
        lambda i, lab: Image.fromarray(np.zeros((SIZE, 20), np.uint8)),  # the shown size
        lambda i, lab: _Rotated(wide),
    )
    rc, report, text = check(capsys, root)
    assert rc != 0
    size = kinds(report)["size_mismatch"][0]["message"]
    assert "EXIF orientation tag (6)" in size and "drawn on the rotated image" in size
    # A non-square image whose mask has the stored size is not in doubt: no warning.
    stored = folder(
        tmp_path / "stored",
        lambda i, lab: Image.fromarray(np.zeros((20, SIZE), np.uint8) + (lab[:20] * 255)),
        lambda i, lab: _Rotated(wide + lab[:20] * 100),
    )
    rc, report, _ = check(capsys, stored)
    assert rc == 0 and "orientation" not in kinds(report)


# ----------------------------------------------------------------------------- threshold


def test_the_threshold_command_keeps_0_1_masks(tmp_path: Path) -> None:
    lab = label(2)
    Image.fromarray(lab).save(tmp_path / "a.jpg", quality=95)  # 0/1: looks black
    Image.fromarray(lab * 255).save(tmp_path / "b.jpg", quality=95)
    Image.fromarray(lab * 0).save(tmp_path / "c.jpg", quality=95)
    code = re.search(r'python -c "(.+)"$', threshold_command(tmp_path, [".jpg"])).group(1)
    exec(code)  # noqa: S102 -- exactly the printed command
    for name, fg in (("a", True), ("b", True), ("c", False)):
        out = np.asarray(Image.open(tmp_path / f"{name}.png"))
        assert set(np.unique(out)) <= {0, 255}
        if fg:
            assert abs(int((out == 255).sum()) - int(lab.sum())) <= 8
        else:
            assert not out.any()


def test_the_dali_loader_gets_deep_images_and_alpha_masks_as_the_other_loader_reads_them(
    tmp_path: Path,
) -> None:
    import io

    from segkit.data.reading import read_raw_mask
    from segkit_dali._loader import read_encoded

    root = folder(
        tmp_path / "deep",
        alpha,
        lambda i, lab: Image.fromarray(lab.astype(np.uint16) * 2000 + 500),
        n=4,
        image_suffix=".png",
    )
    dataset = registry.create("datasets", "folder", root)
    sample = dataset.samples("train")[0]
    image, mask, _ = read_encoded(sample, dataset.mask_spec)
    decoded = np.asarray(Image.open(io.BytesIO(image.tobytes())).convert("RGB"))
    np.testing.assert_array_equal(decoded, read_image(sample.image))
    decoded = np.asarray(Image.open(io.BytesIO(mask.tobytes())))
    np.testing.assert_array_equal(decoded, read_raw_mask(sample.mask, dataset.mask_spec))


# ----------------------------------------------------------------------------- palette greys


def _two_colour_palette(index_of_object: int, colours: list[int]) -> Callable:
    """Palette masks: the object at index ``index_of_object``, the rest at the other of
    0/1; ``colours``, the palette's first two RGB entries."""

    def save(i: int, lab: np.ndarray) -> Image.Image:
        indices = np.where(lab == 1, index_of_object, 1 - index_of_object).astype(np.uint8)
        im = Image.fromarray(indices, "P")
        im.putpalette(colours)
        return im

    return save


def test_a_palette_of_greys_read_against_its_colours_is_refused_with_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Index 0 painted white, index 1 black, the object white: a viewer shows a white
    # object on black; by index the object would be background and the rest foreground.
    root = folder(tmp_path / "inv", _two_colour_palette(0, [255, 255, 255, 0, 0, 0]))
    rc, report, text = check(capsys, root)
    assert rc == 1
    refused = [p for p in report["problems"] if p["severity"] == "error"]
    assert len(refused) == N
    assert all("indices disagree with its colours" in p["message"] for p in refused)
    assert "the inverse of the mask shown" in text
    with pytest.raises(DataError, match="indices disagree with their colours"):
        ready_folder(root)
    # The printed command saves each as the grey image it shows; then the check passes
    # and the object is the foreground.
    line = next(ln for ln in text.splitlines() if "convert('L')" in ln)
    code, files = re.search(r'python -c "(.+)" (.+)$', line).groups()
    argv, sys.argv = sys.argv, ["-c", *files.split()]
    try:
        exec(code, {})  # noqa: S102 -- exactly the printed command, as python -c runs it
    finally:
        sys.argv = argv
    rc, report, _ = check(capsys, root)
    assert rc == 0
    mask = decode_raw_mask(root / "masks" / "img000.png")
    np.testing.assert_array_equal(mask != 0, label(0) == 1)


@pytest.mark.parametrize(
    "colours",
    [[0, 0, 0, 255, 255, 255], [0, 0, 0, 128, 0, 0]],  # black/white; VOC's first two
    ids=["black-white", "voc"],
)
def test_palette_masks_whose_index_0_is_black_or_coloured_are_read_by_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], colours: list[int]
) -> None:
    root = folder(tmp_path / "pal", _two_colour_palette(1, colours))
    rc, report, _ = check(capsys, root)
    assert rc == 0, report["problems"]
    dataset = ready_folder(root).dataset
    sample = dataset.samples("train")[0]
    i = int(sample.image.stem[3:])
    np.testing.assert_array_equal(decode_raw_mask(sample.mask), label(i))


def test_the_exif_command_printed_by_check_and_run_turns_the_tagged_images_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = np.zeros((20, SIZE), np.uint8)

    def image(i: int, lab: np.ndarray) -> Image.Image | _Rotated:
        pixels = wide + 10 * i  # no two the same
        return _Rotated(pixels) if i < 3 else Image.fromarray(pixels)

    def mask(i: int, lab: np.ndarray) -> Image.Image:
        stored = wide.copy()
        stored[2:8, 3:12] = 255
        return Image.fromarray(stored.T.copy() if i < 3 else stored)  # the shown size

    root = folder(tmp_path / "turned", mask, image)
    untagged = (root / "images" / "img005.jpg").read_bytes()
    rc, report, text = check(capsys, root)
    assert rc == 1 and len(kinds(report)["size_mismatch"]) == 3
    with pytest.raises(DataError, match=r"EXIF orientation tag \(6\)") as caught:
        ready_folder(root)  # a run (either loader) says the same before training
    code = re.search(r'python -c "(.+?)"', str(caught.value)).group(1)
    assert code in text
    exec(code, {})  # noqa: S102 -- exactly the printed command, as python -c runs it
    rc, report, _ = check(capsys, root)
    assert rc == 0, report["problems"]
    assert (root / "images" / "img005.jpg").read_bytes() == untagged


def test_a_mask_of_swapped_sides_or_another_scale_is_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "sizes", plain, lambda i, lab: Image.fromarray(lab[:, :20] * 200))
    Image.fromarray(label(0)[:20, :].copy()).save(root / "masks" / "img000.png")  # swapped
    Image.fromarray(label(1)[::2, :10].copy()).save(root / "masks" / "img001.png")  # half
    Image.fromarray(label(2)[:, :21].copy()).save(root / "masks" / "img002.png")  # one px
    rc, report, _ = check(capsys, root)
    said = {Path(p["file"]).name: p["message"] for p in kinds(report)["size_mismatch"]}
    assert "sides swapped" in said["img000.png"]
    assert "0.5 times its size" in said["img001.png"] and "nearest-neighbour" in said["img001.png"]
    assert "differ by a pixel or two" in said["img002.png"]
    Image.fromarray(label(2)[:, :25].copy()).save(root / "masks" / "img002.png")  # 5 px off
    _, report, _ = check(capsys, root)
    said = {Path(p["file"]).name: p["message"] for p in kinds(report)["size_mismatch"]}
    assert said["img002.png"].endswith("must have the same size")  # nothing to suggest


# ----------------------------------------------------------------------------- 16-bit colour


def _deep_colour(path: Path, lab: np.ndarray, alpha: bool = False) -> np.ndarray:
    """A 48-bit (or 64-bit with ``alpha``) PNG of 12-bit values (0..4095, as cameras and
    microscopes store them in 16-bit files): PIL would keep their top 8 bits, 0..15.
    Returns the RGB values written."""
    import cv2

    lab = lab.astype(np.uint16)
    rgb = np.zeros((*lab.shape, 3), np.uint16)
    rgb[..., 0] = 400 + lab * 3000
    rgb[..., 1] = 4095 - lab * 2000
    rgb[..., 2] = 1000
    bgr = rgb[..., ::-1]
    if alpha:
        bgr = np.dstack([bgr, np.full(lab.shape, 65535, np.uint16)])
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))
    return rgb


@pytest.mark.parametrize("alpha", [False, True], ids=["rgb48", "rgba64"])
def test_a_16_bit_colour_image_is_scaled_not_cut_to_its_top_8_bits(
    tmp_path: Path, alpha: bool
) -> None:
    lab = label(3)
    rgb = _deep_colour(tmp_path / "deep.png", lab, alpha)
    with Image.open(tmp_path / "deep.png") as im:  # what PIL alone makes of it
        assert np.asarray(im.convert("RGB")).max() <= 15
    image = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(image, to_8bit(rgb))  # one scale for the three channels
    assert image.max() == 255 and image[..., 2].max() == round(600 * 255 / 3695)
    from segkit.inference.predictor import as_rgb

    with Image.open(tmp_path / "deep.png") as im:  # predict's Python API, given PIL's image
        np.testing.assert_array_equal(as_rgb(im), image)
    data = (tmp_path / "deep.png").read_bytes()  # a server's upload: the bytes, a file object
    np.testing.assert_array_equal(as_rgb(data), image)
    with open(tmp_path / "deep.png", "rb") as f:
        np.testing.assert_array_equal(as_rgb(f), image)


def test_16_bit_colour_images_read_the_same_with_both_loaders_and_are_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from segkit_dali._loader import read_encoded

    root = folder(tmp_path / "deep", plain, n=6)
    for path in (root / "images").iterdir():
        path.unlink()
        _deep_colour(path.with_suffix(".png"), label(int(path.stem[3:])))
    rc, report, text = check(capsys, root)
    assert rc == 0
    (note,) = kinds(report)["image_depth"]
    assert "more than 8 bits per channel (PNG RGB;16)" in note["message"]
    assert "PNG RGB;16 6" in text  # the image formats line
    dataset = registry.create("datasets", "folder", root)
    sample = dataset.samples("train")[0]
    encoded, _, _ = read_encoded(sample, dataset.mask_spec)  # what DALI decodes
    decoded = np.asarray(Image.open(io.BytesIO(encoded.tobytes())).convert("RGB"))
    np.testing.assert_array_equal(decoded, read_image(sample.image))
    assert decoded.max() == 255


# ----------------------------------------------------------------------------- mask files


def test_a_jpeg_mask_renamed_png_is_not_told_to_be_renamed_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def jpeg(i: int, lab: np.ndarray) -> _Jpeg:
        return _Jpeg(lab * 255)

    root = folder(tmp_path / "renamed", jpeg)
    rc, report, text = check(capsys, root)
    assert rc == 1
    warned = kinds(report)["format_mismatch"]
    assert len(warned) == N
    assert all("does not make it lossless" in w["message"] for w in warned)
    assert "rename it to" not in text
    assert "threshold" in text  # the blurred masks' fix


class _Jpeg:
    """A JPEG file, whatever name it is saved under."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def save(self, path: Path) -> None:
        Image.fromarray(self.array).save(path, format="JPEG", quality=75)


def test_1_bit_masks_are_not_counted_as_a_0_1_source_among_0_255_masks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(
        tmp_path / "onebit",
        lambda i, lab: Image.fromarray(lab * 255).convert("1") if i < 3 else plain(i, lab),
    )
    rc, report, _ = check(capsys, root)
    assert rc == 0
    assert not any("mix encodings" in p["message"] for p in report["problems"])
    # A true 0/1 mask among them is still named.
    Image.fromarray(label(5)).save(root / "masks" / "img005.png")
    _, report, _ = check(capsys, root)
    (mixed,) = [p for p in report["problems"] if "mix encodings" in p["message"]]
    assert "0/1 (1 mask: img005.png)" in mixed["message"]


# ----------------------------------------------------------------------------- transparency


def _cut_out(i: int, lab: np.ndarray) -> Image.Image:
    """An RGBA cut-out: the object opaque, the rest transparent over black."""
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = (lab * 200)[..., None]
    rgba[..., 3] = lab * 255
    return Image.fromarray(rgba)


def test_images_with_transparent_pixels_are_warned_and_read_as_stored_under_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "cut", plain, _cut_out, image_suffix=".png")
    rc, report, text = check(capsys, root)
    assert rc == 0
    (note,) = kinds(report)["transparency"]
    assert "and 9 more have transparent pixels (up to 90% of an image)" in note["message"]
    assert "transparent pixels" in note["message"] and "drops the alpha" in note["message"]
    image = read_image(root / "images" / "img000.png")  # the colour under: black
    assert image[label(0) == 0].max() == 0
    # The printed command flattens them onto white; then no warning, and white is read.
    line = next(ln for ln in text.splitlines() if "alpha_composite" in ln)
    code = re.search(r'python -c "(.+)" FILES', line).group(1)
    argv, sys.argv = sys.argv, ["-c", *map(str, sorted((root / "images").iterdir()))]
    try:
        exec(code, {})  # noqa: S102 -- exactly the printed command, as python -c runs it
    finally:
        sys.argv = argv
    rc, report, _ = check(capsys, root)
    assert rc == 0 and "transparency" not in kinds(report)
    assert read_image(root / "images" / "img000.png")[label(0) == 0].min() == 255


def test_opaque_rgba_images_are_not_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opaque = folder(
        tmp_path / "opaque",
        plain,
        lambda i, lab: Image.fromarray(40 + lab * 150).convert("RGBA"),
        image_suffix=".png",
    )
    rc, report, _ = check(capsys, opaque)
    assert rc == 0 and "transparency" not in kinds(report)
    # An alpha left at 0 everywhere (a writer that does not use it) is not a cut-out.
    unused = folder(
        tmp_path / "unused",
        plain,
        lambda i, lab: Image.fromarray(
            np.dstack([np.repeat((40 + lab * 150)[..., None], 3, 2), lab * 0])
        ),
        image_suffix=".png",
    )
    rc, report, _ = check(capsys, unused)
    assert rc == 0 and "transparency" not in kinds(report)


# ----------------------------------------------------------------------------- names


def test_an_accented_name_stored_decomposed_pairs_with_its_composed_twin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import unicodedata

    root = folder(tmp_path / "names", plain)
    composed, decomposed = (unicodedata.normalize(f, "café") for f in ("NFC", "NFD"))
    assert composed != decomposed  # two file names on Linux, one name as they look
    (root / "images" / "img000.jpg").rename(root / "images" / f"{composed}.jpg")
    (root / "masks" / "img000.png").rename(root / "masks" / f"{decomposed}.png")
    rc, report, _ = check(capsys, root)
    assert rc == 0, report["problems"]
    dataset = registry.create("datasets", "folder", root)
    (sample,) = [
        s for split in ("train", "valid", "test") for s in dataset.samples(split) if "caf" in s.id
    ]
    assert sample.image.name == f"{composed}.jpg" and sample.mask.name == f"{decomposed}.png"
    # A split list may spell it either way.
    (root / "splits").mkdir()
    names = [f"img{i:03d}" for i in range(1, N)]
    (root / "splits" / "train.txt").write_text("\n".join([decomposed, *names[:8]]))
    (root / "splits" / "valid.txt").write_text("\n".join(names[8:10]))
    (root / "splits" / "test.txt").write_text("\n".join(names[10:]))
    dataset = registry.create("datasets", "folder", root)
    assert composed in {s.id for s in dataset.samples("train")}


# ----------------------------------------------------------------------------- foreign files

_HEIC = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64  # an ISO-BMFF header


def test_a_heic_photo_named_jpg_and_a_dangling_link_are_named_for_what_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "phone", plain)
    (root / "images" / "img000.jpg").write_bytes(_HEIC)
    (root / "images" / "img001.jpg").unlink()
    (root / "images" / "img001.jpg").symlink_to(tmp_path / "gone.jpg")
    (root / "images" / "extra.HEIC").write_bytes(_HEIC)
    rc, report, text = check(capsys, root)
    assert rc == 1
    said = {Path(p["file"]).name: p["message"] for p in kinds(report)["unreadable"]}
    assert "a HEIC photo (the iPhone's format), which segkit does not read" in said["img000.jpg"]
    assert "convert it to JPEG or PNG" in said["img000.jpg"] and "corrupt" not in said["img000.jpg"]
    assert f"a link to {tmp_path / 'gone.jpg'}, which does not exist" in said["img001.jpg"]
    assert "a HEIC photo, which segkit does not read (convert it to JPEG or PNG)" in text
    with pytest.raises(DataError, match="a HEIC photo"):
        read_image(root / "images" / "img000.jpg")
    with pytest.raises(DataError, match="a HEIC photo"):  # as a mask too
        decode_raw_mask(root / "images" / "img000.jpg")


def test_tiff_stacks_are_warned_that_their_first_page_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = folder(tmp_path / "stacks", plain)
    lab = label(0)
    pages = [Image.fromarray(40 + lab * 150), Image.fromarray(lab * 255)]  # image, then mask
    (root / "images" / "img000.jpg").unlink()
    pages[0].save(root / "images" / "img000.tif", save_all=True, append_images=pages[1:])
    rc, report, _ = check(capsys, root)
    assert rc == 0
    (note,) = kinds(report)["frames"]
    assert note["file"].endswith("img000.tif")
    assert "several pages or frames (up to 2" in note["message"]
    assert "reads the first only" in note["message"]
    np.testing.assert_array_equal(
        read_image(root / "images" / "img000.tif")[..., 0], 40 + lab * 150
    )


def test_a_grey_palette_trimap_is_read_by_index_where_background_is_not_0(
    tmp_path: Path,
) -> None:
    from segkit.contracts import MaskSpec

    trimap = np.full((SIZE, SIZE), 2, np.uint8)  # Oxford-IIIT Pet: 2 background, 1 pet
    trimap[4:20, 4:20] = 1
    im = Image.fromarray(trimap, "P")
    im.putpalette([v for g in range(256) for v in (g, g, g)])  # index g is grey g
    im.save(tmp_path / "t.png")
    info = inspect_mask(tmp_path / "t.png", MaskSpec(background=2, allowed=(1, 2, 3)))
    assert info.problem is None and info.kind == "index" and set(info.values) == {1, 2}


# ----------------------------------------------------------------------------- bit depths


class _Png:
    """A grey PNG (colour type 0) of ``bits`` per pixel, or grey with alpha (colour type
    4, 16 bits) where ``alpha`` is given, written byte by byte: PIL writes grey as 8 or
    16 bits only, while other tools write 2- and 4-bit files of the same labels."""

    def __init__(self, values: np.ndarray, bits: int, alpha: np.ndarray | None = None) -> None:
        self.values, self.bits, self.alpha = values, bits, alpha

    def save(self, path: Path) -> None:
        import struct
        import zlib

        h, w = self.values.shape
        if self.alpha is not None:  # 16-bit grey + alpha, big-endian, interleaved
            pixels = np.dstack([self.values, self.alpha]).astype(">u2")
            rows = [pixels[y].tobytes() for y in range(h)]
            kind = 4
        elif self.bits < 8:
            per = 8 // self.bits
            rows = []
            for row in self.values:
                packed = bytearray((w + per - 1) // per)
                for x, v in enumerate(row):
                    packed[x // per] |= int(v) << (8 - self.bits * (x % per + 1))
                rows.append(bytes(packed))
            kind = 0
        else:
            rows = [
                self.values[y].astype(">u2" if self.bits == 16 else "u1").tobytes()
                for y in range(h)
            ]
            kind = 0

        def chunk(tag: bytes, data: bytes) -> bytes:
            crc = zlib.crc32(tag + data) & 0xFFFFFFFF
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

        header = struct.pack(">IIBBBBB", w, h, self.bits, kind, 0, 0, 0)
        data = zlib.compress(b"".join(b"\0" + r for r in rows))
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", data)
            + chunk(b"IEND", b"")
        )


def test_2_and_4_bit_grey_masks_are_read_by_their_stored_values_by_both_loaders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from segkit.data.reading import read_raw_mask, read_sample
    from segkit_dali._loader import read_encoded

    # 0/1 masks from three tools: PIL's 8-bit grey, a 2-bit and a 4-bit grey PNG. PIL
    # shows a stored 1 as 85 and 17; read so, one folder would hold 1, 17 and 85.
    def mixed(i: int, lab: np.ndarray) -> Any:
        return Image.fromarray(lab) if i % 3 == 0 else _Png(lab, 2 if i % 3 == 1 else 4)

    root = folder(tmp_path / "depths", mixed)
    with Image.open(root / "masks" / "img002.png") as im:
        assert np.asarray(im).max() == 17  # what PIL shows of a stored 1 at 4 bits
    dataset = registry.create("datasets", "folder", root)
    spec = dataset.mask_spec
    for i in (1, 2):
        path = root / "masks" / f"img{i:03d}.png"
        np.testing.assert_array_equal(decode_raw_mask(path), label(i))
        assert inspect_mask(path, spec).described == f"PNG {4 if i == 2 else 2}-bit grey"
    rc, report, text = check(capsys, root)
    assert rc == 0, text
    assert report["mask_formats"] == {"PNG L": 4, "PNG L;2": 4, "PNG L;4": 4}
    # The dali loader decodes what it is handed; it is handed the stored values.
    for sample in dataset.samples("train"):
        _, encoded, _ = read_encoded(sample, spec)
        decoded = np.asarray(Image.open(io.BytesIO(encoded.tobytes())))
        np.testing.assert_array_equal(decoded, read_raw_mask(sample.mask, spec))
        np.testing.assert_array_equal(read_sample(sample, spec)[1], label(int(sample.id[3:])))
    assert ready_folder(root).bad == []


def test_a_4_bit_mask_of_another_value_names_its_bit_depth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 4-bit 0/15 mask (white at 4 bits): 15 is no label of a 0/1 or 0/255 folder.
    root = folder(tmp_path / "white4", lambda i, lab: _Png(lab * 15, 4))
    rc, report, text = check(capsys, root)
    assert rc != 0 and len(kinds(report)["mask_values"]) == N
    assert "mask formats: PNG L;4 12" in text
    assert "12 hold values 15 (PNG 4-bit grey)" in text
    with pytest.raises(DataError, match=r"12 hold values 15 \(PNG 4-bit grey\)"):
        ready_folder(root)
    # The printed fix reads them as PIL shows them (0/255) and makes 8-bit 0/255 masks.
    code = re.search(r'python -c "(.+)"$', text.splitlines()[-2].strip()).group(1)
    exec(code, {})  # noqa: S102 -- exactly the printed command
    np.testing.assert_array_equal(decode_raw_mask(root / "masks" / "img004.png"), label(4) * 255)
    assert check(capsys, root)[0] == 0


def test_a_16_bit_grey_mask_with_alpha_keeps_its_16_bit_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from segkit_dali._loader import read_encoded

    opaque = np.full((SIZE, SIZE), 65535, np.uint16)
    # 0/1 labels at 16 bits: PIL keeps each value's top 8 bits, and read so both are 0.
    root = folder(tmp_path / "la16", lambda i, lab: _Png(lab, 16, alpha=opaque))
    path = root / "masks" / "img000.png"
    spec = registry.create("datasets", "folder", root).mask_spec
    np.testing.assert_array_equal(decode_raw_mask(path), label(0))
    assert inspect_mask(path, spec).described == "PNG 16-bit grey with alpha"
    rc, report, text = check(capsys, root)
    assert rc == 0, text
    assert 0.05 < report["splits"]["train"]["foreground_fraction"] < 0.2  # not empty
    dataset = registry.create("datasets", "folder", root)
    _, encoded, _ = read_encoded(dataset.samples("train")[0], spec)
    assert np.asarray(Image.open(io.BytesIO(encoded.tobytes()))).max() == 1
    # Fully transparent pixels read 0, as at 8 bits; values over 255 are refused.
    see_through = opaque.copy()
    see_through[:, :4] = 0
    _Png(label(0), 16, alpha=see_through).save(tmp_path / "t.png")
    got = decode_raw_mask(tmp_path / "t.png")
    assert (got[:, :4] == 0).all() and (got[:, 4:] == label(0)[:, 4:]).all()
    assert label(0)[:, :4].any()  # the see-through columns cut the square
    _Png(label(0).astype(np.uint16) * 300, 16, alpha=opaque).save(tmp_path / "big.png")
    assert inspect_mask(tmp_path / "big.png", spec).problem is not None
    # An image of 16-bit grey with alpha reads as the same 16-bit grey without it.
    values = label(1).astype(np.uint16) * 3000 + 700
    _Png(values, 16, alpha=opaque).save(tmp_path / "la.png")
    _Png(values, 16).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "la.png"), read_image(tmp_path / "grey.png")
    )
    assert read_image(tmp_path / "la.png").max() == 255


# ----------------------------------------------------------------------------- GIF images


def test_gif_images_are_read_by_the_folder_layout_first_frame_and_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from segkit_dali._loader import read_encoded

    root = folder(tmp_path / "gifs", plain, image_suffix=".gif")
    lab = label(0)
    frames = [Image.fromarray(40 + lab * 150), Image.fromarray(200 - lab * 150)]
    frames[0].save(root / "images" / "img000.gif", save_all=True, append_images=frames[1:])
    dataset = registry.create("datasets", "folder", root)
    assert len([s for split in ("train", "valid", "test") for s in dataset.samples(split)]) == N
    rc, report, _ = check(capsys, root)
    assert rc == 0
    (note,) = kinds(report)["frames"]
    assert note["file"].endswith("img000.gif") and "reads the first only" in note["message"]
    first = read_image(root / "images" / "img000.gif")
    np.testing.assert_array_equal(first[..., 0], 40 + lab * 150)
    sample = next(
        s
        for split in ("train", "valid", "test")
        for s in dataset.samples(split)
        if s.id == "img000"
    )
    encoded, _, _ = read_encoded(sample, dataset.mask_spec)  # what DALI decodes
    decoded = np.asarray(Image.open(io.BytesIO(encoded.tobytes())).convert("RGB"))
    np.testing.assert_array_equal(decoded, first)


# ----------------------------------------------------------------------------- EXIF in a run


def test_a_run_warns_once_of_square_images_with_an_exif_rotation(tmp_path: Path) -> None:
    root = folder(tmp_path / "exif", plain, lambda i, lab: _Rotated(40 + lab * 150))
    warnings = ready_folder(root).warnings
    (warning,) = warnings
    assert re.match(
        r"img\d+\.jpg, img\d+\.jpg, img\d+\.jpg and 9 more have an EXIF orientation tag", warning
    )
    assert "ImageOps.exif_transpose" in warning
    assert (
        ready_folder(root).warnings == warnings
    )  # a second run: from the passed check, said again
    # A non-square quarter-turned image whose mask has its stored size is not in doubt.
    wide = np.zeros((20, SIZE), np.uint8)
    stored = folder(
        tmp_path / "stored",
        lambda i, lab: Image.fromarray(wide + lab[:20] * 255),
        lambda i, lab: _Rotated(wide + lab[:20] * 100),
    )
    assert ready_folder(stored).warnings == []


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["albumentations", "dali"])
def test_a_run_says_the_exif_warning_once_before_training_and_records_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loader: str
) -> None:
    from conftest import TINY_RUN

    root = folder(tmp_path / "exif", plain, lambda i, lab: _Rotated(40 + lab * 150))
    out = tmp_path / "runs"
    args = ["run", *TINY_RUN, "--data", str(root), "--epochs", "1", "--loader", loader]
    assert main([*args, "--recipe", "type1", "--out", str(out), "--name", "r"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()  # warnings on stderr, the results on stdout
    said = [i for i, line in enumerate(lines) if "have an EXIF orientation tag: " in line]
    assert len(said) == 1  # one line for all
    assert lines[said[0]].startswith("segkit: warning: ")
    assert "EXIF" not in captured.out and "epoch   1/1" in captured.out
    summary = json.loads((out / "r" / "summary.json").read_text())
    (recorded,) = summary["data_warnings"]  # a binary run records it too
    assert recorded == lines[said[0]].removeprefix("segkit: warning: ")
