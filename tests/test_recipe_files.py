"""Recipes as files (``--recipe FILE`` / ``--augment FILE``), the new ops' own checks, and
ops a plugin adds: the albumentations passthrough (``segkit_albumentations``'s
``AlbumentationsCompose``, entry point ``segkit.ops``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from segkit import recipes as R
from segkit.cli import main
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.errors import ConfigError

TOML = """
name = "crops"
[[train]]
op = "RandomCrop"
[[train]]
op = "VerticalFlip"
p = 0.25
[[train]]
op = "Affine"
rotate = [-10, 10]
scale = [0.9, 1.1]
border_mode = "replicate"
[[eval]]
op = "Normalize"
"""

YAML = """
train:
  - op: Resize
  - op: HorizontalFlip
  - op: GaussianBlur
    sigma_limit: [0.5, 1.5]
    p: 0.3
  - op: Normalize
    mean: [0.5, 0.5, 0.5]
    std: [0.25, 0.25, 0.25]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config_error(**settings) -> str:
    with pytest.raises(ConfigError) as e:
        RunConfig(**settings)
    message = str(e.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- formats


def test_a_toml_file_gives_its_ops_with_image_size_where_sizes_are_left_out(tmp_path):
    recipe = R.load_recipe(write(tmp_path / "r.toml", TOML), image_size=96)
    assert recipe.name == "crops"
    assert recipe.train == (
        R.RandomCrop(size=96),
        R.VerticalFlip(p=0.25),
        R.Affine(rotate=(-10.0, 10.0), scale=(0.9, 1.1), border_mode="replicate"),
        R.Normalize(),  # added: every stage ends with one
    )
    assert recipe.eval == (R.Normalize(),) and recipe.native_eval


def test_yaml_and_json_read_the_same_and_the_name_defaults_to_the_file_stem(tmp_path):
    from_yaml = R.load_recipe(write(tmp_path / "blur.yaml", YAML), image_size=64)
    data = R.read_recipe_file(tmp_path / "blur.yaml")
    from_json = R.load_recipe(write(tmp_path / "blur.json", json.dumps(data)), image_size=64)
    assert from_yaml == from_json and from_yaml.name == "blur"
    assert from_yaml.train[0] == R.Resize(size=64)
    assert from_yaml.train[-1] == R.Normalize(mean=(0.5,) * 3, std=(0.25,) * 3)
    # No eval ops: a resizing recipe evaluates resized, with the training Normalize.
    assert from_yaml.eval == (R.Resize(size=64), from_yaml.train[-1])
    assert not from_yaml.native_eval


def test_create_recipe_takes_a_recipe_file_as_run_config_and_recipe_flag_do(tmp_path):
    import segkit

    path = write(tmp_path / "r.toml", TOML)
    recipe = segkit.create_recipe(str(path), image_size=96)
    assert recipe == R.load_recipe(path, image_size=96)
    assert recipe == RunConfig(recipe=str(path), image_size=96).recipe_object()
    assert segkit.create_recipe(path, image_size=96) == recipe  # a Path as well
    assert segkit.create_recipe("type1", image_size=96).name == "type1"  # a name still
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist.*segkit list recipes"):
        segkit.create_recipe(tmp_path / "nope.yaml")


def test_a_missing_recipe_file_names_the_setting_as_it_was_given(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:  # from Python: the keyword
        RunConfig(recipe=str(missing))
    assert str(e.value).endswith(
        f"recipe file {missing} does not exist; recipe takes a recipe name "
        "(segkit list recipes) or a .toml, .yaml or .json file"
    )
    assert main(["run", "--recipe", str(missing), "--epochs", "1"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"recipe file {missing} does not exist; --recipe takes a recipe name "
            "(segkit list recipes) or a .toml, .yaml or .json file"
        )
    )


def test_to_dict_reads_back_as_the_same_recipe():
    from segkit import registry

    for name in ("type1", "type2", "type3", "microscopy", "natural"):
        recipe = registry.create("recipes", name, image_size=128)
        again = R.Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())), image_size=999)
        assert again == recipe, name


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[train]]\nop = "Afine"\n',
            r"train\[0\]: unknown op 'Afine' \(did you mean 'Affine'\?\)",
        ),
        (
            '[[train]]\nop = "Affine"\nrotat = [0, 1]\n',
            r"train\[0\] \(Affine\): unknown parameter 'rotat' \(did you mean 'rotate'\?\)",
        ),
        (
            '[[train]]\nop = "Affine"\nscale = [1.2, 0.8]\n',
            r"scale=\(1.2, 0.8\): low is above high",
        ),
        ('[[train]]\nop = "GaussNoise"\nstd_range = "big"\n', r"std_range='big': expected a list"),
        ('[[train]]\nop = "RandomCrop"\nsize = 0\n', r"size=0: expected a positive whole number"),
        ('[[train]]\nop = "RandomCrop"\nsize = 1.5\n', r"size=1.5: expected a whole number"),
        ('[[train]]\nop = "HorizontalFlip"\np = 2\n', r"p=2.0 is not in \[0, 1\]"),
        ('[[train]]\nop = "VerticalFlip"\np = true\n', r"p=True: expected a number"),
        (
            '[[train]]\nop = "Affine"\nborder_mode = "wrap"\n',
            r"border_mode='wrap': expected one of",
        ),
        ('[[train]]\nop = "CoarseDropout"\nmask = "drop"\n', r"mask='drop': expected 'keep' or"),
        ('[[train]]\nop = "GaussianBlur"\nblur_limit = [4, 6]\n', r"expected odd widths"),
        ('[[trian]]\nop = "Resize"\n', r"unknown key\(s\) 'trian' \(did you mean 'train'\?\)"),
        ('name = "x"\n', r"no 'train' list of ops"),
        ('train = "Resize"\n', r"train = 'Resize': expected a list of op tables"),
        ("[[train]]\np = 1\n", r"train\[0\]: expected a table with an 'op' key"),
        ("[[train]\n", r"does not parse"),
    ],
)
def test_a_bad_recipe_file_is_one_line_naming_the_file_and_key(tmp_path, text, expected):
    path = write(tmp_path / "bad.toml", text)
    message = config_error(recipe=str(path))
    assert str(path) in message
    import re

    assert re.search(expected, message), message


