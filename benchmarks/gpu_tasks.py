"""The GPU check's in-process measurements, one task per process (benchmarks/gpu_check.py
starts each as ``python benchmarks/gpu_tasks.py TASK --json FILE ...`` under a time limit).

- ``model``: model-only training steps (forward, loss, backward, Adam) on tensors already
  on the device, for a list of variants ``model:precision:batch:mode``: segkit's own step
  as ``segkit run`` builds it (:func:`segkit.build.create_step`), mode ``eager``
  (``--cuda-graphs off``) or ``graph`` (``--cuda-graphs on``: the whole step captured as
  one CUDA graph, replayed; segkit.training.graphs.GraphStep). Each variant: warm-up
  steps, then rounds of steps timed between device syncs; images/s of the best round and
  the spread of the rounds (max / min - 1).
- ``compile``: the same step with the model under ``torch.compile`` (``--mode default`` or
  ``max-autotune-no-cudagraphs``): seconds of the first (cold) step, which compiles, and
  the steady images/s, next to the eager images/s measured first in the same process.
  gpu_check gives each compile task an empty inductor and Triton cache, so it is cold.
- ``profile``: torch.profiler over steady-state model-only steps: the top kernels (or, on
  the CPU, operators) by self time, their share, and kernel time against wall time.
- ``lab``: the lab's loop against segkit's epoch (benchmarks/lab_loop.py).

Every task writes one JSON file (``--json``); a variant that cannot run here (fp16 or a
CUDA graph on the CPU) is written as ``skipped`` with the reason, never left out.
Models, optimizers, losses and precision are built through :mod:`segkit.build` from a
:class:`~segkit.config.RunConfig`, as ``segkit run`` builds them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

HERE = Path(__file__).resolve().parent

import torch  # noqa: E402

from segkit.errors import described  # noqa: E402

MODES = ("eager", "graph")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Skip(Exception):
    """A variant that cannot run on this machine; the message says why."""


def build_step(
    model_name: str,
    precision: str,
    batch: int,
    size: int,
    *,
    device: str = "auto",
    channels_last: bool | None = None,
) -> dict[str, Any]:
    """The parts of one model-only training step, built as ``segkit run`` builds them:
    runtime, model (on the device, in its layout), fused Adam, the loss, and a batch of
    random images and 0/1 masks already on the device."""
    from segkit import build
    from segkit.config import RunConfig
    from segkit.errors import ConfigError

    config = RunConfig(
        model=model_name,
        precision=precision,
        image_size=size,
        batch_size=batch,
        device=device,
        channels_last=channels_last,
        lr=1e-4,
    )
    try:
        rt = build.resolve_runtime(config)
    except ConfigError as e:
        raise Skip(str(e)) from None
    model = build.build_model(config, rt)
    images = torch.randn(batch, 3, size, size, device=rt.device)
    if rt.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(batch, 1, size, size, device=rt.device) > 0.5).float()
    return {
        "config": config,
        "runtime": rt,
        "model": model,
        "loss": build.build_loss(config),
        "images": images,
        "masks": masks,
    }


def eager_step(parts: dict[str, Any], module: torch.nn.Module | None = None) -> Any:
    """segkit's training step (:func:`segkit.training.loops.train_one_epoch` without the
    loader and the meters): autocast, backward and step through the precision object."""
    from segkit import build

    rt = parts["runtime"]
    model = module if module is not None else parts["model"]
    optimizer = build.build_optimizer(parts["model"], parts["config"])
    loss_fn, images, masks = parts["loss"], parts["images"], parts["masks"]

    def step() -> None:
        with rt.precision.autocast():
            loss = loss_fn(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        rt.precision.backward(loss)
        rt.precision.step(optimizer)

    return step


def segkit_step(parts: dict[str, Any], cuda_graphs: str) -> Any:
    """segkit's own training step of ``parts``, as ``segkit run`` builds it
    (:func:`segkit.build.create_step`), fed the device batch every call: ``off`` is the
    eager :class:`~segkit.training.loops.TrainStep`, ``on`` the
    :class:`~segkit.training.graphs.GraphStep` (3 eager warm-up steps, the capture, then
    each call copies the batch into the graph's input buffers, writes the learning rate
    into its device tensor and replays). The timed rounds come after ``--warmup`` calls,
    so they time replays only.

    Raises:
        Skip: ``on`` where a graph cannot serve the run (no CUDA device, fp16): the
            policy's reason.
    """
    from dataclasses import replace

    from segkit import build
    from segkit.contracts import Batch
    from segkit.errors import ConfigError

    config = replace(parts["config"], cuda_graphs=cuda_graphs)
    model, rt = parts["model"], parts["runtime"]
    batch = Batch(parts["images"], parts["masks"])
    try:
        step = build.create_step(
            config,
            rt,
            model=model,
            loss=parts["loss"],
            optimizer=build.build_optimizer(model, config),
            train_images=100 * config.batch_size,  # full batches only: one shape
        )
    except ConfigError as e:
        raise Skip(str(e)) from None
    step.begin_epoch([batch])

    def run() -> None:
        step(batch)

    return run


def time_rounds(step: Any, *, warmup: int, steps: int, rounds: int) -> list[float]:
    """Seconds of each of ``rounds`` rounds of ``steps`` steps, after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    _sync()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync()
        out.append(time.perf_counter() - t0)
    return out


