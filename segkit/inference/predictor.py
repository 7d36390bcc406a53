"""The predictor: a trained checkpoint turned into probabilities for images of any size,
in batches, whole (resized to the training size) or in tiles, with test-time flips.

``segkit predict`` and ``segkit evaluate --mode/--tta`` use it, and so can a script::

    predictor = segkit.Predictor("runs/unet/best.pt", device="cuda", mode="tile", tta="flip")
    probs = predictor.predict("slide.png")      # (H, W) foreground probability, or (K, H, W)

Two modes:

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

``auto`` picks, for a model trained on resized images, ``resize`` for an image at most
twice the training size on its longer side, else ``tile``; for a model trained at native
resolution (its recipe's eval ops set no size: ``microscopy``, ``RandomCrop`` recipe
files), ``whole`` up to :data:`segkit.inference.native.WHOLE_MAX_PIXELS` pixels, else ``tile``:
resizing would change the scale it learnt. Test-time augmentation (``tta``) averages the probabilities of the
image and its flips (``flip``: horizontal; ``flip_hv``: horizontal, vertical and both),
in either mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from segkit.config import BLENDS, PREDICT_MODES
from segkit.config import PredictMode as Mode
from segkit.config import TTAName as TTA
from segkit.errors import ConfigError, DataError
from segkit.task import Task

#: Test-time augmentation (:data:`segkit.config.TTAS`) -> the flips averaged (dims of
#: an (N, C, H, W) batch).
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "flip": ((), (3,)),
    "flip_hv": ((), (3,), (2,), (2, 3)),
}
#: Image files a folder is searched for (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

K = TypeVar("K")


class Predictor:
    """Probabilities from a checkpoint, for arrays or image files.

    Args:
        checkpoint: A ``best.pt`` or ``last.pt`` of a run.
        device: ``auto`` (the first GPU, else the CPU), ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (autocast on the forward).
        mode: ``resize``, ``tile`` or ``auto`` (see the module docstring).
        tta: ``none``, ``flip`` (horizontal) or ``flip_hv`` (4 passes).
        tile: Tile side for ``tile`` mode (default: the training size); a multiple of the
            model's ``min_input_multiple``.
        overlap: Fraction of a tile shared with its neighbour, in [0, 1).
        blend: Tile weights, ``gaussian`` or ``linear``.
        batch_size: Images (resize) or tiles (tile) per forward pass.
        num_workers: Threads reading image files (default: the runtime's loader workers).

    Raises:
        CheckpointError: the checkpoint is unreadable or its model is not installed.
        ConfigError: a bad mode, tta, tile, overlap, blend, device or precision.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str = "auto",
        precision: str = "auto",
        mode: Mode | str = "auto",
        tta: TTA | str = "none",
        tile: int | None = None,
        overlap: float = 0.25,
        blend: str = "gaussian",
        batch_size: int = 8,
        num_workers: int | None = None,
    ) -> None:
        from segkit.build import build_recipe, resolve_runtime
        from segkit.inference.trained import checkpoint_task, open_checkpoint, restore_model

        path = Path(checkpoint)
        config, ckpt = open_checkpoint(
            path, device=device, precision=precision, num_workers=num_workers
        )
        runtime = resolve_runtime(config)
        model = restore_model(path, config, ckpt, runtime)
        recipe = build_recipe(config)
        mean, std = eval_normalization(recipe.eval, config.image_size)
        self.config = config
        self._setup(
            model,
            task=checkpoint_task(ckpt),
            image_size=config.image_size,
            native=recipe.native_eval,
            mean=mean,
            std=std,
            runtime=runtime,
            label=config.model,
            mode=mode,
            tta=tta,
            tile=tile,
            overlap=overlap,
            blend=blend,
            batch_size=batch_size,
        )

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        *,
        image_size: int,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        task: Task | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        runtime: Any = None,
        label: str = "model",
        native: bool = False,
        **options: Any,
    ) -> Predictor:
        """A predictor over a model in memory (``options`` as for the constructor), run
        on ``device`` in ``precision`` with no reading threads, or as ``runtime`` (a
        :class:`segkit.build.Runtime`) says."""
        from segkit.build import Runtime, resolve_device
        from segkit.training.precision import create_precision

        if runtime is None:
            dev = resolve_device(device)
            runtime = Runtime(dev, create_precision(precision, dev), False, 0, 0)
        dev = runtime.device
        self = cls.__new__(cls)
        self.config = None
        self._setup(
            model.to(dev).eval(),
            task=task or Task(),
            image_size=image_size,
            mean=mean,
            std=std,
            runtime=runtime,
            label=label,
            native=native,
            **options,
        )
        return self

    def _setup(
        self,
        model: torch.nn.Module,
        *,
        task: Task,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        runtime: Any,
        label: str,
        native: bool = False,
        mode: Mode | str = "auto",
        tta: TTA | str = "none",
        tile: int | None = None,
        overlap: float = 0.25,
        blend: str = "gaussian",
        batch_size: int = 8,
    ) -> None:
        from segkit.build import check_size_multiple
        from segkit.inference.tiling import check_overlap

        if mode not in PREDICT_MODES:
            raise ConfigError(f"--mode {mode!r}: expected one of {', '.join(PREDICT_MODES)}")
        if tta not in TTA_FLIPS:
            raise ConfigError(f"--tta {tta!r}: expected one of {', '.join(TTA_FLIPS)}")
        if blend not in BLENDS:
            raise ConfigError(f"--blend {blend!r}: expected one of {', '.join(BLENDS)}")
        if batch_size < 1:
            raise ConfigError(f"--batch-size {batch_size}: expected 1 or more")
        self.model = model
        self.task = task
        self.image_size = image_size
        self.native = native
        self.runtime = runtime
        self.device = runtime.device
        self.mode = mode
        self.tta = tta
        self.tile = tile if tile is not None else image_size
        self.multiple = int(getattr(model, "min_input_multiple", 1))
        if self.tile < 1:
            raise ConfigError(f"--tile {self.tile}: expected a positive size in pixels")
        check_size_multiple(label, self.tile, self.multiple, "--tile")
        self.overlap = check_overlap(overlap)
        self.blend = blend
        self.batch_size = batch_size
        self.num_workers = runtime.num_workers
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(self.device) * 255
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(self.device) * 255

    # ------------------------------------------------------------------ public

    @property
    def channels(self) -> int:
        """Probability channels: 1 (binary) or K."""
        return self.task.num_classes

    def mode_for(self, height: int, width: int) -> str:
        """``resize`` or ``tile`` for an image of this size."""
        if self.mode != "auto":
            return self.mode
        if self.native:
            from segkit.inference.native import WHOLE_MAX_PIXELS

            return "whole" if height * width <= WHOLE_MAX_PIXELS else "tile"
        return "resize" if max(height, width) <= 2 * self.image_size else "tile"

    def predict(self, image: np.ndarray | str | Path) -> np.ndarray:
        """Probabilities of one image (an ``(H, W, 3)`` uint8 RGB array or an image file):
        ``(H, W)`` foreground probability for a binary model, the ``(K, H, W)`` softmax for
        a K-class one, float32, at the image's own size.

        Raises:
            DataError: the file cannot be read.
        """
        if not isinstance(image, np.ndarray):
            from segkit.data.reading import read_image

            image = read_image(Path(image))
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`predict` for several arrays (batched as the mode allows)."""
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
            image = _as_rgb(image)
            mode = self.mode_for(*image.shape[:2])
            if mode in ("tile", "whole"):
                yield from flush()
                whole = mode == "whole"
                yield (
                    key,
                    image,
                    self._predict_whole(image) if whole else self._predict_tiled(image),
                )
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
        from segkit.data.reading import read_image

        yield from self.predict_many(read_parallel(paths, read_image, self.num_workers))

    # ------------------------------------------------------------------ machinery

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std

    def _logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The float32 logits of a normalized batch and of each test-time flip of it,
        flipped back."""
        out = []
        for dims in TTA_FLIPS[self.tta]:
            xi = x.flip(dims) if dims else x
            y = model_logits(self.model, xi, self.runtime.precision, self.runtime.channels_last)
            out.append(y.flip(dims) if dims else y)
        return out

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, 1) if self.task.multiclass else torch.sigmoid(logits)

    @torch.no_grad()
    def _predict_resized(self, images: list[np.ndarray]) -> list[np.ndarray]:
        batch = resized_batch(images, self.image_size, self.device)
        variants = self._logits(self._normalize(batch))
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
        from segkit.inference.tiling import padded_forward

        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float()
        probs = padded_forward(self._probabilities, self._normalize(x), self.multiple)
        return self._result(probs[0])

    @torch.no_grad()
    def _predict_tiled(self, image: np.ndarray) -> np.ndarray:
        from segkit.inference.tiling import sliding_window

        def predict(tiles: torch.Tensor) -> torch.Tensor:
            return self._probabilities(self._normalize(tiles))

        probs = sliding_window(
            torch.from_numpy(image).permute(2, 0, 1),
            predict,
            channels=self.channels,
            tile=self.tile,
            overlap=self.overlap,
            blend=self.blend,  # type: ignore[arg-type]
            batch=self.batch_size,
            device=self.device,
        )
        return self._result(probs)

    def _result(self, probs: torch.Tensor) -> np.ndarray:
        """``(C, H, W)`` to the numpy result: ``(H, W)`` for binary."""
        probs = probs.float().cpu()
        return (probs if self.task.multiclass else probs[0]).numpy()


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 array.

    Raises:
        ConfigError: another shape or dtype.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ConfigError(f"predict: expected an (H, W, 3) RGB image array, got {shape}")
    if image.dtype != np.uint8:
        raise ConfigError(f"predict: expected a uint8 image (0-255), got {image.dtype}")
    return np.ascontiguousarray(image)


