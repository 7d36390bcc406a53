"""Production inference: the predictor (resize and tile modes, flips), sliding-window
tiling, and ``segkit predict`` / ``segkit evaluate --mode --tta`` over files, folders and
lists, with every kind of bad input a user meets.

Checkpoints here are written without training: a ``timm_unet`` over timm's 140k-parameter
``test_efficientnet`` with random weights (a forward of 8 images at 32 px takes ~30 ms).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TRIO, RunsOutOfMemory, save_checkpoint
from PIL import Image

import segkit
from segkit.cli import main
from segkit.config import COMMAND_LINE, given_as
from segkit.errors import ConfigError, UnknownSettingError
from segkit.inference.predict import collect_images, unread_line, unread_photos
from segkit.inference.predictor import Predictor
from segkit.inference.tiling import Tiling, blend_weights, reflect_pad, sliding_window, starts
from segkit.system.memory import is_out_of_memory
from segkit.task import Task


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def ckpt_k3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt3") / "best.pt", task=TRIO)


def photo(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A random RGB picture of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


class Constant(torch.nn.Module):
    """Logits that are the same everywhere, whatever the input."""

    def __init__(self, values: tuple[float, ...] = (0.7,)) -> None:
        super().__init__()
        self.values = torch.tensor(values).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.values.expand(x.shape[0], -1, *x.shape[2:]).clone()


class Pointwise(torch.nn.Module):
    """A 1x1 convolution: each pixel's logit depends on that pixel alone, so tiling must
    reproduce the whole-image output exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class LeftToRight(torch.nn.Module):
    """Logits rising from left to right and from top to bottom: not flip-invariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = torch.linspace(-3, 3, w).view(1, 1, 1, w)
        rows = torch.linspace(-1, 1, h).view(1, 1, h, 1)
        return (cols + rows).expand(n, 1, h, w).clone()


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("hw", [(100, 77), (32, 32), (10, 7), (1, 1), (33, 200)])
def test_tiling_a_constant_model_reproduces_the_constant_at_the_input_size(
    blend: str, overlap: float, hw: tuple[int, int]
) -> None:
    predictor = Predictor.from_model(
        Constant(), image_size=32, mode="tile", tile=32, overlap=overlap, blend=blend
    )
    probs = predictor.predict(random_image(*hw))
    assert probs.shape == hw
    np.testing.assert_allclose(probs, torch.sigmoid(torch.tensor(0.7)).item(), atol=1e-6)


def test_tiling_a_pointwise_model_matches_the_whole_image() -> None:
    model = Pointwise().eval()
    image = random_image(90, 70)
    tiled = Predictor.from_model(model, image_size=32, mode="tile", tile=32, batch_size=3)
    # At the image's own size and without resizing, a 1x1 conv gives the same result
    # whole as in tiles: any misplaced, misweighted or mis-cropped tile shows.
    whole = Predictor.from_model(model, image_size=32, mode="tile", tile=96)
    np.testing.assert_allclose(tiled.predict(image), whole.predict(image), atol=1e-6)
    x = tiled.trained.normalize(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    expected = torch.sigmoid(model(x))[0, 0].detach().numpy()
    np.testing.assert_allclose(tiled.predict(image), expected, atol=1e-6)


def test_tile_grid_covers_the_image_and_weights_favour_the_centre() -> None:
    assert starts(32, 32, 24) == [0]
    assert starts(100, 32, 24) == [0, 24, 48, 68]
    for blend in ("gaussian", "linear"):
        w = blend_weights(32, blend)  # type: ignore[arg-type]
        assert w.shape == (32, 32) and w.max() == 1 and w.min() > 0
        assert w[16, 16] > w[8, 16] > w[8, 8] >= w[0, 0]
    with pytest.raises(ConfigError, match=r"--blend 'box': expected one of gaussian, linear"):
        blend_weights(32, "box")  # type: ignore[arg-type]
    small = torch.arange(6, dtype=torch.uint8).view(1, 2, 3)
    padded = reflect_pad(small, 3, 4, 5, 6)
    assert padded.shape == (1, 9, 14) and padded.dtype == torch.uint8
    assert torch.equal(padded[:, 3:5, 5:8], small)


def test_tiles_go_through_in_batches() -> None:
    calls: list[int] = []

    def predict(tiles: torch.Tensor) -> torch.Tensor:
        calls.append(tiles.shape[0])
        return torch.ones(tiles.shape[0], 1, *tiles.shape[2:])

    out = sliding_window(
        torch.zeros(3, 200, 200, dtype=torch.uint8), predict, Tiling(32, batch=5), channels=1
    )
    assert out.shape == (1, 200, 200) and max(calls) == 5 and sum(calls) > 50


@pytest.mark.slow  # a fresh interpreter, 15 s
def test_a_10000_px_image_is_tiled_in_bounded_memory() -> None:
    import os
    import subprocess
    import sys

    # The growth of the peak resident size during the prediction, the image already
    # resident: what was imported before (it varies with the environment: 1.9 GiB of peak
    # here alone, 3.3 GiB once in a full CI run) is not the predictor's. Measured: 1.44 GiB
    # (15 bytes a pixel: the probabilities and the blending sums); one float copy of the
    # whole image would add 1.2 GiB more.
    code = (
        "import resource, numpy as np, torch\n"
        "from segkit.inference.predictor import Predictor\n"
        "p = Predictor.from_model(torch.nn.Conv2d(3, 1, 1), image_size=256, mode='tile', "
        "batch_size=32)\n"
        "image = np.ones((10000, 10000, 3), np.uint8)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "probs = p.predict(image)\n"
        "assert probs.shape == (10000, 10000)\n"
        "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    before, after = (int(v) / 2**20 for v in out.stdout.split()[-2:])  # KiB on Linux
    assert after - before < 2, f"peak {before:.2f} -> {after:.2f} GiB"


# ----------------------------------------------------------------------------- predictor


def test_resize_mode_is_the_previous_prediction_batched_over_sizes(ckpt: Path) -> None:
    predictor = Predictor(ckpt, device="cpu", mode="resize", batch_size=4)
    images = [random_image(40, 30, 1), random_image(64, 64, 2), random_image(17, 90, 3)]
    batched = predictor.predict_batch(images)
    model, (mean, std) = predictor.model, predictor.trained.normalization
    mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(std).view(1, 3, 1, 1) * 255
    for image, got in zip(images, batched, strict=True):
        # What `segkit predict` computed before the predictor, one image at a time.
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        logits = model((x - mean) / std).float()
        logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
        expected = torch.sigmoid(logits)[0, 0].detach().numpy()
        assert got.shape == image.shape[:2] and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_flip_tta_averages_the_flips(mode: str) -> None:
    # Tiled: one 32 px tile, so the tile grid itself is symmetric.
    image = random_image(48, 64) if mode == "resize" else random_image(32, 32)
    kw = {"image_size": 32, "mode": mode, "overlap": 0.0}
    plain = Predictor.from_model(LeftToRight(), **kw).predict(image)
    flip = Predictor.from_model(LeftToRight(), tta="flip", **kw)
    both = Predictor.from_model(LeftToRight(), tta="flip_hv", **kw)
    h = flip.predict(image)
    np.testing.assert_allclose(h, h[:, ::-1], atol=1e-6)  # symmetric left to right
    assert not np.allclose(plain, plain[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(h, (plain + plain[:, ::-1]) / 2, atol=1e-5)
    hv = both.predict(image)
    np.testing.assert_allclose(hv, hv[::-1, ::-1], atol=1e-6)


def test_auto_mode_resizes_for_a_resize_trained_model_whatever_the_image_size() -> None:
    # Before: an image over twice the training size on its longer side was tiled.
    predictor = Predictor.from_model(Constant(), image_size=32)
    for hw in ((64, 10), (65, 10), (375, 500), (768, 1024), (5000, 4000)):
        assert predictor.mode_for(*hw) == "resize"
    assert predictor.auto_rule().startswith(
        "mode='auto': resize, as the model was trained on images resized"
    )  # named as Python gives it; the segkit command's first line names the flag
    with given_as(COMMAND_LINE):
        assert predictor.auto_rule().startswith("--mode auto: resize, as the model")
    assert "trained on images resized to 32 px" in predictor.auto_rule()


def test_auto_mode_runs_a_crop_trained_model_whole_and_tiles_only_above_the_bound() -> None:
    predictor = Predictor.from_model(Constant(), image_size=32, native=True)
    assert predictor.mode_for(2048, 2048) == "whole" and predictor.mode_for(375, 500) == "whole"
    assert predictor.mode_for(2049, 2048) == "tile" and predictor.mode_for(10000, 500) == "tile"
    assert (
        "mode='auto': whole images (tiles above 2048x2048), as the model" in predictor.auto_rule()
    )
    assert "32 px crops at the images' own scale" in predictor.auto_rule()


@pytest.mark.parametrize("native", [False, True])
def test_auto_mode_is_the_rule_native_evaluation_uses(native: bool) -> None:
    # One rule: what --eval-size native feeds the model is what predict --mode auto does.
    from segkit.inference.native import image_mode, plan_eval
    from segkit.recipes import Normalize, RandomCrop, Recipe, Resize

    sizing = RandomCrop(size=32) if native else Resize(size=32)
    plan = plan_eval("native", Recipe("r", train=(sizing, Normalize())))
    predictor = Predictor.from_model(Constant(), image_size=32, native=native)
    for hw in ((20, 30), (375, 500), (2049, 2048)):
        assert predictor.mode_for(*hw) == image_mode(plan.input, *hw)


@pytest.mark.parametrize("mode", ["resize", "tile", "whole"])
def test_an_explicit_mode_is_kept_for_every_image(mode: str) -> None:
    for native in (False, True):
        predictor = Predictor.from_model(Constant(), image_size=32, native=native, mode=mode)
        assert {predictor.mode_for(*hw) for hw in ((20, 30), (900, 900), (3000, 3000))} == {mode}


def test_auto_tiles_an_image_that_does_not_fit_whole_and_every_larger_one(capsys) -> None:
    model = RunsOutOfMemory(limit=1100)  # the 32 px tiles fit (1024 pixels)
    predictor = Predictor.from_model(model, image_size=32, native=True)
    small, big, bigger = (np.zeros((h, w, 3), np.uint8) for h, w in ((20, 30), (40, 40), (64, 50)))
    assert predictor.mode_for(40, 40) == "whole"
    probs = predictor.predict(big)  # whole runs out of memory: tiled
    assert probs.shape == (40, 40) and np.allclose(probs, torch.sigmoid(torch.tensor(0.7)))
    assert "a 40x40 image did not fit in memory whole on cpu" in capsys.readouterr().err
    assert predictor.mode_for(40, 40) == "tile" and predictor.mode_for(64, 50) == "tile"
    assert predictor.mode_for(20, 30) == "whole" and predictor.whole_max_pixels == 1599
    model.calls.clear()
    predictor.predict(bigger)  # tiled at once: no whole attempt, no second line
    predictor.predict(small)
    assert all(h * w <= 1100 for h, w in model.calls) and (32, 32) in model.calls
    assert capsys.readouterr().err == ""


def test_mode_whole_that_runs_out_of_memory_names_the_size_and_the_fix() -> None:
    model = RunsOutOfMemory(limit=1100)
    predictor = Predictor.from_model(model, image_size=32, native=True, mode="whole")
    with pytest.raises(ConfigError) as e:
        predictor.predict(np.zeros((40, 40, 3), np.uint8))
    text = str(e.value)
    assert "--mode whole: an image of 40x40 pixels does not fit in memory" in text
    assert "OutOfMemoryError: CUDA out of memory" in text and "--mode tile" in text
    # Any other error is the model's own, untouched.
    other = RunsOutOfMemory(limit=1100, error=RuntimeError("shape mismatch"))
    auto = Predictor.from_model(other, image_size=32, native=True)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        auto.predict(np.zeros((40, 40, 3), np.uint8))
    assert auto.whole_max_pixels == 2048 * 2048


def test_what_counts_as_running_out_of_memory() -> None:
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"
    )
    assert is_out_of_memory(cpu) and is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("bad shape"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))


def test_auto_mode_reads_the_recipe_the_checkpoint_records(tmp_path: Path) -> None:
    crop = save_checkpoint(tmp_path / "crop.pt", recipe="microscopy")
    predictor = Predictor(crop, device="cpu")
    assert predictor.native and predictor.mode_for(500, 375) == "whole"
    assert predictor.auto_rule().endswith(", recipe microscopy")
    resized = Predictor(save_checkpoint(tmp_path / "resize.pt"), device="cpu")
    assert not resized.native and resized.mode_for(768, 1024) == "resize"
    assert resized.auto_rule().endswith(", recipe type3")


def test_a_checkpoint_that_records_no_recipe_is_taken_as_resize_trained(tmp_path: Path) -> None:
    old = save_checkpoint(tmp_path / "old.pt", recipe=None)
    predictor = Predictor(old, device="cpu")
    assert not predictor.trained.recipe_recorded and predictor.mode_for(768, 1024) == "resize"
    assert "assumed: the checkpoint records no recipe, and the default recipe resizes" in (
        predictor.auto_rule()
    )


@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_k_class_probabilities_are_a_softmax_per_pixel(mode: str) -> None:
    predictor = Predictor.from_model(
        Constant((0.0, 2.0, 1.0)), image_size=32, task=TRIO, mode=mode, tta="flip"
    )
    probs = predictor.predict(random_image(50, 70))
    assert probs.shape == (3, 50, 70)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    np.testing.assert_allclose(
        probs[:, 10, 10], torch.softmax(torch.tensor([0.0, 2, 1]), 0), atol=1e-5
    )


def test_predictor_refuses_bad_settings_and_arrays(ckpt: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^tile=40 is not divisible by 32, which model 'timm_unet' needs; use 32 or 64",
    ):
        Predictor(ckpt, device="cpu", tile=40)
    with pytest.raises(
        ConfigError, match=r"^overlap=1.0: expected a fraction of the tile in \[0, 1\)"
    ):
        Predictor(ckpt, device="cpu", overlap=1.0)
    with pytest.raises(ConfigError, match=r"^tta='rot90': expected one of none, flip, flip_hv"):
        Predictor(ckpt, device="cpu", tta="rot90")
    with pytest.raises(UnknownSettingError, match=r"^segkit.Predictor\(mdoe='tile'\): unknown "):
        Predictor(ckpt, device="cpu", mdoe="tile")
    predictor = Predictor(ckpt, device="cpu")
    with pytest.raises(ConfigError, match=r"expected an \(H, W, 3\) RGB, .* got shape \(5, 5, 2\)"):
        predictor.predict(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(
        ConfigError, match=r"expected a uint8 image array of 0-255 pixels, got float32"
    ):
        predictor.predict(np.zeros((5, 5, 3), np.float32))


def test_predictor_reads_files(ckpt: Path, tmp_path: Path) -> None:
    path = photo(tmp_path / "a.png", (45, 33))
    probs = segkit.Predictor(ckpt, device="cpu", tta="flip").predict(path)
    assert probs.shape == (33, 45) and 0 <= probs.min() <= probs.max() <= 1


# ----------------------------------------------------------------------------- inputs


def test_inputs_are_files_folders_and_lists(tmp_path: Path) -> None:
    a = photo(tmp_path / "in" / "a.jpg", (8, 8))
    b = photo(tmp_path / "in" / "sub" / "b.PNG", (8, 8))
    (tmp_path / "in" / "notes.md").write_text("not an image")
    c = photo(tmp_path / "c.png", (8, 8))
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nc.png\n\n" + str(a) + "\n")
    found = collect_images([tmp_path / "in", c, listing])
    assert found == [(a, Path(".")), (b, Path("sub")), (c, Path("."))]  # each file once
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"empty: no images in this folder or its subfolders"):
        collect_images([tmp_path / "empty"])
    with pytest.raises(ConfigError, match=r"nope.jpg: no such file or folder"):
        collect_images([tmp_path / "nope.jpg"])


def test_phone_photos_a_folder_search_leaves_out_are_said(tmp_path: Path) -> None:
    a = photo(tmp_path / "in" / "a.jpg", (8, 8))
    (tmp_path / "in" / "sub").mkdir()
    heic = tmp_path / "in" / "sub" / "IMG_0001.HEIC"
    heic.write_bytes(b"\0\0\0\x18ftypheic")
    (tmp_path / "in" / "._IMG_0002.heic").write_bytes(b"x")  # hidden: not counted
    assert collect_images([tmp_path / "in"]) == [(a, Path("."))]
    assert unread_photos([tmp_path / "in", a]) == [heic]
    assert unread_line([heic]) == (
        f"segkit: 1 file left out ({heic}): HEIC photos, which segkit does not read; "
        "convert them to JPEG or PNG to predict them"
    )
    a.unlink()  # only photos segkit does not read: the error says what is there
    with pytest.raises(ConfigError, match=r"no images in this folder.*1 file left out .*HEIC"):
        collect_images([tmp_path / "in"])


# ----------------------------------------------------------------------------- the command


def predict(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *argv, "--device", "cpu", "--num-workers", "0"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_a_folder_recursively_with_overlays_and_16_bit_probabilities(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    photo(tmp_path / "in" / "x.jpg", (40, 30))
    photo(tmp_path / "in" / "deep" / "y.png", (90, 70), seed=1)  # over 2x32: resized all the same
    out = tmp_path / "out"
    code, stdout, _ = predict(
        capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out), "--overlays",
        "--probabilities", "png", "--batch-size", "2",
    )  # fmt: skip
    assert code == 0, stdout
    assert "predicted 2 images in" in stdout and "mode auto (resize 2), tta none" in stdout
    assert "segkit: --mode auto: resize, as the model was trained on images resized" in stdout
    assert f"{tmp_path / 'in' / 'deep' / 'y.png'}: resize, " in stdout
    for rel, size in (("x", (40, 30)), ("deep/y", (90, 70))):
        mask = Image.open(out / f"{rel}_mask.png")
        assert mask.size == size and set(np.unique(np.asarray(mask))) <= {0, 255}
        assert Image.open(out / f"{rel}_overlay.png").size == size
        probs = Image.open(out / f"{rel}_probs.png")
        assert probs.size == size and np.asarray(probs).dtype in (np.uint16, np.int32)
    assert not list(out.rglob("*.tmp"))


def test_predict_never_overwrites_without_being_asked(ckpt: Path, tmp_path: Path, capsys) -> None:
    image = photo(tmp_path / "a.jpg", (20, 20))
    out = tmp_path / "out"
    assert predict(capsys, str(ckpt), str(image), "--out", str(out))[0] == 0
    before = (out / "a_mask.png").stat().st_mtime_ns
    code, _, err = predict(capsys, str(ckpt), str(image), "--out", str(out))
    assert code == 2 and f"{out / 'a_mask.png'} already exists (1 of the 1 output files do)" in err
    assert "--overwrite" in err and (out / "a_mask.png").stat().st_mtime_ns == before
    assert predict(capsys, str(ckpt), str(image), "--out", str(out), "--overwrite")[0] == 0


def test_predict_from_python_names_its_keywords_and_refuses_an_image_in_memory(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    image = photo(tmp_path / "a.jpg", (20, 20))
    out = tmp_path / "out"
    segkit.predict(ckpt, image, out)  # one path, not a list
    assert capsys.readouterr().out.startswith("segkit: mode='auto': resize, as the model")
    with pytest.raises(ConfigError) as e:
        segkit.predict(ckpt, [image], out)
    assert str(e.value).endswith(
        "pass overwrite=True to replace them, skip_existing=True to write only the missing "
        "ones, or choose another out"
    )
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(segkit.DataError, match=r"pass skip_bad=True to skip unreadable files$"):
        segkit.predict(ckpt, [tmp_path / "b.jpg"], tmp_path / "out2")
    pixels = np.zeros((20, 20, 3), np.uint8)
    for images, got in ((pixels, "got ndarray"), ([image, pixels], "got a list holding ndarray")):
        with pytest.raises(ConfigError) as e:
            segkit.predict(ckpt, images, tmp_path / "out3")
        assert str(e.value).startswith(
            f"images: expected image files, folders or .txt lists (a path or a list of paths), "
            f"{got}; an image in memory (a numpy array, a PIL image) is predicted by "
            "segkit.Predictor(checkpoint).predict(image)"
        )
    assert not (tmp_path / "out3").exists()


def test_predict_stops_at_an_unreadable_image_or_skips_it(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    photo(tmp_path / "in" / "a.jpg", (20, 20))
    (tmp_path / "in" / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    photo(tmp_path / "in" / "c.jpg", (20, 20))
    out = tmp_path / "out"
    code, _, err = predict(capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out))
    assert code == 2 and "b.jpg: cannot decode image" in err and "--skip-bad" in err
    assert "The 1 image predicted before it is in" in err
    assert "leave it out of the paths given to predict" in err and "split list" not in err
    assert (out / "a_mask.png").is_file() and not (out / "c_mask.png").exists()
    code, stdout, err = predict(
        capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out), "--skip-bad", "--overwrite"
    )
    assert code == 0 and "skipped" in err and "b.jpg: cannot decode image" in err
    assert "predicted 2 images, 1 unreadable skipped" in stdout and "split list" not in err
    assert (out / "c_mask.png").is_file()


def test_predict_refuses_bad_input_in_one_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    image = photo(tmp_path / "a.jpg", (20, 20))
    (tmp_path / "empty").mkdir()
    code, _, err = predict(capsys, str(ckpt), str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 2 and "empty: no images in this folder" in err
    code, _, err = predict(
        capsys, str(ckpt), str(image), "--out", str(tmp_path / "o"), "--tile", "48"
    )
    assert (
        code == 2
        and "--tile 48 is not divisible by 32, which model 'timm_unet' needs; use 32 or 64" in err
    )
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = predict(capsys, str(ckpt), str(image), "--out", str(blocker))
    assert code == 2 and f"--out {blocker}: cannot write there" in err
    code, _, err = predict(capsys, str(ckpt), str(image), "--out", str(blocker / "below"))
    assert code == 2 and "cannot write there" in err and "choose another folder" in err
    gone = save_checkpoint(tmp_path / "gone.pt", model="gone")
    code, _, err = predict(capsys, str(gone), str(image), "--out", str(tmp_path / "o"))
    assert code == 2 and "was trained with model 'gone', which is not installed here" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_predict_writes_through_an_unwritable_folder_error(
    ckpt: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, where permission bits do not stop a write: refuse the probe.
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    image = photo(tmp_path / "a.jpg", (20, 20))
    code, _, err = predict(capsys, str(ckpt), str(image), "--out", str(tmp_path / "ro"))
    assert code == 2 and f"--out {tmp_path / 'ro'}: cannot write there (Permission denied)" in err


def test_predict_k_classes_writes_palette_masks_and_a_softmax(
    ckpt_k3: Path, tmp_path: Path, capsys
) -> None:
    image = photo(tmp_path / "a.jpg", (40, 30))
    out = tmp_path / "out"
    code, stdout, _ = predict(
        capsys, str(ckpt_k3), str(image), "--out", str(out), "--probabilities", "--tta", "flip"
    )
    assert code == 0 and "bg " in stdout and "dog " in stdout
    mask = Image.open(out / "a_mask.png")
    assert mask.mode == "P" and set(np.unique(np.asarray(mask))) <= {0, 1, 2}
    probs = np.load(out / "a_probs.npy")
    assert probs.shape == (3, 30, 40)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    assert (
        predict(
            capsys,
            str(ckpt_k3),
            str(image),
            "--out",
            str(tmp_path / "o2"),
            "--probabilities",
            "png",
        )[0]
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == [
        "a_mask.png", "a_probs_bg.png", "a_probs_cat.png", "a_probs_dog.png", "predictions.csv",
    ]  # fmt: skip


def test_predictions_csv_of_k_classes_has_a_share_column_per_class(
    ckpt: Path, ckpt_k3: Path, tmp_path: Path, capsys
) -> None:
    """Each class's share of the mask's pixels, by class name, after the columns binary
    records have (kept for their readers); a binary model's record is unchanged."""
    a = photo(tmp_path / "in" / "a.jpg", (40, 30))
    b = photo(tmp_path / "in" / "b.jpg", (50, 20), seed=1)
    out = tmp_path / "out"
    assert predict(capsys, str(ckpt_k3), str(tmp_path / "in"), "--out", str(out))[0] == 0
    with open(out / "predictions.csv", newline="") as f:
        header = next(iter(f)).strip().split(",")
    assert header == [
        "image", "mask", "height", "width", "mode", "foreground",
        "share_bg", "share_cat", "share_dog",
    ]  # fmt: skip
    rows = read_record(out)
    for row, image in zip(rows, (a, b), strict=True):
        mask = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
        for c, name in enumerate(("bg", "cat", "dog")):
            assert float(row[f"share_{name}"]) == pytest.approx((mask == c).mean(), abs=1e-6)
        assert float(row["foreground"]) == pytest.approx((mask != 0).mean(), abs=1e-6)
    # A binary model predicting into the same folder: its rows have no shares, and the
    # K-class rows keep theirs.
    c = photo(tmp_path / "c.jpg", (32, 32), seed=2)
    assert predict(capsys, str(ckpt), str(c), "--out", str(out))[0] == 0
    before, rows = rows, read_record(out)
    assert [r["mask"] for r in rows] == ["a_mask.png", "b_mask.png", "c_mask.png"]
    assert rows[:2] == before and rows[2]["share_bg"] == "" and rows[2]["foreground"]
    assert float(rows[0]["share_bg"]) + float(rows[0]["share_cat"]) + float(
        rows[0]["share_dog"]
    ) == pytest.approx(1, abs=1e-5)
    # Binary alone: the columns as they were.
    assert predict(capsys, str(ckpt), str(c), "--out", str(tmp_path / "bin"))[0] == 0
    with open(tmp_path / "bin" / "predictions.csv", newline="") as f:
        assert next(iter(f)).strip() == "image,mask,height,width,mode,foreground"


