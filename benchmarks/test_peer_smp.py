"""segkit against segmentation_models_pytorch, CPU-sized (``make bench``): for each
generated set, ``benchmarks/peer_smp.py``'s comparison (segkit's ``timm_unet`` over
resnet18 against ``smp.Unet('resnet18', encoder_weights=None)`` in a plain loop, same
split, settings and metric, 2 seeds, trained in turns in this process) at a size a
2-core machine finishes in minutes. The test Dice of both and their s/epoch go into
``extra_info``; nothing is asserted about them (a benchmark records, the full-size run
with its committed table judges: ``benchmarks/results/*-cpu-peer/``).

Sizes: ``SEGKIT_BENCH_PEER_IMAGES`` (default: ``SEGKIT_BENCH_IMAGES``, else 48 images per
set, all splits), ``_SIZE`` (``SEGKIT_BENCH_SIZE``, else 64), ``_EPOCHS`` (3), ``_SEEDS``
(``0,1``). Needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

import bench_common as bc
import pytest

pytest.importorskip("segmentation_models_pytorch", reason="pip install -e '.[bench]'")

import peer_smp  # noqa: E402


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SEGKIT_BENCH_PEER_{name}", default)


@pytest.mark.parametrize("variant", peer_smp.SETS)
def test_peer_smp(benchmark, variant: str, tmp_path: Path) -> None:
    images, size = bc.peer_sizes()
    cache = Path(os.environ.get("SEGKIT_CACHE", Path.home() / ".cache" / "segkit"))
    args = peer_smp.parse_args(
        [
            "--out",
            str(tmp_path),
            "--data-dir",
            str(cache / "peer-smp"),
            "--images",
            str(images),
            "--size",
            str(size),
            "--epochs",
            _env("EPOCHS", "3"),
            "--seeds",
            _env("SEEDS", "0,1"),
            "--vessel-size",
            "128x128",
        ]
    )
    runs: list[dict] = []

    def run() -> None:
        runs.extend(peer_smp.run_pair(args, variant, seed) for seed in args.seeds)

    benchmark.pedantic(run, rounds=1, iterations=1)
    info = benchmark.extra_info
    info.update(settings={k: v for k, v in vars(args).items() if k not in ("out", "variant")})
    for name in ("segkit", "smp"):
        dice = [r["models"][name]["test"]["dice_per_image"] for r in runs]
        seconds = [s for r in runs for s in r["models"][name]["epoch_seconds"][1:]]
        info[f"{name}_test_dice"] = dice
        info[f"{name}_test_dice_mean"] = statistics.mean(dice)
        info[f"{name}_s_per_epoch"] = statistics.median(seconds)
        assert all(math.isfinite(d) for d in dice), f"{name}: test Dice {dice}"
    info["dice_gap"] = info["segkit_test_dice_mean"] - info["smp_test_dice_mean"]
    info["s_per_epoch_ratio"] = info["segkit_s_per_epoch"] / info["smp_s_per_epoch"]
