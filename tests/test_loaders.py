"""Contract tests for every registered loader and recipe (a third party's too)."""

from __future__ import annotations

import re

import pytest
import torch

from segkit import create_recipe
from segkit.config import COMMAND_LINE, PYTHON, given_as
from segkit.errors import ConfigError, DataError
from segkit.recipes import IMAGENET_MEAN, IMAGENET_STD, Normalize, RandomGamma, Recipe, Resize
from segkit.registry import create, list_plugins
from segkit.testing import check_loader, check_recipe, parametrize_plugins

LOADERS = list_plugins("loaders")
RECIPES = list_plugins("recipes")
SIZE = 64


def make_loader(name, dataset, split="train", recipe="type3", *, train=True, batch_size=4, **kw):
    if isinstance(recipe, str):
        recipe = create_recipe(recipe, image_size=SIZE)
    kw.setdefault("num_workers", 0)
    return create("loaders", name, dataset, split, recipe, batch_size, train=train, **kw)


def collect(loader, epoch=0):
    loader.set_epoch(epoch)
    batches = list(loader)
    return (
        torch.cat([b.images for b in batches]),
        torch.cat([b.masks for b in batches]),
        [len(b.images) for b in batches],
    )


# Batches, drop_last, epoch determinism, shards, and every recipe keeping masks binary
# and aligned: the conformance kit's LOADER_RULES and RECIPE_RULES, run for every
# registered loader at the end of this module. Here: what the kit does not check.


@pytest.mark.parametrize("loader", LOADERS)
def test_eval_recipe_is_resize_and_imagenet_normalize(loader, shapes):
    images, masks, _ = collect(make_loader(loader, shapes, "test", train=False))
    # Undo the normalization: the dark background is 15..50 and the shape 200..240.
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = (images * std + mean) * 255
    inside = pixels.permute(1, 0, 2, 3)[:, masks[:, 0] == 1]
    assert inside.float().median() > 180
    assert len(images) == len(shapes.samples("test"))


@pytest.mark.parametrize("loader", LOADERS)
def test_gamma_stays_in_its_range(loader, shapes):
    lo, hi = 0.8, 1.2
    base = Recipe("g", train=(Resize(size=SIZE), Normalize(mean=(0, 0, 0), std=(1, 1, 1))))
    gamma = Recipe(
        "g",
        train=(
            Resize(size=SIZE),
            RandomGamma(gamma_limit=(80, 120), p=1.0),
            Normalize(mean=(0, 0, 0), std=(1, 1, 1)),
        ),
    )
    plain = collect(make_loader(loader, shapes, recipe=base, seed=1), epoch=1)[0]
    bent = collect(make_loader(loader, shapes, recipe=gamma, seed=1), epoch=1)[0]
    for x, y in zip(plain, bent, strict=True):
        sel = (x > 0.1) & (x < 0.9)
        g = (torch.log(y[sel].clamp_min(1e-4)) / torch.log(x[sel])).median()
        assert lo - 0.05 <= g <= hi + 0.05


def _worker_cases():
    """(loader, num_workers) pairs. The albumentations loader's workers are processes
    (from a forkserver that takes seconds to start): that case is in the slow tier. The
    dali loader's workers are threads."""
    for loader in LOADERS:
        for n in (0, 1):
            slow = n > 0 and loader == "albumentations"
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(loader, n, marks=marks, id=f"{loader}-{n}")


@pytest.mark.parametrize(("loader", "num_workers"), list(_worker_cases()))
def test_corrupt_jpeg_names_the_file(loader, num_workers, shapes_root, tmp_path):
    """One line naming the file, whether it was read in this process or in a worker."""
    import shutil

    from segkit.testing import ShapesDataset

    root = shutil.copytree(shapes_root, tmp_path / "shapes")
    ds = ShapesDataset(root)
    bad = ds.samples("test")[1].image
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=re.escape(f"{bad.name}: cannot decode image")) as error:
        collect(make_loader(loader, ds, "test", train=False, num_workers=num_workers))
    assert str(bad) in str(error.value)
    assert "Traceback" not in str(error.value) and "\n" not in str(error.value)


def test_bad_batch_size_and_shard_are_config_errors(shapes):
    with pytest.raises(ConfigError, match="batch_size=0"):
        make_loader("albumentations", shapes, batch_size=0)
    with pytest.raises(ConfigError, match=r"shard=\(2, 2\)"):
        make_loader("albumentations", shapes, shard=(2, 2))


