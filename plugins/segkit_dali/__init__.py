"""The ``dali`` loader: segkit recipes compiled into an NVIDIA DALI graph.

On a CUDA device the pipeline decodes JPEGs with nvJPEG (``"mixed"``) and runs every
augmentation on the GPU, yielding batches already in GPU memory. Without one it runs the
same graph with DALI's CPU operators (``device_id=None``) and says so once on stderr.

The contract is :class:`segkit.contracts.LoaderFactory`; the behaviour matches the
``albumentations`` loader (same shuffle, same shards, same last-batch rule, same errors
for bad files) and its augmentations within the differences listed in ``docs/dali.md``.

Install with ``pip install 'segkit[dali]'``. Importing this module does not import DALI;
:func:`create_loader` does.

The parts, each importing only those below it: :mod:`segkit_dali._loader` (the loader:
epoch plan, feed, pipeline, iterator, error messages); :mod:`segkit_dali._graph` (a
recipe compiled to :class:`~segkit_dali._base.DaliOp` objects, the pipeline's body);
:mod:`segkit_dali._geometry` and :mod:`segkit_dali._color` (the compiled ops, one table
each); :mod:`segkit_dali._base` (the ``DaliOp`` contract).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from segkit.config import named
from segkit.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from segkit.contracts import Dataset
    from segkit.recipes import Recipe
    from segkit_dali._loader import DaliLoader

__all__ = ["create_loader"]

_OPTIONS = ("clahe_levels", "antialias", "prefetch")


def create_loader(
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
    **options: Any,
) -> DaliLoader:
    """The ``dali`` loader factory (contract: :class:`segkit.contracts.LoaderFactory`).

    Args:
        dataset: Where the samples come from.
        split: "train", "valid" or "test".
        recipe: Compiled from ``recipe.ops(train)``.
        batch_size: Images per batch; the last partial batch is kept unless ``drop_last``.
        train: Shuffle each epoch and apply the training ops.
        seed: With the same seed and epoch the loader yields the same batches.
        num_workers: DALI CPU threads (decoding, CPU operators); 0 means 1.
        device: ``cuda`` / ``cuda:N`` runs the pipeline on that GPU when CUDA is
            available; anything else runs it on the CPU.
        shard: ``(rank, world_size)``; rank r reads a disjoint 1/world_size of the samples
            (padded by wrapping, as torch's DistributedSampler does).
        drop_last: Drop the last partial batch.
        **options: ``clahe_levels`` (int, default 8): how many clip limits approximate
            CLAHE's random clip limit (DALI's CLAHE takes one per operator);
            ``antialias`` (bool, default False): antialias image downscaling (OpenCV's
            linear resize, which albumentations uses, does not); ``prefetch`` (int,
            default 2): DALI's prefetch queue depth.

    Returns:
        A loader: iterate it for :class:`~segkit.contracts.Batch`, ``len()`` is batches per
        epoch, call ``set_epoch`` before each epoch.

    Raises:
        ConfigError: DALI is not installed, an option is unknown or out of range, or the
            recipe holds an op this loader cannot compile.
        segkit.errors.DataError: the split is missing or empty.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(
            f"the dali loader does not accept option(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(_OPTIONS)}"
        )
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"the dali loader needs NVIDIA DALI, which cannot be imported ({e}); install it "
            f"with `pip install 'segkit[dali]'` or use {named('loader', 'albumentations', as_typed=True)}"
        ) from None
    # Imported here, not at the top: the loader module imports DALI and torch (about 6 s
    # here, measured with `python -X importtime -c "import segkit_dali._loader"` on this
    # shared CPU machine; 0.02 s for this module), and `segkit list` imports every plugin.
    from segkit_dali._loader import DaliLoader

    return DaliLoader(
        dataset,
        split,
        recipe,
        batch_size,
        train=train,
        seed=seed,
        num_workers=num_workers,
        device=device,
        shard=shard,
        drop_last=drop_last,
        **options,
    )
