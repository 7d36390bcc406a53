"""segkit against segmentation_models_pytorch at equal settings (issue 29).

    python benchmarks/peer_smp.py --out benchmarks/results/DATE-cpu-peer \\
        [--sets pet,collar,vessels] [--seeds 0,1] [--epochs 10] [--images 320] \\
        [--size 64] [--batch 8] [--encoder resnet18] [--variant NAME:KEY=VALUE,...]

What is compared: segkit's ``timm_unet --encoder E`` (its default options, built and
trained by segkit's own parts: :func:`segkit.build.build_training`, the schedule of
:func:`segkit.build.build_scheduler`, :func:`segkit.training.loops.train_one_epoch`)
against ``smp.Unet(E, encoder_weights=None)`` trained by a plain PyTorch loop written out
below (``torch.optim.Adam``, a ``LambdaLR``, forward, loss, backward, step). Same
encoder, same decoder widths (256, 128, 64, 32, 16).

Equal settings, by construction: both read the same split of the same generated set
through the same segkit loader settings (the smp loop gets a loader built from the same
configuration and seed, so it sees the same batches in the same order with the same
augmentation), the same loss (a fresh instance of the loss segkit resolves: ``bce_dice``
binary, ``ce_dice`` for the collar set's 3 classes), Adam at the same learning rate, the
same per-step cosine schedule with the same warm-up (:func:`segkit.build.lr_factor`),
epochs, batch and image size, fp32, and the same metric code on the same test split
after the last epoch (:func:`segkit.training.loops.evaluate` with the task's meter, and
:mod:`segkit.metrics.definitions` for the dataset-level and smp/MONAI variants).

Speed: every epoch trains each model once, in a rotating order, in this one process;
s/epoch is the median of the epochs after the first (the machine may be shared: an
interleaved median is what survives other jobs), and ``ratio`` is segkit's over smp's,
taken epoch by epoch (median of the per-epoch ratios).

Sets (generated once into ``--data-dir``, seed 0, a quarter in test, 20% of the rest
valid): ``pet`` (the synthetic pets, binary), ``collar`` (the same pets wearing collars:
background, pet, collar; the border band ignored), ``vessels`` (thin branching
structures on ``--vessel-size`` images, binary).

``--variant NAME:KEY=VALUE,...`` adds a segkit model with other ``timm_unet`` options
(e.g. ``old-init:init=torch`` for segkit before issue 29, ``head3:head_kernel=3``).

Writes ``results.json`` (every epoch of every run: train loss, valid Dice, seconds),
``table.md`` (test Dice mean and spread over seeds, s/epoch, ratio) and
``curves.csv`` + ``curves.png`` (valid Dice per epoch) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

SETS = ("pet", "collar", "vessels")


@dataclass
class Contender:
    """One model under test: how to train one epoch and what it has recorded."""

    name: str
    model: torch.nn.Module
    train_epoch: Any  # (epoch) -> mean train loss
    loaders: dict[str, Any]
    loss: torch.nn.Module
    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the results")
    p.add_argument("--data-dir", type=Path, default=Path("runs/peer-data"))
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--images", type=int, default=320, help="images per set (all splits)")
    p.add_argument("--size", type=int, default=64, help="training and test image size")
    p.add_argument("--vessel-size", default="128x128", help="WxH of the vessels images")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--recipe", default="type1", help="augmentation (type1: flips)")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--workers", type=int, default=0, help="loader workers (0: in process)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default). On a CPU shared with other jobs "
        "use 1: measured on 2 busy cores, a resnet18 step took 1.1 s with 1 thread and "
        "11-18 s with 2 (OpenMP threads wait for each other's preempted partner)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="another segkit timm_unet: NAME:KEY=VALUE,... (values parsed as JSON)",
    )
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="train nothing: write one table and one figure into --out from the runs of "
        "these results.json files (e.g. one process per set, run side by side)",
    )
    args = p.parse_args(argv)
    args.sets = [s for s in args.sets.split(",") if s]
    unknown = sorted(set(args.sets) - set(SETS))
    if unknown:
        p.error(f"--sets: unknown {', '.join(unknown)}; the sets are {', '.join(SETS)}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.variants = [_parse_variant(p, v) for v in args.variant]
    return args


def _parse_variant(p: argparse.ArgumentParser, text: str) -> tuple[str, dict[str, Any]]:
    name, _, opts = text.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, opts.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            p.error(f"--variant {text}: expected NAME:KEY=VALUE,..., got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if not name or name in ("smp", "segkit"):
        p.error(f"--variant {text}: give it a name other than smp and segkit")
    return name, options


def make_set(args: argparse.Namespace, variant: str) -> Path:
    """Generate the set once (in parallel) into ``--data-dir``; reuse it after."""
    from segkit_datasets.synthetic import is_complete, write_synthetic

    size = None
    if variant == "vessels":
        w, h = (int(v) for v in args.vessel_size.lower().split("x"))
        size = (w, h)
    root = (
        args.data_dir / f"{variant}-{args.images}"
        if size is None
        else (args.data_dir / f"{variant}-{size[0]}x{size[1]}-{args.images}")
    )
    if not is_complete(root, args.images, 0, variant, size):
        write_synthetic(root, count=args.images, seed=0, workers=2, variant=variant, size=size)
    return root


def run_config(
    args: argparse.Namespace,
    root: Path,
    seed: int,
    options: dict[str, Any],
    model: str = "timm_unet",
) -> Any:
    """The ``segkit run`` configuration of one contender (``model`` with ``options``;
    ``timm_unet`` gets ``--encoder``)."""
    from segkit.config import RunConfig

    encoder = {"encoder": args.encoder} if model == "timm_unet" else {}
    return RunConfig(
        model=model,
        model_options={**encoder, **options},
        dataset="synthetic",
        data=str(root),
        dataset_options={"valid_fraction": 0.2},
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        schedule="cosine",
        warmup_epochs=args.warmup_epochs,
        image_size=args.size,
        precision="fp32",
        device="cpu" if not torch.cuda.is_available() else "auto",
        seed=seed,
        num_workers=args.workers,
        eval_size="resize",
    )


def segkit_contender(name: str, config: Any) -> tuple[Contender, Any, Any]:
    """segkit's model trained by segkit's own parts, as ``segkit run`` builds them."""
    from segkit import build
    from segkit.training.loops import StepContext, TrainStep, train_one_epoch

    runtime = build.resolve_runtime(config)  # seeds everything with config.seed
    t = build.build_training(config, runtime)
    scheduler = build.build_scheduler(t.optimizer, t.config, t.steps_per_epoch)
    stepper = build.step_model(t.model, t.config, runtime)
    step = TrainStep(
        StepContext(stepper, t.loss, t.optimizer, runtime, task=t.task, scheduler=scheduler)
    )

    def train_epoch(epoch: int) -> float:
        t.loaders["train"].set_epoch(epoch)
        m = train_one_epoch(step, t.loaders["train"], epoch=epoch)
        return float(m["loss"])

    return Contender(name, t.model, train_epoch, t.loaders, t.loss), t, runtime


def smp_contender(args: argparse.Namespace, config: Any, classes: int) -> Contender:
    """smp's Unet trained by a plain PyTorch loop; data, loss and schedule as segkit's."""
    import segmentation_models_pytorch as smp

    from segkit import build

    runtime = build.resolve_runtime(config)
    t = build.build_training(config, runtime)  # the same loaders and loss, fresh
    build.seed_everything(config.seed)
    model = smp.Unet(args.encoder, encoder_weights=None, in_channels=3, classes=classes)
    model.to(runtime.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, build.lr_factor(t.config, t.steps_per_epoch)
    )
    loader, loss_fn, task, device = t.loaders["train"], t.loss, t.task, runtime.device

    def train_epoch(epoch: int) -> float:
        loader.set_epoch(epoch)
        model.train()
        total, batches = torch.zeros((), device=device), 0
        for batch in loader:
            images = batch.images.to(device)
            masks = task.target(batch.masks.to(device))
            loss = loss_fn(model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.detach()
            batches += 1
        return float(total) / max(1, batches)

    return Contender("smp", model, train_epoch, t.loaders, t.loss)


def score(c: Contender, split: str, task: Any, runtime: Any) -> dict[str, Any]:
    """Per-image and dataset-level scores of ``c`` on ``split`` (same code for all)."""
    from segkit.metrics.definitions import scores_from_meter
    from segkit.training.loops import EvalContext, evaluate

    meter = task.meter(runtime.device, per_image=True)
    evaluate(
        c.model, c.loaders[split], EvalContext(runtime, task=task, loss_fn=c.loss), meter=meter
    )
    return scores_from_meter(meter, task)


def run_pair(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    root = make_set(args, variant)
    contenders: list[Contender] = []
    first, t, runtime = segkit_contender("segkit", run_config(args, root, seed, {}))
    contenders.append(first)
    contenders.append(smp_contender(args, run_config(args, root, seed, {}), t.task.num_classes))
    for name, options in args.variants:
        c, _, _ = segkit_contender(name, run_config(args, root, seed, options))
        contenders.append(c)
    task = t.task
    for epoch in range(1, args.epochs + 1):
        k = (epoch - 1) % len(contenders)
        for c in contenders[k:] + contenders[:k]:  # rotate who goes first
            t0 = time.perf_counter()
            c.losses.append(c.train_epoch(epoch))
            if runtime.device.type == "cuda":
                torch.cuda.synchronize()
            c.seconds.append(time.perf_counter() - t0)
        for c in contenders:
            c.valid.append(score(c, "valid", task, runtime)["dice_per_image"])
        print(
            f"{variant} seed {seed} epoch {epoch}: "
            + ", ".join(
                f"{c.name} loss {c.losses[-1]:.4f} valid {c.valid[-1]:.4f} {c.seconds[-1]:.1f}s"
                for c in contenders
            ),
            flush=True,
        )
    out = {
        "set": variant,
        "seed": seed,
        "root": str(root),
        "classes": task.num_classes,
        "train_images": len(t.dataset.samples("train")),
        "valid_images": len(t.dataset.samples("valid")),
        "test_images": len(t.dataset.samples("test")),
        "models": {},
    }
    for c in contenders:
        out["models"][c.name] = {
            "params": sum(p.numel() for p in c.model.parameters()),
            "train_loss": c.losses,
            "valid_dice": c.valid,
            "epoch_seconds": c.seconds,
            "test": score(c, "test", task, runtime),
        }
    return out


def _median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def summarize(runs: list[dict[str, Any]], names: list[str]) -> str:
    """The markdown table: per set and model, test Dice per image (mean and spread of
    the seeds), dataset-level Dice, s/epoch and segkit's ratio to smp."""
    lines = [
        "| set | model | params | test Dice per image (mean ± half-range; seeds) | "
        "test Dice dataset | test IoU per image | s/epoch (median) | s/epoch ratio to smp |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["set"] for r in runs):
        mine = [r for r in runs if r["set"] == variant]
        for name in (n for n in names if all(n in r["models"] for r in mine)):
            dice = [r["models"][name]["test"]["dice_per_image"] for r in mine]
            ds = [r["models"][name]["test"]["dice_dataset"] for r in mine]
            iou = [r["models"][name]["test"]["iou_per_image"] for r in mine]
            secs = [s for r in mine for s in r["models"][name]["epoch_seconds"][1:]]
            ratios = [
                a / b
                for r in mine
                for a, b in zip(
                    r["models"][name]["epoch_seconds"][1:],
                    r["models"]["smp"]["epoch_seconds"][1:],
                    strict=True,
                )
            ]
            spread = (max(dice) - min(dice)) / 2
            lines.append(
                f"| {variant} | {name} | {mine[0]['models'][name]['params']:,} | "
                f"**{statistics.mean(dice):.4f}** ± {spread:.4f} "
                f"({', '.join(f'{d:.4f}' for d in dice)}) | {statistics.mean(ds):.4f} | "
                f"{statistics.mean(iou):.4f} | {statistics.median(secs):.2f} | "
                f"{statistics.median(ratios):.3f} |"
            )
    return "\n".join(lines) + "\n"


def write_curves(runs: list[dict[str, Any]], names: list[str], out: Path) -> None:
    """curves.csv (one row per set, seed, model, epoch) and curves.png (valid Dice per
    epoch, a panel per set, a line per model and seed)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["set", "seed", "model", "epoch", "train_loss", "valid_dice", "epoch_seconds"])
        for r in runs:
            for name in (n for n in names if n in r["models"]):
                m = r["models"][name]
                for e, (loss, dice, s) in enumerate(
                    zip(m["train_loss"], m["valid_dice"], m["epoch_seconds"], strict=True), 1
                ):
                    w.writerow(
                        [r["set"], r["seed"], name, e, f"{loss:.6f}", f"{dice:.6f}", f"{s:.3f}"]
                    )
    sets = list(dict.fromkeys(r["set"] for r in runs))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, variant in zip(axes[0], sets, strict=True):
        for i, name in enumerate(names):
            for r in (r for r in runs if r["set"] == variant and name in r["models"]):
                dice = r["models"][name]["valid_dice"]
                ax.plot(
                    range(1, len(dice) + 1),
                    dice,
                    color=colours[i % len(colours)],
                    linestyle="-" if r["seed"] == runs[0]["seed"] else "--",
                    label=f"{name} seed {r['seed']}",
                )
        ax.set_title(f"{variant}: valid Dice per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid Dice (per image)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge(args.merge, args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["segkit", "smp", *(n for n, _ in args.variants)]
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for variant in args.sets:
        for seed in args.seeds:
            runs.append(run_pair(args, variant, seed))
            # Written after every pair: a long run killed midway keeps what it finished.
            record = {
                "command": " ".join(["python", *sys.argv]),
                "settings": {k: v for k, v in vars(args).items() if k not in ("out", "variant")}
                | {"data_dir": str(args.data_dir)},
                "environment": _environment(),
                "wall_s": time.perf_counter() - started,
                "runs": runs,
            }
            (args.out / "results.json").write_text(json.dumps(record, indent=1, default=str))
            (args.out / "table.md").write_text(summarize(runs, names))
            write_curves(runs, names, args.out)
    print((args.out / "table.md").read_text())
    return 0


def merge(files: list[Path], out: Path) -> int:
    """One results.json, table.md and figure from several runs' results.json."""
    records = [json.loads(f.read_text()) for f in files]
    runs = [r for rec in records for r in rec["runs"]]
    names = list(dict.fromkeys(n for r in runs for n in r["models"]))
    merged = {
        "commands": [rec["command"] for rec in records],
        "settings": [rec["settings"] for rec in records],
        "environment": records[0]["environment"],
        "wall_s": [rec["wall_s"] for rec in records],
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(merged, indent=1, default=str))
    (out / "table.md").write_text(summarize(runs, names))
    write_curves(runs, names, out)
    print((out / "table.md").read_text())
    return 0


def _environment() -> dict[str, Any]:
    import platform

    import segmentation_models_pytorch as smp
    import timm

    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


if __name__ == "__main__":  # loader workers import this file again
    sys.exit(main())
