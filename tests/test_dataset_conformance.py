"""segkit's built-in dataset layouts against the conformance kit's dataset rules
(:data:`segkit.testing.DATASET_RULES`), one test per layout and rule, exactly as a plugin
author checks their own layout: on a small folder in the layout, written here.

* ``synthetic`` declares ``generate``: the kit generates its 12-image set itself.
* ``oxford_pet`` reads :func:`segkit.testing.write_shapes_dataset`'s folder, which is in
  the Oxford-IIIT Pet layout.
* ``folder`` reads ``images/`` + ``masks/`` written below, once split at random and once
  by ``splits/*.txt`` lists.
* The K-class targets: ``oxford_pet`` with ``target=trimap``, ``folder`` with ``classes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segkit.testing import (
    DATASET_RULES,
    check_dataset,
    plugin_names,
    write_shapes_dataset,
)
from segkit.testing.datasets import IGNORE_COLOUR

#: The folder layout's split lists, for the ``splits/`` case (10 images in all).
FOLDER_SPLITS = {
    "train": [f"img_{i}" for i in range(7)],
    "valid": ["img_7"],
    "test": ["img_8", "img_9"],
}

#: case id -> (registered dataset, factory options). The synthetic factory reads the set
#: the kit generates (12 images) with its default options: count and seed come from the
#: set's marker (see the test below).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "synthetic": ("synthetic", {}),
    "oxford_pet": ("oxford_pet", {}),
    "oxford_pet-trimap": ("oxford_pet", {"target": "trimap"}),
    "folder": ("folder", {}),
    "folder-splits": ("folder", {}),
    "folder-classes": ("folder", {"classes": "background,object"}),
    # classes.txt names the classes: declare_ignore offers its ignore line (with the
    # classes option above it offers nothing, the file being unread).
    "folder-classes-txt": ("folder", {}),
}


def write_folder_layout(root: Path, split_lists: dict[str, list[str]] | None = None) -> Path:
    """Ten JPEG images (each its own size) with 0/255 PNG masks, optionally split lists."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(10):
        h, w = 40 + 3 * i, 48 + 2 * i
        mask = np.zeros((h, w), np.uint8)
        mask[5 : h - 5, 8 : 8 + w // 3] = 255
        image = np.where(mask[..., None] > 0, 220, 30).astype(np.uint8).repeat(3, axis=2)
        Image.fromarray(image).save(root / "images" / f"img_{i}.jpg", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"img_{i}.png")
    if split_lists is not None:
        (root / "splits").mkdir()
        for split, stems in split_lists.items():
            (root / "splits" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    return root


def with_classes_txt(root: Path) -> Path:
    """``root`` with a classes.txt naming its two classes by their grey values."""
    (root / "classes.txt").write_text("background 0\nobject 255\n")
    return root


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | None]:
    """The folder each case reads (None: the kit generates one)."""
    tmp = tmp_path_factory.mktemp("datasets")
    return {
        "synthetic": None,
        "oxford_pet": write_shapes_dataset(tmp / "oxford_pet"),
        "oxford_pet-trimap": write_shapes_dataset(tmp / "oxford_pet-trimap"),
        "folder": write_folder_layout(tmp / "folder"),
        "folder-splits": write_folder_layout(tmp / "folder-splits", FOLDER_SPLITS),
        # 0/255 masks read as 2 classes: 0 background, 255 ignored (no pixel of class 1).
        "folder-classes": write_folder_layout(tmp / "folder-classes"),
        "folder-classes-txt": with_classes_txt(write_folder_layout(tmp / "folder-classes-txt")),
    }


def test_every_builtin_dataset_has_a_case() -> None:
    assert set(plugin_names("datasets", "segkit")) <= {name for name, _ in CASES.values()}


@pytest.mark.parametrize("rule", DATASET_RULES)
@pytest.mark.parametrize("case", CASES)
def test_contract(case: str, rule: str, roots: dict[str, Path | None]) -> None:
    name, options = CASES[case]
    check_dataset(name, root=roots[case], options=options, rules=[rule])


def test_the_folder_layouts_declare_ignore_names_the_line_or_nothing(
    roots: dict[str, Path | None],
) -> None:
    # What the declare_ignore rule accepts, for the built-in layout: the line where the
    # folder's classes.txt is read, nothing where no file (or an option) declares classes.
    from segkit_datasets.folder import FolderDataset

    listed = roots["folder-classes-txt"]
    assert listed is not None
    assert FolderDataset.declare_ignore(listed, IGNORE_COLOUR) == (
        f"add the line 'ignore 201 102 53' to {listed / 'classes.txt'}"
    )
    assert FolderDataset.declare_ignore(listed, IGNORE_COLOUR, classes="background,object") == ""
    assert FolderDataset.declare_ignore(roots["folder"], IGNORE_COLOUR) == ""


def test_synthetic_reads_the_set_generate_wrote_with_its_default_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from segkit_datasets import synthetic

    def render_small(seed: int, index: int, **_: object) -> tuple[np.ndarray, np.ndarray]:
        # The pixels play no part in this rule; rendering 400 real images takes 6 s.
        trimap = np.full((16, 16), 2, np.uint8)
        trimap[4:12, 4:12] = 1
        return np.full((16, 16, 3), (seed + index) % 256, np.uint8), trimap

    monkeypatch.setattr(synthetic, "render_sample", render_small)
    check_dataset("synthetic", rules=["generate"])
