"""The predictor: a trained checkpoint turned into probabilities for images of any size,
in batches, whole (resized to the training size) or in tiles, with test-time flips.

``segkit predict`` and ``segkit evaluate --mode/--tta`` use it, and so can a script::

    predictor = segkit.Predictor("runs/unet/best.pt", device="cuda", mode="tile", tta="flip")
    probs = predictor.predict("slide.png")      # (H, W) foreground probability, or (K, H, W)

Three modes:

* ``resize``: the image is resized to the training size (bilinear, as the evaluation
  recipe does), the logits are resized back to the image's size and then turned into
  probabilities. Images of any sizes share one batch.
* ``tile``: the image is predicted at its own resolution in overlapping tiles of the
  training size (:mod:`segkit.inference.tiling`), for images much larger than what the model was
  trained on, where resizing would lose fine structure.

* ``whole``: the image at its own resolution in one pass, padded by reflection to the
  model's ``min_input_multiple`` and the probabilities cropped back
  (:func:`segkit.inference.tiling.padded_forward`): for models trained at native resolution
  (crops), on images that fit in memory.

``auto`` decides from how the checkpoint's model was trained, by the rule native
evaluation uses (:func:`segkit.inference.native.trained_input`): a model trained on images
resized to the training size (its recipe's eval ops resize: ``type1``-``type3``,
``natural``) gets ``resize`` for every image, whatever its size, since tiles would show it
objects many times larger than it learnt; a model trained at native resolution (its
recipe's eval ops set no size: ``microscopy``, ``RandomCrop`` recipe files) gets
``whole`` up to :data:`segkit.inference.native.WHOLE_MAX_PIXELS` pixels, else ``tile``,
since resizing would change the scale it learnt; an image that does not fit in memory
whole is tiled instead, and so is every later image at least as large (one line on
stderr says so). A checkpoint that records no recipe is rebuilt with the default one,
which resizes. Test-time augmentation (``tta``) averages
the probabilities of the image and its flips (``flip``: horizontal; ``flip_hv``:
horizontal, vertical and both), in any mode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from segkit.build import check_size_multiple, resolve_device
from segkit.config import checked_keywords, named_as
from segkit.data.reading import decode_image, is_deep_colour, pil_to_rgb, read_image
from segkit.errors import ConfigError, DataError, described
from segkit.inference.forward import resize_to, resized_batch
from segkit.inference.native import (
    WHOLE_MAX_PIXELS,
    image_mode,
    tile_from_now_on,
    trained_input,
)
from segkit.inference.options import PredictorOptions
from segkit.inference.tiling import Tiling, padded_forward, sliding_window
from segkit.inference.trained import Trained, open_trained
from segkit.recipes import Normalize
from segkit.system.memory import is_out_of_memory, release
from segkit.task import Task
from segkit.training.precision import create_precision
from segkit.training.runtime import Runtime

#: Test-time augmentation (:data:`segkit.config.TTAS`) -> the flips averaged (dims of
#: an (N, C, H, W) batch).
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "flip": ((), (3,)),
    "flip_hv": ((), (3,), (2,), (2, 3)),
}

K = TypeVar("K")


def mode_line(mode: str, counts: Mapping[str, int]) -> str:
    """``mode`` as a result line names it: ``auto`` with what it chose for how many images
    (``auto (resize 18, whole 2)``); any other mode, or ``auto`` with no image, as it is."""
    if mode != "auto" or not counts:
        return mode
    return f"auto ({', '.join(f'{m} {n}' for m, n in sorted(counts.items()))})"


@checked_keywords("segkit.Predictor", PredictorOptions)
class Predictor:
    """Probabilities from a checkpoint, for arrays or image files.

    Args:
        checkpoint: A ``best.pt`` or ``last.pt`` of a run.
        device: ``auto`` (the first GPU, else the CPU), ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (autocast on the forward).
        num_workers: Threads reading image files (default: the runtime's loader workers).
        **options: How images are predicted (:class:`~segkit.inference.options.PredictorOptions`):
            ``mode`` (``resize``, ``tile``, ``whole`` or ``auto``; see the module
            docstring), ``tta`` (``none``, ``flip``, ``flip_hv``), ``tile`` (the tile side,
            default the training size; a multiple of the model's ``min_input_multiple``),
            ``overlap`` (in [0, 1)), ``blend`` (``gaussian`` or ``linear``) and
            ``batch_size`` (images or tiles per forward pass).

    Raises:
        CheckpointError: the checkpoint is unreadable or its model is not installed.
        ConfigError: a bad mode, tta, tile, overlap, blend, device or precision, named as
            it was given (``mode='tiles'``); UnknownSettingError (also a TypeError): a
            keyword no option has, with its close match.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str = "auto",
        precision: str = "auto",
        num_workers: int | None = None,
        **options: Any,
    ) -> None:
        settings = PredictorOptions(**options)
        trained = open_trained(
            checkpoint, device=device, precision=precision, num_workers=num_workers
        )
        self._setup(trained, settings)

    @classmethod
    def of(cls, trained: Trained, options: PredictorOptions | None = None) -> Predictor:
        """A predictor over a model already opened (:func:`~segkit.inference.trained.open_trained`)."""
        self = cls.__new__(cls)
        self._setup(trained, options or PredictorOptions())
        return self

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        *,
        image_size: int,
        task: Task | None = None,
        normalize: Normalize | None = None,
        native: bool = False,
        device: str | Runtime = "cpu",
        **options: Any,
    ) -> Predictor:
        """A predictor over a model in memory (:meth:`Trained.from_model
        <segkit.inference.trained.Trained.from_model>`: trained at ``image_size``, resized
        unless ``native``, normalized by ``normalize``), run on ``device`` in fp32 with no
        reading threads, or as a :class:`segkit.build.Runtime` given as ``device`` says;
        ``options`` as for the constructor."""
        if isinstance(device, Runtime):
            runtime = device
        else:
            dev = resolve_device(device)
            runtime = Runtime(dev, create_precision("fp32", dev), False, 0, 0)
        trained = Trained.from_model(
            model, image_size=image_size, runtime=runtime, task=task, normalize=normalize,
            native=native,
        )  # fmt: skip
        return cls.of(trained, PredictorOptions(**options))

    def _setup(self, trained: Trained, options: PredictorOptions) -> None:
        self.trained = trained
        self.options = options
        # What scripts read from a predictor (the model's, and the options').
        self.model, self.task, self.config = trained.model, trained.task, trained.config
        self.runtime, self.device = trained.runtime, trained.device
        self.num_workers = trained.runtime.num_workers
        self.image_size, self.native = trained.image_size, trained.native
        self.mode, self.tta, self.batch_size = options.mode, options.tta, options.batch_size
        self.tile = options.tile if options.tile is not None else trained.image_size
        check_size_multiple(trained.label, self.tile, trained.multiple, "tile")
        self.tiling = Tiling(self.tile, options.overlap, options.blend, options.batch_size)
        # auto: the largest image predicted whole; lowered below an image that ran out
        # of memory whole, which is then tiled.
        self.whole_max_pixels = WHOLE_MAX_PIXELS
        # Read now, so that a recipe the predictor cannot reproduce fails here rather
        # than at the first image.
        trained.normalization  # noqa: B018

    # ------------------------------------------------------------------ public

    def __repr__(self) -> str:
        """One line for a notebook cell: the checkpoint, model and task, and how images
        are predicted (mode, tta, tile) and where."""
        return (
            f"Predictor(checkpoint={self.trained.path!r}, model={self.trained.label!r}, "
            f"task={self.task.describe()!r}, image_size={self.image_size}, mode={self.mode!r}, "
            f"tta={self.tta!r}, tile={self.tile}, device={str(self.device)!r})"
        )

    @property
    def channels(self) -> int:
        """Probability channels: 1 (binary) or K."""
        return self.task.num_classes

    def mode_for(self, height: int, width: int) -> str:
        """``resize``, ``tile`` or ``whole`` for an image of this size: the mode given, or
        what ``auto`` chooses from how the model was trained (see the module docstring)."""
        if self.mode != "auto":
            return self.mode
        return image_mode(trained_input(self.native), height, width, self.whole_max_pixels)

    def auto_rule(self) -> str:
        """What ``auto`` does with this model and why, in one phrase (for ``segkit
        predict``'s first line)."""
        if trained_input(self.native) == "resize":
            choice = "resize"
        else:
            side = int(WHOLE_MAX_PIXELS**0.5)
            choice = f"whole images (tiles above {side}x{side})"
        mode = named_as("mode", "auto", as_typed=True)
        return f"{mode}: {choice}, as the model was trained on {self.trained.training()}"

    def predict(self, image: np.ndarray | Any | str | Path) -> np.ndarray:
        """Probabilities of one image: ``(H, W)`` foreground probability for a binary model,
        the ``(K, H, W)`` softmax for a K-class one, float32, at the image's own size.

        ``image`` is an image file's path (read as ``segkit predict`` reads it), its
        bytes or a binary file object holding them (an upload: decoded as the file
        would be), a PIL image (converted as a file is: :func:`as_rgb`), or a uint8
        array of 0-255 pixels:
        ``(H, W, 3)`` RGB, ``(H, W)`` or ``(H, W, 1)`` grey (repeated into RGB) or
        ``(H, W, 4)`` RGBA (the alpha channel dropped). Float arrays are refused: pass
        ``(x * 255).round().astype(np.uint8)`` for values in [0, 1].

        Raises:
            DataError: the file or bytes cannot be decoded.
            ConfigError: an array of another shape or dtype, or another type.
        """
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray | Any]) -> list[np.ndarray]:
        """:meth:`predict` for several images of any kind it takes (batched as the mode
        allows)."""
        return [p for _, _, p in self.predict_many((i, im) for i, im in enumerate(images))]

    def predict_many(
        self, items: Iterable[tuple[K, np.ndarray | Exception]]
    ) -> Iterator[tuple[K, np.ndarray | Exception, np.ndarray | None]]:
        """Predict a stream of ``(key, image)``, in order, ``batch_size`` resize-mode images
        per forward pass. An item whose image is an exception (a file that could not be
        read) comes back as ``(key, exception, None)`` in its place.

        Yields:
            ``(key, image, probabilities)``.
        """
        pending: list[tuple[K, np.ndarray]] = []

        def flush() -> Iterator[tuple[K, np.ndarray | Exception, np.ndarray | None]]:
            if pending:
                probs = self._predict_resized([im for _, im in pending])
                yield from ((k, im, p) for (k, im), p in zip(pending, probs, strict=True))
                pending.clear()

        for key, image in items:
            if isinstance(image, Exception):
                yield from flush()
                yield key, image, None
                continue
            image = as_rgb(image)
            mode = self.mode_for(*image.shape[:2])
            if mode == "tile":
                yield from flush()
                yield key, image, self._predict_tiled(image)
                continue
            if mode == "whole":
                yield from flush()
                yield key, image, self._predict_whole_or_tiled(image)
                continue
            pending.append((key, image))
            if len(pending) == self.batch_size:
                yield from flush()
        yield from flush()

    def predict_files(
        self, paths: Sequence[Path]
    ) -> Iterator[tuple[Path, np.ndarray | Exception, np.ndarray | None]]:
        """:meth:`predict_many` over image files read by ``num_workers`` threads; an
        unreadable file comes back as its :class:`~segkit.errors.DataError`."""
        yield from self.predict_many(read_parallel(paths, read_image, self.num_workers))

    # ------------------------------------------------------------------ machinery

    def _logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The float32 logits of a normalized batch and of each test-time flip of it,
        flipped back."""
        out = []
        for dims in TTA_FLIPS[self.tta]:
            xi = x.flip(dims) if dims else x
            y = self.trained.logits(xi)
            out.append(y.flip(dims) if dims else y)
        return out

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, 1) if self.task.multiclass else torch.sigmoid(logits)

    @torch.no_grad()
    def _predict_resized(self, images: list[np.ndarray]) -> list[np.ndarray]:
        batch = resized_batch(images, self.image_size, self.device)
        variants = self._logits(self.trained.normalize(batch))
        out = []
        for i, image in enumerate(images):
            probs = None
            for logits in variants:
                full = resize_to(logits[i : i + 1], image.shape[:2])
                p = self._activate(full)
                probs = p if probs is None else probs + p
            assert probs is not None
            probs = probs / len(variants) if len(variants) > 1 else probs
            out.append(self._result(probs[0]))
        return out

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The probabilities of a normalized batch, averaged over the test-time flips."""
        variants = self._logits(x)
        return sum(self._activate(v) for v in variants) / len(variants)  # type: ignore[return-value]

    @torch.no_grad()
    def _predict_whole(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float()
        probs = padded_forward(
            self._probabilities, self.trained.normalize(x), self.trained.multiple
        )
        return self._result(probs[0])

    def _predict_whole_or_tiled(self, image: np.ndarray) -> np.ndarray:
        """The image whole; if that runs out of memory: tiled under ``auto`` (and every
        later image at least as large: :meth:`mode_for` then says ``tile``), an error
        naming the fix under ``--mode whole``."""
        try:
            return self._predict_whole(image)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            error = described(e)
        height, width = image.shape[:2]  # (outside the except: the traceback's tensors are gone)
        if self.mode != "auto":
            release(self.device)
            raise ConfigError(
                f"--mode whole: an image of {width}x{height} pixels does not fit in memory "
                f"in one pass on {self.device} ({error[:200]}); predict it in tiles with "
                "--mode tile, or --mode auto, which tiles what does not fit whole"
            )
        self.whole_max_pixels = tile_from_now_on(
            self.whole_max_pixels, height, width, self.device, "predicted"
        )
        return self._predict_tiled(image)

    @torch.no_grad()
    def _predict_tiled(self, image: np.ndarray) -> np.ndarray:
        def predict(tiles: torch.Tensor) -> torch.Tensor:
            return self._probabilities(self.trained.normalize(tiles))

        probs = sliding_window(
            torch.from_numpy(image).permute(2, 0, 1),
            predict,
            self.tiling,
            channels=self.channels,
            device=self.device,
        )
        return self._result(probs)

    def _result(self, probs: torch.Tensor) -> np.ndarray:
        """``(C, H, W)`` to the numpy result: ``(H, W)`` for binary."""
        probs = probs.float().cpu()
        return (probs if self.task.multiclass else probs[0]).numpy()


def _is_pil(image: Any) -> bool:
    """Whether ``image`` is a PIL image (without importing PIL for arrays and paths)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover -- PIL is a dependency
        return False
    return isinstance(image, Image.Image)


def as_rgb(image: Any) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array of what :meth:`Predictor.predict` takes.

    A PIL image is converted as :func:`segkit.data.reading.read_image` converts a file: one
    channel of more than 8 bits scaled from its darkest to its brightest value
    (:func:`~segkit.data.reading.to_8bit`), anything else by PIL's ``convert("RGB")``
    (grey repeated, alpha and palettes resolved); a colour image of 16 bits per channel
    opened from a file, not yet loaded, is read from that file as ``read_image`` reads it
    (scaled, not cut to its top 8 bits). A uint8 array may be ``(H, W, 3)``,
    ``(H, W)`` or ``(H, W, 1)`` grey (repeated into RGB) or ``(H, W, 4)`` RGBA (the alpha
    dropped).

    A path (``str`` or path-like) is read by
    :func:`~segkit.data.reading.read_image`, ``bytes`` (or a ``bytearray``, a
    ``memoryview``, a binary file object) holding an image file by
    :func:`~segkit.data.reading.decode_image`.

    Raises:
        ConfigError: another type, shape or dtype, saying what to pass instead.
        DataError: a file or bytes that cannot be decoded.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(Path(image))
    if isinstance(image, (bytes, bytearray, memoryview)) or hasattr(image, "read"):
        return decode_image(image)
    if _is_pil(image):
        if is_deep_colour(image) and getattr(image, "filename", ""):
            return read_image(Path(image.filename))  # PIL's load keeps the top 8 bits
        image.load()
        return pil_to_rgb(image)
    if not isinstance(image, np.ndarray):
        several = (
            "; for several images call predict_batch(images), which returns a list"
            if isinstance(image, (list, tuple))
            else ""
        )
        raise ConfigError(
            f"predict: expected an image file path, an image file's bytes, a PIL image or a "
            f"uint8 numpy array, got {type(image).__name__}{several}"
        )
    if image.dtype != np.uint8:
        hint = (
            "for values in [0, 1] pass (x * 255).round().astype(np.uint8)"
            if image.dtype.kind == "f"
            else "for more than 8 bits a channel, scale it first, e.g. with "
            "segkit.data.reading.to_8bit (as a 16-bit file is read)"
        )
        raise ConfigError(
            f"predict: expected a uint8 image array of 0-255 pixels, got {image.dtype} "
            f"{image.shape}; {hint}"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(
            f"predict: expected an (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA uint8 array, "
            f"got shape {image.shape}"
        )
    # Copied only where needed: np.asarray(PIL image) is read-only, and torch warns on one.
    return np.require(image, requirements=("C", "W"))


def read_parallel(
    items: Sequence[K], read: Callable[[K], Any], workers: int, ahead: int = 4
) -> Iterator[tuple[K, Any]]:
    """``(item, read(item))`` in order, read by ``workers`` threads (PIL and OpenCV
    release the GIL while decoding; threads start at once and need no main guard), at
    most ``workers * ahead`` items ahead of the consumer so memory stays bounded. A
    :class:`~segkit.errors.DataError` is returned in place of the result."""

    def safe(item: K) -> Any:
        try:
            return read(item)
        except DataError as e:
            return e

    if workers <= 0:
        for item in items:
            yield item, safe(item)
        return
    window = max(1, workers * ahead)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segkit-read") as pool:
        queue: list[tuple[K, Future[Any]]] = []
        it = iter(items)
        for item in it:
            queue.append((item, pool.submit(safe, item)))
            if len(queue) >= window:
                break
        while queue:
            item, future = queue.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(safe, nxt)))
            yield item, future.result()
