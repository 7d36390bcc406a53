"""Evaluation (and training) at native resolution: ``--eval-size``, padding, tiling and
resizing around the model, scores on the original masks, the reports, the vessels set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import RunsOutOfMemory
from PIL import Image

from segkit import recipes as R
from segkit.build import Runtime, build_eval_loader, build_eval_plan, resolve_device
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.errors import ConfigError
from segkit.inference.native import NativeForward, plan_eval
from segkit.inference.tiling import crop_box, pad_to_multiple, padded_forward
from segkit.task import Task
from segkit.training.loops import EvalContext, evaluate
from segkit.training.precision import create_precision

RESIZING = R.Recipe("resizing", train=(R.Resize(size=32), R.Normalize()))
CROPPING = R.Recipe("cropping", train=(R.RandomCrop(size=32), R.Normalize()))
# Normalize with mean 0 and std 1/255: images reach the model as their 0-255 values.
RAW = R.Normalize(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
RAW_NATIVE = R.Recipe("raw", train=(R.RandomCrop(size=32), RAW), eval=(RAW,))

SIZES = [(45, 70), (64, 64), (33, 97), (80, 51)]  # (H, W): one split, four sizes


def _runtime() -> Runtime:
    dev = resolve_device("cpu")
    return Runtime(dev, create_precision("fp32", dev), False, 0, 0)


class Copy(torch.nn.Module):
    """Returns its input's first channel (or all of it): what pad and crop must not change."""

    min_input_multiple = 32

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0
        return x.clone()


class Threshold(torch.nn.Module):
    """Logit ``red - 128``: foreground where the red channel (0-255) is above 128."""

    min_input_multiple = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - 128.0


