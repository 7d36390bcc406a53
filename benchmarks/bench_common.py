"""Settings, data and measurements shared by the benchmark suites.

Sizes come from the environment so the same files run on a 2-core laptop and on an H100:

=========================  =============================  ==============================
variable                   default without a GPU          default with a GPU / FULL=1
=========================  =============================  ==============================
SEGKIT_BENCH_FULL          0 (1 selects the full size)
SEGKIT_BENCH_IMAGES        48                             3312 (the Pet train split)
SEGKIT_BENCH_SIZE          64                             256
SEGKIT_BENCH_BATCH         8                              32
SEGKIT_BENCH_PRECISION     auto                           auto (bf16 on GPUs with bf16)
SEGKIT_BENCH_CHANNELS_LAST auto (on for CUDA)
SEGKIT_BENCH_COMPILE       0
SEGKIT_BENCH_WORKERS       auto (segkit run's default)
SEGKIT_BENCH_RECIPE        type3
SEGKIT_BENCH_MODELS        every registered model (comma-separated names to pick some)
SEGKIT_BENCH_DATA          (unset)                        a set in the Oxford-IIIT Pet layout
=========================  =============================  ==============================

``SEGKIT_BENCH_IMAGES``, ``_SIZE``, ``_BATCH`` and ``_WORKERS`` also size the suites that
have their own variables (loader and augmentations, DALI feed, tiling, ONNX, smp peer),
unless those are set (:func:`suite_setting`): the tiny settings ``SEGKIT_BENCH_IMAGES=8
SEGKIT_BENCH_SIZE=32 SEGKIT_BENCH_BATCH=4`` shrink every suite.

Data is the synthetic pet set (JPEGs of about 500x375 with trimaps, in the Oxford-IIIT
Pet layout), generated once (in parallel, one process per core) into ``$SEGKIT_CACHE``
(``~/.cache/segkit``) and reused. ``SEGKIT_BENCH_DATA`` names a set already made instead
(``make gpu-check`` passes its Pet-shaped set: train 3312 / valid 368); its whole train
split is the epoch then.

Every part is built through :mod:`segkit.build` from a :class:`~segkit.config.RunConfig`
(:func:`run_config`), exactly as ``segkit run`` builds it: the same runtime resolution
(device, precision, channels_last, workers), model, optimizer, loss and loaders.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from segkit import build
from segkit.config import RunConfig


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SEGKIT_BENCH_{name}", default)


#: The shared size knobs: set one and every suite follows it unless that suite's own
#: variable (``SEGKIT_BENCH_<SUITE>_<NAME>``) is set too.
SIZE_KNOBS = ("IMAGES", "SIZE", "BATCH", "WORKERS")

#: The variables that size a run: any of them set makes it other than the default size.
SIZE_VARIABLES = tuple(
    f"SEGKIT_BENCH_{name}"
    for name in (
        "FULL", "DATA", "IMAGES", "SIZE", "BATCH", "WORKERS",
        "LOADER_IMAGES", "LOADER_SIZE", "LOADER_BATCH", "LOADER_WORKERS",
        "FEED_IMAGES", "FEED_SIZE", "FEED_BATCH",
        "PEER_IMAGES", "PEER_SIZE", "PEER_EPOCHS", "PEER_SEEDS",
        "TILE_SIZE", "TILE_IMAGE", "ONNX_SIZE",
    )
)  # fmt: skip


def suite_setting(suite: str, name: str, default: int) -> int:
    """A suite's own size: ``SEGKIT_BENCH_<SUITE>_<NAME>``, else the shared
    ``SEGKIT_BENCH_<NAME>``, else ``default`` (``suite=""``: the shared one alone). So ``SEGKIT_BENCH_SIZE=32`` shrinks the
    loader, augmentation, feed, peer, tiling and ONNX suites too, and
    ``SEGKIT_BENCH_LOADER_SIZE=256`` still pins the loader suite alone. ``auto`` (for
    ``WORKERS``) is -1: ``segkit run``'s default."""
    shared = (f"SEGKIT_BENCH_{name}",) if name in SIZE_KNOBS else ()
    names = (f"SEGKIT_BENCH_{suite}_{name}",) if suite else ()
    for var in (*names, *shared):
        text = os.environ.get(var)
        if text is None or text.strip() == "":
            continue
        if name == "WORKERS" and text.strip() == "auto":
            return -1
        try:
            value = int(text)
        except ValueError:
            raise ValueError(
                f"{var}={text!r}: expected a whole number"
                f"{' or auto' if name == 'WORKERS' else ''}; unset it for the default ({default})"
            ) from None
        if value < (-1 if name == "WORKERS" else 1):
            raise ValueError(
                f"{var}={text!r}: expected {'-1 or more' if name == 'WORKERS' else 'at least 1'}; "
                f"unset it for the default ({default})"
            )
        return value
    return default


