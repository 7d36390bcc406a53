"""Loader-only throughput: images/s of decoding + the type3 training recipe + hand-over
to the training device, for every registered loader (a third party's too), on the same
generated images. No model runs, so this is the loader's own ceiling.

One round is one epoch (``set_epoch`` advances, so every round reshuffles and
re-augments as in training); a warm-up epoch first pays for worker start-up and DALI's
pipeline build. Each batch is moved to the training device as the engine would
(``non_blocking``; a no-op for DALI's GPU batches) and the device is synchronized
inside the timed function.

==========================  ===================  ================================
variable                    default              meaning
==========================  ===================  ================================
SEGKIT_BENCH_LOADER_IMAGES  128 (1024 with GPU)  images per epoch
SEGKIT_BENCH_LOADER_SIZE    256                  output size (type3's image_size)
SEGKIT_BENCH_LOADER_BATCH   32                   batch size
SEGKIT_BENCH_LOADER_WORKERS auto                 num_workers (DALI: CPU threads)
==========================  ===================  ================================

Each falls back to the shared variable (``SEGKIT_BENCH_IMAGES``, ``_SIZE``, ``_BATCH``,
``_WORKERS``) before its default, so the tiny settings shrink this suite too
(:func:`bench_common.suite_setting`).

The images are the synthetic pets (JPEGs of 300-500 px with trimaps), written once per
session into a temporary folder. On the 2-core CI machine the whole file takes about
half a minute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bench_common as bc
import pytest

from segkit import build
from segkit.config import RunConfig
from segkit.registry import create, list_plugins

RECIPE = "type3"


# Its own variables first: the loader suite stays at the 256 px, batch 32 even on a
# CPU, where the epoch suite (bench_common) shrinks its sizes, unless a shared size is set.
_SIZES = bc.loader_sizes()
IMAGES, SIZE, BATCH = _SIZES.images, _SIZES.size, _SIZES.batch
WORKERS = _SIZES.workers  # -1: segkit run's default


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> object:
    """Exactly IMAGES train images: one more is written for the (unused) test list.
    With ``SEGKIT_BENCH_DATA``, the first IMAGES train images of that set."""
    from segkit_datasets.synthetic import write_synthetic

    given = os.environ.get("SEGKIT_BENCH_DATA")
    if given:
        return _First(create("datasets", "oxford_pet", Path(given)), IMAGES)

    root = write_synthetic(
        tmp_path_factory.mktemp("loader-bench") / "set",
        count=IMAGES + 1,
        seed=0,
        test_fraction=1 / (IMAGES + 1),
        workers=min(8, os.cpu_count() or 1),
    )
    dataset = create("datasets", "oxford_pet", Path(root), valid_fraction=0.0)
    assert len(dataset.samples("train")) == IMAGES
    return dataset


class _First:
    """A dataset's first ``n`` train samples."""

    def __init__(self, dataset: object, n: int) -> None:
        self.root, self.mask_spec = dataset.root, dataset.mask_spec
        self._train = dataset.samples("train")[:n]
        if len(self._train) < n:
            raise RuntimeError(f"{dataset.root}: fewer than {n} train images")

    def samples(self, split: str) -> list:
        return list(self._train)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, module in (
        ("albumentations", "albumentations"),
        ("opencv", "cv2"),
        ("segkit", "segkit"),
    ):
        try:
            out[name] = getattr(__import__(module), "__version__", None)
        except ImportError:
            out[name] = None
    return out


def time_loader(benchmark: Any, data: Any, loader: str, runtime: build.Runtime) -> dict[str, Any]:
    """Time epochs of ``data`` (a warm-up, then 3) and return the result's extra_info: the
    device, versions, loader, its mode, sizes, workers and images/s (mean and best)."""
    run = bc.epoch_runner(data, runtime.device)
    n = benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    assert n == IMAGES
    return (
        bc.device_info()
        | _versions()
        | {
            "loader": loader,
            "loader_mode": getattr(data, "mode", None),
            "images": n,
            "size": SIZE,
            "batch": BATCH,
            "workers": runtime.num_workers,
            "images_per_s": round(n / benchmark.stats.stats.mean, 1),
            "best_images_per_s": round(n / benchmark.stats.stats.min, 1),
        }
    )


@pytest.mark.parametrize("loader", list_plugins("loaders"))
def test_loader_only(benchmark, images, loader: str) -> None:
    config = RunConfig(
        loader=loader,
        recipe=RECIPE,
        image_size=SIZE,
        batch_size=BATCH,
        num_workers=WORKERS if WORKERS >= 0 else None,
    )
    runtime = build.resolve_runtime(config)
    device = runtime.device
    data = build.build_loader(
        config, runtime, images, build.build_recipe(config), "train", train=True
    )
    info = time_loader(benchmark, data, loader, runtime)
    benchmark.extra_info.update(info | {"recipe": RECIPE})
    ips = info["images_per_s"]
    print(
        f"\n{loader}: {ips:.1f} images/s ({RECIPE}, {SIZE}px, batch {BATCH}, "
        f"{runtime.num_workers} workers, {device})"
    )
