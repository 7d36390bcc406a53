"""RunConfig: types and values checked at the edge, configuration files, old key names, and
the command line generated from the fields."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from segkit.cli import build_parser, settings_from_args
from segkit.config import DEFAULTS, PRECISIONS, RunConfig, choices, field_types, flag
from segkit.errors import ConfigError


def test_defaults_come_from_the_one_table():
    config = RunConfig()
    assert (config.model, config.recipe, config.loader) == (
        DEFAULTS["model"],
        DEFAULTS["recipe"],
        DEFAULTS["loader"],
    )
    # The loss follows the dataset's classes (segkit.task): the table names both defaults.
    assert config.loss == "auto" and {"loss", "multiclass_loss"} <= set(DEFAULTS)
    assert config.resolved_dataset() == DEFAULTS["generated_dataset"]
    assert RunConfig(data="/x", dataset="folder").resolved_dataset() == "folder"
    # A --data folder's layout is recognised (tests/test_datasets.py), never assumed.


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, r"--epochs 0: expected a positive integer"),
        ({"save_every": 0}, r"--save-every 0: expected a positive integer"),
        ({"epochs": "10"}, r"--epochs '10': expected an integer"),
        ({"epochs": True}, r"--epochs True: expected an integer"),
        ({"lr": "fast"}, r"--lr 'fast': expected a number"),
        ({"lr": 0}, r"--lr 0.0: expected a positive learning rate"),
        ({"precision": "fp8"}, r"--precision 'fp8': expected one of auto, fp32, bf16, fp16"),
        ({"schedule": "step"}, r"--schedule 'step': expected one of exponential, cosine"),
        ({"on_nan": "ignore"}, r"--on-nan 'ignore': expected one of stop, skip"),
        ({"compile": "yes"}, r"--compile 'yes': expected true or false"),
        ({"model_options": ["a"]}, r"--model-opt \['a'\]: expected a table of options"),
        ({"num_workers": -1}, r"--num-workers -1: expected 0 or more"),
        ({"model": None}, r"--model: a value is required"),
        ({"warmup_epochs": 5, "epochs": 5}, r"--warmup-epochs 5.0: expected a value from 0"),
    ],
)
def test_bad_values_name_the_option(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_an_int_where_a_float_is_expected_becomes_a_float():
    config = RunConfig(lr=1, warmup_epochs=0)
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert isinstance(config.warmup_epochs, float)


def test_every_literal_field_has_its_choices_on_the_command_line():
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    actions = {a.dest: a for a in run._actions if a.help != argparse.SUPPRESS}
    hints = field_types()
    for f in dataclasses.fields(RunConfig):
        if f.metadata["group"] == "recorded":  # written by segkit (recipe_definition)
            assert f.name not in actions and f.metadata["help"]
            continue
        assert f.name in actions, f"no option for {f.name}"
        assert flag(f.name) in actions[f.name].option_strings
        assert f.metadata["help"], f"{f.name} has no help"
        values = choices(hints[f.name])
        if values is not None:
            assert tuple(actions[f.name].choices) == values
    assert tuple(actions["precision"].choices) == PRECISIONS


def _settings(argv: list[str], base: dict | None = None) -> dict:
    args = build_parser().parse_args(["run", *argv])
    return settings_from_args(args, base)


def test_only_the_options_given_are_settings():
    assert _settings([]) == {}
    assert _settings(["--epochs", "3", "--no-channels-last", "--compile"]) == {
        "epochs": 3,
        "channels_last": False,
        "compile": True,
    }


def test_flags_override_a_file_and_options_merge_key_by_key():
    base = {"epochs": 10, "lr": 0.01, "model_options": {"encoder": "resnet18", "width": 2}}
    got = _settings(["--epochs", "2", "--model-opt", "width=4", "--weights", "w.pt"], base)
    assert got == {
        "epochs": 2,
        "lr": 0.01,
        "model_options": {"encoder": "resnet18", "width": 4, "weights": "w.pt"},
    }


def test_augment_is_a_second_name_of_recipe(capsys):
    assert _settings(["--augment", "type1"]) == {"recipe": "type1"}
    assert capsys.readouterr().err == ""


def test_json_and_toml_files(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"model": "resnet34_unet", "epochs": 3, "resolved": {"x": 1}}))
    assert RunConfig.from_file(j).epochs == 3  # "resolved" (written by segkit) is ignored
    t = tmp_path / "c.toml"
    t.write_text('model = "unet"\nlr = 2e-3\n[loss_options]\nsmooth = 1.0\n')
    config = RunConfig.from_file(t)
    assert (config.model, config.lr, config.loss_options) == ("unet", 2e-3, {"smooth": 1.0})


def test_a_run_folders_config_json_round_trips(tmp_path):
    config = RunConfig(model="resnet34_unet", recipe="type1", epochs=4, loader_options={"a": 1})
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config.to_dict(), "resolved": {"device": "cpu"}}))
    assert RunConfig.from_file(path) == config


def test_old_key_augment_is_read_as_recipe(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"augment": "type2"}))
    assert RunConfig.from_file(path).recipe == "type2"
    assert RunConfig.from_dict({"augment": "type1"}).recipe == "type1"


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("{not json", ".json", r"c.json: not valid JSON \(line 1, column 2"),
        ("model = ", ".toml", r"c.toml: not valid TOML"),
        ("[1, 2]", ".json", r"c.json: expected a table of settings, got list"),
        ('{"modle": "unet"}', ".json", r"unknown setting\(s\) 'modle' \(did you mean 'model'\?\)"),
        ('{"epochs": "3"}', ".json", r"--epochs '3': expected an integer"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, text, suffix, message):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: configuration file not found"):
        RunConfig.from_file(tmp_path / "nope.toml")
