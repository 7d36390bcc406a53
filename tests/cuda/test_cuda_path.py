"""The CUDA tier: the GPU path that the CPU suite cannot reach.

Skipped, with one line saying why, where CUDA is absent (CI); `make gpu-check` runs it on
a GPU machine (``pytest tests/cuda``). Every test is small (the tiny pet set at 32-64 px):
the tier proves the path is right, the benchmarks measure its speed.

Tolerances, stated once:
- DALI's GPU mode against its CPU mode on the same files and random draws: nvJPEG's IDCT
  and the GPU resampler round differently from libjpeg-turbo and the CPU kernels, so
  images agree within a mean of 1.5 and a 99.9th percentile of 12 grey levels (of 255);
  masks (decoded on the CPU in both modes, resized nearest) agree exactly.
- A resumed run against an unbroken one: cudnn's autotuner may pick other kernels in the
  two processes, so the metrics agree to 2e-2 (on the CPU they agree exactly).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.slow]


from segkit import build, registry  # noqa: E402
from segkit import recipes as R  # noqa: E402
from segkit.config import RunConfig  # noqa: E402
from segkit.contracts import IGNORE_INDEX, Batch, MaskSpec, Sample  # noqa: E402

SIZE = 64


def cuda_config(tiny_pets: Path, out: Path, **options: object) -> RunConfig:
    base = {
        "model": "unet",
        "image_size": 32,
        "batch_size": 4,
        "num_workers": 0,
        "device": "cuda",
        "data": str(tiny_pets),
        "out": str(out),
        "seed": 3,
    }
    return RunConfig(**(base | options))


def dali(dataset, split: str, recipe, batch: int, *, device: str, train: bool, **kw):
    return registry.create(
        "loaders", "dali", dataset, split, recipe, batch, train=train, device=device, **kw
    )


def eval_recipe() -> R.Recipe:
    return R.Recipe("eval", train=R.eval_ops(SIZE), eval=R.eval_ops(SIZE))


def levels(images: torch.Tensor) -> torch.Tensor:
    """Normalized images back to 0..255 grey levels."""
    mean = torch.tensor(R.IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(R.IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() * std + mean) * 255.0


def assert_images_close(gpu: torch.Tensor, cpu: torch.Tensor) -> None:
    diff = (levels(gpu.cpu()) - levels(cpu)).abs()
    mean, p999 = float(diff.mean()), float(torch.quantile(diff.flatten()[::7], 0.999))
    print(f"GPU vs CPU mode: mean |diff| {mean:.3f}, 99.9th percentile {p999:.2f} levels")
    assert mean <= 1.5 and p999 <= 12.0, (mean, p999)


def device_batches(n: int, seed: int, classes: int = 1) -> list[Batch]:
    """``n`` batches of 4 random images and 0/1 masks (or, with ``classes`` K > 1, uint8
    class maps with some pixels ignored, as the loaders give them), already on the GPU."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    out = []
    for _ in range(n):
        images = torch.randn(4, 3, SIZE, SIZE, device="cuda", generator=g)
        if classes == 1:
            masks = (torch.rand(4, 1, SIZE, SIZE, device="cuda", generator=g) > 0.5).float()
        else:
            masks = torch.randint(0, classes, (4, SIZE, SIZE), device="cuda", generator=g)
            masks = masks.to(torch.uint8)
            masks[:, :2] = IGNORE_INDEX
        out.append(Batch(images, masks))
    return out


