"""The folder layout's other shapes (segkit_datasets.folder): folders already split
(``train/images`` or ``images/train``), TIFF, BMP and WebP images, TIFF and BMP masks,
``labels/`` for ``masks/``, masks beside their images, and the condensed report of masks
named with a suffix.

Each test writes a few 8x10 images whose masks hold a 4x4 square of 255.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.cli import main
from segkit.config import RunConfig
from segkit.data.layouts import detect_layout
from segkit.data.reading import read_sample
from segkit.errors import DataError
from segkit_datasets.folder import FolderDataset

MASK = np.zeros((8, 10), np.uint8)
MASK[2:6, 3:7] = 255
_made = iter(range(1, 10**6))  # a grey level per image, so no two images are the same


def pairs(
    images: Path,
    masks: Path,
    stems: list[str],
    *,
    image_suffix: str = ".png",
    mask_suffix: str = ".png",
    mask_stem: str = "{}",
) -> None:
    """An image and its mask for each of ``stems``, in ``images`` and ``masks``."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        image = np.full((8, 10, 3), next(_made) * 7 % 250, np.uint8)
        Image.fromarray(image).save(images / f"{stem}{image_suffix}")
        Image.fromarray(MASK).save(masks / f"{mask_stem.format(stem)}{mask_suffix}")


def names(n: int, prefix: str = "img") -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(n)]


def ids(ds: FolderDataset) -> dict[str, list[str]]:
    return {s: [x.id for x in ds.samples(s)] for s in ("train", "valid", "test")}


