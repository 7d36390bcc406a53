"""What :meth:`segkit.Predictor.predict` takes besides an RGB uint8 array and a path: PIL
images (converted as a file is read), grey and RGBA uint8 arrays, an image file's bytes
or a file object (what a server receives); float arrays are refused with what to pass."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import save_checkpoint
from PIL import Image

from segkit.errors import ConfigError, DataError
from segkit.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    ckpt = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")
    return Predictor(ckpt, device="cpu")


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)


def test_grey_rgba_and_pil_inputs_match_their_rgb(
    predictor: Predictor, rgb: np.ndarray, tmp_path: Path
) -> None:
    expected = predictor.predict(rgb)
    assert expected.shape == (40, 50)
    rgba = np.concatenate([rgb, np.full((40, 50, 1), 128, np.uint8)], axis=2)
    np.testing.assert_array_equal(predictor.predict(rgba), expected)
    np.testing.assert_array_equal(predictor.predict(Image.fromarray(rgb)), expected)
    np.testing.assert_array_equal(predictor.predict(Image.fromarray(rgba)), expected)
    grey = rgb[..., 0]
    as_rgb = predictor.predict(np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(predictor.predict(grey), as_rgb)
    np.testing.assert_array_equal(predictor.predict(grey[..., None]), as_rgb)
    np.testing.assert_array_equal(predictor.predict(Image.fromarray(grey)), as_rgb)
    # A 16-bit PIL image is scaled as a 16-bit file is read.
    deep = (grey.astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        np.testing.assert_array_equal(
            predictor.predict(im), predictor.predict(tmp_path / "deep.png")
        )
    assert [p.shape for p in predictor.predict_batch([Image.fromarray(rgb), grey])] == [
        (40, 50),
        (40, 50),
    ]


def test_arrays_it_cannot_take_say_what_to_pass(predictor: Predictor, rgb: np.ndarray) -> None:
    with pytest.raises(
        ConfigError,
        match=r"expected a uint8 image array of 0-255 pixels, got float32 \(40, 50, 3\); for "
        r"values in \[0, 1\] pass \(x \* 255\).round\(\).astype\(np.uint8\)",
    ):
        predictor.predict(rgb.astype(np.float32) / 255)
    with pytest.raises(ConfigError, match=r"got uint16 .* segkit.data.reading.to_8bit"):
        predictor.predict(rgb[..., 0].astype(np.uint16))
    with pytest.raises(ConfigError, match=r"\(H, W, 4\) RGBA uint8 array, got shape \(40, 50, 2\)"):
        predictor.predict(rgb[..., :2])
    with pytest.raises(ConfigError, match=r"a PIL image or a uint8 numpy array, got list"):
        predictor.predict_batch([[1, 2, 3]])


def test_an_image_files_bytes_or_file_object_predict_as_the_file(
    predictor: Predictor, rgb: np.ndarray, tmp_path: Path
) -> None:
    """A server holds an upload's bytes, not a path: they are decoded as the file is read
    (until 2026-12-07: "TypeError: argument should be a str object or an os.PathLike
    object returning str, not <class 'bytes'>")."""
    path = tmp_path / "up.png"
    Image.fromarray(rgb).save(path)
    expected = predictor.predict(path)
    data = path.read_bytes()
    for given in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        np.testing.assert_array_equal(predictor.predict(given), expected)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(predictor.predict(f), expected)
    got = predictor.predict_batch([data, str(path), rgb])  # a path in a batch too
    for probs in got:  # a batch of 3 rounds a little differently from one of 1
        np.testing.assert_allclose(probs, expected, atol=1e-6)
    with pytest.raises(
        DataError,
        match=r"^<200 bytes>: cannot decode image \(.*\); expected the bytes of a whole image "
        r"file \(JPEG, PNG",
    ):
        predictor.predict(data[:200])
    with pytest.raises(
        DataError,
        match=r"^<5 bytes>: cannot decode image \(cannot identify "
        r"image file the data\)",
    ):
        predictor.predict(b"hello")


def test_one_predictor_shared_by_threads_gives_each_image_its_own_probabilities(
    predictor: Predictor,
) -> None:
    """A server loads the model once and predicts from several threads: each call gets
    what it gets alone, whatever the other threads pass (sizes, kinds)."""
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for h, w in [(40, 50), (17, 90), (120, 33), (64, 64)] * 2
    ]
    alone = [predictor.predict(im) for im in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(predictor.predict, images * 3))
    for got, expected in zip(together, alone * 3, strict=True):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-6)
