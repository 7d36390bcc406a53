"""Recipe ops compiled into albumentations transforms: one table, op class -> compiler.

Each compiler takes the op and whether the masks are class maps (``multiclass``, which
picks the mask fill of geometric ops: :func:`segkit.recipes.mask_fill`) and returns the
transforms that do it, in order (usually one; ``PadIfNeeded`` with a size and a divisor
takes two).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# The package's __init__ (imported first, as a submodule's parent) sets
# NO_ALBUMENTATIONS_UPDATE before this import, so albumentations asks no package index.
import albumentations as A
import cv2

from segkit import recipes as R
from segkit.config import named
from segkit.errors import ConfigError
from segkit.recipes import foreground as fg
from segkit_albumentations.compose import AlbumentationsCompose

#: (op, multiclass) -> the albumentations transforms that run it.
Compiler = Callable[[Any, bool], list[Any]]

#: segkit border modes -> OpenCV's. "reflect" is BORDER_REFLECT_101 (the edge pixel is
#: not repeated).
BORDER = {
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT_101,
}


def _affine(op: R.Affine, multiclass: bool) -> list[Any]:
    return [
        A.Affine(
            scale=op.scale,
            rotate=op.rotate,
            translate_percent=op.translate_percent,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=BORDER[op.border_mode],
            fill=op.fill,
            fill_mask=R.mask_fill(op, multiclass),
            p=op.p,
        )
    ]


class ForegroundCrop(A.RandomCrop):
    """``A.RandomCrop`` (padded centred where needed) whose window is, with probability
    ``foreground``, centred on a foreground pixel of the mask in hand instead
    (:mod:`segkit.recipes.foreground`: the same points and arithmetic as the DALI loader).
    It draws three numbers more than ``A.RandomCrop``: whether, the class, the pixel."""

    def __init__(self, foreground: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.foreground = foreground

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        out = super().get_params_dependent_on_data(params, data)
        fire, u_class, u_point = (self.py_random.random() for _ in range(3))
        mask = data.get("mask")
        if fire >= self.foreground or mask is None:
            return out
        centre = fg.pick_centre(fg.foreground_points(mask), u_class, u_point)
        if centre is None:  # no foreground: the uniform window
            return out
        pad = out["pad_params"] or {}
        top, left = pad.get("pad_top", 0), pad.get("pad_left", 0)
        h, w = params["shape"][:2]
        rows = h + top + pad.get("pad_bottom", 0)
        cols = w + left + pad.get("pad_right", 0)
        y0 = fg.centred_start(centre[0], top, rows, self.height)
        x0 = fg.centred_start(centre[1], left, cols, self.width)
        return {**out, "crop_coords": (x0, y0, x0 + self.width, y0 + self.height)}


def _random_crop(op: R.RandomCrop, multiclass: bool) -> list[Any]:
    crop = dict(
        height=op.size,
        width=op.size,
        pad_if_needed=True,
        pad_position="center",
        border_mode=cv2.BORDER_CONSTANT,
        fill=op.fill,
        fill_mask=R.mask_fill(op, multiclass),
        p=op.p,
    )
    if op.foreground > 0:
        return [ForegroundCrop(op.foreground, **crop)]
    return [A.RandomCrop(**crop)]


def _pad_if_needed(op: R.PadIfNeeded, multiclass: bool) -> list[Any]:
    # albumentations takes a minimum size or a divisor per transform, not both: the
    # minimum first, then the multiple of the padded size.
    pad = {
        "position": "center",
        "border_mode": BORDER[op.border_mode],
        "fill": op.fill,
        "fill_mask": R.mask_fill(op, multiclass),
        "p": op.p,
    }
    out = []
    if op.size is not None:
        out.append(A.PadIfNeeded(min_height=op.size, min_width=op.size, **pad))
    if op.divisor is not None:
        out.append(
            A.PadIfNeeded(
                min_height=None,
                min_width=None,
                pad_height_divisor=op.divisor,
                pad_width_divisor=op.divisor,
                **pad,
            )
        )
    return out


def _elastic(op: R.ElasticTransform, multiclass: bool) -> list[Any]:
    return [
        A.ElasticTransform(
            alpha=op.alpha,
            sigma=op.sigma,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=BORDER[op.border_mode],
            fill=op.fill,
            fill_mask=R.mask_fill(op, multiclass),
            p=op.p,
        )
    ]


def _coarse_dropout(op: R.CoarseDropout, multiclass: bool) -> list[Any]:
    return [
        A.CoarseDropout(
            num_holes_range=op.num_holes_range,
            hole_height_range=op.hole_height_range,
            hole_width_range=op.hole_width_range,
            fill=op.fill,
            fill_mask=R.dropout_mask_fill(op, multiclass),
            p=op.p,
        )
    ]


def _compose(op: AlbumentationsCompose, multiclass: bool) -> list[Any]:
    inner = op.compose()
    inner.p = op.p
    return [inner]


#: Recipe op class -> its compiler: segkit's vocabulary and this plugin's own op.
COMPILERS: dict[type[R.Op], Compiler] = {
    # geometric
    R.HorizontalFlip: lambda op, mc: [A.HorizontalFlip(p=op.p)],
    R.VerticalFlip: lambda op, mc: [A.VerticalFlip(p=op.p)],
    R.RandomRotate90: lambda op, mc: [A.RandomRotate90(p=op.p)],
    R.Resize: lambda op, mc: [A.Resize(op.size, op.size, p=op.p)],
    R.RandomResizedCrop: lambda op, mc: [
        A.RandomResizedCrop(size=(op.size, op.size), scale=op.scale, ratio=op.ratio, p=op.p)
    ],
    R.Affine: _affine,
    R.RandomCrop: _random_crop,
    R.PadIfNeeded: _pad_if_needed,
    R.ElasticTransform: _elastic,
    R.CoarseDropout: _coarse_dropout,
    # photometric
    R.RandomGamma: lambda op, mc: [A.RandomGamma(gamma_limit=op.gamma_limit, p=op.p)],
    R.CLAHE: lambda op, mc: [
        A.CLAHE(clip_limit=op.clip_limit, tile_grid_size=op.tile_grid_size, p=op.p)
    ],
    R.ChannelShuffle: lambda op, mc: [A.ChannelShuffle(p=op.p)],
    R.RandomBrightnessContrast: lambda op, mc: [
        A.RandomBrightnessContrast(
            brightness_limit=op.brightness_limit, contrast_limit=op.contrast_limit, p=op.p
        )
    ],
    R.RandomToneCurve: lambda op, mc: [A.RandomToneCurve(scale=op.scale, p=op.p)],
    R.GaussNoise: lambda op, mc: [
        A.GaussNoise(
            std_range=op.std_range, mean_range=op.mean_range, per_channel=op.per_channel, p=op.p
        )
    ],
    R.GaussianBlur: lambda op, mc: [
        A.GaussianBlur(blur_limit=op.blur_limit, sigma_limit=op.sigma_limit, p=op.p)
    ],
    R.HueSaturationValue: lambda op, mc: [
        A.HueSaturationValue(
            hue_shift_limit=op.hue_shift_limit,
            sat_shift_limit=op.sat_shift_limit,
            val_shift_limit=op.val_shift_limit,
            p=op.p,
        )
    ],
    R.Normalize: lambda op, mc: [
        A.Normalize(mean=op.mean, std=op.std, max_pixel_value=255.0, p=op.p)
    ],
    # this plugin's own op (segkit.ops entry point)
    AlbumentationsCompose: _compose,
}


def compiler(op: R.Op) -> Compiler:
    """The compiler of ``op``: its class's, or the nearest base class's that has one (a
    subclass of an op runs as that op).

    Raises:
        ConfigError: an op this loader does not know, in one line naming the loaders that
            run it if it declares them.
    """
    for cls in type(op).__mro__:
        found = COMPILERS.get(cls)
        if found is not None:
            return found
    if op.loaders:
        raise ConfigError(
            f"the albumentations loader cannot run {op!r}: {type(op).__name__} is a plugin's "
            f"op that runs on the {' or '.join(op.loaders)} loader; use "
            f"{named('loader', op.loaders[0], as_typed=True)}, or segkit.recipes ops"
        )
    raise ConfigError(
        f"the albumentations loader cannot compile op {type(op).__name__}; "
        f"it supports {', '.join(c.__name__ for c in COMPILERS)}"
    )


def compile_ops(ops: Sequence[R.Op], *, multiclass: bool = False) -> Any:
    """Translate recipe ops into an ``albumentations.Compose``.

    ``multiclass`` picks the mask fill of geometric ops (:func:`segkit.recipes.mask_fill`):
    0 for binary masks, the ignore index for class maps.

    Raises:
        ConfigError: an op this backend does not know, or a mask fill the masks cannot hold.
    """
    out: list[Any] = []
    for op in ops:
        out += compiler(op)(op, multiclass)
    return A.Compose(out)