def resized_batch(
    images: Sequence[np.ndarray], size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``(H, W, 3)`` uint8 images as one float32 ``(N, 3, size, size)`` batch on ``device``
    (values 0-255, not normalized), each resized OpenCV-style bilinear (align_corners=False,
    no antialias), as albumentations resizes in the evaluation recipe."""
    batch = []
    for image in images:
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
        batch.append(resize_to(x, (size, size)))
    return torch.cat(batch)


def model_logits(
    model: torch.nn.Module, x: torch.Tensor, precision: Any, channels_last: bool
) -> torch.Tensor:
    """The float32 logits of a normalized batch: NHWC where the model runs so, under the
    precision's autocast (``precision=None``: plain fp32)."""
    import contextlib

    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with precision.autocast() if precision is not None else contextlib.nullcontext():
        y = model(x)
    return y.float()


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An ``(N, C, H, W)`` float batch resized to ``size`` (height, width), OpenCV-style
    bilinear (align_corners=False, no antialias): how the predictor resizes images to the
    training size and logits back to the image's size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def resized_forward(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int
) -> torch.Tensor:
    """``forward`` of an ``(N, C, H, W)`` batch seen at the training size: resized to
    ``size`` x ``size``, run, and the output (logits) resized back to ``H x W``. What
    ``--mode resize`` does for one image, and native evaluation for a model trained on
    resized images (:mod:`segkit.inference.native`)."""
    h, w = x.shape[-2:]
    return resize_to(forward(resize_to(x, (size, size))), (h, w))


