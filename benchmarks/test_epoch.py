"""Epoch time for every registered model with every registered loader, on a synthetic
set shaped like the Oxford-IIIT Pet train split (type3, 256x256, batch 32 at full size;
see bench_common for the reduced CPU defaults). Each result records images/s and how
close the pipeline gets to its own bottleneck:
``efficiency = epoch images/s / min(model-only images/s, loader-only images/s)``.

``test_epoch_classes`` is the same epoch with 3 classes (the synthetic collar set:
background, pet, collar; ``ce_dice``, class maps through the loaders, the confusion-matrix
meter): what K classes cost against binary."""

from __future__ import annotations

import bench_common as bc
import pytest

from segkit.registry import list_plugins


@pytest.mark.parametrize("loader", list_plugins("loaders"))
@pytest.mark.parametrize("model", bc.models())
def test_epoch(benchmark, model: str, loader: str) -> None:
    _epoch(benchmark, model, loader, "pet")


@pytest.mark.parametrize("loader", list_plugins("loaders"))
@pytest.mark.parametrize("model", bc.models())
def test_epoch_classes(benchmark, model: str, loader: str) -> None:
    _epoch(benchmark, model, loader, "collar")


def _epoch(benchmark, model: str, loader: str, variant: str) -> None:
    from segkit import build
    from segkit.task import Task
    from segkit.training.loops import StepContext, TrainStep, train_one_epoch

    s = bc.settings()
    config = bc.run_config(model, loader)
    task = Task.of(bc.dataset(variant))
    net, optimizer, precision, device = bc.build_training(model, task.num_classes)
    step_model = build.step_model(net, config, bc.runtime())
    data = bc.build_loader(loader, variant)
    loss_fn = build.build_loss(config, bc.dataset(variant))
    epoch = iter(range(10**6))

    def run() -> float:
        data.set_epoch(next(epoch))
        step = TrainStep(StepContext(step_model, loss_fn, optimizer, bc.runtime(), task=task))
        out = train_one_epoch(step, data)
        bc.sync()
        return out["images"]

    images = benchmark.pedantic(run, rounds=2, warmup_rounds=1, iterations=1)
    seconds = benchmark.stats.stats.mean
    ips = images / seconds
    model_ips = bc.model_only_throughput(model)
    loader_ips = bc.loader_only_throughput(loader)
    bound = min(model_ips, loader_ips)
    # The compute floor of the summary (conftest.py) needs the FLOP count: on a GPU only,
    # where a floor is read (counting runs the model once on the CPU).
    flops = (
        {"train_gflop_per_image": round(bc.train_flops_per_image(model) / 1e9, 2)}
        if bc.runtime().device.type == "cuda"
        else {}
    )
    benchmark.extra_info.update(
        bc.device_info()
        | s.describe()
        | {"runtime": bc.runtime().record()}
        | {
            "model": model,
            "loader": loader,
            "classes": task.num_classes,
            "loss": type(loss_fn).__name__,
            "epoch_seconds": round(seconds, 3),
            "epoch_images": int(images),
            "images_per_s": round(ips, 2),
            "model_only_images_per_s": round(model_ips, 2),
            "loader_only_images_per_s": round(loader_ips, 2),
            "efficiency": round(ips / bound, 3),
            "bottleneck": "model" if model_ips <= loader_ips else "loader",
            "precision_resolved": precision.name,
        }
        | flops
    )
    print(
        f"\n{model} + {loader} ({task.describe()}): {seconds:.2f} s/epoch ({int(images)} images), {ips:.1f} images/s, "
        f"{ips / bound:.0%} of min(model {model_ips:.1f}, loader {loader_ips:.1f})"
    )
