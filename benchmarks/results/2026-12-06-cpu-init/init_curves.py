"""Convergence of the lab's models under the old and the new initialization (issue 29).

    PYTHONPATH=.:plugins python benchmarks/results/2026-12-06-cpu-init/init_curves.py \\
        --out benchmarks/results/2026-12-06-cpu-init [--models unet,resnet34_unet] \\
        [--sets pet,collar,vessels] [--seeds 0,1] [--epochs 6] [--images 160]

For each set and seed, each model is built twice, ``init=kaiming`` (the new default)
and ``init=torch`` (PyTorch's layer defaults, segkit before issue 29), by segkit's own
parts (``build_training``, its cosine schedule with warm-up, ``train_one_epoch``), and
the two copies train in turns in this one process (one model at a time) (see ``benchmarks/peer_smp.py``, whose
helpers this uses: same sets, split, loader, loss and metric). Writes results.json,
table.md, curves.csv and curves.png (valid Dice per epoch) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2]))  # benchmarks/

import peer_smp as peer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", default="unet,resnet34_unet")
    p.add_argument("--sets", default="pet,collar,vessels")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--data-dir", type=Path, default=Path("runs/peer-data"))
    p.add_argument("--vessel-size", default="128x128")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--recipe", default="type1")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (see peer_smp.py)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.encoder = None
    args.out.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    names = [f"{m}:{init}" for m in models for init in ("kaiming", "torch")]
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for variant in [s for s in args.sets.split(",") if s]:
        root = peer.make_set(args, variant)
        for seed in (int(s) for s in args.seeds.split(",") if s):
            run: dict[str, Any] = {"set": variant, "seed": seed, "models": {}}
            # One model at a time (its two inits in turns): four of these models with
            # Adam state at once took 3.6 GB, more than a shared 24 GB machine had free.
            for m in models:
                contenders, t, runtime = [], None, None
                for init in ("kaiming", "torch"):
                    config = peer.run_config(args, root, seed, {"init": init}, model=m)
                    c, t, runtime = peer.segkit_contender(f"{m}:{init}", config)
                    contenders.append(c)
                task = t.task
                run["classes"] = task.num_classes
                for epoch in range(1, args.epochs + 1):
                    k = (epoch - 1) % len(contenders)
                    for c in contenders[k:] + contenders[:k]:
                        t0 = time.perf_counter()
                        c.losses.append(c.train_epoch(epoch))
                        c.seconds.append(time.perf_counter() - t0)
                    for c in contenders:
                        c.valid.append(peer.score(c, "valid", task, runtime)["dice_per_image"])
                    print(
                        f"{variant} seed {seed} epoch {epoch}: "
                        + ", ".join(
                            f"{c.name} {c.valid[-1]:.4f} loss {c.losses[-1]:.4f} "
                            f"({c.seconds[-1]:.0f}s)"
                            for c in contenders
                        ),
                        flush=True,
                    )
                for c in contenders:
                    run["models"][c.name] = {
                        "params": sum(q.numel() for q in c.model.parameters()),
                        "train_loss": c.losses,
                        "valid_dice": c.valid,
                        "epoch_seconds": c.seconds,
                        "test": peer.score(c, "test", task, runtime),
                    }
                del contenders, t
            runs.append(run)
            record = {
                "command": " ".join(["python", *sys.argv]),
                "settings": {k: v for k, v in vars(args).items() if k != "out"},
                "wall_s": time.perf_counter() - started,
                "runs": runs,
            }
            (args.out / "results.json").write_text(json.dumps(record, indent=1, default=str))
            (args.out / "table.md").write_text(table(runs, names))
            peer.write_curves(runs, names, args.out)
    print((args.out / "table.md").read_text())
    return 0


def table(runs: list[dict[str, Any]], names: list[str]) -> str:
    lines = [
        "| set | model:init | valid Dice after epoch 1, 2, ... (mean of seeds) | test Dice per image (seeds) | final train loss (mean) |",
        "|---|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["set"] for r in runs):
        mine = [r for r in runs if r["set"] == variant]
        for name in names:
            curves = [r["models"][name]["valid_dice"] for r in mine]
            mean_curve = [statistics.mean(v) for v in zip(*curves, strict=True)]
            tests = [r["models"][name]["test"]["dice_per_image"] for r in mine]
            loss = statistics.mean(r["models"][name]["train_loss"][-1] for r in mine)
            lines.append(
                f"| {variant} | {name} | {', '.join(f'{v:.3f}' for v in mean_curve)} | "
                f"**{statistics.mean(tests):.4f}** ({', '.join(f'{v:.4f}' for v in tests)}) | {loss:.4f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
