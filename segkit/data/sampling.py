"""Epoch order and sharding: the rule every loader follows, so two loaders given the same
seed, epoch and shard visit the same samples in the same order."""

from __future__ import annotations

import math
from typing import Any

from segkit.errors import ConfigError


def check_loader_args(batch_size: int, shard: tuple[int, int], num_workers: int = 0) -> None:
    """Validate the arguments every loader factory takes.

    Raises:
        ConfigError: a non-positive batch size, a negative or non-integer number of
            workers, or a shard outside ``0 <= rank < world``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}; expected a positive integer")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers={num_workers!r}; expected 0 or more")
    rank, world = shard
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise ConfigError(f"shard={shard}: expected (rank, world_size) with 0 <= rank < world_size")


def per_rank(n: int, world: int) -> int:
    """Samples each rank reads per epoch: all of them on one rank, else ``ceil(n / world)``."""
    return n if world == 1 else math.ceil(n / world)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch``'s shuffle: one mix of the run's seed and the epoch."""
    return seed * 1_000_003 + epoch


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for sample ``index``'s augmentation in ``epoch``: the same whatever
    the number of workers, the prefetch depth or the shard that reads the sample."""
    return (epoch_seed(seed, epoch) * 10_000_019 + index) % 2**32


def epoch_order(
    n: int, *, shuffle: bool, seed: int, epoch: int, shard: tuple[int, int]
) -> list[int]:
    """This shard's sample indices for ``epoch``, in order.

    One permutation per epoch seeded with :func:`epoch_seed` (the identity without
    ``shuffle``); with several ranks it is padded by wrapping so every rank gets
    ``ceil(n / world)`` samples (as torch's DistributedSampler), and rank ``r`` takes every
    ``world``-th entry from ``r``: shards are disjoint up to the padding and cover the split.
    """
    import torch

    rank, world = shard
    if n == 0:
        return []
    if shuffle:
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if world == 1:
        return order
    total = per_rank(n, world) * world
    order = (order * math.ceil(total / n))[:total]
    return order[rank:total:world]


class CropsPerImage:
    """A dataset whose ``train`` split lists each sample ``n`` times: an epoch of a
    loader given it draws ``n`` crops of each train image (``--crops-per-image``). Every
    loader supports it as it is: the copies are samples of their own, so the epoch's
    order (:func:`epoch_order`) shuffles them all together and each copy's augmentation
    has its own seed (:func:`sample_seed` of its index). The other splits, ``root``,
    ``mask_spec`` and any other attribute are the dataset's."""

    def __init__(self, dataset: Any, n: int) -> None:
        self.dataset, self.n = dataset, n
        self.root = dataset.root
        self.mask_spec = dataset.mask_spec

    def samples(self, split: str) -> list[Any]:
        samples = self.dataset.samples(split)
        return samples * self.n if split == "train" else samples

    def __getattr__(self, name: str) -> Any:  # split_lists and a layout's own attributes
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def crops_per_image(dataset: Any, n: int) -> Any:
    """The dataset the training loader reads for ``--crops-per-image n``: ``dataset``
    itself for 1 (every run without the setting reads exactly what it did), else
    :class:`CropsPerImage`."""
    return dataset if n == 1 else CropsPerImage(dataset, n)
