"""K classes end to end (issue 12): mask specs, datasets, both loaders, the task the engine
derives, reports, inference, and runs of the collar and trimap sets.

The loss and metric arithmetic is tested in test_multiclass_losses.py and
test_multiclass_metrics.py."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ready_folder
from PIL import Image

from segkit import recipes as R
from segkit import registry
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.contracts import IGNORE_INDEX, MaskSpec
from segkit.data.reading import read_raw_mask, read_sample, to_target
from segkit.errors import ConfigError, DataError, MaskValuesError
from segkit.task import MultiClassMeter, Task, resolve

SIZE = 64


def write_folder(root: Path, masks: list[np.ndarray], classes_txt: str | None = None) -> Path:
    """A folder dataset of flat grey images (each its own grey) with the given masks (PNG: uint8 arrays are
    saved as 8-bit grayscale, (H, W, 3) arrays as RGB)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        h, w = m.shape[:2]
        Image.fromarray(np.full((h, w, 3), 40 + i, np.uint8)).save(root / "images" / f"m{i}.png")
        Image.fromarray(m).save(root / "masks" / f"m{i}.png")
    if classes_txt is not None:
        (root / "classes.txt").write_text(classes_txt)
    return root


def stripes(h: int = 40, w: int = 48) -> np.ndarray:
    """Index mask: rows of class 0, 1, 2 and a band of 255 (ignore)."""
    m = np.zeros((h, w), np.uint8)
    m[10:20] = 1
    m[20:30] = 2
    m[30:34] = IGNORE_INDEX
    return m


# ----------------------------------------------------------------------------- specs


def test_multiclass_spec_maps_raw_values_to_classes_and_ignore() -> None:
    spec = MaskSpec.multiclass(("background", "pet", "collar"), values=(2, 1, 4), ignore=3)
    assert spec.is_multiclass and spec.num_classes == 3 and spec.has_ignore
    assert spec.lookup() == {2: 0, 1: 1, 4: 2, 3: IGNORE_INDEX}
    raw = np.array([[1, 2], [3, 4]], np.uint8)
    assert to_target(raw, spec).tolist() == [[1, 0], [IGNORE_INDEX, 2]]
    # Binary specs are unchanged: 0/1 by the background rule, no classes.
    binary = MaskSpec(background=2, allowed=(1, 2, 3))
    assert binary.num_classes == 1 and not binary.is_multiclass
    assert to_target(raw[:, :1], binary).tolist() == [[1], [1]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ("a",), "class_index": (0, 0)}, "a multi-class dataset has 2 to 255"),
        ({"classes": ("a", "a"), "class_index": (0, 1)}, "must be distinct"),
        ({"classes": ("a", "b"), "class_index": (0,)}, "class_index has 1 entries for 2"),
        ({"classes": ("a", "b"), "class_index": (0, 7)}, r"holds \[7\]"),
        ({"class_index": (0, 1)}, "a binary mask spec .no classes. has none"),
        ({"palette": ((0, 0, 0),)}, "a binary mask spec"),
    ],
)
def test_bad_mask_specs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MaskSpec(background=0, allowed=(0, 1), **kwargs)


def test_ignore_colour_needs_an_ignore_value_and_palettes_need_one_colour_per_class() -> None:
    with pytest.raises(ConfigError, match="palette has 1 colours for 2 classes"):
        MaskSpec.multiclass(("a", "b"), palette=((0, 0, 0),))
    spec = MaskSpec.multiclass(("a", "b"), palette=((0, 0, 0), (255, 0, 0)), ignore_color=(9, 9, 9))
    assert spec.lookup() == {0: 0, 1: 1, IGNORE_INDEX: IGNORE_INDEX}  # 255 added for it


# ----------------------------------------------------------------------------- datasets


def test_oxford_pet_trimap_target_gives_three_classes(tiny_pets: Path) -> None:
    binary = registry.create("datasets", "oxford_pet", tiny_pets)
    trimap = registry.create("datasets", "oxford_pet", tiny_pets, target="trimap")
    assert not binary.mask_spec.is_multiclass
    assert trimap.mask_spec.classes == ("background", "pet", "border")
    sample = trimap.samples("train")[0]
    raw = read_raw_mask(sample.mask, trimap.mask_spec)
    _, classes = read_sample(sample, trimap.mask_spec)
    assert classes.dtype == np.uint8
    for value, cls in ((2, 0), (1, 1), (3, 2)):
        assert (classes[raw == value] == cls).all()
    _, mask = read_sample(sample, binary.mask_spec)  # the lab's rule, unchanged
    assert np.array_equal(mask, (raw != 2).astype(np.uint8))
    with pytest.raises(ConfigError, match="targets are binary, trimap"):
        registry.create("datasets", "oxford_pet", tiny_pets, target="parts")


def test_folder_reads_index_masks_with_classes_from_the_option_or_classes_txt(
    tmp_path: Path,
) -> None:
    root = write_folder(tmp_path / "d", [stripes()] * 10, "# classes\nsky\nroad\ncar\n")
    listed = registry.create("datasets", "folder", root)
    assert listed.mask_spec.classes == ("sky", "road", "car")
    option = registry.create("datasets", "folder", root, classes="background,cell,nucleus")
    assert option.mask_spec.classes == ("background", "cell", "nucleus")  # the option wins
    _, m = read_sample(listed.samples("train")[0], listed.mask_spec)
    assert np.array_equal(m, stripes())  # 0..2 as stored, 255 ignored
    # Without classes the same folder is binary, and a class value is out of range there.
    (root / "classes.txt").unlink()
    binary = registry.create("datasets", "folder", root)
    with pytest.raises(DataError, match=r"m\d\.png: values \{2\} found"):
        read_sample(binary.samples("train")[0], binary.mask_spec)