def read_record(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_each_image_line_and_record_row_names_its_mode(ckpt: Path, tmp_path: Path, capsys) -> None:
    a = photo(tmp_path / "in" / "a.jpg", (40, 30))
    b = photo(tmp_path / "in" / "sub" / "b.png", (100, 70), seed=1)
    out = tmp_path / "out"
    code, stdout, _ = predict(capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out))
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("segkit: --mode auto: resize, as the model was trained on images")
    assert lines[1].startswith(f"{a}: resize, ") and lines[1].endswith("% foreground -> a_mask.png")
    assert lines[2].startswith(f"{b}: resize, ")
    rows = read_record(out)
    assert [(r["image"], r["mask"], r["height"], r["width"], r["mode"]) for r in rows] == [
        (str(a), "a_mask.png", "30", "40", "resize"),
        (str(b), "sub/b_mask.png", "70", "100", "resize"),
    ]
    mask = np.asarray(Image.open(out / "sub" / "b_mask.png")) > 0
    assert float(rows[1]["foreground"]) == pytest.approx(mask.mean(), abs=1e-6)
    # Predicted again in another mode: its rows are replaced, not repeated; others kept.
    # b, named again directly, is taken once: where it comes first (the folder, sub/).
    c = photo(tmp_path / "c.jpg", (64, 64), seed=2)
    code, stdout, _ = predict(
        capsys, str(ckpt), str(tmp_path / "in"), str(b), str(c), "--out", str(out),
        "--mode", "tile", "--overwrite",
    )  # fmt: skip
    assert code == 0 and "segkit: --mode auto" not in stdout
    assert "mode tile, tta none" in stdout and f"{c}: tile, " in stdout
    assert [(r["image"], r["mask"], r["mode"]) for r in read_record(out)] == [
        (str(a), "a_mask.png", "tile"), (str(b), "sub/b_mask.png", "tile"),
        (str(c), "c_mask.png", "tile"),
    ]  # fmt: skip