def summarize(rounds: list[float], steps: int, batch: int) -> dict[str, Any]:
    best = min(rounds)
    return {
        "rounds_s": [round(r, 5) for r in rounds],
        "step_ms": round(best / steps * 1000, 3),
        "images_per_s": round(steps * batch / best, 1),
        "median_images_per_s": round(steps * batch / statistics.median(rounds), 1),
        "spread": round(max(rounds) / best - 1, 4),
    }


def model_only(
    variant: str, *, size: int, steps: int, rounds: int, warmup: int, device: str = "auto"
) -> dict[str, Any]:
    """One variant ``model:precision:batch:mode``, timed (or skipped with the reason)."""
    model_name, precision, batch, mode = parse_variant(variant)
    row: dict[str, Any] = {
        "variant": variant,
        "model": model_name,
        "precision": precision,
        "batch": batch,
        "mode": mode,
        "size": size,
    }
    try:
        parts = build_step(model_name, precision, batch, size, device=device)
        rt = parts["runtime"]
        row |= {
            "precision_resolved": rt.precision.name,
            "channels_last": rt.channels_last,
            "device": str(rt.device),
        }
        step = segkit_step(parts, "off" if mode == "eager" else "on")
        row |= summarize(time_rounds(step, warmup=warmup, steps=steps, rounds=rounds), steps, batch)
        row["status"] = "ok"
        if rt.device.type == "cuda":
            row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            torch.cuda.reset_peak_memory_stats()
    except Skip as e:
        row |= {"status": "skipped", "note": str(e)}
    except Exception as e:  # noqa: BLE001 - one variant's failure is recorded, the rest run
        traceback.print_exc()
        row |= {"status": "failed", "note": described(e)}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def parse_variant(text: str) -> tuple[str, str, int, str]:
    """``model:precision:batch:mode`` (the last three optional: auto, 32, eager).

    Raises:
        ValueError: a malformed variant, naming it and the expected form.
    """
    bits = text.split(":")
    if not 1 <= len(bits) <= 4 or not bits[0]:
        raise ValueError(f"variant {text!r}: expected model[:precision[:batch[:mode]]]")
    model_name = bits[0]
    precision = bits[1] if len(bits) > 1 and bits[1] else "auto"
    try:
        batch = int(bits[2]) if len(bits) > 2 and bits[2] else 32
    except ValueError:
        raise ValueError(f"variant {text!r}: batch {bits[2]!r} is not an integer") from None
    mode = bits[3] if len(bits) > 3 and bits[3] else "eager"
    if mode not in MODES:
        raise ValueError(f"variant {text!r}: mode {mode!r} is not one of {', '.join(MODES)}")
    return model_name, precision, batch, mode


def compile_model(
    model_name: str,
    *,
    mode: str,
    size: int,
    batch: int,
    steps: int,
    rounds: int,
    warmup: int,
    backend: str = "inductor",
    device: str = "auto",
    save: Any = None,
) -> dict[str, Any]:
    """Eager images/s, then the first step under ``torch.compile`` (the cold compile) and
    the steady images/s, in this process, on the same model and batch; then the compiled
    step as one CUDA graph (:func:`compiled_graph`). ``save(row)`` is given the row
    before the graph is measured: a task stopped at its limit keeps the compile's
    numbers."""
    parts = build_step(model_name, "auto", batch, size, device=device)
    rt = parts["runtime"]
    eager = summarize(
        time_rounds(eager_step(parts), warmup=warmup, steps=steps, rounds=rounds), steps, batch
    )
    kwargs: dict[str, Any] = {"backend": backend}
    if backend == "inductor" and mode != "default":
        kwargs["mode"] = mode
    compiled = torch.compile(parts["model"], **kwargs)
    step = eager_step(parts, compiled)
    t0 = time.perf_counter()
    step()
    _sync()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    step()  # a second step may still compile (the optimizer's state appears after step 1)
    _sync()
    second = time.perf_counter() - t0
    steady = summarize(
        time_rounds(step, warmup=max(0, warmup - 2), steps=steps, rounds=rounds), steps, batch
    )
    row = {
        "model": model_name,
        "mode": mode,
        "backend": backend,
        "precision": rt.precision.name,
        "channels_last": rt.channels_last,
        "device": str(rt.device),
        "batch": batch,
        "size": size,
        "cold_first_step_s": round(cold, 2),
        "second_step_s": round(second, 3),
        "eager_images_per_s": eager["images_per_s"],
        "eager_spread": eager["spread"],
        "images_per_s": steady["images_per_s"],
        "spread": steady["spread"],
        "speedup": round(steady["images_per_s"] / eager["images_per_s"], 3),
        "graph_status": "not reached",
        "graph_note": "the task was stopped before the compiled step was captured",
        "cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
        "status": "ok",
    }
    if save is not None:
        save(row)
    graph = compiled_graph(parts, compiled, warmup=warmup, steps=steps, rounds=rounds)
    if graph.get("images_per_s"):
        graph["speedup"] = round(graph["images_per_s"] / eager["images_per_s"], 3)
    row.pop("graph_note")
    return row | {f"graph_{k}": v for k, v in graph.items()}


