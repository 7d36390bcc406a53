"""The photometric ops (the image only), compiled into the DALI graph.

Each entry of :data:`COMPILERS` maps a :mod:`segkit.recipes` op class to a function
``(op, context) -> DaliOp`` (see :mod:`segkit_dali._base` for the ``DaliOp`` contract:
parameters drawn in Python per ``(seed, epoch, index)``; photometric ops touch the image
only). The lab's ops first (gamma, CLAHE, channel shuffle, brightness/contrast, tone
curve, Normalize), then those for real datasets (blur, HSV shifts, noise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types

from segkit import recipes as R
from segkit.errors import DataError
from segkit_dali._base import (
    Compiler,
    DaliOp,
    Param,
    Params,
    Rows,
    Shapes,
    uniform,
)

# ----------------------------------------------------------------- the lab's ops


def to_uint8_floor(x: Any) -> Any:
    """Clamp a float node to [0, 255] and truncate it to uint8.

    albumentations builds a 256-entry float LUT for uint8 images and converts it with
    ``astype(np.uint8)``, which truncates; DALI's ``fn.cast`` would round.
    """
    return fn.cast(dmath.floor(dmath.clamp(x, 0.0, 255.0)), dtype=types.UINT8)


def as_float(image: Any) -> Any:
    return fn.cast(image, dtype=types.FLOAT)


class RandomGamma(DaliOp):
    channel_uniform = True
    params = (Param("gamma", np.float32),)

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        lo, hi = self.op.gamma_limit
        gamma = (lo + (hi - lo) * uniform(rng, n, rows)) / 100.0
        return {"gamma": gamma.astype(np.float32)}, shapes

    def _image(self, image: Any, p: Params) -> Any:
        # (in / 255) ** gamma is in [0, 1]: no clamp needed before truncating. The LUT
        # albumentations uses is not available per sample (fn.lookup_table's table is
        # fixed when the graph is built), so the power is computed per pixel.
        scaled = dmath.pow(image / 255.0, p["gamma"]) * 255.0
        return fn.cast(dmath.floor(scaled), dtype=types.UINT8)


class CLAHE(DaliOp):
    """``fn.clahe`` takes one clip limit per operator, not per sample, so the clip-limit
    range is split into ``levels`` equal bins; each sample draws a clip limit like
    albumentations does and runs the CLAHE of its bin's centre (one CLAHE per sample,
    chosen by a conditional)."""

    def __init__(self, op: R.CLAHE, levels: int) -> None:
        super().__init__(op)
        lo, hi = (float(v) for v in op.clip_limit)
        self.levels = 1 if hi <= lo else levels
        width = (hi - lo) / self.levels
        self.lo, self.width = lo, width
        self.clip_limits = [lo + (k + 0.5) * width for k in range(self.levels)]
        if self.levels > 1:
            self.params = (*self.params, Param("level", np.int32))
        self.tiles_x, self.tiles_y = op.tile_grid_size  # cv2's tileGridSize is (x, y)

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        lo, hi = self.op.clip_limit
        clip = lo + (hi - lo) * uniform(rng, n, rows)
        if self.levels == 1:
            return {}, shapes
        level = np.minimum(self.levels - 1, np.floor((clip - self.lo) / self.width))
        return {"level": level.astype(np.int32)}, shapes

    def _image(self, image: Any, p: Params) -> Any:
        if self.levels == 1:
            return self._clahe(image, self.clip_limits[0])
        for k, clip in enumerate(self.clip_limits):
            if p["level"] == k:
                image = self._clahe(image, clip)
        return image

    def _clahe(self, image: Any, clip: float) -> Any:
        return fn.clahe(
            image, tiles_x=self.tiles_x, tiles_y=self.tiles_y, clip_limit=clip, luma_only=True
        )


class ChannelShuffle(DaliOp):
    """A per-sample 3x3 permutation matrix applied to each pixel's RGB vector with
    ``fn.coord_transform`` (exact for uint8: one 1 and two 0s per row)."""

    params = (Param("matrix", np.float32, (3, 3)),)

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        perm = np.argsort(uniform(rng, n, rows, 3), axis=1)  # a uniform permutation per row
        return {"matrix": np.eye(3, dtype=np.float32)[perm]}, shapes  # out[c] = in[perm[c]]

    def _image(self, image: Any, p: Params) -> Any:
        return fn.coord_transform(image, M=p["matrix"], dtype=types.UINT8)


class RandomBrightnessContrast(DaliOp):
    channel_uniform = True
    params = (Param("alpha", np.float32), Param("beta", np.float32))

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        (clo, chi), (blo, bhi) = self.op.contrast_limit, self.op.brightness_limit
        u = uniform(rng, n, rows, 2)
        alpha = 1.0 + clo + (chi - clo) * u[:, 0]
        beta = (blo + (bhi - blo) * u[:, 1]) * 255.0  # brightness_by_max=True
        return {"alpha": alpha.astype(np.float32), "beta": beta.astype(np.float32)}, shapes

    def _image(self, image: Any, p: Params) -> Any:
        # out = alpha * in + beta, truncated like albumentations' uint8 LUT: DALI's fused
        # operator rounds to nearest, so the shift is lowered by half a level
        # (round(v - 0.5) == floor(v) but at exact ties). About 5x faster on the CPU than
        # the same formula as DALI arithmetic plus a cast.
        return fn.brightness_contrast(
            image,
            contrast=p["alpha"],
            contrast_center=0.0,
            brightness_shift=(p["beta"] - 0.5) / 255.0,
            dtype=types.UINT8,
        )


class RandomToneCurve(DaliOp):
    """albumentations' tone curve: ``out = 255 * B(in / 255)`` with the cubic Bezier
    ``B(t) = 3(1-t)^2 t low + 3(1-t) t^2 high + t^3``, computed per pixel (the same
    values albumentations puts in its LUT), rounded to nearest."""

    channel_uniform = True
    params = (Param("low", np.float32), Param("high", np.float32))

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        z = rng.standard_normal((n, 2))[rows] * self.op.scale
        low = np.clip(0.25 + z[:, 0], 0.0, 1.0)
        high = np.clip(0.75 + z[:, 1], 0.0, 1.0)
        return {"low": low.astype(np.float32), "high": high.astype(np.float32)}, shapes

    def _image(self, image: Any, p: Params) -> Any:
        t = image / 255.0
        u = 1.0 - t
        y = (3.0 * u * u * t * p["low"] + 3.0 * u * t * t * p["high"] + t * t * t) * 255.0
        return to_uint8_floor(y + 0.5)


class Normalize(DaliOp):
    """``(in / 255 - mean) / std`` and HWC -> CHW in one ``fn.crop_mirror_normalize``."""

    def _image(self, image: Any, p: Params) -> Any:
        return fn.crop_mirror_normalize(
            image,
            mean=[255.0 * m for m in self.op.mean],
            std=[255.0 * s for s in self.op.std],
            dtype=types.FLOAT,
            output_layout="CHW",
        )

    def build(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        if self.always:
            return self._image(image, p), mask
        # Samples it does not fire for still leave as float CHW (unnormalized 0..255,
        # as albumentations leaves them), so both branches merge.
        if p["apply"]:
            image = self._image(image, p)
        else:
            image = fn.transpose(as_float(image), perm=[2, 0, 1], output_layout="CHW")
        return image, mask


# ------------------------------------------------------------ ops for real datasets


def blur_widths(blur_limit: tuple[int, int], sigma: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Kernel widths as albumentations 2.0.8's ``GaussianBlur`` picks them.

    With ``blur_limit=(0, 0)`` the width follows sigma: ``int(sigma * 3.5) * 2 + 1``
    (PIL's rule; always odd). Otherwise an integer uniform in ``blur_limit`` (both ends
    included, ``random.randint``) made odd by adding 1 to an even one, so the lower
    bound is half as likely as each other odd width. ``u`` is ``U[0, 1)`` per sample.
    """
    lo, hi = (int(v) for v in blur_limit)
    if (lo, hi) == (0, 0):
        return (np.floor(sigma * 3.5) * 2 + 1).astype(np.int32)
    width = lo + np.minimum(np.floor(u * (hi - lo + 1)), hi - lo).astype(np.int64)
    return (width + (width % 2 == 0)).astype(np.int32)