def _folder(root: Path, rng: np.random.Generator, classes: int = 0) -> Path:
    """A folder dataset of four images of different sizes in every split (binary, or
    ``classes`` classes with ignore pixels). Red encodes the prediction of
    :class:`Threshold`; the mask is the truth, which differs from it in places."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    stems = []
    extra = [(40, 40), (40, 40)]  # one image each for train and valid
    for i, (h, w) in enumerate(SIZES + extra):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if classes:
            mask = rng.integers(0, classes, (h, w), dtype=np.uint8)
            mask[rng.random((h, w)) < 0.1] = 255
        else:
            mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
        stems.append(f"im{i}")
    n = len(SIZES)
    (root / "splits" / "test.txt").write_text("\n".join(stems[:n]) + "\n")
    (root / "splits" / "train.txt").write_text(stems[n] + "\n")
    (root / "splits" / "valid.txt").write_text(stems[n + 1] + "\n")
    if classes:
        (root / "classes.txt").write_text("\n".join(f"c{k}" for k in range(classes)) + "\n")
    return root


# ----------------------------------------------------------------------------- --eval-size


def test_eval_size_auto_keeps_the_labs_resized_evaluation() -> None:
    plan = plan_eval("auto", RESIZING)
    assert not plan.native and plan.input == "batch" and plan.recipe is RESIZING
    assert plan.batch_size(16) == 16


def test_eval_size_native_on_a_resizing_recipe_drops_its_sizing_ops() -> None:
    plan = plan_eval("native", RESIZING)
    assert plan.native and plan.input == "resize" and plan.batch_size(16) == 1
    assert plan.recipe.eval == (R.Normalize(),) and plan.recipe.train == RESIZING.train


@pytest.mark.parametrize("asked", ["auto", "native"])
def test_a_native_recipe_evaluates_whole_images(asked: str) -> None:
    plan = plan_eval(asked, CROPPING)
    assert plan.native and plan.input == "whole" and plan.recipe is CROPPING


def test_eval_size_resize_with_a_native_recipe_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigError) as e:
        plan_eval("resize", CROPPING)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("eval_size='resize': ") and "'cropping'" in msg
    assert "use eval_size='native' (or auto)" in msg
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as e:
        plan_eval("resize", CROPPING)  # segkit run --eval-size resize
    assert str(e.value).startswith("--eval-size resize: ") and "--eval-size native" in str(e.value)


def test_eval_size_is_a_config_field_checked_and_carried(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^eval_size='big': expected one of auto, native"):
        RunConfig(eval_size="big")
    path = tmp_path / "run.toml"
    path.write_text('eval_size = "native"\nrecipe = "type1"\n')
    config = RunConfig.from_file(path)
    assert config.eval_size == "native"
    assert RunConfig.from_dict(config.to_dict()).eval_size == "native"
    assert build_eval_plan(config, RESIZING).input == "resize"


def test_recipe_file_with_random_crop_evaluates_natively(tmp_path: Path) -> None:
    path = tmp_path / "crop.toml"
    path.write_text('[[train]]\nop = "RandomCrop"\n[[train]]\nop = "HorizontalFlip"\n')
    config = RunConfig(recipe=str(path), image_size=64)
    recipe = config.recipe_object()
    assert recipe.native_eval and recipe.train[0] == R.RandomCrop(size=64)
    assert plan_eval(config.eval_size, recipe).input == "whole"


def test_evaluate_accepts_eval_size() -> None:
    from segkit.cli import build_parser

    args = build_parser().parse_args(["evaluate", "best.pt", "--eval-size", "native"])
    assert args.eval_size == "native"


# ----------------------------------------------------------------------------- pad, tile, resize


@pytest.mark.parametrize("hw", [(37, 50), (64, 96), (5, 7), (1, 33)])
def test_pad_to_the_model_multiple_and_crop_back_is_exact(hw: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *hw)
    model = Copy()
    out = padded_forward(model, x, 32)
    assert torch.equal(out, x)
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in model.seen)
    padded, box = pad_to_multiple(x, 32)
    assert torch.equal(crop_box(padded, box), x)


def test_native_forward_whole_is_exact_for_a_copying_model() -> None:
    x = torch.randn(1, 3, 45, 70)
    forward = NativeForward("whole", image_size=32, multiple=32)
    assert torch.equal(forward(Copy(), x), x)


def test_tiled_and_whole_agree_on_a_small_image() -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)  # pointwise: the context a tile lacks does not matter
    model.min_input_multiple = 16  # type: ignore[assignment]
    x = torch.randn(1, 3, 50, 77)
    whole = NativeForward("whole", image_size=32, multiple=16)(model, x)
    tiled = NativeForward("whole", image_size=32, multiple=16, max_pixels=100)(model, x)
    assert whole.shape == tiled.shape == (1, 2, 50, 77)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_native_evaluation_tiles_an_image_that_does_not_fit_whole(capsys) -> None:
    model = RunsOutOfMemory(limit=1100)  # the 32 px tiles fit (1024 pixels)
    forward = NativeForward("whole", image_size=32, channels=1)
    out = forward(model, torch.zeros(1, 3, 40, 40))  # whole runs out of memory: tiled
    assert out.shape == (1, 1, 40, 40) and torch.allclose(out, torch.full_like(out, 0.7))
    assert "a 40x40 image did not fit in memory whole on cpu" in capsys.readouterr().err
    assert forward.max_pixels == 1599
    model.calls.clear()
    forward(model, torch.zeros(1, 3, 50, 64))  # tiled at once, no second line
    forward(model, torch.zeros(1, 3, 20, 30))  # still whole
    assert model.calls[-1] == (20, 30) and all(h * w <= 1100 for h, w in model.calls)
    assert capsys.readouterr().err == ""


def test_native_forward_resize_sees_the_training_size_and_returns_the_image_size() -> None:
    model = Copy()
    x = torch.full((1, 3, 45, 70), 3.0)
    out = NativeForward("resize", image_size=64, multiple=32)(model, x)
    assert model.seen == [(64, 64)]
    assert out.shape == x.shape and torch.allclose(out, x)


def test_the_predictor_predicts_native_models_whole() -> None:
    from segkit.inference.predictor import Predictor

    model = Threshold()
    p = Predictor.from_model(model, image_size=32, normalize=RAW, native=True)
    assert p.mode_for(1100, 1500) == "whole" and p.mode_for(5000, 5000) == "tile"
    image = np.zeros((45, 70, 3), np.uint8)
    image[:20, :, 0] = 255
    probs = p.predict(image)
    assert probs.shape == (45, 70)
    assert (probs[:20] > 0.5).all() and (probs[20:] < 0.5).all()
    resizing = Predictor.from_model(model, image_size=32, normalize=RAW)
    assert resizing.mode_for(40, 60) == "resize"


def test_prediction_accepts_native_eval_ops() -> None:
    from segkit.inference.trained import eval_normalization

    assert eval_normalization((R.Normalize(),), 64) == (R.IMAGENET_MEAN, R.IMAGENET_STD)
    ops = (R.PadIfNeeded(size=None, divisor=32), R.Normalize())
    assert eval_normalization(ops, 64)[0] == R.IMAGENET_MEAN
    with pytest.raises(ConfigError, match="not RandomCrop"):
        eval_normalization((R.RandomCrop(size=64), R.Normalize()), 64)


# ----------------------------------------------------------------------------- scores


def _loader(root: Path, recipe: R.Recipe, eval_size: str = "auto", loader: str = "albumentations"):
    config = RunConfig(
        dataset="folder", data=str(root), eval_size=eval_size, batch_size=8, num_workers=0
    )
    config.loader = loader
    from segkit.build import build_dataset

    dataset = build_dataset(config)
    plan = build_eval_plan(config, recipe)
    return dataset, plan, build_eval_loader(config, _runtime(), dataset, plan, "test")


def test_native_batches_keep_every_image_at_its_own_size(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", np.random.default_rng(0))
    _, plan, loader = _loader(root, RAW_NATIVE)
    shapes = [tuple(b.images.shape) for b in loader]
    assert shapes == [(1, 3, h, w) for h, w in SIZES]


def test_native_binary_scores_equal_a_hand_computation_on_the_original_masks(
    tmp_path: Path,
) -> None:
    root = _folder(tmp_path / "d", np.random.default_rng(1))
    dataset, plan, loader = _loader(root, RAW_NATIVE)
    forward = NativeForward("whole", image_size=32, multiple=16)
    meter = Task().meter("cpu", per_image=True)
    context = EvalContext(_runtime(), forward=forward, loss_fn=torch.nn.BCEWithLogitsLoss())
    got = evaluate(Threshold(), loader, context, meter=meter)
    dice, iou = [], []
    for i in range(len(SIZES)):
        image = np.asarray(Image.open(root / "images" / f"im{i}.png"))
        true = np.asarray(Image.open(root / "masks" / f"im{i}.png")) > 0
        pred = image[..., 0].astype(float) > 128
        inter = (pred & true).sum()
        dice.append(2 * inter / (pred.sum() + true.sum()))
        iou.append(inter / (pred | true).sum())
    assert got["images"] == 4
    assert got["dice"] == pytest.approx(np.mean(dice), abs=1e-6)
    assert got["iou"] == pytest.approx(np.mean(iou), abs=1e-6)
    per_dice, _ = meter.per_image_scores()
    np.testing.assert_allclose(per_dice.numpy(), dice, atol=1e-6)


def test_native_k_class_scores_leave_the_ignore_index_out(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", np.random.default_rng(2), classes=3)
    dataset, plan, loader = _loader(root, RAW_NATIVE)
    task = Task.of(dataset)
    assert task.multiclass and task.ignore_index == 255

    class ByColour(torch.nn.Module):
        """Class = which of R, G, B is largest."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / 255.0

    context = EvalContext(
        _runtime(),
        task=task,
        forward=NativeForward("whole", image_size=32, multiple=8),
        loss_fn=torch.nn.CrossEntropyLoss(ignore_index=255),
    )
    got = evaluate(ByColour(), loader, context)
    inter, union = np.zeros(3), np.zeros(3)
    for i in range(len(SIZES)):
        pred = np.asarray(Image.open(root / "images" / f"im{i}.png")).argmax(2)
        true = np.asarray(Image.open(root / "masks" / f"im{i}.png"))
        keep = true != 255
        for c in range(3):
            p, t = (pred == c) & keep, (true == c) & keep
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    for c in range(3):
        assert got[f"iou_{c}"] == pytest.approx(inter[c] / union[c], abs=1e-6)
    assert got["miou"] == pytest.approx(np.mean(inter / union), abs=1e-6)


