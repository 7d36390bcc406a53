"""Recipe rules (:data:`RECIPE_RULES`) and :func:`check_recipe`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from segkit import recipes as R
from segkit.errors import ConfigError, SegkitError
from segkit.registry import default_registry
from segkit.testing._rules import (
    SIGNATURE,
    Broken,
    Rule,
    Target,
    demand,
    demands,
    fits_contract,
    returned,
    run_rules,
    select,
    target,
)
from segkit.testing.loaders import check_batches, collect
from segkit.testing.shapes import shapes_dataset


def _loader_factory(loader: str | Callable[..., Any] | None) -> tuple[str, Callable[..., Any]]:
    """``(label, factory)`` of the loader used to run recipes."""
    registry = default_registry()
    if callable(loader):
        return getattr(loader, "__qualname__", repr(loader)), loader
    if loader is None:
        # The first registered loader that imports: no loader is special to the core.
        for info in registry.plugins("loaders").values():
            try:
                info.load()
            except SegkitError:
                continue
            loader = info.name
            break
        else:
            raise ConfigError("no loader plugin is installed to run recipes through")
    name = loader

    def factory(*args: Any, **kwargs: Any) -> Any:
        return registry.create("loaders", name, *args, **kwargs)

    return f"loader '{name}'", factory


def _alignment(images: torch.Tensor, masks: torch.Tensor) -> float:
    """The worst agreement, over images, between the mask and the thresholded image: the
    generated shapes are bright on dark, so an aligned mask agrees on nearly every pixel."""
    worst = 1.0
    for img, msk in zip(images.mean(1), masks[:, 0], strict=True):
        fg, bg = img[msk == 1], img[msk == 0]
        if len(fg) < 20 or len(bg) < 20:
            continue  # a crop that holds only one class says nothing about alignment
        threshold = (fg.mean() + bg.mean()) / 2
        agreement = float(((img > threshold) == (msk == 1)).float().mean())
        worst = min(worst, agreement)
    return worst


@dataclass
class RecipeCase:
    """A recipe plugin under test, what to run it through, and the recipe rules share."""

    target: Target
    image_size: int
    loader: str | Callable[..., Any] | None
    loader_options: dict[str, Any]
    dataset: Any
    epochs: int
    recipe: R.Recipe | None = None

    def made(self) -> R.Recipe:
        """The recipe, made once."""
        if self.recipe is None:
            out = self.target.factory(image_size=self.image_size)
            returned(out, R.Recipe, "not a segkit.recipes.Recipe")
            self.recipe = out
        return self.recipe


# ----------------------------------------------------------------------------- rules


def returns_recipe(case: RecipeCase) -> None:
    case.made()


def vocabulary(case: RecipeCase) -> None:
    known = R.known_ops()
    for stage in ("train", "eval"):
        ops = case.made().ops(stage == "train")
        foreign = [type(op).__name__ for op in ops if known.get(type(op).__name__) is not type(op)]
        demand(
            not foreign,
            f"{stage} ops {foreign} are not in the vocabulary: neither segkit's own "
            f"({', '.join(R.VOCABULARY)}) nor ops an installed plugin registers (segkit list ops)",
        )


def output_size(case: RecipeCase) -> None:
    for stage in ("train", "eval"):
        recipe = case.made()
        ops = recipe.ops(stage == "train")
        if stage == "eval" and recipe.native_eval:
            continue  # whole images at their own size: nothing sets one
        sizing = [op for op in ops if isinstance(op, R.SIZING_OPS)]
        always = [i for i, op in enumerate(sizing) if op.p == 1.0]
        demand(
            bool(always),
            f"{stage} ops hold no {' or '.join(c.__name__ for c in R.SIZING_OPS)} with p=1, "
            "so batches would mix image sizes",
        )
        last = [op.size for op in sizing[always[-1] :]]
        demand(
            set(last) == {case.image_size},
            f"{stage} ops end at size {last[-1]}, not image_size={case.image_size}",
        )


def masks_binary_and_aligned(case: RecipeCase) -> None:
    ds = case.dataset if case.dataset is not None else shapes_dataset()
    label, factory = _loader_factory(case.loader)
    kw: dict[str, Any] = {"num_workers": 0, "device": "cpu", **case.loader_options}
    native = case.made().native_eval
    for train, split, runs in ((True, "train", case.epochs), (False, "test", 1)):
        stage = "train" if train else "eval"
        # Native evaluation: one image a batch, each at its own size.
        batch = 1 if native and not train else 4
        ld = factory(ds, split, case.made(), batch, train=train, seed=0, **kw)
        n = len(ds.samples(split))
        where = f"{stage} ops through {label}"
        for epoch in range(runs):
            if native and not train:
                images, masks = _native_batches(ld, epoch, ds.samples(split), where)
            else:
                images, masks = _sized_batches(ld, epoch, n, case.image_size, where)
            worst = _alignment(images, masks)
            demand(
                worst > 0.95,
                f"{where}: mask and image agree on only {worst:.1%} "
                "of the pixels of one image (a geometric op moved one but not the other?)",
            )


def _native_batches(
    loader: Any, epoch: int, samples: Sequence[Any], where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of native evaluation: each image checked at its own size, then all
    flattened into one ``(1, C, pixels, 1)`` images and masks pair; ``where`` names the
    ops and the loader in messages."""
    n = len(samples)
    pairs = [(b.images, b.masks) for b in _epoch(loader, epoch)]
    demand(len(pairs) == n, f"{where}: {len(pairs)} of {n} images")
    for (images, masks), sample in zip(pairs, samples, strict=True):
        h, w = _size_of(sample)
        try:
            check_batches(images, masks, 1, (h, w))
        except Broken as e:
            raise Broken(f"{where}, at native size: {e}") from None
    images = torch.cat([im.flatten(2) for im, _ in pairs], 2)[..., None]
    masks = torch.cat([m.flatten(2) for _, m in pairs], 2)[..., None]
    return images, masks


