"""``segkit predict --mode auto`` against the explicit modes, on photos of real shapes: a
measurement, not a test (``tests/test_predict_auto.py`` runs it small and asserts).

    PYTHONPATH=.:plugins python benchmarks/predict_auto.py --out benchmarks/results/DIR

No real photos are available and nothing may be downloaded, so the photos are generated:
pets of the synthetic set (:func:`segkit_datasets.synthetic.render_sample`, seeds unseen
in training) rendered at the shapes real photos come in (Oxford-IIIT Pet's 500x375,
375x500, 600x450 and 1024x768; a retina photo's 565x584 and a skin photo's 767x576),
resized (bicubic; masks nearest) with sensor grain added at the final size, saved as JPEG,
with 0/255 masks (trimap != 2, the lab's rule).

Two checkpoints are trained briefly on the synthetic pets (the same model, epochs and
seed): ``resize`` with the flip-only ``type1`` recipe, every image resized to
``--image-size``; ``crop`` with a recipe file of random ``--image-size`` crops at the
images' own scale (``RandomCrop``, flips). Each then predicts every photo with ``segkit
predict`` in each mode (``auto``, ``resize``, ``tile``, ``whole``), and the masks written
are scored against the photos' masks: mean Dice over images (hard masks, threshold 0.5),
and the wall time of the predict call (model opened, images read, predicted and written).
``auto``'s modes are read from the ``predictions.csv`` it writes.

Writes ``results.json`` and ``table.md`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "plugins")]

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

#: Real photos' shapes, (width, height): Oxford-IIIT Pet's common ones, a retina
#: photo's (DRIVE) and a skin photo's (ISIC-like).
SHAPES = ((500, 375), (375, 500), (600, 450), (1024, 768), (565, 584), (767, 576))
MODES = ("auto", "resize", "tile", "whole")
#: The crop recipe: random crops at the images' own scale, flips, ImageNet Normalize.
CROP_RECIPE = """name = "crop"
[[train]]
op = "RandomCrop"
[[train]]
op = "HorizontalFlip"
[[train]]
op = "Normalize"
"""


def write_photos(
    folder: Path,
    shapes: tuple[tuple[int, int], ...] = SHAPES,
    per_shape: int = 4,
    seed: int = 7,
    variant: str = "pet",
) -> list[tuple[Path, Path]]:
    """Generate ``per_shape`` photos of each shape into ``folder/images`` (JPEG) and their
    masks into ``folder/masks`` (0/255 PNG). ``variant``: ``pet`` (a synthetic pet resized
    to the shape, grain added at that size) or ``vessels`` (the vessels generator drawn at
    the shape, at its own scale). Returns ``(image, mask)`` pairs."""
    from segkit_datasets.synthetic import render_sample, render_vessels

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    pairs = []
    index = 0
    for w, h in shapes:
        for _ in range(per_shape):
            rng = np.random.default_rng([seed, index, 2])
            if variant == "vessels":
                big, trimap = render_vessels(seed, index, (w, h))
                mask = Image.fromarray(trimap)
            else:
                image, trimap = render_sample(seed, index)
                big = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))
                grain = rng.standard_normal((h, w, 1), dtype=np.float32) * 3.0
                big = np.clip(big.astype(np.float32) + grain, 0, 255).astype(np.uint8)
                mask = Image.fromarray(trimap).resize((w, h), Image.Resampling.NEAREST)
            index += 1
            stem = f"photo{index:03d}_{w}x{h}"
            image_path = folder / "images" / f"{stem}.jpg"
            mask_path = folder / "masks" / f"{stem}.png"
            Image.fromarray(big).save(image_path, quality=90)
            Image.fromarray(((np.asarray(mask) != 2) * 255).astype(np.uint8)).save(mask_path)
            pairs.append((image_path, mask_path))
    return pairs


def train_checkpoint(kind: str, out: Path, **settings: Any) -> Path:
    """Train the ``resize`` or ``crop`` checkpoint into ``out/runs`` (``settings``: the
    :class:`~segkit.config.RunConfig` fields to set) and return its ``best.pt``."""
    from segkit.config import RunConfig
    from segkit.training import engine

    out.mkdir(parents=True, exist_ok=True)
    if kind == "crop":
        recipe = out / "crop.toml"
        recipe.write_text(CROP_RECIPE)
        settings = {**settings, "recipe": str(recipe)}
    else:
        settings = {**settings, "recipe": "type1"}
    config = RunConfig(**settings, name=kind, out=str(out / "runs"), grid_images=0)
    return engine.train(config, quiet=True).run_dir / "best.pt"


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Hard Dice of two boolean masks (1 when both are empty, as the run's metric)."""
    total = int(predicted.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & truth).sum()) / total