def default_size() -> bool:
    """True when no variable of :data:`SIZE_VARIABLES` is set: the run the README's
    command makes."""
    return not any(os.environ.get(v, "").strip() for v in SIZE_VARIABLES)


@dataclass(frozen=True)
class LoaderSizes:
    """The loader and augmentation suites' sizes (``SEGKIT_BENCH_LOADER_*``): 128 images
    (1024 with a GPU) of 256 px, batch 32 unless set."""

    images: int
    size: int
    batch: int
    workers: int  # -1: segkit run's default


@functools.cache
def loader_sizes() -> LoaderSizes:
    return LoaderSizes(
        images=suite_setting("LOADER", "IMAGES", 1024 if torch.cuda.is_available() else 128),
        size=suite_setting("LOADER", "SIZE", 256),
        batch=suite_setting("LOADER", "BATCH", 32),
        workers=suite_setting("LOADER", "WORKERS", -1),
    )


@functools.cache
def feed_sizes() -> tuple[int, int, int]:
    """The DALI feed suite's images, batch and size (``SEGKIT_BENCH_FEED_*``): 256, 32, 256."""
    return (
        suite_setting("FEED", "IMAGES", 256),
        suite_setting("FEED", "BATCH", 32),
        suite_setting("FEED", "SIZE", 256),
    )


@functools.cache
def tile_sizes() -> tuple[int, int]:
    """The tiling test's tile and image side, px: ``SEGKIT_BENCH_TILE_SIZE`` (else
    ``SEGKIT_BENCH_SIZE``, else 256) and ``SEGKIT_BENCH_TILE_IMAGE`` (else 8 tiles: 2048
    for 256 px tiles, 256 for 32 px ones)."""
    tile = suite_setting("TILE", "SIZE", 256)
    return tile, suite_setting("TILE", "IMAGE", 8 * tile)


def onnx_size() -> int:
    """The ONNX comparison's image side: ``SEGKIT_BENCH_ONNX_SIZE``, ``SEGKIT_BENCH_SIZE``
    or 256."""
    return suite_setting("ONNX", "SIZE", 256)


def peer_sizes() -> tuple[int, int]:
    """The smp comparison's images per set and size (``SEGKIT_BENCH_PEER_*``): 48, 64."""
    return suite_setting("PEER", "IMAGES", 48), suite_setting("PEER", "SIZE", 64)


@dataclass(frozen=True)
class Settings:
    images: int
    size: int
    batch: int
    precision: str
    channels_last: bool | None
    compile: bool
    workers: int | None
    recipe: str

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def settings() -> Settings:
    cuda = torch.cuda.is_available()
    full = _env("FULL", "0") == "1" or cuda
    cl = _env("CHANNELS_LAST", "auto")
    return Settings(
        images=suite_setting("", "IMAGES", 3312 if full else 48),
        size=suite_setting("", "SIZE", 256 if full else 64),
        batch=suite_setting("", "BATCH", 32 if full else 8),
        precision=_env("PRECISION", "auto"),
        channels_last=(cl == "1") if cl != "auto" else None,
        compile=_env("COMPILE", "0") == "1",
        workers=None if (w := suite_setting("", "WORKERS", -1)) == -1 else w,
        recipe=_env("RECIPE", "type3"),
    )


def models() -> list[str]:
    """The models to benchmark: ``SEGKIT_BENCH_MODELS`` or every registered one."""
    from segkit.registry import list_plugins

    names = list_plugins("models")
    chosen = [m.strip() for m in _env("MODELS", "").split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise RuntimeError(
            f"SEGKIT_BENCH_MODELS names {', '.join(unknown)}, not registered; "
            f"registered: {', '.join(names)}"
        )
    return chosen or names


@functools.cache
def dataset(variant: str = "pet") -> Any:
    """``SEGKIT_BENCH_DATA``, else a synthetic set whose train split has exactly
    ``settings().images`` images. ``variant="collar"``: the 3-class synthetic set
    (background, pet, collar; always generated)."""
    from segkit import create_dataset

    given = os.environ.get("SEGKIT_BENCH_DATA")
    if given and variant == "pet":
        return create_dataset("oxford_pet", Path(given))
    n = settings().images
    count = math.ceil(n / 0.75)  # the synthetic set puts a quarter of its images in test
    name = f"bench-{count}" if variant == "pet" else f"bench-{variant}-{count}"
    root = Path(os.environ.get("SEGKIT_CACHE", Path.home() / ".cache" / "segkit")) / name
    if not root.exists():  # generate in parallel (the dataset plugin would use one core)
        from segkit_datasets.synthetic import write_synthetic

        tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
        write_synthetic(tmp, count=count, seed=0, workers=os.cpu_count() or 1, variant=variant)
        os.replace(tmp, root)
    ds = create_dataset("synthetic", root, count=count, seed=0, valid_fraction=0.0)
    train = ds.samples("train")
    if len(train) < n:
        raise RuntimeError(f"benchmark set {root} has {len(train)} train images, wanted {n}")
    return ds


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(runtime().device)}
    if torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    else:
        import platform

        info["device_name"] = (
            f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        )
        info["torch_threads"] = torch.get_num_threads()
    try:
        import nvidia.dali as dali

        info["dali"] = dali.__version__
    except ImportError:
        info["dali"] = None
    return info


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def epoch_runner(data: Any, device: torch.device) -> Any:
    """A function that runs the next epoch of the loader ``data`` (``set_epoch`` advances,
    so every call reshuffles and re-augments), moves each batch to ``device`` as the
    engine does (``non_blocking``), synchronizes, and returns the number of images."""
    epochs = iter(range(10**6))

    def epoch() -> int:
        data.set_epoch(next(epochs))
        n = 0
        for batch in data:
            batch.images.to(device, non_blocking=True)
            batch.masks.to(device, non_blocking=True)
            n += len(batch.images)
        sync()
        return n

    return epoch