def _sized_batches(
    loader: Any, epoch: int, n: int, size: int, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch at ``size``: its ``n`` images and masks, checked; ``where`` names the
    ops and the loader in messages."""
    images, masks, _ = collect(loader, epoch)
    try:
        check_batches(images, masks, n, size)
    except Broken as e:
        raise Broken(f"{where}: {e}") from None
    return images, masks


def _epoch(loader: Any, epoch: int) -> Any:
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    return iter(loader)


def _size_of(sample: Any) -> tuple[int, int]:
    with Image.open(sample.image) as im:
        return im.height, im.width


#: The recipe rules, in the order they run.
RULES: dict[str, Rule[RecipeCase]] = {
    "signature": Rule(SIGNATURE, fits_contract),
    "returns_recipe": Rule(
        "the factory(image_size=...) returns a segkit.recipes.Recipe", returns_recipe
    ),
    "vocabulary": Rule(
        "every op is one of segkit.recipes.VOCABULARY (every loader compiles those) or an op "
        "an installed plugin registers (segkit.ops; its loaders compile it)",
        vocabulary,
    ),
    "output_size": Rule(
        "train ops end at image_size x image_size; eval ops too, or they leave each image "
        "at its own size (no Resize or crop: native evaluation)",
        output_size,
    ),
    "masks_binary_and_aligned": Rule(
        "run through a loader, images are float32 (N, 3, S, S) (native eval: each image's own "
        "size), masks (N, 1, S, S) hold only 0 and 1 and still cover the object in the image",
        masks_binary_and_aligned,
    ),
}

#: Recipe rules, in the order they run: name -> what the rule demands.
RECIPE_RULES: dict[str, str] = demands(RULES)


def check_recipe(
    recipe: str | Callable[..., Any],
    *,
    image_size: int = 64,
    loader: str | Callable[..., Any] | None = None,
    loader_options: Mapping[str, Any] | None = None,
    dataset: Any = None,
    epochs: int = 2,
    rules: Iterable[str] | None = None,
    name: str | None = None,
) -> None:
    """Check an augmentation recipe plugin against :data:`RECIPE_RULES`.

    Args:
        recipe: A registered recipe name (``"type3"``) or a factory
            ``factory(image_size=...) -> Recipe``.
        image_size: The size asked of the factory.
        loader: The loader to run the recipe through: a registered name, a loader
            factory, or ``None`` for the first registered loader that imports.
        loader_options: Extra keyword arguments for the loader factory.
        dataset: A :class:`segkit.contracts.Dataset` whose images are bright objects on
            a dark background (default: :func:`shapes_dataset`).
        epochs: Training epochs to draw augmentations from.
        rules: Names of the rules to run (default: all, in :data:`RECIPE_RULES` order).
        name: How to call a factory in messages.

    Raises:
        ConformanceError: A rule is broken; the message names the plugin and the rule.
    """
    case = RecipeCase(
        target("recipes", recipe, name),
        image_size,
        loader,
        dict(loader_options or {}),
        dataset,
        epochs,
    )
    run_rules(RULES, select(RULES, rules, "recipe"), case)
