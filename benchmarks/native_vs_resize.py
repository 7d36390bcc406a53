"""Native resolution against resizing, on thin structures: a measurement, not a test.

    PYTHONPATH=.:plugins python benchmarks/native_vs_resize.py --out benchmarks/results/DIR

Data: the synthetic ``vessels`` set (``--dataset-opt variant=vessels``): images of
``--size`` (1500x1100) holding branching structures 2-4 px wide. Resized to 256 px a vessel
is well under a pixel wide.

Two runs, the same model, loss, epochs, batch size, seed and augmentations (flips both
ways and 90-degree rotations; no elastic deformation), through ``segkit.training.engine.train``
with the albumentations loader:

(a) ``resize``: every training image resized to ``--image-size``, as the lab trains.
    Tested at native resolution (``--eval-size native``: each test image resized to the
    training size for the model, its logits resized back to the image's size, scored on
    the original mask). Its resized test score (the lab's: resized masks) is reported
    too, to show what resizing hides.
(b) ``crop``: random ``--image-size`` crops at the images' own resolution
    (``RandomCrop``); tested natively (whole images, padded to the model's multiple).

Validation runs once, after the last epoch (``--validate-every`` = epochs), so both runs
spend their time training. Prints a Markdown table and writes ``results.json`` and
``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "plugins")]


def recipe_file(folder: Path, name: str, sizing: str) -> Path:
    """A recipe file: ``sizing`` (RandomCrop or Resize) and flips + rot90 + Normalize."""
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n'
        + ("" if sizing == "Resize" else f'[[train]]\nop = "{sizing}"\n')
        + '[[train]]\nop = "HorizontalFlip"\n'
        + '[[train]]\nop = "VerticalFlip"\n'
        + '[[train]]\nop = "RandomRotate90"\n'
        + ('[[train]]\nop = "Resize"\n' if sizing == "Resize" else "")
        + '[[train]]\nop = "Normalize"\n'
    )
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for results and runs")
    p.add_argument("--count", type=int, default=40, help="generated images (25%% test)")
    p.add_argument("--size", default="1500x1100", help="image size WxH (default 1500x1100)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--model", default="timm_unet")
    p.add_argument("--model-opt", action="append", default=["encoder=resnet18"])
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    from segkit import build
    from segkit.config import RunConfig, parse_options
    from segkit.inference.native import plan_eval
    from segkit.training import checkpoint as ckpt_io
    from segkit.training import engine
    from segkit.training.loops import evaluate

    w, _, h = args.size.partition("x")
    size = [int(w), int(h)]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipes = out / "recipes"
    recipes.mkdir(exist_ok=True)
    common = dict(
        model=args.model,
        model_options=parse_options(args.model_opt, "--model-opt"),
        dataset="synthetic",
        dataset_options={"variant": "vessels", "size": size, "count": args.count},
        epochs=args.epochs,
        validate_every=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        num_workers=args.num_workers,
        device=args.device,
        precision="fp32" if args.device == "cpu" else "auto",
        seed=args.seed,
        out=str(out / "runs"),
        grid_images=4,
    )
    t0 = time.perf_counter()
    dataset = build.build_dataset(RunConfig(**common))  # generated into the cache once
    gen_s = time.perf_counter() - t0
    splits = {s: len(dataset.samples(s)) for s in ("train", "valid", "test")}
    print(f"vessels {size[0]}x{size[1]}: {splits} ({gen_s:.0f} s to generate or find)")

    arms = {
        "resize": RunConfig(
            **common,
            recipe=str(recipe_file(recipes, "resize", "Resize")),
            eval_size="native",
            name="resize",
        ),
        "crop": RunConfig(
            **common,
            recipe=str(recipe_file(recipes, "crop", "RandomCrop")),
            eval_size="auto",
            name="crop",
        ),
    }
    rows = []
    for name, config in arms.items():
        started = time.perf_counter()
        result = engine.train(config, quiet=False)
        wall = time.perf_counter() - started
        history = result.history
        train_s = sum(r["epoch_seconds"] for r in history)
        valid_s = sum(r["valid_s"] for r in history)
        test_s = wall - train_s - valid_s - sum(r["checkpoint_s"] for r in history)
        row = {
            "run": name,
            "train": f"resized to {args.image_size}"
            if name == "resize"
            else f"random {args.image_size} crops, native scale",
            "native_test_dice": result.test["dice"],
            "native_test_iou": result.test["iou"],
            "train_s": round(train_s, 1),
            "s_per_epoch": round(train_s / len(history), 2),
            "valid_s": round(valid_s, 1),
            "wall_s": round(wall, 1),
            "test_and_reports_s": round(test_s, 1),
        }
        if name == "resize":
            # The lab's number: the same best.pt scored on resized test masks.
            lab = RunConfig.from_dict({**config.to_dict(), "eval_size": "resize"})
            runtime = build.resolve_runtime(lab)
            t = build.build_training(lab, runtime, restoring=True)
            t.model.load_state_dict(ckpt_io.load(result.run_dir / "best.pt")["model"])
            plan = plan_eval("resize", t.recipe)
            assert not plan.native
            resized = evaluate(t.model, t.loaders["test"], t.eval_context(runtime))
            row["resized_test_dice"] = resized["dice"]
            row["resized_test_iou"] = resized["iou"]
        rows.append(row)

    load = os.getloadavg()
    meta = {
        "command": "PYTHONPATH=.:plugins python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "torch": torch.__version__,
        "load_average_at_end": [round(x, 2) for x in load],
        "images": {"size": size, **splits},
        "settings": {
            k: v for k, v in common.items() if k not in ("out", "dataset", "dataset_options")
        },
    }
    table = [
        "| run | training | test Dice (native) | test IoU (native) | test Dice (resized masks) "
        "| train s (s/epoch) | test + reports s | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lab = f"{r['resized_test_dice']:.4f}" if "resized_test_dice" in r else "n/a (native recipe)"
        table.append(
            f"| {r['run']} | {r['train']} | {r['native_test_dice']:.4f} | "
            f"{r['native_test_iou']:.4f} | {lab} | {r['train_s']} ({r['s_per_epoch']}) | "
            f"{r['test_and_reports_s']} | {r['wall_s']} |"
        )
    text = "\n".join(table)
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
