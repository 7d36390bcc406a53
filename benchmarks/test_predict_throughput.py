"""Inference: ``segkit predict``'s throughput at batch 1 and batch 8, the cost of tiling a
2048x2048 image against resizing it, and ONNX Runtime against PyTorch on the CPU.

Each model is a checkpoint of random weights written like ``segkit run``'s ``best.pt``
(throughput does not depend on the weights). Images are the synthetic set's test split,
read from their files by the predictor's reading threads, as ``segkit predict`` does.
Runs on the CPU and, unchanged, on a GPU (at the settings' precision).

- ``test_predict_images_per_s[model-batchN]``: images/s of :meth:`Predictor.predict_files`
  (decode, resize, forward, resize back, sigmoid) over the test split, resize mode.
- ``test_tiling_overhead[model]``: seconds for one 2048x2048 image in tile mode (tiles of
  the training size, 256 px, overlap 0.25, gaussian blending) over resize mode, and the
  ratio. ``SEGKIT_BENCH_TILE_SIZE`` (else ``SEGKIT_BENCH_SIZE``) sets the tile and
  ``SEGKIT_BENCH_TILE_IMAGE`` the image's side (default 8 tiles: 256 px for 32 px tiles).
- ``test_onnx_cpu_latency``: resnet34_unet at 256 px (``SEGKIT_BENCH_ONNX_SIZE``, else
  ``SEGKIT_BENCH_SIZE``), batch 1, on the CPU: ms per image in PyTorch and in ONNX Runtime
  (skipped without the ``export`` extra).
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path

import bench_common as bc
import numpy as np
import pytest
import torch


@functools.cache
def checkpoint(model: str, image_size: int) -> Path:
    """A weights-only checkpoint of ``model`` with random weights at ``image_size``."""
    from segkit import create_model
    from segkit.config import RunConfig
    from segkit.training import checkpoint as ckpt_io

    folder = Path(tempfile.mkdtemp(prefix="segkit-bench-predict-"))
    config = RunConfig(model=model, image_size=image_size, recipe=bc.settings().recipe)
    state = {
        "format": ckpt_io.FORMAT,
        "version": ckpt_io.VERSION,
        "config": config.to_dict(),
        "model": create_model(model).state_dict(),
    }
    ckpt_io.save_atomic(state, folder / "best.pt")
    return folder / "best.pt"


def predictor(model: str, size: int, **options):
    from segkit.inference.predictor import Predictor

    s = bc.settings()
    return Predictor(
        checkpoint(model, size),
        device=str(bc.runtime().device),
        precision=s.precision,
        num_workers=s.workers,
        **options,
    )


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", bc.models())
def test_predict_images_per_s(benchmark, model: str, batch: int) -> None:
    s = bc.settings()
    files = [sample.image for sample in bc.dataset().samples("test")]
    p = predictor(model, s.size, mode="resize", batch_size=batch)

    def run() -> None:
        for _ in p.predict_files(files):
            pass
        bc.sync()

    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    ips = len(files) / benchmark.stats.stats.min
    benchmark.extra_info.update(
        bc.device_info()
        | s.describe()
        | {
            "model": model,
            "predict_batch": batch,
            "images": len(files),
            "images_per_s": round(ips, 2),
            "precision_resolved": p.runtime.precision.name,
        }
    )
    print(f"\npredict {model} batch {batch}: {ips:.1f} images/s ({len(files)} test images)")


@pytest.mark.parametrize("model", bc.models())
def test_tiling_overhead(benchmark, model: str) -> None:
    s = bc.settings()
    size, side = bc.tile_sizes()
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    resize = predictor(model, size, mode="resize", batch_size=s.batch)
    tiled = predictor(model, size, mode="tile", batch_size=s.batch)

    def timed(p) -> float:
        p.predict(image)  # warm-up
        bc.sync()
        start = time.perf_counter()
        p.predict(image)
        bc.sync()
        return time.perf_counter() - start

    resize_s = timed(resize)
    benchmark.pedantic(lambda: (tiled.predict(image), bc.sync()), rounds=1, iterations=1)
    tile_s = benchmark.stats.stats.min
    benchmark.extra_info.update(
        bc.device_info()
        | s.describe()
        | {
            "model": model,
            "tile": size,
            "image": side,
            "overlap": 0.25,
            "tile_s": round(tile_s, 3),
            "resize_s": round(resize_s, 3),
            "tiling_overhead": round(tile_s / resize_s, 1),
        }
    )
    print(
        f"\n{model} {side}x{side}, tiles of {size}: tile {tile_s:.2f} s, resize {resize_s:.3f} s "
        f"({tile_s / resize_s:.0f}x)"
    )


def test_onnx_cpu_latency(benchmark, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="pip install 'segkit[export]'")
    import onnxruntime as ort

    from segkit.inference.export import export

    size = bc.onnx_size()
    ckpt = checkpoint("resnet34_unet", size)
    export(ckpt, tmp_path / "m.onnx")
    from segkit.inference.predictor import Predictor

    model = Predictor(ckpt, device="cpu", precision="fp32").model
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, size, size)

    def torch_once() -> None:
        with torch.no_grad():
            model(x)

    def ort_once() -> None:
        session.run(["logits"], {"image": x.numpy()})

    def best_ms(fn, repeat: int = 5) -> float:
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times) * 1000

    torch_ms = best_ms(torch_once)
    benchmark.pedantic(ort_once, rounds=5, warmup_rounds=1, iterations=1)
    ort_ms = benchmark.stats.stats.min * 1000
    benchmark.extra_info.update(
        bc.device_info()
        | {
            "model": "resnet34_unet",
            "size": size,
            "torch_cpu_ms": round(torch_ms, 1),
            "onnxruntime_cpu_ms": round(ort_ms, 1),
            "speedup": round(torch_ms / ort_ms, 2),
        }
    )
    print(f"\nresnet34_unet {size} px CPU: torch {torch_ms:.0f} ms, onnxruntime {ort_ms:.0f} ms")
