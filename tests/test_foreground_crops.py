"""Crops placed on the foreground (``RandomCrop(foreground=...)``): the shared arithmetic
(:mod:`segkit.recipes.foreground`), the op's and the recipe's refusals, and both loaders
on the kit's L shapes (raw masks 1 inside, 2 outside: the feed maps them as a run does),
binary and K-class, with the DALI windows replayed through albumentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segkit import recipes as R
from segkit.contracts import IGNORE_INDEX
from segkit.errors import ConfigError
from segkit.recipes.foreground import (
    MAX_POINTS,
    centred_start,
    foreground_points,
    pick_centre,
)
from segkit.registry import create

CROP = 16


def _recipe(*ops: R.Op) -> R.Recipe:
    return R.Recipe("fg", train=(*ops, R.Normalize()), eval=(R.Normalize(),))


# ------------------------------------------------------------------ the arithmetic


def test_foreground_points_are_each_classes_pixels_without_background_or_ignored():
    target = np.zeros((6, 8), np.uint8)
    target[1, 2] = 1
    target[4, 5:7] = 2
    target[0, 0] = IGNORE_INDEX
    ones, twos = foreground_points(target)
    assert ones.tolist() == [[1, 2]] and twos.tolist() == [[4, 5], [4, 6]]
    assert foreground_points(np.zeros((5, 5), np.uint8)) == []
    assert foreground_points(np.full((5, 5), IGNORE_INDEX, np.uint8)) == []
    # A large class keeps MAX_POINTS pixels evenly spaced, its first and last included.
    big = np.ones((100, 100), np.uint8)
    (points,) = foreground_points(big)
    assert len(points) == MAX_POINTS and points[0].tolist() == [0, 0]
    assert points[-1].tolist() == [99, 99]
    assert len({tuple(p) for p in points.tolist()}) == MAX_POINTS


def test_a_class_is_drawn_first_then_its_pixel_and_the_window_stays_inside():
    points = [np.array([[1, 1]], np.int32), np.array([[7, 7], [8, 9]], np.int32)]
    assert pick_centre(points, 0.0, 0.99) == (1, 1)  # a rare class as likely as a common one
    assert pick_centre(points, 0.5, 0.0) == (7, 7)
    assert pick_centre(points, 0.99, 0.99) == (8, 9)
    assert pick_centre([], 0.3, 0.3) is None
    assert centred_start(50, 0, 100, 16) == 42  # centred
    assert centred_start(2, 0, 100, 16) == 0  # moved inside at the start
    assert centred_start(99, 0, 100, 16) == 84  # and at the end
    assert centred_start(3, 5, 20, 16) == 0  # padded: the image starts 5 px in


def test_the_share_is_checked_and_a_crop_after_a_geometric_op_is_refused():
    with pytest.raises(ConfigError, match=r"foreground=1\.5: expected the share .* \[0, 1\]"):
        R.RandomCrop(size=CROP, foreground=1.5)
    with pytest.raises(ConfigError, match="foreground=True"):
        R.RandomCrop(size=CROP, foreground=True)
    with pytest.raises(ConfigError) as error:
        _recipe(R.HorizontalFlip(), R.RandomCrop(size=CROP, foreground=0.33))
    assert str(error.value) == (
        "recipe 'fg': train[1] RandomCrop(foreground=0.33) comes after train[0] "
        "HorizontalFlip; a crop placed on the foreground finds it on the mask as read, so "
        "it must be the first geometric op: move it before them"
    )
    # First (photometric ops before it are fine), and a uniform crop anywhere.
    _recipe(R.RandomGamma(), R.RandomCrop(size=CROP, foreground=0.33), R.HorizontalFlip())
    _recipe(R.HorizontalFlip(), R.RandomCrop(size=CROP))


def test_a_recipe_file_sets_the_share(tmp_path):
    path = tmp_path / "sparse.toml"
    path.write_text(
        'name = "sparse"\n'
        '[[train]]\nop = "RandomCrop"\nsize = 128\nforeground = 0.33\n'
        '[[train]]\nop = "HorizontalFlip"\n'
        '[[train]]\nop = "Normalize"\n'
    )
    recipe = R.load_recipe(path)
    assert recipe.train[0] == R.RandomCrop(size=128, foreground=0.33)
    assert recipe.crops and recipe.native_eval


# ------------------------------------------------------------------ both loaders


def _masks(loader_name, dataset, recipe, epochs=3, **options):
    loader = create(
        "loaders", loader_name, dataset, "train", recipe, 5, train=True, seed=0, **options
    )
    masks = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        masks += [batch.masks for batch in loader]
    masks = torch.cat(masks)
    return masks[:, 0] if masks.ndim == 4 else masks  # binary: (N, 1, H, W)


@pytest.fixture(scope="module")
def shapes_classes(tmp_path_factory):
    """The kit's L shapes with K-class masks (bar 1, foot 2, an ignored corner)."""
    from segkit.testing import ShapesDataset, write_shapes_dataset

    root = write_shapes_dataset(tmp_path_factory.mktemp("shapes-classes"), classes=True)
    return ShapesDataset(root, classes=True)


