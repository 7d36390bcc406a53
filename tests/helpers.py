"""Helpers shared by several test files (fixtures are in conftest.py).

No test file imports another: what two of them use lives here (or in conftest.py,
dali_helpers.py for the DALI parity tests, faultkit.py for the fault campaign).
"""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import segkit
from segkit.config import RunConfig
from segkit.data.prepare import Ready, prepare_training
from segkit.task import Task
from segkit.training import checkpoint as ckpt_io

# ---------------------------------------------------------------------------- tiny runs


def tiny(data: Path, out: Path, **options: object) -> RunConfig:
    """A UNet run on the tiny pet set at 32 px: a few seconds an epoch on a CPU."""
    base = {"model": "unet", "image_size": 32, "batch_size": 4, "num_workers": 0}
    return RunConfig(**(base | {"data": str(data), "out": str(out)} | options))


def rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def comparable(run_dir: Path) -> list[dict[str, float]]:
    keep = ("epoch", "train_loss", "train_dice", "valid_loss", "valid_dice", "lr")
    return [{k: float(r[k]) for k in keep} for r in rows(run_dir)]


# ---------------------------------------------------------------------------- checkpoints

#: A 140k-parameter timm_unet (timm's test_efficientnet) for checkpoints written without
#: training: a forward of 8 images at 32 px takes ~30 ms.
TINY_MODEL = {"encoder": "test_efficientnet", "decoder_channels": [32, 16, 8, 8, 8]}
TRIO = Task(("bg", "cat", "dog"), ((0, 0, 0), (255, 0, 0), (0, 0, 255)))


def save_checkpoint(
    path: Path,
    *,
    model: str = "timm_unet",
    task: Task | None = None,
    image_size: int = 32,
    recipe: str | None = "type3",
) -> Path:
    """A weights-only checkpoint as ``segkit run`` writes it, random weights; ``recipe``
    None: a config that records no recipe, as old checkpoints' did not."""
    options = TINY_MODEL if model == "timm_unet" else {}
    config = RunConfig(
        model=model, model_options=dict(options), image_size=image_size, recipe=recipe or "type3"
    ).to_dict()
    if recipe is None:
        del config["recipe"]
    torch.manual_seed(0)
    out = task.num_classes if task is not None else 1
    net = segkit.create_model(model, out_channels=out, **options) if model != "gone" else None
    state = {
        "format": ckpt_io.FORMAT,
        "version": ckpt_io.VERSION,
        "kind": "weights",
        "config": config,
        "model": net.state_dict() if net is not None else {},
        **({"task": task.record()} if task is not None else {}),
    }
    ckpt_io.save_atomic(state, path)
    return path


# ---------------------------------------------------------------------------- run folders