def compiled_graph(
    parts: dict[str, Any], compiled: torch.nn.Module, *, warmup: int, steps: int, rounds: int
) -> dict[str, Any]:
    """The compiled model's step captured as one CUDA graph (segkit's GraphStep, as
    ``--compile --cuda-graphs on`` builds it), timed like the other steps: its images/s
    and speed-up over the eager step measured first (``graph_speedup``), or why it
    could not be captured. Costs no second compile: the model is the one just compiled."""
    from segkit import build
    from segkit.contracts import Batch
    from segkit.training.graphs import GraphStep
    from segkit.training.loops import StepContext

    if parts["runtime"].device.type != "cuda":
        return {"status": "skipped", "note": "a CUDA graph needs a CUDA device"}
    config = parts["config"]
    context = StepContext(
        compiled, parts["loss"], build.build_optimizer(parts["model"], config), parts["runtime"]
    )
    batch = Batch(parts["images"], parts["masks"])
    try:
        step = GraphStep(context, batch_size=config.batch_size, warmup=3)
        step.begin_epoch([batch])
        rounds_s = time_rounds(lambda: step(batch), warmup=warmup, steps=steps, rounds=rounds)
    except Exception as e:  # noqa: BLE001 - the capture's failure is the result
        return {"status": "failed", "note": described(e)}
    return {"status": "ok", **summarize(rounds_s, steps, config.batch_size)}


def _self_device_us(event: Any) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(event, name, None)
        if value is not None:
            return float(value)
    return 0.0


def profile_model(
    model_name: str,
    *,
    size: int,
    batch: int,
    steps: int,
    warmup: int,
    out: Path,
    device: str = "auto",
) -> dict[str, Any]:
    """torch.profiler over ``steps`` steady-state model-only steps; writes
    ``profile-<model>.txt`` (the kernels table, then torch's operator table) into ``out``
    and returns the top kernels with their share of the kernel time."""
    from torch.profiler import ProfilerActivity, profile

    parts = build_step(model_name, "auto", batch, size, device=device)
    rt = parts["runtime"]
    step = eager_step(parts)
    time_rounds(step, warmup=warmup, steps=1, rounds=1)
    cuda = rt.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync()
    wall = time.perf_counter() - t0
    averages = prof.key_averages()
    if cuda:
        kernels = [e for e in averages if "cuda" in str(getattr(e, "device_type", "")).lower()]
        kind, key, sort = "kernel", _self_device_us, "self_cuda_time_total"
    else:
        kernels = list(averages)
        kind, sort = "operator", "self_cpu_time_total"

        def key(e: Any) -> float:
            return float(e.self_cpu_time_total)

    kernels = sorted((e for e in kernels if key(e) > 0), key=key, reverse=True)
    if cuda and not kernels:  # no kernel events recognized: say so, show the operators
        kind, sort = "operator (no CUDA kernel events recognized)", "self_cpu_time_total"

        def key(e: Any) -> float:
            return float(e.self_cpu_time_total)

        kernels = sorted((e for e in averages if key(e) > 0), key=key, reverse=True)
    total_us = sum(key(e) for e in kernels)
    top = [
        {
            "name": e.key[:120],
            "calls": int(e.count),
            "total_ms": round(key(e) / 1000, 3),
            "share": round(key(e) / total_us, 4) if total_us else 0.0,
            "avg_us": round(key(e) / max(1, e.count), 2),
        }
        for e in kernels[:25]
    ]
    head = (
        f"{model_name}, model-only training steps (random tensors on the device): {steps} steps "
        f"of batch {batch} at {size} px, {rt.precision.name}, channels_last={rt.channels_last}, "
        f"{rt.device}: {wall:.3f} s under the profiler ({steps * batch / wall:.0f} images/s); "
        f"{kind} time {total_us / 1e6:.3f} s = {total_us / 1e6 / wall:.0%} of the wall time\n"
    )
    lines = [
        head,
        f"Top {kind}s by self time",
        "",
        f"| {kind} | calls | total ms | share | avg us |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {t['name'].replace('|', '/')} | {t['calls']} | {t['total_ms']:.3f} | "
        f"{t['share']:.1%} | {t['avg_us']:.1f} |"
        for t in top
    ]
    try:
        table = averages.table(sort_by=sort, row_limit=40, max_name_column_width=70)
    except (AttributeError, KeyError, ValueError) as e:  # a sort key this torch lacks
        table = f"(sorted by CPU time: {sort} failed: {e})\n" + averages.table(
            sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=70
        )
    text = "\n".join(lines) + "\n\ntorch.profiler key_averages\n\n" + table + "\n"
    path = out / f"profile-{model_name}.txt"
    path.write_text(text)
    print(text)
    return {
        "model": model_name,
        "device": str(rt.device),
        "precision": rt.precision.name,
        "batch": batch,
        "size": size,
        "steps": steps,
        "wall_s": round(wall, 4),
        "kind": kind,
        "busy_s": round(total_us / 1e6, 4),
        "busy_share": round(total_us / 1e6 / wall, 4) if wall else None,
        "top": top[:10],
        "file": path.name,
        "status": "ok",
    }


