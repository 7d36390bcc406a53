"""Epoch time of 3 classes against binary, measured in pairs: ``python
benchmarks/paired_classes.py [REPEATS]``.

The same model and loader train one epoch on the synthetic set (binary) and one on its
collar variant (3 classes: ``ce_dice``, class maps, the confusion-matrix meter),
alternately, ``REPEATS`` times each after a warm-up; the minimum of each is printed. On
a machine shared with other jobs an epoch can take 20 times its quiet time, which no mean
of two rounds (the pytest-benchmark suite) survives; the minimum of interleaved repeats
does. Settings come from ``bench_common`` (``SEGKIT_BENCH_*``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_common as bc  # noqa: E402

PAIRS = (("resnet34_unet", "albumentations"), ("unet", "dali"))


def setup(model: str, loader: str, variant: str):
    from segkit import build
    from segkit.task import Task
    from segkit.training.loops import StepContext, TrainStep, train_one_epoch

    config = bc.run_config(model, loader)
    dataset = bc.dataset(variant)
    task = Task.of(dataset)
    net, optimizer, precision, device = bc.build_training(model, task.num_classes)
    step = build.step_model(net, config, bc.runtime())
    data = bc.build_loader(loader, variant)
    loss = build.build_loss(config, dataset)
    rt = bc.runtime()

    def epoch(e: int) -> None:
        data.set_epoch(e)
        train_one_epoch(TrainStep(StepContext(step, loss, optimizer, rt, task=task)), data)
        bc.sync()

    return epoch


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for model, loader in PAIRS:
        runs = {v: setup(model, loader, v) for v in ("pet", "collar")}
        for run in runs.values():
            run(0)  # warm-up: workers, pipelines, allocator
        times: dict[str, list[float]] = {v: [] for v in runs}
        for r in range(repeats):
            for v, run in runs.items():
                t0 = time.perf_counter()
                run(r + 1)
                times[v].append(time.perf_counter() - t0)
        b, k = min(times["pet"]), min(times["collar"])
        print(
            f"{model} + {loader}: binary {b:.2f} s/epoch, 3 classes {k:.2f} s/epoch "
            f"(x{k / b:.3f}; min of {repeats}: binary {[round(x, 2) for x in times['pet']]}, "
            f"3 classes {[round(x, 2) for x in times['collar']]})",
            flush=True,
        )


if __name__ == "__main__":  # loader workers import this file again
    main()
