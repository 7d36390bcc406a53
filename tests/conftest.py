"""Shared fixtures: small generated datasets, and a cache folder inside pytest's tmp."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The embedded synthetic dataset is cached under $SEGKIT_CACHE; never touch the
    # user's ~/.cache from tests.
    os.environ["SEGKIT_CACHE"] = str(tmp_path_factory.mktemp("segkit-cache"))


@pytest.fixture(scope="session")
def tiny_pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-image synthetic Oxford-IIIT Pet folder (15 trainval, 5 test)."""
    from segkit_datasets.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("pets"), count=20, seed=7)


def write_pet_layout(
    root: Path, images: dict[str, np.ndarray], trimaps: dict[str, np.ndarray], test: list[str]
) -> Path:
    """Write arrays as an Oxford-IIIT Pet folder: JPEG images, PNG trimaps, split lists."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    for name, img in images.items():
        Image.fromarray(img).save(root / "images" / f"{name}.jpg", quality=95)
        Image.fromarray(trimaps[name]).save(root / "annotations" / "trimaps" / f"{name}.png")
    trainval = [n for n in images if n not in test]
    (root / "annotations" / "trainval.txt").write_text("".join(f"{n} 1 1 1\n" for n in trainval))
    (root / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in test))
    return root


@pytest.fixture(scope="session")
def shapes_pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images whose mask is recoverable from the pixels: a bright, asymmetric shape (an
    L, so a flip or a shifted crop shows) on a dark background; trimap 1 inside, 2 out."""
    rng = np.random.default_rng(0)
    images, trimaps = {}, {}
    for i in range(24):
        h, w = int(rng.integers(90, 140)), int(rng.integers(100, 160))
        mask = np.zeros((h, w), bool)
        y0, x0 = int(rng.integers(5, h // 3)), int(rng.integers(5, w // 3))
        mask[y0 : h - 10, x0 : x0 + w // 5] = True  # vertical bar of the L
        mask[h - 30 : h - 10, x0 : w - 8] = True  # its foot, to the right
        img = np.where(mask[..., None], rng.integers(200, 240, 3), rng.integers(15, 50, 3))
        images[f"shape_{i}"] = img.astype(np.uint8)
        trimaps[f"shape_{i}"] = np.where(mask, 1, 2).astype(np.uint8)
    return write_pet_layout(
        tmp_path_factory.mktemp("shapes"),
        images,
        trimaps,
        test=["shape_0", "shape_1", "shape_2", "shape_3"],
    )