def test_folder_reads_palette_pngs_as_indices_and_rgb_masks_by_colour(tmp_path: Path) -> None:
    idx = stripes()
    pal = Image.fromarray(idx)
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (768 - 9))
    root = tmp_path / "p"
    write_folder(root, [idx] * 4)
    for i in range(4):
        pal.save(root / "masks" / f"m{i}.png")
    ds = registry.create("datasets", "folder", root, classes=["bg", "a", "b"])
    _, m = read_sample(ds.samples("train")[0], ds.mask_spec)
    assert np.array_equal(m, idx)
    # The PNG's own colours colour the reports and predicted masks; a palette given wins.
    assert ds.mask_spec.palette == ((0, 0, 0), (255, 0, 0), (0, 0, 255))
    given = registry.create(
        "datasets", "folder", root, classes="bg,a,b", palette="1,1,1;2,2,2;3,3,3"
    )
    assert given.mask_spec.palette == ((1, 1, 1), (2, 2, 2), (3, 3, 3))
    pal.putpalette([v for i in range(256) for v in (i, i, i)])  # a grey ramp: the default
    pal.save(root / "masks" / "m0.png")
    ds = registry.create("datasets", "folder", root, classes=["bg", "a", "b"])
    assert ds.mask_spec.palette == ()

    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    rgb = colours[np.minimum(idx, 2)]
    rgb[idx == IGNORE_INDEX] = (224, 224, 192)
    root = write_folder(tmp_path / "c", [rgb] * 4)
    ds = registry.create(
        "datasets",
        "folder",
        root,
        classes="bg,a,b",
        palette="0,0,0;255,0,0;0,0,255",
        ignore_color="224,224,192",
    )
    _, m = read_sample(ds.samples("train")[0], ds.mask_spec)
    assert np.array_equal(m, idx)


def test_folder_reads_grey_masks_whose_classes_are_spread_over_0_255(tmp_path: Path) -> None:
    """Annotation tools often export class c as c * 50 (or c * 85): ``values`` (the option
    or a second column of classes.txt) names each class's grey value."""
    idx = stripes()
    spread = np.where(idx == IGNORE_INDEX, IGNORE_INDEX, idx * 50).astype(np.uint8)
    root = write_folder(tmp_path / "s", [spread] * 10)
    ds = registry.create("datasets", "folder", root, classes="bg,road,car", values="0,50,100")
    assert ds.mask_spec.allowed == (0, 50, 100, IGNORE_INDEX)
    _, m = read_sample(ds.samples("train")[0], ds.mask_spec)
    assert np.array_equal(m, idx)  # class indices, 255 still ignored
    (root / "classes.txt").write_text("bg 0\nroad 50\ncar 100\n")
    listed = registry.create("datasets", "folder", root)
    assert listed.mask_spec == ds.mask_spec
    # 255 as a class value (0, 85, 170, 255): no ignore value unless one is named.
    top = (np.minimum(idx, 3) * 85).astype(np.uint8)
    top[idx == IGNORE_INDEX] = 255
    root = write_folder(tmp_path / "t", [top] * 10, "a 0\nb 85\nc 170\nd 255\n")
    ds = registry.create("datasets", "folder", root)
    assert not ds.mask_spec.has_ignore and ds.mask_spec.allowed == (0, 85, 170, 255)
    _, m = read_sample(ds.samples("train")[0], ds.mask_spec)
    assert np.array_equal(m, np.where(idx == IGNORE_INDEX, 3, idx))
    # Colours with values: "name value r g b".
    (root / "classes.txt").write_text("a 0 0 0 0\nb 85 255 0 0\nc 170 0 255 0\nd 255 0 0 255\n")
    ds = registry.create("datasets", "folder", root)
    assert ds.mask_spec.palette[1] == (255, 0, 0) and ds.mask_spec.allowed[1] == 85


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"values": "0,50"}, "values describes class maps, and this folder dataset is binary"),
        ({"classes": "a,b,c", "values": "0,50"}, "2 mask values for 3 classes"),
        ({"classes": "a,b", "values": "0,0"}, r"values='0,0': expected the distinct grey"),
        ({"classes": "a,b", "values": "0,300"}, "expected the distinct grey value"),
        ({"classes": "a,b", "values": "0,x"}, "expected the distinct grey value"),
        ({"classes": "a,b", "values": "0,50", "ignore": 50}, "ignore=50: expected a mask value"),
    ],
)
def test_bad_values_options_are_one_line_errors(
    tmp_path: Path, options: dict, message: str
) -> None:
    root = write_folder(tmp_path / "d", [stripes()] * 4)
    with pytest.raises(ConfigError, match=message):
        registry.create("datasets", "folder", root, **options)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bg 0\nroad\n", "1 of 2 classes have a grey value"),
        ("bg 0\nroad 0\n", "grey values 0, 0 repeat one"),
        ("bg\ntraffic light\n", "'light' is not a grey value 0..255.*traffic_light"),
        ("bg 0\nroad 256\n", "'256' is not a grey value"),
    ],
)
def test_malformed_grey_values_in_classes_txt_name_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    root = write_folder(tmp_path / "d", [stripes()] * 4, text)
    with pytest.raises(DataError, match=message):
        registry.create("datasets", "folder", root)


def test_data_check_declares_the_grey_values_of_spread_masks(tmp_path: Path) -> None:
    """0, 50, 100, 150 masks are refused with the classes.txt (and flags) that read them,
    keeping class names already given; after that, the check passes."""
    from segkit.data.check import check_configured, format_report

    idx = stripes()
    idx[0:4] = 3
    spread = np.where(idx == IGNORE_INDEX, IGNORE_INDEX, idx * 50).astype(np.uint8)
    root = write_folder(tmp_path / "s", [spread] * 10)
    text = format_report(
        check_configured(RunConfig(data=str(root), dataset="folder"), progress=False)
    )
    assert "masks of 4 classes whose grey values are 0, 50, 100, 150, not 0..3" in text
    assert (  # from Python (segkit.check_data), the keyword; `segkit data check`, the flags
        "pass dataset_options={'classes': 'background,class_1,class_2,class_3', "
        "'values': '0,50,100,150'}, or write"
    ) in text
    assert "      class_3 150\n" in text and "255 is 'ignore'" in text
    with given_as(COMMAND_LINE):
        text = format_report(
            check_configured(RunConfig(data=str(root), dataset="folder"), progress=False)
        )
    assert (
        "pass --dataset-opt classes=background,class_1,class_2,class_3 "
        "--dataset-opt values=0,50,100,150, or write"
    ) in text
    named = RunConfig(data=str(root), dataset="folder", dataset_options={"classes": "a,b,c,d"})
    text = format_report(check_configured(named, progress=False))
    assert "dataset_options={'classes': 'a,b,c,d', 'values': '0,50,100,150'}" in text
    (root / "classes.txt").write_text("a 0\nb 50\nc 100\nd 150\n")
    report = check_configured(RunConfig(data=str(root), dataset="folder"), progress=False)
    assert report.ok and report.classes == ["a", "b", "c", "d"]