def check(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[int, str]:
    rc = main(["data", "check", "--data", str(root)])
    return rc, capsys.readouterr().out


# ----------------------------------------------------------------------------- split folders


def test_split_folders_each_holding_images_and_masks_are_the_splits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cells"
    for folder, n in (("train", 6), ("val", 2), ("test", 3)):
        pairs(root / folder / "images", root / folder / "masks", names(n))  # the same stems
    assert RunConfig(data=str(root)).resolved_dataset() == "folder"
    ds = FolderDataset(root)
    assert ids(ds) == {
        "train": [f"train/img{i:02d}" for i in range(6)],
        "valid": ["val/img00", "val/img01"],
        "test": ["test/img00", "test/img01", "test/img02"],
    }
    sample = ds.samples("valid")[1]
    assert sample.image == root / "val" / "images" / "img01.png"
    assert sample.mask == root / "val" / "masks" / "img01.png"
    assert read_sample(sample, ds.mask_spec)[1].sum() == 16
    rc, out = check(capsys, root)
    assert rc == 0, out
    assert f"run it: segkit run --data {root}" in out


def test_images_and_masks_split_into_folders_and_a_missing_test_split_carved_from_train(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cells"
    pairs(root / "images" / "train", root / "masks" / "train", names(10))
    pairs(root / "images" / "validation", root / "masks" / "validation", names(2, "v"))
    assert FolderDataset.recognizes(root)
    split = ids(FolderDataset(root, test_fraction=0.2))
    assert split["valid"] == ["validation/v00", "validation/v01"]
    assert len(split["test"]) == 2 and len(split["train"]) == 8
    assert sorted(split["train"] + split["test"]) == [f"train/img{i:02d}" for i in range(10)]
    assert split == ids(FolderDataset(root, test_fraction=0.2))  # the same every time
    assert split != ids(FolderDataset(root, test_fraction=0.2, split_seed=1))
    with pytest.raises(DataError) as e:  # 10 x 0.01 rounds to 0
        FolderDataset(root, test_fraction=0.01).samples("test")
    assert str(e.value) == (
        f"{root / 'images' / 'train'}: split 'test' has no samples: there is no test folder "
        "beside train/, and 10 train images x test_fraction 0.01 rounds to 0; pass "
        "dataset_options={'test_fraction': 0.1}, add images, or add a folder of the split (test/, "
        "with its images and masks as in train/)"
    )


def test_each_split_folder_is_checked_and_messages_name_the_real_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cells"
    pairs(root / "train" / "images", root / "train" / "masks", names(4))
    pairs(root / "val" / "images", root / "val" / "masks", names(2), mask_stem="{}_x")
    (root / "val" / "masks" / "img00_x.png").unlink()
    with pytest.raises(DataError) as e:
        FolderDataset(root)
    assert str(e.value).startswith(
        f"{root / 'val' / 'masks' / 'img00.png'}: mask for image img00.png not found (1 more "
        "images lack masks: img01; 1 more masks lack images: img01_x); every image needs "
        "val/masks/<same name>.png"
    )
    rc, out = check(capsys, root)
    assert rc == 1
    assert (
        f"  error: {root / 'val' / 'masks' / 'img01_x.png'}: mask has no image "
        "val/images/img01_x.jpg, .jpeg, .png, .tif, .tiff, .bmp, .webp or .gif (val/images/ holds "
        "img01.png); add the image or remove the mask"
    ) in out


def test_an_image_beside_the_split_folders_belongs_to_no_split(tmp_path: Path) -> None:
    root = tmp_path / "cells"
    pairs(root / "images" / "train", root / "masks" / "train", names(4))
    pairs(root / "images" / "test", root / "masks" / "test", names(1, "t"))
    pairs(root / "images", root / "masks", ["stray"])
    (root / "images" / "notes").mkdir()
    audit = FolderDataset.audit(root)
    assert [m for _, m in audit.problems if "split folders" in m] == [
        f"{root / 'images' / 'stray.png'}: a file beside the split folders of images/ (train/, "
        "test/), in no split; move it into the folder of its split, or out of images/",
        f"{root / 'masks' / 'stray.png'}: a file beside the split folders of masks/ (train/, "
        "test/), in no split; move it into the folder of its split, or out of masks/",
    ]
    assert (root / "images" / "notes", "not a split folder (train, val, test)") in audit.skipped
    assert len(audit.samples("train")) + len(audit.samples("valid")) == 4


def test_split_folders_refused_with_the_fix(tmp_path: Path) -> None:
    no_train = tmp_path / "no_train"
    pairs(no_train / "val" / "images", no_train / "val" / "masks", names(2))
    with pytest.raises(DataError, match=r"no_train: split folders val/ but no train/; add train/"):
        FolderDataset(no_train)

    unlabelled = tmp_path / "unlabelled"
    pairs(unlabelled / "train" / "images", unlabelled / "train" / "masks", names(4))
    pairs(unlabelled / "test" / "images", tmp_path / "elsewhere", names(3))
    with pytest.raises(DataError) as e:
        FolderDataset(unlabelled)
    assert str(e.value) == (
        f"{unlabelled / 'test' / 'masks'}: folder not found; each split folder (train/, test/) "
        f"holds images/ and masks/, and {unlabelled / 'test' / 'images'} holds 3 images without "
        f"masks: add their masks as test/masks/<name>.png, or move {unlabelled / 'test'} out of "
        f"{unlabelled} (the split 'test' is then carved from train/, see test_fraction)"
    )

    two = tmp_path / "two"
    for folder in ("train", "val", "valid"):
        pairs(two / "images" / folder, two / "masks" / folder, names(2))
    with pytest.raises(
        DataError, match=r"images/val and \S+/images/valid: two folders of the split"
    ):
        FolderDataset(two)

    lists = tmp_path / "lists"
    pairs(lists / "images" / "train", lists / "masks" / "train", names(2))
    (lists / "splits").mkdir()
    with pytest.raises(
        DataError, match=r"lists/splits: split lists beside split folders \(train/\)"
    ):
        FolderDataset(lists)

    unsplit_masks = tmp_path / "unsplit_masks"
    pairs(unsplit_masks / "images" / "train", unsplit_masks / "masks", names(2))
    with pytest.raises(
        DataError, match=r"unsplit_masks/masks/train: folder not found; \S+ is split"
    ):
        FolderDataset(unsplit_masks)


def test_an_empty_split_folder_says_how_to_fill_or_drop_it(tmp_path: Path) -> None:
    root = tmp_path / "cells"
    pairs(root / "train" / "images", root / "train" / "masks", names(4))
    pairs(root / "val" / "images", root / "val" / "masks", [])
    with pytest.raises(DataError) as e:
        FolderDataset(root).samples("valid")
    assert str(e.value) == (
        f"{root / 'val' / 'images'}: split 'valid' has no samples: no image there has its mask in "
        f"{root / 'val' / 'masks'}; add images with their masks to {root / 'val' / 'images'} and "
        f"{root / 'val' / 'masks'}, or remove {root / 'val'} to carve 'valid' from train by "
        "valid_fraction"
    )


def test_images_in_subfolders_that_are_no_splits_are_named(tmp_path: Path) -> None:
    root = tmp_path / "cells"
    pairs(root / "images" / "cats", root / "masks", [])
    with pytest.raises(DataError) as e:
        FolderDataset(root)
    assert str(e.value).startswith(
        f"{root / 'images'}: no images (.jpg, .jpeg, .png, .tif, .tiff, .bmp, .webp or .gif) found; "
        "it holds the folders cats/, whose images are not read: put the images in images/ "
        "itself, or in split folders images/train/, images/val/, images/test/"
    )


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".bmp", ".webp"])
def test_tiff_bmp_and_webp_images_are_read(tmp_path: Path, suffix: str) -> None:
    pairs(tmp_path / "images", tmp_path / "masks", names(3), image_suffix=suffix)
    ds = FolderDataset(tmp_path, valid_fraction=0.34, test_fraction=0.34)
    image, mask = read_sample(ds.samples("train")[0], ds.mask_spec)
    assert ds.samples("train")[0].image.suffix == suffix
    assert image.shape == (8, 10, 3) and mask.sum() == 16


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".bmp"])
def test_tiff_and_bmp_masks_are_read(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs(
        tmp_path / "images", tmp_path / "masks", names(10), image_suffix=".jpg", mask_suffix=suffix
    )
    ds = FolderDataset(tmp_path)
    assert all(s.mask.suffix == suffix for s in ds.samples("train"))
    assert read_sample(ds.samples("valid")[0], ds.mask_spec)[1].sum() == 16
    assert check(capsys, tmp_path)[0] == 0


def test_of_two_masks_of_one_name_the_png_is_read_and_the_other_skipped(tmp_path: Path) -> None:
    pairs(tmp_path / "images", tmp_path / "masks", names(3), mask_suffix=".tif")
    Image.fromarray(MASK).save(tmp_path / "masks" / "img01.png")
    audit = FolderDataset.audit(tmp_path)
    assert FolderDataset(tmp_path)._pairs["img01"][1].name == "img01.png"
    assert audit.skipped == [
        (tmp_path / "masks" / "img01.tif", "not .png (the .png of the same name is the mask read)")
    ]


def test_a_jpeg_compressed_tiff_mask_is_refused_by_its_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs(tmp_path / "images", tmp_path / "masks", names(10), mask_suffix=".tif")
    Image.fromarray(MASK).save(tmp_path / "masks" / "img02.tif", compression="jpeg")
    with pytest.raises(DataError) as e:
        FolderDataset(tmp_path)
    assert str(e.value).startswith(
        f"{tmp_path / 'masks' / 'img02.tif'}: a JPEG-compressed TIFF (compression jpeg), so not "
        "read as the mask of img02.png: JPEG compression changes label values; save it again "
        "without compression or with LZW or Deflate (how: below); masks/ holds 1 "
        "JPEG-compressed TIFF mask (img02.tif)"
    )
    rc, out = check(capsys, tmp_path)
    assert rc == 1 and out.count("  error: ") == 1
    assert "threshold them into PNGs next to them (the PNG is then the mask read): python -c" in out


def test_masks_in_a_format_that_is_not_read_say_which_are(tmp_path: Path) -> None:
    pairs(tmp_path / "images", tmp_path / "masks", names(2), mask_suffix=".webp")
    with pytest.raises(DataError) as e:
        FolderDataset(tmp_path)
    assert str(e.value).startswith(
        f"{tmp_path / 'masks' / 'img00.png'}: mask for image img00.png not found (1 more images "
        "lack masks: img01); found img00.webp, but masks are read from .png, .tif, .tiff or "
        ".bmp files; masks/ holds 2 masks in a format segkit does not read as masks"
    )


# ----------------------------------------------------------------------------- other names


@pytest.mark.parametrize("name", ["labels", "gt", "ground_truth", "annotations"])
def test_a_masks_folder_by_another_common_name_is_read(tmp_path: Path, name: str) -> None:
    root = tmp_path / "cells"
    pairs(root / "images", root / name, names(10))
    assert FolderDataset.recognizes(root)
    ds = FolderDataset(root)
    assert ds.samples("test")[0].mask.parent == root / name
    assert RunConfig(data=str(root)).resolved_dataset() == "folder"


def test_two_masks_folders_by_other_names_are_refused(tmp_path: Path) -> None:
    pairs(tmp_path / "images", tmp_path / "labels", names(2))
    pairs(tmp_path / "images", tmp_path / "gt", names(2))
    with pytest.raises(DataError, match=r"labels/ and gt/ could each be the masks folder; rename"):
        FolderDataset(tmp_path)


def test_the_oxford_annotations_folder_is_not_taken_for_masks(tiny_pets: Path) -> None:
    assert not FolderDataset.recognizes(tiny_pets)


def masks_beside(root: Path) -> Path:
    pairs(root, root, names(3), image_suffix=".jpg", mask_stem="{}_mask")
    Image.fromarray(np.full((8, 10, 3), 100, np.uint8)).save(root / "extra.png")
    return root


def test_masks_beside_their_images_get_the_commands_that_move_them(tmp_path: Path) -> None:
    root = masks_beside(tmp_path / "cells")
    assert RunConfig(data=str(root)).resolved_dataset() == "folder"
    with pytest.raises(DataError) as e:
        FolderDataset(root)
    assert str(e.value) == (
        f"{root}: images and masks are in one folder (3 masks named <image name>_mask.png, e.g. "
        "img00_mask.png beside img00.jpg); segkit reads images/<name>.* with masks/<name>.png "
        f"(or .tif, .tiff or .bmp), so move them: cd {root} && mkdir -p images masks && "
        'for f in *_mask.png; do mv -- "$f" "masks/${f%_mask.png}.png"; done && mv -- *.jpg '
        "*.png images/"
    )


def test_a_folder_of_images_alone_is_not_taken_for_masks_beside_images(tmp_path: Path) -> None:
    pairs(tmp_path, tmp_path / "elsewhere", ["a", "a_2", "b"])
    assert not FolderDataset.recognizes(tmp_path)


NO_MASKS = (
    "no masks found ({}); segkit looked for masks/ beside images/ (or labels/, gt/, "
    "ground_truth/, annotations/), masks/ in each split folder (train/masks/ ...), and masks "
    "named <name>_mask.png beside their images\n"
    "put each image's mask in masks/ under the image's name (images/a.jpg, masks/a.png: 0/1 "
    "or 0/255, or class indices 0..K-1 named in classes.txt)\n"
)


def images_only(root: Path, n: int = 3) -> Path:
    pairs(root / "images", root / "masks", names(n))
    for mask in (root / "masks").iterdir():
        mask.unlink()
    (root / "masks").rmdir()
    return root


def test_images_without_masks_say_no_masks_were_found_where_and_the_layouts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = images_only(tmp_path / "cells")
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"segkit: error: {root}: " + NO_MASKS.format("3 images in images/"))
    rest = err.split("classes.txt)\n", 1)[1].splitlines()
    assert rest[0] == "the layouts segkit reads (docs/data.md):"
    assert rest[1].startswith("  folder: images/<name>.jpg|") and "masks/<name>.png" in rest[1]
    assert rest[2].startswith("  oxford_pet: images/<name>.jpg, annotations/trimaps/")
    assert rest[3:] == ["or name a layout with --dataset"]
    with pytest.raises(DataError) as e:  # from Python (segkit.check_data): the keyword
        detect_layout(root)
    assert str(e.value).splitlines()[-1] == "or name a layout with dataset"
    # Named with --dataset folder: the same words, and this layout.
    with pytest.raises(DataError) as e:
        FolderDataset(root)
    first, second, layout = str(e.value).splitlines()
    assert f"{first}\n{second}\n" == f"{root}: " + NO_MASKS.format("3 images in images/")
    assert layout.startswith("the layout (docs/data.md): images/<name>.jpg|")


