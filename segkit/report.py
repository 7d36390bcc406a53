"""The run folder's pictures: loss and Dice curves, and the prediction grid.

(Where each file goes, and the text files, are :mod:`segkit.run_folder`'s.)"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from segkit.contracts import Loader
    from segkit.precision import Precision


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