def test_a_colour_outside_the_palette_names_the_file_the_colour_and_the_palette(
    tmp_path: Path,
) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:8] = (255, 0, 0)
    rgb[0, 0] = (250, 3, 3)  # antialiasing
    root = write_folder(tmp_path / "c", [rgb] * 4, "bg 0 0 0\nred 255 0 0\n")
    ds = registry.create("datasets", "folder", root)
    sample = ds.samples("train")[0]
    with pytest.raises(MaskValuesError) as e:  # a DataError carrying the colours
        read_sample(sample, ds.mask_spec)
    msg = str(e.value)
    assert "m" in msg and "(250, 3, 3) on 1 pixel" in msg and "bg=(0, 0, 0), red=(255, 0, 0)" in msg
    assert (e.value.colours, e.value.values, e.value.path) == (((250, 3, 3),), (), str(sample.mask))
    back = pickle.loads(pickle.dumps(e.value))  # crosses a loader's workers whole
    assert (type(back), back.colours, str(back)) == (MaskValuesError, ((250, 3, 3),), msg)


def test_data_check_offers_a_colour_outside_the_palette_as_ignore_or_a_class(
    tmp_path: Path,
) -> None:
    """A flat colour the palette lacks (a white void border) gets both fixes: the ignore
    colour (by the classes.txt ignore line, the one to use where classes.txt names the
    classes, or by the option), or one class more; antialiasing gets neither."""
    from segkit.data.check import check_configured, format_report

    idx = stripes()
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    rgb = colours[np.minimum(idx, 2)]
    rgb[idx == IGNORE_INDEX] = (255, 255, 255)
    root = write_folder(tmp_path / "c", [rgb] * 10, "bg 0 0 0\nred 255 0 0\nblue 0 0 255\n")
    config = RunConfig(data=str(root), dataset="folder")
    with given_as(COMMAND_LINE):  # as `segkit data check` words it
        text = format_report(check_configured(config, progress=False))
    assert "(255, 255, 255) is in no palette entry: declare what it is (below)" in text
    assert (
        "  - if (255, 255, 255) marks pixels to leave out of training and scores (void, "
        f"borders), add the line 'ignore 255 255 255' to {root / 'classes.txt'} (use this: "
        "that file declares your classes, and every command reads it), or pass "
        "--dataset-opt ignore_color=255,255,255 each time\n"
    ) in text
    assert (
        "  - if (255, 255, 255) is a class, name the classes (one class per colour): pass "
        "--dataset-opt classes=bg,red,blue,white "
        "--dataset-opt 'palette=0,0,0;255,0,0;0,0,255;255,255,255', or write"
    ) in text
    config.dataset_options = {"ignore_color": "255,255,255"}
    report = check_configured(config, progress=False)
    assert report.ok and report.splits["train"].class_pixels["ignored"] == 8 * 4 * 48
    # The line the fix offers reads as the option does.
    (root / "classes.txt").write_text("bg 0 0 0\nred 255 0 0\nblue 0 0 255\nignore 255 255 255\n")
    report = check_configured(RunConfig(data=str(root)), progress=False)
    assert report.ok and report.splits["train"].class_pixels["ignored"] == 8 * 4 * 48
    # A value-only ignore line: change it to carry the colour too.
    (root / "classes.txt").write_text("bg 0 0 0\nred 255 0 0\nblue 0 0 255\nignore 254\n")
    text = format_report(check_configured(RunConfig(data=str(root)), progress=False))
    assert (
        f"borders), change {root / 'classes.txt'}: line 4 'ignore 254' to 'ignore 254 255 255 "
        "255' (use this: that file declares your classes"
    ) in text
    # Classes given by option leave classes.txt unread: only the option works.
    options = {"classes": "bg,red,blue", "palette": "0,0,0;255,0,0;0,0,255"}
    config = RunConfig(data=str(root), dataset="folder", dataset_options=options)
    text = format_report(check_configured(config, progress=False))
    assert (  # from Python (segkit.check_data): the keyword
        "borders), pass dataset_options={'ignore_color': '255,255,255'}\n" in text
        and "'ignore 255 255 255'" not in text
    )
    # A run refused for the colour offers the same fixes.
    from segkit.data.prepare import prepare_training

    ds = registry.create("datasets", "folder", root)
    with pytest.raises(DataError, match=r"to fix: if \(255, 255, 255\) marks .* change .*"):
        prepare_training(ds, name="folder", skip_bad_samples=False, batch_size=2, options={})
    rgb[0, :2] = (250, 3, 3)  # antialiasing: no class to declare
    root = write_folder(tmp_path / "a", [rgb] * 10, "bg 0 0 0\nred 255 0 0\nblue 0 0 255\n")
    text = format_report(check_configured(RunConfig(data=str(root)), progress=False))
    assert "re-save the masks without antialiasing" in text and "ignore_color=" not in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"palette": "0,0,0;255,255,255"}, "this folder dataset is binary"),
        ({"ignore_color": "1,2,3"}, "this folder dataset is binary"),
        ({"ignore": 255}, "ignore describes class maps, and this folder dataset is binary"),
        ({"classes": "only"}, "expected 2 or more distinct names"),
        ({"classes": "a,b", "ignore": 1}, "ignore=1: expected a mask value in 2..255"),
        ({"classes": "a,b", "palette": "0,0,0"}, "1 palette colours for 2 classes"),
        ({"classes": "a,b", "palette": "0,0,0;300,0,0"}, "not a colour r,g,b"),
    ],
)
def test_bad_class_options_are_one_line_errors(tmp_path: Path, options: dict, message: str) -> None:
    root = write_folder(tmp_path / "d", [stripes()] * 4)
    with pytest.raises(ConfigError, match=message):
        registry.create("datasets", "folder", root, **options)


