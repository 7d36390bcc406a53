"""A recipe compiled into a DALI graph: :func:`compile_ops` turns its ops into
:class:`~segkit_dali._base.DaliOp` objects with the tables of :mod:`segkit_dali._geometry`
and :mod:`segkit_dali._color`; :func:`define_graph` is the pipeline's body (decode, check,
augment, normalize), run where :class:`Placement` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nvidia.dali.fn as fn
import nvidia.dali.types as types

from segkit import recipes as R
from segkit.config import named
from segkit.contracts import IGNORE_INDEX, MaskSpec
from segkit.errors import ConfigError
from segkit_dali import _color, _geometry
from segkit_dali._base import CompileContext, Compiler, DaliOp, Params

#: Recipe op class -> the function that compiles it: the geometric ops, then the
#: photometric ones.
COMPILERS: dict[type[R.Op], Compiler] = {**_geometry.COMPILERS, **_color.COMPILERS}


def compile_ops(
    ops: Sequence[R.Op],
    *,
    clahe_levels: int = 8,
    antialias: bool = False,
    multiclass: bool = False,
    gpu: bool = False,
    resample_all: bool = False,
) -> list[DaliOp]:
    """Translate recipe ops into :class:`DaliOp` objects (no graph is built yet).

    ``resample_all`` (the evaluation pipelines): a Resize with no op before it that may
    change a size resamples every sample instead of skipping those already at the size
    (:meth:`segkit_dali._geometry.Resize.resample_all`), so the graph needs no
    conditional execution. Training keeps the skip: a dataset already at the training
    size would otherwise resample every image of every epoch (~1.7 ms each at 256 px on
    the CPU), and its pipeline's buffers take epochs longer to settle.

    Ops with ``p == 0`` are dropped. A recipe always ends with ``Normalize``; the DALI
    graph turns the image into float CHW there, so no op may follow a ``Normalize``.

    Raises:
        ConfigError: an op this loader does not know or cannot do (in one line naming the
            op and the loader that can), or an op after a Normalize.
    """
    context = CompileContext(clahe_levels, antialias, multiclass, gpu)
    out: list[DaliOp] = []
    for i, op in enumerate(ops):
        name = type(op).__name__
        if out and isinstance(out[-1], _color.Normalize):
            raise ConfigError(
                f"the dali loader cannot run {name} after Normalize (op {i}): its graph "
                "turns images into normalized float CHW at Normalize; move Normalize last"
            )
        compile_one = COMPILERS.get(type(op))
        if compile_one is None and op.loaders:  # a plugin's op, declaring its loaders
            raise ConfigError(
                f"the dali loader cannot run {op!r}: {name} is a plugin's op that runs on the "
                f"{' or '.join(op.loaders)} loader; use "
                f"{named('loader', op.loaders[0], as_typed=True)}, or segkit.recipes ops"
            )
        if compile_one is None:
            raise ConfigError(
                f"the dali loader cannot compile op {name} ({op!r}); it supports "
                f"{', '.join(c.__name__ for c in COMPILERS)}. Use another recipe or "
                f"{named('loader', 'albumentations', as_typed=True)} if that one knows it"
            )
        compiled = compile_one(op, context)
        if op.p > 0.0:
            out.append(compiled)
    for compiled in out if resample_all else ():  # up to the first op that may change a size
        if isinstance(compiled, _geometry.Resize):
            compiled.resample_all()  # nothing before it made an image that size: no skip
        if not compiled.keeps_size:
            break
    return out


def graph_order(ops: Sequence[DaliOp]) -> list[int]:
    """The order in which the graph applies ``ops``: the recipe's order, except that a
    ChannelShuffle is moved later past ops that treat the three channels alike (those
    that declare ``channel_uniform``).

    Permuting channels commutes exactly with flips, resizes and crops (the same weights
    for every channel, rounded per channel) and with gamma, brightness/contrast and tone
    curves (the same function of each channel value), so the output is bit for bit the
    same, and the shuffle runs on the small resized image instead of the decoded photo
    (``fn.coord_transform`` costs ~35 ns a pixel on the CPU). It never moves past CLAHE,
    whose luminance weighs R, G and B differently, nor past Normalize (per-channel mean
    and std). Parameters are still drawn in the recipe's order.
    """
    order = list(range(len(ops)))
    i = len(order) - 1
    while i >= 0:
        if isinstance(ops[order[i]], _color.ChannelShuffle):
            j = i
            while j + 1 < len(order) and ops[order[j + 1]].channel_uniform:
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
