"""The augmentation vocabulary: segkit's backend-neutral ops.

A recipe is data. Each op below is a frozen dataclass holding its parameters and the
probability ``p`` with which it fires; a loader compiles the ops into its own backend
(albumentations on CPU workers, a DALI graph on the GPU) and raises
:class:`segkit.errors.ConfigError` naming any op it cannot do. Every loader compiles every
op of :data:`VOCABULARY`; a plugin may add ops of its own, which name the loaders that run
them (:attr:`Op.loaders`, and :mod:`segkit.recipes.lookup`).

Rules every backend follows:

* Geometric ops (``geometric = True``) move image and mask together with one random
  draw; masks are resampled with nearest neighbour and stay exactly 0/1.
* Photometric ops touch the image only.
* Ops run in the order given. Parameters follow albumentations' conventions (the lab
  this toolkit reproduces was written with it), e.g. ``RandomGamma(gamma_limit=(80, 120))``
  means gamma in [0.8, 1.2].
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from segkit.contracts import IGNORE_INDEX
from segkit.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Op:
    """Base of every op. ``p`` is the probability that the op is applied to a sample.

    A plugin's op subclasses it too (and is registered in the ``segkit.ops`` entry-point
    group under its class name); besides its parameters it declares :attr:`loaders`, and
    overrides :meth:`parameter_types` and :meth:`params` if it is not a dataclass.
    """

    p: float = 1.0
    geometric: ClassVar[bool] = False
    #: The loaders that run this op: ``None`` for every loader (segkit's own ops, which
    #: every loader compiles); a plugin's op names the loaders that know it.
    loaders: ClassVar[tuple[str, ...] | None] = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"{type(self).__name__}: p={self.p} is not in [0, 1]")

    def params(self) -> dict[str, Any]:
        """The op's parameters as a plain dict (for configs and reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def parameter_types(cls) -> dict[str, Any]:
        """Parameter name -> type, for every parameter a recipe file may set: a value read
        from a file is checked and converted to its type (``Any``: taken as it is)."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in fields(cls)}

    @classmethod
    def file_parameters(cls, params: dict[str, Any], folder: Path) -> dict[str, Any]:
        """The parameters of this op as a recipe file in ``folder`` gives them, made
        independent of the file: an op that reads other files resolves their paths against
        ``folder`` and may replace them by their contents, so that a run records what it
        ran. The default returns ``params`` as they are.
        """
        return params


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


def _error(op: Op, message: str) -> ConfigError:
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
    ``fill`` and ``fill_mask``: batches of one shape from images of any size.

    ``foreground``: the share of windows centred on a foreground pixel instead (a class
    drawn among those the mask holds, then one of its pixels; masks without foreground
    get a uniform window), for sparse structures (nnU-Net's 0.33; :mod:`segkit.recipes.
    foreground`). Such a crop must be the first geometric op of a recipe's train ops: it
    finds the foreground on the mask as read."""

    size: int = 256
    fill: float = 0.0
    fill_mask: int | None = None
    foreground: float = 0.0
    geometric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_size(self, "size")
        _check_border(self)
        if isinstance(self.foreground, bool) or not 0.0 <= self.foreground <= 1.0:
            raise _error(
                self,
                f"foreground={self.foreground!r}: expected the share of crops centred on the "
                "foreground, in [0, 1] (nnU-Net uses 0.33)",
            )

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


#: segkit's own ops by class name: every loader compiles each of them.
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