def test_malformed_classes_txt_names_the_line(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", [stripes()] * 4, "bg 0 0 0\ncell 255 0\n")
    with pytest.raises(DataError, match=r"classes.txt: line 2 'cell 255 0'"):
        registry.create("datasets", "folder", root)


def test_classes_txt_declares_the_ignored_value_or_colour_in_an_ignore_line(
    tmp_path: Path,
) -> None:
    """``ignore 254`` (a value), ``ignore r g b`` (a colour in RGB masks) or both: no
    class, the same spec as the options give."""
    idx = stripes()
    idx[idx == IGNORE_INDEX] = 254
    root = write_folder(tmp_path / "v", [idx] * 4, "bg\nroad\ncar\nIgnore 254\n")
    ds = registry.create("datasets", "folder", root)
    flags = registry.create("datasets", "folder", root, classes="bg,road,car", ignore=254)
    assert ds.mask_spec == flags.mask_spec and ds.mask_spec.classes == ("bg", "road", "car")
    _, m = read_sample(ds.samples("train")[0], ds.mask_spec)
    assert np.array_equal(m, stripes())  # 254 read as ignored
    # The same value as a flag agrees; another is an error naming both.
    assert registry.create("datasets", "folder", root, ignore=254).mask_spec == ds.mask_spec
    for flag, said in ((253, "ignore=253"), (None, "ignore=null")):
        with given_as(COMMAND_LINE), pytest.raises(ConfigError) as e:
            registry.create("datasets", "folder", root, ignore=flag)
        assert str(e.value) == (
            f"--dataset-opt {said} and {root / 'classes.txt'}: line 4 'Ignore 254' both "
            "declare the mask value of ignored pixels, differently; keep one (drop the "
            "option, or the line)"
        )

    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    rgb = colours[np.minimum(stripes(), 2)]
    rgb[stripes() == IGNORE_INDEX] = (255, 255, 255)
    palette = "bg 0 0 0\nroad 255 0 0\ncar 0 0 255\n"
    root = write_folder(tmp_path / "c", [rgb] * 4, palette + "ignore 255 255 255\n")
    ds = registry.create("datasets", "folder", root)
    assert ds.mask_spec.ignore_color == (255, 255, 255)
    _, m = read_sample(ds.samples("train")[0], ds.mask_spec)
    assert np.array_equal(m, stripes())
    same = registry.create("datasets", "folder", root, ignore_color="255,255,255")
    assert same.mask_spec == ds.mask_spec
    with pytest.raises(ConfigError, match=r"^dataset_options=\{'ignore_color': '1,2,3'\} and "
                       r".*classes.txt: line 4 'ignore 255 255 255' both declare the colour"):  # fmt: skip
        registry.create("datasets", "folder", root, ignore_color="1,2,3")
    # Value and colour at once.
    (root / "classes.txt").write_text(palette + "ignore 250 255 255 255\n")
    both = registry.create("datasets", "folder", root).mask_spec
    assert both.ignore_color == (255, 255, 255) and 250 in both.allowed
    assert 255 not in both.allowed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\nb\nignore\n", r"line 3 'ignore': an ignore line declares the pixels to leave "
         r"out of training and scores: 'ignore 255' \(their mask value\)"),
        ("a\nb\nignore 1 2\n", "line 3 'ignore 1 2': an ignore line declares"),
        ("a\nb\nignore x\n", "line 3 'ignore x': an ignore line declares"),
        ("a\nb\nignore 300\n", "line 3 'ignore 300': 300 is not a mask value 0..255"),
        ("a\nb\nignore 1 2 300\n", r"line 3 'ignore 1 2 300'.*not a colour"),
        ("a\nb\nignore 254\nignore 253\n", r"line 4 'ignore 253': a second ignore line "
         r"\(.*line 3 'ignore 254' is the first\)"),
        ("a\nb\nignore 1\n", r"line 3 'ignore 1': ignore value 1: expected a mask value in "
         r"2..255"),
        ("a\nb\nvoid 255\n", r"1 of 3 classes have.*\(void: if it marks pixels to leave "
         r"out of training and scores, write its line as 'ignore 255'"),
    ],
)  # fmt: skip
def test_a_malformed_ignore_line_names_the_line_and_the_forms(
    tmp_path: Path, text: str, message: str
) -> None:
    root = write_folder(tmp_path / "d", [stripes()] * 4, text)
    with pytest.raises(DataError, match=message):
        registry.create("datasets", "folder", root)


def test_synthetic_collar_variant_is_the_same_set_with_collars(tmp_path: Path) -> None:
    from segkit_datasets.synthetic import COLLAR, default_cache_dir, render_sample

    for i in range(3):
        plain_rgb, plain = render_sample(5, i)
        rgb, trimap = render_sample(5, i, collar=True)
        collar = trimap == COLLAR
        assert collar.any()
        assert np.array_equal(trimap[~collar], plain[~collar])  # only pet pixels became collar
        assert (plain[collar] == 1).all()
    assert default_cache_dir(10, 0, "collar").name.startswith("synthetic-collar-10-0-")
    ds = registry.create("datasets", "synthetic", tmp_path / "s", count=6, variant="collar")
    assert ds.mask_spec.classes == ("background", "pet", "collar")
    assert ds.mask_spec.lookup()[3] == IGNORE_INDEX  # the border band is ignored
    again = registry.create("datasets", "synthetic", tmp_path / "s")  # the variant is read back
    assert again.variant == "collar" and again.mask_spec == ds.mask_spec
    assert registry.create(
        "datasets", "synthetic", tmp_path / "s", target="binary"
    ).mask_spec.allowed == (1, 2, 3, 4)
    with pytest.raises(ConfigError, match="the synthetic variants are pet, collar"):
        registry.create("datasets", "synthetic", tmp_path / "t", count=6, variant="stripes")


# ----------------------------------------------------------------------------- loaders


@pytest.fixture(scope="module")
def shapes_classes(tmp_path_factory: pytest.TempPathFactory):
    from segkit.testing import ShapesDataset, write_shapes_dataset

    root = write_shapes_dataset(tmp_path_factory.mktemp("shapes-classes"), classes=True)
    return ShapesDataset(root, classes=True)


