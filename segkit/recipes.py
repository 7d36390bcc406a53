"""The augmentation vocabulary: backend-neutral ops and recipes built from them.

A recipe is data. Each op below is a frozen dataclass holding its parameters and the
probability ``p`` with which it fires; a loader compiles the ops into its own backend
(albumentations on CPU workers, a DALI graph on the GPU) and raises
:class:`segkit.errors.ConfigError` naming any op it cannot do.

Rules every backend follows:

* Geometric ops (``geometric = True``) move image and mask together with one random
  draw; masks are resampled with nearest neighbour and stay exactly 0/1.
* Photometric ops touch the image only.
* Ops run in the order given. Parameters follow albumentations' conventions (the lab
  this toolkit reproduces was written with it), e.g. ``RandomGamma(gamma_limit=(80, 120))``
  means gamma in [0.8, 1.2].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Op:
    """Base of every op. ``p`` is the probability that the op is applied to a sample."""

    p: float = 1.0
    geometric: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            from segkit.errors import ConfigError

            raise ConfigError(f"{type(self).__name__}: p={self.p} is not in [0, 1]")

    def params(self) -> dict[str, Any]:
        """The op's parameters as a plain dict (for configs and reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class HorizontalFlip(Op):
    """Mirror left-right."""

    p: float = 0.5
    geometric: ClassVar[bool] = True


@dataclass(frozen=True)
class Resize(Op):
    """Resize to ``size`` x ``size`` (bilinear for images, nearest for masks)."""

    size: int = 256
    geometric: ClassVar[bool] = True


