"""The training engine: one flat loop, top to bottom.

``train(config)`` builds every part from the registry, trains with Adam and an
exponential learning-rate decay (the lab's recipe), validates each epoch, keeps the best
checkpoint by validation Dice, evaluates the best weights on the test split and writes
the run folder. Read it from :func:`train` down.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit import checkpoint as ckpt_io
from segkit import registry
from segkit.config import RunConfig, data_path
from segkit.contracts import Dataset, Loader
from segkit.errors import ConfigError
from segkit.metrics import DiceMeter
from segkit.precision import Precision, create_precision
from segkit.recipes import Normalize, Recipe


@dataclass
class RunResult:
    """What :func:`train` returns."""

    run_dir: Path
    test: dict[str, float]
    best_epoch: int
    best_valid_dice: float
    epoch_seconds: float
    images_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- building


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU.

    Raises:
        ConfigError: a CUDA device was asked for and none is usable.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_dataset(config: RunConfig) -> Dataset:
    return registry.create(
        "datasets", config.resolved_dataset(), data_path(config), **config.dataset_options
    )


def build_model(config: RunConfig) -> torch.nn.Module:
    """Create the model and check the image size against what it declares it accepts.

    Raises:
        ConfigError: ``image_size`` is not a multiple of the model's ``min_input_multiple``.
    """
    model = registry.create("models", config.model, in_channels=3, out_channels=1, **config.model_options)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"model '{config.model}' returned a {type(model).__name__}; a model factory must "
            "return a torch.nn.Module"
        )
    multiple = int(getattr(model, "min_input_multiple", 1))
    if config.image_size % multiple:
        lo = config.image_size // multiple * multiple
        hi = lo + multiple
        near = f"{lo} or {hi}" if lo else str(hi)
        raise ConfigError(
            f"--image-size {config.image_size} is not divisible by {multiple}, which model "
            f"'{config.model}' needs; use {near}"
        )
    return model


def build_recipe(config: RunConfig) -> Recipe:
    recipe = registry.create("augmentations", config.augment, image_size=config.image_size)
    if not isinstance(recipe, Recipe):
        raise ConfigError(
            f"augmentation '{config.augment}' returned a {type(recipe).__name__}; a recipe "
            "factory must return a segkit.recipes.Recipe"
        )
    return recipe


def build_loader(
    config: RunConfig,
    dataset: Dataset,
    recipe: Recipe,
    split: str,
    *,
    train: bool,
    device: torch.device,
) -> Loader:
    return registry.create(
        "loaders",
        config.loader,
        dataset,
        split,
        recipe,
        config.batch_size,
        train=train,
        seed=config.seed,
        num_workers=config.num_workers,
        device=device,
        **config.loader_options,
    )


def normalization(recipe: Recipe) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) of the recipe's final Normalize, to turn batches back into pictures."""
    norm = recipe.eval[-1]
    assert isinstance(norm, Normalize)  # Recipe.__post_init__ guarantees it
    return norm.mean, norm.std


