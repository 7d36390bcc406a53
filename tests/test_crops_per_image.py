"""``crops_per_image``: an epoch of N random crops of each train image, with either loader;
its refusals, its record in config.json, study files, and (slow tier) a seeded run that
resumes to the numbers of an unbroken one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import interrupt_in_epoch
from helpers import TINY_MODEL, comparable, rows, tiny

from segkit import build
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.data.sampling import CropsPerImage, crops_per_image, epoch_order
from segkit.errors import ConfigError, RunInterrupted
from segkit.recipes import Normalize, RandomCrop, Recipe, Resize
from segkit.registry import create, list_plugins
from segkit.reports.study import expand
from segkit.training.engine import resume, train

LOADERS = list_plugins("loaders")
CROP = Recipe("crop", train=(RandomCrop(size=64), Normalize()))


def epoch(loader, n: int) -> torch.Tensor:
    loader.set_epoch(n)
    return torch.cat([b.images for b in loader])


@pytest.mark.parametrize("loader", LOADERS)
def test_an_epoch_draws_n_crops_of_each_train_image(loader, shapes):
    n = len(shapes.samples("train"))  # 10 images of 90-127 px
    made = lambda: create(  # noqa: E731
        "loaders", loader, crops_per_image(shapes, 2), "train", CROP, 4, train=True, seed=2
    )
    data = made()
    images = epoch(data, 1)
    assert len(images) == 2 * n and len(data) == 5  # 20 crops, 5 batches of 4
    assert torch.equal(images, epoch(made(), 1))  # seeded: the same crops again
    # The two copies of an image are crops of their own (their own position and seed).
    order = epoch_order(2 * n, shuffle=True, seed=2, epoch=1, shard=(0, 1))
    at = {index: i for i, index in enumerate(order)}
    differ = [not torch.equal(images[at[k]], images[at[k + n]]) for k in range(n)]
    assert sum(differ) >= n - 1
    # One crop each: the dataset itself, the epoch as before.
    assert crops_per_image(shapes, 1) is shapes
    assert len(epoch(create("loaders", loader, shapes, "train", CROP, 4, train=True), 1)) == n


def test_only_the_train_split_is_repeated(shapes):
    repeated = CropsPerImage(shapes, 4)
    assert repeated.samples("train") == shapes.samples("train") * 4
    assert repeated.samples("valid") == shapes.samples("valid")
    assert repeated.mask_spec is shapes.mask_spec and repeated.root == shapes.root


#: Crops at native scale and flips: a recipe both loaders run on the CPU (DALI's elastic
#: warp of ``microscopy`` needs a GPU).
CROPS_TOML = '[[train]]\nop = "RandomCrop"\n[[train]]\nop = "HorizontalFlip"\n'


def _config(data: Path, out: Path, **options) -> RunConfig:
    recipe = out / "crops.toml"
    recipe.write_text(CROPS_TOML)
    base = {"model": "timm_unet", "model_options": TINY_MODEL, "recipe": str(recipe)}
    return tiny(data, out, **(base | options))


@pytest.mark.slow  # builds two runs (every file checked) per loader
@pytest.mark.parametrize("loader", LOADERS)
def test_the_run_counts_the_crops_in_its_steps(loader, tiny_pets, tmp_path):
    runtime = build.resolve_runtime(RunConfig(device="cpu", num_workers=0))
    steps = {}
    for n in (1, 3):
        config = _config(tiny_pets, tmp_path, crops_per_image=n, loader=loader)
        parts = build.build_training(config, runtime)
        assert build.train_samples(config, parts.dataset) == 13 * n  # 13 train images
        steps[n] = parts.steps_per_epoch
    assert steps == {1: 13 // 4, 3: 39 // 4}  # batch 4, the partial last batch dropped


def test_a_recipe_that_resizes_is_refused_before_the_data_is_read(tiny_pets, monkeypatch):
    def read(config):
        raise AssertionError("the data was read before the refusal")

    monkeypatch.setattr(build, "build_dataset", read)
    runtime = build.resolve_runtime(RunConfig(device="cpu", num_workers=0))
    for recipe in ("type1", "type3"):
        config = RunConfig(data=str(tiny_pets), recipe=recipe, crops_per_image=4)
        with pytest.raises(ConfigError) as e:
            build.build_training(config, runtime)
        assert str(e.value).startswith(
            f"crops_per_image=4: recipe '{recipe}' does not train on crops at the images' "
            "own resolution"
        )
        assert "recipe='microscopy'" in str(e.value) and "raise epochs" in str(e.value)
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as e:
        build.check_crops_per_image(RunConfig(crops_per_image=2), build.build_recipe(RunConfig()))
    assert str(e.value).startswith("--crops-per-image 2: recipe 'type3'")
    assert "--recipe microscopy" in str(e.value) and "--epochs" in str(e.value)


def test_recipe_files_crop_when_their_last_sizing_op_is_random_crop(tmp_path):
    assert (
        CROP.crops
        and not Recipe("r", train=(RandomCrop(size=32), Resize(size=16), Normalize())).crops
    )
    assert not Recipe("n", train=(Normalize(),)).crops  # no sizing op: nothing to crop
    crops = tmp_path / "crops.toml"
    crops.write_text(CROPS_TOML)
    config = RunConfig(recipe=str(crops), crops_per_image=3, image_size=64)
    build.check_crops_per_image(config, build.build_recipe(config))  # accepted
    resized = tmp_path / "resized.toml"
    resized.write_text('[[train]]\nop = "RandomCrop"\nsize = 128\n[[train]]\nop = "Resize"\n')
    config = RunConfig(recipe=str(resized), crops_per_image=3, image_size=64)
    with pytest.raises(ConfigError, match="recipe 'resized' does not train on crops"):
        build.check_crops_per_image(config, build.build_recipe(config))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "crops_per_image=0: expected a positive integer"),
        (-2, "crops_per_image=-2: expected a positive integer"),
        (2.5, "crops_per_image=2.5: expected an integer"),
        ("4", "crops_per_image='4': expected an integer, not a string: crops_per_image=4"),
    ],
)
def test_bad_values_are_refused_naming_them(value, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(") + "$"):
        RunConfig(crops_per_image=value)


def test_bad_values_are_named_as_flags_and_file_keys(tmp_path, capsys):
    from segkit.cli import main

    assert main(["run", "--crops-per-image", "0"]) != 0
    assert "--crops-per-image 0: expected a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--crops-per-image", "1.5"])
    assert "invalid int value: '1.5'" in capsys.readouterr().err
    file = tmp_path / "c.yaml"
    file.write_text("crops_per_image: 0\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'crops_per_image' = 0: expected a pos"):
        RunConfig.from_file(file)


def test_the_setting_round_trips_through_config_files_and_studies(tmp_path):
    config = RunConfig(recipe="microscopy", crops_per_image=6)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert RunConfig.from_file(path) == config
    toml = tmp_path / "c.toml"
    toml.write_text('recipe = "microscopy"\ncrops_per_image = 6\n')
    assert RunConfig.from_file(toml).crops_per_image == 6
    old = {k: v for k, v in config.to_dict().items() if k != "crops_per_image"}
    assert RunConfig.from_dict(old).crops_per_image == 1  # an older run folder's: one crop
    runs = expand({"recipe": "microscopy"}, {"crops_per_image": [1, 4]}, source="s.toml")
    assert [r.name for r in runs] == ["crops_per_image1", "crops_per_image4"]
    assert [r.config().crops_per_image for r in runs] == [1, 4]
    with pytest.raises(
        ConfigError, match=r"^s.toml: run crops_per_image0: key .crops_per_image. = 0"
    ):
        expand({}, {"crops_per_image": [0]}, source="s.toml")


@pytest.mark.slow
def test_a_seeded_run_of_two_crops_resumes_to_the_numbers_of_an_unbroken_one(
    tiny_pets, tmp_path, monkeypatch
):
    options = {"epochs": 2, "crops_per_image": 2, "seed": 3, "schedule": "cosine"}
    train(_config(tiny_pets, tmp_path, name="whole", **options), quiet=True)
    put_back = interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(RunInterrupted, match="holds epoch 1"):
        train(_config(tiny_pets, tmp_path, name="cut", **options), quiet=True)
    put_back()
    resume(tmp_path / "cut", quiet=True)
    whole, resumed = comparable(tmp_path / "whole"), comparable(tmp_path / "cut")
    assert [r["epoch"] for r in resumed] == [1, 2]
    for a, b in zip(whole, resumed, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["epoch"], key)
    assert [int(r["train_images"]) for r in rows(tmp_path / "whole")] == [24, 24]  # 26, 4 a batch
    recorded = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert recorded["crops_per_image"] == 2
    assert recorded["resolved"]["steps_per_epoch"] == 26 // 4


def _one_slide(root: Path) -> Path:
    """A ``folder`` set split by folders: one 96 px train image (a slide), one in val/ and
    one in test/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        mask = np.zeros((96, 96), np.uint8)
        mask[20:60, 30:70] = 255
        Image.fromarray(image).save(root / split / "images" / "slide.png")
        Image.fromarray(mask).save(root / split / "masks" / "slide.png")
    return root


def test_one_train_image_fills_batches_with_its_crops(tmp_path):
    from segkit import create_dataset
    from segkit.data.prepare import prepare_training
    from segkit.errors import DataError

    dataset = create_dataset("folder", _one_slide(tmp_path / "slide"))
    assert len(dataset.samples("train")) == 1
    check = dict(name="folder", skip_bad_samples=False, batch_size=4)
    # One image, one crop an epoch: a batch of one is dropped, so nothing would train;
    # the refusal says so and offers crops.
    with given_as(COMMAND_LINE), pytest.raises(DataError) as refused:
        prepare_training(dataset, **check)
    message = str(refused.value)
    assert "split 'train' has 1 sample" in message and "would train nothing" in message
    assert "--crops-per-image 8" in message
    # Eight crops of it an epoch: two batches of four.
    ready = prepare_training(dataset, **check, crops_per_image=8)
    assert len(ready.dataset.samples("train")) == 1 and not ready.bad
