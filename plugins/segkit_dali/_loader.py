"""The DALI loader: a Python-side epoch sampler feeding one DALI pipeline.

Data flow per batch::

    sampler (this shard's indices, reshuffled per epoch)
      -> _Feed: read each encoded file (np.fromfile) and check its header once per loader
         (cached); draw every op's random parameters for the whole epoch at once, as
         numpy arrays, from (seed, epoch); per batch, slice them
      -> fn.external_source -> decode -> mask rule + value check -> recipe ops
      -> DALIGenericIterator -> Batch

Why ``fn.external_source`` and not ``fn.readers.file``: one source delivers an image,
its mask and their shared random parameters together, so nothing can unpair them;
the epoch is exactly the batches the sampler plans (the last one partial unless
``drop_last``), so ``len()`` never changes between epochs (DALI #4440); sharding and
shuffling follow the albumentations loader exactly (DistributedSampler-style
padding, the permutation of :func:`segkit.data.sampling.epoch_order`), so both loaders visit
the same samples in the same order.
"""

from __future__ import annotations

import io
import math
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
from PIL import Image

from segkit import recipes as R
from segkit.config import named
from segkit.contracts import Batch, Dataset, MaskSpec, Sample
from segkit.data.reading import (
    image_mode,
    open_image,
    read_image,
    read_raw_mask,
    read_sample,
    to_target,
)
from segkit.data.sampling import check_loader_args, epoch_order, per_rank
from segkit.errors import ConfigError, DataError
from segkit.recipes.foreground import Points, foreground_points
from segkit_dali._base import PerBatch
from segkit_dali._graph import Placement, compile_ops, define_graph

# Formats and modes DALI's decoder is handed as they are. Anything else (GIF, CMYK or
# 16-bit files, colour PNGs of 16 bits per channel (mode RGB;16) too, palette masks, ...)
# is decoded with segkit.data.reading, exactly as the albumentations loader decodes it,
# and handed to DALI re-encoded as a lossless PNG.
_DALI_IMAGE_FORMATS = {"JPEG", "MPO", "PNG"}  # MPO: a camera JPEG with a thumbnail
_DALI_IMAGE_MODES = {"RGB", "L"}

_notice_shown = False


def _notice(reason: str) -> None:
    """Say once per process that DALI runs on the CPU."""
    global _notice_shown
    if not _notice_shown:
        _notice_shown = True
        print(
            f"segkit dali: {reason}, running the DALI pipeline on the CPU (device_id=None)",
            file=sys.stderr,
        )


def choose_device(device: torch.device | str) -> tuple[int | None, torch.device, str]:
    """``(DALI device_id, device of the batches, mode)`` for the engine's ``device``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.cuda.is_available():
            index = dev.index if dev.index is not None else torch.cuda.current_device()
            return index, torch.device("cuda", index), "gpu"
        _notice("no CUDA device")
    else:
        _notice(f"device is {dev}")
    return None, torch.device("cpu"), "cpu"


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's augmentation parameters (every sample's)."""
    mask64 = (1 << 64) - 1
    return np.random.default_rng([seed & mask64, epoch & mask64])


def draw_params(
    ops: Sequence[Any],
    seed: int,
    epoch: int,
    n: int,
    rows: np.ndarray,
    shapes: np.ndarray,
    foreground: Sequence[Points] | None = None,
) -> list[np.ndarray]:
    """Every op's parameters for the samples ``rows`` (of ``n``) in ``epoch``.

    One generator per ``(seed, epoch)``; each op draws its random numbers for all ``n``
    samples of the split at once and keeps the ``rows`` read, so a sample's parameters
    depend only on ``(seed, epoch, index)``: not on the shard, the batch size or the order.
    ``shapes`` are the samples' ``(height, width)``; ``foreground`` their masks' points
    (:func:`segkit.recipes.foreground.foreground_points`), for the ops that read them.

    Returns:
        One array per parameter, in the feed's column order (ops in recipe order, each
        op's ``params`` in order), of ``len(rows)`` rows of the parameter's dtype and shape;
        or a :class:`PerBatch` column, whose rows are made when a batch is sliced.
    """
    rng = epoch_rng(seed, epoch)
    rows = np.asarray(rows, dtype=np.int64)
    shapes = np.asarray(shapes, dtype=np.int64).reshape(len(rows), 2)
    columns: list[Any] = []
    for op in ops:
        if op.reads_foreground:
            values, shapes = op.draw(rng, n, rows, shapes, foreground)
        else:
            values, shapes = op.draw(rng, n, rows, shapes)
        for p in op.params:
            if isinstance(values[p.name], PerBatch):  # made batch by batch by the feed
                assert len(values[p.name]) == len(rows), (p, len(values[p.name]))
                columns.append(values[p.name])
                continue
            column = np.ascontiguousarray(values[p.name], dtype=p.dtype)
            assert column.shape == (len(rows), *p.shape), (p, column.shape)
            columns.append(column)
    return columns


