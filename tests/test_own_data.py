"""A user's own data on the first try (issues 25 and 24): the layout of a ``--data`` folder
recognised (segkit.data.layouts), mask encodings recognised with the fix printed
(segkit.data.encoding), every problem of a folder listed in one pass by ``segkit data
check``, and every mask checked before a run's first step (segkit.data.prepare).

Each test writes the folder a new user would have: ``images/`` + ``masks/`` of small
flat images whose masks hold a square, in the encoding under test. The slow tests at the
end apply exactly the advice ``segkit data check`` prints and train one tiny epoch.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import ready_folder
from PIL import Image

from segkit import create_dataset
from segkit.cli import main
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.data.prepare import Ready
from segkit.errors import DataError

SIZE = 32
RED = (255, 0, 0)


def square(i: int, value: int = 1) -> np.ndarray:
    """A SIZE x SIZE mask of 0 with a 10 px square of ``value`` placed by ``i``."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    y, x = 4 + i % 5 * 3, 3 + i % 7 * 2
    m[y : y + 10, x : x + 10] = value
    return m


def write_pairs(
    root: Path, n: int = 12, encoding: str = "255", *, stem: str = "cell{:03d}"
) -> Path:
    """``n`` JPEG images with masks in ``encoding``: ``01``, ``255``, ``index3`` (0/1/2),
    ``palette3`` (palette PNG, indices 0/1/2), ``spread3`` (0/100/200), ``rgb`` (red on
    black), ``jpeg`` (0/255
    saved as .jpg), ``blurred`` (0/255 through JPEG, saved as .png), ``1bit``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        m = square(i)
        image = np.full((SIZE, SIZE, 3), 40, np.uint8) + m[..., None] * 150
        Image.fromarray(image).save(root / "images" / f"{stem.format(i)}.jpg", quality=95)
        write_mask(root / "masks" / f"{stem.format(i)}.png", m, encoding, i)
    return root


def write_mask(path: Path, m: np.ndarray, encoding: str, i: int = 0) -> None:
    if encoding == "01":
        Image.fromarray(m).save(path)
    elif encoding == "255":
        Image.fromarray(m * 255).save(path)
    elif encoding == "1bit":
        Image.fromarray(m.astype(bool)).save(path)
    elif encoding == "index3":
        m = m.copy()
        m[m == 1] = 1 + i % 2  # half the masks hold class 2, the others class 1
        Image.fromarray(m).save(path)
    elif encoding == "palette3":
        m = m.copy()
        m[m == 1] = 1 + i % 2
        im = Image.fromarray(m, "P")
        im.putpalette([0, 0, 0, *RED, 0, 0, 255] + [0] * (768 - 9))
        im.save(path)
    elif encoding == "spread3":  # an annotation tool's export: classes 0, 100, 200
        m = m.copy()
        m[m == 1] = 100 * (1 + i % 2)
        Image.fromarray(m).save(path)
    elif encoding == "rgb":
        rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
        rgb[m == 1] = RED
        Image.fromarray(rgb).save(path)
    elif encoding == "jpeg":
        Image.fromarray(m * 255).save(path.with_suffix(".jpg"), quality=70)
    elif encoding == "blurred":
        buf = path.with_suffix(".tmp.jpg")
        Image.fromarray(m * 255).save(buf, quality=60)
        Image.open(buf).convert("L").save(path)
        buf.unlink()
    else:
        raise ValueError(encoding)


def check(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> tuple[int, str]:
    """``segkit data check --data root`` as a new user types it (no --dataset)."""
    rc = main(["data", "check", "--data", str(root), *extra])
    return rc, capsys.readouterr().out


def block_after(out: str, marker: str) -> tuple[Path, str]:
    """The file a fix says to write and its lines: ``write PATH with these lines ...:``
    then lines indented by 6 spaces."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if marker in line)
    path = Path(re.search(r"write (\S+) with these lines", lines[at]).group(1))
    body = []
    for line in lines[at + 1 :]:
        if not line.startswith("      "):
            break
        body.append(line.strip())
    return path, "\n".join(body) + "\n"