def collect(loader, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    loader.set_epoch(epoch)
    images, masks = [], []
    for batch in loader:
        images.append(batch.images.clone())
        masks.append(batch.masks.clone())
    return torch.cat(images), torch.cat(masks)


# --------------------------------------------------------------- precision and steps


def _steps(precision_name: str, loss_scale: float = 1.0, steps: int = 6):
    from segkit.training.loops import StepContext, TrainStep, train_one_epoch

    config = RunConfig(model="unet", device="cuda", precision=precision_name, image_size=SIZE)
    rt = build.resolve_runtime(config)
    model = build.build_model(config, rt)
    optimizer = build.build_optimizer(model, config)
    loss_fn = build.build_loss(config)

    def scaled(logits, masks):
        return loss_fn(logits, masks) * loss_scale

    batches = device_batches(steps, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    out = train_one_epoch(TrainStep(StepContext(model, scaled, optimizer, rt)), batches)
    changed = any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    return out, rt.precision, changed


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_steps(precision: str) -> None:
    out, p, changed = _steps(precision)
    assert p.name == precision and changed
    assert np.isfinite(out["loss"]) and out["steps"] == 6


def test_fp16_overflow_skips_are_counted_and_reported() -> None:
    # A loss 1e4 times too large, scaled by GradScaler's 65536, overflows fp16 gradients:
    # the scaler skips those steps and halves its scale each time.
    out, p, _ = _steps("fp16", loss_scale=1e4, steps=8)
    skipped = out["skipped_overflow"]
    assert skipped >= 1
    assert p.scaler.get_scale() == 65536.0 * 0.5**skipped


@pytest.mark.parametrize(("precision", "loader"), [("bf16", "dali"), ("fp16", "albumentations")])
def test_resumed_cuda_run_matches_an_unbroken_one(
    tiny_pets: Path, tmp_path: Path, precision: str, loader: str
) -> None:
    from segkit.training.engine import resume, train

    opts = {"precision": precision, "loader": loader, "epochs": 3}
    whole = train(cuda_config(tiny_pets, tmp_path, name="whole", **opts), quiet=True)
    train(cuda_config(tiny_pets, tmp_path, name="cut", **(opts | {"epochs": 2})), quiet=True)
    resumed = resume(tmp_path / "cut", epochs=3, quiet=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(whole.history, resumed.history, strict=True):
        for key in ("train_loss", "valid_loss", "valid_dice"):
            assert a[key] == pytest.approx(b[key], abs=2e-2), (key, a, b)
    resolved = json.loads((tmp_path / "whole" / "config.json").read_text())["resolved"]
    assert resolved["device"] == "cuda:0" and resolved["precision"] == precision


# ------------------------------------------------------------ compile, channels_last


def test_compiled_run_on_dali_batches(tiny_pets: Path, tmp_path: Path) -> None:
    from segkit.training.engine import train

    config = cuda_config(tiny_pets, tmp_path, name="c", loader="dali", compile=True, epochs=2)
    result = train(config, quiet=True)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert np.isfinite(result.history[-1]["train_loss"])


def test_channels_last_on_dali_produced_tensors(tiny_pets_dataset) -> None:
    from segkit.training.loops import to_device

    recipe = registry.create("recipes", "type3", image_size=SIZE)
    loader = dali(tiny_pets_dataset, "train", recipe, 4, device="cuda", train=True)
    loader.set_epoch(0)
    batch = next(iter(loader))
    assert batch.images.is_cuda and batch.masks.is_cuda
    images = to_device(batch.images, torch.device("cuda", 0), True)
    assert images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(images, batch.images)  # same values, other layout
    model = build.create_model("unet", image_size=SIZE).cuda()
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(images)
    assert logits.shape == (4, 1, SIZE, SIZE) and torch.isfinite(logits).all()


# ------------------------------------------------------------- DALI GPU vs CPU mode


def test_dali_gpu_mode_matches_cpu_mode_on_the_eval_recipe(tiny_pets_dataset) -> None:
    gpu = dali(tiny_pets_dataset, "train", eval_recipe(), 4, device="cuda", train=False)
    cpu = dali(tiny_pets_dataset, "train", eval_recipe(), 4, device="cpu", train=False)
    assert gpu.mode == "gpu" and cpu.mode == "cpu"
    gi, gm = collect(gpu)
    ci, cm = collect(cpu)
    assert_images_close(gi, ci)
    assert torch.equal(gm.cpu(), cm)


def test_dali_gpu_mode_matches_cpu_mode_on_type3_draws(tiny_pets_dataset) -> None:
    # Same seed and epoch: the same random parameters, applied by GPU and CPU operators.
    recipe = registry.create("recipes", "type3", image_size=SIZE)
    gpu = dali(tiny_pets_dataset, "train", recipe, 4, device="cuda", train=True, seed=5)
    cpu = dali(tiny_pets_dataset, "train", recipe, 4, device="cpu", train=True, seed=5)
    for epoch in (0, 1):
        gi, gm = collect(gpu, epoch)
        ci, cm = collect(cpu, epoch)
        assert torch.equal(gm.cpu(), cm)
        diff = (levels(gi.cpu()) - levels(ci)).abs()
        print(f"type3 epoch {epoch}: mean |diff| {float(diff.mean()):.3f} levels")
        assert float(diff.mean()) <= 3.0


def _odd_formats(root: Path) -> list[Sample]:
    """The files real datasets hold under ``.jpg``: PNG and GIF, grayscale, RGBA, CMYK,
    an EXIF-tagged JPEG and a progressive one. Each has a trimap of its size."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    w, h = 96, 72
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)
    rgb = np.clip(rgb.astype(int) + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)
    base = Image.fromarray(rgb, "RGB")
    cases: dict[str, tuple[Image.Image, dict]] = {
        "png_named_jpg": (base, {"format": "PNG"}),
        "gif_named_jpg": (base.convert("P"), {"format": "GIF"}),
        "grayscale": (base.convert("L"), {"format": "JPEG", "quality": 95}),
        "rgba_png": (base.convert("RGBA"), {"format": "PNG"}),
        "cmyk": (base.convert("CMYK"), {"format": "JPEG", "quality": 95}),
        "progressive": (base, {"format": "JPEG", "quality": 95, "progressive": True}),
    }
    samples = []
    for name, (im, kw) in cases.items():
        im.save(root / "images" / f"{name}.jpg", **kw)
    # EXIF orientation 6 ("turn 90 degrees to show"): ignored by both modes, as by
    # segkit.data.reading.read_image (Pet's trimaps were drawn on the stored pixels).
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(root / "images" / "exif_rotated.jpg", format="JPEG", quality=95, exif=exif)
    trimap = np.where(xx < w // 2, 1, 2).astype(np.uint8)
    for name in [*cases, "exif_rotated"]:
        Image.fromarray(trimap, "L").save(root / "masks" / f"{name}.png")
        samples.append(
            Sample(name, root / "images" / f"{name}.jpg", root / "masks" / f"{name}.png")
        )
    return samples


class _List:
    def __init__(self, root: Path, samples: list[Sample]) -> None:
        self.root = root
        self.mask_spec = MaskSpec(background=2, allowed=(1, 2, 3))
        self._samples = samples

    def samples(self, split: str) -> list[Sample]:
        return list(self._samples)


def test_nvjpeg_reads_the_formats_real_datasets_hold(tmp_path: Path) -> None:
    samples = _odd_formats(tmp_path)
    ds = _List(tmp_path, samples)
    gpu = dali(ds, "train", eval_recipe(), len(samples), device="cuda", train=False)
    cpu = dali(ds, "train", eval_recipe(), len(samples), device="cpu", train=False)
    gi, gm = collect(gpu)
    ci, cm = collect(cpu)
    assert torch.equal(gm.cpu(), cm)
    for k, s in enumerate(samples):
        diff = (levels(gi[k : k + 1].cpu()) - levels(ci[k : k + 1])).abs()
        print(f"{s.id}: mean |diff| {float(diff.mean()):.3f} levels")
        assert float(diff.mean()) <= 1.5, s.id
    # Every file's left half is the pet (mask 1), the EXIF-tagged one's too: stored
    # pixels, not turned.
    assert float(gm[:, 0, :, : SIZE // 2 - 2].mean()) == 1.0


def test_masks_stay_valid_across_the_next_batches(tiny_pets_dataset) -> None:
    # A batch's tensors must not be views of buffers DALI reuses for later batches.
    recipe = registry.create("recipes", "type3", image_size=SIZE)
    loader = dali(tiny_pets_dataset, "train", recipe, 2, device="cuda", train=True)
    loader.set_epoch(0)
    held, copies = [], []
    for batch in loader:
        held.append(batch)
        copies.append((batch.images.clone(), batch.masks.clone()))
    assert len(held) >= 4
    for batch, (images, masks) in zip(held, copies, strict=True):
        assert torch.equal(batch.masks, masks) and torch.equal(batch.images, images)


# ------------------------------------------------------------------------ DDP, syncs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_nccl_ddp_training(tiny_pets_dataset) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from segkit.training.loops import StepContext, TrainStep, train_one_epoch

    assert dist.is_nccl_available()
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        config = RunConfig(model="unet", device="cuda", image_size=SIZE, loader="dali")
        rt = build.resolve_runtime(config)
        model = build.build_model(config, rt)
        ddp = DistributedDataParallel(model, device_ids=[rt.device.index])
        optimizer = build.build_optimizer(model, config)
        recipe = build.build_recipe(config)
        loader = dali(tiny_pets_dataset, "train", recipe, 4, device="cuda", train=True)
        loader.set_epoch(0)
        step = TrainStep(StepContext(ddp, build.build_loss(config), optimizer, rt))
        out = train_one_epoch(step, loader)
        assert out["steps"] == len(loader) and np.isfinite(out["loss"])
        t = torch.ones(3, device=rt.device)
        dist.all_reduce(t)
        assert t.tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()


class _SyncWatchedBatches:
    """Device batches; host syncs raise from the third step until the last one ends."""

    def __init__(self, n: int, classes: int = 1) -> None:
        self.batches = device_batches(n, seed=1, classes=classes)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        try:
            for i, b in enumerate(self.batches):
                if i == 2:  # after warm-up (cudnn autotune, allocator growth)
                    torch.cuda.set_sync_debug_mode("error")
                yield b
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_no_host_sync_in_a_steady_state_training_step(precision: str) -> None:
    from segkit.training.loops import StepContext, TrainStep, train_one_epoch

    config = RunConfig(
        model="resnet34_unet", device="cuda", precision=precision, image_size=SIZE, epochs=2
    )
    rt = build.resolve_runtime(config)
    model = build.build_model(config, rt)
    optimizer = build.build_optimizer(model, config)
    data = _SyncWatchedBatches(30)  # past the NaN watch's and progress bar's read points
    training = build.build_scheduler(optimizer, config, len(data))
    context = StepContext(model, build.build_loss(config), optimizer, rt, scheduler=training)
    out = train_one_epoch(TrainStep(context), data, progress=_Bar())
    assert out["steps"] == 30


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_no_host_sync_in_a_steady_state_three_class_step(precision: str) -> None:
    """K classes: ce_dice on uint8 class maps with ignored pixels, and the confusion-matrix
    meter, still never wait for the GPU."""
    from segkit.task import Task
    from segkit.training.loops import StepContext, TrainStep, train_one_epoch

    task = Task(("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), IGNORE_INDEX)
    config = RunConfig(
        model="resnet34_unet", device="cuda", precision=precision, image_size=SIZE, epochs=2
    )
    rt = build.resolve_runtime(config)
    model = build.build_model(config, rt, out_channels=3)
    optimizer = build.build_optimizer(model, config)
    data = _SyncWatchedBatches(30, classes=3)
    context = StepContext(model, registry.create("losses", "ce_dice"), optimizer, rt, task=task)
    out = train_one_epoch(TrainStep(context), data, progress=_Bar())
    assert out["steps"] == 30 and 0 <= out["miou"] <= 1


def test_three_class_run_on_dali_gpu(tiny_pets: Path, tmp_path: Path) -> None:
    """The trimap target end to end on the GPU path: DALI maps raw values to classes in
    its graph, and the run reports per-class scores."""
    from segkit.training.engine import train

    options = {"target": "trimap"}
    config = cuda_config(
        tiny_pets, tmp_path, name="trimap", loader="dali", epochs=2, dataset_options=options
    )
    train(config, quiet=True)
    summary = json.loads((tmp_path / "trimap" / "summary.json").read_text())
    assert summary["classes"] == ["background", "pet", "border"]
    assert 0 < summary["test_miou"] <= 1 and summary["monitor"] == "valid_miou"


class _Bar:
    """The progress bar's interface, recording what it is shown."""

    def __init__(self) -> None:
        self.shown: list[str] = []

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kw: str) -> None:
        self.shown.append(kw["loss"])


# ---------------------------------------------------------------------- peak memory


def test_a_run_records_its_peak_gpu_memory(tiny_pets: Path, tmp_path: Path) -> None:
    from segkit.training.engine import train

    train(cuda_config(tiny_pets, tmp_path, name="m", loader="dali", epochs=1), quiet=True)
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["peak_gpu_memory_mb"] > 0
    print(f"peak GPU memory of a tiny run: {summary['peak_gpu_memory_mb']} MB")


def test_environment_reports_the_device() -> None:
    print(
        f"{torch.cuda.get_device_name()} | torch {torch.__version__} | "
        f"CUDA {torch.version.cuda} | cudnn {torch.backends.cudnn.version()} | "
        f"CPU cores {os.cpu_count()}"
    )
    assert torch.cuda.is_bf16_supported()