def eval_recipe() -> R.Recipe:
    return R.Recipe("eval", train=(R.Resize(size=SIZE), R.Normalize()))


def loader_masks(name: str, dataset, recipe: R.Recipe, *, train: bool) -> torch.Tensor:
    workers = 1 if name == "dali" else 0
    ld = registry.create(
        "loaders", name, dataset, "train", recipe, 4, train=train, seed=2, num_workers=workers
    )
    ld.set_epoch(1)
    return torch.cat([b.masks for b in ld])


@pytest.mark.parametrize("loader", ["albumentations", "dali"])
def test_loaders_carry_class_maps_resampled_by_nearest_neighbour(
    loader: str, shapes_classes
) -> None:
    """Eval: each loader's class maps are exactly its nearest-neighbour reference
    (OpenCV's INTER_NEAREST for albumentations, the pixel-centre INTER_NEAREST_EXACT for
    DALI, as for binary masks), 255 kept; train: every op keeps values in the classes."""
    import cv2

    masks = loader_masks(loader, shapes_classes, eval_recipe(), train=False)
    assert masks.dtype == torch.uint8 and masks.shape == (10, SIZE, SIZE)
    interp = cv2.INTER_NEAREST_EXACT if loader == "dali" else cv2.INTER_NEAREST
    for sample, got in zip(shapes_classes.samples("train"), masks, strict=True):
        _, classes = read_sample(sample, shapes_classes.mask_spec)
        want = cv2.resize(classes, (SIZE, SIZE), interpolation=interp)
        assert np.array_equal(got.numpy(), want)
    assert set(masks.unique().tolist()) == {0, 1, 2, IGNORE_INDEX}
    every = registry.create("recipes", "type3", image_size=SIZE)
    trained = loader_masks(loader, shapes_classes, every, train=True)
    assert set(trained.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}


def test_the_two_loaders_agree_on_class_maps(shapes_classes) -> None:
    a = loader_masks("albumentations", shapes_classes, eval_recipe(), train=False)
    d = loader_masks("dali", shapes_classes, eval_recipe(), train=False)
    # Half an output pixel apart at most (nearest vs pixel-centre nearest): the L's edges.
    assert (a == d).float().mean() >= 0.97


@pytest.mark.parametrize("loader", ["albumentations", "dali"])
def test_loaders_map_spread_grey_values_to_classes(loader: str, tmp_path: Path) -> None:
    """Masks of 0, 50, 100 (255 ignored) declared with ``values`` reach the model as the
    class maps 0, 1, 2 that index masks of the same classes give, in both loaders."""
    idx = stripes(SIZE, SIZE)
    spread = np.where(idx == IGNORE_INDEX, IGNORE_INDEX, idx * 50).astype(np.uint8)
    index = registry.create(
        "datasets", "folder", write_folder(tmp_path / "i", [idx] * 4), classes="a,b,c"
    )
    grey = registry.create(
        "datasets",
        "folder",
        write_folder(tmp_path / "s", [spread] * 4),
        classes="a,b,c",
        values="0,50,100",
    )
    want = loader_masks(loader, index, eval_recipe(), train=False)
    got = loader_masks(loader, grey, eval_recipe(), train=False)
    assert set(got.unique().tolist()) == {0, 1, 2, IGNORE_INDEX}
    assert torch.equal(got, want)


def test_dali_names_a_mask_with_a_value_outside_the_classes(tmp_path: Path) -> None:
    bad = stripes()
    bad[0, 0] = 7
    root = write_folder(tmp_path / "d", [stripes()] * 5 + [bad] * 5, "a\nb\nc\n")
    ds = registry.create("datasets", "folder", root, test_fraction=0.0, valid_fraction=0.0)
    ld = registry.create("loaders", "dali", ds, "train", eval_recipe(), 10, train=False)
    with pytest.raises(
        DataError, match=r"m[5-9]\.png: values \{7\} found.*3 classes: a, b, c; 255 ignored"
    ):
        list(ld)


def test_dali_names_an_rgb_mask_with_a_colour_outside_the_palette(tmp_path: Path) -> None:
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    good = colours[np.minimum(stripes(), 2)]
    bad = good.copy()
    bad[0, :3] = (255, 255, 255)
    root = write_folder(tmp_path / "d", [good] * 5 + [bad] * 5, "a 0 0 0\nb 255 0 0\nc 0 0 255\n")
    ds = registry.create("datasets", "folder", root, test_fraction=0.0, valid_fraction=0.0)
    ld = registry.create("loaders", "dali", ds, "train", eval_recipe(), 10, train=False)
    with pytest.raises(MaskValuesError, match=r"m[5-9]\.png: colours \(255, 255, 255\) on 3 "):
        list(ld)


# ----------------------------------------------------------------------------- task


def test_task_resolves_the_loss_and_monitor_from_the_dataset(tiny_pets: Path) -> None:
    trimap = registry.create("datasets", "oxford_pet", tiny_pets, target="trimap")
    binary = registry.create("datasets", "oxford_pet", tiny_pets)
    config, task = resolve(RunConfig(data=str(tiny_pets)), trimap)
    assert (config.loss, config.monitor, task.num_classes) == ("ce_dice", "valid_miou", 3)
    config, task = resolve(RunConfig(data=str(tiny_pets)), binary)
    assert (config.loss, config.monitor, task.num_classes) == ("bce_dice", "valid_dice", 1)
    options = {"target": "trimap"}
    with pytest.raises(ConfigError) as e:
        resolve(RunConfig(data=str(tiny_pets), loss="bce_dice", dataset_options=options), trimap)
    msg = str(e.value)
    assert (
        "loss='bce_dice' takes binary targets" in msg
        and "3 classes (background, pet, border)" in msg
    )
    assert "use loss='ce_dice' (or one of:" in msg and "lovasz_softmax" in msg and "\n" not in msg
    with pytest.raises(
        ConfigError, match="^loss='ce' takes K-class targets, but dataset 'oxford_pet' is binary"
    ):
        resolve(RunConfig(data=str(tiny_pets), loss="ce"), binary)
    with pytest.raises(ConfigError, match="^monitor='valid_miou': the dataset is binary"):
        resolve(RunConfig(data=str(tiny_pets), monitor="valid_miou"), binary)


