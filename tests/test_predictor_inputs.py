"""What :meth:`segkit.Predictor.predict` takes besides an RGB uint8 array and a path: PIL
images (converted as a file is read), grey and RGBA uint8 arrays; float arrays are refused
with what to pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import save_checkpoint
from PIL import Image

from segkit.errors import ConfigError
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
    with pytest.raises(ConfigError, match=r"a PIL image or a numpy array, got list"):
        predictor.predict_batch([[1, 2, 3]])