def eval_normalization(
    ops: Sequence[Any], image_size: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std of a recipe's evaluation ops, which must be a Resize to the
    training size (a resizing recipe) or nothing that sets the size (a native one), a
    PadIfNeeded or not (the predictor pads to the model's multiple itself), and a
    Normalize: what the predictor reproduces on the device.

    Raises:
        ConfigError: any other evaluation op.
    """
    from segkit.recipes import Normalize, PadIfNeeded, Resize

    norm = None
    for op in ops:
        if isinstance(op, Normalize):
            norm = op
        elif not (isinstance(op, Resize) and op.size == image_size or isinstance(op, PadIfNeeded)):
            raise ConfigError(
                "prediction supports a Resize to the training size (or none: native "
                f"resolution), PadIfNeeded and Normalize in a recipe's eval ops, not {op!r}; "
                "evaluate such a run without --mode/--tta (segkit evaluate uses its loader)"
            )
    if norm is None:
        raise ConfigError("prediction needs a Normalize in the recipe's eval ops")
    return tuple(norm.mean), tuple(norm.std)


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


def collect_images(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """The image files named by ``inputs``: files, folders (searched recursively for
    :data:`IMAGE_SUFFIXES`) and ``.txt`` files listing one path per line (relative paths
    are relative to the list's folder; blank lines and ``#`` comments are skipped).

    Returns:
        ``(file, its folder relative to the input it came from)`` pairs, in input order,
        each folder's files sorted; the relative folder is ``.`` for a file named directly
        or listed.

    Raises:
        ConfigError: a path that does not exist, or a folder with no images.
    """
    found: list[tuple[Path, Path]] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not files:
                raise ConfigError(
                    f"{path}: no images in this folder or its subfolders (looked for "
                    f"{', '.join(IMAGE_SUFFIXES)})"
                )
            found += [(p, p.parent.relative_to(path)) for p in files]
        elif path.suffix.lower() == ".txt" and path.is_file():
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                listed = Path(line).expanduser()
                found.append((listed if listed.is_absolute() else path.parent / listed, Path(".")))
        elif path.exists():
            found.append((path, Path(".")))
        else:
            raise ConfigError(
                f"{path}: no such file or folder; give image files, folders of images or a "
                ".txt list of paths"
            )
    return found


def as_logits(probs: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Probabilities back to logits a meter or loss takes: ``log(p / (1 - p))`` (binary:
    positive exactly where ``p > 0.5``), ``log(p)`` for K classes (same argmax, and
    ``log_softmax(log p) = log p``). Clamped away from 0 and 1 so they stay finite."""
    if multiclass:
        return probs.clamp_min(1e-12).log()
    p = probs.clamp(1e-7, 1 - 1e-7)
    return p.log() - (-p).log1p()


@torch.no_grad()
def evaluate_images(predictor: Predictor, dataset: Any, split: str) -> dict[str, Any]:
    """Score ``predictor`` on ``split`` with every image at its own size (mode, tiles and
    flips as the predictor is set), the way ``segkit predict`` sees it. Returns the task
    meter's result (:meth:`segkit.task.Task.meter`): Dice, IoU (mDice, mIoU and per class
    for K classes) and ``images``; no loss.

    Raises:
        DataError: an image or mask cannot be read.
    """
    from segkit.data.reading import read_sample

    task = predictor.task
    meter = task.meter(predictor.device)
    samples = dataset.samples(split)
    reads = read_parallel(
        samples, lambda s: read_sample(s, dataset.mask_spec), predictor.num_workers
    )

    def images() -> Iterator[tuple[np.ndarray | None, np.ndarray | Exception]]:
        for _, got in reads:
            yield (None, got) if isinstance(got, Exception) else (got[1], got[0])

    for mask, image, probs in predictor.predict_many(images()):
        if isinstance(image, Exception):
            raise image
        assert probs is not None and mask is not None
        p = torch.from_numpy(probs).to(predictor.device)
        logits = as_logits(p[None] if task.multiclass else p[None, None], task.multiclass)
        m = torch.from_numpy(mask).to(predictor.device)
        target = task.target(m[None] if task.multiclass else m[None, None].float())
        meter.update(logits, target)
    return meter.compute()
