"""A recipe: a named pair of op lists, for training and for evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segkit.errors import ConfigError, PluginError
from segkit.recipes.lookup import op_from_dict, op_to_dict, plugin_ops, with_close
from segkit.recipes.ops import SIZING_OPS, VOCABULARY, Normalize, Op, RandomCrop, Resize
from segkit.wording import named_as


@dataclass(frozen=True)
class Recipe:
    """A named pair of op lists: ``train`` for training, ``eval`` for validation and test.

    Both must end with :class:`~segkit.recipes.ops.Normalize`. ``train`` gives every batch
    one shape through a sizing op (:data:`~segkit.recipes.ops.SIZING_OPS`, or a plugin's
    op that crops or resizes). Without ``eval``: a recipe whose last sizing op resizes
    evaluates resized to that size (the lab's way); one that crops at the images' own
    resolution (:class:`~segkit.recipes.ops.RandomCrop`), or has no sizing op, evaluates
    whole images at their own resolution, with the training ``Normalize`` only
    (:attr:`native_eval`).
    """

    name: str
    train: tuple[Op, ...]
    eval: tuple[Op, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.eval and self.train and isinstance(self.train[-1], Normalize):
            sizing = [op for op in self.train if isinstance(op, SIZING_OPS)]
            if sizing and not self.crops:
                object.__setattr__(self, "eval", (Resize(size=sizing[-1].size), self.train[-1]))
            else:  # crops at the images' own resolution, or no sizing op of ours
                object.__setattr__(self, "eval", (self.train[-1],))
        for stage in ("train", "eval"):
            ops = getattr(self, stage)
            for i, op in enumerate(ops):
                if not isinstance(op, Op):
                    raise ConfigError(f"recipe '{self.name}': {stage}[{i}] {_foreign(op)}")
            if not ops or not isinstance(ops[-1], Normalize):
                raise ConfigError(f"recipe '{self.name}': {stage} ops must end with Normalize")
            _check_foreground_crop(self.name, stage, ops)

    def ops(self, train: bool) -> tuple[Op, ...]:
        """The ops for training (``train=True``) or evaluation."""
        return self.train if train else self.eval

    @property
    def crops(self) -> bool:
        """Whether training sees random windows of each image at its own resolution: the
        last sizing op of ``train`` is a :class:`~segkit.recipes.ops.RandomCrop` (as in
        ``microscopy``). Each draw of such a recipe shows another part of a large image,
        so an epoch may take several (``crops_per_image``); a recipe that resizes shows
        the whole image every time."""
        sizing = [op for op in self.train if isinstance(op, SIZING_OPS)]
        return bool(sizing) and isinstance(sizing[-1], RandomCrop)

    @property
    def native_eval(self) -> bool:
        """Whether evaluation sees each image at its own size: no eval op sets the size."""
        return not any(isinstance(op, SIZING_OPS) for op in self.eval)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, used in run configs; :meth:`from_dict` reads it back."""
        return {
            "name": self.name,
            **{
                stage: [op_to_dict(op) for op in self.ops(stage == "train")]
                for stage in ("train", "eval")
            },
        }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], *, image_size: int = 256, source: str = "recipe"
    ) -> Recipe:
        """Build a recipe from its description: ``name`` (optional), ``train`` and
        optionally ``eval``, each a list of ``{"op": NAME, **parameters}``
        (:func:`~segkit.recipes.lookup.op_from_dict`).

        Size parameters left out (:data:`~segkit.recipes.ops.SIZE_FIELDS`) are
        ``image_size``; a stage that does not end with Normalize gets the default one.

        Raises:
            ConfigError: naming ``source`` and the key: an unknown key or op (with the close
                names), a parameter of the wrong type or out of range.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a table with 'train' (and 'eval') op lists")
        keys = ["name", "train", "eval"]
        unknown = sorted(set(d) - set(keys))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(with_close(k, keys) for k in unknown)}; "
                "a recipe has name, train and eval"
            )
        if "train" not in d:
            raise ConfigError(f"{source}: no 'train' list of ops ([[train]] tables in TOML)")
        name = d.get("name", "recipe")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: name={name!r}: expected a non-empty string")
        stages: dict[str, tuple[Op, ...]] = {}
        for stage in ("train", "eval"):
            if stage not in d:
                continue
            entries = d[stage]
            if not isinstance(entries, list):
                raise ConfigError(
                    f"{source}: {stage} = {entries!r}: expected a list of op tables "
                    f"([[{stage}]] in TOML, a list of mappings in YAML)"
                )
            ops = [
                op_from_dict(e, image_size=image_size, where=f"{source}: {stage}[{i}]")
                for i, e in enumerate(entries)
            ]
            if not ops or not isinstance(ops[-1], Normalize):
                ops.append(Normalize())
            stages[stage] = tuple(ops)
        return cls(name, train=stages["train"], eval=stages.get("eval", ()))


def eval_ops(image_size: int) -> tuple[Op, ...]:
    """The evaluation pipeline every built-in recipe uses: resize, then normalize."""
    return (Resize(size=image_size), Normalize())


def unsized_batch_error(recipe: str, stage: str, sizes: list[tuple[int, int]]) -> ConfigError:
    """The error a loader raises when ``recipe``'s ``stage`` ops ("train" or "eval") left
    the images of one batch at different sizes (no op sizes them all alike), instead of
    its library's own ("stack expects each tensor to be equal size" in torch, "must have
    uniform shape" in DALI): one line naming the recipe and the op to add. ``sizes``:
    two of the sizes seen, ``(height, width)``, if known. The settings are named as they
    were given (:func:`segkit.wording.named_as`): a loader whose workers build it in another
    process makes it there under :func:`segkit.wording.given_as` of the loader's caller."""
    shown = " and ".join(f"{w}x{h}" for h, w in sizes[:2])
    return ConfigError(
        f"recipe '{recipe}': its {stage} ops left the images of one batch at different "
        f"sizes{f' ({shown})' if len(sizes) > 1 else ''}, which cannot be stacked into a "
        "batch: no op of them sizes every image alike. End them with Resize(size=N) (N the "
        f"run's {named_as('image_size')}) or a crop to that size, before Normalize (see "
        f"docs/recipes.md), or use {named_as('batch_size', 1)}"
    )