def run_config(model: str = "unet", loader: str = "albumentations") -> RunConfig:
    """The settings as a ``segkit run`` configuration."""
    s = settings()
    return RunConfig(
        model=model,
        loader=loader,
        recipe=s.recipe,
        image_size=s.size,
        batch_size=s.batch,
        precision=s.precision,
        channels_last=s.channels_last,
        compile=s.compile,
        num_workers=s.workers,
        lr=1e-4,
    )


@functools.cache
def runtime() -> build.Runtime:
    """The runtime of the settings, resolved as ``segkit run`` resolves it."""
    return build.resolve_runtime(run_config())


def build_training(
    model_name: str, classes: int = 1
) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, torch.device]:
    """The model (``classes`` logit channels), optimizer and precision exactly as
    ``segkit run`` sets them up."""
    rt = runtime()
    config = run_config(model_name)
    model = build.build_model(config, rt, out_channels=classes)
    return model, build.build_optimizer(model, config), rt.precision, rt.device


def build_loader(loader_name: str, variant: str = "pet") -> Any:
    config = run_config(loader=loader_name)
    recipe = build.build_recipe(config)
    return build.build_loader(config, runtime(), dataset(variant), recipe, "train", train=True)


@functools.cache
def train_flops_per_image(model_name: str) -> float:
    """Forward + backward FLOPs of one image at the benchmark size (matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build.create_model(model_name)
    # Two images: batch norm in training mode needs more than one value per channel, and
    # a bottleneck at stride 64 is 1x1 at small sizes.
    x = torch.randn(2, 3, settings().size, settings().size)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return float(counter.get_total_flops()) / 2


def model_steps(model_name: str, steps: int) -> Any:
    """A function running ``steps`` training steps (forward, backward, Adam) on one batch
    of tensors already on the device, and synchronizing at the end."""
    s = settings()
    model, optimizer, precision, device = build_training(model_name)
    step_model = build.step_model(model, run_config(model_name), runtime())
    loss_fn = build.build_loss(run_config(model_name))
    images = torch.randn(s.batch, 3, s.size, s.size, device=device)
    if runtime().channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(s.batch, 1, s.size, s.size, device=device) > 0.5).float()

    def run() -> None:
        for _ in range(steps):
            with precision.autocast():
                loss = loss_fn(step_model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            precision.backward(loss)
            precision.step(optimizer)
        sync()

    run.precision = precision.name  # type: ignore[attr-defined]
    return run


def model_steps_per_round() -> int:
    return 20 if torch.cuda.is_available() else 2


@functools.cache
def model_only_throughput(model_name: str) -> float:
    """Images/s of training steps on tensors already on the device (no data loading):
    the best of three rounds after a warm-up, as the model-only suite measures it (one
    round read 25% low on an H100)."""
    steps = model_steps_per_round()
    run = model_steps(model_name, steps)
    run()  # warm-up: cudnn autotune, compile
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return steps * settings().batch / best


@functools.cache
def loader_only_throughput(loader_name: str) -> float:
    """Images/s of one epoch of the loader alone (decode + augment + hand-over)."""
    loader = build_loader(loader_name)
    loader.set_epoch(0)
    for _ in loader:  # warm-up epoch: worker start, pipeline build
        pass
    loader.set_epoch(1)
    n = 0
    t0 = time.perf_counter()
    for batch in loader:
        n += len(batch.images)
    sync()
    return n / (time.perf_counter() - t0)