def python_command(out: str) -> str:
    """The ``python -c "..."`` code a fix prints."""
    return re.search(r'python -c "(.+?)"(?:$|;|\s)', out, re.M).group(1)


# ----------------------------------------------------------------------------- layouts


def test_a_folder_of_images_and_masks_is_recognised_without_dataset(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "cells", 4)
    assert RunConfig(data=str(root)).resolved_dataset() == "folder"


def test_an_oxford_pet_folder_is_recognised(tiny_pets: Path) -> None:
    assert RunConfig(data=str(tiny_pets)).resolved_dataset() == "oxford_pet"


def test_a_folder_in_no_layout_is_refused_naming_both_layouts_and_what_it_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cells" / "imgs").mkdir(parents=True)
    (tmp_path / "cells" / "labels").mkdir()
    (tmp_path / "cells" / "notes.txt").write_text("")
    assert main(["run", "--data", str(tmp_path / "cells"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"segkit: error: {tmp_path / 'cells'}: no dataset layout recognises this folder (it "
        "holds imgs/, labels/, notes.txt); lay the files out as one of: folder: "
        "images/<name>.jpg|.jpeg|.png|.tif|.tiff|.bmp|.webp|.gif and masks/<name>.png|.tif|.tiff|.bmp "
        "with the same names"
    )
    assert "; oxford_pet: images/<name>.jpg, annotations/trimaps/<name>.png" in err
    assert err.endswith("or name a layout with --dataset")
    assert len(err.splitlines()) == 1
    with pytest.raises(DataError) as e:  # from Python: the keyword
        RunConfig(data=str(tmp_path / "cells")).resolved_dataset()
    assert str(e.value).endswith("; or name a layout with dataset")


def test_a_missing_folder_names_the_layouts(tmp_path: Path) -> None:
    with (
        given_as(COMMAND_LINE),
        pytest.raises(
            DataError,
            match=r"nope: data folder not found; --data names a dataset "
            r"folder in one of these layouts: folder: images/.*; oxford_pet: images/",
        ),
    ):
        RunConfig(data=str(tmp_path / "nope")).resolved_dataset()
    with pytest.raises(  # from Python: the keyword
        DataError, match=r"nope: data folder not found; data names a dataset folder in one of"
    ):
        RunConfig(data=str(tmp_path / "nope")).resolved_dataset()


def test_a_folder_in_two_layouts_asks_which(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "both", 2)
    (root / "annotations").mkdir()
    with (
        given_as(COMMAND_LINE),
        pytest.raises(
            DataError,
            match=r"both: the folder fits 2 layouts \(folder, oxford_pet\); name the one "
            r"to read with --dataset folder \(or oxford_pet\)$",
        ),
    ):
        RunConfig(data=str(root)).resolved_dataset()
    with pytest.raises(
        DataError, match=r"; name the one to read with dataset='folder' \(or 'oxford_pet'\)$"
    ):
        RunConfig(data=str(root)).resolved_dataset()


def test_a_third_party_layout_is_recognised_as_the_builtins_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core names no layout: a plugin's recognizes() and layout are all it takes."""
    import sys

    from helpers import make_distribution

    from segkit import registry

    site = tmp_path / "site"
    make_distribution(
        site,
        "fake-tiles",
        {"segkit.datasets": {"tiles": "fake_tiles:Tiles"}},
        {
            "fake_tiles": """
            from pathlib import Path

            class Tiles:
                layout = "tiles/<name>.tif and labels/<name>.png"

                @staticmethod
                def recognizes(root):
                    return (Path(root) / "tiles").is_dir()

                def __init__(self, root):
                    self.root = Path(root)
            """
        },
    )
    monkeypatch.syspath_prepend(str(site))
    registry.reset()
    try:
        (tmp_path / "scan" / "tiles").mkdir(parents=True)
        assert RunConfig(data=str(tmp_path / "scan")).resolved_dataset() == "tiles"
        (tmp_path / "other").mkdir()
        with pytest.raises(DataError, match=r"; tiles: tiles/<name>\.tif and labels/<name>\.png;"):
            RunConfig(data=str(tmp_path / "other")).resolved_dataset()
    finally:
        monkeypatch.undo()
        sys.modules.pop("fake_tiles", None)
        registry.reset()


def test_the_recognised_layout_is_recorded_and_old_records_keep_theirs(tmp_path: Path) -> None:
    from segkit import registry
    from segkit.task import resolve

    root = write_pairs(tmp_path / "cells", 4)
    config, _ = resolve(RunConfig(data=str(root)), registry.create("datasets", "folder", root))
    assert config.dataset == "folder"
    # A config.json of an older segkit: data without dataset meant oxford_pet, even where
    # the folder is gone now.
    old = {**RunConfig(data=str(tmp_path / "gone")).to_dict(), "resolved": {}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert RunConfig.from_file(tmp_path / "config.json").resolved_dataset() == "oxford_pet"


# ----------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("encoding", ["01", "255", "1bit"])
def test_binary_encodings_pass_and_print_the_run_command(
    encoding: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", encoding=encoding)
    rc, out = check(capsys, root)
    assert rc == 0, out
    assert out.rstrip().endswith(
        f"ok: nothing here would stop a run\nrun it: segkit run --data {root} --image-size 32"
    )


def test_rgb_masks_get_the_classes_txt_of_their_colours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", encoding="rgb")
    rc, out = check(capsys, root)
    assert rc == 1
    errors = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert errors == [
        "  error: 12 of 12 masks hold values outside those dataset folder reads (0, 1, 255; "
        "binary): cell000.png, cell001.png, cell002.png and 9 more; 12 are RGB colour masks "
        "(PNG 24-bit RGB) holding colours (0, 0, 0) on 90.2%, (255, 0, 0) on 9.8%: segkit "
        "reads colour masks by a palette of 2 classes (below)"
    ]
    path, body = block_after(out, "name the classes (one class per colour)")
    assert (path, body) == (root / "classes.txt", "background 0 0 0\nred 255 0 0\n")
    assert (
        "  - name the classes (one class per colour): pass --dataset-opt classes=background,red "
        f"--dataset-opt 'palette=0,0,0;255,0,0', or write {root / 'classes.txt'} with these lines"
    ) in out
    assert out.rstrip().endswith(
        "FAILED: 12 problems would stop a run; do what 'to fix' says, then check again"
    )
    # The colours' grey levels are no labels: no values, foreground or empty masks from them.
    assert (
        "mask values: 12 RGB colour masks (their colours below); declared 0, 1, 255 "
        "(background 0)\n"
    ) in out
    assert "empty masks (" not in out
    assert all(line.split()[-2:] == ["-", "0"] for line in out.splitlines()[2:5]), out


def test_rgb_masks_with_class_names_get_those_names_beside_their_colours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", encoding="rgb")
    rc, out = check(capsys, root, "--dataset-opt", "classes=bg,nucleus")
    assert rc == 1
    assert "holding colours (0, 0, 0) on 90.2%, (255, 0, 0) on 9.8%" in out
    assert (
        "  - name the classes (one class per colour: your names in their order beside the "
        "colours, black first, then by pixel share; check that each name has its class's "
        "colour): pass --dataset-opt classes=bg,nucleus --dataset-opt 'palette=0,0,0;255,0,0'"
    ) in out
    path, body = block_after(out, "name the classes (one class per colour")
    assert body == "bg 0 0 0\nnucleus 255 0 0\n"


def test_the_printed_flags_declare_what_the_printed_classes_txt_does(tmp_path: Path) -> None:
    from segkit.build import build_dataset
    from segkit.config import parse_options

    root = write_pairs(tmp_path / "cells", 4, encoding="rgb")
    flags = shlex.split("classes=background,red 'palette=0,0,0;255,0,0'")
    by_flags = build_dataset(
        RunConfig(data=str(root), dataset_options=parse_options(flags, "--dataset-opt"))
    ).mask_spec
    (root / "classes.txt").write_text("background 0 0 0\nred 255 0 0\n")
    assert build_dataset(RunConfig(data=str(root))).mask_spec == by_flags
    assert by_flags.classes == ("background", "red") and by_flags.palette[1] == RED


def test_index_masks_get_a_classes_txt_and_palette_masks_keep_their_colours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "index", encoding="index3")
    rc, out = check(capsys, root)
    assert rc == 1
    assert (
        "6 of 12 masks hold values outside those dataset folder reads (0, 1, 255; binary): "
        "cell001.png, cell003.png, cell005.png and 3 more; 6 hold values 2 (PNG 8-bit grey): "
        "index masks of 3 classes, and the dataset reads masks as binary (0 background, 1 or "
        "255 foreground): declare them (below)"
    ) in out
    assert block_after(out, "class c is mask value c, 0..2") == (
        root / "classes.txt",
        "background\nclass_1\nclass_2\n",
    )
    root = write_pairs(tmp_path / "palette", encoding="palette3")
    rc, out = check(capsys, root)
    assert rc == 1 and "6 hold values 2 (PNG 8-bit palette)" in out
    assert block_after(out, "class c is mask value c")[1] == (
        "background 0 0 0\nred 255 0 0\nblue 0 0 255\n"
    )


def test_0_255_masks_among_class_masks_are_warned_255_being_ignore_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Binary 0/255 masks mixed with index masks of 3 classes: declaring the classes (the
    fix) makes 255 'ignore', so their foreground would be dropped: a warning says so, with
    how many, the share of their pixels, an example, and the two fixes."""
    root = write_pairs(tmp_path / "mixed", encoding="index3")
    for i in (0, 2, 4):
        write_mask(root / "masks" / f"cell{i:03d}.png", square(i), "255")
    rc, out = check(capsys, root)
    assert rc == 1
    warning = (
        "  warning: 3 of 12 masks hold only 0 and 255 (binary-looking, e.g. "
        f"{root / 'masks' / 'cell000.png'}) among masks of 3 classes (0..2), so 255 {{}} read "
        "as 'ignore' in them: 9.8% of their pixels (their foreground) {} left out of training "
        "and scores; convert those 3 masks to class values (255 -> the class of those "
        "objects), or, if 255 is a class of its own, declare it: --dataset-opt "
        "classes=background,class_1,class_2,class_3 --dataset-opt values=0,1,2,255"
    )
    assert warning.format("would be", "would be") in out.splitlines()
    report = json.loads(check(capsys, root, "--json")[1])
    assert [p["kind"] for p in report["problems"] if p["severity"] == "warning"] == [
        "binary_among_classes"
    ]
    assert "class c is mask value c, 0..2; 255 is 'ignore', in the 0/255 masks too" in out
    # The classes declared: 255 is 'ignore' now, the run would pass, the warning stays.
    flags = ["--dataset-opt", "classes=background,class_1,class_2"]
    rc, out = check(capsys, root, *flags)
    assert rc == 0 and warning.format("is", "are") in out.splitlines()
    # 255 declared a class of its own: nothing is ignored, nothing to warn about.
    flags = ["--dataset-opt", "classes=background,class_1,class_2,class_3"]
    rc, out = check(capsys, root, *flags, "--dataset-opt", "values=0,1,2,255")
    assert rc == 0 and "binary-looking" not in out
    # Class masks alone: no warning.
    rc, out = check(capsys, write_pairs(tmp_path / "index", encoding="index3"))
    assert "binary-looking" not in out


def test_a_value_outside_the_declared_classes_asks_for_one_more_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", encoding="index3")
    (root / "classes.txt").write_text("background\ncell\n")
    rc, out = check(capsys, root)
    assert rc == 1
    assert "the dataset names 2 (0..1): declare them (below)" in out
    assert block_after(out, "class c is mask value c")[1] == "background\ncell\nclass_2\n"


def test_jpeg_masks_are_named_and_the_printed_command_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", 6, encoding="jpeg")
    rc, out = check(capsys, root)
    assert rc == 1
    assert (
        f"  error: {root / 'masks' / 'cell000.png'}: mask for image cell000.jpg not found; "
        "found cell000.jpg, but masks must be lossless, .png, .tif, .tiff or .bmp (JPEG "
        "compression changes label values)"
    ) in out
    assert out.count("error: ") == 6  # one per image, and no empty-split noise
    assert "masks/ holds 6 masks in a format segkit does not read as masks (cell000.jpg, " in out
    exec(python_command(out))  # noqa: S102 -- exactly the printed fix
    rc, out = check(capsys, root)
    assert rc == 0, out
    assert (
        "  6 files, not .png (the .png of the same name is the mask read): masks/cell000.jpg, "
        "masks/cell001.jpg, masks/cell002.jpg, masks/cell003.jpg, masks/cell004.jpg and 1 more\n"
    ) in out


def test_blurred_png_masks_are_recognised_and_thresholded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", 6, encoding="blurred")
    rc, out = check(capsys, root)
    assert rc == 1
    assert re.search(r"6 are blurred: they hold \d+ distinct values", out), out
    assert "threshold the blurred masks at half their brightest value into 0/255 PNGs" in out
    exec(python_command(out))  # noqa: S102 -- exactly the printed fix
    assert check(capsys, root)[0] == 0


def test_mixed_encodings_and_an_odd_mask_are_warned_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", 10, encoding="1bit")
    write_mask(root / "masks" / "cell003.png", square(3), "01")
    write_mask(root / "masks" / "cell004.png", square(4), "01")
    grey_rgb = np.repeat((square(7) * 255)[..., None], 3, axis=2)
    Image.fromarray(grey_rgb).save(root / "masks" / "cell007.png")
    rc, out = check(capsys, root)
    assert rc == 0, out  # warnings: every mask reads as binary
    assert "  warning: cell007.png: is PNG 24-bit RGB, where 7 other masks are PNG 1-bit" in out
    assert "  warning: cell003.png, cell004.png: are PNG 8-bit grey, where 7" in out
    assert (  # 1-bit PNGs read as 0/1 but are black and white: neither encoding
        "  warning: the masks mix encodings 0/1 (2 masks: cell003.png, cell004.png) and "
        "0/255 (1 mask: cell007.png); each reads as binary "
        "(any value but 0 is foreground), but a folder mixing them often holds files from two "
        "sources: look at a few of each"
    ) in out


def test_every_missing_mask_is_listed_with_its_near_miss_in_one_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", 8)
    (root / "masks" / "cell005.png").rename(root / "masks" / "cell005_mask.png")
    (root / "masks" / "cell006.png").unlink()
    write_mask(root / "masks" / "cell002.png", square(2), "rgb")
    rc, out = check(capsys, root)
    assert rc == 1
    errors = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert errors == [
        f"  error: {root / 'masks' / 'cell005.png'}: mask for image cell005.jpg not found; "
        "masks/ holds cell005_mask.png: name the mask cell005.png",
        f"  error: {root / 'masks' / 'cell006.png'}: mask for image cell006.jpg not found; "
        "every image needs masks/<same name>.png",
        f"  error: {root / 'masks' / 'cell005_mask.png'}: mask has no image "
        "images/cell005_mask.jpg, .jpeg, .png, .tif, .tiff, .bmp, .webp or .gif (images/ holds "
        "cell005.jpg); add the image or "
        "remove the mask",
        f"  error: {root / 'masks' / 'cell002.png'}: values {{76}} found, masks of this "
        "dataset hold 0, 1, 255 (an RGB colour mask, colours (0, 0, 0) on 90.2%, "
        "(255, 0, 0) on 9.8%, read as grey)",
    ]
    # And a run says it once: the first in full, how many more, where to see them all.
    with pytest.raises(DataError) as e:
        create_dataset("folder", root)
    assert str(e.value) == (
        f"{root / 'masks' / 'cell005.png'}: mask for image cell005.jpg not found (1 more "
        "images lack masks: cell006; 1 more masks lack images: cell005_mask); masks/ holds "
        f"cell005_mask.png: name the mask cell005.png; `segkit data check --data {root}` lists "
        "every problem"
    )


def test_masks_named_with_a_suffix_get_the_rename_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", 4)
    for p in (root / "masks").iterdir():
        p.rename(p.with_name(f"{p.stem}_mask.png"))
    rc, out = check(capsys, root)
    assert rc == 1
    assert (
        "  - 4 masks are named <image name>_mask.png; segkit pairs masks/<image name>.png with "
        f"images/<image name>.*: rename them with cd {root / 'masks'} && for f in *_mask.png; "
        'do mv "$f" "${f%_mask.png}.png"; done'
    ) in out


def test_a_random_split_left_empty_names_the_fraction_that_fills_it(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "cells", 4)
    with pytest.raises(DataError) as e:
        create_dataset("folder", root).samples("test")
    assert str(e.value) == (
        f"{root / 'images'}: split 'test' has no samples: 4 images x test_fraction 0.1 rounds "
        "to 0; pass dataset_options={'test_fraction': 0.25}, add images, or list the splits in "
        "splits/train.txt, valid.txt and test.txt"
    )
    with given_as(COMMAND_LINE), pytest.raises(DataError, match="pass --dataset-opt test_f"):
        create_dataset("folder", root).samples("test")  # as `segkit run` says it
    ds = create_dataset("folder", root, test_fraction=0.25, valid_fraction=0.25)
    assert [len(ds.samples(s)) for s in ("train", "valid", "test")] == [2, 1, 1]


def test_files_the_oxford_layout_skips_are_listed(
    broken_pets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: a GIF named .jpg with a trimap, in neither split list, and three
    .mat files in images/ (the official archive holds such files)."""
    images, trimaps = broken_pets / "images", broken_pets / "annotations" / "trimaps"
    Image.new("P", (20, 20)).save(images / "Stray_1.jpg", format="GIF")
    Image.fromarray(np.full((20, 20), 2, np.uint8)).save(trimaps / "Stray_1.png")
    for name in ("a", "b", "c"):
        (images / f"{name}.mat").write_bytes(b"MATLAB 5.0")
    rc, out = check(capsys, broken_pets)
    assert rc == 0, out
    assert "skipped: 5 files the dataset does not read" in out
    assert (
        "  3 files, not .jpg (this layout reads images/<name>.jpg): images/a.mat, images/b.mat, "
        "images/c.mat\n"
    ) in out
    assert (
        "  2 files, in neither trainval.txt nor test.txt: images/Stray_1.jpg, "
        "annotations/trimaps/Stray_1.png\n"
    ) in out


def test_a_missing_trimap_names_the_near_miss_and_the_others_are_read(
    broken_pets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = (broken_pets / "annotations" / "test.txt").read_text().split()[0]
    trimap = broken_pets / "annotations" / "trimaps" / f"{name}.png"
    trimap.rename(trimap.with_name(f"{name}.PNG"))
    rc, out = check(capsys, broken_pets)
    assert rc == 1
    assert (
        f"  error: {trimap}: trimap named in {broken_pets / 'annotations' / 'test.txt'} not "
        f"found ({name}.PNG is there); restore the file or remove its name from the split list"
    ) in out
    assert re.search(r"^test +4 ", out, re.M), out  # the other 4 test images were read


# ----------------------------------------------------------------------------- before training


def ready(root: Path, *, skip: bool = False, batch_size: int = 4) -> Ready:
    """The run's checks before training, at this file's batch size (its messages say 4)."""
    return ready_folder(root, skip=skip, batch_size=batch_size, workers=2)


def test_files_that_passed_are_not_read_again_until_one_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segkit.data import prepare

    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    root = write_pairs(tmp_path / "cells", 12)
    read: list[Path] = []
    inspect = prepare.inspect_mask
    monkeypatch.setattr(
        prepare, "inspect_mask", lambda path, spec: read.append(path) or inspect(path, spec)
    )
    ready(root)
    assert len(read) == 12
    assert len(list((tmp_path / "cache" / "checked").iterdir())) == 1
    ready(root)  # the same files: their split sizes alone are checked
    assert len(read) == 12
    ready(root, skip=True)  # --skip-bad-samples decodes the images too: read again
    assert len(read) == 24
    # One mask rewritten in colours: read again, and refused; the refusal is not remembered.
    write_mask(root / "masks" / "cell005.png", square(5), "rgb")
    for _ in range(2):
        with pytest.raises(DataError, match=r"cell005.png: values \{76\} found"):
            ready(root)
    assert len(read) == 48


def test_a_cache_that_cannot_be_written_remembers_nothing_and_fails_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    root = write_pairs(tmp_path / "cells", 12)
    for _ in range(2):
        kept = ready(root)
        assert kept.bad == [] and len(kept.dataset.samples("train")) > 0


def test_a_run_with_rgb_masks_stops_before_training_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", encoding="rgb")
    out = tmp_path / "runs"
    assert main(["run", "--data", str(root), "--epochs", "1", "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "segkit: error: 12 of 12 masks hold values outside those dataset folder reads (0, 1, "
        "255; binary): cell000.png, cell001.png, cell002.png and 9 more; 12 are RGB colour masks"
    )
    assert (
        f"(below); `segkit data check --data {root}` lists every problem; to fix: name the "
        "classes (one class per colour): pass --dataset-opt classes=background,red "
        "--dataset-opt 'palette=0,0,0;255,0,0', or write "
    ) in err
    assert err.rstrip().endswith("\n      background 0 0 0\n      red 255 0 0")
    assert "skip-bad-samples" not in err
    assert err.count("cell0") == 3
    assert not out.exists()  # stopped before the run folder was made


def test_skip_bad_samples_does_not_leave_out_masks_that_read(tmp_path: Path) -> None:
    """The issue's case: every mask refused, and --skip-bad-samples trained on nothing."""
    root = write_pairs(tmp_path / "cells", encoding="rgb")
    with pytest.raises(DataError, match=r"^12 of 12 masks hold values outside"):
        ready(root, skip=True)


def test_skip_bad_samples_leaves_out_unreadable_files_only(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "cells", 12)
    (root / "masks" / "cell003.png").write_bytes(b"not a png")
    kept = ready(root, skip=True)
    assert [(s.id, why.split(": ")[1]) for _, s, why in kept.bad] == [
        (
            "cell003",
            "cannot decode mask (cannot identify image file "
            + repr(str(root / "masks" / "cell003.png"))
            + "); the file is corrupt. Replace it, or delete it and its image",
        )
    ]
    assert "cell003" not in {
        s.id for split in ("train", "valid", "test") for s in kept.dataset.samples(split)
    }
    with pytest.raises(DataError) as e:
        ready(root)
    assert str(e.value).startswith(f"{root / 'masks' / 'cell003.png'}: cannot decode mask")
    assert str(e.value).endswith(
        f"; pass skip_bad_samples=True to leave unreadable files out (`segkit data check "
        f"--data {root}` lists every problem)"
    )


def test_skip_bad_samples_says_it_does_not_fix_an_image_without_its_mask(
    tmp_path: Path,
) -> None:
    from segkit.build import build_dataset

    root = write_pairs(tmp_path / "cells", 12)
    (root / "masks" / "cell003.png").unlink()
    config = RunConfig(data=str(root), skip_bad_samples=True)
    with pytest.raises(DataError, match=r"cell003\.png: mask for image cell003\.jpg not found.*"
                       r"\(skip_bad_samples=True leaves out files that cannot be decoded; it does "
                       r"not pair or drop an image without its mask"):  # fmt: skip
        build_dataset(config)


def test_a_split_left_with_fewer_than_a_batch_or_none_stops(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "cells", 12)  # train 10, valid 1, test 1
    dataset = create_dataset("folder", root)
    train, valid = dataset.samples("train"), dataset.samples("valid")
    for s in train[:7]:
        s.mask.write_bytes(b"")
    with given_as(COMMAND_LINE), pytest.raises(DataError) as e:
        ready(root, skip=True)
    assert str(e.value) == (
        f"{root}: split 'train' has 3 samples after --skip-bad-samples left out 7 "
        "unreadable, fewer than a batch (--batch-size 4); fix or replace the unreadable files "
        f"(listed by `segkit data check --data {root}`), or lower --batch-size to 3"
    )
    valid[0].mask.write_bytes(b"")
    with pytest.raises(
        DataError,
        match=r"split 'valid' has no samples after skip_bad_samples=True left out 1 unreadable; "
        r"there is nothing to evaluate: fix or replace",
    ):
        ready(root, skip=True, batch_size=1)


def test_a_class_value_outside_the_declared_classes_stops_before_the_first_step(
    tmp_path: Path,
) -> None:
    """Issue 24.3: it was caught mid-epoch, after `step 3/4`."""
    root = write_pairs(tmp_path / "cells", encoding="index3")
    (root / "classes.txt").write_text("background\ncell\n")
    with pytest.raises(DataError) as e:
        ready(root)
    message = str(e.value)
    assert message.startswith(
        "6 of 12 masks hold values outside those dataset folder reads (0, 1, 255; 2 classes: "
        "background, cell): cell001.png, cell003.png, cell005.png and 3 more; 6 hold values 2"
    )
    assert message.endswith("\n      background\n      cell\n      class_2")


def test_a_mask_of_another_size_stops_before_training(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "cells", 12)
    Image.fromarray(np.zeros((20, SIZE), np.uint8)).save(root / "masks" / "cell004.png")
    with pytest.raises(
        DataError,
        match=r"cell004\.png: mask is 32x20 but image cell004\.jpg is "
        r"32x32; an image and its mask must have the same size; `segkit data "
        r"check",
    ):
        ready(root)


# ----------------------------------------------------------------------------- first try


def _train_as_printed(capsys: pytest.CaptureFixture[str], root: Path, out: Path) -> Path:
    """Run the ``run it:`` command ``segkit data check`` printed, for one tiny epoch."""
    from conftest import TINY_RUN

    rc, text = check(capsys, root)
    assert rc == 0, text
    command = text.rstrip().splitlines()[-1]
    assert command.startswith("run it: segkit run --data ")
    argv = shlex.split(command.removeprefix("run it: segkit "))
    argv += [*TINY_RUN, "--epochs", "1", "--out", str(out), "--name", "first", "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    return out / "first"


@pytest.mark.slow
def test_rgb_masks_train_from_the_check_advice_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", encoding="rgb")
    rc, out = check(capsys, root)
    assert rc == 1
    path, body = block_after(out, "write ")
    path.write_text(body)  # exactly what the check said to write
    run = _train_as_printed(capsys, root, tmp_path / "runs")
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "folder"
    assert config["resolved"]["task"]["classes"] == ["background", "red"]
    assert (run / "metrics.csv").read_text().count("\n") == 2  # header and epoch 1


@pytest.mark.slow
def test_spread_grey_masks_train_from_the_check_advice_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Classes 0, 100, 200: the check prints a classes.txt with each class's grey value,
    and the run then trains 3 classes and predicts class indices."""
    root = write_pairs(tmp_path / "cells", encoding="spread3")
    rc, out = check(capsys, root)
    assert rc == 1 and "masks of 3 classes whose grey values are 0, 100, 200" in out, out
    path, body = block_after(out, "write ")
    assert body == "background 0\nclass_1 100\nclass_2 200\n"
    path.write_text(body)  # exactly what the check said to write
    run = _train_as_printed(capsys, root, tmp_path / "runs")
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["task"]["classes"] == ["background", "class_1", "class_2"]
    assert (run / "metrics.csv").read_text().count("\n") == 2  # header and epoch 1


@pytest.mark.slow
def test_0_255_masks_train_from_the_check_advice_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", encoding="255")
    run = _train_as_printed(capsys, root, tmp_path / "runs")
    assert json.loads((run / "config.json").read_text())["dataset"] == "folder"
    assert (run / "metrics.csv").read_text().count("\n") == 2


@pytest.mark.slow
def test_the_printed_rename_command_pairs_the_masks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", 12)
    for p in (root / "masks").iterdir():
        p.rename(p.with_name(f"{p.stem}_mask.png"))
    _, out = check(capsys, root)
    command = re.search(r"rename them with (cd .*; done)", out).group(1)
    subprocess.run(["bash", "-c", command], check=True)
    assert check(capsys, root)[0] == 0


def test_data_check_takes_the_folder_as_its_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path / "cells", encoding="01")
    assert main(["data", "check", str(root)]) == 0
    positional = capsys.readouterr().out
    assert main(["data", "check", "--data", str(root)]) == 0
    assert (
        capsys.readouterr().out == positional and f"run it: segkit run --data {root}" in positional
    )
    assert main(["data", "check", str(root), "--data", str(tmp_path)]) == 2
    assert "two folders; give one" in capsys.readouterr().err
