"""Rebuilding a trained model from its checkpoint (on the build path of
:mod:`segkit.build`), and predicting masks for image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segkit import checkpoint as ckpt_io
from segkit.build import Runtime, build_model
from segkit.config import RunConfig
from segkit.errors import CheckpointError, ConfigError, PluginNotFoundError
from segkit.recipes import Normalize, Op, Resize
from segkit.task import Task


def open_checkpoint(path: Path, **overrides: Any) -> tuple[RunConfig, dict[str, Any]]:
    """Load a checkpoint and the run config it records, with ``overrides`` applied
    (e.g. ``data``, ``device``: a checkpoint is evaluated wherever it is opened). Another
    ``dataset`` plugin drops the checkpoint's ``dataset_options`` unless they are given.

    Raises:
        CheckpointError: unreadable checkpoint, or a config segkit cannot use.
        ConfigError: an override has a bad value.
    """
    ckpt = ckpt_io.load(path, map_location="cpu")
    try:
        config = RunConfig.from_dict(ckpt["config"], source=str(path))
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{path}: the checkpoint's config is unusable ({e})") from None
    other_dataset = "dataset" in overrides and overrides["dataset"] != config.resolved_dataset()
    if other_dataset and "dataset_options" not in overrides:
        config.dataset_options = {}  # the checkpoint's were its own dataset plugin's
    for key, value in overrides.items():
        setattr(config, key, value)
    config.validate()
    return config, ckpt


def checkpoint_task(ckpt: dict[str, Any]) -> Task:
    """The target a checkpoint's model predicts: its recorded classes, else binary."""
    return Task.from_record(ckpt.get("task"))


def restore_model(
    path: Path, config: RunConfig, ckpt: dict[str, Any], runtime: Runtime
) -> torch.nn.Module:
    """Rebuild the checkpoint's model on the build path (with one logit channel per class
    of a K-class checkpoint) and load its weights, in eval mode.

    Raises:
        CheckpointError: the model plugin is not installed, or the weights do not fit it.
    """
    try:
        model = build_model(
            config, runtime, restoring=True, out_channels=checkpoint_task(ckpt).num_classes
        )
    except PluginNotFoundError as e:
        raise CheckpointError(
            f"{path}: was trained with model '{config.model}', which is not installed here "
            f"({e}). Install the package that provides it"
        ) from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit model '{config.model}' ({str(e).splitlines()[0][:200]})"
        ) from None
    return model.eval()


def preprocess(image: np.ndarray, ops: Sequence[Op]) -> torch.Tensor:
    """Apply evaluation ops (Resize, Normalize) to one ``(H, W, 3)`` uint8 image.

    Returns a ``(1, 3, h, w)`` float32 tensor.

    Raises:
        ConfigError: an op that is not deterministic evaluation preprocessing.
    """
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    for op in ops:
        if isinstance(op, Resize):
            # OpenCV-style bilinear (align_corners=False, no antialias), as albumentations does.
            x = F.interpolate(x, size=(op.size, op.size), mode="bilinear", align_corners=False)
        elif isinstance(op, Normalize):
            mean = torch.tensor(op.mean).view(1, 3, 1, 1) * 255
            std = torch.tensor(op.std).view(1, 3, 1, 1) * 255
            x = (x - mean) / std
        else:
            raise ConfigError(
                f"prediction supports Resize and Normalize in a recipe's eval ops, not "
                f"{type(op).__name__}"
            )
    return x


@torch.no_grad()
def predict_file(
    model: torch.nn.Module,
    image_path: Path,
    ops: Sequence[Op],
    device: torch.device,
    task: Task | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, probabilities)`` at the image's own size: the foreground
    probability ``(H, W)`` of a binary model, the softmax ``(K, H, W)`` of a K-class one
    (``task``). The logits are resized to the image (bilinear) before the sigmoid or
    softmax."""
    from segkit.data import read_image

    image = read_image(image_path)
    x = preprocess(image, ops).to(device)
    logits = model(x).float()
    logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    if task is not None and task.multiclass:
        return image, torch.softmax(logits, dim=1)[0].cpu().numpy()
    return image, torch.sigmoid(logits)[0, 0].cpu().numpy()


def write_prediction(
    out_dir: Path,
    image_path: Path,
    image: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    task: Task | None = None,
    *,
    probabilities: bool = False,
) -> list[Path]:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` into ``out_dir``, and with
    ``probabilities`` ``<stem>_probs.npy`` (``prob`` as float32). Returns the paths.

    Binary: the mask is 0/255 (``prob > threshold``), the overlay tints it green. K classes
    (``task``): the mask is a palette PNG whose pixel values are the class indices
    (``argmax``; any image viewer shows the task's colours), the overlay tints every class
    but class 0 in its colour.
    """
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    mask_path = out_dir / f"{image_path.stem}_mask.png"
    overlay_path = out_dir / f"{image_path.stem}_overlay.png"
    tint = image.astype(np.float32)
    if task is not None and task.multiclass:
        classes = prob.argmax(0).astype(np.uint8)
        palette_png(classes, task).save(mask_path)
        shown = classes != 0
        tint[shown] = 0.5 * tint[shown] + 0.5 * task.colorize(classes)[shown]
    else:
        mask = prob > threshold
        Image.fromarray((mask * 255).astype(np.uint8)).save(mask_path)
        tint[mask] = 0.5 * tint[mask] + 0.5 * np.array([0, 220, 0], np.float32)
    Image.fromarray(tint.astype(np.uint8)).save(overlay_path)
    paths = [mask_path, overlay_path]
    if probabilities:
        probs_path = out_dir / f"{image_path.stem}_probs.npy"
        np.save(probs_path, prob.astype(np.float32))
        paths.append(probs_path)
    return paths


def palette_png(classes: np.ndarray, task: Task) -> Any:
    """An ``(H, W)`` class-index array as a palette ("P") PIL image: the stored values are
    the class indices (what ``segkit.data`` and the ``folder`` dataset read back), the
    palette the task's colours (index 255, ignore, grey)."""
    from PIL import Image

    im = Image.fromarray(classes.astype(np.uint8))  # "L"; putpalette makes it "P"
    flat = [0] * 768
    for c, (r, g, b) in enumerate(task.palette):
        flat[3 * c : 3 * c + 3] = [r, g, b]
    flat[765:768] = [128, 128, 128]
    im.putpalette(flat)
    return im