@dataclass(frozen=True)
class RandomResizedCrop(Op):
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` (log-uniform),
    then resize to ``size`` x ``size``."""

    size: int = 256
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    geometric: ClassVar[bool] = True


@dataclass(frozen=True)
class RandomGamma(Op):
    """``out = 255 * (in / 255) ** gamma`` with gamma uniform in ``gamma_limit / 100``."""

    gamma_limit: tuple[float, float] = (80, 120)


@dataclass(frozen=True)
class CLAHE(Op):
    """Contrast-limited adaptive histogram equalization on the luminance channel, with a
    clip limit uniform in ``clip_limit`` and a ``tile_grid_size`` grid of tiles."""

    clip_limit: tuple[float, float] = (1.0, 4.0)
    tile_grid_size: tuple[int, int] = (8, 8)


@dataclass(frozen=True)
class ChannelShuffle(Op):
    """Randomly permute the RGB channels."""


@dataclass(frozen=True)
class RandomBrightnessContrast(Op):
    """``out = alpha * in + beta * max_value`` with alpha = 1 + U(contrast_limit) and
    beta = U(brightness_limit)."""

    brightness_limit: tuple[float, float] = (-0.2, 0.2)
    contrast_limit: tuple[float, float] = (-0.2, 0.2)


@dataclass(frozen=True)
class RandomToneCurve(Op):
    """Apply a random S-shaped Bezier tone curve whose control points move by N(0, scale)."""

    scale: float = 0.1


@dataclass(frozen=True)
class Normalize(Op):
    """``(in / 255 - mean) / std`` per channel; output float32."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


# ------------------------------------------------------- ops for real datasets (issue 15)
#
# Border and fill conventions shared by the geometric ops below:
#
# * ``border_mode`` says what a pixel moved in from outside the image becomes:
#   ``"constant"`` (``fill`` for the image, ``fill_mask`` for the mask), ``"replicate"``
#   (the nearest edge pixel) or ``"reflect"`` (mirrored about the edge pixel, OpenCV's
#   BORDER_REFLECT_101). A loader that cannot do a mode refuses it before training.
# * ``fill_mask=None`` means "nothing": 0 (background) for a binary dataset, the ignore
#   index 255 for a K-class one, so padded or rotated-in pixels do not count as a class.
#   :func:`mask_fill` resolves it; loaders call it with the dataset's mask spec.

BORDER_MODES = ("constant", "replicate", "reflect")


def _error(op: Op, message: str) -> Any:
    from segkit.errors import ConfigError

    return ConfigError(f"{type(op).__name__}: {message}")


def _check_range(op: Op, name: str, lo: float | None = None, hi: float | None = None) -> None:
    """``getattr(op, name)`` is a pair ``(a, b)`` with ``a <= b``, both within [lo, hi]."""
    value = getattr(op, name)
    if not (isinstance(value, tuple) and len(value) == 2):
        raise _error(op, f"{name}={value!r}: expected a pair (low, high)")
    a, b = value
    if a > b:
        raise _error(op, f"{name}={value!r}: low is above high")
    if (lo is not None and a < lo) or (hi is not None and b > hi):
        raise _error(op, f"{name}={value!r}: expected values within [{lo}, {hi}]")


def _check_border(op: Op) -> None:
    mode = op.border_mode  # type: ignore[attr-defined]
    if mode not in BORDER_MODES:
        raise _error(op, f"border_mode={mode!r}: expected one of {', '.join(BORDER_MODES)}")
    fill, fill_mask = op.fill, op.fill_mask  # type: ignore[attr-defined]
    if not 0 <= fill <= 255:
        raise _error(op, f"fill={fill}: expected an image value in [0, 255]")
    if fill_mask is not None and not (isinstance(fill_mask, int) and 0 <= fill_mask <= 255):
        raise _error(op, f"fill_mask={fill_mask!r}: expected a mask value in [0, 255] or None")


def mask_fill(op: Op, multiclass: bool) -> int:
    """The mask value a geometric op writes where no source pixel exists: the op's
    ``fill_mask``, or by default 0 (binary) or the ignore index 255 (K classes).

    Raises:
        ConfigError: a binary dataset with a fill other than 0 and 1 (binary masks have
            no ignore value).
    """
    from segkit.contracts import IGNORE_INDEX

    fill = getattr(op, "fill_mask", None)
    if fill is None:
        return IGNORE_INDEX if multiclass else 0
    if not multiclass and fill not in (0, 1):
        raise _error(
            op,
            f"fill_mask={fill}: a binary dataset's masks hold only 0 and 1 (no ignore "
            "value); use 0, 1 or leave fill_mask unset",
        )
    return int(fill)


def dropout_mask_fill(op: CoarseDropout, multiclass: bool) -> int | None:
    """What :class:`CoarseDropout` writes into the mask's holes: nothing (``None``) for
    ``mask="keep"``, the ignore index for ``mask="ignore"``.

    Raises:
        ConfigError: ``mask="ignore"`` on a binary dataset, whose masks have no ignore value.
    """
    from segkit.contracts import IGNORE_INDEX

    if op.mask == "keep":
        return None
    if not multiclass:
        raise _error(
            op,
            "mask='ignore' needs a K-class dataset (binary masks hold only 0 and 1, with no "
            "ignore value); use mask='keep'",
        )
    return IGNORE_INDEX


@dataclass(frozen=True)
class VerticalFlip(Op):
    """Mirror top-bottom."""

    p: float = 0.5
    geometric: ClassVar[bool] = True


@dataclass(frozen=True)
class RandomRotate90(Op):
    """Rotate by k x 90 degrees, k uniform in {0, 1, 2, 3} (a non-square image swaps its
    height and width). Exact: no resampling."""

    geometric: ClassVar[bool] = True


@dataclass(frozen=True)
class Affine(Op):
    """Scale, rotate and shift about the image centre, one draw for image and mask: a
    scale per axis, each uniform in ``scale`` (albumentations' ``keep_ratio=False``), a
    rotation uniform in ``rotate`` (degrees, counter-clockwise), a shift per axis uniform
    in ``translate_percent`` (fractions of the width and height).
    The output keeps the input's size; images are resampled bilinearly, masks with
    nearest neighbour, and pixels from outside follow ``border_mode``."""

    scale: tuple[float, float] = (1.0, 1.0)
    rotate: tuple[float, float] = (0.0, 0.0)
    translate_percent: tuple[float, float] = (0.0, 0.0)
    border_mode: str = "constant"
    fill: float = 0.0
    fill_mask: int | None = None
    p: float = 0.5
    geometric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range(self, "scale", 0.01, 100.0)
        _check_range(self, "rotate", -360.0, 360.0)
        _check_range(self, "translate_percent", -1.0, 1.0)
        _check_border(self)


@dataclass(frozen=True)
class RandomCrop(Op):
    """A ``size`` x ``size`` window at a uniform position, at the image's own resolution.
    An image smaller than ``size`` on a side is first padded on that side, centred, with
    ``fill`` and ``fill_mask``: batches of one shape from images of any size."""

    size: int = 256
    fill: float = 0.0
    fill_mask: int | None = None
    geometric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_size(self, "size")
        _check_border(self)

    @property
    def border_mode(self) -> str:
        return "constant"


@dataclass(frozen=True)
class PadIfNeeded(Op):
    """Pad to at least ``size`` x ``size`` (``size=None``: no minimum) and, with ``divisor``,
    up to the next multiple of it; centred (an odd extra pixel goes to the bottom and
    right). Images already large enough are untouched."""

    size: int | None = 256
    divisor: int | None = None
    border_mode: str = "constant"
    fill: float = 0.0
    fill_mask: int | None = None
    geometric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size is None and self.divisor is None:
            raise _error(self, "give size, divisor or both")
        if self.size is not None:
            _check_size(self, "size")
        if self.divisor is not None:
            _check_size(self, "divisor")
        _check_border(self)


@dataclass(frozen=True)
class ElasticTransform(Op):
    """Elastic deformation (Simard et al. 2003, the UNet paper's key augmentation): a
    random displacement field, Gaussian noise smoothed by a Gaussian of ``sigma`` pixels
    and scaled by ``alpha``, moves image and mask together (bilinear and nearest)."""

    alpha: float = 1.0
    sigma: float = 50.0
    border_mode: str = "constant"
    fill: float = 0.0
    fill_mask: int | None = None
    p: float = 0.5
    geometric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha >= 0:
            raise _error(self, f"alpha={self.alpha}: expected 0 or more")
        if not self.sigma > 0:
            raise _error(self, f"sigma={self.sigma}: expected a positive number of pixels")
        _check_border(self)


@dataclass(frozen=True)
class GaussNoise(Op):
    """Add Gaussian noise of standard deviation uniform in ``std_range`` and mean uniform
    in ``mean_range``, both fractions of 255; per channel, or one noise for all three."""

    std_range: tuple[float, float] = (0.2, 0.44)
    mean_range: tuple[float, float] = (0.0, 0.0)
    per_channel: bool = True
    p: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range(self, "std_range", 0.0, 1.0)
        _check_range(self, "mean_range", -1.0, 1.0)


@dataclass(frozen=True)
class GaussianBlur(Op):
    """Blur with a Gaussian of sigma uniform in ``sigma_limit``, as albumentations 2.0.8.

    The kernel width is an integer uniform in ``blur_limit`` (both ends included), made
    odd by adding 1 to an even draw (so the lower bound is half as likely as each other
    odd width); with ``blur_limit=(0, 0)`` it follows the sigma: ``int(sigma * 3.5) * 2
    + 1`` (PIL's rule). The border is reflected without repeating the edge pixel
    (OpenCV's ``BORDER_REFLECT_101``)."""

    blur_limit: tuple[int, int] = (0, 0)
    sigma_limit: tuple[float, float] = (0.5, 3.0)
    p: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range(self, "blur_limit", 0, 255)
        _check_range(self, "sigma_limit", 0.0, 100.0)
        lo, hi = self.blur_limit
        if (lo, hi) != (0, 0) and (lo < 3 or lo % 2 == 0 or hi % 2 == 0):
            raise _error(
                self, f"blur_limit={self.blur_limit!r}: expected odd widths of 3 or more, or (0, 0)"
            )
        if self.sigma_limit[0] <= 0:
            raise _error(self, f"sigma_limit={self.sigma_limit!r}: expected positive sigmas")


@dataclass(frozen=True)
class HueSaturationValue(Op):
    """Shift hue, saturation and value in OpenCV's 8-bit HSV (hue 0-179, the others
    0-255) by amounts uniform in the three limits, as albumentations does."""

    hue_shift_limit: tuple[float, float] = (-20.0, 20.0)
    sat_shift_limit: tuple[float, float] = (-30.0, 30.0)
    val_shift_limit: tuple[float, float] = (-20.0, 20.0)
    p: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range(self, "hue_shift_limit", -180.0, 180.0)
        _check_range(self, "sat_shift_limit", -255.0, 255.0)
        _check_range(self, "val_shift_limit", -255.0, 255.0)


@dataclass(frozen=True)
class CoarseDropout(Op):
    """Cut ``num_holes_range`` rectangles out of the image (filled with ``fill``), each
    ``hole_height_range`` x ``hole_width_range`` fractions of the image's height and width,
    at uniform positions. ``mask="keep"`` leaves the mask alone (the model must infer the
    hidden part); ``mask="ignore"`` sets the holes to the ignore index (K-class data only),
    so they are not scored."""

    num_holes_range: tuple[int, int] = (1, 2)
    hole_height_range: tuple[float, float] = (0.1, 0.2)
    hole_width_range: tuple[float, float] = (0.1, 0.2)
    fill: float = 0.0
    mask: str = "keep"
    p: float = 0.5
    geometric: ClassVar[bool] = True  # it may write the mask: one draw for both

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range(self, "num_holes_range", 1, 1000)
        for name in ("hole_height_range", "hole_width_range"):
            _check_range(self, name, 0.0, 1.0)
            if getattr(self, name)[1] >= 1.0:  # albumentations reads 1.0 and up as pixels
                raise _error(self, f"{name}={getattr(self, name)!r}: expected fractions below 1")
        if not 0 <= self.fill <= 255:
            raise _error(self, f"fill={self.fill}: expected an image value in [0, 255]")
        if self.mask not in ("keep", "ignore"):
            raise _error(self, f"mask={self.mask!r}: expected 'keep' or 'ignore'")


def _check_size(op: Op, name: str) -> None:
    value = getattr(op, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(op, f"{name}={value!r}: expected a positive whole number of pixels")


class AlbumentationsCompose(Op):
    """Any ``albumentations.Compose``, run as one op by the albumentations loader only.

    ``transform`` is the Compose itself, a dict from ``A.to_dict``, or the path of a file
    ``A.save`` wrote (JSON or YAML). It is kept serialized, so a run folder records it and
    ``evaluate``, ``predict`` and ``--resume`` rebuild it without the file. The transform
    gets uint8 HWC images and the mask, and must leave them so: segkit's own Normalize
    still ends the recipe (a Compose holding ``Normalize`` or ``ToTensorV2`` is refused).
    """

    geometric: ClassVar[bool] = True

    def __init__(self, transform: Any, p: float = 1.0) -> None:
        self.transform = _serialized_compose(transform)
        self.p = p
        Op.__post_init__(self)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__:
            raise AttributeError(f"AlbumentationsCompose.{name} is read-only")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AlbumentationsCompose) and (self.transform, self.p) == (
            other.transform,
            other.p,
        )

    def __hash__(self) -> int:
        return hash(("AlbumentationsCompose", self.p, repr(self.transform)))

    def __repr__(self) -> str:
        names = [t.get("__class_fullname__", "?") for t in _compose_items(self.transform)]
        return f"AlbumentationsCompose([{', '.join(names)}], p={self.p})"

    def params(self) -> dict[str, Any]:
        return {"transform": self.transform, "p": self.p}

    def compose(self) -> Any:
        """The live ``albumentations.Compose``."""
        import albumentations as A

        return A.from_dict(self.transform)


def _compose_items(spec: dict[str, Any]) -> list[dict[str, Any]]:
    inner = spec.get("transform", spec)
    return list(inner.get("transforms", [])) if isinstance(inner, dict) else []


def _serialized_compose(transform: Any) -> dict[str, Any]:
    from segkit.errors import ConfigError

    if isinstance(transform, str | Path):
        path = Path(transform)
        if not path.is_file():
            raise ConfigError(
                f"AlbumentationsCompose: {path} does not exist; expected a file written by "
                "albumentations.save(compose, path) (JSON or YAML)"
            )
        text = path.read_text()
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                spec = yaml.safe_load(text)
            else:
                spec = json.loads(text)
        except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
            raise ConfigError(f"AlbumentationsCompose: {path} does not parse: {e}") from None
        source = str(path)
    elif isinstance(transform, dict):
        spec, source = transform, "the dict given"
    else:
        try:
            import albumentations as A

            spec = A.to_dict(transform)
        except Exception as e:
            raise ConfigError(
                f"AlbumentationsCompose: cannot serialize {type(transform).__name__} "
                f"({e}); pass an albumentations.Compose, its A.to_dict() or a saved file"
            ) from None
        source = f"the {type(transform).__name__} given"
    if not isinstance(spec, dict) or "transform" not in spec:
        raise ConfigError(
            f"AlbumentationsCompose: {source} is not a serialized albumentations transform "
            "(no 'transform' key); write one with albumentations.save(compose, path)"
        )
    try:
        import albumentations as A

        A.from_dict(spec)
    except Exception as e:
        raise ConfigError(
            f"AlbumentationsCompose: albumentations cannot rebuild {source}: {e}"
        ) from None
    banned = {"Normalize", "ToTensorV2", "ToTensor"}
    found = [
        t.get("__class_fullname__", "")
        for t in _walk_transforms(spec["transform"])
        if t.get("__class_fullname__", "").rsplit(".", 1)[-1] in banned
    ]
    if found:
        raise ConfigError(
            f"AlbumentationsCompose: {source} holds {', '.join(found)}; segkit's own "
            "Normalize ends every recipe and turns images into tensors, so leave them out"
        )
    return spec


def _walk_transforms(t: Any) -> list[dict[str, Any]]:
    if not isinstance(t, dict):
        return []
    out = [t]
    for child in t.get("transforms", []) or []:
        out += _walk_transforms(child)
    return out


#: Every op a loader must know, by class name.
VOCABULARY: dict[str, type[Op]] = {
    cls.__name__: cls
    for cls in (
        HorizontalFlip,
        Resize,
        RandomResizedCrop,
        RandomGamma,
        CLAHE,
        ChannelShuffle,
        RandomBrightnessContrast,
        RandomToneCurve,
        Normalize,
        VerticalFlip,
        RandomRotate90,
        Affine,
        RandomCrop,
        PadIfNeeded,
        ElasticTransform,
        GaussNoise,
        GaussianBlur,
        HueSaturationValue,
        CoarseDropout,
        AlbumentationsCompose,
    )
}

#: Ops that set the output size of every sample (with p=1): the recipe's batch size.
SIZING_OPS: tuple[type[Op], ...] = (Resize, RandomResizedCrop, RandomCrop)

#: Op fields that a recipe file may leave out to mean ``--image-size``.
SIZE_FIELDS: dict[type[Op], str] = {
    Resize: "size",
    RandomResizedCrop: "size",
    RandomCrop: "size",
    PadIfNeeded: "size",
}


@dataclass(frozen=True)
class Recipe:
    """A named pair of op lists: ``train`` for training, ``eval`` for validation and test.

    Both must end with :class:`Normalize`. ``train`` gives every batch one shape through a
    sizing op (:data:`SIZING_OPS`, or an :class:`AlbumentationsCompose` that crops).
    Without ``eval``: a recipe whose last sizing op resizes evaluates resized to that size
    (the lab's way); one that crops at the images' own resolution (:class:`RandomCrop`),
    or has no sizing op, evaluates whole images at their own resolution, with the training
    ``Normalize`` only (:attr:`native_eval`).
    """

    name: str
    train: tuple[Op, ...]
    eval: tuple[Op, ...] = field(default=())

    def __post_init__(self) -> None:
        from segkit.errors import ConfigError

        if not self.eval and self.train and isinstance(self.train[-1], Normalize):
            sizing = [op for op in self.train if isinstance(op, SIZING_OPS)]
            if sizing and not isinstance(sizing[-1], RandomCrop):
                object.__setattr__(self, "eval", (Resize(size=sizing[-1].size), self.train[-1]))
            else:  # crops at the images' own resolution, or no sizing op of ours
                object.__setattr__(self, "eval", (self.train[-1],))
        for stage in ("train", "eval"):
            ops = getattr(self, stage)
            for op in ops:
                if not isinstance(op, Op):
                    raise ConfigError(
                        f"recipe '{self.name}': {stage} holds {op!r}, which is not a "
                        f"segkit.recipes op; use one of {', '.join(VOCABULARY)}"
                    )
            if not ops or not isinstance(ops[-1], Normalize):
                raise ConfigError(f"recipe '{self.name}': {stage} ops must end with Normalize")

    def ops(self, train: bool) -> tuple[Op, ...]:
        """The ops for training (``train=True``) or evaluation."""
        return self.train if train else self.eval

    @property
    def native_eval(self) -> bool:
        """Whether evaluation sees each image at its own size: no eval op sets the size."""
        return not any(isinstance(op, SIZING_OPS) for op in self.eval)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, used in run configs; :meth:`from_dict` reads it back."""
        return {
            "name": self.name,
            **{
                stage: [
                    {"op": type(op).__name__, **op.params()} for op in self.ops(stage == "train")
                ]
                for stage in ("train", "eval")
            },
        }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], *, image_size: int = 256, source: str = "recipe"
    ) -> Recipe:
        """Build a recipe from its description: ``name`` (optional), ``train`` and
        optionally ``eval``, each a list of ``{"op": NAME, **parameters}``.

        Size parameters left out (:data:`SIZE_FIELDS`) are ``image_size``; a stage that
        does not end with Normalize gets the default one.

        Raises:
            ConfigError: naming ``source`` and the key: an unknown key or op (with the close
                names), a parameter of the wrong type or out of range.
        """
        from segkit.errors import ConfigError

        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a table with 'train' (and 'eval') op lists")
        unknown = sorted(set(d) - {"name", "train", "eval"})
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(_with_close(k, ['name', 'train', 'eval']) for k in unknown)}; "
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


def _with_close(key: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, names, n=2, cutoff=0.5)
    return f"{key!r}" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else "")


def op_from_dict(entry: Any, *, image_size: int = 256, where: str = "op") -> Op:
    """One op from ``{"op": NAME, **parameters}`` (a recipe file's table), type-checked.

    Raises:
        ConfigError: naming ``where`` and the key that is wrong.
    """
    import typing

    from segkit.errors import ConfigError

    if not isinstance(entry, dict) or "op" not in entry:
        raise ConfigError(f"{where}: expected a table with an 'op' key, got {entry!r}")
    name = entry["op"]
    cls = VOCABULARY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(
            f"{where}: unknown op {_with_close(str(name), list(VOCABULARY))}; the ops are "
            f"{', '.join(VOCABULARY)}"
        )
    given = {k: v for k, v in entry.items() if k != "op"}
    if cls is AlbumentationsCompose:
        allowed = ["transform", "p"]
        hints = typing.get_type_hints(Op)
    else:
        allowed = [f.name for f in fields(cls)]
        hints = typing.get_type_hints(cls)
    bad = [k for k in given if k not in allowed]
    if bad:
        raise ConfigError(
            f"{where} ({name}): unknown parameter {_with_close(bad[0], allowed)}; "
            f"{name} takes {', '.join(allowed)}"
        )
    if cls in SIZE_FIELDS and SIZE_FIELDS[cls] not in given:
        given[SIZE_FIELDS[cls]] = image_size
    values: dict[str, Any] = {}
    for key, value in given.items():
        if key == "transform":
            values[key] = value
            continue
        values[key] = _coerce(value, hints[key], f"{where} ({name}): {key}")
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from TOML, YAML or JSON) as the type ``hint`` of an op field."""
    import types
    import typing

    from segkit.errors import ConfigError

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{where}={value!r}: expected a list of {len(args)} numbers")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"{where}={value!r}: expected a whole number")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}={value!r}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r}: expected a string")
        return value
    return value


#: Suffixes :func:`load_recipe` reads.
RECIPE_FILE_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def is_recipe_file(name: str) -> bool:
    """Whether ``--recipe NAME`` names a file rather than a registered recipe."""
    return name.lower().endswith(RECIPE_FILE_SUFFIXES)


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The description in a recipe file (TOML, YAML or JSON by its suffix).

    Raises:
        ConfigError: the file is missing or does not parse; the message names it.
    """
    from segkit.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"recipe file {path} does not exist; --recipe takes a recipe name "
            "(segkit list recipes) or a .toml, .yaml or .json file"
        )
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError, JSONDecodeError
        raise ConfigError(f"recipe file {path} does not parse: {e}") from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
        _inline_composes(data, path)
    return data


def _inline_composes(data: dict[str, Any], path: Path) -> None:
    """Replace each AlbumentationsCompose's file (relative to the recipe file) by its
    contents, so that a run records the transform itself, not a path."""
    for stage in ("train", "eval"):
        entries = data.get(stage)
        for entry in entries if isinstance(entries, list) else []:
            if not (isinstance(entry, dict) and entry.get("op") == "AlbumentationsCompose"):
                continue
            transform = entry.get("transform")
            if isinstance(transform, str):
                file = Path(transform)
                entry["transform"] = _serialized_compose(
                    file if file.is_absolute() else path.parent / file
                )


def load_recipe(path: str | Path, image_size: int = 256) -> Recipe:
    """The :class:`Recipe` a file describes (see :meth:`Recipe.from_dict`)."""
    return Recipe.from_dict(read_recipe_file(path), image_size=image_size, source=str(path))


def eval_ops(image_size: int) -> tuple[Op, ...]:
    """The evaluation pipeline every built-in recipe uses: resize, then normalize."""
    return (Resize(size=image_size), Normalize())