class GaussianBlur(DaliOp):
    """``fn.gaussian_blur`` with a per-sample sigma and width (argument inputs).

    DALI's kernel is albumentations' (``exp(-x^2 / 2 sigma^2)`` over the window,
    normalized), its border is OpenCV's ``BORDER_REFLECT_101`` and it rounds to nearest
    as ``cv2.sepFilter2D`` does for uint8: the output is bit-identical for the same
    sigma and width (tests/test_dali_color.py).
    """

    channel_uniform = True
    params = (Param("sigma", np.float32), Param("width", np.int32))

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        lo, hi = self.op.sigma_limit
        u = uniform(rng, n, rows, 2)
        sigma = lo + (hi - lo) * u[:, 0]
        width = blur_widths(self.op.blur_limit, sigma, u[:, 1])
        return {"sigma": sigma.astype(np.float32), "width": width}, shapes

    def _image(self, image: Any, p: Params) -> Any:
        return fn.gaussian_blur(image, sigma=p["sigma"], window_size=p["width"])


# OpenCV's 8-bit RGB -> HSV divides with two tables of 12-bit fixed-point reciprocals
# (color_hsv.simd.hpp: sdiv_table, hdiv_table180), rounded to nearest.
_HSV_SHIFT = 12
_SDIV = [0.0] + [float(round((255 << _HSV_SHIFT) / v)) for v in range(1, 256)]
_HDIV = [0.0] + [float(round((180 << _HSV_SHIFT) / (6.0 * d))) for d in range(1, 256)]