def test_multiclass_meter_gives_headline_and_named_scores() -> None:
    task = Task(("bg", "a", "b"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), IGNORE_INDEX)
    meter = task.meter("cpu", per_image=True)
    assert isinstance(meter, MultiClassMeter)
    target = torch.tensor([[[0, 1], [2, IGNORE_INDEX]]])
    logits = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [1, 0]]]), 3).permute(0, 3, 1, 2)
    meter.update(logits.float(), target, torch.tensor(0.5))
    out = meter.compute()
    assert out["iou"] == out["miou"] and out["dice"] == out["mdice"]
    assert out["iou_bg"] == 1.0 and out["iou_a"] == 0.5 and out["iou_b"] == 0.0
    assert out["miou"] == pytest.approx(0.5) and out["pixels"] == 3
    dice, iou = meter.per_image_scores()
    assert iou.tolist() == pytest.approx([0.5]) and dice.dtype == torch.float32
    assert Task.from_record(task.record()) == task and Task.from_record(None) == Task()


def test_binary_loops_are_unchanged_by_the_task() -> None:
    masks = torch.ones(2, 1, 4, 4)
    assert Task().target(masks) is masks
    assert Task(("a", "b"), ((0, 0, 0), (9, 9, 9))).target(masks[:, 0].byte()).dtype == torch.long


# ----------------------------------------------------------------------------- reports


def test_prediction_grid_draws_classes_in_the_palette_with_a_legend(tmp_path: Path) -> None:
    from segkit.reports.figures import ImageScores, write_prediction_grid
    from segkit.training.loops import EvalContext
    from segkit.training.precision import create_precision
    from segkit.training.runtime import Runtime

    task = Task(
        ("background", "pet", "collar"), ((0, 0, 0), (230, 25, 75), (60, 180, 75)), IGNORE_INDEX
    )

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # class 1 on the left half
            out = torch.zeros(x.shape[0], 3, *x.shape[2:])
            out[:, 1, :, : x.shape[3] // 2] = 5
            return out

    from segkit.contracts import Batch

    images = torch.zeros(4, 3, 32, 32)
    masks = torch.zeros(4, 32, 32, dtype=torch.uint8)
    masks[:, :, :16] = 1
    masks[:, 0, 0] = IGNORE_INDEX
    cpu = torch.device("cpu")
    context = EvalContext(Runtime(cpu, create_precision("fp32", cpu), False), task=task)
    scores = ImageScores([0.9, 0.8, 0.7, float("nan")], [0.8, 0.7, 0.6, float("nan")])
    rows = write_prediction_grid(
        tmp_path / "g.png", Fixed(), [Batch(images, masks)], context, scores, n=4
    )
    assert [r.index for r in rows][-1] == 3  # the unscored image ranks last
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    assert (grid == (230, 25, 75)).all(-1).sum() > 1000  # truth and prediction tiles in pet red
    assert (grid == (128, 128, 128)).all(-1).any()  # the ignored pixel, grey


def test_palette_png_stores_class_indices(tmp_path: Path) -> None:
    from segkit.inference.predict import PredictionWriter, palette_png

    task = Task(("a", "b", "c"), ((0, 0, 0), (10, 20, 30), (40, 50, 60)))
    classes = np.array([[0, 1], [2, 1]], np.uint8)
    palette_png(classes, task).save(tmp_path / "m.png")
    im = Image.open(tmp_path / "m.png")
    assert im.mode == "P" and np.array_equal(np.asarray(im), classes)
    assert im.getpalette()[:9] == [0, 0, 0, 10, 20, 30, 40, 50, 60]
    prob = np.zeros((3, 2, 2), np.float32)
    prob[1] = 1
    writer = PredictionWriter(task, probabilities=True)
    paths = writer.write(tmp_path / "out", Path("x.jpg"), np.zeros((2, 2, 3), np.uint8), prob)
    assert [p.name for p in paths] == ["x_mask.png", "x_overlay.png", "x_probs.npy"]
    assert np.load(paths[2]).shape == (3, 2, 2)
    assert (np.asarray(Image.open(paths[0])) == 1).all()


def test_data_check_reports_class_pixels_and_class_weights(tmp_path: Path) -> None:
    from segkit.data.check import check_dataset, format_report

    root = write_folder(tmp_path / "d", [stripes()] * 10, "bg\nroad\ncar\n")
    report = check_dataset(
        registry.create("datasets", "folder", root), 1, name="folder", progress=False
    )
    assert report.ok and report.classes == ["bg", "road", "car"]
    train = report.splits["train"].class_pixels
    assert train["ignored"] == 4 * 48 * 8 and train["road"] == train["car"]
    weights = report.suggestions["class_weights"]["value"]
    assert weights[1] == weights[2] and weights[0] < weights[1]
    text = format_report(report)
    assert "3 classes: bg, road, car" in text and "loss_options={'weight': [" in text
    assert report.suggestions["class_weights"]["option"].startswith("loss_options={'weight': [")


def test_data_check_warns_of_a_class_missing_from_a_split_or_tiny_in_train(
    tmp_path: Path,
) -> None:
    """A class absent from train cannot be learnt, one absent from valid or test is not
    measured there, and a class of a few pixels is named with its share (not '0.0%')."""
    from segkit.data.check import check_dataset, format_report

    no_car = stripes()
    no_car[no_car == 2] = 0
    speck = stripes()
    speck[0, 0] = 3  # class 3: one pixel in each of the 8 train masks
    root = write_folder(tmp_path / "d", [speck] * 8 + [no_car, stripes()], "bg\nroad\ncar\ndot\n")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(f"m{i}" for i in range(8)))
    (root / "splits" / "valid.txt").write_text("m8\n")
    (root / "splits" / "test.txt").write_text("m9\n")
    report = check_dataset(
        registry.create("datasets", "folder", root), 1, name="folder", progress=False
    )
    assert report.ok  # warnings: a run works
    found = {(p.kind, p.message.split(": ", 1)[1].split(":")[0]) for p in report.problems}
    assert found == {
        ("class_absent", "class car has no pixels in valid"),
        ("class_absent", "class dot has no pixels in valid"),
        ("class_absent", "class dot has no pixels in test"),
        ("class_tiny", "class dot is 0.058% of the labelled train pixels (8 pixels)"),
    }
    text = format_report(report)
    # 8 of 8 x 40 x 48 pixels, the 10% ignored included; none in valid and test.
    assert "class pixels (train): bg 39.9%, road 25.0%, car 25.0%, dot 0.052%, ignored 10.0%" in (
        text
    )
    assert "class pixels (test): bg 40.0%, road 25.0%, car 25.0%, dot 0%, ignored 10.0%" in text
    # Missing from train: not learnt, even where test has it.
    (root / "splits" / "train.txt").write_text("m8\n")
    (root / "splits" / "valid.txt").write_text("\n".join(f"m{i}" for i in range(8)))
    report = check_dataset(
        registry.create("datasets", "folder", root), 1, name="folder", progress=False
    )
    absent = [p.message for p in report.problems if "no pixels in train" in p.message]
    assert len(absent) == 2, absent
    assert (
        "class car has no pixels in train (it is in valid 25.0%, test 25.0%): the model "
        in (absent[0])
    )
    assert "class dot has no pixels in train (it is in valid 0.052%)" in absent[1]
    assert "car and dot are not in train: weight 0" in format_report(report)


