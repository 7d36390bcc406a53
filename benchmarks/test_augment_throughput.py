"""Augmentation throughput: loader-only images/s of each op of the vocabulary for real
datasets, and of the ``microscopy`` and ``natural`` recipes, on every registered loader.

Each op is timed alone, after the baseline ``Resize(S)`` and before ``Normalize``, with
p=1 so that it runs on every image; the baseline (``Resize`` only) is timed too, and the
summary gives each op's cost as milliseconds per image over it. ``RandomCrop`` replaces
the Resize (a native-resolution crop of the decoded image); ``PadIfNeeded`` pads the
resized image by 32 px. The two recipes run as ``segkit run`` would run them.

The images, sizes, batch and workers are those of ``test_loader_throughput.py`` (its
``SEGKIT_BENCH_LOADER_*`` variables, else the shared ``SEGKIT_BENCH_IMAGES``, ``_SIZE``,
``_BATCH``, ``_WORKERS``: 128 synthetic pets of 300-500 px on a CPU, 256 px, batch 32).
An op a loader cannot run where it runs (ElasticTransform on DALI's CPU mode:
DALI's remap is GPU-only) is skipped with the loader's own one-line refusal.
"""

from __future__ import annotations

import pytest
from test_loader_throughput import BATCH, SIZE, WORKERS, images, time_loader  # noqa: F401

from segkit import build
from segkit import recipes as R
from segkit.config import RunConfig
from segkit.errors import ConfigError
from segkit.registry import create, list_plugins

#: name -> the ops between the baseline Resize and Normalize (None: a registered recipe).
CASES: dict[str, tuple[R.Op, ...] | None] = {
    "Resize (baseline)": (),
    "VerticalFlip": (R.VerticalFlip(p=1.0),),
    "RandomRotate90": (R.RandomRotate90(p=1.0),),
    "Affine": (
        R.Affine(scale=(0.9, 1.1), rotate=(-15, 15), translate_percent=(-0.06, 0.06), p=1.0),
    ),
    "RandomCrop": (),  # replaces the Resize, see _recipe
    "PadIfNeeded": (R.PadIfNeeded(size=SIZE + 32),),
    "ElasticTransform": (R.ElasticTransform(alpha=1.2 * SIZE, sigma=0.04 * SIZE, p=1.0),),
    "GaussNoise": (R.GaussNoise(std_range=(0.02, 0.1), p=1.0),),
    "GaussianBlur": (R.GaussianBlur(sigma_limit=(0.5, 2.0), p=1.0),),
    "HueSaturationValue": (R.HueSaturationValue(p=1.0),),
    "CoarseDropout": (R.CoarseDropout(num_holes_range=(1, 4), p=1.0),),
    "microscopy": None,
    "natural": None,
}


def _recipe(case: str) -> R.Recipe:
    ops = CASES[case]
    if ops is None:
        return create("recipes", case, image_size=SIZE)
    if case == "RandomCrop":
        return R.Recipe(case, train=(R.RandomCrop(size=SIZE), R.Normalize()))
    return R.Recipe(case, train=(R.Resize(size=SIZE), *ops, R.Normalize()))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("loader", list_plugins("loaders"))
def test_augment_only(benchmark, images, loader: str, case: str) -> None:  # noqa: F811
    config = RunConfig(
        loader=loader,
        image_size=SIZE,
        batch_size=BATCH,
        num_workers=WORKERS if WORKERS >= 0 else None,
    )
    runtime = build.resolve_runtime(config)
    recipe = _recipe(case)
    try:
        data = build.build_loader(config, runtime, images, recipe, "train", train=True)
    except ConfigError as e:
        pytest.skip(f"{loader} refuses {case} here: {e}")
    info = time_loader(benchmark, data, loader, runtime)
    benchmark.extra_info.update(info | {"augmentation": case})
    ips = info["images_per_s"]
    print(f"\n{loader} {case}: {ips:.1f} images/s ({SIZE}px, batch {BATCH}, {runtime.device})")