def _channel(x: Any, c: int) -> Any:
    return x[:, :, c]


def rgb_to_hsv8(image: Any) -> tuple[Any, Any, Any]:
    """OpenCV's ``cvtColor(RGB2HSV)`` for uint8, bit for bit, as DALI integer arithmetic.

    Returns int32 HW nodes ``(h 0..179, s 0..255, v 0..255)``: ``v = max``,
    ``s = round(255 (v - min) / v)`` and the hue sextant formula, both divisions through
    OpenCV's fixed-point reciprocal tables (``fn.lookup_table``) with its round-half-up
    shift. Checked on all 2^24 colours (tests/test_dali_color.py).
    """
    x = fn.cast(image, dtype=types.INT32)
    r, g, b = _channel(x, 0), _channel(x, 1), _channel(x, 2)
    v = dmath.max(dmath.max(r, g), b)
    diff = v - dmath.min(dmath.min(r, g), b)
    sdiv = fn.lookup_table(v, keys=list(range(256)), values=_SDIV, dtype=types.INT32)
    hdiv = fn.lookup_table(diff, keys=list(range(256)), values=_HDIV, dtype=types.INT32)
    half, one = 1 << (_HSV_SHIFT - 1), 1 << _HSV_SHIFT
    s = (diff * sdiv + half) // one  # non-negative: DALI's // truncates like C
    is_r, is_g = v == r, v == g
    not_r = 1 - is_r
    h = is_r * (g - b) + not_r * (is_g * (b - r + 2 * diff) + (1 - is_g) * (r - g + 4 * diff))
    # OpenCV shifts h * hdiv (>= -180 << 12) arithmetically, i.e. floors; DALI's //
    # truncates toward zero, so add 180 << 12 first (exact), then wrap 180.. back.
    h = (h * hdiv + half + (180 << _HSV_SHIFT)) // one
    h = h - 180 * (h >= 180)
    return h, s, v


def hsv8_to_rgb(h: Any, s: Any, v: Any) -> Any:
    """OpenCV 5.0's ``cvtColor(HSV2RGB)`` for uint8 as DALI arithmetic: uint8 HWC.

    Float32 as OpenCV computes it (``h * (6/180)``, ``s / 255`` and ``v / 255`` as
    products with the float32 reciprocals; sector and fraction), the two
    ``1 - s * f`` terms as OpenCV's fused multiply-add (rounded once: computed in
    float64 and cast, which gives the same float32 on every input), then ``* 255``
    truncated, as OpenCV's vectorized loop does. That loop takes each image row in
    blocks of SIMD width (32 pixels on an AVX-512 CPU); the last ``width mod block``
    pixels of a row go through its scalar loop, which rounds to nearest instead: there
    cv2 is one level higher on ~74% of pixels. Matches cv2 on all 180 x 256 x 256 HSV
    inputs in rows of whole blocks (tests/test_dali_color.py; docs/dali.md).
    """
    f32 = np.float32
    hf = h * f32(6.0 / 180.0)
    sector = dmath.floor(hf)
    frac = hf - sector
    sf = s * f32(1.0 / 255.0)
    vf = v * f32(1.0 / 255.0)
    sd = fn.cast(sf, dtype=types.FLOAT64)
    near = fn.cast(1.0 - sd * fn.cast(frac, dtype=types.FLOAT64), dtype=types.FLOAT)
    far = fn.cast(1.0 - sd * fn.cast(f32(1.0) - frac, dtype=types.FLOAT64), dtype=types.FLOAT)
    t0, t1, t2, t3 = vf, vf * (f32(1.0) - sf), vf * near, vf * far
    k = [sector == i for i in range(6)]  # 0/1 masks; the products below are exact
    r = t0 * (k[0] | k[5]) + t2 * k[1] + t1 * (k[2] | k[3]) + t3 * k[4]
    g = t3 * k[0] + t0 * (k[1] | k[2]) + t2 * k[3] + t1 * (k[4] | k[5])
    b = t1 * (k[0] | k[1]) + t3 * k[2] + t0 * (k[3] | k[4]) + t2 * k[5]
    rgb = [fn.cast(dmath.floor(c * f32(255.0)), dtype=types.UINT8) for c in (r, g, b)]
    return fn.stack(*rgb, axis=2, axis_name="C")