def test_a_missing_recipe_file_says_what_recipe_takes(tmp_path):
    message = config_error(recipe=str(tmp_path / "nope.yaml"))
    assert "does not exist" in message and "segkit list recipes" in message


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: R.Affine(rotate=(10.0, -10.0)), "low is above high"),
        (lambda: R.Affine(translate_percent=(-2.0, 0.0)), "within [-1.0, 1.0]"),
        (lambda: R.Affine(fill=300), "fill=300"),
        (lambda: R.Affine(fill_mask=-1), "fill_mask=-1"),
        (lambda: R.PadIfNeeded(size=None, divisor=None), "give size, divisor or both"),
        (lambda: R.PadIfNeeded(divisor=0), "divisor=0"),
        (lambda: R.ElasticTransform(sigma=0), "sigma=0"),
        (lambda: R.ElasticTransform(alpha=-1), "alpha=-1"),
        (lambda: R.GaussNoise(std_range=(0.1, 2.0)), "std_range"),
        (lambda: R.GaussianBlur(sigma_limit=(0.0, 1.0)), "positive sigmas"),
        (lambda: R.HueSaturationValue(hue_shift_limit=(-200, 0)), "hue_shift_limit"),
        (lambda: R.CoarseDropout(num_holes_range=(0, 2)), "num_holes_range"),
        (lambda: R.CoarseDropout(hole_width_range=(0.5, 1.5)), "hole_width_range"),
        (lambda: R.CoarseDropout(hole_height_range=(0.5, 1.0)), "expected fractions below 1"),
    ],
)
def test_new_ops_refuse_out_of_range_parameters(make, expected):
    with pytest.raises(ConfigError) as e:
        make()
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_mask_fills_follow_the_dataset_kind():
    assert R.mask_fill(R.Affine(), multiclass=False) == 0
    assert R.mask_fill(R.Affine(), multiclass=True) == 255
    assert R.mask_fill(R.Affine(fill_mask=3), multiclass=True) == 3
    with pytest.raises(ConfigError, match="binary dataset's masks hold only 0 and 1"):
        R.mask_fill(R.RandomCrop(fill_mask=255), multiclass=False)
    assert R.dropout_mask_fill(R.CoarseDropout(), multiclass=False) is None
    assert R.dropout_mask_fill(R.CoarseDropout(mask="ignore"), multiclass=True) == 255
    with pytest.raises(ConfigError, match="mask='ignore' needs a K-class dataset"):
        R.dropout_mask_fill(R.CoarseDropout(mask="ignore"), multiclass=False)