def lab(model_name: str, *, data: Path, work: Path, tiny: bool, **kw: Any) -> dict[str, Any]:
    """The lab's loop against segkit's epoch for one model (benchmarks/lab_loop.py)."""
    sys.path.insert(0, str(HERE))
    import lab_loop

    base = (
        lab_loop.LabSettings(
            image_size=kw["size"],
            batch_size=kw["batch"],
            warmup=1,
            train_batches=1,
            valid_batches=1,
            progress=False,
        )
        if tiny
        else lab_loop.LabSettings(image_size=kw["size"], batch_size=kw["batch"])
    )
    if kw.get("train_batches") is not None:
        base = _replace(base, train_batches=kw["train_batches"] or None)
    result = lab_loop.compare(
        model_name,
        data,
        base,
        work,
        segkit_loaders=tuple(kw.get("segkit_loaders") or ("albumentations",)),
    )
    print(lab_loop.format_table([result]))
    return result | {"status": "ok"}


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("model", "compile", "profile", "lab"))
    p.add_argument("--json", required=True, help="where to write the task's result")
    p.add_argument("--variants", default="", help="model: model:precision:batch:mode,...")
    p.add_argument("--model", default="unet")
    p.add_argument("--mode", default="default", help="compile: torch.compile mode")
    p.add_argument("--backend", default="inductor", help="compile: torch.compile backend")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--data", help="lab: the Pet-shaped set")
    p.add_argument("--work", help="lab: checkpoints; profile: where the table goes")
    p.add_argument("--tiny", action="store_true", help="lab: tiny sizes")
    p.add_argument("--train-batches", type=int)
    p.add_argument("--segkit-loaders", default="albumentations")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: Any
    try:
        if args.task == "model":
            result = []
            for v in [v for v in args.variants.split(",") if v]:
                row = model_only(
                    v,
                    size=args.size,
                    steps=args.steps,
                    rounds=args.rounds,
                    warmup=args.warmup,
                    device=args.device,
                )
                print(json.dumps(row), flush=True)
                result.append(row)
                # written after every variant: a task stopped at its limit keeps the rest
                out.write_text(json.dumps(result, indent=2) + "\n")
        elif args.task == "compile":
            result = compile_model(
                args.model,
                mode=args.mode,
                size=args.size,
                batch=args.batch,
                steps=args.steps,
                rounds=args.rounds,
                warmup=args.warmup,
                backend=args.backend,
                device=args.device,
                save=lambda row: out.write_text(json.dumps(row, indent=2) + "\n"),
            )
        elif args.task == "profile":
            work = Path(args.work or out.parent)
            work.mkdir(parents=True, exist_ok=True)
            result = profile_model(
                args.model,
                size=args.size,
                batch=args.batch,
                steps=args.steps,
                warmup=args.warmup,
                out=work,
                device=args.device,
            )
        else:
            if not args.data:
                p.error("lab needs --data")
            result = lab(
                args.model,
                data=Path(args.data),
                work=Path(args.work or out.parent),
                tiny=args.tiny,
                size=args.size,
                batch=args.batch,
                train_batches=args.train_batches,
                segkit_loaders=args.segkit_loaders.split(","),
            )
    except Exception:
        traceback.print_exc()
        return 1
    if isinstance(result, dict):
        result["task_s"] = round(time.perf_counter() - t0, 2)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"{args.task}: {time.perf_counter() - t0:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
