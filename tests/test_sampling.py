"""segkit.data.sampling: epoch order, sharding, loader argument checks and default workers."""

from __future__ import annotations

import math
import re

import pytest
from torch.utils.data import DistributedSampler

from segkit.data.sampling import check_loader_args, epoch_order, per_rank
from segkit.errors import ConfigError


def order(n: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0, shard=(0, 1)):
    return epoch_order(n, shuffle=shuffle, seed=seed, epoch=epoch, shard=shard)


# --- epoch_order ---------------------------------------------------------------------------


def test_same_seed_and_epoch_give_the_same_order() -> None:
    assert order(50, seed=3, epoch=2) == order(50, seed=3, epoch=2)
    assert order(50, seed=3, epoch=2, shard=(1, 4)) == order(50, seed=3, epoch=2, shard=(1, 4))


def test_other_epoch_or_seed_gives_another_order() -> None:
    base = order(50, seed=3, epoch=2)
    assert order(50, seed=3, epoch=3) != base
    assert order(50, seed=4, epoch=2) != base


def test_without_shuffle_the_order_is_the_identity_every_epoch() -> None:
    for epoch in range(3):
        assert order(7, shuffle=False, seed=5, epoch=epoch) == list(range(7))


def test_shuffled_order_is_a_permutation() -> None:
    for n in (1, 2, 13, 100):
        got = order(n, seed=11, epoch=1)
        assert sorted(got) == list(range(n))
    assert order(100, seed=11, epoch=1) != list(range(100))


def test_world_one_returns_all_samples() -> None:
    assert order(9, shuffle=False, shard=(0, 1)) == list(range(9))
    assert len(order(9, shard=(0, 1))) == 9
    assert order(0, shard=(0, 1)) == []


def test_unshuffled_shards_by_hand() -> None:
    # n=5, world=2: padded to 6 by wrapping -> [0, 1, 2, 3, 4, 0]; rank r takes every 2nd.
    assert order(5, shuffle=False, shard=(0, 2)) == [0, 2, 4]
    assert order(5, shuffle=False, shard=(1, 2)) == [1, 3, 0]
    # n=2, world=5: padded to 5 -> [0, 1, 0, 1, 0].
    assert [order(2, shuffle=False, shard=(r, 5)) for r in range(5)] == [[0], [1], [0], [1], [0]]


@pytest.mark.parametrize(("n", "world"), [(10, 3), (9, 3), (7, 4), (2, 5), (1, 3), (16, 4)])
def test_unshuffled_shards_match_torch_distributed_sampler(n: int, world: int) -> None:
    for rank in range(world):
        torch_order = list(
            DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        )
        assert order(n, shuffle=False, shard=(rank, world)) == torch_order


@pytest.mark.parametrize(("n", "world"), [(10, 3), (9, 3), (7, 4), (2, 5), (100, 8)])
def test_shuffled_padding_wraps_from_the_start_of_the_epoch_order(n: int, world: int) -> None:
    full = order(n, seed=2, epoch=5)
    total = math.ceil(n / world) * world
    padded = (full * world)[:total]  # the epoch order, then its start again
    for rank in range(world):
        assert order(n, seed=2, epoch=5, shard=(rank, world)) == padded[rank:total:world]


@pytest.mark.parametrize(("n", "world"), [(10, 3), (9, 3), (7, 4), (2, 5), (100, 8)])
def test_shards_are_disjoint_up_to_padding_and_cover_the_split(n: int, world: int) -> None:
    shards = [order(n, seed=1, epoch=0, shard=(r, world)) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(n))
    # Every index appears once, plus at most the wrap-around padding.
    padding = math.ceil(n / world) * world - n
    assert len(flat) - len(set(flat)) == padding
    if padding == 0:
        for a in range(world):
            for b in range(a + 1, world):
                assert not set(shards[a]) & set(shards[b])


@pytest.mark.parametrize(("n", "world"), [(10, 3), (9, 3), (7, 4), (2, 5), (1, 1), (10, 1)])
def test_each_rank_gets_ceil_n_over_world(n: int, world: int) -> None:
    expected = math.ceil(n / world)
    assert per_rank(n, world) == expected
    for rank in range(world):
        assert len(order(n, seed=0, shard=(rank, world))) == expected


def test_per_rank_by_hand() -> None:
    assert per_rank(10, 1) == 10
    assert per_rank(10, 2) == 5
    assert per_rank(10, 3) == 4
    assert per_rank(10, 4) == 3
    assert per_rank(3, 8) == 1


# --- check_loader_args ---------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "shard"), [(1, (0, 1)), (32, (3, 4)), (2, (0, 2))])
def test_valid_loader_args_pass(batch_size: int, shard: tuple[int, int]) -> None:
    assert check_loader_args(batch_size, shard) is None


@pytest.mark.parametrize("batch_size", [0, -1, True, 2.0])
def test_bad_batch_size_raises_config_error_naming_it(batch_size: object) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"batch_size={batch_size!r}")):
        check_loader_args(batch_size, (0, 1))  # type: ignore[arg-type]


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard_raises_config_error_naming_it(shard: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"shard={shard}")) as info:
        check_loader_args(4, shard)
    assert "0 <= rank < world_size" in str(info.value)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        check_loader_args(0, (0, 1))
