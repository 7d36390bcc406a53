"""The generated L-shape dataset the recipe and loader checks read (:func:`shapes_dataset`)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from segkit.contracts import MaskSpec, Sample
from segkit.errors import ConfigError

#: Raw mask values of :class:`ShapesDataset` (the Oxford-IIIT Pet trimap codes it uses).
SHAPES_MASK_SPEC = MaskSpec(background=2, allowed=(1, 2))

#: The K-class variant (``write_shapes_dataset(classes=True)``): the L's bar is class 1
#: (raw 1), its foot class 2 (raw 3), the rest background (raw 2), and an 8x8 square in
#: a corner of the background is ignored (raw 255).
SHAPES_CLASSES_MASK_SPEC = MaskSpec.multiclass(
    ("background", "bar", "foot"), values=(2, 1, 3), ignore=255
)

#: How :func:`write_shapes_dataset` splits its images: train, valid, test.
_SHAPES_SPLITS = {"train": range(0, 10), "valid": range(10, 12), "test": range(12, 16)}


def write_shapes_dataset(root: Path, seed: int = 0, *, classes: bool = False) -> Path:
    """Write 16 generated images and masks in the Oxford-IIIT Pet layout.

    Each image (90-140 x 100-160 px, every one a different size) holds a bright L shape
    (an asymmetric shape, so a flip or a shifted crop shows) on a dark background; its
    trimap is 1 inside the shape and 2 outside. ``annotations/trainval.txt`` lists the
    first 12 images and ``annotations/test.txt`` the last 4; :class:`ShapesDataset`
    reads the first 10 as "train" and the next 2 as "valid". With ``classes`` the images
    are the same and the masks are those of :data:`SHAPES_CLASSES_MASK_SPEC`.

    Args:
        root: Folder to write into (created).
        seed: Seed of the generator; the same seed writes the same files.

    Returns:
        ``root``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(16):
        h, w = 90 + 3 * i, 100 + 4 * i
        mask = np.zeros((h, w), bool)
        y0, x0 = int(rng.integers(5, h // 3)), int(rng.integers(5, w // 3))
        mask[y0 : h - 10, x0 : x0 + w // 5] = True  # the L's vertical bar
        foot = np.zeros((h, w), bool)
        foot[h - 30 : h - 10, x0 + w // 5 : w - 8] = True  # its foot, to the right
        mask |= foot
        img = np.where(mask[..., None], rng.integers(200, 240, 3), rng.integers(15, 50, 3))
        name = f"shape_{i:02d}"
        names.append(name)
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{name}.jpg", quality=95)
        trimap = np.where(mask, 1, 2).astype(np.uint8)
        if classes:
            trimap[foot] = 3
            trimap[:8, -8:] = 255  # background there (the L starts 10 px from the top)
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
    trainval, test = names[:12], names[12:]
    (root / "annotations" / "trainval.txt").write_text("".join(f"{n} 1 1 1\n" for n in trainval))
    (root / "annotations" / "test.txt").write_text("".join(f"{n} 1 1 1\n" for n in test))
    return root


class ShapesDataset:
    """The :class:`segkit.contracts.Dataset` over a folder from :func:`write_shapes_dataset`.

    Splits: "train" 10 images, "valid" 2, "test" 4.
    """

    mask_spec = SHAPES_MASK_SPEC

    def __init__(self, root: Path, *, classes: bool = False) -> None:
        self.root = Path(root)
        if classes:
            self.mask_spec = SHAPES_CLASSES_MASK_SPEC

    def samples(self, split: str) -> list[Sample]:
        if split not in _SHAPES_SPLITS:
            raise ConfigError(f"split {split!r}: expected one of {', '.join(_SHAPES_SPLITS)}")
        return [
            Sample(
                f"shape_{i:02d}",
                self.root / "images" / f"shape_{i:02d}.jpg",
                self.root / "annotations" / "trimaps" / f"shape_{i:02d}.png",
            )
            for i in _SHAPES_SPLITS[split]
        ]

    def __repr__(self) -> str:
        return f"ShapesDataset({str(self.root)!r})"


@functools.cache
def shapes_dataset(classes: bool = False) -> ShapesDataset:
    """The generated dataset the recipe and loader checks use, written once per process
    into a temporary folder that is removed at exit (``classes``: its K-class variant)."""
    root = Path(tempfile.mkdtemp(prefix="segkit-testing-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return ShapesDataset(write_shapes_dataset(root, classes=classes), classes=classes)
