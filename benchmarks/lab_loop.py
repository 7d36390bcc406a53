"""The course lab's own training loop, timed side by side with segkit's epoch.

The lab this project reproduces trained UNet and ResNet34-UNet on Oxford-IIIT Pet with a
plain PyTorch loop. This file writes that loop out as the lab ran it, so its speed can be
measured on the same GPU, in the same process, on the same data and models as segkit's:

- a plain ``torch.utils.data.DataLoader`` with the lab's defaults: ``num_workers=0`` (the
  albumentations transforms run in the main process, between the GPU steps) and
  ``shuffle=True``; images read with OpenCV, the mask ``trimap != 2``;
- the type3 transforms written as the lab wrote them (an ``albumentations.Compose`` ending
  in ``Normalize`` and ``ToTensorV2``);
- fp32, NCHW, ``cudnn.benchmark`` off (PyTorch's default);
- the model ending in a sigmoid: segkit's registered model (``unet``,
  ``resnet34_unet``) with ``nn.Sigmoid()`` appended; ``nn.BCELoss`` plus a soft Dice loss
  on the probabilities;
- ``torch.optim.Adam`` (lr 1e-5, studies/lab.toml), ``ExponentialLR(gamma=0.99)`` stepped
  once per epoch;
- ``torch.autograd.set_detect_anomaly(True)`` for the whole run (row "as written"; the
  second row turns it off, the only change);
- ``loss.item()`` and a Dice ``.item()`` appended to Python lists every step, a tqdm bar
  over the batches, a validation pass each epoch, and ``torch.save(model.state_dict())``
  whenever the valid Dice improves.

**What is timed.** The lab's loop costs the same for every batch (reading, augmenting and
the step run one after the other in one process), so a row runs ``warmup`` batches
untimed, times the next ``train_batches`` and extrapolates per image to the whole train
split; the validation pass likewise (``valid_batches``), and the checkpoint write as it
happens (the first epoch always improves). ``None`` times every batch; a result says
which it did (``extrapolated``). segkit's side is whole epochs: a warm-up epoch, then
``segkit_epochs`` timed training epochs and a validation pass, built through
:mod:`segkit.build` exactly as ``segkit run`` builds them (bf16 on a GPU, channels_last,
the loader's workers).

Usage (one JSON per model under ``--out``; a table on stdout)::

    python benchmarks/lab_loop.py --data /tmp/pets --out /tmp/lab       # full size
    python benchmarks/lab_loop.py --tiny --out /tmp/lab                 # CPU, tiny set

The lab's own figures (80 s and 133 s per epoch) were measured on another machine; see
benchmarks/README.md, footnote to "The lab's loop".
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

MODELS = ("resnet34_unet", "unet")

#: The lab's optimizer settings (studies/lab.toml): Adam at lr 1e-5, ExponentialLR 0.99.
LAB_LR = 1e-5
LAB_GAMMA = 0.99


@dataclass(frozen=True)
class LabSettings:
    """How much of the lab's loop to run and time.

    Attributes:
        image_size: Training size (the lab: 256).
        batch_size: Batch size (the lab: 32), for both loops.
        warmup: Training batches run before the clock starts (first CUDA kernels, cuDNN
            handles; the lab's loop has no other start-up cost).
        train_batches: Timed training batches; None: the rest of the epoch.
        valid_batches: Timed validation batches; None: the whole split.
        segkit_epochs: segkit's timed training epochs (after one warm-up epoch).
        progress: Show the lab's tqdm bar (as written); off only where a log must stay short.
    """

    image_size: int = 256
    batch_size: int = 32
    warmup: int = 2
    train_batches: int | None = 12
    valid_batches: int | None = 3
    segkit_epochs: int = 1
    progress: bool = True


# --------------------------------------------------------------------- the lab's parts


class LabPetDataset(torch.utils.data.Dataset):
    """The lab's dataset: an image and its trimap read with OpenCV, ``mask = trimap != 2``
    (the border counts as foreground), the transforms applied, the mask as float (1, H, W).

    It reads the files of a segkit dataset's split (same files, same split as segkit's
    loaders), but nothing else of segkit.
    """

    def __init__(self, samples: list[Any], background: int, transform: Any) -> None:
        self.pairs = [(str(s.image), str(s.mask)) for s in samples]
        self.background = background
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import cv2

        image_path, mask_path = self.pairs[i]
        image = cv2.imread(image_path)
        if image is None:
            raise FileNotFoundError(f"{image_path}: OpenCV could not read this image")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        trimap = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
        if trimap is None:
            raise FileNotFoundError(f"{mask_path}: OpenCV could not read this trimap")
        mask = (trimap != self.background).astype(np.float32)
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"].unsqueeze(0).float()


def lab_transforms(size: int, train: bool) -> Any:
    """type3 as the lab wrote it: flip, gamma, CLAHE, channel shuffle, random resized crop,
    brightness/contrast (each p=0.5), then Resize, Normalize (ImageNet) and ToTensorV2."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    tail = [A.Resize(size, size), A.Normalize(), ToTensorV2()]
    if not train:
        return A.Compose(tail)
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.RandomGamma(gamma_limit=(80, 120), p=0.5),
            A.CLAHE(clip_limit=(1, 4), tile_grid_size=(8, 8), p=0.5),
            A.ChannelShuffle(p=0.5),
            A.RandomResizedCrop(size=(size, size), scale=(0.08, 1.0), ratio=(0.75, 4 / 3), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            *tail,
        ]
    )