def test_a_stopped_predict_keeps_the_rows_of_what_it_wrote(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    photo(tmp_path / "in" / "a.jpg", (20, 20))
    (tmp_path / "in" / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    photo(tmp_path / "in" / "c.jpg", (20, 20))
    out = tmp_path / "out"
    assert predict(capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out))[0] == 2
    assert [Path(r["image"]).name for r in read_record(out)] == ["a.jpg"]
    (tmp_path / "in" / "b.jpg").unlink()
    code, stdout, _ = predict(
        capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out), "--skip-existing"
    )
    assert code == 0 and "1 image already predicted" in stdout
    assert [Path(r["image"]).name for r in read_record(out)] == ["a.jpg", "c.jpg"]


def test_a_csv_of_the_users_named_predictions_is_not_overwritten(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    image = photo(tmp_path / "a.jpg", (20, 20))
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("name,score\nx,1\n")
    code, _, err = predict(capsys, str(ckpt), str(image), "--out", str(out))
    assert code == 2 and "predictions.csv exists and is not a segkit predictions record" in err
    assert (out / "predictions.csv").read_text() == "name,score\nx,1\n"


def test_two_inputs_writing_one_file_are_refused(ckpt: Path, tmp_path: Path, capsys) -> None:
    a = photo(tmp_path / "one" / "a.jpg", (20, 20))
    b = photo(tmp_path / "two" / "a.png", (20, 20))
    code, _, err = predict(capsys, str(ckpt), str(a), str(b), "--out", str(tmp_path / "o"))
    assert code == 2 and f"{a} and {b} would both write" in err


@pytest.mark.slow  # predicts a test split three times
def test_evaluate_with_tiles_and_flips(shapes_root: Path, tmp_path: Path, capsys) -> None:
    ckpt = save_checkpoint(tmp_path / "best.pt")
    base = ["evaluate", str(ckpt), "--data", str(shapes_root), "--num-workers", "0"]
    base += ["--device", "cpu"]
    assert main(base) == 0
    assert capsys.readouterr().out.startswith("test dice ")
    assert main([*base, "--mode", "tile", "--tta", "flip"]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("test dice ") and "mode tile, tta flip, scored at each image's size" in out
    )
    assert "loss" not in out and "(4 images" in out
    assert main([*base, "--tta", "flip_hv"]) == 0
    assert "mode resize, tta flip_hv" in capsys.readouterr().out
    # auto names what it chose for how many images, as predict's summary does.
    assert main([*base, "--mode", "auto"]) == 0
    assert "mode auto (resize 4), tta none" in capsys.readouterr().out


# ----------------------------------------------------------------------------- library


def test_open_trained_is_the_model_ready_to_run(ckpt: Path) -> None:
    trained = segkit.open_trained(ckpt, device="cpu")
    assert not trained.model.training and trained.task == Task()
    assert trained.config.model == "timm_unet" and trained.label == "timm_unet"
    assert str(trained.device) == "cpu" and trained.runtime.precision.name == "fp32"
    assert trained.image_size == 32 and trained.multiple == 32 and not trained.native
    assert trained.normalization == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = torch.rand(2, 3, 32, 32) * 255
    mean = torch.tensor(trained.normalization[0]).view(1, 3, 1, 1) * 255
    std = torch.tensor(trained.normalization[1]).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        expected = trained.model((x - mean) / std)
        got = trained.logits(trained.normalize(x))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_options_are_checked_when_made(ckpt: Path) -> None:
    from segkit.inference.options import EvaluateOptions, ExportOptions, PredictOptions

    with pytest.raises(ConfigError, match=r"^threshold=1.5: expected a probability in \(0, 1\)"):
        PredictOptions(checkpoint=ckpt, images=["a.jpg"], out="o", threshold=1.5)
    with given_as(COMMAND_LINE):  # as `segkit predict` makes them: the flag is named
        with pytest.raises(ConfigError, match=r"^--threshold 1.5: expected a probability in"):
            PredictOptions(checkpoint=ckpt, images=["a.jpg"], out="o", threshold=1.5)
    with pytest.raises(ConfigError, match=r"^probabilities='tif': expected npy or png"):
        PredictOptions(checkpoint=ckpt, images=["a.jpg"], out="o", probabilities="tif")
    with pytest.raises(ConfigError, match=r"^overlap=1.5: expected a fraction"):
        EvaluateOptions(checkpoint=ckpt, mode="tile", overlap=1.5)
    # Without the predictor the tiling options are not used, and not refused.
    assert EvaluateOptions(checkpoint=ckpt, overlap=1.5).through_predictor is False
    assert EvaluateOptions(checkpoint=ckpt, tta="flip").predictor(4).mode == "resize"
    with pytest.raises(ConfigError, match=r"^format='tflite': expected one of onnx, torchscript"):
        ExportOptions(checkpoint=ckpt, out="m.onnx", format="tflite")
    with pytest.raises(UnknownSettingError, match=r"^PredictOptions\(overlay=True\): unknown"):
        PredictOptions(checkpoint=ckpt, images=["a.jpg"], out="o", overlay=True)
    one = PredictOptions(checkpoint=ckpt, images="a.jpg", out="o", probabilities=True)
    assert one.images == ["a.jpg"] and one.probabilities == "npy"


def test_the_commands_flags_are_the_options_fields() -> None:
    import dataclasses

    from segkit.cli import build_parser
    from segkit.cli.args import options_from_args
    from segkit.inference.options import EvaluateOptions, PredictOptions

    argv = ["predict", "best.pt", "a.jpg", "b/", "--out", "o", "--tta", "flip", "--tile", "64"]
    argv += ["--probabilities", "--skip-bad", "-q", "--device", "cpu", "--num-workers", "2"]
    options = options_from_args(PredictOptions, build_parser().parse_args(argv))
    assert options == PredictOptions(
        checkpoint="best.pt", images=["a.jpg", "b/"], out="o", tta="flip", tile=64,
        probabilities="npy", skip_bad=True, quiet=True, device="cpu", num_workers=2,
    )  # fmt: skip
    args = build_parser().parse_args(
        ["evaluate", "best.pt", "--dataset-opt", "target=trimap", "--batch-size", "2"]
    )
    options = options_from_args(EvaluateOptions, args)
    assert options.overrides() == {
        "dataset_options": {"target": "trimap"},
        "batch_size": 2,
        "device": "auto",
        "precision": "auto",
    }
    # Every field of the dataclass is an argument of its command.
    dests = {
        a.dest for a in build_parser()._subparsers._group_actions[0].choices["predict"]._actions
    }
    assert {f.name for f in dataclasses.fields(PredictOptions)} <= dests


def test_predict_from_python_writes_what_the_command_writes(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    image = photo(tmp_path / "in" / "a.jpg", (40, 30))
    result = segkit.predict(
        ckpt, image, tmp_path / "py", device="cpu", num_workers=0, overlays=True, quiet=True
    )
    assert (result.written, result.skipped, result.left_out) == (1, 0, 0)
    assert result.summary().startswith("predicted 1 image in ")
    assert capsys.readouterr().out == ""  # quiet: no line per image
    code, stdout, _ = predict(
        capsys, str(ckpt), str(image), "--out", str(tmp_path / "cli"), "--overlays"
    )
    assert code == 0 and stdout.splitlines()[-1].startswith("predicted 1 image in ")
    for name in ("a_mask.png", "a_overlay.png"):
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    again = segkit.predict(ckpt, [image], tmp_path / "py", device="cpu", skip_existing=True)
    assert (again.written, again.left_out) == (0, 1)


@pytest.mark.slow  # scores a test split twice
def test_evaluate_from_python_prints_what_the_command_prints(
    shapes_root: Path, tmp_path: Path, capsys
) -> None:
    ckpt = save_checkpoint(tmp_path / "best.pt")
    settings = {"data": str(shapes_root), "num_workers": 0, "device": "cpu"}
    result = segkit.evaluate(ckpt, **settings)
    assert result.metrics["images"] == 4 and "loss" in result.metrics
    argv = ["evaluate", str(ckpt), "--data", str(shapes_root), "--num-workers", "0"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == result.lines()
    tiled = segkit.evaluate(ckpt, mode="tile", tta="flip", **settings)
    assert "loss" not in tiled.metrics and tiled.how.startswith(", mode tile, tta flip")
    assert tiled.modes == {"tile": 4} and result.modes == {}


# ------------------------------------------------------- what predict takes in and keeps


def test_skip_existing_never_replaces_a_file_and_writes_only_the_missing_ones(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    photo(tmp_path / "in" / "a.jpg", (20, 20))
    photo(tmp_path / "in" / "b.jpg", (20, 20), seed=1)
    out = tmp_path / "out"
    assert predict(capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out))[0] == 0
    mine = np.full((20, 20), 255, np.uint8)  # a mask the user edited: must survive
    Image.fromarray(mine).save(out / "a_mask.png")
    edited = (out / "a_mask.png").read_bytes()
    b_before = (out / "b_mask.png").read_bytes()
    rows_before = read_record(out)
    code, stdout, _ = predict(
        capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out), "--overlays",
        "--skip-existing",
    )  # fmt: skip
    assert code == 0, stdout
    assert (out / "a_mask.png").read_bytes() == edited
    assert (out / "b_mask.png").read_bytes() == b_before
    assert (out / "a_overlay.png").is_file() and (out / "b_overlay.png").is_file()
    assert "2 images with some of their outputs in" in stdout
    assert "-> a_overlay.png (a_mask.png kept)" in stdout
    assert "predicted 2 images, 2 images with existing files kept" in stdout
    assert "--overwrite redoes them" in stdout
    assert read_record(out) == rows_before  # kept masks keep their rows
    # Everything there now: left out. With --overwrite as well, every file is redone.
    code, stdout, _ = predict(
        capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out), "--overlays",
        "--skip-existing",
    )  # fmt: skip
    assert code == 0 and "2 images already predicted" in stdout and "predicted 0 images" in stdout
    (out / "b_overlay.png").unlink()
    code, stdout, _ = predict(
        capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out), "--overlays",
        "--skip-existing", "--overwrite",
    )  # fmt: skip
    assert code == 0 and "kept" not in stdout and (out / "b_overlay.png").is_file()
    assert (out / "a_mask.png").read_bytes() == edited  # a was finished: left out


