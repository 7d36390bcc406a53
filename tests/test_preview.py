"""``segkit preview``: augmented images with their masks' outlines, one column per loader.

Fast tier: no training, a handful of small images each. Most tests draw conftest's L
shapes (``shapes``, ``shapes_root``): bright on dark, so where an outline lies can be
checked against the augmented image as well as against the augmented mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from segkit.cli import main
from segkit.config import RunConfig
from segkit.errors import ConfigError, PluginNotFoundError
from segkit.reports import preview as P
from segkit.reports.figures import MIN_TILE
from segkit.task import Task
from segkit.testing.shapes import shapes_dataset

#: What the dali loader refuses wherever it runs: an albumentations Compose (passthrough).
DALI_REFUSAL = "the dali loader cannot run AlbumentationsCompose([Transpose], p=1.0)"


@pytest.fixture
def passthrough(tmp_path: Path) -> str:
    """A recipe file holding an AlbumentationsCompose: only the albumentations loader runs it."""
    import json

    import albumentations as A

    transform = A.to_dict(A.Compose([A.Transpose(p=1.0)]))
    path = tmp_path / "passthrough.json"
    path.write_text(
        json.dumps(
            {"train": [{"op": "AlbumentationsCompose", "transform": transform}, {"op": "Resize"}]}
        )
    )
    return str(path)


def draw(tmp_path: Path, recipe: str = "type1", *, dataset=None, name="p.png", **kw):
    """``write_preview`` of ``recipe`` at 64 px on the L shapes (or ``dataset``)."""
    config = RunConfig(
        recipe=recipe, image_size=kw.pop("image_size", 64), seed=kw.pop("seed", 0), device="cpu"
    )
    warned: list[str] = []
    result = P.write_preview(
        config,
        tmp_path / name,
        P.Draw(**kw),
        dataset=dataset if dataset is not None else shapes_dataset(),
        warn=warned.append,
    )
    return result, warned


def png(result) -> np.ndarray:
    with Image.open(result.path) as im:
        return np.asarray(im.convert("RGB"))


def in_png(picture: np.ndarray, tile: P.Tile) -> np.ndarray:
    left, top, w, h = tile.box
    return picture[top : top + h, left : left + w]


def near_another_value(values: np.ndarray, width: int) -> np.ndarray:
    """Pixels with a pixel of another value at most ``width`` steps away (8-neighbour
    steps; outside the picture counts as the same value): by sliding windows."""
    padded = np.pad(values, width, mode="edge")
    windows = sliding_window_view(padded, (2 * width + 1, 2 * width + 1))
    return (windows != values[..., None, None]).any((-1, -2))


def blocks(a: np.ndarray, s: int) -> np.ndarray:
    """Whether each ``s`` x ``s`` block of ``a`` holds a True."""
    h, w = a.shape
    return a.reshape(h // s, s, w // s, s).any((1, 3))


def contrast(tile: P.Tile, step: int) -> float | None:
    """Mean brightness under the mask minus outside it, one pixel per output pixel
    (None when the output holds too little of either)."""
    small = tile.mask[::step, ::step].astype(bool)
    light = tile.image[::step, ::step].astype(float).mean(2)
    if small.sum() < 20 or (~small).sum() < 20:
        return None
    return float(light[small].mean() - light[~small].mean())


# ------------------------------------------------------------------------------ geometry


def test_the_picture_grows_a_row_per_sample_and_a_column_per_loader(tmp_path):
    two, _ = draw(tmp_path, n=2, name="two.png")
    four, _ = draw(tmp_path, n=4, name="four.png")
    both, _ = draw(tmp_path, n=2, loaders=("albumentations", "dali"), name="both.png")
    # 64 px outputs: one column is enlarged 8x to the header's 512 px, two columns 4x.
    assert two.tiles[0][0].box[2:] == (512, 512)
    assert [t.box[2:] for t in both.tiles[0]] == [(256, 256), (256, 256)]
    assert two.size[0] == 512 and both.size[0] == 2 * 256 + 4
    assert four.size[1] - two.size[1] == 2 * (22 + 512 + 8)  # caption, tile, gap
    assert both.size[1] < two.size[1]  # smaller tiles, the same rows
    assert both.columns == ["albumentations", "dali (cpu)"]
    for result, n in ((two, 2), (four, 4), (both, 2)):
        assert png(result).shape == (result.size[1], result.size[0], 3)
        assert [s.id for s in result.samples] == [f"shape_{i:02d}" for i in range(n)]
        assert all(len(row) == len(result.columns) for row in result.tiles)


def test_n_larger_than_the_split_draws_the_whole_split(tmp_path):
    result, _ = draw(tmp_path, n=50, split="valid")
    assert [s.id for s in result.samples] == ["shape_10", "shape_11"]


def test_display_box_keeps_pixels_whole_and_bounded():
    assert P.display_box([(64, 64)], 1) == (512, 512)
    assert P.display_box([(128, 128)], 2) == (256, 256)
    assert P.display_box([(96, 96)], 1) == (480, 480)  # 5 x 96: the largest whole factor
    assert P.display_box([(256, 256)], 2) == (256, 256)
    assert P.display_box([(2048, 1024)], 1) == (512, 256)  # shrunk, for display only
    # Sizes that differ (native evaluation): a square of the longest side, at least
    # MIN_TILE and the header's share, at most MAX_TILE.
    assert P.display_box([(90, 100), (120, 140)], 2) == (256, 256)
    assert P.display_box([(300, 400), (500, 200)], 2) == (500, 500)
    assert P.display_box([(3000, 400), (500, 200)], 4) == (512, 512)
    assert min(P.display_box([(20, 20), (30, 30)], 8)) >= MIN_TILE


# ------------------------------------------------------------------------------ outlines


def test_outline_is_a_band_inside_each_region_edge_but_not_along_the_border():
    mask = np.zeros((12, 12), bool)
    mask[3:9, 2:12] = True  # runs into the right border
    assert (P.outline(mask, 2) == near_another_value(mask, 2)).all()
    picture, drawn = P.draw_outline(np.zeros((12, 12, 3), np.uint8), mask)
    assert (drawn == (near_another_value(mask, 2) & mask)).all()
    assert drawn[3, 6] and drawn[4, 6] and not drawn[5, 6]  # two pixels, inside the edge
    assert not drawn[2, 6]  # background is not painted
    assert not drawn[5:7, 9:12].any()  # the picture's border is no edge
    assert (picture[drawn] == P.OUTLINE).all() and (picture[~drawn] == 0).all()


def test_the_outline_lies_on_the_edge_of_each_augmented_mask_over_its_shape(tmp_path):
    # type3 crops, flips, shuffles channels and changes contrast: each outline must
    # follow its own sample's augmented mask, which must lie over its augmented L.
    result, _ = draw(tmp_path, "type3", n=8, seed=1)
    picture = png(result)
    moved = 0
    for (tile,), sample in zip(result.tiles, result.samples, strict=True):
        assert tile.area == (0, 0, 512, 512)  # 64 px enlarged 8 times fills the tile
        expected = tile.image.copy()
        expected[tile.outline] = P.OUTLINE
        assert (in_png(picture, tile) == expected).all()  # the PNG holds that outline
        mask = tile.mask.astype(bool)
        # At display size: a band two pixels wide inside the foreground's edge.
        assert (tile.outline == (near_another_value(mask, P.OUTLINE_WIDTH) & mask)).all()
        # At the output's own 64 px: exactly the foreground pixels next to background.
        small = mask[::8, ::8]
        assert (blocks(tile.outline, 8) == (near_another_value(small, 1) & small)).all()
        gap = contrast(tile, 8)
        assert gap is None or gap > 60, (sample.id, gap)  # the L is under its own mask
        with Image.open(sample.mask) as im:
            unaugmented = np.asarray(im.resize((64, 64), Image.NEAREST)) == 1
        moved += (unaugmented != small).mean() > 0.05
    assert moved  # the augmentations did move masks, and the outlines followed


def test_rows_are_in_the_split_order_though_the_training_epoch_is_shuffled(tmp_path):
    recipe = tmp_path / "resize.toml"  # nothing random: each row is its file, resized
    recipe.write_text('[[train]]\nop = "Resize"\n')
    config = RunConfig(recipe=str(recipe), image_size=64)
    result = P.write_preview(
        config, tmp_path / "p.png", P.Draw(n=6, epoch=3), dataset=shapes_dataset()
    )
    import cv2

    for (tile,), sample in zip(result.tiles, result.samples, strict=True):
        with Image.open(sample.mask) as im:
            trimap = np.asarray(im)
        truth = cv2.resize(trimap, (64, 64), interpolation=cv2.INTER_NEAREST) == 1
        assert (tile.mask[::8, ::8].astype(bool) == truth).all(), sample.id
    # Each image has its own colours: every row's mean colour is its own file's.
    means = []
    for sample in result.samples:
        with Image.open(sample.image) as im:
            means.append(np.asarray(im, dtype=float).reshape(-1, 3).mean(0))
    for k, (tile,) in enumerate(result.tiles):
        shown = tile.image[::8, ::8].reshape(-1, 3).mean(0)
        assert int(np.argmin([np.abs(shown - m).sum() for m in means])) == k


def test_the_albumentations_column_is_what_a_run_trains_on(tmp_path):
    """Its augmentations are seeded by (seed, epoch, index) alone: the first samples of a
    run's whole, shuffled training epoch are the preview's rows, pixel for pixel."""
    from segkit.build import build_loader, build_recipe, normalization, resolve_runtime
    from segkit.data.sampling import epoch_order
    from segkit.reports.figures import to_rgb

    result, _ = draw(tmp_path, "type3", n=3, seed=4, epoch=2)
    config = RunConfig(recipe="type3", image_size=64, seed=4, num_workers=0, batch_size=10)
    recipe = build_recipe(config)
    loader = build_loader(
        config, resolve_runtime(config), shapes_dataset(), recipe, "train", train=True
    )
    loader.set_epoch(2)
    batch = next(iter(loader))  # the whole epoch: 10 images
    pictures = to_rgb(batch.images, *normalization(recipe, train=True))
    order = epoch_order(10, shuffle=True, seed=4, epoch=2, shard=(0, 1))
    for k, i in enumerate(order):
        if i < 3:
            (tile,) = result.tiles[i]
            assert np.array_equal(tile.image[::8, ::8], pictures[k])
            assert np.array_equal(tile.mask[::8, ::8], batch.masks[k, 0].numpy() > 0.5)


def test_k_classes_are_outlined_in_their_palette_colours(tmp_path):
    dataset = shapes_dataset(classes=True)
    task = Task.of(dataset)
    result, _ = draw(tmp_path, dataset=dataset, n=4)
    picture = png(result)
    seen: set[tuple[int, ...]] = set()
    for (tile,) in result.tiles:
        drawn = in_png(picture, tile)[tile.outline]
        assert (drawn == task.colorize(tile.mask)[tile.outline]).all()
        assert not (tile.outline & (tile.mask == 0)).any()  # background is not outlined
        # A bar/foot boundary shows both colours, one band on each side.
        assert (tile.outline == (near_another_value(tile.mask, 2) & (tile.mask != 0))).all()
        seen |= {tuple(int(v) for v in c) for c in drawn}
    bar, foot, grey = tuple(task.palette[1]), tuple(task.palette[2]), (128, 128, 128)
    assert seen == {bar, foot, grey}  # grey: the ignored 8x8 corner
    assert P.legend(task) == [("outline: bar", bar), ("outline: foot", foot), ("outline: ignored", grey)]  # fmt: skip
    assert P.legend(Task()) == [("mask outline (foreground edge)", P.OUTLINE)]


# ------------------------------------------------------------------------------ loaders


def test_both_loaders_side_by_side_each_outline_over_its_own_image(tmp_path):
    result, warned = draw(tmp_path, "type3", n=4, loaders=("albumentations", "dali"), seed=2)
    assert result.loaders == ["albumentations", "dali"] and not result.refused and not warned
    assert "each loader draws its own random parameters, so the columns differ" in result.header[2]
    assert "loaders albumentations, dali (cpu)" in result.header[0]
    picture = png(result)
    differ = 0
    for a, d in result.tiles:
        for tile in (a, d):
            expected = tile.image.copy()
            expected[tile.outline] = P.OUTLINE
            assert (in_png(picture, tile) == expected).all()
            gap = contrast(tile, 4)
            assert gap is None or gap > 60
        differ += not np.array_equal(a.mask, d.mask)
    assert differ  # their own random draws


def test_native_size_evaluation_is_drawn_at_each_images_own_size(tmp_path):
    result, _ = draw(
        tmp_path, "microscopy", n=3, split="test", stage="eval", loaders=("albumentations", "dali")
    )
    assert result.header[1] == "eval ops: Normalize"
    assert "the columns should agree" in result.header[2]
    sizes = set()
    for row, sample in zip(result.tiles, result.samples, strict=True):
        with Image.open(sample.image) as im:
            w, h = im.size
        sizes.add((w, h))
        for tile in row:
            # One 256 px square for every size (126x148 .. 135x160): shown 1:1, centred.
            assert tile.box[2:] == (256, 256) and tile.area[2:] == (w, h)
            left, top, _, _ = tile.area
            assert (tile.mask[top : top + h, left : left + w] != 0).mean() > 0.1
            assert (tile.image[:top] == P.PAPER).all() and (tile.image[:, :left] == P.PAPER).all()
        assert np.array_equal(row[0].mask, row[1].mask)  # nothing random at evaluation
    assert len(sizes) == 3


def test_every_loader_refusing_is_one_error_naming_each(tmp_path, passthrough):
    pytest.importorskip("nvidia.dali")
    with pytest.raises(ConfigError) as e:
        draw(tmp_path, passthrough, n=1, loaders=("dali", "dali"))
    assert f"no loader can run recipe 'passthrough': dali: {DALI_REFUSAL}" in str(e.value)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------ the command


def preview(tmp_path: Path, data: Path, *args: str, out: str = "p.png") -> tuple[int, Path]:
    target = tmp_path / out
    argv = ["preview", "--data", str(data), "--image-size", "64", "--n", "2", *args]
    return main([*argv, "--out", str(target)]), target


def test_dali_refusing_an_op_is_the_one_line_error_under_loader_dali(
    tmp_path, capsys, shapes_root, passthrough
):
    pytest.importorskip("nvidia.dali")
    code, out = preview(tmp_path, shapes_root, "--augment", passthrough, "--loader", "dali")
    assert code == 2 and not out.exists()
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"segkit: error: {DALI_REFUSAL}")


def test_dali_refusing_an_op_under_both_is_a_header_note_and_exit_0(
    tmp_path, capsys, shapes_root, passthrough
):
    pytest.importorskip("nvidia.dali")
    code, out = preview(tmp_path, shapes_root, "--augment", passthrough, "--loader", "both")
    captured = capsys.readouterr()
    assert code == 0 and out.exists()
    notes = [line for line in captured.out.splitlines() if line.startswith("dali: not drawn: ")]
    assert len(notes) == 1 and DALI_REFUSAL in notes[0]
    assert "segkit: dali left out of the preview: the dali loader cannot" in captured.err
    assert "x 1 column (albumentations)" in captured.out
    with Image.open(out) as im:
        assert im.size[0] == 512  # the albumentations column alone


def test_the_command_draws_a_recipe_file_and_says_what_it_drew(tmp_path, capsys, shapes_root):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("train:\n  - op: VerticalFlip\n    p: 1.0\n  - op: RandomCrop\n")
    args = ["--recipe", str(recipe), "--n", "3", "--seed", "5", "--epoch", "2"]
    code, out = preview(tmp_path, shapes_root, *args, out="sub/preview.png")  # folder made
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "segkit preview: recipe mine, train ops, split train, seed 5, epoch 2; loader "
        "albumentations"
    )
    assert lines[1] == "train ops: VerticalFlip, RandomCrop(64), Normalize"
    assert lines[-1].startswith(f"wrote {out} (512x") and "3 rows (" in lines[-1]
    assert "x 1 column (albumentations), each the augmented image with its mask's outline" in lines[-1]  # fmt: skip
    with Image.open(out) as im:
        assert im.size[0] == 512


def test_augment_and_recipe_are_one_option_and_a_seed_draws_the_same(tmp_path, shapes_root):
    a = preview(tmp_path, shapes_root, "--augment", "type3", out="a.png")[1]
    b = preview(tmp_path, shapes_root, "--recipe", "type3", out="b.png")[1]
    c = preview(tmp_path, shapes_root, "--recipe", "type3", "--epoch", "1", out="c.png")[1]
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_a_k_class_dataset_option_draws_its_class_colours(tmp_path, capsys):
    out = tmp_path / "collar.png"
    argv = ["preview", "--augment", "type1", "--dataset", "synthetic", "--dataset-opt",
            "variant=collar", "--dataset-opt", "count=4", "--image-size", "32", "--n", "2"]  # fmt: skip
    assert main([*argv, "--out", str(out)]) == 0
    with Image.open(out) as im:
        picture = np.asarray(im.convert("RGB"))
    from segkit_datasets.synthetic import COLLAR_TARGETS

    pet, collar = COLLAR_TARGETS["collar"].colors()[1:]
    # Outlines (far more than the legend's 14 x 14 swatch) in the pet's and collar's colours.
    assert (picture == pet).all(2).sum() > 1000 and (picture == collar).all(2).sum() > 400
    assert (picture == P.OUTLINE).all(2).sum() == 0


# ------------------------------------------------------------------------------ errors


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("segkit: error: "), err
    return lines[0]


def test_an_unknown_recipe_names_the_close_ones(tmp_path, capsys):
    assert main(["preview", "--augment", "typ3", "--out", str(tmp_path / "p.png")]) == 2
    line = one_error(capsys)
    assert "no recipe named 'typ3'. Did you mean 'type3'" in line and "segkit list recipes" in line
    assert not (tmp_path / "p.png").exists()


def test_both_is_every_loader_the_registry_lists(monkeypatch):
    from segkit import registry

    assert P.loader_names("both") == registry.list_plugins("loaders")
    assert {"albumentations", "dali"} <= set(P.loader_names("both"))
    # The preview names no loader itself: a third installed loader is a third column.
    monkeypatch.setattr(
        registry, "list_plugins", lambda kind: ["a", "b", "c"] if kind == "loaders" else []
    )
    assert P.loader_names("both") == ["a", "b", "c"]
    assert P.loader_names("dali") == ["dali"]


def test_an_unknown_loader_names_the_close_ones(tmp_path, capsys):
    assert main(["preview", "--augment", "type1", "--loader", "dalli"]) == 2
    assert "no loader named 'dalli'. Did you mean 'dali'" in one_error(capsys)


def test_a_recipe_file_with_an_unknown_op_gets_from_dicts_message(tmp_path, capsys):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[[train]]\nop = "VerticalFlipp"\n')
    assert main(["preview", "--augment", str(recipe), "--out", str(tmp_path / "p.png")]) == 2
    line = one_error(capsys)
    assert f"{recipe}: train[0]: unknown op 'VerticalFlipp' (did you mean 'VerticalFlip'" in line


@pytest.mark.parametrize("n", ["0", "-3"])
def test_n_below_one_is_refused(tmp_path, capsys, n, shapes_root):
    assert preview(tmp_path, shapes_root, "--augment", "type1", "--n", n)[0] == 2
    assert f"--n {n}: expected a positive number of samples to draw" in one_error(capsys)


def test_an_out_folder_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "preview.png"
    assert main(["preview", "--augment", "type1", "--out", str(out)]) == 2
    line = one_error(capsys)
    assert f"--out {blocker}: cannot write there (it is a file, not a folder)" in line


def test_out_must_name_a_png(tmp_path, capsys):
    assert main(["preview", "--augment", "type1", "--out", str(tmp_path / "p.jpg")]) == 2
    assert "--out" in (line := one_error(capsys)) and "expected a .png file name" in line
    assert main(["preview", "--augment", "type1", "--out", str(tmp_path)]) == 2
    assert "is a folder; name the PNG to write" in one_error(capsys)


def test_the_python_api_refuses_the_same_values(tmp_path):
    config = RunConfig(recipe="type1")
    kw = {"dataset": shapes_dataset()}
    with pytest.raises(ConfigError, match="--n 0"):
        P.write_preview(config, tmp_path / "p.png", P.Draw(n=0), **kw)
    with pytest.raises(ConfigError, match="--epoch -1"):
        P.write_preview(config, tmp_path / "p.png", P.Draw(epoch=-1), **kw)
    with pytest.raises(ConfigError, match="--stage 'test'"):
        P.write_preview(config, tmp_path / "p.png", P.Draw(stage="test"), **kw)
    with pytest.raises(PluginNotFoundError):
        P.write_preview(config, tmp_path / "p.png", P.Draw(loaders=("nope",)), **kw)
