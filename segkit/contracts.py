"""The contract of each plugin kind: the manual for plugin authors.

segkit finds plugins through five entry-point groups. An entry point names an object
(``module:attribute``); what that object must be depends on the group:

``segkit.models`` -- a **model factory**::

    def create_mymodel(in_channels: int = 3, out_channels: int = 1, **options) -> nn.Module

  The module maps ``(N, in_channels, H, W)`` float images to ``(N, out_channels, H, W)``
  **logits** (no sigmoid inside: losses and metrics apply it, which keeps BCE safe under
  autocast). A model declares ``min_input_multiple: int`` (H and W must be divisible
  by it; default 1); segkit checks the image size against it before training. Every
  model must accept any H, W divisible by 32 (so ``min_input_multiple`` divides 32) and
  should raise :class:`segkit.errors.ConfigError` naming the size for other inputs:
  call :func:`check_input_size` at the top of ``forward``.
  Unknown ``options`` must raise ``TypeError`` (the default for keyword arguments).
  Shared option names: ``encoder`` (a backbone name) and ``weights`` (initial weights:
  a file path, or a name such as "imagenet"); ``segkit run --encoder/--weights`` set
  them, and segkit leaves ``weights`` out when it rebuilds a model to load a checkpoint.

``segkit.losses`` -- a **loss factory**::

    def create_myloss(**options) -> nn.Module   # module(logits, target) -> scalar tensor

  ``logits`` is ``(N, 1, H, W)`` in any float dtype (bf16/fp16 under autocast),
  ``target`` the same shape with values in {0, 1}. Compute reductions in float32.

``segkit.augmentations`` -- a **recipe factory**::

    def myrecipe(image_size: int = 256) -> segkit.recipes.Recipe

  A recipe is data: a tuple of ops from :mod:`segkit.recipes` for training and one for
  evaluation. It carries no backend code; every loader compiles it.

``segkit.loaders`` -- a **loader factory**; see :class:`LoaderFactory`.

``segkit.datasets`` -- a **dataset class** (or factory) called with the data root and
returning a :class:`Dataset`; see :class:`DatasetFactory`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is imported lazily so `segkit --help` stays fast
    import torch

    from segkit.recipes import Recipe

#: Split names every dataset understands.
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class MaskSpec:
    """How a dataset's mask files encode the binary target.

    A pixel is foreground when its raw value is not ``background``; ``allowed`` lists the
    raw values a valid mask file may hold. Loaders apply this rule themselves (the DALI
    loader applies it inside its graph), so it must stay this simple.

    Attributes:
        background: Raw value meaning background (2 in Oxford-IIIT Pet trimaps).
        allowed: Raw values a mask file may hold, e.g. ``(1, 2, 3)`` for trimaps.
    """

    background: int
    allowed: tuple[int, ...]


@dataclass(frozen=True)
class Sample:
    """One image and its mask file."""

    id: str
    image: Path
    mask: Path


@runtime_checkable
class Dataset(Protocol):
    """A layout reader: files and split lists in, samples out.

    Attributes:
        root: The dataset folder.
        mask_spec: How mask files encode the target.
    """

    root: Path
    mask_spec: MaskSpec

    def samples(self, split: str) -> list[Sample]:
        """Return the samples of ``split`` ("train", "valid" or "test"), in a fixed order.

        Raises:
            segkit.errors.DataError: the split list or a file it names is missing, or the
                split is empty. The message names the file.
        """
        ...


class DatasetFactory(Protocol):
    """What a ``segkit.datasets`` entry point names: ``factory(root, **options)``.

    ``root`` may be ``None`` only for datasets that can make their own data
    (``synthetic``); others raise :class:`segkit.errors.DataError`.
    """

    def __call__(self, root: Path | None, **options: Any) -> Dataset: ...


@dataclass(frozen=True)
class Batch:
    """What a loader yields: ``images`` float ``(N, 3, H, W)`` normalized; ``masks`` float
    ``(N, 1, H, W)`` holding exactly 0.0 and 1.0. Both on the loader's device (or on the
    CPU in pinned memory, for the engine to move with ``non_blocking=True``)."""

    images: torch.Tensor
    masks: torch.Tensor


class Loader(Protocol):
    """An iterable of :class:`Batch` with a length (batches per epoch)."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle and augmentation for ``epoch`` (same epoch, same batches)."""
        ...


class LoaderFactory(Protocol):
    """What a ``segkit.loaders`` entry point names.

    Args:
        dataset: Where the samples come from.
        split: "train", "valid" or "test".
        recipe: The augmentation recipe; the loader uses ``recipe.train`` when
            ``train`` is true and ``recipe.eval`` otherwise.
        batch_size: Images per batch. The last partial batch is kept unless
            ``drop_last``.
        train: Shuffle each epoch and apply the training ops.
        seed: Base seed; with the same seed and epoch a loader yields the same batches.
        num_workers: Worker processes or threads for decoding and augmentation.
        device: Where the engine will train; a loader may place batches there.
        shard: ``(rank, world_size)``: this loader reads a disjoint 1/world_size of the
            samples.
        drop_last: Drop the last partial batch.
    """

    def __call__(
        self,
        dataset: Dataset,
        split: str,
        recipe: Recipe,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
        drop_last: bool = False,
    ) -> Loader: ...


def check_samples(samples: Sequence[Sample], split: str, source: Path) -> list[Sample]:
    """Return ``samples`` as a list, refusing an empty split with a message naming ``source``."""
    if not samples:
        from segkit.errors import DataError

        raise DataError(
            f"{source}: split '{split}' has no samples; "
            "add sample names to the split list or point --data at another dataset"
        )
    return list(samples)


def check_input_size(model: str, x: torch.Tensor, multiple: int) -> None:
    """Raise a :class:`~segkit.errors.ConfigError` unless ``x``'s height and width are
    multiples of ``multiple``. Models call it first thing in ``forward``.

    Args:
        model: The model's name, for the message (e.g. ``"unet"``).
        x: An ``(N, C, H, W)`` batch.
        multiple: What H and W must be divisible by (the model's ``min_input_multiple``).

    Raises:
        ConfigError: H or W is not divisible by ``multiple``. The message names the size
            given and the nearest larger size that works (padding needs a larger one,
            and resizing to it keeps the most detail).
    """
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        from segkit.errors import ConfigError

        fixed = (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
        raise ConfigError(
            f"{model}: input height={height}, width={width} is not divisible by {multiple}; "
            f"resize or pad your images to ({fixed[0]}, {fixed[1]})"
        )
