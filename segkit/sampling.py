"""Epoch order and sharding: the rule every loader follows, so two loaders given the same
seed, epoch and shard visit the same samples in the same order."""

from __future__ import annotations

import math
import os

from segkit.errors import ConfigError


def default_workers() -> int:
    """Loader workers when none are asked for: one per core, up to 8."""
    return min(8, os.cpu_count() or 1)


def check_loader_args(batch_size: int, shard: tuple[int, int]) -> None:
    """Validate the arguments every loader factory takes.

    Raises:
        ConfigError: a non-positive batch size, or a shard outside ``0 <= rank < world``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}; expected a positive integer")
    rank, world = shard
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise ConfigError(f"shard={shard}: expected (rank, world_size) with 0 <= rank < world_size")


def per_rank(n: int, world: int) -> int:
    """Samples each rank reads per epoch: all of them on one rank, else ``ceil(n / world)``."""
    return n if world == 1 else math.ceil(n / world)


def epoch_order(
    n: int, *, shuffle: bool, seed: int, epoch: int, shard: tuple[int, int]
) -> list[int]:
    """This shard's sample indices for ``epoch``, in order.

    One permutation per epoch seeded with ``seed * 1_000_003 + epoch`` (the identity
    without ``shuffle``); with several ranks it is padded by wrapping so every rank gets
    ``ceil(n / world)`` samples (as torch's DistributedSampler), and rank ``r`` takes every
    ``world``-th entry from ``r``: shards are disjoint up to the padding and cover the split.
    """
    import torch

    rank, world = shard
    if shuffle:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if world == 1:
        return order
    total = per_rank(n, world) * world
    order = (order * math.ceil(total / n))[:total]
    return order[rank:total:world]