def _foreign(op: Any) -> str:
    """Why ``op``, held by a recipe, is not one of its ops, and what to use instead: the
    segkit op of the same name where there is one, else the vocabulary; and the ops
    plugins add (one of them may wrap a whole pipeline of the library ``op`` comes from)."""
    kind = type(op)
    where = f"{kind.__module__}.{kind.__qualname__}"
    shown = repr(op)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    said = (
        f"is {shown} (type {where}), not a segkit.recipes op (a recipe is data that every "
        "loader compiles)"
    )
    if kind.__name__ in VOCABULARY:
        use = f"use segkit.recipes.{kind.__name__} instead (see docs/recipes.md for its parameters)"
    else:
        use = f"use one of segkit.recipes' ops: {', '.join(VOCABULARY)}"
    try:
        added = [f"{n} from {info.distribution}" for n, info in plugin_ops().items()]
    except PluginError:
        added = []
    if added:
        use += (
            f"; for a transform outside that vocabulary, an op a plugin adds "
            f"({', '.join(added)}; `segkit list ops`)"
        )
    if kind.__module__.split(".")[0] == "albumentations":
        use += (
            "; any albumentations pipeline can be wrapped whole: see docs/recipes.md, "
            "'Your own albumentations pipeline'"
        )
    return f"{said}; {use}"


def _check_foreground_crop(name: str, stage: str, ops: tuple[Op, ...]) -> None:
    """A ``RandomCrop`` with ``foreground`` finds the foreground on the mask as read: no
    geometric op may move it first (the DALI loader plans the windows from each mask's
    pixels before any op runs).

    Raises:
        ConfigError: naming the recipe, the crop and the geometric op before it.
    """
    for i, op in enumerate(ops):
        if not (isinstance(op, RandomCrop) and op.foreground > 0):
            continue
        moved = [f"{stage}[{j}] {type(o).__name__}" for j, o in enumerate(ops[:i]) if o.geometric]
        if moved:
            raise ConfigError(
                f"recipe '{name}': {stage}[{i}] RandomCrop(foreground={op.foreground:g}) "
                f"comes after {', '.join(moved)}; a crop placed on the foreground finds it on "
                "the mask as read, so it must be the first geometric op: move it before them"
            )
