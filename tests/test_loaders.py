"""Contract tests for every registered loader and recipe (a third party's too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segkit import create_dataset, create_recipe
from segkit.errors import ConfigError, DataError
from segkit.recipes import IMAGENET_MEAN, IMAGENET_STD, Normalize, RandomGamma, Recipe, Resize
from segkit.registry import create, list_plugins
from segkit.testing import check_loader, check_recipe, parametrize_plugins

LOADERS = list_plugins("loaders")
RECIPES = list_plugins("augmentations")
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


@pytest.fixture(scope="module")
def shapes(shapes_pets):
    return create_dataset("oxford_pet", shapes_pets)


@pytest.mark.parametrize("loader", LOADERS)
def test_batches_have_the_shapes_and_dtypes_the_engine_expects(loader, shapes):
    ld = make_loader(loader, shapes, batch_size=6)
    n = len(shapes.samples("train"))
    assert len(ld) == -(-n // 6)
    images, masks, sizes = collect(ld)
    assert sizes[:-1] == [6] * (len(sizes) - 1) and sum(sizes) == n  # last partial batch kept
    assert images.dtype == torch.float32 and images.shape == (n, 3, SIZE, SIZE)
    assert masks.dtype == torch.float32 and masks.shape == (n, 1, SIZE, SIZE)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(images).all()


@pytest.mark.parametrize("loader", LOADERS)
def test_drop_last_drops_the_partial_batch(loader, shapes):
    n = len(shapes.samples("train"))
    ld = make_loader(loader, shapes, batch_size=6, drop_last=True)
    assert len(ld) == n // 6
    assert collect(ld)[2] == [6] * (n // 6)


@pytest.mark.parametrize("loader", LOADERS)
def test_same_seed_and_epoch_same_batches_and_epochs_reshuffle(loader, shapes):
    a = make_loader(loader, shapes, seed=3)
    b = make_loader(loader, shapes, seed=3)
    img_a1, msk_a1, _ = collect(a, epoch=1)
    img_b1, msk_b1, _ = collect(b, epoch=1)
    assert torch.equal(img_a1, img_b1) and torch.equal(msk_a1, msk_b1)
    img_a2, _, _ = collect(a, epoch=2)
    assert not torch.equal(img_a1, img_a2)


@pytest.mark.parametrize("loader", LOADERS)
def test_shards_are_disjoint_and_cover_the_split(loader, shapes):
    eval_recipe = Recipe(
        "eval", train=(Resize(size=SIZE), Normalize()), eval=(Resize(size=SIZE), Normalize())
    )
    full, _, _ = collect(make_loader(loader, shapes, "train", eval_recipe, train=False))
    shards = [
        collect(
            make_loader(loader, shapes, "train", eval_recipe, train=True, seed=5, shard=(r, 2)),
            epoch=1,
        )[0]
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == -(-len(full) // 2)
    # Identify images by their pixel sums: every image of the split lands in one shard.
    key = lambda t: sorted(round(float(x), 2) for x in t.sum(dim=(1, 2, 3)))  # noqa: E731
    assert sorted(key(shards[0]) + key(shards[1]))[: len(full)] == key(full) or set(
        key(full)
    ) <= set(key(shards[0]) + key(shards[1]))
    if len(full) % 2 == 0:
        assert not set(key(shards[0])) & set(key(shards[1]))


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_keeps_masks_binary_and_aligned_with_the_image(loader, recipe, shapes):
    """The shapes are bright on dark, so the mask can be read back from the pixels after
    any augmentation; a geometric op applied to one of the two would break agreement."""
    images, masks, _ = collect(
        make_loader(loader, shapes, recipe=recipe, batch_size=8, seed=11), epoch=4
    )
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    gray = images.mean(1)
    for img, msk in zip(gray, masks[:, 0], strict=True):
        fg, bg = img[msk == 1], img[msk == 0]
        if len(fg) < 20 or len(bg) < 20:
            continue  # a crop that holds only one class says nothing about alignment
        threshold = (fg.mean() + bg.mean()) / 2
        agreement = ((img > threshold) == (msk == 1)).float().mean()
        assert agreement > 0.95, f"{recipe}: only {agreement:.1%} of pixels agree"


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


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("loader", LOADERS)
def test_corrupt_jpeg_names_the_file(loader, num_workers, shapes_pets, tmp_path):
    """One line naming the file, whether it was read in this process or in a worker."""
    import shutil

    root = shutil.copytree(shapes_pets, tmp_path / "pets")
    bad = root / "images" / "shape_1.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    ds = create_dataset("oxford_pet", root)
    with pytest.raises(DataError, match=r"shape_1\.jpg: cannot decode image") as error:
        collect(make_loader(loader, ds, "test", train=False, num_workers=num_workers))
    assert "Traceback" not in str(error.value) and "\n" not in str(error.value)


def test_bad_batch_size_and_shard_are_config_errors(shapes):
    with pytest.raises(ConfigError, match="batch_size=0"):
        make_loader("albumentations", shapes, batch_size=0)
    with pytest.raises(ConfigError, match=r"shard=\(2, 2\)"):
        make_loader("albumentations", shapes, shard=(2, 2))


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
    for epoch in range(4):
        a = collect(make_loader("albumentations", shapes, recipe=flip, seed=0), epoch=epoch)[1]
        b = collect(make_loader("albumentations", shapes, recipe=plain, seed=0), epoch=epoch)[1]
        flips += sum(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
        total += len(a)
    assert 0.3 < flips / total < 0.7
    _ = np  # numpy is used by fixtures' helpers


# --- the conformance kit (segkit.testing), as plugin authors run it -----------------------


@parametrize_plugins("loaders", rules=True)
def test_loader_conformance_kit(kind, name, rule):
    check_loader(name, rules=[rule])


@parametrize_plugins("augmentations", rules=True)
def test_recipe_conformance_kit(kind, name, rule):
    check_recipe(name, rules=[rule])