@pytest.mark.slow  # starts two worker processes
def test_albumentations_loader_with_workers_matches_without(shapes):
    a = collect(make_loader("albumentations", shapes, num_workers=0, seed=2), epoch=3)
    b = collect(make_loader("albumentations", shapes, num_workers=2, seed=2), epoch=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_flip_frequency_is_near_its_probability(shapes):
    from segkit.recipes import HorizontalFlip

    flip = Recipe("f", train=(Resize(size=SIZE), HorizontalFlip(p=0.5), Normalize()))
    plain = Recipe("p", train=(Resize(size=SIZE), Normalize()))
    flips = 0
    total = 0
    for epoch in range(7):  # 70 draws of the 10 training images
        a = collect(make_loader("albumentations", shapes, recipe=flip, seed=0), epoch=epoch)[1]
        b = collect(make_loader("albumentations", shapes, recipe=plain, seed=0), epoch=epoch)[1]
        flips += sum(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
        total += len(a)
    assert 0.3 < flips / total < 0.7


# --- the conformance kit (segkit.testing), as plugin authors run it -----------------------


@parametrize_plugins("loaders", rules=True)
def test_loader_conformance_kit(kind, name, rule):
    check_loader(name, rules=[rule])


@parametrize_plugins("recipes", rules=True)
def test_recipe_conformance_kit(kind, name, rule):
    check_recipe(name, rules=[rule])


#: (recipe, loader) pairs that must refuse on the CPU, where the kit runs them: the op
#: the one-line ConfigError names, and why. Nothing else may fail.
CPU_REFUSALS = {
    ("microscopy", "dali"): ("ElasticTransform", "DALI's remap .* runs only on a GPU"),
}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_keeps_masks_binary_and_aligned_through_every_loader(recipe, loader):
    """The kit runs a recipe through one loader (the first registered); each loader
    compiles the recipe's ops itself, so every pair must keep the mask on the object.
    A pair in CPU_REFUSALS must instead refuse the recipe in one line naming the op
    (the kit runs loaders on the CPU: the dali loader has no elastic transform there)."""
    from segkit.testing import ConformanceError

    if (recipe, loader) not in CPU_REFUSALS:
        check_recipe(recipe, loader=loader, rules=["masks_binary_and_aligned"])
        return
    op, why = CPU_REFUSALS[recipe, loader]
    with pytest.raises(ConformanceError) as error:
        check_recipe(recipe, loader=loader, rules=["masks_binary_and_aligned"])
    cause = error.value.__cause__
    assert isinstance(cause, ConfigError), f"not a refusal: {error.value}"
    message = str(cause)
    assert "\n" not in message and re.search(why, message), message
    assert message.startswith(f"the {loader} loader cannot run {op}("), message
    assert "loader='albumentations'" in message  # from Python: the keyword
    with given_as(COMMAND_LINE), pytest.raises(ConformanceError) as error:  # a command: the flag
        check_recipe(recipe, loader=loader, rules=["masks_binary_and_aligned"])
    assert "--loader albumentations" in str(error.value.__cause__)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_recipe_that_leaves_images_at_their_own_sizes_is_named_in_one_line(
    num_workers: int,
) -> None:
    """A recipe (a plugin's or a file's) whose train ops size nothing, on images of
    several sizes, stops at its first batch naming the recipe and the op to add, instead
    of torch's "stack expects each tensor to be equal size" from inside the DataLoader.
    The settings it names are named as the loader's caller gave them, also where the line
    is made in a worker process (the workers carry it: a new process names keywords)."""
    from segkit.recipes import HorizontalFlip
    from segkit.testing import shapes_dataset

    recipe = Recipe("unsized", train=(HorizontalFlip(p=0.5), Normalize()))
    said = {}
    for origin in (PYTHON, COMMAND_LINE):
        with given_as(origin):
            loader = create(
                "loaders", "albumentations", shapes_dataset(), "train", recipe, 4,
                train=True, num_workers=num_workers,
            )  # fmt: skip
        with pytest.raises(
            ConfigError,
            match=r"^recipe 'unsized': its train ops left the images of one batch at different "
            r"sizes \(\d+x\d+ and \d+x\d+\), which cannot be stacked into a batch: .* End "
            r"them with Resize\(size=N\)",
        ) as e:
            next(iter(loader))  # outside given_as: the loader carries how it was made
        said[origin] = str(e.value).split("End them with ", 1)[1]
    assert said == {
        PYTHON: "Resize(size=N) (N the run's image_size) or a crop to that size, before "
        "Normalize (see docs/recipes.md), or use batch_size=1",
        COMMAND_LINE: "Resize(size=N) (N the run's --image-size) or a crop to that size, "
        "before Normalize (see docs/recipes.md), or use --batch-size 1",
    }
