"""The contract of a compiled op, :class:`DaliOp`, and what every op shares.

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

The ops themselves are in :mod:`segkit_dali._geometry` (image and mask together) and
:mod:`segkit_dali._color` (the image only), each with a table ``COMPILERS`` (recipe op
class -> :data:`Compiler`); :mod:`segkit_dali._graph` compiles a recipe with them and
builds the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from segkit import recipes as R
from segkit.recipes.foreground import Points

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
    ``_image`` (photometric) or ``_both`` (geometric).

    ``channel_uniform`` declares that the op treats the three channels alike (the same
    sampling or function on each, one fill for all): a ChannelShuffle before it may run
    after it instead (:func:`segkit_dali._graph.graph_order`). ``keeps_size`` False marks
    the ops that may change an image's size (crops, pads, resizes, 90-degree rotations).
    """

    geometric: ClassVar[bool] = False
    channel_uniform: ClassVar[bool] = False
    #: The op never changes an image's size (a later Resize then needs no same-size skip:
    #: :meth:`segkit_dali._geometry.Resize.resample_all`).
    keeps_size: ClassVar[bool] = True
    #: The op places its windows from each mask's foreground pixels: :meth:`draw` gets
    #: them (``foreground``), read once per sample by the feed
    #: (:func:`segkit.recipes.foreground.foreground_points`).
    reads_foreground: bool = False
    params: tuple[Param, ...] = ()

    def __init__(self, op: R.Op) -> None:
        self.op = op
        self.always = op.p >= 1.0
        if not self.always:
            self.params = (Param("apply", np.bool_), *self.params)

    def draw(
        self,
        rng: np.random.Generator,
        n: int,
        rows: Rows,
        shapes: Shapes,
        foreground: Sequence[Points] | None = None,
    ) -> tuple[Params, Shapes]:
        """Draw this op's parameters for the samples ``rows`` (sizes ``shapes``; for an
        op that :attr:`reads_foreground`, ``foreground``: each row's mask's points).

        Returns each parameter as an array of ``len(rows)`` rows of the parameter's
        dtype and shape, and the samples' sizes after the op.
        """
        m = len(rows)
        fire = np.ones(m, np.bool_) if self.always else uniform(rng, n, rows) < self.op.p
        if self.reads_foreground:
            if foreground is None or len(foreground) != m:
                raise ValueError(f"{type(self).__name__} draws from each row's foreground")
            values, out_shapes = self._draw(rng, n, rows, shapes, fire, foreground)
        else:
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


class PerBatch:
    """A parameter column made batch by batch instead of drawn for the whole epoch.

    For parameters too large to hold for every sample of an epoch (an elastic
    displacement field is ``H x W x 2`` floats): an op's ``draw`` returns one, built from
    what it did draw for the epoch (per-sample seeds), and the feed slices it per batch
    like an array, getting one array per sample (their shapes may differ).
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, rows: slice) -> list[np.ndarray]:
        raise NotImplementedError


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
