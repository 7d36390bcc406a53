"""Loader rules (:data:`LOADER_RULES`) and :func:`check_loader`; reading a loader's
batches back (:func:`collect`, :func:`check_batches`), which the recipe rules share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from segkit import recipes as R
from segkit.contracts import IGNORE_INDEX, Batch
from segkit.testing._rules import (
    SIGNATURE,
    Rule,
    Target,
    demand,
    demands,
    fits_contract,
    run_rules,
    select,
    target,
)
from segkit.testing.shapes import shapes_dataset


def collect(loader: Any, epoch: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """One epoch of ``loader``: all images, all masks (on the CPU) and the batch sizes."""
    loader.set_epoch(epoch)
    images, masks, sizes = [], [], []
    for b in loader:
        demand(isinstance(b, Batch), f"yielded a {type(b).__name__}, not a segkit.contracts.Batch")
        images.append(b.images.cpu())
        masks.append(b.masks.cpu())
        sizes.append(len(b.images))
    demand(bool(sizes), "yielded no batches")
    return torch.cat(images), torch.cat(masks), sizes


def check_batches(
    images: torch.Tensor, masks: torch.Tensor, n: int, size: int | tuple[int, int]
) -> None:
    """Demand ``n`` float32 images ``(3, H, W)`` and 0/1 float32 masks ``(1, H, W)``, where
    ``size`` is ``(H, W)`` or ``H == W``."""
    h, w = (size, size) if isinstance(size, int) else size
    demand(
        images.dtype == torch.float32 and tuple(images.shape) == (n, 3, h, w),
        f"images are {images.dtype} {tuple(images.shape)}, expected float32 {(n, 3, h, w)}",
    )
    demand(
        masks.dtype == torch.float32 and tuple(masks.shape) == (n, 1, h, w),
        f"masks are {masks.dtype} {tuple(masks.shape)}, expected float32 {(n, 1, h, w)}",
    )
    values = sorted(set(masks.unique().tolist()) - {0.0, 1.0})
    demand(not values, f"masks hold values other than 0 and 1: {values[:5]}")
    demand(bool(torch.isfinite(images).all()), "NaN or inf in the images")


@dataclass
class LoaderCase:
    """A loader plugin under test, the dataset it reads and the checker's settings."""

    target: Target
    dataset: Any
    batch_size: int
    image_size: int
    options: dict[str, Any]  # num_workers and device included
    n: int = field(init=False)  # training images
    flip: R.Recipe = field(init=False)  # a flip, a resize and ImageNet normalization
    fixed: R.Recipe = field(init=False)  # flip's eval ops, for training too

    def __post_init__(self) -> None:
        self.n = len(self.dataset.samples("train"))
        size = self.image_size
        self.flip = R.Recipe(
            "conformance",
            train=(R.HorizontalFlip(p=0.5), R.Resize(size=size), R.Normalize()),
            eval=(R.Resize(size=size), R.Normalize()),
        )
        self.fixed = R.Recipe("conformance-eval", train=self.flip.eval, eval=self.flip.eval)

    def make(
        self, recipe: R.Recipe | None = None, *, train: bool = True, seed: int = 0, **extra: Any
    ) -> Any:
        """A loader over the training split (with the ``flip`` recipe by default)."""
        ld = self.target.factory(
            self.dataset,
            "train",
            recipe or self.flip,
            self.batch_size,
            train=train,
            seed=seed,
            **self.options,
            **extra,
        )
        for attr in ("__iter__", "__len__", "set_epoch"):
            demand(hasattr(ld, attr), f"the factory returned a {type(ld).__name__} without {attr}")
        return ld


# ----------------------------------------------------------------------------- rules