def _png(array: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _header(path: Any, data: np.ndarray) -> tuple[str | None, str, tuple[int, int]]:
    """``(format, mode, (height, width))`` from the file's header, without decoding.

    Raises:
        Exception: whatever PIL raises for an unreadable header.
    """
    with open_image(io.BytesIO(data.tobytes()), path) as im:  # refuses a bomb unread
        return im.format, image_mode(im), (im.height, im.width)  # RGB;16: 16-bit colour


def read_encoded(sample: Sample, spec: MaskSpec) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The encoded image and mask of ``sample`` as DALI will get them, and the image size.

    Files whose header PIL cannot read, and image/mask pairs of different sizes, are
    reported by :mod:`segkit.data.reading`, so the message is the same as with any loader.

    Raises:
        DataError: a file is missing or unreadable, or the sizes differ.
    """
    try:
        image = np.fromfile(sample.image, dtype=np.uint8)
        fmt, mode, size = _header(sample.image, image)
    except Exception:  # segkit.data.reading words the error (missing, truncated, not an image)
        read_image(sample.image)
        raise DataError(f"{sample.image}: cannot read the image header") from None
    if fmt not in _DALI_IMAGE_FORMATS or mode not in _DALI_IMAGE_MODES:
        image = _png(read_image(sample.image))
    try:
        mask = np.fromfile(sample.mask, dtype=np.uint8)
        mfmt, mmode, msize = _header(sample.mask, mask)
    except Exception:
        read_raw_mask(sample.mask, spec)
        raise DataError(f"{sample.mask}: cannot read the mask header") from None
    if mfmt != "PNG" or mmode != "L":
        # Palette, 1-, 2-, 4- or 16-bit or lossy masks (mode L;4 from image_mode: a 4-bit
        # grey PNG): DALI's GRAY output would convert colours or scale bit depths;
        # segkit.data.reading reads the raw values (and checks them).
        mask = _png(read_raw_mask(sample.mask, spec))
    if msize != size:
        read_sample(sample, spec)  # raises the standard size-mismatch message
        raise DataError(
            f"{sample.mask}: mask is {msize[1]}x{msize[0]} but image {sample.image.name} is "
            f"{size[1]}x{size[0]}; an image and its mask must have the same size"
        )
    return image, mask, size


class _Feed:
    """The ``fn.external_source`` callback: one batch of files and parameters per call.

    Each file is read and its header checked once per loader, on the first epoch that
    reads it (``read_encoded``; the bytes, re-encoded if DALI cannot take them, and the
    image size are kept). ``start`` plans an epoch: it reads what is not cached yet and
    draws the epoch's parameters for all its samples at once (:func:`draw_params`);
    each call then only slices those arrays and picks the cached bytes.

    It raises StopIteration after the epoch's last planned batch; the loader plans the
    next epoch (``start``) before resetting the DALI iterator, which then calls it again.
    ``pending`` holds the index lists of batches handed to DALI and not yet returned
    (DALI prefetches), to find the file behind a decoding error.
    """

    def __init__(
        self, samples: list[Sample], spec: MaskSpec, ops: Sequence[Any], seed: int
    ) -> None:
        self.samples = samples
        self.spec = spec
        self.ops = ops
        self.seed = seed
        self.batches: list[list[int]] = []
        self.epoch = 0
        self.cursor = 0
        self.pending: deque[list[int]] = deque()
        self.n_columns = 2 + sum(len(op.params) for op in ops)
        # The cache, by sample index: encoded image and mask, and (height, width); -1 unread.
        self.images: list[np.ndarray | None] = [None] * len(samples)
        self.masks: list[np.ndarray | None] = [None] * len(samples)
        self.shapes = np.full((len(samples), 2), -1, dtype=np.int64)
        # Each mask's foreground pixels, for a crop placed on them (read with the files).
        self.reads_foreground = any(op.reads_foreground for op in ops)
        self.points: list[Points | None] = [None] * len(samples)
        self._first: dict[tuple[Any, Any], int] = {}  # (image, mask) -> the index read
        # The planned epoch's parameters (one array per column) and batch boundaries.
        self.params: list[Any] = []  # arrays, or PerBatch columns
        self.bounds: list[int] = [0]
        self._planned: tuple[int, list[list[int]]] | None = None

    def load(self, indices: Sequence[int]) -> None:
        """Read (and check) the files of ``indices`` not read yet by this loader.

        Raises:
            DataError: a file is missing or unreadable, or the sizes differ; nothing is
                cached for that sample, so the next epoch reports it again.
        """
        for i in indices:
            if self.images[i] is not None:
                continue
            sample = self.samples[i]
            # The N copies of an image an epoch of N crops holds (--crops-per-image) share
            # one read: its bytes, size and foreground are kept once.
            key = (sample.image, sample.mask)
            if (first := self._first.get(key)) is not None:
                self.images[i], self.masks[i] = self.images[first], self.masks[first]
                self.shapes[i], self.points[i] = self.shapes[first], self.points[first]
                continue
            image, mask, shape = read_encoded(sample, self.spec)
            if self.reads_foreground:
                target = to_target(read_raw_mask(sample.mask, self.spec), self.spec)
                self.points[i] = foreground_points(target)
            self.images[i], self.masks[i] = image, mask
            self.shapes[i] = shape
            self._first[key] = i

    def start(self, batches: list[list[int]], epoch: int) -> None:
        if self._planned != (epoch, batches):  # a restarted epoch keeps its parameters
            order = [i for batch in batches for i in batch]
            self.load(order)
            rows = np.asarray(order, dtype=np.int64)
            points = [self.points[i] for i in order] if self.reads_foreground else None
            self.params = draw_params(
                self.ops, self.seed, epoch, len(self.samples), rows, self.shapes[rows], points
            )
            self.bounds = [0, *np.cumsum([len(b) for b in batches]).tolist()]
            self._planned = (epoch, batches)
        self.batches, self.epoch, self.cursor = batches, epoch, 0
        self.pending.clear()

    def stop(self) -> None:
        """Hand DALI no more batches this epoch (to drain a half-read epoch)."""
        self.cursor = len(self.batches)

    def __call__(self) -> list[Any]:
        if self.cursor >= len(self.batches):
            raise StopIteration
        k = self.cursor
        indices = self.batches[k]
        self.cursor += 1
        self.pending.append(indices)
        a, b = self.bounds[k], self.bounds[k + 1]
        # Bytes: one array per sample (sizes differ). Parameters: one dense array per
        # column whose first axis is the batch, as external_source takes a batch (a
        # PerBatch column makes its rows now: one array per sample).
        return [
            [self.images[i] for i in indices],
            [self.masks[i] for i in indices],
            *(column[a:b] for column in self.params),
        ]


@dataclass
class _Pipe:
    pipeline: Any
    iterator: Any
    state: Literal["fresh", "running", "done"] = "fresh"


class DaliLoader:
    """An epoch of :class:`~segkit.contracts.Batch` from a DALI pipeline.

    Attributes:
        samples: The split's samples (all shards).
        device: Where the batches are: ``cuda:N`` in GPU mode, else the CPU.
        mode: ``"gpu"`` or ``"cpu"``.
    """

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        recipe: R.Recipe,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
        clahe_levels: int = 8,
        antialias: bool = False,
        prefetch: int = 2,
    ) -> None:
        check_loader_args(batch_size, shard, num_workers)
        rank, world = shard
        if not isinstance(clahe_levels, int) or clahe_levels < 1:
            raise ConfigError(f"clahe_levels={clahe_levels!r}; expected a positive integer")
        if not isinstance(antialias, bool):
            raise ConfigError(f"antialias={antialias!r}; expected true or false")
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ConfigError(f"prefetch={prefetch!r}; expected a positive integer (2 is usual)")

        self.samples = dataset.samples(split)
        self.split = split
        self.spec = dataset.mask_spec
        self.batch_size = batch_size
        self.train = train
        self.recipe = recipe.name
        self.seed = seed
        self.shard = (rank, world)
        self.drop_last = drop_last
        self.num_threads = max(1, num_workers)  # DALI needs a thread; 0 workers -> 1
        self.prefetch = prefetch
        self.epoch = 0
        device_id, self.device, self.mode = choose_device(device)
        self.ops = compile_ops(
            recipe.ops(train),
            clahe_levels=clahe_levels,
            antialias=antialias,
            multiclass=self.spec.is_multiclass,
            gpu=device_id is not None,
            resample_all=not train,
        )
        self.placement = Placement(device_id)
        self._feed = _Feed(self.samples, self.spec, self.ops, seed)
        self._pipe: _Pipe | None = None

    # ------------------------------------------------------------------ contract

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle and the augmentations for ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def feed_batches(self) -> Iterator[list[Any]]:
        """The epoch's batches as the feed hands them to ``fn.external_source``, without
        running DALI: per batch, the encoded images, the encoded masks, then one array per
        random parameter (batch first). For tests and the feed benchmark.

        Raises:
            RuntimeError: the loader is being iterated (the feed is in use).
        """
        if self._pipe is not None and self._pipe.state == "running":
            raise RuntimeError("feed_batches() while the loader is being iterated")
        self._feed.start(self._plan(), self.epoch)
        try:
            while True:
                try:
                    columns = self._feed()
                except StopIteration:
                    return
                self._feed.pending.popleft()
                yield columns
        finally:
            self._feed.stop()

    def __iter__(self) -> Iterator[Batch]:
        # Everything happens on the first next(), so an iterator made and never used
        # leaves the pipeline as it was.
        pipe = self._ready_pipe()
        self._feed.start(self._plan(), self.epoch)
        if pipe.state == "done":
            pipe.iterator.reset()  # DALI calls the feed again: the new epoch's batches
        pipe.state = "running"
        it = iter(pipe.iterator)
        while True:
            error: RuntimeError | None = None
            try:
                out = next(it)
            except StopIteration:
                pipe.state = "done"
                return
            except DataError:  # raised by the feed: a file failed its header checks
                self._pipe = None
                raise
            except RuntimeError as e:  # DALI: decoding (or something else) failed
                error = e
            if error is not None:
                self._pipe = None
                if _UNEVEN in str(error):  # DALI's batch of images at several sizes
                    raise self._unsized(self._feed.pending[0]) from None
                raise self._explain([i for b in self._feed.pending for i in b], error)
            indices = self._feed.pending.popleft()
            data = out[0]
            self._check_masks(indices, data["check"])
            masks = data["masks"]
            if self.spec.is_multiclass:
                masks = masks[..., 0]  # (N, H, W, 1) class indices -> (N, H, W)
            yield Batch(data["images"], masks)

    # ------------------------------------------------------------------ internals

    def _per_rank(self) -> int:
        return per_rank(len(self.samples), self.shard[1])

    def _plan(self) -> list[list[int]]:
        order = epoch_order(
            len(self.samples),
            shuffle=self.train,
            seed=self.seed,
            epoch=self.epoch,
            shard=self.shard,
        )
        bs = self.batch_size
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        return batches

    def _ready_pipe(self) -> _Pipe:
        """The pipeline, built on first use; a half-read epoch is drained first."""
        if self._pipe is None:
            self._pipe = self._build()
        pipe = self._pipe
        if pipe.state == "running":
            # The previous epoch was abandoned (a `break`): stop feeding and let the
            # batches DALI already prefetched run out, so the iterator can be reset.
            self._feed.stop()
            try:
                for _ in pipe.iterator:
                    pass
            except Exception:  # a broken pipeline: start over with a new one
                self._pipe = pipe = self._build()
            else:
                pipe.state = "done"
        return pipe

    def _build(self) -> _Pipe:
        try:
            pipeline = self._pipeline(conditionals=False)
        except TypeError as e:  # an op branches per sample (``if p["apply"]:``)
            if "conditional context" not in str(e):
                raise
            pipeline = self._pipeline(conditionals=True)
        iterator = DALIGenericIterator(
            [pipeline],
            ["images", "masks", "check"],
            # The feed ends the epoch with StopIteration, after exactly the planned
            # batches (the last one partial): PARTIAL returns that batch as it is.
            last_batch_policy=LastBatchPolicy.PARTIAL,
            auto_reset=False,
            prepare_first_batch=False,  # the first epoch is planned in __iter__
        )
        return _Pipe(pipeline, iterator)

    def _pipeline(self, *, conditionals: bool) -> Any:
        """The pipeline, built. DALI's conditional execution (``if`` on a DataNode) costs
        an AutoGraph conversion of the graph's Python (about 0.7 s a pipeline on a 2-core
        machine): only a recipe with a per-sample branch (an op with ``p < 1``,
        RandomRotate90's transpose, CLAHE's levels) needs it; an evaluation recipe (resize,
        normalize) is defined without it, and a graph that does branch says so the moment
        it is defined (DALI's TypeError), before anything is built."""
        graph = pipeline_def(define_graph, enable_conditionals=conditionals)
        pipeline = graph(
            feed=self._feed,
            ops=self.ops,
            spec=self.spec,
            placement=self.placement,
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=self.placement.device_id,
            prefetch_queue_depth=self.prefetch,
            # No DALI random operator is used (parameters come from the feed); the seed
            # only fixes DALI's internal choices.
            seed=self.seed & 0x7FFFFFFF,
        )
        pipeline.build()
        return pipeline

    def _check_masks(self, indices: list[int], check: torch.Tensor) -> None:
        bad = torch.nonzero(check.reshape(-1) > 1).reshape(-1).tolist()
        if not bad:
            return
        self._pipe = None
        sample = self.samples[indices[bad[0]]]
        read_raw_mask(sample.mask, self.spec)  # words the error: which values, which allowed
        allowed = ", ".join(map(str, self.spec.allowed))
        raise DataError(
            f"{sample.mask}: DALI decoded values other than {allowed} from this mask; "
            "re-save it as an 8-bit grayscale PNG"
        )

    def _unsized(self, indices: list[int]) -> ConfigError:
        """The error of a batch DALI cannot hand over as one tensor: the recipe's ops
        left its images at different sizes (the albumentations loader's line, with two
        of the sizes the batch's files have, where they differ)."""
        sizes: list[tuple[int, int]] = []
        for i in indices:
            try:
                with Image.open(self.samples[i].image) as image:
                    width, height = image.size
            except OSError:  # unreadable: the message goes without sizes
                continue
            if (height, width) not in sizes:
                sizes.append((height, width))
        return R.unsized_batch_error(self.recipe, "train" if self.train else "eval", sizes)

    def _explain(self, indices: list[int], error: RuntimeError) -> BaseException:
        """Turn a DALI failure into a DataError naming the file, if a file is to blame.

        First every in-flight sample is read with segkit.data.reading (a corrupt or truncated
        file gets the same message as with any loader); if PIL reads them all, each
        image is decoded alone with DALI to find the one only DALI rejects. If no file
        is to blame, the DALI error itself is returned, with its traceback.
        """
        samples = [self.samples[i] for i in dict.fromkeys(indices)]
        for sample in samples:
            read_sample(sample, self.spec)  # raises DataError naming the file
        reason = _dali_reason(error)
        for sample in samples:
            image, mask, _ = read_encoded(sample, self.spec)
            for path, data, gray in ((sample.image, image, False), (sample.mask, mask, True)):
                if not _dali_decodes(data, gray, self.placement):
                    return DataError(
                        f"{path}: DALI cannot decode this file although PIL can "
                        f"({reason}); re-save it as a baseline JPEG or a PNG, "
                        f"or use {named('loader', 'albumentations', as_typed=True)}"
                    )
        return error


#: In DALI's error when a pipeline's outputs in one batch differ in shape (its PyTorch
#: iterator needs a dense batch): ``The batch must be representable as a tensor - it must
#: have uniform shape and be allocated in contiguous memory``.
_UNEVEN = "must have uniform shape"


def _dali_reason(error: BaseException) -> str:
    """The operator's own message inside a DALI pipeline error (after "encountered:")."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if "encountered:" in lines and lines.index("encountered:") + 1 < len(lines):
        return lines[lines.index("encountered:") + 1]
    return lines[-1] if lines else type(error).__name__


def _dali_decodes(data: np.ndarray, gray: bool, placement: Any) -> bool:
    """Whether DALI's decoder (on ``placement``'s device) accepts one encoded file."""

    @pipeline_def(batch_size=1, num_threads=1, device_id=placement.device_id)
    def probe() -> Any:
        encoded = fn.external_source(source=lambda: [data], batch=True)
        return fn.decoders.image(
            encoded,
            device=placement.mask_decoder if gray else placement.image_decoder,
            output_type=types.GRAY if gray else types.RGB,
            adjust_orientation=False,
        )

    try:
        pipe = probe()
        pipe.build()
        pipe.run()
    except RuntimeError:
        return False
    return True