def test_native_eval_of_a_resizing_recipe_scores_resized_predictions_on_original_masks(
    tmp_path: Path,
) -> None:
    root = _folder(tmp_path / "d", np.random.default_rng(3))
    recipe = R.Recipe("raw-resize", train=(R.Resize(size=32), RAW), eval=(R.Resize(size=32), RAW))
    _, plan, loader = _loader(root, recipe, eval_size="native")
    assert plan.input == "resize"
    batches = list(loader)
    assert [tuple(b.masks.shape[-2:]) for b in batches] == SIZES  # original masks


def test_the_prediction_grid_draws_native_sizes(tmp_path: Path) -> None:
    from segkit.reports.figures import ImageScores, write_prediction_grid

    root = _folder(tmp_path / "d", np.random.default_rng(4))
    _, plan, loader = _loader(root, RAW_NATIVE)
    out = tmp_path / "predictions.png"
    context = EvalContext(
        _runtime(),
        forward=NativeForward("whole", image_size=32, multiple=16),
        normalization=(RAW.mean, RAW.std),
    )
    scores = ImageScores([0.1, 0.5, 0.9, 0.3], [0.1, 0.4, 0.8, 0.2])
    rows = write_prediction_grid(out, Threshold(), loader, context, scores, n=4)
    assert len(rows) == 4 and Image.open(out).size[0] > 0