def batches(case: LoaderCase) -> None:
    ld, n, batch_size = case.make(), case.n, case.batch_size
    expected = math.ceil(n / batch_size)
    demand(
        len(ld) == expected,
        f"len() is {len(ld)} for {n} images in batches of {batch_size}, expected {expected}",
    )
    images, masks, sizes = collect(ld, 1)
    want = [batch_size] * (n // batch_size) + [n % batch_size]
    demand(sizes == want, f"batch sizes {sizes}, expected {want} (the partial batch is kept)")
    check_batches(images, masks, n, case.image_size)


def drop_last(case: LoaderCase) -> None:
    ld, full = case.make(drop_last=True), case.n // case.batch_size
    demand(len(ld) == full, f"with drop_last len() is {len(ld)}, expected {full}")
    _, _, sizes = collect(ld, 1)
    demand(sizes == [case.batch_size] * full, f"with drop_last batch sizes are {sizes}")


def epoch_determinism(case: LoaderCase) -> None:
    a, b = case.make(seed=3), case.make(seed=3)
    img_a, msk_a, _ = collect(a, 1)
    img_b, msk_b, _ = collect(b, 1)
    demand(
        torch.equal(img_a, img_b) and torch.equal(msk_a, msk_b),
        "two loaders with the same seed and epoch gave different batches",
    )
    img_a2, _, _ = collect(a, 2)
    demand(not torch.equal(img_a, img_a2), "epoch 2 gave exactly the batches of epoch 1")
    img_a1, _, _ = collect(a, 1)
    demand(torch.equal(img_a, img_a1), "set_epoch(1) again did not repeat epoch 1")


def class_maps(case: LoaderCase) -> None:
    ds = shapes_dataset(classes=True)
    spec = ds.mask_spec
    allowed = set(range(len(spec.classes))) | {IGNORE_INDEX}
    size = case.image_size
    every_op = R.Recipe(
        "conformance-classes",
        train=(
            R.HorizontalFlip(p=1.0),
            R.RandomGamma(p=1.0),
            R.CLAHE(p=1.0),
            R.ChannelShuffle(p=1.0),
            R.RandomBrightnessContrast(p=1.0),
            R.RandomToneCurve(p=1.0),
            R.RandomResizedCrop(size=size, scale=(0.3, 1.0), p=1.0),
            R.Resize(size=size),
            R.Normalize(),
        ),
        eval=(R.Resize(size=size), R.Normalize()),
    )
    n = len(ds.samples("train"))
    for recipe, train, what in ((every_op, True, "every op"), (every_op, False, "a resize")):
        ld = case.target.factory(
            ds, "train", recipe, case.batch_size, train=train, seed=1, **case.options
        )
        images, masks, _ = collect(ld, 1)
        demand(
            not masks.is_floating_point() and tuple(masks.shape) == (n, size, size),
            f"{len(spec.classes)}-class masks after {what} are {masks.dtype} "
            f"{tuple(masks.shape)}, expected an integer class map {(n, size, size)}",
        )
        found = set(masks.unique().tolist())
        demand(
            found <= allowed,
            f"class maps after {what} hold {sorted(found - allowed)}, outside the classes "
            f"0..{len(spec.classes) - 1} and the ignore index {IGNORE_INDEX} (resample masks "
            "with nearest neighbour only)",
        )
        if not train:
            demand(
                found == allowed,
                f"after a resize the class maps hold {sorted(found)}; every class and the "
                f"ignore index {IGNORE_INDEX} should survive it",
            )


def _keys(images: torch.Tensor) -> list[float]:
    # Every generated image has its own size and shape: its pixel sum identifies it.
    return sorted(round(float(x), 1) for x in images.double().sum(dim=(1, 2, 3)))


def shards(case: LoaderCase) -> None:
    full = _keys(collect(case.make(case.fixed, train=False), 0)[0])
    demand(len(set(full)) == len(full), "the dataset's images are not distinguishable")
    parts = [_keys(collect(case.make(case.fixed, seed=5, shard=(r, 2)), 1)[0]) for r in range(2)]
    half = math.ceil(case.n / 2)
    demand(
        len(parts[0]) == len(parts[1]) == half,
        f"shards hold {len(parts[0])} and {len(parts[1])} images, expected {half} each",
    )
    both = set(parts[0]) & set(parts[1])
    demand(not both, f"{len(both)} image(s) appear in both shards")
    demand(
        sorted(parts[0] + parts[1]) == full,
        "the two shards together do not hold exactly the images of the split",
    )


#: The loader rules, in the order they run.
RULES: dict[str, Rule[LoaderCase]] = {
    "signature": Rule(SIGNATURE, fits_contract),
    "batches": Rule(
        "batches are segkit.contracts.Batch of float32 (N, 3, S, S) images and 0/1 "
        "(N, 1, S, S) masks, len() counts the last partial batch, which is kept",
        batches,
    ),
    "drop_last": Rule("drop_last=True drops the last partial batch, and len() says so", drop_last),
    "epoch_determinism": Rule(
        "the same seed and set_epoch() give the same batches; another epoch reshuffles",
        epoch_determinism,
    ),
    "shards": Rule(
        "shard=(rank, 2) loaders read disjoint halves that together cover the split", shards
    ),
    "class_maps": Rule(
        "for a K-class dataset masks are integer (N, S, S) class maps that hold only its "
        "classes and the ignore index through every op of the vocabulary",
        class_maps,
    ),
}

#: Loader rules, in the order they run: name -> what the rule demands.
LOADER_RULES: dict[str, str] = demands(RULES)


def check_loader(
    loader: str | Callable[..., Any],
    *,
    batch_size: int = 4,
    image_size: int = 64,
    options: Mapping[str, Any] | None = None,
    dataset: Any = None,
    device: str = "cpu",
    rules: Iterable[str] | None = None,
    name: str | None = None,
) -> None:
    """Check a loader plugin against :data:`LOADER_RULES`.

    The loader reads :func:`shapes_dataset` (10 training images: with ``batch_size=4``
    the last batch is partial) with a recipe of a flip, a resize and ImageNet
    normalization, and ``num_workers=0`` unless ``options`` says otherwise.

    Args:
        loader: A registered loader name (``"albumentations"``) or a loader factory (see
            :class:`segkit.contracts.LoaderFactory`).
        batch_size: Images per batch; must not divide the split's size.
        image_size: The recipe's output size.
        options: Extra keyword arguments for the factory.
        dataset: The dataset to read (default: :func:`shapes_dataset`).
        device: Passed to the factory; batches are compared on the CPU.
        rules: Names of the rules to run (default: all, in :data:`LOADER_RULES` order).
        name: How to call a factory in messages.

    Raises:
        ConformanceError: A rule is broken; the message names the plugin and the rule.
    """
    tgt = target("loaders", loader, name)
    selected = select(RULES, rules, "loader")
    kw: dict[str, Any] = {"num_workers": 0, "device": device, **(options or {})}
    ds = dataset if dataset is not None else shapes_dataset()
    case = LoaderCase(tgt, ds, batch_size, image_size, kw)
    if case.n % batch_size == 0:
        raise ValueError(
            f"batch_size={batch_size} divides the {case.n} training images: no partial batch"
        )
    run_rules(RULES, selected, case)
