"""RunConfig: types and values checked at the edge, configuration files, old key names, and
the command line generated from the fields."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json

import pytest

from segkit.cli import build_parser, settings_from_args
from segkit.config import (
    COMMAND_LINE,
    DEFAULTS,
    PRECISIONS,
    PYTHON,
    RunConfig,
    choices,
    data_path,
    field_types,
    flag,
    given_as,
)
from segkit.errors import ConfigError, DataError, UnknownSettingError


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
def test_bad_values_name_the_option_in_the_segkit_command(changes, message):
    with given_as(COMMAND_LINE), pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, r"^epochs=0: expected a positive integer$"),
        (
            {"image_size": "64"},
            r"^image_size='64': expected an integer, not a string: image_size=64$",
        ),
        ({"lr": "1e-3"}, r"^lr='1e-3': expected a number, not a string: lr=0.001$"),
        ({"image_size": "6x"}, r"^image_size='6x': expected an integer$"),
        ({"lr": 0}, r"^lr=0.0: expected a positive learning rate$"),
        ({"precision": "fp8"}, r"^precision='fp8': expected one of auto, fp32, bf16, fp16$"),
        ({"model_options": ["a"]}, r"^model_options=\['a'\]: expected a table of options$"),
        ({"model": None}, r"^model: a value is required$"),
        ({"max_time": 20}, r'^max_time=20: expected a duration with its unit, as a string: "20m"'),
        ({"max_time": "soon"}, r"^max_time='soon': expected a duration such as 20m"),
        (
            {"warmup_epochs": 5, "epochs": 5},
            r"^warmup_epochs=5.0: expected a value from 0 up to \(not including\) epochs=5$",
        ),
    ],
)
def test_bad_values_name_the_field_as_python_gives_it(changes, message):
    """A notebook user typed no flag: the message names the keyword argument they wrote."""
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_a_typo_in_a_field_name_is_a_config_error_and_a_type_error_with_the_close_match():
    with pytest.raises(UnknownSettingError) as caught:
        RunConfig(imagesize=64)
    assert str(caught.value) == (
        "RunConfig(imagesize=64): unknown field 'imagesize' (did you mean 'image_size'?); "
        "help(segkit.RunConfig) lists the fields, and `segkit run --help` says what each does "
        "(its long options are the fields, with '-' for '_')"
    )
    # `except TypeError` (Python's own unexpected-keyword error) and `except ConfigError` both
    # keep catching it.
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ConfigError)
    # The old key name a configuration file may hold is named with its new one; every bad
    # value of the other keywords comes in the same message.
    with pytest.raises(UnknownSettingError) as caught:
        RunConfig("unet", augment="type1", epochs=0, image_size="64")
    assert str(caught.value) == (
        "3 settings to fix:\n"
        "  - RunConfig(augment='type1'): unknown field 'augment' (did you mean 'recipe'?); "
        "help(segkit.RunConfig) lists the fields, and `segkit run --help` says what each does "
        "(its long options are the fields, with '-' for '_')\n"
        "  - image_size='64': expected an integer, not a string: image_size=64\n"
        "  - epochs=0: expected a positive integer"
    )
    with pytest.raises(UnknownSettingError, match=r"unknown field 'epoch' \(did you mean 'epochs'"):
        dataclasses.replace(RunConfig(), epoch=3)
    assert dataclasses.replace(RunConfig(), epochs=3).epochs == 3
    assert list(inspect.signature(RunConfig).parameters)[:2] == ["model", "model_options"]


def test_from_dict_names_keys_as_python_keywords_or_flags_as_its_source_says():
    with pytest.raises(ConfigError, match=r"^epochs=0: expected a positive integer$"):
        RunConfig.from_dict({"epochs": 0}, source=PYTHON)
    with pytest.raises(ConfigError, match=r"^--epochs 0: expected a positive integer$"):
        RunConfig.from_dict({"epochs": 0}, source=COMMAND_LINE)
    with pytest.raises(UnknownSettingError, match=r"^c.yaml: unknown setting\(s\) 'epoch' \(did"):
        RunConfig.from_dict({"epoch": 0}, source="c.yaml")


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
        ('{"epochs": "3"}', ".json", r"c.json: key 'epochs' = '3': expected an integer"),
        ("epochs: [3", ".yaml", r"c.yaml: not valid YAML \(line 1, column 11: expected ','"),
        ("", ".yml", r"c.yml: expected a table of settings, got nothing"),
        ("- 1\n", ".yaml", r"c.yaml: expected a table of settings, got list"),
        ("image_size: '64'", ".yaml", r"c.yaml: key 'image_size' = '64': expected an integer"),
        ('image_size = "64"', ".toml", r"c.toml: key 'image_size' = '64': expected an integer"),
        ("lr: fast", ".yaml", r"c.yaml: key 'lr' = 'fast': expected a number"),
        ("epochs: 0", ".yaml", r"c.yaml: key 'epochs' = 0: expected a positive integer"),
        ("precision: fp8", ".yml", r"c.yml: key 'precision' = 'fp8': expected one of auto, fp32"),
        ("model: null", ".yaml", r"c.yaml: key 'model': a value is required"),
        ("modle: unet", ".yaml", r"c.yaml: unknown setting\(s\) 'modle' \(did you mean 'model'"),
        (
            "epochs = 3\nwarmup_epochs = 3",
            ".toml",
            r"c.toml: key 'warmup_epochs' = 3.0: expected a value from 0 up to \(not including\) "
            r"epochs = 3$",
        ),
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


# ----------------------------------------------------------------------- YAML and sources


def test_yaml_files_read_as_toml_and_json_do(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: resnet34_unet\nlr: 1e-3\nepochs: 3\nloss_options:\n  smooth: 1.0\n")
    config = RunConfig.from_file(y)
    # PyYAML alone reads 1e-3 as text (YAML 1.1); the reader takes it as YAML 1.2 does.
    assert (config.model, config.lr, config.epochs) == ("resnet34_unet", 1e-3, 3)
    assert config.loss_options == {"smooth": 1.0}
    (tmp_path / "c.yml").write_text("augment: type1\nwarmup_epochs: -2.5e+0\n")
    with pytest.raises(ConfigError, match=r"c.yml: key 'warmup_epochs' = -2.5: expected"):
        RunConfig.from_file(tmp_path / "c.yml")


def _cli_error(capsys, argv: list[str]) -> str:
    from segkit.cli import main

    assert main(argv) == 2
    return capsys.readouterr().err.strip()


def test_a_file_with_flags_over_it_names_each_value_where_it_was_given(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 3\nimage_size: 64\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nimage_size: '64'\nwarmup_epochs: 2\n")
    # A bad value in the file names the file and the key, also with flags given.
    err = _cli_error(capsys, ["run", "--config", str(bad), "--epochs", "4"])
    assert err == (
        f"segkit: error: {bad}: key 'image_size' = '64': expected an integer, not a string: "
        "image_size = 64"
    )
    # A bad flag over a good file names the flag.
    err = _cli_error(capsys, ["run", "--config", str(good), "--epochs", "0"])
    assert err == "segkit: error: --epochs 0: expected a positive integer"
    err = _cli_error(capsys, ["run", "--config", str(good), "--threads", "none"])
    assert err.endswith("--threads 'none': expected auto or a number of threads (1 or more)")
    # Two settings checked together: each named where it was given.
    bad.write_text("warmup_epochs: 2\n")
    err = _cli_error(capsys, ["run", "--config", str(bad), "--epochs", "2"])
    assert err.endswith(
        f"{bad}: key 'warmup_epochs' = 2.0: expected a value from 0 up to (not including) "
        "--epochs 2"
    )
    err = _cli_error(capsys, ["run", "--config", str(good), "--warmup-epochs", "3"])
    assert err.endswith(
        "--warmup-epochs 3.0: expected a value from 0 up to (not including) epochs = 3"
    )


def test_from_dict_names_the_source_and_the_given_flags():
    with pytest.raises(ConfigError, match=r"^last.pt: key 'epochs' = 0: expected a positive"):
        RunConfig.from_dict({"epochs": 0}, source="last.pt")
    with pytest.raises(ConfigError, match=r"^--epochs 0: expected a positive"):
        RunConfig.from_dict({"epochs": 0, "lr": 1.0}, source="c.toml", flags=["epochs"])
    with pytest.raises(ConfigError, match=r"^--epochs 0: expected a positive"):
        RunConfig.from_dict({"epochs": 0}, source="command line")
    with pytest.raises(ConfigError, match=r"^epochs=0: expected a positive"):
        RunConfig(epochs=0)  # built in Python: the keyword names the setting
    with given_as(COMMAND_LINE), pytest.raises(ConfigError, match=r"^--epochs 0: expected"):
        RunConfig(epochs=0)  # built by the segkit command: its flag does


# ----------------------------------------------------------------------- data paths


def test_data_is_recorded_absolute_with_the_folder_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cells").mkdir()
    config = RunConfig(data="cells")
    assert (config.data, config.data_as_typed) == (str(tmp_path / "cells"), "cells")
    recorded = json.loads(json.dumps(config.to_dict()))
    # Read back in another directory: both kept, the dataset named from there too.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = RunConfig.from_dict(recorded, source="config.json")
    assert again == config
    assert data_path(again) == tmp_path / "cells"
    # A new --data over a recorded config replaces both, relative or absolute.
    over = RunConfig.from_dict({**recorded, "data": "other"}, source="config.json")
    assert (over.data, over.data_as_typed) == (str(elsewhere / "other"), "other")
    over = RunConfig.from_dict({**recorded, "data": "/srv/x/"}, source="config.json")
    assert (over.data, over.data_as_typed) == ("/srv/x", "/srv/x/")
    # evaluate and predict set --data on the checkpoint's config, then validate it.
    again.data = "../cells"
    again.validate()
    assert (again.data, again.data_as_typed) == (str(tmp_path / "cells"), "../cells")
    # No data: the generated dataset, nothing recorded.
    assert RunConfig().data_as_typed is None and data_path(RunConfig()) is None


def test_a_recorded_data_folder_that_is_missing_names_both_paths_and_suggests_data(
    tmp_path, monkeypatch
):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    recorded = RunConfig(data="cells").to_dict()  # configured in a/, where cells is missing
    (tmp_path / "b" / "cells").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "b")
    config = RunConfig.from_dict(recorded, source="config.json")
    with given_as(COMMAND_LINE), pytest.raises(DataError) as e:
        data_path(config)
    assert str(e.value) == (
        f"{tmp_path / 'a' / 'cells'}: data folder not found; the run recorded it absolute "
        "from --data 'cells', typed in another directory. From here 'cells' is "
        f"{tmp_path / 'b' / 'cells'}: pass --data cells to use it, or --data naming "
        "where the dataset is now"
    )
    with pytest.raises(DataError) as e:  # from Python (segkit.resume(..., data=...)): keywords
        data_path(config)
    assert str(e.value).endswith(
        "recorded it absolute from data='cells', typed in another directory. From here 'cells' "
        f"is {tmp_path / 'b' / 'cells'}: pass data='cells' to use it, or data naming where the "
        "dataset is now"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"from here it would be .*/cells, not there either\); "):
        data_path(RunConfig.from_dict(recorded, source="config.json"))
    # Typed here (a new run, or a record read where it was made): the dataset plugin
    # reports a missing folder with its own layout advice.
    assert data_path(RunConfig(data="nope")) == tmp_path / "nope"


def test_the_run_command_suggests_data_for_a_config_json_from_elsewhere(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    recorded = {**RunConfig(data="cells", dataset="folder").to_dict(), "resolved": {}}
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    monkeypatch.chdir(tmp_path)
    err = _cli_error(capsys, ["run", "--config", "config.json", "--out", str(tmp_path / "r")])
    assert "a/cells: data folder not found; the run recorded it absolute from --data " in err
    assert err.endswith("pass --data naming where the dataset is now")


# ----------------------------------------------------------------------- threads


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (2, 2), ("2", 2), (" 3 ", 3)])
def test_threads_are_auto_or_a_number(value, expected):
    assert RunConfig(threads=value).threads == expected


@pytest.mark.parametrize("value", [0, -1, "many", 1.5, True])
def test_bad_threads_name_the_flag(value):
    with given_as(COMMAND_LINE), pytest.raises(ConfigError, match=r"^--threads .*: expected"):
        RunConfig(threads=value)
    with pytest.raises(ConfigError, match=r"^threads=.*: expected"):
        RunConfig(threads=value)


def test_threads_flag_reaches_the_config():
    assert _settings(["--threads", "1"]) == {"threads": "1"}
    assert RunConfig.from_dict(_settings(["--threads", "1"]), source="command line").threads == 1


# ----------------------------------------------------------------------- study files


def test_a_study_file_in_yaml_reads_as_its_toml_does(tmp_path):
    from segkit.reports.study import read_study

    (tmp_path / "s.toml").write_text("[base]\nepochs = 2\n[axes]\nseed = [0, 1]\n")
    (tmp_path / "s.yaml").write_text("base:\n  epochs: 2\naxes:\n  seed: [0, 1]\n")
    toml, yaml = read_study(tmp_path / "s.toml"), read_study(tmp_path / "s.yaml")
    assert [(r.name, r.settings) for r in yaml.runs] == [(r.name, r.settings) for r in toml.runs]
    (tmp_path / "s.json").write_text('{"base": {"epochs": 2}, "axes": {"seed": [0, 1]}}')
    js = read_study(tmp_path / "s.json")
    assert [r.settings for r in js.runs] == [r.settings for r in toml.runs]
    # The copy kept in the study folder: study.json is the study's state, so not JSON's.
    names = (toml.copy_file.name, yaml.copy_file.name, js.copy_file.name)
    assert names == ("study.toml", "study.yaml", "study-file.json")
    (tmp_path / "bad.yml").write_text("axes:\n  epochs: [2, 0]\n")
    with pytest.raises(ConfigError, match=r"bad.yml: run epochs0: key 'epochs' = 0: expected"):
        read_study(tmp_path / "bad.yml")
    with pytest.raises(ConfigError, match=r"nope.yaml: study file not found"):
        read_study(tmp_path / "nope.yaml")


def test_settings_recorded_before_last_batch_existed_keep_the_last_batch() -> None:
    """A run recorded before --last-batch trained every partial last batch: its
    config.json (it has ``resolved``) or checkpoint config (every field segkit records)
    reads as ``keep``, so it resumes and trains again as it did. A user's file, and a
    recording that names the rule, get what they say (the default: drop)."""
    old = RunConfig(epochs=2).to_dict()
    del old["last_batch"]
    assert RunConfig.from_dict(old).last_batch == "keep"  # a checkpoint's config
    assert RunConfig.from_dict({"epochs": 2, "resolved": {}}).last_batch == "keep"
    assert RunConfig.from_dict({"epochs": 2}).last_batch == "drop"  # a user's file
    assert RunConfig.from_dict(RunConfig(epochs=2).to_dict()).last_batch == "drop"
    assert RunConfig.from_dict(RunConfig(last_batch="keep").to_dict()).last_batch == "keep"


def test_cuda_graphs_and_last_batch_flags() -> None:
    assert _settings(["--cuda-graphs", "on", "--last-batch", "keep"]) == {
        "cuda_graphs": "on",
        "last_batch": "keep",
    }
    config = RunConfig()
    assert (config.cuda_graphs, config.last_batch) == ("auto", "drop")
    with pytest.raises(SystemExit):  # argparse names the choices
        build_parser().parse_args(["run", "--cuda-graphs", "yes"])
    with pytest.raises(ConfigError, match="last_batch"):
        RunConfig.from_dict({"last_batch": "pad"})


# ----------------------------------------------------------------------- every error at once


def test_every_mistake_of_a_file_and_its_flags_is_reported_at_once(tmp_path, capsys):
    c = tmp_path / "c.toml"
    c.write_text('epochs = 0\nbatch_size = "x"\nlr_gama = 0.9\nmax_time = 20\n')
    err = _cli_error(capsys, ["run", "--config", str(c), "--image-size", "0", "--lr", "-1"])
    lines = err.splitlines()
    assert lines[0] == "segkit: error: 6 settings to fix:"
    assert lines[1].startswith(
        f"  - {c}: unknown setting(s) 'lr_gama' (did you mean 'lr_gamma'?); the settings are"
    )
    assert sorted(lines[2:]) == sorted(
        [
            f"  - {c}: key 'batch_size' = 'x': expected an integer",
            f"  - {c}: key 'max_time' = 20: expected a duration with its unit, as a string: "
            '"20m", "90s", "1h30m" or "1.5h"',
            f"  - {c}: key 'epochs' = 0: expected a positive integer",
            "  - --image-size 0: expected a positive integer",
            "  - --lr -1.0: expected a positive learning rate",
        ]
    )


def test_a_check_of_two_settings_waits_for_the_other_one_to_be_good():
    # warmup_epochs is compared with epochs only once epochs is a good value itself.
    with given_as(COMMAND_LINE), pytest.raises(ConfigError) as e:
        RunConfig(epochs=0, warmup_epochs=3, lr=0)
    assert str(e.value) == (
        "2 settings to fix:\n  - --epochs 0: expected a positive integer\n"
        "  - --lr 0.0: expected a positive learning rate"
    )
    with pytest.raises(
        ConfigError, match=r"^epochs='3': expected an integer, not a string: epochs=3$"
    ):
        RunConfig(epochs="3", warmup_epochs=5)


def test_a_misspelt_option_in_a_files_table_names_the_file_and_the_table(tmp_path, capsys):
    c = tmp_path / "c.yaml"
    c.write_text("epochs: 0\nloss: bce_dice\nmodel_options:\n  initt: kaiming\n")
    err = _cli_error(capsys, ["run", "--config", str(c), "--loss-opt", "smoth=1"])
    assert err.splitlines()[1:] == [
        f"  - {c}: key 'epochs' = 0: expected a positive integer",
        f"  - {c}: [model_options] key 'initt': model 'unet' has no option 'initt' (did you "
        "mean 'init'?); it takes: init",
        "  - --loss-opt smoth=1: loss 'bce_dice' has no option 'smoth' (did you mean "
        "'smooth'?); it takes: bce_weight, dice_weight, smooth, pos_weight",
    ]
    # A configuration read without the plugins (a run folder's, a study's) is not checked.
    assert RunConfig.from_dict({"model_options": {"initt": 1}}).model_options == {"initt": 1}


def test_a_files_dataset_option_without_a_dataset_key_is_named_with_its_table(
    tmp_path, tiny_pets, capsys
):
    """No `dataset` key: the options are checked against the layout the data folder is
    recognised as, and named as written (the table), a flag over the file as the flag."""
    c = tmp_path / "c.toml"
    c.write_text(f'data = "{tiny_pets}"\n[dataset_options]\nvalid_fracton = 0.3\n')
    err = _cli_error(capsys, ["run", "--config", str(c), "--dataset-opt", "targt=trimap"])
    assert err.splitlines()[1:] == [
        f"  - {c}: [dataset_options] key 'valid_fracton': dataset 'oxford_pet' has no option "
        "'valid_fracton' (did you mean 'valid_fraction'?); it takes: valid_fraction, "
        "split_seed, target",
        "  - --dataset-opt targt=\"trimap\": dataset 'oxford_pet' has no option 'targt' (did "
        "you mean 'target'?); it takes: valid_fraction, split_seed, target",
    ]
    # A folder no layout recognises is left to building the dataset, which says so.
    settings = {"data": str(tmp_path), "dataset_options": {"x": 1}}
    assert RunConfig.from_dict(settings, check_options=True).dataset_options == {"x": 1}


def test_a_misspelt_option_is_an_unknown_setting_as_a_misspelt_key_is(tmp_path):
    # An option table's unknown key is a typo like a field's: UnknownSettingError (also a
    # TypeError), with its close match; a bad value alone stays a plain ConfigError.
    with pytest.raises(UnknownSettingError) as e:
        RunConfig.from_dict({"model_options": {"initt": 1}}, source=PYTHON, check_options=True)
    assert isinstance(e.value, TypeError)
    assert "model 'unet' has no option 'initt' (did you mean 'init'?)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"epochs": 0}, source=PYTHON, check_options=True)
    assert not isinstance(e.value, UnknownSettingError)