class HueSaturationValue(DaliOp):
    """albumentations' HSV shift, not DALI's ``fn.hsv`` (a multiplicative YIQ-space
    operation): OpenCV 8-bit RGB -> HSV, then ``hue = (hue + floor(shift)) mod 180``,
    saturation and value plus the shift truncated to an integer, clipped to 0..255
    (saturation 0 stays 0), then HSV -> RGB, all as DALI arithmetic (:func:`rgb_to_hsv8`,
    :func:`hsv8_to_rgb`). albumentations returns the image untouched when all three
    drawn shifts are 0 (no HSV round trip), so does this op.
    """

    def __init__(self, op: R.HueSaturationValue) -> None:
        super().__init__(op)
        # Always a conditional: a sample whose three shifts are all 0 is left alone.
        self.always = False
        self.params = (
            Param("apply", np.bool_),
            Param("hue", np.int32),
            Param("sat", np.int32),
            Param("val", np.int32),
        )

    def draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes
    ) -> tuple[Params, Shapes]:
        op = self.op
        fire = np.ones(len(rows), np.bool_) if op.p >= 1.0 else uniform(rng, n, rows) < op.p
        u = uniform(rng, n, rows, 3)
        shifts = [
            lo + (hi - lo) * u[:, k]
            for k, (lo, hi) in enumerate(
                (op.hue_shift_limit, op.sat_shift_limit, op.val_shift_limit)
            )
        ]
        hue, sat, val = shifts
        fire &= (hue != 0) | (sat != 0) | (val != 0)
        return {
            "apply": fire,
            # floor(mod(h + shift, 180)) == (h + floor(shift)) mod 180 for integer h.
            "hue": np.mod(np.floor(hue), 180).astype(np.int32),
            # albucore adds int(shift) to uint8 channels.
            "sat": np.trunc(sat).astype(np.int32),
            "val": np.trunc(val).astype(np.int32),
        }, shapes

    def _image(self, image: Any, p: Params) -> Any:
        h, s, v = rgb_to_hsv8(image)
        h = h + p["hue"]
        h = h - 180 * (h >= 180)
        s = dmath.clamp(s + p["sat"], 0, 255) * (s != 0)
        v = dmath.clamp(v + p["val"], 0, 255)
        return hsv8_to_rgb(h, s, v)


#: The longest image side GaussNoise can number its pixels along (its iota constant).
MAX_SIDE = 1 << 16