class DiceLoss(nn.Module):
    """Soft Dice loss on probabilities, per image, averaged (the lab's)."""

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - dice_coefficient(probs, target)


def dice_coefficient(
    probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Mean per-image Dice of ``probs`` (soft) against ``target``."""
    p = probs.reshape(probs.shape[0], -1)
    t = target.reshape(target.shape[0], -1)
    inter = (p * t).sum(1)
    return ((2.0 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)).mean()


def lab_model(name: str, image_size: int) -> nn.Module:
    """segkit's registered model ``name`` with a sigmoid appended (the lab's models
    returned probabilities)."""
    import segkit

    return nn.Sequential(segkit.create_model(name, image_size=image_size), nn.Sigmoid())


# ----------------------------------------------------------------------- the lab's loop


@dataclass
class LabRow:
    """One row of the lab's loop, timed.

    ``train_s_per_epoch`` and ``valid_s_per_epoch`` are per image from the timed batches,
    times the split's images (exact when every batch was timed: ``extrapolated`` False);
    ``epoch_s`` adds the checkpoint write: what an epoch of the lab's loop takes.
    """

    model: str
    row: str
    anomaly_detection: bool
    train_images: int
    valid_images: int
    timed_train_batches: int
    timed_train_images: int
    timed_train_s: float
    batch_s: list[float]
    timed_valid_images: int
    timed_valid_s: float
    save_s: float
    train_s_per_epoch: float
    valid_s_per_epoch: float
    epoch_s: float
    extrapolated: bool
    steps: int
    mean_train_loss: float
    mean_train_dice: float
    valid_dice: float


@contextlib.contextmanager
def _lab_globals(anomaly: bool) -> Iterator[None]:
    """The lab's process-wide settings for one row, put back afterwards: anomaly detection
    as asked, cuDNN's autotuner off (PyTorch's default; segkit turns it on)."""
    was_anomaly = torch.is_anomaly_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    torch.autograd.set_detect_anomaly(anomaly)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.autograd.set_detect_anomaly(was_anomaly)
        torch.backends.cudnn.benchmark = was_benchmark


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_lab(
    model_name: str,
    dataset: Any,
    device: torch.device,
    settings: LabSettings,
    *,
    anomaly: bool,
    checkpoint: Path,
    seed: int = 0,
) -> LabRow:
    """One epoch of the lab's loop (see the module docstring), timed.

    Raises:
        ValueError: the dataset is multi-class (the lab's loop is binary), or its train
            split is smaller than the warm-up batches.
    """
    from tqdm import tqdm

    spec = dataset.mask_spec
    if spec.is_multiclass:
        raise ValueError(
            f"{dataset.root}: the lab's loop trains binary masks; this dataset has "
            f"{len(spec.classes)} classes"
        )
    torch.manual_seed(seed)
    size, batch = settings.image_size, settings.batch_size
    train_set = LabPetDataset(dataset.samples("train"), spec.background, lab_transforms(size, True))
    valid_set = LabPetDataset(
        dataset.samples("valid"), spec.background, lab_transforms(size, False)
    )
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch, shuffle=True)
    valid_loader = torch.utils.data.DataLoader(valid_set, batch_size=batch, shuffle=False)
    if len(train_loader) <= settings.warmup:
        raise ValueError(
            f"{dataset.root}: {len(train_set)} train images make {len(train_loader)} batches "
            f"of {batch}; the lab's row needs more than its {settings.warmup} warm-up batches"
        )

    with _lab_globals(anomaly):
        model = lab_model(model_name, size).to(device)
        bce, dice_loss = nn.BCELoss(), DiceLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=LAB_LR)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LAB_GAMMA)
        train_losses: list[float] = []
        train_dices: list[float] = []
        best_valid = -math.inf
        batch_s: list[float] = []
        timed_images = 0
        want = settings.train_batches

        model.train()
        bar = tqdm(train_loader, desc=f"lab {model_name}", disable=not settings.progress)
        t_batch = time.perf_counter()
        for i, (images, masks) in enumerate(bar):
            images, masks = images.to(device), masks.to(device)
            optimizer.zero_grad()
            probs = model(images)
            loss = bce(probs, masks) + dice_loss(probs, masks)
            loss.backward()
            optimizer.step()
            train_losses.append(loss.item())  # a host sync every step, as written
            train_dices.append(dice_coefficient((probs > 0.5).float(), masks).item())
            bar.set_postfix(loss=f"{train_losses[-1]:.4f}")
            now = time.perf_counter()  # .item() above synchronized: the step is done
            if i >= settings.warmup:
                batch_s.append(now - t_batch)
                timed_images += len(images)
                if want is not None and len(batch_s) >= want:
                    break
            t_batch = now
        bar.close()
        scheduler.step()

        model.eval()
        valid_dices: list[float] = []
        valid_losses: list[float] = []
        valid_images = 0
        t0 = time.perf_counter()
        with torch.no_grad():
            for j, (images, masks) in enumerate(valid_loader):
                if settings.valid_batches is not None and j >= settings.valid_batches:
                    break
                images, masks = images.to(device), masks.to(device)
                probs = model(images)
                valid_losses.append((bce(probs, masks) + dice_loss(probs, masks)).item())
                valid_dices.append(dice_coefficient((probs > 0.5).float(), masks).item())
                valid_images += len(images)
        valid_s = time.perf_counter() - t0
        valid_dice = float(np.mean(valid_dices))
        save_s = 0.0
        if valid_dice > best_valid:  # the first epoch always improves
            best_valid = valid_dice
            t0 = time.perf_counter()
            torch.save(model.state_dict(), checkpoint)
            save_s = time.perf_counter() - t0

    n_train, n_valid = len(train_set), len(valid_set)
    timed_s = float(sum(batch_s))
    train_epoch = timed_s / timed_images * n_train
    valid_epoch = valid_s / valid_images * n_valid
    extrapolated = timed_images + settings.warmup * batch < n_train or valid_images < n_valid
    row = LabRow(
        model=model_name,
        row="as written (anomaly detection on)" if anomaly else "anomaly detection off",
        anomaly_detection=anomaly,
        train_images=n_train,
        valid_images=n_valid,
        timed_train_batches=len(batch_s),
        timed_train_images=timed_images,
        timed_train_s=round(timed_s, 4),
        batch_s=[round(s, 4) for s in batch_s],
        timed_valid_images=valid_images,
        timed_valid_s=round(valid_s, 4),
        save_s=round(save_s, 4),
        train_s_per_epoch=round(train_epoch, 3),
        valid_s_per_epoch=round(valid_epoch, 3),
        epoch_s=round(train_epoch + valid_epoch + save_s, 3),
        extrapolated=bool(extrapolated),
        steps=len(train_losses),
        mean_train_loss=float(np.mean(train_losses)),
        mean_train_dice=float(np.mean(train_dices)),
        valid_dice=valid_dice,
    )
    del model, optimizer
    _release(device)
    return row


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------- segkit's epoch


def run_segkit(
    model_name: str,
    data: Path,
    settings: LabSettings,
    *,
    loader: str = "albumentations",
    device: str = "auto",
) -> dict[str, Any]:
    """segkit's training epoch and validation pass on the same data, built as ``segkit
    run`` builds them: one warm-up epoch, then ``settings.segkit_epochs`` timed epochs,
    each followed by a timed validation pass."""
    from segkit import build
    from segkit.config import RunConfig
    from segkit.training.loops import (
        EvalContext,
        StepContext,
        TrainStep,
        evaluate,
        train_one_epoch,
    )

    config = RunConfig(
        model=model_name,
        loader=loader,
        recipe="type3",
        dataset="oxford_pet",
        data=str(data),
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        device=device,
        lr=LAB_LR,
    )
    rt = build.resolve_runtime(config)
    dataset = build.build_dataset(config)
    recipe = build.build_recipe(config)
    plan = build.build_eval_plan(config, recipe)
    model = build.build_model(config, rt)
    parts = {
        "model": model,
        "step": build.step_model(model, config, rt),
        "optimizer": build.build_optimizer(model, config),
        "loss": build.build_loss(config),
        "train": build.build_loader(config, rt, dataset, recipe, "train", train=True),
        "valid": build.build_eval_loader(config, rt, dataset, plan, "valid"),
    }
    step = TrainStep(StepContext(parts["step"], parts["loss"], parts["optimizer"], rt))
    context = EvalContext(rt, loss_fn=parts["loss"])
    del model

    def epoch(i: int) -> tuple[float, float, dict[str, Any]]:
        p = parts
        p["train"].set_epoch(i)
        t0 = time.perf_counter()
        out = train_one_epoch(step, p["train"], epoch=i)
        _sync(rt.device)
        t1 = time.perf_counter()
        scores = evaluate(p["model"], p["valid"], context)
        _sync(rt.device)
        return t1 - t0, time.perf_counter() - t1, out | {"valid_dice": scores.get("dice")}

    t0 = time.perf_counter()
    epoch(0)  # warm-up: workers start, cuDNN autotunes, files enter the page cache
    warmup_s = time.perf_counter() - t0
    train_s, valid_s = [], []
    last: dict[str, Any] = {}
    for i in range(1, settings.segkit_epochs + 1):
        tr, va, last = epoch(i)
        train_s.append(tr)
        valid_s.append(va)
    parts.clear()  # the loader's workers and the model go before the next measurement
    _release(rt.device)
    images = len(dataset.samples("train"))
    return {
        "model": model_name,
        "loader": loader,
        "runtime": rt.record(),
        "warmup_epoch_s": round(warmup_s, 3),
        "train_s_per_epoch": round(float(np.mean(train_s)), 3),
        "valid_s_per_epoch": round(float(np.mean(valid_s)), 3),
        "epoch_s": round(float(np.mean(train_s) + np.mean(valid_s)), 3),
        "train_s": [round(s, 3) for s in train_s],
        "train_images": images,
        "images_per_s": round(images / float(np.mean(train_s)), 1),
        "loss": last.get("loss"),
        "valid_dice": last.get("valid_dice"),
    }


# ------------------------------------------------------------------------ side by side


def compare(
    model_name: str,
    data: Path,
    settings: LabSettings,
    work: Path,
    *,
    segkit_loaders: tuple[str, ...] = ("albumentations",),
    device: str = "auto",
) -> dict[str, Any]:
    """The lab's loop as written and without anomaly detection, then segkit's epoch with
    each of ``segkit_loaders``, in this process on one device; ratios lab / segkit."""
    import segkit
    from segkit import build

    dev = build.resolve_device(device)
    dataset = segkit.create_dataset("oxford_pet", data)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for anomaly in (True, False):
        row = run_lab(
            model_name,
            dataset,
            dev,
            settings,
            anomaly=anomaly,
            checkpoint=work / f"lab-{model_name}-best.pt",
        )
        rows.append(asdict(row))
    segkit_rows = [
        run_segkit(model_name, data, settings, loader=lo, device=device) for lo in segkit_loaders
    ]
    ratios = [
        {
            "lab_row": r["row"],
            "segkit_loader": s["loader"],
            "epoch": round(r["epoch_s"] / s["epoch_s"], 2),
            "train": round(r["train_s_per_epoch"] / s["train_s_per_epoch"], 2),
        }
        for r in rows
        for s in segkit_rows
    ]
    return {
        "model": model_name,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "data": str(data),
        "settings": asdict(settings),
        "lab": rows,
        "segkit": segkit_rows,
        "ratios": ratios,
    }


def format_table(results: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`compare` results: one line per lab row and segkit loader."""
    lines = [
        "| model | lab's loop | lab train s/epoch | lab epoch s | segkit loader | segkit train "
        "s/epoch | segkit epoch s | lab / segkit (epoch) | lab / segkit (train) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        segkit_by_loader = {s["loader"]: s for s in res["segkit"]}
        lab_by_row = {r["row"]: r for r in res["lab"]}
        for ratio in res["ratios"]:
            lab = lab_by_row[ratio["lab_row"]]
            seg = segkit_by_loader[ratio["segkit_loader"]]
            est = " (est.)" if lab["extrapolated"] else ""
            lines.append(
                f"| {res['model']} | {lab['row']} | {lab['train_s_per_epoch']:.2f}{est} | "
                f"{lab['epoch_s']:.2f}{est} | {seg['loader']} ({seg['runtime']['precision']}) | "
                f"{seg['train_s_per_epoch']:.2f} | {seg['epoch_s']:.2f} | "
                f"{ratio['epoch']:.1f}x | {ratio['train']:.1f}x |"
            )
    return "\n".join(lines) + "\n"


def tiny_data(root: Path) -> Path:
    """A tiny synthetic set in the Oxford-IIIT Pet layout (24 images: train 16, valid 2,
    test 6), made once."""
    from segkit_datasets.synthetic import is_complete, write_synthetic

    if not is_complete(root, 24, 0):
        write_synthetic(root, count=24, seed=0, workers=1)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--data", help="a set in the Oxford-IIIT Pet layout (train/valid splits)")
    p.add_argument("--out", required=True, help="folder for lab-<model>.json and checkpoints")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (CPU): 32 px, batch 4")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--train-batches", type=int, help="timed lab batches; 0: the whole epoch")
    p.add_argument("--valid-batches", type=int, help="timed lab valid batches; 0: all")
    p.add_argument("--segkit-epochs", type=int, default=1)
    p.add_argument("--segkit-loaders", default="albumentations")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (short logs)")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = (
        LabSettings(image_size=32, batch_size=4, warmup=1, train_batches=None, valid_batches=None)
        if args.tiny
        else LabSettings()
    )

    def pick(value: int | None, default: int | None) -> int | None:
        if value is None:
            return default
        return None if value == 0 else value

    settings = LabSettings(
        image_size=args.image_size or base.image_size,
        batch_size=args.batch_size or base.batch_size,
        warmup=args.warmup if args.warmup is not None else base.warmup,
        train_batches=pick(args.train_batches, base.train_batches),
        valid_batches=pick(args.valid_batches, base.valid_batches),
        segkit_epochs=args.segkit_epochs,
        progress=not args.no_progress,
    )
    if args.data:
        data = Path(args.data)
    elif args.tiny:
        data = tiny_data(out / "tiny-pets")
    else:
        p.error("--data is required without --tiny")
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        res = compare(
            name,
            data,
            settings,
            out,
            segkit_loaders=tuple(args.segkit_loaders.split(",")),
            device=args.device,
        )
        (out / f"lab-{name}.json").write_text(json.dumps(res, indent=2) + "\n")
        results.append(res)
        print(format_table([res]), flush=True)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