def test_split_folders_and_loose_images_without_masks_are_counted_where_they_are(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cells"
    images_only(root / "train", 2)
    images_only(root / "val", 1)
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "loose.jpg")
    with pytest.raises(DataError) as e:
        RunConfig(data=str(root)).resolved_dataset()
    assert str(e.value).startswith(
        f"{root}: no masks found (2 images in train/images/, 1 image in val/images/, 1 image "
        "in the folder itself); segkit looked for masks/"
    )


def test_a_folder_without_images_is_not_said_to_lack_masks(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DataError, match="no dataset layout recognises this folder") as e:
        RunConfig(data=str(tmp_path)).resolved_dataset()
    assert "no masks found" not in str(e.value)


# ----------------------------------------------------------------------------- the report


def test_masks_named_with_a_suffix_are_one_problem_per_folder_with_the_rename(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cells"
    pairs(root / "images", root / "masks", names(40), image_suffix=".jpg", mask_stem="{}_mask")
    rc, out = check(capsys, root)
    assert rc == 1
    errors = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert errors == [
        f"  error: {root / 'masks'}: 40 images lack their masks and 40 masks their image: the "
        "masks are named <image name>_mask.png (img00_mask.png, img01_mask.png, img02_mask.png "
        "and 37 more); segkit pairs masks/<image name>.png with the image of that name: the "
        "command below renames them"
    ]
    assert "FAILED: 1 problem would stop a run; do what 'to fix' says" in out
    assert f"rename them with cd {root / 'masks'} && for f in *_mask.png;" in out
    with pytest.raises(DataError) as e:  # and a run says the same, once
        FolderDataset(root)
    assert str(e.value).count("40 masks are named <image name>_mask.png") == 1


def test_an_unrelated_missing_mask_is_still_listed_beside_the_condensed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cells"
    pairs(root / "images", root / "masks", names(5), mask_stem="{}_mask")
    (root / "masks" / "img04_mask.png").unlink()
    rc, out = check(capsys, root)
    errors = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert len(errors) == 2 and errors[0].startswith(f"  error: {root / 'masks'}: 4 images lack")
    assert errors[1].startswith(f"  error: {root / 'masks' / 'img04.png'}: mask for image img04")


@pytest.mark.slow  # runs bash (the fast tier starts no process); trains nothing
def test_the_printed_commands_lay_the_folders_out(tmp_path: Path) -> None:
    root = masks_beside(tmp_path / "beside")
    with pytest.raises(DataError) as e:
        FolderDataset(root)
    subprocess.run(["bash", "-c", str(e.value).split("so move them: ")[1]], check=True)
    audit = FolderDataset.audit(
        root, valid_fraction=0.25, test_fraction=0.25
    )  # extra.png has no mask: reported as any such image
    assert sorted(s.id for split in audit.splits.values() for s in split) == [
        "img00",
        "img01",
        "img02",
    ]
    assert [p.name for p, _ in audit.problems] == ["extra.png"]
    assert sorted(p.name for p in (root / "masks").iterdir()) == [
        "img00.png",
        "img01.png",
        "img02.png",
    ]
    assert sorted(p.name for p in (root / "images").iterdir()) == [
        "extra.png",
        "img00.jpg",
        "img01.jpg",
        "img02.jpg",
    ]

    split = tmp_path / "split"
    for folder in ("train", "val"):
        pairs(split / folder / "images", split / folder / "masks", names(3), mask_stem="{}_gt")
    with pytest.raises(DataError) as e:
        FolderDataset(split)
    command = re.search(r"rename them with (for d in .*; done\); done)", str(e.value)).group(1)
    subprocess.run(["bash", "-c", command], check=True)
    assert len(FolderDataset(split).samples("valid")) == 3
