"""ConfusionMeter on CUDA: the same numbers as on the CPU, and no host sync in update.

Skipped where CUDA is absent (see tests/cuda/test_cuda_path.py); ``make gpu-check`` runs it.
"""

from __future__ import annotations

import pytest
import torch

from segkit.metrics.multiclass import ConfusionMeter

pytestmark = [pytest.mark.cuda, pytest.mark.slow]


def test_confusion_meter_on_cuda_matches_cpu_without_a_host_sync() -> None:
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        logits = torch.randn(4, 5, 64, 64, generator=g)
        target = torch.randint(0, 5, (4, 64, 64), generator=g)
        target[torch.rand(4, 64, 64, generator=g) < 0.1] = 255
        batches.append((logits, target, torch.rand((), generator=g)))
    cpu = ConfusionMeter(5, per_image=True)
    gpu = ConfusionMeter(5, "cuda", per_image=True)
    on_gpu = [(lg.cuda(), t.cuda(), ls.cuda()) for lg, t, ls in batches]
    gpu.update(*on_gpu[0])  # warm-up (allocator, kernels)
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")
        for b in on_gpu[1:]:
            gpu.update(*b)
        state = gpu.state()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for b in batches:
        cpu.update(*b)
    rc, rg = cpu.compute(), gpu.compute()
    assert rc["confusion"] == rg["confusion"]
    for key, v in rc.items():
        if key != "confusion":
            assert rg[key] == pytest.approx(v, rel=1e-6, nan_ok=True), key
    assert state.device.type == "cuda"
    for a, b in zip(cpu.per_image_scores(), gpu.per_image_scores(), strict=True):
        torch.testing.assert_close(a, b)