@pytest.fixture(params=["albumentations", "dali"])
def loader_name(request):
    if request.param == "dali":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    return request.param


def test_every_crop_holds_foreground_at_share_one_and_fewer_uniform(shapes, loader_name):
    """16 px crops of the L shapes (90-140 px images): a uniform window misses the L
    often; centred on it, never. Both loaders read the raw masks (2 outside the L) as a
    run does."""
    uniform = _masks(loader_name, shapes, _recipe(R.RandomCrop(size=CROP)))
    placed = _masks(loader_name, shapes, _recipe(R.RandomCrop(size=CROP, foreground=1.0)))
    hit_uniform = (uniform.flatten(1) == 1).any(1).float().mean().item()
    assert placed.shape == uniform.shape == (30, CROP, CROP)
    assert (placed.flatten(1) == 1).any(1).all(), "a crop centred on the L holds some of it"
    assert hit_uniform < 0.9
    # Half of them: between the two (30 crops; 0.5 + (1 - 0.5) * hit_uniform expected).
    half = _masks(loader_name, shapes, _recipe(R.RandomCrop(size=CROP, foreground=0.5)))
    hit_half = (half.flatten(1) == 1).any(1).float().mean().item()
    assert hit_uniform <= hit_half < 1.0 or hit_half == 1.0 > hit_uniform