# --------------------------------------------------------------- runs and run folders


def test_the_config_records_the_file_so_the_run_rebuilds_without_it(tmp_path):
    from segkit.build import build_recipe

    path = write(tmp_path / "crops.toml", TOML)
    config = RunConfig(recipe=str(path), image_size=64)
    assert config.recipe_definition["name"] == "crops"
    assert "recipes" not in config.plugins()  # a file is not a plugin
    recorded = json.loads(json.dumps(config.to_dict()))  # as config.json holds it
    path.unlink()
    again = RunConfig.from_dict(recorded)
    assert build_recipe(again) == build_recipe(config)
    assert build_recipe(again).train[0] == R.RandomCrop(size=64)


def test_augment_is_a_second_name_for_recipe_and_a_new_one_replaces_the_recorded_file(tmp_path):
    from segkit.cli import build_parser, settings_from_args

    path = write(tmp_path / "crops.toml", TOML)
    recorded = RunConfig(recipe=str(path)).to_dict()
    parser = build_parser()
    args = parser.parse_args(["run", "--augment", "type1"])
    settings = settings_from_args(args, recorded)
    assert settings["recipe"] == "type1" and "recipe_definition" not in settings
    args = parser.parse_args(["run", "--epochs", "3"])
    assert settings_from_args(args, recorded)["recipe_definition"]["name"] == "crops"


