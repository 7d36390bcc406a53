"""Model-only training throughput for every registered model (a third party's too):
images/s of forward + backward + Adam step on tensors already on the device, and the
achieved TFLOP/s from a FLOP count of the model."""

from __future__ import annotations

import bench_common as bc
import pytest


@pytest.mark.parametrize("model", bc.models())
def test_model_only(benchmark, model: str) -> None:
    s = bc.settings()
    steps = bc.model_steps_per_round()
    run = bc.model_steps(model, steps)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    ips = steps * s.batch / benchmark.stats.stats.min
    flops = bc.train_flops_per_image(model)
    benchmark.extra_info.update(
        bc.device_info()
        | s.describe()
        | {
            "model": model,
            "images_per_s": round(ips, 2),
            "train_gflop_per_image": round(flops / 1e9, 2),
            "achieved_tflops": round(ips * flops / 1e12, 3),
            "precision_resolved": run.precision,
        }
    )
    print(f"\n{model}: {ips:.1f} images/s, {ips * flops / 1e12:.2f} TFLOP/s ({run.precision})")
