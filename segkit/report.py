"""The run folder's files: metrics CSV, curves, prediction grid, summary."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from segkit.config import RunConfig
    from segkit.contracts import Loader
    from segkit.engine import RunResult
    from segkit.precision import Precision


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append one epoch's row to ``metrics.csv`` (header written with the first row)."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def rewrite_metrics(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` from a checkpoint's history (rows after it are dropped)."""
    tmp = path.with_suffix(".csv.tmp")
    tmp.unlink(missing_ok=True)
    for row in history:
        append_metrics(tmp, row)
    if history:
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)


def write_bad_samples(path: Path, bad: Sequence[tuple[str, Any, str]]) -> None:
    """List the samples ``--skip-bad-samples`` left out: split, id and the reason."""
    with path.open("w") as f:
        f.write(f"# {len(bad)} samples left out by --skip-bad-samples\n")
        for split, sample, reason in bad:
            f.write(f"{split}\t{sample.id}\t{reason}\n")


def write_curves(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """Loss and Dice per epoch, train and valid, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["valid_loss"] for r in history], label="valid")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_dice.plot(epochs, [r["train_dice"] for r in history], label="train")
    ax_dice.plot(epochs, [r["valid_dice"] for r in history], label="valid")
    ax_dice.set(title="Dice", xlabel="epoch", ylim=(0, 1))
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def write_prediction_grid(
    path: Path,
    model: torch.nn.Module,
    loader: Loader,
    precision: Precision,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    n: int = 8,
) -> None:
    """A PNG with one row per test image: the image, the true mask, the predicted mask,
    and the prediction over the image (green: correct foreground, red: false positive,
    blue: missed foreground)."""
    from PIL import Image

    model.eval()
    images, masks, preds = [], [], []
    for batch in loader:
        with precision.autocast():
            logits = model(batch.images.to(device))
        images.append(batch.images.float().cpu())
        masks.append(batch.masks.cpu())
        preds.append((logits.float() > 0).float().cpu())
        if sum(len(x) for x in images) >= n:
            break
    if not images:
        return
    img = torch.cat(images)[:n]
    true = torch.cat(masks)[:n, 0].numpy().astype(bool)
    pred = torch.cat(preds)[:n, 0].numpy().astype(bool)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    rgb = ((img * s + m).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()

    rows = []
    for i in range(len(rgb)):
        overlay = rgb[i].astype(np.float32)
        colour = np.zeros_like(overlay)
        colour[pred[i] & true[i]] = (0, 200, 0)
        colour[pred[i] & ~true[i]] = (230, 0, 0)
        colour[~pred[i] & true[i]] = (0, 80, 255)
        hit = (pred[i] | true[i])[..., None]
        overlay = np.where(hit, 0.55 * overlay + 0.45 * colour, overlay).astype(np.uint8)
        gray = lambda a: np.repeat((a * 255).astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731
        rows.append(np.concatenate([rgb[i], gray(true[i]), gray(pred[i]), overlay], axis=1))
    pad = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for r in rows for x in (r, pad)][:-1], axis=0)
    Image.fromarray(grid).save(path)


def summary_line(config: RunConfig, result: RunResult) -> str:
    return (
        f"test dice {result.test['dice']:.4f}  test iou {result.test['iou']:.4f}  "
        f"(best epoch {result.best_epoch}, valid dice {result.best_valid_dice:.4f})  "
        f"{result.epoch_seconds:.2f} s/epoch  {result.images_per_second:.1f} images/s  "
        f"model {config.model}  loader {config.loader}  run {result.run_dir}"
    )


def write_summary(
    run_dir: Path, config: RunConfig, result: RunResult, device: torch.device
) -> None:
    """``summary.txt`` (the one line the CLI prints) and ``summary.json`` (machine-readable)."""
    (run_dir / "summary.txt").write_text(summary_line(config, result) + "\n")
    data = {
        "test_dice": result.test["dice"],
        "test_iou": result.test["iou"],
        "test_loss": result.test["loss"],
        "best_epoch": result.best_epoch,
        "best_valid_dice": result.best_valid_dice,
        "epoch_seconds": result.epoch_seconds,
        "images_per_second": result.images_per_second,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "world_size": result.world_size,
        "weights_in_sync": result.weights_in_sync,
    }
    (run_dir / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
