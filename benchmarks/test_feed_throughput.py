"""Feed-only throughput of the ``dali`` loader: samples/s of the Python side that hands
DALI each batch (encoded image and mask bytes, image sizes, every op's random
parameters), with no DALI pipeline run. This is host time on the training thread, spent
once per batch whatever the GPU does, so it must stay far below a GPU step.

One round is one epoch of :meth:`DaliLoader.feed_batches` after ``set_epoch`` (the
shuffle, the epoch's parameter table, one slice per batch). The first epoch also reads
and checks every file once (the loader caches them); it is timed on its own, before the
rounds, and reported as ``first_epoch_samples_per_s``.

==========================  ===================  ================================
variable                    default              meaning
==========================  ===================  ================================
SEGKIT_BENCH_FEED_IMAGES    256                  train images (synthetic pets)
SEGKIT_BENCH_FEED_BATCH     32                   batch size
SEGKIT_BENCH_FEED_SIZE      256                  the recipe's image_size
==========================  ===================  ================================

Each falls back to the shared ``SEGKIT_BENCH_IMAGES``, ``_BATCH``, ``_SIZE`` before its
default. The target is at least 8000 samples/s on the 2-core CI machine (the GPU step of
resnet34_unet at batch 32 is about 5 ms). The whole file takes a few seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import bench_common as bc
import pytest

from segkit.registry import create

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")

from segkit_dali import create_loader  # noqa: E402

IMAGES, BATCH, SIZE = bc.feed_sizes()
ROUNDS = 20


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> object:
    """Exactly IMAGES train images: one more is written for the (unused) test list."""
    from segkit_datasets.synthetic import write_synthetic

    root = write_synthetic(
        tmp_path_factory.mktemp("feed-bench") / "set",
        count=IMAGES + 1,
        seed=0,
        test_fraction=1 / (IMAGES + 1),
    )
    dataset = create("datasets", "oxford_pet", Path(root), valid_fraction=0.0)
    assert len(dataset.samples("train")) == IMAGES
    return dataset


@pytest.mark.parametrize("recipe", ["type1", "type2", "type3"])
def test_feed_only(benchmark, images, recipe: str) -> None:
    loader = create_loader(
        images,
        "train",
        create("recipes", recipe, image_size=SIZE),
        BATCH,
        train=True,
        device="cpu",  # the feed is the same in GPU mode; no pipeline is built
    )
    epochs = iter(range(10**6))

    def epoch() -> int:
        loader.set_epoch(next(epochs))
        return sum(len(columns[0]) for columns in loader.feed_batches())

    t0 = time.perf_counter()
    first = epoch()  # reads and checks every file once (cached for the rounds)
    first_s = time.perf_counter() - t0
    n = benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    assert n == first == IMAGES
    sps = n / benchmark.stats.stats.mean
    benchmark.extra_info.update(
        bc.device_info()
        | {
            "loader": "dali",
            "part": "feed only (no DALI pipeline)",
            "recipe": recipe,
            "images": n,
            "size": SIZE,
            "batch": BATCH,
            "samples_per_s": round(sps, 1),
            "best_samples_per_s": round(n / benchmark.stats.stats.min, 1),
            "us_per_batch": round(1e6 * benchmark.stats.stats.mean * BATCH / n, 1),
            "first_epoch_samples_per_s": round(first / first_s, 1),
        }
    )
    print(
        f"\ndali feed, {recipe}: {sps:.0f} samples/s ({1e6 * BATCH / sps:.0f} us per batch "
        f"of {BATCH}); first epoch, reading the files: {first / first_s:.0f} samples/s"
    )
