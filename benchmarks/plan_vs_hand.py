"""``segkit plan`` against the hand-tuned settings in benchmarks/results, at equal wall time.

    PYTHONPATH=.:plugins python benchmarks/plan_vs_hand.py --out benchmarks/results/DIR \\
        [--sets pets,collar,vessels128,vessels] [--threads 1] [--hand-from OLD/results.json] \\
        [--images N] [--no-ablations] [--note "cpu, shared 2-core"]

For each generated set (:data:`SETS`):

1. every hand-tuned setting recorded for it in benchmarks/results (:data:`HAND`: the
   README's ``make run``, the init and peer results of 2026-12-06, the native-resolution
   result of 2026-11-26) is trained on the set with ``segkit.training.engine.train``, its
   wall time measured, and its ``best.pt`` tested at native resolution (each test image
   scored on its own mask; the resized runs' own test, on resized masks, is kept too);
2. the best of them by native test Dice sets the budget: ``segkit plan`` plans the set
   with ``--budget`` = that run's wall time (the plan's measurements are made at that
   moment, on the same machine), writes its TOML file, and the file is run as a
   configuration (``RunConfig.from_file``): the plan re-runs as a config;
3. each ablation of :data:`ABLATIONS` runs the plan's file with one setting changed (a
   rule's alternative), so each rule the plan applies is measured against its
   alternative at the same budget.

Writes ``results.json`` (every row, every plan's choices and measurements),
``table.md`` and ``plans/<set>.toml`` / ``plans/<set>.txt`` (the file and the printed
plan) into ``--out``; each run's folder is in ``--out/runs``.

Every run uses the same torch threads (``--threads``, 1 by default: on a machine shared
with other work, one thread is steadier than two) and seed 0. The machine may be shared:
the load average is recorded with each row, and wall times are comparable only within a
set, run one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "plugins")]

#: The generated sets: the sizes the hand-tuned results were measured at (pets: the
#: embedded 400-image default of make run; vessels: the native benchmark's 40 large
#: images; vessels128: the peer benchmark's 128 px vessels).
SETS: dict[str, dict[str, Any]] = {
    "pets": {"count": 400},
    "collar": {"variant": "collar", "count": 200},
    "vessels128": {"variant": "vessels", "size": [128, 128], "count": 96},
    "vessels": {"variant": "vessels", "size": [1500, 1100], "count": 40},
}

_LAB_SHORT = {"schedule": "cosine", "warmup_epochs": 0.5, "batch_size": 8, "recipe": "type1"}
_TIMM18 = {"model": "timm_unet", "model_options": {"encoder": "resnet18"}}
#: The native benchmark's recipes (benchmarks/native_vs_resize.py: flips both ways and
#: 90-degree rotations, after a 256 px random crop or before a resize to 256).
_FLIPS = [{"op": "HorizontalFlip"}, {"op": "VerticalFlip"}, {"op": "RandomRotate90"}]
_CROP = {"name": "crop", "train": [{"op": "RandomCrop"}, *_FLIPS, {"op": "Normalize"}]}
_RESIZE = {"name": "resize", "train": [*_FLIPS, {"op": "Resize"}, {"op": "Normalize"}]}
_NATIVE = {**_TIMM18, "image_size": 256, "epochs": 12, "validate_every": 12, "batch_size": 8}
_NATIVE.update(num_workers=1, grid_images=4)

#: The hand-tuned settings, by set: (name, where it is recorded, settings).
HAND: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "pets": [
        (
            "make-run",
            "README / 2026-12-06-cpu-init (test Dice 0.839-0.849, 400 images)",
            {**_LAB_SHORT, "model": "resnet34_unet", "image_size": 64, "epochs": 10},
        ),
        (
            "peer",
            "2026-12-06-cpu-peer (0.609, 96 images)",
            {**_LAB_SHORT, **_TIMM18, "image_size": 64, "epochs": 6},
        ),
        (
            "init",
            "2026-12-06-cpu-init (unet kaiming 0.595, 64 images)",
            {**_LAB_SHORT, "model": "unet", "image_size": 32, "epochs": 4},
        ),
    ],
    "collar": [
        (
            "peer",
            "2026-12-06-cpu-peer (0.593, 96 images)",
            {**_LAB_SHORT, **_TIMM18, "image_size": 64, "epochs": 6},
        ),
        (
            "init",
            "2026-12-06-cpu-init (unet kaiming 0.605, 64 images)",
            {**_LAB_SHORT, "model": "unet", "image_size": 32, "epochs": 4},
        ),
    ],
    "vessels128": [
        (
            "peer",
            "2026-12-06-cpu-peer (0.482, 96 images of 128 px)",
            {**_LAB_SHORT, **_TIMM18, "image_size": 64, "epochs": 6},
        ),
        (
            "init",
            "2026-12-06-cpu-init (unet kaiming 0.545 on 64 px images)",
            {**_LAB_SHORT, "model": "unet", "image_size": 32, "epochs": 4},
        ),
    ],
    "vessels": [
        (
            "native-crop",
            "2026-11-26-cpu-native crop (0.707)",
            {**_NATIVE, "recipe": "crop.toml", "recipe_definition": _CROP},
        ),
        (
            "native-resize",
            "2026-11-26-cpu-native resize (0.004)",
            {
                **_NATIVE,
                "recipe": "resize.toml",
                "recipe_definition": _RESIZE,
                "eval_size": "native",
            },
        ),
    ],
}

#: Each rule's alternative, run with the plan's settings otherwise: (name, what it
#: measures, the settings changed).
ABLATIONS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "pets": [("batch-8", "the CPU batch rule against the results' batch 8", {"batch_size": 8})],
    "collar": [
        ("batch-8", "the CPU batch rule against the results' batch 8", {"batch_size": 8}),
        (
            "class-weights",
            "median-frequency class weights for the rare collar class",
            {"loss_options": {"weight": "auto"}},
        ),
    ],
    "vessels128": [
        (
            "pos-weight",
            "BCE pos_weight = background/foreground for rare foreground",
            {"loss_options": {"pos_weight": "auto"}},
        )
    ],
    "vessels": [
        (
            "pos-weight",
            "BCE pos_weight = background/foreground for rare foreground",
            {"loss_options": {"pos_weight": "auto"}},
        )
    ],
}


def native_test(run_dir: Path) -> dict[str, float]:
    """Test Dice and IoU of ``run_dir/best.pt`` at native resolution."""
    from segkit import build
    from segkit.config import RunConfig
    from segkit.training import checkpoint as ckpt_io
    from segkit.training.loops import evaluate

    config = RunConfig.from_file(run_dir / "config.json")
    config = RunConfig.from_dict({**config.to_dict(), "eval_size": "native"})
    runtime = build.resolve_runtime(config)
    parts = build.build_training(config, runtime, restoring=True)
    parts.model.load_state_dict(ckpt_io.load(run_dir / "best.pt")["model"])
    scores = evaluate(parts.model, parts.loaders["test"], parts.eval_context(runtime))
    return {"dice": scores["dice"], "iou": scores["iou"]}


def train_row(arm: str, kind: str, config: Any, source: str) -> dict[str, Any]:
    """Train ``config``, test its best weights natively, and return the row."""
    from segkit.training import engine

    print(f"--- {arm} ({kind})", flush=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = engine.train(config, quiet=True)
    wall = time.perf_counter() - started
    native = native_test(result.run_dir)
    history = result.history
    return {
        "arm": arm,
        "kind": kind,
        "source": source,
        "wall_s": round(wall, 1),
        "native_test_dice": round(native["dice"], 4),
        "native_test_iou": round(native["iou"], 4),
        "run_test_dice": round(result.test["dice"], 4),
        "epochs": len(history),
        "train_s": round(sum(r["epoch_seconds"] for r in history), 1),
        "valid_s": round(sum(r["valid_s"] for r in history), 1),
        "checkpoint_s": round(sum(r["checkpoint_s"] for r in history), 1),
        "settings": {
            k: config.to_dict()[k]
            for k in (
                "model",
                "model_options",
                "recipe",
                "image_size",
                "batch_size",
                "epochs",
                "loss",
                "loss_options",
                "schedule",
                "eval_size",
                "validate_every",
                "save_every",
            )
        },
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "run_dir": str(result.run_dir),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--threads", default="1")
    p.add_argument(
        "--hand-from",
        type=Path,
        default=None,
        help="take the hand-tuned rows of these sets from an earlier results.json",
    )
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument(
        "--note", default="", help="what the machine was, in words (kept in results.json)"
    )
    p.add_argument(
        "--images",
        type=int,
        default=None,
        help="generate this many images of every set but the large vessels (default: "
        "the counts of SETS, those the results were measured at); smaller sets keep each "
        "arm to minutes on a shared CPU, and every arm of a set trains on the same images",
    )
    args = p.parse_args()

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    from segkit.config import RunConfig
    from segkit.plan import make_plan, write_plan
    from segkit.plan.rules import duration

    out: Path = args.out
    (out / "plans").mkdir(parents=True, exist_ok=True)
    runs = out / "runs"
    earlier = json.loads(args.hand_from.read_text()) if args.hand_from else {"sets": {}}
    results_path = out / "results.json"
    results: dict[str, Any] = {
        "command": "PYTHONPATH=.:plugins python " + " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "torch": torch.__version__,
        "note": args.note,
        "sets": {},
    }
    for name in args.sets.split(","):
        options = dict(SETS[name])
        if args.images is not None and name != "vessels":
            options["count"] = args.images
        common = {
            "dataset": "synthetic",
            "dataset_options": options,
            "threads": args.threads,
            "seed": 0,
            "out": str(runs),
        }
        rows = []
        old = earlier["sets"].get(name, {}).get("rows", [])
        hand_rows = [r for r in old if r["kind"] == "hand"]
        if hand_rows:
            print(f"=== {name}: hand-tuned rows from {args.hand_from}", flush=True)
            rows += hand_rows
        else:
            for arm, source, settings in HAND[name]:
                config = RunConfig.from_dict({**common, **settings, "name": f"{name}-{arm}"})
                rows.append(train_row(arm, "hand", config, source))
        best = max(rows, key=lambda r: r["native_test_dice"])
        budget = best["wall_s"]
        print(f"=== {name}: planning for {duration(budget)} (the wall time of {best['arm']})")
        base = RunConfig.from_dict({**common, "name": f"{name}-plan"})
        plan = make_plan(base, budget=budget, say=lambda line: print(f"  {line}", flush=True))
        text = "\n".join(plan.lines())
        print(text, flush=True)
        (out / "plans" / f"{name}.txt").write_text(text + "\n")
        plan_file = write_plan(plan, out / "plans" / f"{name}.toml", force=True)
        config = RunConfig.from_file(plan_file)  # the plan file re-runs as a configuration
        rows.append(train_row("plan", "plan", config, str(plan_file.relative_to(out))))
        if not args.no_ablations:
            for arm, what, change in ABLATIONS.get(name, []):
                changed = {**config.to_dict(), **change, "name": f"{name}-{arm}"}
                changed.pop("data_as_typed", None)
                rows.append(train_row(arm, "ablation", RunConfig.from_dict(changed), what))
        results["sets"][name] = {
            "dataset_options": options,
            "planning_s": round(plan.planning_s, 1),
            "budget_s": budget,
            "budget_from": best["arm"],
            "plan": plan.to_dict(),
            "rows": rows,
        }
        results_path.write_text(json.dumps(results, indent=2) + "\n")  # after every set
        write_table(results, out / "table.md")
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    print((out / "table.md").read_text())
    return 0


def write_table(results: dict[str, Any], path: Path) -> None:
    lines = [
        "| set | arm | settings | native test Dice | run's test Dice | wall s (budget) | epochs | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results["sets"].items():
        for r in entry["rows"]:
            s = r["settings"]
            model = s["model"] + (
                f" ({s['model_options']['encoder']})" if s["model_options"].get("encoder") else ""
            )
            opts = "".join(f" {k}={v}" for k, v in s["loss_options"].items())
            what = (
                f"{model}, {Path(s['recipe']).stem}, {s['image_size']} px, batch "
                f"{s['batch_size']}, {s['loss']}{opts}, {s['schedule']}, eval {s['eval_size']}"
            )
            budget = f" ({entry['budget_s']:.0f})" if r["kind"] == "plan" else ""
            lines.append(
                f"| {name} | {r['arm']} ({r['kind']}) | {what} | {r['native_test_dice']:.4f} | "
                f"{r['run_test_dice']:.4f} | {r['wall_s']:.0f}{budget} | {r['epochs']} | "
                f"{r['load_before']:.1f}-{r['load_after']:.1f} |"
            )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