def score_mode(
    checkpoint: Path, pairs: list[tuple[Path, Path]], out: Path, mode: str, **options: Any
) -> dict[str, Any]:
    """``segkit.predict`` of every photo in ``mode`` into ``out``, scored against the masks.

    Returns:
        ``mode``, ``dice`` (mean over images), ``seconds`` (the predict call), ``chosen``
        (the images per mode, from ``predictions.csv``) and ``per_image`` (stem -> Dice).
    """
    import segkit

    started = time.perf_counter()
    segkit.predict(
        checkpoint, [p for p, _ in pairs], out, mode=mode, quiet=True, overwrite=True, **options
    )
    seconds = time.perf_counter() - started
    per_image = {}
    for image, mask in pairs:
        predicted = np.asarray(Image.open(out / f"{image.stem}_mask.png")) > 0
        per_image[image.stem] = dice(predicted, np.asarray(Image.open(mask)) > 0)
    with open(out / "predictions.csv", newline="") as f:
        chosen: dict[str, int] = {}
        for row in csv.DictReader(f):
            chosen[row["mode"]] = chosen.get(row["mode"], 0) + 1
    return {
        "mode": mode,
        "dice": float(np.mean(list(per_image.values()))),
        "seconds": round(seconds, 2),
        "chosen": chosen,
        "per_image": per_image,
    }


def compare(
    checkpoint: Path, pairs: list[tuple[Path, Path]], out: Path, **options: Any
) -> list[dict[str, Any]]:
    """:func:`score_mode` for every mode of :data:`MODES`, each into ``out/<mode>``."""
    return [score_mode(checkpoint, pairs, out / mode, mode, **options) for mode in MODES]


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """A Markdown table: one row per checkpoint and mode."""
    lines = [
        "| checkpoint | mode | images per mode | mean Dice | predict s |",
        "|---|---|---|---|---|",
    ]
    for kind, rows in results.items():
        best = max(r["dice"] for r in rows if r["mode"] != "auto")
        for r in rows:
            chosen = ", ".join(f"{m} {n}" for m, n in sorted(r["chosen"].items()))
            mark = " (best explicit)" if r["mode"] != "auto" and r["dice"] == best else ""
            lines.append(
                f"| {kind} | {r['mode']} | {chosen} | {r['dice']:.4f}{mark} | {r['seconds']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for results")
    p.add_argument(
        "--work", type=Path, default=None, help="runs, photos, masks (default: OUT/work)"
    )
    p.add_argument("--per-shape", type=int, default=4, help="photos of each shape (default 4)")
    p.add_argument("--count", type=int, default=200, help="synthetic training set size")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--model", default="timm_unet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import torch

    torch.set_num_threads(args.threads)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = write_photos(work / "photos", per_shape=args.per_shape)
    settings: dict[str, Any] = {
        "model": args.model,
        "model_options": {"encoder": args.encoder} if args.model == "timm_unet" else {},
        "dataset": "synthetic",
        "dataset_options": {"count": args.count},
        "epochs": args.epochs,
        "validate_every": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "image_size": args.image_size,
        "num_workers": 1,
        "device": "cpu",
        "precision": "fp32",
        "seed": args.seed,
    }
    results: dict[str, list[dict[str, Any]]] = {}
    train_s = {}
    for kind in ("resize", "crop"):
        started = time.perf_counter()
        ckpt = train_checkpoint(kind, work, **settings)
        train_s[kind] = round(time.perf_counter() - started, 1)
        results[kind] = compare(ckpt, pairs, work / "predict" / kind, device="cpu", num_workers=1)
        print(table({kind: results[kind]}), flush=True)
    text = table(results)
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": "cpu, shared 2-core",
        "platform": platform.platform(),
        "torch": torch.__version__,
        "command": " ".join(["python", *sys.argv]),
        "photos": {"shapes": [f"{w}x{h}" for w, h in SHAPES], "per_shape": args.per_shape},
        "training": {**settings, "train_seconds": train_s},
        "results": {
            kind: [{k: v for k, v in r.items()} for r in rows] for kind, rows in results.items()
        },
        "auto_never_worse": {
            kind: rows[0]["dice"] >= max(r["dice"] for r in rows[1:])
            for kind, rows in results.items()
        },
    }
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    header = (
        f"# segkit predict: --mode auto against the explicit modes\n\n"
        f"{record['date']}, {record['machine']}, torch {torch.__version__}; "
        f"`{record['command']}`. {len(pairs)} photos, {args.per_shape} of each shape "
        f"({', '.join(record['photos']['shapes'])}); {args.model} {args.encoder}, "
        f"{args.image_size} px, {args.epochs} epochs on {args.count} synthetic pets.\n\n"
    )
    (args.out / "table.md").write_text(header + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