def _to_device(t: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    t = t.to(device, non_blocking=True)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


# ----------------------------------------------------------------------------- loops


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Loader,
    loss_fn: torch.nn.Module,
    precision: Precision,
    device: torch.device,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean per-image Dice and IoU, and mean batch loss, over ``loader``."""
    model.eval()
    meter = DiceMeter(device)
    for batch in loader:
        images = _to_device(batch.images, device, channels_last)
        masks = _to_device(batch.masks, device, False)
        with precision.autocast():
            logits = model(images)
            loss = loss_fn(logits, masks)
        meter.update(logits, masks, loss)
    return meter.compute()


def train_one_epoch(
    model: torch.nn.Module,
    loader: Loader,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    device: torch.device,
    channels_last: bool,
    progress: Any = None,
) -> dict[str, float]:
    model.train()
    meter = DiceMeter(device)
    for step, batch in enumerate(loader):
        images = _to_device(batch.images, device, channels_last)
        masks = _to_device(batch.masks, device, False)
        with precision.autocast():
            logits = model(images)
            loss = loss_fn(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        precision.backward(loss)
        precision.step(optimizer)
        meter.update(logits, masks, loss)
        if progress is not None:
            progress.update(1)
            if step % 20 == 0:  # a host sync every 20 steps, for the progress bar only
                progress.set_postfix(loss=f"{loss.item():.4f}")
    return meter.compute()


# ----------------------------------------------------------------------------- the run


def make_run_dir(config: RunConfig) -> Path:
    """``<out>/<name>``; a name already taken gets ``-2``, ``-3``... (nothing is overwritten)."""
    base = Path(config.out).expanduser()
    name = config.name or f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name in ("", ".", ".."):
        raise ConfigError(f"--name {name!r}: expected a plain folder name without '/'")
    run_dir = base / name
    n = 2
    while run_dir.exists():
        run_dir = base / f"{name}-{n}"
        n += 1
    try:
        run_dir.mkdir(parents=True)
    except OSError as e:
        raise ConfigError(f"{run_dir}: cannot create the run folder ({e.strerror})") from None
    return run_dir


def _checkpoint(
    config: RunConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    precision: Precision,
    epoch: int,
    best: tuple[float, int],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    raw = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    return {
        "format": ckpt_io.FORMAT,
        "version": ckpt_io.VERSION,
        "config": config.to_dict(),
        "model": raw.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "precision": precision.state_dict(),
        "epoch": epoch,
        "best_valid_dice": best[0],
        "best_epoch": best[1],
        "history": history,
        "rng": ckpt_io.rng_state(),
    }


def train(config: RunConfig, *, quiet: bool = False) -> RunResult:
    """Train, validate, test and report. Returns the test metrics and the run folder."""
    from tqdm.auto import tqdm

    from segkit import report

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    device = resolve_device(config.device)
    seed_everything(config.seed)
    precision = create_precision(config.precision, device)
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once

    # Build everything before creating the run folder, so a bad name or path leaves no trace.
    dataset = build_dataset(config)
    model = build_model(config)
    loss_fn = registry.create("losses", config.loss, **config.loss_options)
    recipe = build_recipe(config)
    train_loader = build_loader(config, dataset, recipe, "train", train=True, device=device)
    valid_loader = build_loader(config, dataset, recipe, "valid", train=False, device=device)
    test_loader = build_loader(config, dataset, recipe, "test", train=False, device=device)

    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_gamma)
    step_model = torch.compile(model) if config.compile else model

    run_dir = make_run_dir(config)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    say(
        f"segkit: {config.model} + {config.loss} + {config.augment} via {config.loader} on "
        f"{config.resolved_dataset()} ({dataset.root}); device {device}, precision "
        f"{precision.name}, {config.epochs} epochs -> {run_dir}"
    )

    history: list[dict[str, Any]] = []
    best = (-math.inf, -1)
    epoch_times: list[float] = []
    images_per_epoch: list[float] = []
    for epoch in range(1, config.epochs + 1):
        train_loader.set_epoch(epoch)
        bar = tqdm(
            total=len(train_loader), desc=f"epoch {epoch}/{config.epochs}", leave=False,
            disable=quiet or None, dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        train_metrics = train_one_epoch(
            step_model, train_loader, loss_fn, optimizer, precision, device, channels_last, bar
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        bar.close()
        valid = evaluate(step_model, valid_loader, loss_fn, precision, device, channels_last)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        epoch_times.append(seconds)
        images_per_epoch.append(train_metrics["images"])
        row = {
            "epoch": epoch,
            "train_loss": train_metrics["loss"],
            "train_dice": train_metrics["dice"],
            "valid_loss": valid["loss"],
            "valid_dice": valid["dice"],
            "valid_iou": valid["iou"],
            "lr": lr,
            "epoch_seconds": seconds,
        }
        history.append(row)
        report.append_metrics(run_dir / "metrics.csv", row)
        improved = valid["dice"] > best[0]
        if improved:
            best = (valid["dice"], epoch)
        state = _checkpoint(config, model, optimizer, scheduler, precision, epoch, best, history)
        ckpt_io.save_atomic(state, run_dir / "last.pt")
        if improved:
            ckpt_io.save_atomic(state, run_dir / "best.pt")
        say(
            f"epoch {epoch:>3}/{config.epochs}  loss {row['train_loss']:.4f}  "
            f"train dice {row['train_dice']:.4f}  valid dice {row['valid_dice']:.4f}  "
            f"{seconds:.1f}s{'  *best' if improved else ''}"
        )

    # Test with the best weights.
    best_state = ckpt_io.load(run_dir / "best.pt", map_location=device)
    getattr(model, "_orig_mod", model).load_state_dict(best_state["model"])
    test = evaluate(model, test_loader, loss_fn, precision, device, channels_last)

    # Time per epoch, excluding the first (warm-up: worker start, cudnn autotune, compile).
    skip = 1 if len(epoch_times) > 1 else 0
    epoch_seconds = sum(epoch_times[skip:]) / len(epoch_times[skip:])
    ips = sum(images_per_epoch[skip:]) / sum(epoch_times[skip:])
    result = RunResult(run_dir, test, best[1], best[0], epoch_seconds, ips, history)

    report.write_curves(run_dir / "curves.png", history)
    report.write_prediction_grid(
        run_dir / "predictions.png", model, test_loader, precision, device,
        *normalization(recipe), n=config.grid_images,
    )
    report.write_summary(run_dir, config, result, device)
    say(report.summary_line(config, result))
    return result