def _coverage_folder(tmp_path: Path) -> Path:
    """8 train masks with a one-pixel class 'dot'; valid without car or dot; test without dot."""
    no_car = stripes()
    no_car[no_car == 2] = 0
    speck = stripes()
    speck[0, 0] = 3
    root = write_folder(tmp_path / "d", [speck] * 8 + [no_car, stripes()], "bg\nroad\ncar\ndot\n")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(f"m{i}" for i in range(8)))
    (root / "splits" / "valid.txt").write_text("m8\n")
    (root / "splits" / "test.txt").write_text("m9\n")
    return root


def test_a_run_says_the_class_coverage_warnings_of_the_check_and_keeps_them_with_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data checks before a run give the check's class-coverage warnings, one line
    each; a second run on the same files reads no mask and still gives them."""
    from segkit.data import prepare
    from segkit.data.check import check_dataset

    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    root = _coverage_folder(tmp_path)
    dataset = registry.create("datasets", "folder", root)
    expected = [
        p.message
        for p in check_dataset(dataset, 1, progress=False).problems
        if p.kind in ("class_absent", "class_tiny")
    ]
    assert len(expected) == 4 and all("\n" not in w for w in expected)
    read: list[Path] = []
    inspect = prepare.inspect_mask
    monkeypatch.setattr(
        prepare, "inspect_mask", lambda path, spec: read.append(path) or inspect(path, spec)
    )

    def ready() -> list[str]:
        ready = ready_folder(root)
        assert ready.bad == []
        return ready.warnings

    assert ready() == expected
    assert len(read) == 10
    cached = list((tmp_path / "cache" / "checked").iterdir())
    assert len(cached) == 1 and cached[0].read_text().splitlines()[1:] == expected
    assert ready() == expected  # from the cache: no mask read again
    assert len(read) == 10
    # A cache file of the layout before (the digest alone) has another name: not misread.
    assert prepare.PassedCheck.VERSION >= 3  # the warnings follow the digest since 3
    # Every class in every split, none rare: nothing to say, cached or not.
    fine = write_folder(tmp_path / "fine", [stripes()] * 10, "bg\nroad\ncar\n")
    for _ in range(2):
        assert ready_folder(fine).warnings == []


def test_weight_auto_is_the_median_frequency_weights_of_the_train_split(tmp_path: Path) -> None:
    from segkit.build import resolve_loss_options
    from segkit.data.check import check_dataset

    root = write_folder(tmp_path / "d", [stripes()] * 10, "bg\nroad\ncar\n")
    ds = registry.create("datasets", "folder", root)
    options = resolve_loss_options(RunConfig(loss="ce", loss_options={"weight": "auto"}), ds, 1)
    report = check_dataset(ds, 1, progress=False)
    assert options["weight"] == report.suggestions["class_weights"]["value"]
    registry.create("losses", "ce", **options)  # a valid option
    with pytest.raises(ConfigError, match="weight='auto' is resolved by segkit run"):
        registry.create("losses", "ce", weight="auto")
    binary = write_folder(tmp_path / "b", [np.eye(8, dtype=np.uint8)] * 4)
    with pytest.raises(DataError, match="weight=auto weighs classes, and this dataset is binary"):
        resolve_loss_options(
            RunConfig(loss="ce", loss_options={"weight": "auto"}),
            registry.create("datasets", "folder", binary),
        )


# ----------------------------------------------------------------------------- runs


def _run(tmp_path: Path, *args: str, name: str = "mc") -> Path:
    from conftest import TINY_RUN

    from segkit.cli import main

    out = tmp_path / "runs"
    assert main(["run", *TINY_RUN, *args, "--out", str(out), "--name", name, "-q"]) == 0
    return out / name


@pytest.mark.slow
def test_a_run_says_the_class_coverage_warnings_before_training_and_records_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import TINY_RUN

    from segkit.cli import main

    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    root = _coverage_folder(tmp_path)
    out = tmp_path / "runs"
    args = ["run", *TINY_RUN, "--data", str(root), "--epochs", "1", "--out", str(out)]
    # The warnings go to stderr (the results to stdout): one stream here, to see the order.
    stderr = sys.stderr
    monkeypatch.setattr(sys, "stderr", sys.stdout)
    assert main([*args, "--name", "said"]) == 0
    lines = capsys.readouterr().out.splitlines()
    monkeypatch.setattr(sys, "stderr", stderr)
    warned = [i for i, line in enumerate(lines) if line.startswith("segkit: warning: ")]
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch"))
    assert len(warned) == 4 and max(warned) < first_epoch  # before any training
    assert lines[warned[1]].startswith(
        f"segkit: warning: {root}: class dot has no pixels in valid: "
    )
    assert lines[-1] == (
        "segkit: warning (data, said before training; summary.json): class car has no pixels "
        "in valid; class dot has no pixels in valid; class dot has no pixels in test; class "
        "dot is 0.058% of the labelled train pixels (8 pixels)"
    )
    summary = json.loads((out / "said" / "summary.json").read_text())
    assert [w.split(": ")[1] for w in summary["data_warnings"]] == [
        "class car has no pixels in valid",
        "class dot has no pixels in valid",
        "class dot has no pixels in test",
        "class dot is 0.058% of the labelled train pixels (8 pixels)",
    ]
    # Quiet, and from the cache of the passed check: the summary line on stdout, the
    # warnings on stderr.
    assert main([*args, "--name", "quiet", "-q"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert captured.err.splitlines() == [
        f"segkit: warning (data): {w}" for w in summary["data_warnings"]
    ]

    # The test truth's band of 255 (10% of the pixels, resized to 32 px by the loader) is
    # counted and said, in summary.json and under evaluate's table.
    ignored = summary["test_ignored_pixels"]
    assert 0 < ignored and summary["test_ignored_share"] == pytest.approx(0.1, abs=0.04)
    assert ignored + sum(map(sum, summary["test_confusion"])) == 32 * 32
    assert main(["evaluate", str(out / "said" / "best.pt"), "--num-workers", "0"]) == 0
    shown = capsys.readouterr().out.splitlines()
    share = f"{100 * summary['test_ignored_share']:.1f}%"
    assert f"ignored: {share} of pixels ({ignored} pixels, value 255)" in shown
    # At each image's own size: 4 rows of 48 of the 40 x 48 test mask, exactly.
    assert main(["evaluate", str(out / "said" / "best.pt"), "--mode", "whole"]) == 0
    assert "ignored: 10.0% of pixels (192 pixels, value 255)" in capsys.readouterr().out


@pytest.mark.slow
def test_trimap_run_trains_three_classes_and_predict_writes_palette_masks(
    tiny_pets: Path, tmp_path: Path, capsys
) -> None:
    from segkit.cli import main

    run = _run(
        tmp_path, "--data", str(tiny_pets), "--dataset-opt", "target=trimap", "--epochs", "2"
    )
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert (
        summary["classes"] == ["background", "pet", "border"] and summary["monitor"] == "valid_miou"
    )
    assert config["loss"] == "ce_dice" and config["resolved"]["task"]["classes"][1] == "pet"
    assert summary["test_iou"] == summary["test_miou"] and 0 < summary["test_miou"] <= 1
    per_class = {r["class"]: r for r in summary["test_per_class"]}
    assert sum(r["pixels"] for r in per_class.values()) == sum(map(sum, summary["test_confusion"]))
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"valid_pixel_acc", "valid_iou_pet", "valid_iou_border"} <= set(header)
    assert (run / "test_scores.csv").read_text().startswith("index,id,mdice,miou")
    line = (run / "summary.txt").read_text()
    assert line.startswith("test mIoU ") and "valid mIoU" in line

    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--num-workers", "0"]) == 0
    shown = capsys.readouterr().out
    assert (
        "class" in shown and "border" in shown and f"test mIoU {summary['test_miou']:.4f}" in shown
    )

    image = sorted((tiny_pets / "images").iterdir())[0]
    assert (
        main(
            [
                "predict",
                str(run / "best.pt"),
                str(image),
                "--out",
                str(tmp_path / "p"),
                "--probabilities",
            ]
        )
        == 0
    )
    mask = Image.open(tmp_path / "p" / f"{image.stem}_mask.png")
    assert mask.mode == "P" and set(np.unique(np.asarray(mask))) <= {0, 1, 2}
    assert np.load(tmp_path / "p" / f"{image.stem}_probs.npy").shape == (3, *mask.size[::-1])

    # Evaluating the 3-class model on binary data is refused in one line.
    binary = write_folder(tmp_path / "binary", [np.eye(32, dtype=np.uint8)] * 10)
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            str(run / "best.pt"),
            "--dataset",
            "folder",
            "--data",
            str(binary),
            "--num-workers",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert (
        code == 2 and "predicts 3 classes (background, pet, border)" in err and "is binary" in err
    )


@pytest.mark.slow
def test_collar_run_beats_the_majority_class_and_resumes_identically(tmp_path: Path) -> None:
    from segkit.training import checkpoint as ckpt_io
    from segkit.training.engine import resume

    # Five epochs: unet's default (kaiming) init starts slower than torch's; after 3 epochs
    # (18 steps) of this tiny set it was still under the majority class (mIoU 0.19, torch's
    # init 0.44), after 5 over it (0.50, torch's 0.44); docs/models.md says so.
    args = [
        "--dataset",
        "synthetic",
        "--dataset-opt",
        "variant=collar",
        "--dataset-opt",
        "count=24",
        "--epochs",
        "5",
        "--loader",
        "dali",
        "--seed",
        "1",
        "--keep-last",  # last.pt is read, and the short run extended
    ]
    run = _run(tmp_path, *args)
    summary = json.loads((run / "summary.json").read_text())
    conf = np.array(summary["test_confusion"])
    majority_iou = conf.sum(1).max() / conf.sum() / 3  # predict background everywhere
    assert summary["test_miou"] > majority_iou
    assert ckpt_io.load(run / "last.pt")["task"]["classes"] == ["background", "pet", "collar"]
    # Four epochs, then resumed to five: the unbroken run's numbers.
    short = _run(tmp_path, *[a if a != "5" else "4" for a in args], name="short")
    result = resume(short, epochs=5, quiet=True)
    again = json.loads((short / "summary.json").read_text())
    assert (
        again["test_miou"] == summary["test_miou"] and result.test["miou"] == summary["test_miou"]
    )
    assert again["test_per_class"] == summary["test_per_class"]

    # segkit compare draws K-class runs in the dataset's colours.
    from segkit.cli import main

    assert main(["compare", str(run), str(short), "--out", str(tmp_path / "cmp"), "--force"]) == 0
    grid = np.asarray(Image.open(tmp_path / "cmp" / "predictions.png").convert("RGB"))
    assert (grid == (230, 25, 75)).all(-1).any()  # the pet class's colour
    assert "test_dice" in (tmp_path / "cmp" / "comparison.csv").read_text()