def run_folder(
    path: Path,
    data: Path,
    *,
    seed: int = 0,
    epochs: int = 3,
    done: int | None = None,
    valid: tuple[float, ...] = (0.5, 0.7, 0.6),
    finished: bool = True,
    stopped_by: str = "epochs",
    threads: str | int = "auto",
    used_threads: int | None = 2,
    last_pt: bool = False,
    **options: object,
) -> Path:
    """A run folder as ``segkit run`` writes it, made without training: ``config.json``
    (a tiny ``timm_unet`` on ``data`` at 32 px; ``resolved.threads`` is ``used_threads``,
    left out where None, as older runs did), ``metrics.csv`` with ``done`` epochs (default
    ``epochs``; their valid Dice from ``valid``), ``best.pt`` (random weights) and, when
    ``finished``, ``summary.json`` and ``summary.txt`` (``stopped_by``: ``epochs``,
    ``patience`` or ``max_time``). ``last_pt``: a ``last.pt`` too (a copy of ``best.pt``)."""
    from segkit.training.run_folder import RunFolder, RunResult

    done = epochs if done is None else done
    config = RunConfig(
        model="timm_unet",
        model_options=dict(TINY_MODEL),
        image_size=32,
        batch_size=4,
        num_workers=0,
        data=str(data),
        out=str(path.parent),
        name=path.name,
        seed=seed,
        epochs=epochs,
        threads=threads,
        **options,  # type: ignore[arg-type]
    )
    path.mkdir(parents=True)
    folder = RunFolder(path)
    resolved: dict[str, object] = {"device": "cpu", "precision": "fp32", "data_root": str(data)}
    if used_threads is not None:
        resolved["threads"] = used_threads
    folder.write_config(config, resolved)
    history = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "train_dice": 0.5,
            "valid_loss": 1.0 - valid[(e - 1) % len(valid)],
            "valid_dice": valid[(e - 1) % len(valid)],
            "epoch_seconds": 2.0,
            "train_images": 12,
        }
        for e in range(1, done + 1)
    ]
    for row in history:
        folder.append_metrics(row)
    if done:
        save_checkpoint(folder.best)
    if last_pt:
        save_checkpoint(folder.last)
    if finished:
        best = max(history, key=lambda r: (r["valid_dice"], -r["epoch"]))
        result = RunResult(
            path,
            {"dice": 0.4 + seed / 100, "iou": 0.3 + seed / 100, "loss": 0.5},
            int(best["epoch"]),
            float(best["valid_dice"]),
            2.0,
            6.0,
            history,
            epochs_run=done,
            stopped_early=stopped_by != "epochs",
            stopped_by=stopped_by,
        )
        folder.write_summary(config, result, resolved)
    return path


# ---------------------------------------------------------------------------- plugins


def make_distribution(
    root: Path,
    dist: str,
    groups: dict[str, dict[str, str]],
    modules: dict[str, str],
    version: str = "1.0",
) -> Path:
    """Fake an installed distribution: a dist-info with entry_points.txt, plus its modules.
    Returns the dist-info folder."""
    # pip names the folder after the normalized distribution name (PEP 491): fake_x-1.0.
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = []
    for group, eps in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return info


# ---------------------------------------------------------------------------- models


class RunsOutOfMemory(torch.nn.Module):
    """:class:`Constant`'s logits, and the CUDA allocator's error for inputs of more than
    ``limit`` pixels (counting the calls of each kind)."""

    def __init__(self, limit: int, error: Exception | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.error = error or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8 GiB")
        self.calls: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape[2:]))
        if x.shape[2] * x.shape[3] > self.limit:
            raise self.error
        return torch.full((x.shape[0], 1, *x.shape[2:]), 0.7)


def write_defects(root: Path, count: int = 20, empty_every: int = 5) -> Path:
    """A ``folder`` set of 32x32 noise images: one in ``empty_every`` holds a bright 4x4
    blob, the others' masks are empty."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        image = rng.integers(80, 140, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        if i % empty_every == 0:
            y, x = rng.integers(4, 24, 2)
            mask[y : y + 4, x : x + 4] = 255
            image[mask > 0] = 230
        Image.fromarray(image).save(root / "images" / f"d{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"d{i:02d}.png")
    return root


def blind_checkpoint(path: Path, bias: float) -> Path:
    """A random checkpoint whose head's bias is ``bias``: -100 predicts no foreground
    anywhere, +100 foreground everywhere."""
    save_checkpoint(path)
    state = ckpt_io.load(path, map_location="cpu")
    state["model"]["head.bias"].fill_(bias)
    ckpt_io.save_atomic(state, path)
    return path


def ready_folder(
    root: Path, *, skip: bool = False, batch_size: int = 2, workers: int | None = None
) -> Ready:
    """The checks a run makes before training (:func:`segkit.data.prepare.prepare_training`)
    on the ``folder`` dataset at ``root``: what it trains on, leaves out and warns about."""
    dataset = segkit.create_dataset("folder", root)
    return prepare_training(
        dataset, name="folder", skip_bad_samples=skip, batch_size=batch_size, workers=workers
    )
