"""Recipe ops compiled into a DALI graph.

Each op of :mod:`segkit.recipes` becomes one :class:`DaliOp` with two halves:

* ``draw(rng, n, rows, shapes)`` runs in Python, once per epoch, and draws the op's
  random parameters (whether it fires, the gamma, the crop window, ...) for a whole
  epoch at once, as numpy arrays with one row per sample, from a generator seeded by
  ``(seed, epoch)``. Every draw has ``n`` rows, one per sample of the split, and row
  ``i`` belongs to sample ``i`` whichever shard or batch reads it; ``rows`` picks the
  epoch's samples (in reading order) and ``shapes`` are their image sizes. It also
  returns the image sizes after the op, because the crop window of a later
  RandomResizedCrop depends on them.
* ``build(image, mask, params)`` adds the op's DALI operators to the graph. ``params``
  maps each parameter name to a DataNode fed by ``fn.external_source``; a geometric op
  passes the *same* nodes to its image and mask operators, so both move together.

Drawing in Python rather than with ``fn.random.*`` is what gives the loader its epoch
semantics: DALI's random operators keep one state per pipeline that advances with
every prefetched iteration, so "same seed and epoch, same batches" would need a
pipeline rebuild per epoch, and a sample's augmentation would depend on its position
in the batch. Here it depends only on ``(seed, epoch, index)``.

An op with ``p < 1`` gets a boolean ``apply`` parameter and runs under DALI's
conditional execution (``if apply:`` in a pipeline built with
``enable_conditionals=True``): only the samples it fires for are processed.

Images stay ``uint8`` HWC between ops and every photometric op rounds the way
albumentations does for ``uint8`` images (``docs/dali.md`` lists each difference).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types

from segkit import recipes as R
from segkit.contracts import IGNORE_INDEX, MaskSpec
from segkit.errors import ConfigError

Shape = tuple[int, int]  # (height, width)
Params = dict[str, Any]  # parameter name -> numpy array (draw) or DataNode (build)
Rows = np.ndarray  # int64 (m,): sample indices, the rows of a draw that the epoch reads
Shapes = np.ndarray  # int64 (m, 2): (height, width) of each of those samples


def uniform(rng: np.random.Generator, n: int, rows: Rows, *shape: int) -> np.ndarray:
    """``U[0, 1)`` of shape ``(n, *shape)`` drawn at once; the ``rows`` the epoch reads."""
    return rng.random((n, *shape))[rows]


@dataclass(frozen=True)
class Param:
    """One per-sample parameter an op draws in Python and reads in the graph."""

    name: str
    dtype: type
    shape: tuple[int, ...] = ()


class DaliOp:
    """Base of the compiled ops. Subclasses set ``params`` and implement ``_draw`` and
    ``_image`` (photometric) or ``_both`` (geometric)."""

    geometric: ClassVar[bool] = False
    params: tuple[Param, ...] = ()

    def __init__(self, op: R.Op) -> None:
        self.op = op
        self.always = op.p >= 1.0
        if not self.always:
            self.params = (Param("apply", np.bool_), *self.params)

    def draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes
    ) -> tuple[Params, Shapes]:
        """Draw this op's parameters for the samples ``rows`` (sizes ``shapes``).

        Returns each parameter as an array of ``len(rows)`` rows of the parameter's
        dtype and shape, and the samples' sizes after the op.
        """
        m = len(rows)
        fire = np.ones(m, np.bool_) if self.always else uniform(rng, n, rows) < self.op.p
        values, out_shapes = self._draw(rng, n, rows, shapes, fire)
        if not self.always:
            values["apply"] = fire
        return values, np.where(fire[:, None], out_shapes, shapes)

    def build(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        """Add this op to the graph; ``image`` is uint8 HWC, ``mask`` uint8 HW1 (0/1)."""
        # The `if p["apply"]` statements are DALI conditionals: AutoGraph turns them into
        # per-sample splits and merges. Photometric ops assign only `image` inside the
        # branch, so masks are not split and merged for nothing.
        if self.geometric:
            if self.always:
                image, mask = self._both(image, mask, p)
            elif p["apply"]:
                image, mask = self._both(image, mask, p)
        else:
            if self.always:
                image = self._image(image, p)
            elif p["apply"]:
                image = self._image(image, p)
        return image, mask

    def _draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes, fire: np.ndarray
    ) -> tuple[Params, Shapes]:
        return {}, shapes

    def _image(self, image: Any, p: Params) -> Any:
        raise NotImplementedError

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        raise NotImplementedError


# --------------------------------------------------------------------------- helpers


def _to_uint8_floor(x: Any) -> Any:
    """Clamp a float node to [0, 255] and truncate it to uint8.

    albumentations builds a 256-entry float LUT for uint8 images and converts it with
    ``astype(np.uint8)``, which truncates; DALI's ``fn.cast`` would round.
    """
    return fn.cast(dmath.floor(dmath.clamp(x, 0.0, 255.0)), dtype=types.UINT8)


def _as_float(image: Any) -> Any:
    return fn.cast(image, dtype=types.FLOAT)


def _resize_both(image: Any, mask: Any, size: list[int], antialias: bool) -> tuple[Any, Any]:
    """Resample image (linear) and mask (nearest, never antialiased) to ``size``.

    Antialiasing a mask averages labels into new values (DALI #5507); nearest neighbour
    keeps it exactly 0/1.
    """
    image = fn.resize(image, size=size, interp_type=types.INTERP_LINEAR, antialias=antialias)
    mask = fn.resize(mask, size=size, interp_type=types.INTERP_NN, antialias=False)
    return image, mask


# ------------------------------------------------------------------------ geometric ops


class HorizontalFlip(DaliOp):
    geometric = True

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
    the identity, but costs ~1.7 ms per 256 px image on the CPU."""

    geometric = True

    def __init__(self, op: R.Resize, antialias: bool) -> None:
        super().__init__(op)
        self.always = False
        self.params = (Param("apply", np.bool_),)
        self.size = (op.size, op.size)
        self.antialias = antialias

    def draw(
        self, rng: np.random.Generator, n: int, rows: Rows, shapes: Shapes
    ) -> tuple[Params, Shapes]:
        fire = (
            np.ones(len(rows), np.bool_) if self.op.p >= 1.0 else uniform(rng, n, rows) < self.op.p
        )
        fire &= (shapes != np.asarray(self.size)).any(1)
        return {"apply": fire}, np.where(fire[:, None], np.asarray(self.size), shapes)

    def _both(self, image: Any, mask: Any, p: Params) -> tuple[Any, Any]:
        return _resize_both(image, mask, list(self.size), self.antialias)


class RandomResizedCrop(DaliOp):
    geometric = True

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
        return _resize_both(image, mask, list(self.size), self.antialias)


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


# ---------------------------------------------------------------------- photometric ops


class RandomGamma(DaliOp):
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
        return _to_uint8_floor(y + 0.5)


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
            image = fn.transpose(_as_float(image), perm=[2, 0, 1], output_layout="CHW")
        return image, mask


# ----------------------------------------------------------------------------- compile


@dataclass(frozen=True)
class CompileContext:
    """What an op's compiler may need besides the op: the loader's options, whether the
    masks are class maps (:func:`segkit.recipes.mask_fill`), and whether the graph runs on
    a GPU (some DALI operators exist only there)."""

    clahe_levels: int = 8
    antialias: bool = False
    multiclass: bool = False
    gpu: bool = False


Compiler = Callable[[Any, CompileContext], DaliOp]


def compilers() -> dict[type[R.Op], Compiler]:
    """Recipe op class -> the function that compiles it: the lab's ops here, the ops for
    real datasets in :mod:`segkit_dali._geometry` and :mod:`segkit_dali._color`."""
    from segkit_dali import _color, _geometry

    table: dict[type[R.Op], Compiler] = {
        R.HorizontalFlip: lambda op, c: HorizontalFlip(op),
        R.Resize: lambda op, c: Resize(op, c.antialias),
        R.RandomResizedCrop: lambda op, c: RandomResizedCrop(op, c.antialias),
        R.RandomGamma: lambda op, c: RandomGamma(op),
        R.CLAHE: lambda op, c: CLAHE(op, c.clahe_levels),
        R.ChannelShuffle: lambda op, c: ChannelShuffle(op),
        R.RandomBrightnessContrast: lambda op, c: RandomBrightnessContrast(op),
        R.RandomToneCurve: lambda op, c: RandomToneCurve(op),
        R.Normalize: lambda op, c: Normalize(op),
    }
    table.update(_geometry.COMPILERS)
    table.update(_color.COMPILERS)
    return table


def compile_ops(
    ops: Sequence[R.Op],
    *,
    clahe_levels: int = 8,
    antialias: bool = False,
    multiclass: bool = False,
    gpu: bool = False,
) -> list[DaliOp]:
    """Translate recipe ops into :class:`DaliOp` objects (no graph is built yet).

    Ops with ``p == 0`` are dropped. A recipe always ends with ``Normalize``; the DALI
    graph turns the image into float CHW there, so no op may follow a ``Normalize``.

    Raises:
        ConfigError: an op this loader does not know or cannot do (in one line naming the
            op and the loader that can), or an op after a Normalize.
    """
    context = CompileContext(clahe_levels, antialias, multiclass, gpu)
    table = compilers()
    out: list[DaliOp] = []
    for i, op in enumerate(ops):
        name = type(op).__name__
        if out and isinstance(out[-1], Normalize):
            raise ConfigError(
                f"the dali loader cannot run {name} after Normalize (op {i}): its graph "
                "turns images into normalized float CHW at Normalize; move Normalize last"
            )
        if isinstance(op, R.AlbumentationsCompose):
            raise ConfigError(
                f"the dali loader cannot run {op!r}: an albumentations Compose runs only on "
                "the albumentations loader; use --loader albumentations, or segkit.recipes ops"
            )
        compile_one = table.get(type(op))
        if compile_one is None:
            raise ConfigError(
                f"the dali loader cannot compile op {name} ({op!r}); it supports "
                f"{', '.join(c.__name__ for c in table)}. Use another recipe or --loader "
                "albumentations if that one knows it"
            )
        compiled = compile_one(op, context)
        if op.p > 0.0:
            out.append(compiled)
    return out


def graph_order(ops: Sequence[DaliOp]) -> list[int]:
    """The order in which the graph applies ``ops``: the recipe's order, except that a
    ChannelShuffle is moved later past ops that treat the three channels alike.

    Permuting channels commutes exactly with flips, resizes and crops (the same weights
    for every channel, rounded per channel) and with gamma, brightness/contrast and tone
    curves (the same function of each channel value), so the output is bit for bit the
    same, and the shuffle runs on the small resized image instead of the decoded photo
    (``fn.coord_transform`` costs ~35 ns a pixel on the CPU). It never moves past CLAHE,
    whose luminance weighs R, G and B differently, nor past Normalize (per-channel mean
    and std). Parameters are still drawn in the recipe's order.
    """
    from segkit_dali._color import GaussianBlur  # the same kernel on every channel
    from segkit_dali._geometry import CHANNEL_UNIFORM as GEOMETRY  # one sampling, one fill

    order = list(range(len(ops)))
    channel_uniform = (
        *GEOMETRY,
        GaussianBlur,
        HorizontalFlip,
        Resize,
        RandomResizedCrop,
        RandomGamma,
        RandomBrightnessContrast,
        RandomToneCurve,
    )
    i = len(order) - 1
    while i >= 0:
        if isinstance(ops[order[i]], ChannelShuffle):
            j = i
            while j + 1 < len(order) and isinstance(ops[order[j + 1]], channel_uniform):
                order[j], order[j + 1] = order[j + 1], order[j]
                j += 1
        i -= 1
    return order


@dataclass(frozen=True)
class Placement:
    """Where the graph runs: the one place that knows the GPU/CPU device strings.

    ``device_id=None`` is DALI's CPU-only mode: every operator on the CPU, and no CUDA
    call at all.
    """

    device_id: int | None

    @property
    def gpu(self) -> bool:
        return self.device_id is not None

    @property
    def image_decoder(self) -> str:
        # "mixed": nvJPEG decodes JPEGs on the GPU (PNGs fall back to the CPU inside the
        # operator) and hands the images over in GPU memory.
        return "mixed" if self.gpu else "cpu"

    @property
    def mask_decoder(self) -> str:
        # PNG masks always decode on the CPU: "mixed" would fall back to it silently
        # (DALI #1093), and the value check below reads the decoded mask on the host.
        return "cpu"

    def to_ops_device(self, node: Any) -> Any:
        """Move a CPU node to where the augmentations run."""
        return node.gpu() if self.gpu else node


def define_graph(
    feed: Any, ops: Sequence[DaliOp], spec: MaskSpec, placement: Placement
) -> tuple[Any, Any, Any]:
    """The body of the pipeline: decode, check, augment, normalize.

    Returns ``(images float CHW, masks, check uint8 scalar)``. For a binary ``spec`` the
    masks are float 1HW in {0, 1} and ``check`` is the largest value of the mask after
    mapping raw values through the dataset's rule (0 background, 1 foreground, 2 a value
    outside ``spec.allowed``). For a multi-class one the masks are uint8 HW1 class maps
    (``0..K-1``, ignored pixels :data:`~segkit.contracts.IGNORE_INDEX`) and ``check`` is 2
    where some raw value is outside ``spec.allowed``, else 0.
    """
    n_params = sum(len(op.params) for op in ops)
    encoded_image, encoded_mask, *param_nodes = fn.external_source(
        source=feed, num_outputs=2 + n_params, batch=True
    )
    params: list[Params] = []
    nodes = iter(param_nodes)
    for op in ops:
        params.append({p.name: next(nodes) for p in op.params})

    image = fn.decoders.image(
        encoded_image,
        device=placement.image_decoder,
        output_type=types.RGB,
        # PIL (segkit.data.reading.read_image) neither applies EXIF rotation nor skips libjpeg's
        # fancy chroma upsampling; do the same so both loaders see the same pixels and
        # masks (stored unrotated) stay aligned with their images.
        adjust_orientation=False,
        jpeg_fancy_upsampling=True,
    )
    raw = fn.decoders.image(
        encoded_mask,
        device=placement.mask_decoder,
        output_type=types.GRAY,
        adjust_orientation=False,
    )
    allowed = [int(v) for v in spec.allowed]
    if spec.is_multiclass:
        # Raw values to classes (several may share one, some may be ignored) in one table
        # lookup; the check is a second one: allowed values 0, anything else 2.
        target = spec.lookup()
        mask = fn.lookup_table(
            raw,
            keys=allowed,
            values=[target[v] for v in allowed],
            default_value=IGNORE_INDEX,
            dtype=types.UINT8,
        )
        check = fn.reductions.max(
            fn.lookup_table(
                raw, keys=allowed, values=[0] * len(allowed), default_value=2, dtype=types.UINT8
            )
        )
    else:
        # The dataset's rule, mask = raw != background, plus the check of allowed values,
        # in one table lookup: allowed values map to 0/1, anything else to 2.
        mask = fn.lookup_table(
            raw,
            keys=allowed,
            values=[int(v != spec.background) for v in allowed],
            default_value=2,
            dtype=types.UINT8,
        )
        check = fn.reductions.max(mask)
    mask = placement.to_ops_device(mask)

    for k in graph_order(ops):
        image, mask = ops[k].build(image, mask, params[k])
    if spec.is_multiclass:  # class indices stay integers (the loader drops the channel)
        return image, mask, check
    masks = fn.cast(fn.transpose(mask, perm=[2, 0, 1], output_layout="CHW"), dtype=types.FLOAT)
    return image, masks, check