def test_k_classes_draw_each_class_alike(shapes_classes, loader_name):
    """K classes: the bar (class 1) and the foot (class 2) are drawn alike, so the crops
    centred on the foot are about half, whatever its area."""
    masks = _masks(
        loader_name, shapes_classes, _recipe(R.RandomCrop(size=CROP, foreground=1.0)), epochs=4
    )
    centre = masks[:, CROP // 2, CROP // 2]
    assert set(centre.unique().tolist()) <= {1, 2}  # the centre pixel is the one drawn
    foot = (centre == 2).float().mean().item()
    assert 0.25 <= foot <= 0.75, foot


def test_dali_places_the_window_albumentations_places_for_the_same_numbers(shapes):
    """The same points and arithmetic: the DALI feed's window for a row is the one
    albumentations' ForegroundCrop computes from the same numbers (test_dali_geometry
    shows DALI's crop at a window is albumentations' crop there, bit for bit)."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    from segkit.data.reading import read_sample
    from segkit_albumentations._compile import ForegroundCrop
    from segkit_dali._graph import compile_ops
    from segkit_dali._loader import draw_params, epoch_rng

    samples = shapes.samples("train")
    targets = [read_sample(s, shapes.mask_spec)[1] for s in samples]
    n = len(targets)
    op = R.RandomCrop(size=CROP, foreground=0.5)
    (compiled,) = compile_ops([op], multiclass=False)
    rows = np.arange(n)
    shapes_hw = np.array([t.shape for t in targets])
    points = [foreground_points(t) for t in targets]
    (start,) = draw_params([compiled], 3, 1, n, rows, shapes_hw, points)
    rng = epoch_rng(3, 1)  # the numbers RandomCrop drew: h/w starts, then whether/class/pixel
    u, v = rng.random((n, 2)), rng.random((n, 3))

    class Numbers:  # albumentations' py_random, replaying one row's five numbers
        def __init__(self, values):
            self.values = list(values)

        def random(self):
            return self.values.pop(0)

    placed = 0
    for r, target in enumerate(targets):
        crop = ForegroundCrop(
            0.5, height=CROP, width=CROP, pad_if_needed=True, pad_position="center"
        )
        crop.py_random = Numbers([*u[r], *v[r]])
        params = {"shape": target.shape}
        got = crop.get_params_dependent_on_data(params, {"mask": target})
        x0, y0, x1, y1 = got["crop_coords"]
        assert (y0, x0) == tuple(start[r]) and (y1 - y0, x1 - x0) == (CROP, CROP)
        if v[r, 0] < 0.5:  # placed: on the L (these images are larger than the crop)
            placed += 1
            assert (target[y0:y1, x0:x1] == 1).any()
    assert 0 < placed < n


# ------------------------------------------------------------------ --crop-foreground


def test_the_flag_places_a_cropping_recipes_crops_and_refuses_a_resizing_one():
    from segkit import build
    from segkit.config import COMMAND_LINE, RunConfig, given_as

    recipe = build.build_recipe(RunConfig(recipe="microscopy", crop_foreground=0.33))
    assert recipe.train[0] == R.RandomCrop(size=256, foreground=0.33)
    assert recipe.eval == build.build_recipe(RunConfig(recipe="microscopy")).eval
    assert build.build_recipe(RunConfig(recipe="microscopy")).train[0].foreground == 0
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as error:
        build.build_recipe(RunConfig(recipe="type1", crop_foreground=0.33))
    assert str(error.value) == (
        "--crop-foreground 0.33: recipe 'type1' does not train on crops at the images' own "
        "resolution (its train ops' last sizing op is not RandomCrop), so there is no crop "
        "to place; use a recipe that crops (microscopy, or a recipe file with RandomCrop), "
        "or leave --crop-foreground at 0"
    )
    with given_as(COMMAND_LINE), pytest.raises(ConfigError, match=r"--crop-foreground 1\.5: "):
        RunConfig(crop_foreground=1.5)


def test_segkit_run_and_preview_take_the_flag(tiny_pets, tmp_path):
    """`segkit run` reads it into the run's settings (config.json records them); `segkit
    preview` draws the crops it places."""
    from segkit.cli import build_parser, main
    from segkit.cli.args import settings_from_args
    from segkit.config import RunConfig

    argv = ["run", "--data", str(tiny_pets), "--recipe", "microscopy", "--crop-foreground"]
    settings = settings_from_args(build_parser().parse_args([*argv, "0.33"]))
    config = RunConfig.from_dict(settings, source="command line")
    assert config.crop_foreground == 0.33 and config.to_dict()["crop_foreground"] == 0.33
    out = tmp_path / "preview.png"
    argv = ["preview", "--data", str(tiny_pets), "--recipe", "microscopy", "--image-size", "32"]
    assert main([*argv, "--crop-foreground", "0.5", "--n", "2", "--out", str(out)]) == 0
    assert out.is_file()


def test_the_dali_feed_reads_an_images_n_crops_once(shapes, monkeypatch):
    """An epoch of N crops of each image (--crops-per-image) holds each file's bytes and
    foreground once, shared by its N copies."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    import segkit_dali._loader as dali_loader
    from segkit.data.sampling import crops_per_image

    reads = []
    real = dali_loader.read_encoded
    monkeypatch.setattr(
        dali_loader, "read_encoded", lambda sample, spec: reads.append(sample) or real(sample, spec)
    )
    recipe = _recipe(R.RandomCrop(size=CROP, foreground=0.5))
    loader = create("loaders", "dali", crops_per_image(shapes, 3), "train", recipe, 5, train=True)
    loader.set_epoch(0)
    assert sum(len(b.masks) for b in loader) == 30
    n = len(shapes.samples("train"))
    assert len(reads) == n and len(set(reads)) == n
    feed = loader._feed
    assert feed.images[0] is feed.images[n] is feed.images[2 * n]
    assert feed.points[0] is feed.points[n] and feed.points[0]  # the L's pixels, read once


def test_the_runs_start_line_says_how_many_crops_are_placed():
    from segkit.config import RunConfig
    from segkit.training.engine import _crops_note

    placed = _recipe(R.RandomCrop(size=CROP, foreground=0.33), R.HorizontalFlip())
    uniform = _recipe(R.RandomCrop(size=CROP))
    assert _crops_note(RunConfig(crops_per_image=16), placed) == (
        " of 16 crops of each train image, 33% centred on the foreground"
    )
    assert _crops_note(RunConfig(), placed) == " (33% of the crops centred on the foreground)"
    assert _crops_note(RunConfig(crops_per_image=16), uniform) == " of 16 crops of each train image"
    assert _crops_note(RunConfig(), uniform) == ""