def test_an_out_folder_inside_an_input_folder_is_not_searched(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    photo(tmp_path / "in" / "x.jpg", (20, 20))
    out = tmp_path / "in" / "masks"
    for _ in range(2):
        code, stdout, _ = predict(
            capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out), "--skip-existing"
        )
        assert code == 0, stdout
    assert "1 image already predicted" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "x_mask.png"]
    # Spelled another way (a relative path through ..), it is still left out.
    assert collect_images([tmp_path / "in"], leave_out=out / ".." / "masks") == [
        (tmp_path / "in" / "x.jpg", Path("."))
    ]
    (tmp_path / "in" / "x.jpg").unlink()  # only the masks left: the error says why
    with pytest.raises(ConfigError, match=r"hidden files and folders are left out; .*masks"):
        collect_images([tmp_path / "in"], leave_out=out)


def test_masks_written_beside_the_images_are_not_predicted_again(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    x = photo(tmp_path / "in" / "x.jpg", (20, 20))
    mine = photo(tmp_path / "in" / "road_mask.png", (20, 20))  # no road.*: an input image
    for _ in range(2):
        code, stdout, _ = predict(
            capsys, str(ckpt), str(tmp_path / "in"), "--out", str(tmp_path / "in"),
            "--overlays", "--skip-existing",
        )  # fmt: skip
        assert code == 0, stdout
    assert "2 images already predicted" in stdout
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [
        "predictions.csv", "road_mask.png", "road_mask_mask.png", "road_mask_overlay.png",
        "x.jpg", "x_mask.png", "x_overlay.png",
    ]  # fmt: skip
    assert collect_images([tmp_path / "in"]) == [
        (tmp_path / "in" / n, Path("."))
        for n in (
            "road_mask.png",
            "road_mask_mask.png",
            "road_mask_overlay.png",
            "x.jpg",
            "x_mask.png",
            "x_overlay.png",
        )
    ]  # without --out named, every image is an input
    beside = dict(collect_images([tmp_path / "in"], leave_out=tmp_path / "in"))
    assert list(beside) == [mine, x]


def test_a_folder_search_leaves_out_hidden_files_and_folders(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    a = photo(tmp_path / "in" / "a.jpg", (20, 20))
    apple = tmp_path / "in" / "._a.jpg"
    apple.write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # what macOS leaves on other disks
    photo(tmp_path / "in" / ".thumbs" / "a.jpg", (8, 8))
    photo(tmp_path / "in" / "sub" / ".hidden.png", (8, 8))
    assert collect_images([tmp_path / "in"]) == [(a, Path("."))]
    hidden_root = photo(tmp_path / ".cache" / "b.jpg", (8, 8))  # a hidden folder named: searched
    assert collect_images([tmp_path / ".cache"]) == [(hidden_root, Path("."))]
    assert collect_images([apple]) == [(apple, Path("."))]  # named directly: taken
    out = tmp_path / "out"
    code, stdout, err = predict(capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out))
    assert code == 0 and "predicted 1 image in" in stdout, err
    code, _, err = predict(capsys, str(ckpt), str(apple), "--out", str(tmp_path / "o2"))
    assert code == 2 and "._a.jpg: cannot decode image" in err


def test_one_record_row_per_mask_however_the_image_is_spelled(
    ckpt: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = photo(tmp_path / "imgs" / "sq.jpg", (20, 20))
    (tmp_path / "lists").mkdir()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    spellings = ["lists/../imgs/sq.jpg", "imgs/sq.jpg", str(image)]
    code, stdout, err = predict(capsys, str(ckpt), *spellings, "--out", str(out))
    assert code == 0 and "predicted 1 image in" in stdout, err  # one file, taken once
    for spelling in spellings:
        assert predict(capsys, str(ckpt), spelling, "--out", str(out), "--overwrite")[0] == 0
    rows = read_record(out)
    assert [(r["image"], r["mask"]) for r in rows] == [(str(image), "sq_mask.png")]


def test_a_list_with_missing_paths_is_refused_before_predicting(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    photo(tmp_path / "a.jpg", (20, 20))
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg\n# comment\nnope1.jpg\n\n" + "".join(f"n{i}.jpg\n" for i in range(4)))
    out = tmp_path / "out"
    code, _, err = predict(capsys, str(ckpt), str(listing), "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{listing}: 5 listed paths of 6 not found (line 3: nope1.jpg; line 5: n0.jpg" in err
    assert "and 2 more" in err and "fix or remove those lines" in err
    assert not out.exists()  # nothing predicted, no folder made


def test_a_list_that_names_no_path_is_refused_before_predicting(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    """An empty list (or a notes.txt given by mistake) predicted 0 images, exit 0, and
    left an --out folder with a header-only predictions.csv."""
    listing = tmp_path / "list.txt"
    listing.write_text("# todo\n\n")
    out = tmp_path / "out"
    code, _, err = predict(capsys, str(ckpt), str(listing), "--out", str(out))
    assert code == 2 and err == (
        f"segkit: error: {listing}: a .txt input is a list of image paths, one per line, and "
        "this one lists none (it is empty, or all blank lines and # comments); write the "
        "images' paths in it, or give the images or their folder instead\n"
    )
    assert not out.exists()


def test_every_output_collision_is_named_in_one_message(ckpt: Path, tmp_path: Path, capsys) -> None:
    for i in range(5):
        photo(tmp_path / "in" / f"p{i}.jpg", (8, 8))
        photo(tmp_path / "in" / f"p{i}.png", (8, 8))
    out = tmp_path / "out"
    code, _, err = predict(capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out))
    assert code == 2 and "5 pairs of inputs would write the same file" in err
    assert f"{tmp_path / 'in' / 'p0.jpg'} and {tmp_path / 'in' / 'p0.png'} would both" in err
    assert "p2.png would both write" in err and "p3.png" not in err and "and 2 more" in err
    assert "rename one of each pair" in err and not out.exists()
    # The same file twice (directly and through its folder) is not a collision.
    single = photo(tmp_path / "one" / "s.jpg", (8, 8))
    code, stdout, err = predict(
        capsys, str(ckpt), str(single), str(tmp_path / "one"), str(single), "--out", str(out)
    )
    assert code == 0 and "predicted 1 image in" in stdout, err


def exif_photo(path: Path, orientation: int) -> Path:
    photo(path, (24, 16))
    with Image.open(path) as im:
        exif = im.getexif()
        exif[0x0112] = orientation
        im.save(path, exif=exif)
    return path


def test_images_with_an_exif_rotation_are_named_once(ckpt: Path, tmp_path: Path, capsys) -> None:
    turned = exif_photo(tmp_path / "in" / "phone.jpg", 6)
    exif_photo(tmp_path / "in" / "plain.jpg", 1)
    photo(tmp_path / "in" / "none.png", (24, 16))
    out = tmp_path / "out"
    code, stdout, _ = predict(capsys, str(ckpt), str(tmp_path / "in"), "--out", str(out))
    assert code == 0
    line = [x for x in stdout.splitlines() if "EXIF" in x]
    assert len(line) == 1 and f"1 image with an EXIF orientation tag ({turned})" in line[0]
    assert "masks follow the pixels as stored" in line[0] and "exif_transpose" in line[0]
    assert Image.open(out / "phone_mask.png").size == (24, 16)  # the stored pixels' size
    done = segkit.predict(ckpt, [tmp_path / "in"], tmp_path / "o2", device="cpu", quiet=True)
    assert done.rotated == (turned,)


def test_a_failed_run_removes_the_out_folder_it_made_and_left_empty(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    image = photo(tmp_path / "a.jpg", (20, 20))
    gone = save_checkpoint(tmp_path / "gone.pt", model="gone")
    out = tmp_path / "new" / "out"
    assert predict(capsys, str(gone), str(image), "--out", str(out))[0] == 2
    assert not (tmp_path / "new").exists()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    code, _, err = predict(capsys, str(ckpt), str(bad), str(image), "--out", str(out))
    assert code == 2 and "No image was predicted before it; pass --skip-bad" in err
    assert not (tmp_path / "new").exists()
    there = tmp_path / "there"  # a folder that was there before is left as it was
    there.mkdir()
    assert predict(capsys, str(gone), str(image), "--out", str(there))[0] == 2
    assert there.is_dir() and not list(there.iterdir())


def test_predict_refuses_a_threshold_for_a_k_class_model(ckpt_k3: Path, tmp_path: Path, capsys):
    image = photo(tmp_path / "a.jpg", (40, 30))
    out = tmp_path / "out"
    code, _, err = predict(
        capsys, str(ckpt_k3), str(image), "--out", str(out), "--threshold", "0.9"
    )
    assert code == 2 and "a threshold applies to a binary model only" in err
    assert not out.exists()  # refused before anything was written


def test_many_images_not_on_a_terminal_print_a_line_every_tenth(
    ckpt: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A notebook or a log file gets a line every ~10 % (count, images/s) for more than 20
    images, not one per image; a terminal, and a handful of images, keep a line per image;
    an unreadable image is said on its own line whatever."""
    import re
    import sys

    from segkit.inference import predict as predict_mod

    for i in range(24):
        photo(tmp_path / "in" / f"p{i:02d}.png", (16, 16), seed=i)
    (tmp_path / "in" / "p99.png").write_bytes(b"not an image")
    code, stdout, stderr = predict(
        capsys, str(ckpt), str(tmp_path / "in"), "--out", str(tmp_path / "o1"), "--skip-bad"
    )
    assert code == 0
    lines = stdout.splitlines()[1:]  # after auto's rule
    counts = [3, 6, 9, 12, 15, 18, 21, 24, 25]
    assert [int(re.match(r"segkit: (\d+)/25 images \(\d+%\), ", x)[1]) for x in lines[:-1]] == (
        counts
    )
    assert lines[-2].startswith("segkit: 25/25 images (100%), ") and "images/s" in lines[-2]
    assert lines[-1].startswith("predicted 24 images, 1 unreadable skipped in ")  # the summary
    assert stderr.count("segkit: skipped ") == 1 and "p99.png" in stderr
    # from Python the same; on a terminal, a line per image
    segkit.predict(ckpt, [tmp_path / "in"], tmp_path / "o2", skip_bad=True, device="cpu")
    assert "segkit: 25/25 images (100%)" in capsys.readouterr().out
    monkeypatch.setattr(predict_mod, "is_tty", lambda stream: stream is sys.stdout)
    segkit.predict(ckpt, [tmp_path / "in"], tmp_path / "o3", skip_bad=True, device="cpu")
    out = capsys.readouterr().out
    assert out.count("_mask.png") == 24 and "images (" not in out
