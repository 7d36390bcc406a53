"""The geometric ops (image and mask together), compiled into the DALI graph.

Each entry of :data:`COMPILERS` maps a :mod:`segkit.recipes` op class to a function
``(op, context) -> DaliOp`` (see :mod:`segkit_dali._base` for the ``DaliOp`` contract:
parameters drawn in Python per ``(seed, epoch, index)``, one draw for image and mask).

The lab's ops: ``HorizontalFlip`` (``fn.flip``, exact), ``Resize`` and
``RandomResizedCrop`` (``fn.slice`` then ``fn.resize``; the crop window is albumentations'
algorithm, :func:`crop_windows`). The ops for real datasets follow; every one of them
reproduces albumentations 2.0.8 (what the ``albumentations`` loader runs)
given the same parameters, and draws its parameters from the same distributions as
albumentations does (from numpy's generator, so not the same numbers):

* ``VerticalFlip``, ``RandomRotate90`` (``fn.transpose`` + ``fn.flip``), ``RandomCrop`` and
  ``PadIfNeeded`` with a constant border (``fn.slice`` with ``out_of_bounds_policy="pad"``)
  and ``CoarseDropout`` (``fn.erase``) only move or set pixels: bit-identical.
* ``Affine`` and ``PadIfNeeded`` with a replicated or reflected border use
  ``fn.experimental.warp_perspective`` with ``pixel_origin="center"`` (OpenCV's pixel
  convention) and the 3x3 inverse of albumentations' matrix: on the CPU it computes what
  ``cv2.warpAffine`` / ``cv2.copyMakeBorder`` compute, every border mode included.
  ``fn.warp_affine`` was measured and not used: it places pixel centres at +0.5 (a
  conversion of the matrix fixes that) but was still one level off on 0.03 % of pixels,
  and it has no reflected border.
* ``ElasticTransform`` needs ``fn.experimental.remap``, which DALI has only on the GPU:
  the CPU graph refuses it when the recipe is compiled. Its displacement field is
  albumentations' own computation, made per batch in the feed (:class:`ElasticMaps`).

OpenCV rounds a fractional fill to the nearest integer (half to even); ``fn.slice`` and
``fn.erase`` truncate, so fills are rounded here first. albumentations' CoarseDropout
writes its fill with ``np.array(fill, dtype=uint8)``, which truncates: so does ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types

from segkit import recipes as R
from segkit.config import named
from segkit.errors import ConfigError
from segkit.recipes import foreground as fg
from segkit_dali._base import (
    CompileContext,
    Compiler,
    DaliOp,
    Param,
    Params,
    PerBatch,
    Rows,
    Shape,
    Shapes,
    uniform,
)

# ----------------------------------------------------------------- the lab's ops


def resize_both(image: Any, mask: Any, size: list[int], antialias: bool) -> tuple[Any, Any]:
    """Resample image (linear) and mask (nearest, never antialiased) to ``size``.

    Antialiasing a mask averages labels into new values (DALI #5507); nearest neighbour
    keeps it exactly 0/1.
    """
    image = fn.resize(image, size=size, interp_type=types.INTERP_LINEAR, antialias=antialias)
    mask = fn.resize(mask, size=size, interp_type=types.INTERP_NN, antialias=False)
    return image, mask


class HorizontalFlip(DaliOp):
    geometric = True
    channel_uniform = True

    def __init__(self, op: R.Op) -> None:
        super().__init__(op)
        # No conditional: fn.flip takes the per-sample flag itself, and image and mask
        # read the same flag node.
        self.always = True
        self.params = () if op.p >= 1.0 else (Param("flip", np.int32),)

    def draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes
    ) -> tuple[Params, Shapes]:
        if not self.params:
            return {}, shapes
        return {"flip": (uniform(rng, n, rows) < self.op.p).astype(np.int32)}, shapes

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        flag = p.get("flip", 1)
        return (
            fn.flip(image, horizontal=flag, vertical=0),
            fn.flip(mask, horizontal=flag, vertical=0),
        )


class Resize(DaliOp):
    """Resize to ``size`` x ``size``; skipped for samples already that size (after a
    RandomResizedCrop), as albumentations skips them: a resampling to the same size is
    the identity, bit for bit (linear, with or without antialiasing, and nearest), but
    costs ~1.7 ms per 256 px image on the CPU.

    The skip is a per-sample branch, and a graph with one needs DALI's conditional
    execution, whose AutoGraph conversion costs ~0.7 s a process on a 2-core machine.
    In an evaluation pipeline where no earlier op may change a size (:meth:`resample_all`:
    no crop, pad, resize or 90-degree rotation before it, as in every evaluation recipe),
    the op resizes every sample and the graph has no branch for it."""

    keeps_size = False

    geometric = True
    channel_uniform = True

    def __init__(self, op: R.Resize, antialias: bool) -> None:
        super().__init__(op)
        self.always = False
        self.params = (Param("apply", np.bool_),)
        self.size = (op.size, op.size)
        self.antialias = antialias

    def resample_all(self) -> None:
        """Resize every sample, without the same-size skip and its branch (``p`` 1 only:
        a random Resize keeps its branch). The result is the same: see the class."""
        if self.op.p >= 1.0:
            self.always = True
            self.params = ()

    def draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes
    ) -> tuple[Params, Shapes]:
        if not self.params:  # resample_all
            return {}, np.broadcast_to(np.asarray(self.size), shapes.shape).copy()
        fire = (
            np.ones(len(rows), np.bool_) if self.op.p >= 1.0 else uniform(rng, n, rows) < self.op.p
        )
        fire &= (shapes != np.asarray(self.size)).any(1)
        return {"apply": fire}, np.where(fire[:, None], np.asarray(self.size), shapes)

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        return resize_both(image, mask, list(self.size), self.antialias)


class RandomResizedCrop(DaliOp):
    keeps_size = False
    geometric = True
    channel_uniform = True

    def __init__(self, op: R.RandomResizedCrop, antialias: bool) -> None:
        super().__init__(op)
        self.params = (*self.params, Param("start", np.int32, (2,)), Param("end", np.int32, (2,)))
        self.size = (op.size, op.size)
        self.antialias = antialias

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        window = crop_windows(
            uniform(rng, n, rows, 10, 2),
            uniform(rng, n, rows, 2),
            shapes,
            self.op.scale,
            self.op.ratio,
        )
        # Samples it does not fire for keep the whole image (never read: not applied).
        window = np.where(fire[:, None], window, np.concatenate([0 * shapes, shapes], 1))
        window = window.astype(np.int32)
        return {"start": window[:, :2], "end": window[:, 2:]}, np.broadcast_to(
            np.asarray(self.size), shapes.shape
        )

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        # Crop, then resize the crop: one window (the same two nodes) for image and mask.
        # fn.resize's roi_start/roi_end would save the copy but samples pixels outside
        # the window at its edges (up to 30 levels off albumentations' crop-then-resize
        # on the outermost rows); the slice makes the edges exact.
        image = fn.slice(image, start=p["start"], end=p["end"], axis_names="HW")
        mask = fn.slice(mask, start=p["start"], end=p["end"], axis_names="HW")
        return resize_both(image, mask, list(self.size), self.antialias)


def crop_window(
    rng: np.random.Generator,
    shape: Shape,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[int, int, int, int]:
    """One RandomResizedCrop window ``(y0, x0, y1, x1)`` in pixels (see :func:`crop_windows`)."""
    tries, position = rng.random((1, 10, 2)), rng.random((1, 2))
    window = crop_windows(tries, position, np.array([shape]), scale, ratio)[0]
    return tuple(int(v) for v in window)  # type: ignore[return-value]


def crop_windows(
    tries: np.ndarray,
    position: np.ndarray,
    shapes: Shapes,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> np.ndarray:
    """RandomResizedCrop windows ``(y0, x0, y1, x1)`` in pixels, one row per sample.

    The algorithm is albumentations 2.0's (``RandomResizedCrop.get_params_dependent_on_data``),
    itself torchvision's: ten tries at an area in ``scale`` and a log-uniform aspect ratio
    in ``ratio``, the first that fits is placed uniformly; failing those, a centre crop
    with the ratio clamped into ``ratio``. Vectorized: ``tries`` (m, 10, 2) holds each
    sample's ten pairs of ``U[0, 1)`` (area, log ratio), ``position`` (m, 2) the two
    ``U[0, 1)`` of the window's place, ``shapes`` (m, 2) the ``(height, width)``.
    """
    height = shapes[:, 0:1].astype(np.float64)  # (m, 1): broadcast against the tries
    width = shapes[:, 1:2].astype(np.float64)
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * tries[..., 0])
    aspect = np.exp(log_lo + (log_hi - log_lo) * tries[..., 1])
    w = np.rint(np.sqrt(target * aspect))  # rint and round() both round half to even
    h = np.rint(np.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(1)  # the first try that fits (0 if none does)
    pick = np.arange(len(shapes))
    w, h = w[pick, first], h[pick, first]
    height, width = height[:, 0], width[:, 0]
    y0 = np.floor((height - h + 1) * position[:, 0])
    x0 = np.floor((width - w + 1) * position[:, 1])
    # The fallback: a centre crop, the ratio clamped into `ratio`.
    in_ratio = width / height
    narrow, wide = in_ratio < ratio[0], in_ratio > ratio[1]
    cw = np.where(wide, np.rint(height * ratio[1]), width)
    ch = np.where(narrow, np.rint(width / ratio[0]), height)
    found = fits.any(1)
    w, h = np.where(found, w, cw), np.where(found, h, ch)
    y0 = np.where(found, y0, (height - ch) // 2)
    x0 = np.where(found, x0, (width - cw) // 2)
    return np.stack([y0, x0, y0 + h, x0 + w], 1).astype(np.int64)


# ------------------------------------------------------------ ops for real datasets


#: segkit border modes -> DALI's (``fn.experimental.warp_perspective``'s) names. "reflect"
#: is OpenCV's BORDER_REFLECT_101 (the edge pixel is not repeated).
WARP_BORDER = {"constant": "constant", "replicate": "replicate", "reflect": "reflect_101"}


def opencv_fill(value: float) -> float:
    """The uint8 value OpenCV writes for a fill of ``value``: ``saturate_cast<uchar>``
    rounds to nearest, half to even (``np.rint``)."""
    return float(np.clip(np.rint(value), 0, 255))


def _lerp(bounds: tuple[float, float], u: np.ndarray) -> np.ndarray:
    lo, hi = (float(b) for b in bounds)
    return lo + (hi - lo) * u


# ---------------------------------------------------------------------------- flips


class VerticalFlip(HorizontalFlip):
    """``fn.flip(vertical=flag)`` on image and mask, one per-sample flag (no conditional),
    drawn as HorizontalFlip's."""

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        flag = p.get("flip", 1)
        return (
            fn.flip(image, horizontal=0, vertical=flag),
            fn.flip(mask, horizontal=0, vertical=flag),
        )


def rot90_steps(k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.rot90(x, k)`` (counter-clockwise, albumentations' ``RandomRotate90``) as a
    transpose of H and W (odd k) followed by flips: ``(transpose, horizontal, vertical)``.

    k=1: ``rot90(x) == x.swapaxes(0, 1)[::-1]``; k=2: both flips; k=3:
    ``x.swapaxes(0, 1)[:, ::-1]``.
    """
    k = np.asarray(k) % 4
    transpose = k % 2 == 1
    horizontal = (k == 2) | (k == 3)
    vertical = (k == 1) | (k == 2)
    return transpose, horizontal.astype(np.int32), vertical.astype(np.int32)


class RandomRotate90(DaliOp):
    """k x 90 degrees counter-clockwise, k uniform in {0, 1, 2, 3} (0 where the op does
    not fire): a transpose (odd k, under a conditional) then ``fn.flip`` with per-sample
    flags. No resampling: bit-identical to ``np.rot90``. Odd k swap height and width."""

    keeps_size = False

    geometric = True
    channel_uniform = True

    def __init__(self, op: R.RandomRotate90) -> None:
        super().__init__(op)
        self.params = (
            Param("transpose", np.bool_),
            Param("horizontal", np.int32),
            Param("vertical", np.int32),
        )

    def draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes
    ) -> tuple[Params, Shapes]:
        m = len(rows)
        fire = np.ones(m, np.bool_) if self.always else uniform(rng, n, rows) < self.op.p
        k = np.minimum(3, np.floor(uniform(rng, n, rows) * 4)).astype(np.int64)
        k = np.where(fire, k, 0)
        transpose, horizontal, vertical = rot90_steps(k)
        params = {"transpose": transpose, "horizontal": horizontal, "vertical": vertical}
        return params, np.where(transpose[:, None], shapes[:, ::-1], shapes)

    def build(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        if p["transpose"]:  # a DALI conditional: only the samples with an odd k
            image = fn.transpose(image, perm=[1, 0, 2], transpose_layout=False)
            mask = fn.transpose(mask, perm=[1, 0, 2], transpose_layout=False)
        image = fn.flip(image, horizontal=p["horizontal"], vertical=p["vertical"])
        mask = fn.flip(mask, horizontal=p["horizontal"], vertical=p["vertical"])
        return image, mask


# --------------------------------------------------------------------------- affine


def affine_matrices(u: np.ndarray, shapes: Shapes, op: R.Affine) -> np.ndarray:
    """Forward (source -> destination) 3x3 matrices in OpenCV pixel coordinates, one per
    sample, as albumentations 2.0.8's ``Affine`` builds them.

    ``u`` (m, 5) holds each sample's ``U[0, 1)`` for, in albumentations' order, the x and
    y shifts, the x and y scales and the angle. The shifts are fractions of the width
    and height truncated to whole pixels (``int(t * width)``); the scales are drawn per
    axis (albumentations' ``keep_ratio=False``); the angle is in degrees,
    counter-clockwise on screen. The matrix is ``C @ T @ R @ S @ C^-1`` about the centre
    ``C = ((W - 1) / 2, (H - 1) / 2)``.
    """
    height = shapes[:, 0].astype(np.float64)
    width = shapes[:, 1].astype(np.float64)
    tx = np.trunc(_lerp(op.translate_percent, u[:, 0]) * width)
    ty = np.trunc(_lerp(op.translate_percent, u[:, 1]) * height)
    sx, sy = _lerp(op.scale, u[:, 2]), _lerp(op.scale, u[:, 3])
    angle = np.deg2rad(_lerp(op.rotate, u[:, 4]) % 360)
    cos, sin = np.cos(angle), np.sin(angle)
    cx, cy = width / 2 - 0.5, height / 2 - 0.5
    m = len(u)
    # T(c + t) @ [R @ S] @ T(-c), written out.
    a, b = cos * sx, sin * sy
    c, d = -sin * sx, cos * sy
    out = np.zeros((m, 3, 3))
    out[:, 0, 0], out[:, 0, 1] = a, b
    out[:, 1, 0], out[:, 1, 1] = c, d
    out[:, 0, 2] = cx + tx - (a * cx + b * cy)
    out[:, 1, 2] = cy + ty - (c * cx + d * cy)
    out[:, 2, 2] = 1.0
    return out


class Affine(DaliOp):
    """Scale, rotate and shift about the centre: ``fn.experimental.warp_perspective`` with
    the per-sample inverse matrix (destination -> source) as an argument input, bilinear
    for the image, nearest for the mask, OpenCV's pixel centres, the op's border mode.
    """

    geometric = True
    channel_uniform = True

    def __init__(self, op: R.Affine, multiclass: bool) -> None:
        super().__init__(op)
        self.params = (*self.params, Param("matrix", np.float32, (3, 3)))
        self.border = WARP_BORDER[op.border_mode]
        self.fill = opencv_fill(op.fill)
        self.mask_fill = float(R.mask_fill(op, multiclass))

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        forward = affine_matrices(uniform(rng, n, rows, 5), shapes, self.op)
        # cv2.warpAffine inverts the forward matrix in float64; so does this.
        return {"matrix": np.linalg.inv(forward).astype(np.float32)}, shapes

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        image = _warp(image, p["matrix"], self.border, self.fill, types.INTERP_LINEAR)
        mask = _warp(mask, p["matrix"], self.border, self.mask_fill, types.INTERP_NN)
        return image, mask


def _warp(x: Any, matrix: Any, border: str, fill: float, interp: Any, size: Any = None) -> Any:
    """``x`` resampled at ``matrix @ (x, y, 1)`` (destination -> source, OpenCV pixel
    centres); ``size`` (H, W) defaults to the input's."""
    kwargs: dict[str, Any] = {}
    if border == "constant":
        kwargs["fill_value"] = fill
    if size is not None:
        kwargs["size"] = size
    return fn.experimental.warp_perspective(
        x,
        matrix=matrix,
        border_mode=border,
        interp_type=interp,
        pixel_origin="center",
        inverse_map=True,
        **kwargs,
    )


# ------------------------------------------------------------------- crop and pad


def centred_padding(size: np.ndarray, minimum: int | None, divisor: int | None) -> np.ndarray:
    """``(before, after)`` padding per sample of one axis, as albumentations'
    ``get_dimension_padding``: up to ``minimum`` if given (then ``divisor`` is ignored),
    else up to the next multiple of ``divisor``; the odd pixel goes after."""
    size = np.asarray(size, dtype=np.int64)
    if minimum is not None:
        total = np.maximum(0, minimum - size)
    elif divisor is not None:
        total = (divisor - size % divisor) % divisor
    else:
        total = np.zeros_like(size)
    before = total // 2
    return np.stack([before, total - before], 1)


class RandomCrop(DaliOp):
    """A ``size`` x ``size`` window at a uniform place: ``fn.slice`` of image and mask with
    the same start; images smaller than ``size`` on a side are padded centred first (the
    window's start is then negative there, and ``out_of_bounds_policy="pad"`` writes the
    fill), as ``A.RandomCrop(pad_if_needed=True, pad_position="center")``."""

    keeps_size = False

    geometric = True
    channel_uniform = True

    def __init__(self, op: R.RandomCrop, multiclass: bool) -> None:
        super().__init__(op)
        self.params = (*self.params, Param("start", np.int32, (2,)))
        self.size = op.size
        self.fill = opencv_fill(op.fill)
        self.mask_fill = float(R.mask_fill(op, multiclass))
        self.foreground = op.foreground
        self.reads_foreground = op.foreground > 0

    def _draw(
        self,
        rng: np.random.Generator,
        n: int,
        rows: Rows,
        shapes: Shapes,
        fire: np.ndarray,
        foreground: Sequence[fg.Points] | None = None,
    ) -> tuple[Params, Shapes]:
        u = uniform(rng, n, rows, 2)  # albumentations draws h_start, then w_start
        top = centred_padding(shapes[:, 0], self.size, None)[:, 0]
        left = centred_padding(shapes[:, 1], self.size, None)[:, 0]
        padded = np.maximum(shapes, self.size)
        # fcrops.get_crop_coords: y0 = int((height - crop_height + 1) * h_start)
        y0 = np.floor((padded[:, 0] - self.size + 1) * u[:, 0]).astype(np.int64)
        x0 = np.floor((padded[:, 1] - self.size + 1) * u[:, 1]).astype(np.int64)
        if foreground is not None:  # then whether, the class, the pixel (ForegroundCrop's)
            v = uniform(rng, n, rows, 3)
            for r in np.flatnonzero(v[:, 0] < self.foreground):
                centre = fg.pick_centre(foreground[r], v[r, 1], v[r, 2])
                if centre is not None:
                    y0[r] = fg.centred_start(centre[0], top[r], padded[r, 0], self.size)
                    x0[r] = fg.centred_start(centre[1], left[r], padded[r, 1], self.size)
        start = np.stack([y0 - top, x0 - left], 1).astype(np.int32)
        return {"start": start}, np.broadcast_to(np.array([self.size, self.size]), shapes.shape)

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        return (
            _window(image, p["start"], [self.size, self.size], self.fill),
            _window(mask, p["start"], [self.size, self.size], self.mask_fill),
        )


def _window(x: Any, start: Any, shape: Any, fill: float) -> Any:
    """``x[start : start + shape]`` over H and W, ``fill`` where it is out of the image."""
    return fn.slice(
        x,
        start=start,
        shape=shape,
        axis_names="HW",
        out_of_bounds_policy="pad",
        fill_values=fill,
    )


class PadIfNeeded(DaliOp):
    """Centred padding up to ``size`` and/or the next multiple of ``divisor``.

    A constant border is ``fn.slice`` with a negative start and ``out_of_bounds_policy=
    "pad"``; a replicated or reflected one is ``fn.experimental.warp_perspective`` by a
    whole-pixel shift with nearest-neighbour sampling (which copies pixels: exact) and the
    output size per sample. Samples that need no padding skip the op (a conditional).

    The albumentations loader pads in two steps when both ``size`` and ``divisor`` are
    given (albumentations takes one of them per ``PadIfNeeded``). For constant and
    replicated borders one pad by the sum is the same picture; a reflection of a
    reflection is not, so a reflected border is padded in the same two steps here.
    """

    keeps_size = False

    geometric = True
    channel_uniform = True

    def __init__(self, op: R.PadIfNeeded, multiclass: bool) -> None:
        super().__init__(op)
        self.always = False
        self.border = WARP_BORDER[op.border_mode]
        self.fill = opencv_fill(op.fill)
        self.mask_fill = float(R.mask_fill(op, multiclass))
        two_steps = op.border_mode == "reflect" and op.size is not None and op.divisor is not None
        self.steps: list[tuple[int | None, int | None]] = (
            [(op.size, None), (None, op.divisor)] if two_steps else [(op.size, op.divisor)]
        )
        params = [Param("apply", np.bool_)]
        for k in range(len(self.steps)):
            if self.border == "constant":
                params += [Param(f"start{k}", np.int32, (2,)), Param(f"shape{k}", np.int32, (2,))]
            else:
                params += [
                    Param(f"matrix{k}", np.float32, (3, 3)),
                    Param(f"size{k}", np.float32, (2,)),
                ]
        self.params = tuple(params)

    def padding(self, shapes: Shapes) -> list[np.ndarray]:
        """Per step, ``(top, bottom, left, right)`` per sample of sizes ``shapes``."""
        out = []
        shapes = np.asarray(shapes, dtype=np.int64)
        for size, divisor in self.steps:
            if size is not None:  # the minimum first, then the multiple of the padded size
                pads = [centred_padding(shapes[:, a], size, None) for a in (0, 1)]
                shapes = shapes + np.stack([p.sum(1) for p in pads], 1)
                if divisor is not None:
                    more = [centred_padding(shapes[:, a], None, divisor) for a in (0, 1)]
                    pads = [p + q for p, q in zip(pads, more, strict=True)]
                    shapes = shapes + np.stack([q.sum(1) for q in more], 1)
            else:
                pads = [centred_padding(shapes[:, a], None, divisor) for a in (0, 1)]
                shapes = shapes + np.stack([p.sum(1) for p in pads], 1)
            out.append(np.concatenate(pads, 1))
        return out

    def draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes
    ) -> tuple[Params, Shapes]:
        m = len(rows)
        fire = np.ones(m, np.bool_) if self.op.p >= 1.0 else uniform(rng, n, rows) < self.op.p
        steps = self.padding(shapes)
        fire &= np.any([pad.any(1) for pad in steps], 0)
        params: Params = {"apply": fire}
        out = np.asarray(shapes, dtype=np.int64)
        for k, pad in enumerate(steps):
            pad = np.where(fire[:, None], pad, 0)
            top, bottom, left, right = pad.T
            out = out + np.stack([top + bottom, left + right], 1)
            if self.border == "constant":
                params[f"start{k}"] = np.stack([-top, -left], 1).astype(np.int32)
                params[f"shape{k}"] = out.astype(np.int32)
            else:
                shift = np.zeros((m, 3, 3), np.float32)
                shift[:, 0, 0] = shift[:, 1, 1] = shift[:, 2, 2] = 1.0
                shift[:, 0, 2], shift[:, 1, 2] = -left, -top  # destination -> source
                params[f"matrix{k}"] = shift
                params[f"size{k}"] = out.astype(np.float32)
        return params, out

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        for k in range(len(self.steps)):
            if self.border == "constant":
                image = _window(image, p[f"start{k}"], p[f"shape{k}"], self.fill)
                mask = _window(mask, p[f"start{k}"], p[f"shape{k}"], self.mask_fill)
            else:
                matrix, size = p[f"matrix{k}"], p[f"size{k}"]
                image = _warp(image, matrix, self.border, self.fill, types.INTERP_NN, size)
                mask = _warp(mask, matrix, self.border, self.mask_fill, types.INTERP_NN, size)
        return image, mask


# ------------------------------------------------------------------------- dropout


def dropout_holes(u: np.ndarray, shapes: Shapes, op: R.CoarseDropout) -> np.ndarray:
    """Holes ``(m, k, 4)`` as ``(y0, x0, height, width)``, ``k = num_holes_range[1]``, as
    albumentations 2.0.8's CoarseDropout draws them; holes past a sample's drawn count
    are empty (height and width 0).

    ``u`` (m, 1 + 4k): per sample the count (``randint`` of ``num_holes_range``, both
    ends included), then per hole its height and width (``int(H * U(hole_height_range))``,
    ``int(W * U(hole_width_range))``) and its corner (uniform over the places where
    the hole fits: ``integers(0, H - h + 1)``).
    """
    lo, hi = (int(v) for v in op.num_holes_range)
    m = len(u)
    height = shapes[:, 0:1].astype(np.float64)
    width = shapes[:, 1:2].astype(np.float64)
    count = lo + np.minimum(np.floor(u[:, 0] * (hi - lo + 1)), hi - lo)
    per_hole = u[:, 1:].reshape(m, hi, 4)
    h = np.floor(height * _lerp(op.hole_height_range, per_hole[..., 0]))
    w = np.floor(width * _lerp(op.hole_width_range, per_hole[..., 1]))
    y0 = np.floor((height - h + 1) * per_hole[..., 2])
    x0 = np.floor((width - w + 1) * per_hole[..., 3])
    used = np.arange(hi)[None, :] < count[:, None]
    holes = np.stack([y0, x0, h, w], -1) * used[..., None]
    return holes.astype(np.int64)


class CoarseDropout(DaliOp):
    """Rectangles set to ``fill``: ``fn.erase`` with per-sample anchors and shapes, always
    ``num_holes_range[1]`` regions (a sample that draws fewer gets empty ones). With
    ``mask="ignore"`` the same regions of the mask become the ignore index; with
    ``mask="keep"`` the op is photometric (the mask is not touched). Each epoch draws
    ``1 + 4 * num_holes_range[1]`` numbers per sample of the split (8 bytes each: a
    range up to 1000 holes on 10,000 images is 320 MB for the epoch's table)."""

    channel_uniform = True  # one fill for all three channels

    def __init__(self, op: R.CoarseDropout, multiclass: bool) -> None:
        super().__init__(op)
        self.holes = int(op.num_holes_range[1])
        self.params = (
            *self.params,
            Param("anchor", np.float32, (2 * self.holes,)),
            Param("shape", np.float32, (2 * self.holes,)),
        )
        self.fill = float(np.clip(np.trunc(op.fill), 0, 255))  # np.array(fill, uint8)
        mask_fill = R.dropout_mask_fill(op, multiclass)
        self.mask_fill = None if mask_fill is None else float(mask_fill)
        self.geometric = self.mask_fill is not None  # type: ignore[misc]

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        holes = dropout_holes(uniform(rng, n, rows, 1 + 4 * self.holes), shapes, self.op)
        m = len(rows)
        anchor = holes[..., 0:2].reshape(m, -1).astype(np.float32)
        shape = holes[..., 2:4].reshape(m, -1).astype(np.float32)
        return {"anchor": anchor, "shape": shape}, shapes

    def _erase(self, x: Any, p: Params, fill: float) -> Any:
        return fn.erase(x, anchor=p["anchor"], shape=p["shape"], axis_names="HW", fill_value=fill)

    def _image(self, image: Any, p: Params) -> Any:
        return self._erase(image, p, self.fill)

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        assert self.mask_fill is not None
        return self._erase(image, p, self.fill), self._erase(mask, p, self.mask_fill)


# ------------------------------------------------------------------------- elastic


def displacement_field(
    shape: tuple[int, int], alpha: float, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """``(2, H, W)`` float32 displacements ``(dx, dy)`` in pixels, computed as
    albumentations 2.0.8's ``generate_displacement_fields`` (Gaussian noise, the default):
    float32 standard normals divided by their largest magnitude, both fields blurred as
    one ``(2H, W)`` image by ``cv2.GaussianBlur`` (automatic width, replicated border),
    times ``alpha``. The same generator gives the same field as albumentations."""
    fields = rng.standard_normal((2, *shape), dtype=np.float32)
    largest = np.abs(fields).max()
    if largest > 1e-6:
        fields /= largest
    flat = fields.reshape(-1, shape[1])
    cv2.GaussianBlur(flat, (0, 0), sigma, dst=flat, borderType=cv2.BORDER_REPLICATE)
    fields = flat.reshape(fields.shape)
    fields *= alpha
    return fields


def border_coordinates(x: np.ndarray, size: int, border: str) -> np.ndarray:
    """Source coordinates (OpenCV pixel centres) moved inside ``[0, size - 1]`` so that
    sampling there equals OpenCV's ``border`` sampling outside: replicate clamps, reflect
    folds about the edge pixels (BORDER_REFLECT_101, period ``2 (size - 1)``); bilinear
    and nearest-neighbour sampling are both unchanged by it. ``constant`` leaves them."""
    if border == "replicate":
        return np.clip(x, 0, size - 1)
    if border == "reflect_101":
        if size == 1:
            return np.zeros_like(x)
        period = 2 * (size - 1)
        folded = np.mod(x, period)
        return np.where(folded > size - 1, period - folded, folded).astype(x.dtype)
    return x


def elastic_maps(
    shape: tuple[int, int], alpha: float, sigma: float, seed: int, border: str
) -> np.ndarray:
    """``(H, W, 2)`` float32 source coordinates ``(x, y)`` of one sample: the pixel grid
    plus :func:`displacement_field` drawn from ``np.random.default_rng(seed)``, made
    float32 as albumentations makes its maps, then moved inside for ``border``."""
    height, width = shape
    dx, dy = displacement_field(shape, alpha, sigma, np.random.default_rng(seed))
    map_x = (np.arange(width)[None, :] + dx.astype(np.float64)).astype(np.float32)
    map_y = (np.arange(height)[:, None] + dy.astype(np.float64)).astype(np.float32)
    map_x = border_coordinates(map_x, width, border)
    map_y = border_coordinates(map_y, height, border)
    return np.stack([map_x, map_y], -1)


class ElasticMaps(PerBatch):
    """The remap coordinates of a batch, made when the feed hands the batch to DALI:
    a field is ``H x W x 2`` float32 per sample (512 KB at 256 px), too much to draw
    for a whole epoch at once. Each sample's field comes from its own seed, drawn with
    the epoch's parameters, so it depends only on ``(seed, epoch, index)``."""

    def __init__(
        self, seeds: np.ndarray, shapes: Shapes, fire: np.ndarray, op: R.ElasticTransform
    ) -> None:
        self.seeds, self.shapes, self.fire, self.op = seeds, shapes, fire, op
        self.border = WARP_BORDER[op.border_mode]

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, rows: slice) -> list[np.ndarray]:
        out = []
        for i in range(*rows.indices(len(self))):
            if not self.fire[i]:  # not read: the op's conditional skips the sample
                out.append(np.zeros((1, 1, 2), np.float32))
                continue
            shape = (int(self.shapes[i, 0]), int(self.shapes[i, 1]))
            seed = int(self.seeds[i])
            out.append(elastic_maps(shape, self.op.alpha, self.op.sigma, seed, self.border))
        return out


class ElasticTransform(DaliOp):
    """``fn.experimental.remap`` (GPU only) of image (bilinear) and mask (nearest) at
    albumentations' displacement field (:class:`ElasticMaps`), OpenCV's pixel centres.

    DALI's remap has one border, the constant 0. A replicated or reflected border is
    built into the coordinates (:func:`border_coordinates`); a constant fill ``f`` other
    than 0 is remap(image - f) + f for the image (in float: the border blends towards
    ``f`` as OpenCV's does) and remap(mask XOR f) XOR f for the mask (nearest neighbour
    never blends).
    """

    geometric = True
    channel_uniform = True

    def __init__(self, op: R.ElasticTransform, context: CompileContext) -> None:
        if not context.gpu:
            raise ConfigError(
                f"the dali loader cannot run {op!r} in CPU mode: DALI's remap "
                f"(fn.experimental.remap) runs only on a GPU; use "
                f"{named('device', 'cuda', as_typed=True)} on a CUDA machine, or {named('loader', 'albumentations', as_typed=True)}"
            )
        super().__init__(op)
        self.params = (*self.params, Param("maps", np.float32, (-1, -1, 2)))
        self.border = WARP_BORDER[op.border_mode]
        self.fill = opencv_fill(op.fill) if self.border == "constant" else 0.0
        self.mask_fill = R.mask_fill(op, context.multiclass) if self.border == "constant" else 0

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)[rows]
        maps = ElasticMaps(seeds, np.asarray(shapes).copy(), fire, self.op)
        return {"maps": maps}, shapes

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        maps = p["maps"].gpu()
        map_x = fn.reshape(maps[:, :, 0], layout="HW")
        map_y = fn.reshape(maps[:, :, 1], layout="HW")

        def remap(x: Any, interp: Any) -> Any:
            return fn.experimental.remap(x, map_x, map_y, interp=interp, pixel_origin="center")

        if self.fill:
            shifted = fn.cast(image, dtype=types.FLOAT) - self.fill
            image = fn.cast(remap(shifted, types.INTERP_LINEAR) + self.fill, dtype=types.UINT8)
        else:
            image = remap(image, types.INTERP_LINEAR)
        if self.mask_fill:
            key = types.Constant(self.mask_fill, dtype=types.UINT8)
            mask = remap(mask ^ key, types.INTERP_NN) ^ key
        else:
            mask = remap(mask, types.INTERP_NN)
        return image, mask


# ------------------------------------------------------------------------- compile

COMPILERS: dict[type[R.Op], Compiler] = {
    R.HorizontalFlip: lambda op, c: HorizontalFlip(op),
    R.Resize: lambda op, c: Resize(op, c.antialias),
    R.RandomResizedCrop: lambda op, c: RandomResizedCrop(op, c.antialias),
    R.VerticalFlip: lambda op, c: VerticalFlip(op),
    R.RandomRotate90: lambda op, c: RandomRotate90(op),
    R.Affine: lambda op, c: Affine(op, c.multiclass),
    R.RandomCrop: lambda op, c: RandomCrop(op, c.multiclass),
    R.PadIfNeeded: lambda op, c: PadIfNeeded(op, c.multiclass),
    R.ElasticTransform: lambda op, c: ElasticTransform(op, c),
    R.CoarseDropout: lambda op, c: CoarseDropout(op, c.multiclass),
}