def test_dali_reads_native_sizes_one_image_a_batch(tmp_path: Path) -> None:
    pytest.importorskip("nvidia.dali", reason="the dali loader needs nvidia-dali")
    root = _folder(tmp_path / "d", np.random.default_rng(5))
    _, plan, loader = _loader(root, RAW_NATIVE, loader="dali")
    batches = list(loader)
    assert [tuple(b.images.shape) for b in batches] == [(1, 3, h, w) for h, w in SIZES]
    assert [tuple(b.masks.shape[-2:]) for b in batches] == SIZES


# ----------------------------------------------------------------------------- vessels


def test_vessels_are_thin_structures_on_large_images() -> None:
    from segkit_datasets.synthetic import render_vessels

    image, trimap = render_vessels(0, 0, (400, 300))
    assert image.shape == (300, 400, 3) and trimap.shape == (300, 400)
    assert set(np.unique(trimap)) == {1, 2}
    fg = trimap == 1
    assert 0.002 < fg.mean() < 0.1
    # Thin: eroding by 2 px in every direction leaves (almost) nothing.
    core = fg[2:-2, 2:-2] & fg[:-4, 2:-2] & fg[4:, 2:-2] & fg[2:-2, :-4] & fg[2:-2, 4:]
    assert core.sum() < 0.15 * fg.sum()  # what is left: where vessels cross or branch
    again, _ = render_vessels(0, 0, (400, 300))
    assert np.array_equal(image, again)


def test_vessels_size_option_is_checked(tmp_path: Path) -> None:
    from segkit_datasets.synthetic import write_synthetic

    with pytest.raises(ConfigError, match="only variant='vessels' takes a size"):
        write_synthetic(tmp_path / "a", count=2, size=(300, 200))
    with pytest.raises(ConfigError, match=r"expected \[width, height\]"):
        write_synthetic(tmp_path / "b", count=2, variant="vessels", size=(10, 20000))
    root = write_synthetic(tmp_path / "c", count=2, variant="vessels", size=(120, 90))
    assert Image.open(root / "images" / "synth_0.jpg").size == (120, 90)


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_native_crop_training_runs_end_to_end(tmp_path: Path, capsys) -> None:
    import json

    from segkit.cli import main

    args = [
        "--dataset-opt",
        "variant=vessels",
        "--dataset-opt",
        "size=[150,110]",
        "--dataset-opt",
        "count=10",
        "--recipe",
        "microscopy",
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--out",
        str(tmp_path),
        "--name",
        "native",
        "-q",
    ]
    assert main(["run", *args]) == 0
    run = tmp_path / "native"
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["evaluation"] == {
        "eval_size": "auto",
        "native": True,
        "input": "whole",
    }
    scores = (run / "test_scores.csv").read_text().splitlines()
    assert len(scores) == 1 + 2  # 10 images, 25% test
    assert (run / "predictions.png").exists()
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "eval size auto: native" in out and "(2 images" in out
    assert main(["evaluate", str(run / "best.pt"), "--eval-size", "resize"]) == 2