def test_run_names_a_bad_recipe_file_before_anything_slow(tmp_path, capsys):
    path = write(tmp_path / "bad.yaml", "train:\n  - op: Flip\n")
    assert main(["run", "--augment", str(path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown op 'Flip'" in err and str(path) in err and "Traceback" not in err


# ----------------------------------------------------------- a plugin's op: passthrough


def test_albumentations_compose_is_kept_serialized_and_runs_on_its_loader(tmp_path):
    import albumentations as A
    import numpy as np

    from segkit_albumentations import AlbumentationsCompose, compile_ops

    compose = A.Compose([A.Transpose(p=1.0)])
    op = AlbumentationsCompose(compose)
    saved = tmp_path / "aug.json"
    A.save(compose, str(saved))
    assert AlbumentationsCompose(str(saved)) == op
    assert AlbumentationsCompose(A.to_dict(compose)) == op
    recipe = R.Recipe("pass", train=(op, R.Resize(size=32), R.Normalize()))
    recorded = json.loads(json.dumps(recipe.to_dict()))
    assert recorded["train"][0]["plugin"] == "segkit"  # the distribution that adds the op
    assert R.Recipe.from_dict(recorded) == recipe
    image = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)
    mask = (np.arange(40 * 30).reshape(40, 30) % 2).astype(np.uint8)
    out = compile_ops([op])(image=image, mask=mask)
    assert np.array_equal(out["image"], image.transpose(1, 0, 2))
    assert np.array_equal(out["mask"], mask.T)  # the mask moves with the image


def test_the_passthrough_is_a_registered_op_of_its_plugin_not_of_the_core():
    from segkit_albumentations import AlbumentationsCompose

    assert "AlbumentationsCompose" not in R.VOCABULARY
    assert not hasattr(R, "AlbumentationsCompose")
    assert R.op_class("AlbumentationsCompose") is AlbumentationsCompose
    assert R.known_ops()["AlbumentationsCompose"] is AlbumentationsCompose
    assert R.op_plugin(AlbumentationsCompose).target == (
        "segkit_albumentations.compose:AlbumentationsCompose"
    )
    assert AlbumentationsCompose.loaders == ("albumentations",)


def test_albumentations_compose_refuses_what_would_break_the_recipe(tmp_path):
    import albumentations as A

    from segkit_albumentations import AlbumentationsCompose

    with pytest.raises(ConfigError, match="holds .*Normalize"):
        AlbumentationsCompose(A.Compose([A.HorizontalFlip(), A.Normalize()]))
    with pytest.raises(ConfigError, match="does not exist"):
        AlbumentationsCompose(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not a serialized albumentations transform"):
        AlbumentationsCompose({"ops": []})
    bad = write(tmp_path / "bad.yaml", "transform: [\n")
    with pytest.raises(ConfigError, match="does not parse"):
        AlbumentationsCompose(bad)


def test_the_dali_loader_refuses_the_passthrough_in_one_line():
    pytest.importorskip("nvidia.dali")
    import albumentations as A

    from segkit_albumentations import AlbumentationsCompose
    from segkit_dali._graph import compile_ops

    op = AlbumentationsCompose(A.Compose([A.Transpose(p=1.0)]))
    with pytest.raises(ConfigError) as e:
        compile_ops([op, R.Normalize()])
    message = str(e.value)
    assert "\n" not in message
    assert "AlbumentationsCompose" in message and "use loader='albumentations', or" in message
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as e:
        compile_ops([op, R.Normalize()])
    assert "use --loader albumentations, or segkit.recipes ops" in str(e.value)


@dataclass(frozen=True)
class Posterize(R.Op):
    """An op of a plugin that is not installed: no loader here knows it."""

    bits: int = 4
    loaders: ClassVar[tuple[str, ...] | None] = ("elsewhere",)


def test_a_loader_refuses_a_plugin_op_it_does_not_know_naming_the_ops_loaders():
    from segkit_albumentations import compile_ops

    with pytest.raises(ConfigError) as e:
        compile_ops([Posterize(), R.Normalize()])
    assert str(e.value) == (
        "the albumentations loader cannot run Posterize(p=1.0, bits=4): Posterize is a "
        "plugin's op that runs on the elsewhere loader; use loader='elsewhere', or "
        "segkit.recipes ops"
    )
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as e:
        compile_ops([Posterize(), R.Normalize()])
    assert "runs on the elsewhere loader; use --loader elsewhere, or segkit" in str(e.value)


def test_without_its_plugin_a_recipe_file_names_the_op_and_what_to_install(tmp_path, monkeypatch):
    from segkit import registry

    path = write(
        tmp_path / "r.yaml",
        "train:\n  - op: AlbumentationsCompose\n    transform: {}\n  - op: Resize\n",
    )
    # A registry over an empty path: no distribution, so no plugin adds an op.
    monkeypatch.setattr(registry, "_default", registry.Registry(path=[str(tmp_path)]))
    message = config_error(recipe=str(path))
    assert message.startswith(f"{path}: train[0]: unknown op 'AlbumentationsCompose'; ")
    assert "An op a plugin adds needs that plugin installed (segkit list ops)" in message
    # A run records the distribution of a plugin's op: then that is what to install.
    recorded = {"train": [{"op": "AlbumentationsCompose", "plugin": "segkit-albu", "p": 1.0}]}
    with pytest.raises(ConfigError) as e:
        R.Recipe.from_dict(recorded, source="config.json")
    assert str(e.value) == (
        "config.json: train[0]: op 'AlbumentationsCompose' comes from a plugin of "
        "distribution 'segkit-albu', which is not installed here or no longer registers it "
        "(segkit list ops); install it, e.g. pip install segkit-albu"
    )


@pytest.mark.slow
def test_a_run_with_a_recipe_file_evaluates_and_resumes_after_the_file_is_gone(
    tiny_pets, tmp_path, capsys
):
    from conftest import TINY_RUN

    path = write(
        tmp_path / "flips.yaml",
        "train:\n  - op: Resize\n  - op: HorizontalFlip\n  - op: VerticalFlip\n"
        "  - op: Affine\n    rotate: [-20, 20]\n    p: 0.5\n",
    )
    out = tmp_path / "runs"
    argv = ["run", "--data", str(tiny_pets), "--out", str(out), "--name", "f", *TINY_RUN, "-q"]
    assert main([*argv, "--augment", str(path), "--epochs", "1", "--keep-last"]) == 0
    run = out / "f"
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["recipe"] == str(path)
    assert recorded["recipe_definition"]["train"][3] == {
        "op": "Affine",
        "rotate": [-20, 20],
        "p": 0.5,
    }
    summary = json.loads((run / "summary.json").read_text())
    path.unlink()
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--num-workers", "0"]) == 0
    assert f"{summary['test_dice']:.4f}" in capsys.readouterr().out
    assert main(["run", "--resume", str(run), "--epochs", "2", "-q"]) == 0
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2


def test_a_compose_file_named_in_a_recipe_file_is_recorded_by_its_contents(tmp_path):
    import albumentations as A

    from segkit.build import build_recipe
    from segkit_albumentations import AlbumentationsCompose

    (tmp_path / "augs").mkdir()
    A.save(A.Compose([A.Transpose(p=1.0)]), str(tmp_path / "augs" / "mine.json"))
    path = write(
        tmp_path / "augs" / "r.toml",
        '[[train]]\nop = "AlbumentationsCompose"\ntransform = "mine.json"\n[[train]]\nop = "Resize"\n',
    )
    config = RunConfig(recipe=str(path), image_size=32)
    (tmp_path / "augs" / "mine.json").unlink()  # relative to the recipe file, read already
    recorded = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    op = build_recipe(recorded).train[0]
    assert op == AlbumentationsCompose(A.Compose([A.Transpose(p=1.0)]))
    assert config.recipe_definition["train"][0]["plugin"] == "segkit"


def test_an_albumentations_transform_in_a_recipe_names_its_type_and_the_segkit_op():
    import albumentations as A

    with pytest.raises(ConfigError) as info:
        R.Recipe("alb_op", train=(A.HorizontalFlip(p=0.5), R.Resize(size=32), R.Normalize()))
    text = str(info.value)
    assert text.startswith(
        "recipe 'alb_op': train[0] is HorizontalFlip(p=0.5) (type albumentations."
    )
    assert ".HorizontalFlip), not a segkit.recipes op" in text
    assert "use segkit.recipes.HorizontalFlip instead" in text
    assert "use one of" not in text  # not a list that holds the name it refused
    assert "AlbumentationsCompose from segkit" in text  # the ops plugins add, by name
    assert "docs/recipes.md, 'Your own albumentations pipeline'" in text
    # A transform segkit has no op of that name for: the vocabulary, and the wrapper.
    with pytest.raises(ConfigError, match=r"eval\[0\] is GridDistortion\(.*\(type albumentations"
                       r"\..*GridDistortion\), .*use one of segkit.recipes' ops: HorizontalFlip, "):  # fmt: skip
        R.Recipe("x", train=(R.Normalize(),), eval=(A.GridDistortion(), R.Normalize()))
    # Not albumentations at all: no albumentations advice.
    with pytest.raises(ConfigError) as info:
        R.Recipe("x", train=("flip", R.Normalize()))
    assert "is 'flip' (type builtins.str)" in str(info.value)
    assert "albumentations pipeline" not in str(info.value)
