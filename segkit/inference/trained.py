"""Rebuilding a trained model from its checkpoint (on the build path of
:mod:`segkit.build`), and writing predicted masks, overlays and probabilities
(:mod:`segkit.inference.predictor` computes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from segkit.build import Runtime, build_model
from segkit.config import RunConfig
from segkit.errors import CheckpointError, ConfigError, PluginNotFoundError
from segkit.system.files import atomic_open
from segkit.task import Task
from segkit.training import checkpoint as ckpt_io


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


ProbabilityFormat = Literal["npy", "png"]


def prediction_paths(
    out_dir: Path,
    stem: str,
    task: Task | None = None,
    *,
    overlay: bool = True,
    probabilities: bool | str = False,
) -> list[Path]:
    """The files :func:`write_prediction` writes for an image named ``stem``, in order."""
    paths = [out_dir / f"{stem}_mask.png"]
    if overlay:
        paths.append(out_dir / f"{stem}_overlay.png")
    fmt = _probability_format(probabilities)
    if fmt == "npy":
        paths.append(out_dir / f"{stem}_probs.npy")
    elif fmt == "png":
        if task is not None and task.multiclass:
            paths += [out_dir / f"{stem}_probs_{name}.png" for name in task.classes]
        else:
            paths.append(out_dir / f"{stem}_probs.png")
    return paths


def _probability_format(probabilities: bool | str) -> str | None:
    if probabilities is True:
        return "npy"
    if not probabilities:
        return None
    if probabilities not in ("npy", "png"):
        raise ConfigError(f"--probabilities {probabilities!r}: expected npy or png")
    return str(probabilities)


def write_prediction(
    out_dir: Path,
    image_path: Path,
    image: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    task: Task | None = None,
    *,
    probabilities: bool | ProbabilityFormat = False,
    overlay: bool = True,
) -> list[Path]:
    """Write ``<stem>_mask.png`` into ``out_dir``, ``<stem>_overlay.png`` with
    ``overlay``, and the probabilities with ``probabilities``: ``"npy"`` (or True)
    ``<stem>_probs.npy`` (``prob`` as float32), ``"png"`` 16-bit grayscale PNGs
    (probability x 65535; one ``<stem>_probs_<class>.png`` per class for K classes).
    Each file is written under a temporary name and renamed, so an interrupted run never
    leaves half a file. Returns the paths (:func:`prediction_paths`).

    Binary: the mask is 0/255 (``prob > threshold``), the overlay tints it green. K classes
    (``task``): the mask is a palette PNG whose pixel values are the class indices
    (``argmax``; any image viewer shows the task's colours), the overlay tints every class
    but class 0 in its colour.
    """
    from PIL import Image

    multiclass = task is not None and task.multiclass
    paths = prediction_paths(
        out_dir, image_path.stem, task, overlay=overlay, probabilities=probabilities
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tint = image.astype(np.float32)
    if multiclass:
        assert task is not None
        classes = prob.argmax(0).astype(np.uint8)
        _save_png(palette_png(classes, task), paths[0])
        shown = classes != 0
        tint[shown] = 0.5 * tint[shown] + 0.5 * task.colorize(classes)[shown]
    else:
        mask = prob > threshold
        _save_png(Image.fromarray((mask * 255).astype(np.uint8)), paths[0])
        tint[mask] = 0.5 * tint[mask] + 0.5 * np.array([0, 220, 0], np.float32)
    rest = iter(paths[1:])
    if overlay:
        _save_png(Image.fromarray(tint.astype(np.uint8)), next(rest))
    fmt = _probability_format(probabilities)
    if fmt == "npy":
        with atomic_open(next(rest), "wb") as f:
            np.save(f, prob.astype(np.float32))
    elif fmt == "png":
        channels = prob if multiclass else prob[None]
        for channel, target in zip(channels, rest, strict=True):
            scaled = np.round(np.clip(channel, 0, 1) * 65535).astype(np.uint16)
            _save_png(Image.fromarray(scaled), target)
    return paths


def _save_png(im: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:  # a hidden temporary name of its own, then renamed
        im.save(f, format="PNG")


def palette_png(classes: np.ndarray, task: Task) -> Any:
    """An ``(H, W)`` class-index array as a palette ("P") PIL image: the stored values are
    the class indices (what ``segkit.data.reading`` and the ``folder`` dataset read back), the
    palette the task's colours (index 255, ignore, grey)."""
    from PIL import Image

    im = Image.fromarray(classes.astype(np.uint8))  # "L"; putpalette makes it "P"
    flat = [0] * 768
    for c, (r, g, b) in enumerate(task.palette):
        flat[3 * c : 3 * c + 3] = [r, g, b]
    flat[765:768] = [128, 128, 128]
    im.putpalette(flat)
    return im