def _mix32(x: Any) -> Any:
    """Chris Wellons' ``lowbias32`` integer hash, on uint32 nodes (wrapping products;
    DALI has no shifts, ``//`` by a power of two is the logical right shift)."""
    u = np.uint32
    x = x ^ (x // u(1 << 16))
    x = x * u(0x7FEB352D)
    x = x ^ (x // u(1 << 15))
    x = x * u(0x846CA68B)
    return x ^ (x // u(1 << 16))


def pixel_counter(image: Any, per_channel: bool) -> Any:
    """uint32 index of each element, ``(y * W + x) * 3 + c`` (HWC, 3 channels), or of
    each pixel, ``y * W + x`` (HW1: broadcast over the channels), from slices of an
    ``arange`` constant combined by DALI's broadcasting arithmetic.

    The constant, its slices and the image's shape are CPU nodes (slice bounds must be);
    on a GPU image the two short vectors go to the GPU before they are broadcast, so the
    per-element counter, hashes and Box-Muller run on the GPU. Without that, DALI's
    arithmetic would compute the whole noise field on the CPU and copy it over.
    """
    iota = types.Constant(np.arange(MAX_SIDE, dtype=np.uint32))
    shape = fn.cast(image.shape(), dtype=types.UINT32)
    height, width = shape[0], shape[1]
    ys = fn.expand_dims(iota[0:height], axes=[1, 2])
    xs = fn.expand_dims(iota[0:width], axes=[0, 2])
    if image.device == "gpu":
        ys, xs = ys.gpu(), xs.gpu()
    index = ys * width + xs
    if not per_channel:
        return index
    return index * np.uint32(3) + fn.expand_dims(iota[0:3], axes=[0, 1])


def gaussian_noise(counter: Any, key0: Any, key1: Any) -> Any:
    """Standard normal float32 per element of ``counter``, a function of (counter, key):
    a counter-based generator. Two chained hashes of the counter keyed by the sample's
    two uint32 keys give ``u1``, a third hash ``u2`` (24-bit uniforms, ``u1`` in (0, 1]),
    then Box-Muller ``sqrt(-2 ln u1) cos(2 pi u2)`` (|z| <= 5.8)."""
    h1 = _mix32(_mix32(counter ^ key0) + key1)
    h2 = _mix32(h1 ^ np.uint32(0x9E3779B9))
    scale = np.float32(2.0**-24)
    u1 = ((h1 // np.uint32(256)) + np.float32(1.0)) * scale
    u2 = (h2 // np.uint32(256)) * scale
    return dmath.sqrt(np.float32(-2.0) * dmath.log(u1)) * dmath.cos(np.float32(2 * np.pi) * u2)


class GaussNoise(DaliOp):
    """albumentations 2.0.8's GaussNoise: per sample ``std`` uniform in ``std_range`` and
    ``mean`` uniform in ``mean_range`` (fractions of 255), noise ``255 (mean + std z)``
    per element (``per_channel``) or per pixel shared by the channels, truncated toward
    zero and added to the uint8 image, clipped to 0..255 (albucore's ``add`` of a float
    array to uint8).

    ``z`` comes from a counter-based generator in the graph (:func:`gaussian_noise`),
    keyed by two uint32 drawn in Python, so the noise, like every other parameter,
    depends only on ``(seed, epoch, index)`` and the image's size at the op, never on
    the batch or the pipeline's state. DALI's own ``fn.noise.gaussian`` would not.
    """

    params = (
        Param("std", np.float32),
        Param("mean", np.float32),
        Param("key0", np.uint32),
        Param("key1", np.uint32),
    )

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        (slo, shi), (mlo, mhi) = self.op.std_range, self.op.mean_range
        u = uniform(rng, n, rows, 2)
        keys = rng.integers(0, 1 << 32, (n, 2), dtype=np.uint64)[rows].astype(np.uint32)
        big = np.flatnonzero(fire & (shapes.max(1) > MAX_SIDE))
        if big.size:
            raise DataError(
                f"GaussNoise on the dali loader: an image of {tuple(shapes[big[0]])} px "
                f"reaches the op; it numbers pixels along sides of at most {MAX_SIDE}. "
                "Resize or crop before GaussNoise"
            )
        f32 = np.float32
        # albumentations: float32(noise) * 255 in float32.
        std = (slo + (shi - slo) * u[:, 0]).astype(f32) * f32(255.0)
        mean = (mlo + (mhi - mlo) * u[:, 1]).astype(f32) * f32(255.0)
        return {"std": std, "mean": mean, "key0": keys[:, 0], "key1": keys[:, 1]}, shapes

    def _image(self, image: Any, p: Params) -> Any:
        z = gaussian_noise(pixel_counter(image, self.op.per_channel), p["key0"], p["key1"])
        noise = p["mean"] + p["std"] * z
        # albucore adds noise to uint8 truncated toward zero (np.trunc, or a uint8 cast
        # when it is all non-negative), then clips: trunc = floor above 0, ceil below.
        noise = dmath.floor(noise) * (noise >= 0) + dmath.ceil(noise) * (noise < 0)
        return fn.cast(dmath.clamp(image + noise, 0.0, 255.0), dtype=types.UINT8)


COMPILERS: dict[type[R.Op], Compiler] = {
    R.RandomGamma: lambda op, c: RandomGamma(op),
    R.CLAHE: lambda op, c: CLAHE(op, c.clahe_levels),
    R.ChannelShuffle: lambda op, c: ChannelShuffle(op),
    R.RandomBrightnessContrast: lambda op, c: RandomBrightnessContrast(op),
    R.RandomToneCurve: lambda op, c: RandomToneCurve(op),
    R.Normalize: lambda op, c: Normalize(op),
    R.GaussianBlur: lambda op, c: GaussianBlur(op),
    R.HueSaturationValue: lambda op, c: HueSaturationValue(op),
    R.GaussNoise: lambda op, c: GaussNoise(op),
}
