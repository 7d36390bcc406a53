"""The public API as a notebook or script uses it: keyword names as users of the field's
libraries type them, plugins registered in-process, arrays as PIL gives them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import segkit
from segkit import build
from segkit.contracts import Sample
from segkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DuplicatePluginError,
    PluginLoadError,
    PluginNotFoundError,
)


@pytest.fixture
def built(monkeypatch):
    """What segkit.create_model passes to the build path (no model is built)."""
    calls: list[tuple] = []
    monkeypatch.setattr(
        build, "create_model", lambda name, i, o, **options: calls.append((name, i, o, options))
    )
    return calls


def test_classes_is_out_channels_as_smp_names_it(built):
    segkit.create_model("unet", classes=3)
    segkit.create_model("unet", in_channels=1, classes=2, encoder="x")
    segkit.create_model("unet", out_channels=3, classes=3)
    segkit.create_model("unet", 3, 4)
    segkit.create_model("unet")
    assert built == [
        ("unet", 3, 3, {}),
        ("unet", 1, 2, {"encoder": "x"}),
        ("unet", 3, 3, {}),
        ("unet", 3, 4, {}),
        ("unet", 3, 1, {}),  # binary by default
    ]


def test_classes_and_out_channels_that_disagree_name_both(built):
    with pytest.raises(
        ConfigError, match=r"create_model\('unet'\): classes=3 and out_channels=2 disagree"
    ):
        segkit.create_model("unet", out_channels=2, classes=3)
    assert built == []


# ------------------------------------------------------- plugins registered in-process


@pytest.fixture
def local_plugins(monkeypatch):
    """The plugins registered in this process, emptied for the test and after it."""
    from segkit import registry

    monkeypatch.setattr(registry, "_LOCAL", {})
    monkeypatch.setattr(registry, "_default", None)
    return registry


def tiny_net(in_channels=3, out_channels=1, width=4):
    return torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)


def test_a_registered_model_is_built_by_name_listed_and_forgotten(local_plugins):
    decorated = segkit.register_plugin("models", "tiny_net")(tiny_net)
    assert decorated is tiny_net
    assert segkit.list_plugins("models") == sorted([*segkit.list_plugins("models")])
    assert "tiny_net" in segkit.list_plugins("models")
    assert segkit.get_plugin("models", "tiny_net") is tiny_net
    model = segkit.create_model("tiny_net", in_channels=1, classes=3, width=8)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 3, 16, 16)
    info = local_plugins.default_registry().info("models", "tiny_net")
    assert info.distribution == local_plugins.IN_PROCESS
    assert info.label == "model 'tiny_net' registered in this process"
    segkit.unregister_plugin("models", "tiny_net")
    assert "tiny_net" not in segkit.list_plugins("models")
    with pytest.raises(PluginNotFoundError, match="no model named 'tiny_net'"):
        segkit.create_model("tiny_net")
    with pytest.raises(PluginNotFoundError, match=r"no model of that name .* \(registered: none"):
        segkit.unregister_plugin("models", "tiny_net")


def test_registering_a_name_again_replaces_it_as_a_notebook_cell_run_twice(local_plugins):
    segkit.register_plugin("losses", "l1", lambda: "first")
    segkit.register_plugin("losses", "l1", lambda: "second")
    assert segkit.create_loss("l1") == "second"
    assert segkit.list_plugins("losses").count("l1") == 1


def test_a_factory_off_its_contract_is_refused_when_registered(local_plugins):
    with pytest.raises(
        PluginLoadError,
        match=r"register_plugin\('models', 'bad'\): the factory does not accept 'in_channels'"
        r".*requires 'x'.*contract is factory\(in_channels=3, out_channels=1",
    ):
        segkit.register_plugin("models", "bad", lambda x: x)
    with pytest.raises(PluginLoadError, match="expected a callable factory or class, got int"):
        segkit.register_plugin("losses", "bad", 3)
    with pytest.raises(PluginLoadError, match="the name must be a non-empty string"):
        segkit.register_plugin("losses", " l1", lambda: None)
    with pytest.raises(PluginNotFoundError, match="unknown plugin kind 'model'; did you mean"):
        segkit.register_plugin("model", "tiny_net", tiny_net)
    assert "bad" not in segkit.list_plugins("models")


def test_an_installed_name_is_not_taken_over(local_plugins):
    with pytest.raises(
        DuplicatePluginError,
        match=r"register_plugin\('models', 'unet'\): the name is taken by the installed model "
        r"'unet' from distribution 'segkit'.*register yours under another name",
    ):
        segkit.register_plugin("models", "unet", tiny_net)
    assert segkit.get_plugin("models", "unet") is not tiny_net


def listed(root: Path) -> dict[str, list[list[str]]]:
    """The shapes set's files as ``Listed`` takes them: paths relative to ``root``."""
    stems = [f"shape_{i:02d}" for i in range(16)]
    pairs = [[f"images/{s}.jpg", f"annotations/trimaps/{s}.png"] for s in stems]
    assert all((root / image).is_file() and (root / mask).is_file() for image, mask in pairs)
    return {"train": pairs[:10], "valid": pairs[10:12], "test": pairs[12:]}


def test_a_registered_dataset_of_listed_files_passes_the_conformance_kit(
    local_plugins, shapes_root
):
    from segkit.testing import check_dataset

    segkit.register_plugin("datasets", "listed", Listed)
    check_dataset("listed", root=shapes_root, options=listed(shapes_root))
    dataset = segkit.create_dataset("listed", shapes_root, **listed(shapes_root))
    assert [s.id for s in dataset.samples("valid")] == ["shape_10", "shape_11"]
    assert dataset.samples("test")[0].image == shapes_root / "images/shape_12.jpg"


class Listed:
    """The API page's dataset of listed files (docs/reference/api.md), with the mask
    values of the shapes set's trimaps (1 inside the L, 2 outside)."""

    def __init__(self, root, train=(), valid=(), test=()):
        if root is None or not Path(root).is_dir():
            raise DataError(
                f"{root}: data folder not found; pass data=, the folder the lists are in"
            )
        self.root = Path(root)
        self.mask_spec = segkit.MaskSpec(background=2, allowed=(1, 2))
        self.splits = {"train": train, "valid": valid, "test": test}

    def samples(self, split):
        if split not in self.splits:
            raise ConfigError(f"unknown split {split!r}: expected train, valid or test")
        return [
            Sample(Path(image).stem, self.root / image, self.root / mask)
            for image, mask in self.splits[split]
        ]


@pytest.mark.slow
def test_a_notebook_trains_resumes_reads_and_predicts_with_its_own_model_and_data(
    local_plugins, shapes_root, tmp_path
):
    segkit.register_plugin("models", "tiny_net", tiny_net)
    segkit.register_plugin("datasets", "listed", Listed)
    config = segkit.RunConfig(
        model="tiny_net",
        model_options={"width": 2},
        dataset="listed",
        data=str(shapes_root),
        dataset_options=listed(shapes_root),
        image_size=32,
        batch_size=4,
        epochs=1,
        num_workers=0,
        keep_last=True,
        out=str(tmp_path),
        name="notebook",
    )
    first = segkit.train(config, quiet=True)
    assert first.run_dir == tmp_path / "notebook" and first.epochs_run == 1
    recorded = json.loads((first.run_dir / "config.json").read_text())["resolved"]["plugins"]
    assert recorded["models"] == {"name": "tiny_net", "distribution": "<in-process>", "version": ""}
    assert recorded["datasets"]["distribution"] == "<in-process>"

    result = segkit.resume(first.run_dir, epochs=2, quiet=True)
    assert result.epochs_run == 2 and len(result.history) == 2
    # The test scores by name, and what summary.json's test_metrics records (RunResult.test).
    assert isinstance(result.test["dice"], float) and isinstance(result.test["definitions"], dict)
    run = segkit.read_run(first.run_dir)
    assert run.summary["test_dice"] == result.test["dice"]
    assert [row["epoch"] for row in run.history] == [1, 2]
    assert run.config.model == "tiny_net" and len(run.scores) == 4

    segkit.unregister_plugin("models", "tiny_net")
    with pytest.raises(
        CheckpointError,
        match=r"best.pt: trained with model 'tiny_net', which was registered in the training "
        r"process \(segkit.register_plugin\) and is not registered in this one; register it "
        r"again, segkit.register_plugin\('models', 'tiny_net', your_factory\)",
    ):
        segkit.Predictor(first.run_dir / "best.pt", device="cpu")
    segkit.register_plugin("models", "tiny_net", tiny_net)
    probs = segkit.Predictor(first.run_dir / "best.pt", device="cpu").predict(
        shapes_root / "images/shape_12.jpg"
    )
    assert probs.dtype == np.float32 and probs.min() >= 0 and probs.max() <= 1


def test_a_read_only_array_is_predicted_without_a_warning(recwarn):
    from segkit.inference.predictor import as_rgb

    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels.flags.writeable = False  # as np.asarray(PIL image) is
    rgb = as_rgb(pixels)
    assert rgb.flags.writeable and rgb.flags.c_contiguous
    writable = np.zeros((8, 8, 3), np.uint8)
    assert as_rgb(writable) is writable  # not copied where torch can take it as it is
    predictor = segkit.Predictor.from_model(tiny_net(), image_size=8)
    assert predictor.predict(pixels).shape == (8, 8)
    assert predictor.predict_batch([pixels, pixels[:, :4]])[1].shape == (8, 4)
    assert [str(w.message) for w in recwarn] == []


def test_resume_and_read_run_are_public():
    from segkit.reports.compare import read_run
    from segkit.training.engine import resume

    assert segkit.resume is resume
    assert {"resume", "read_run", "register_plugin", "unregister_plugin"} <= set(segkit.__all__)
    with pytest.raises(ConfigError, match="not a run folder"):
        segkit.read_run(Path(__file__).parent)
    assert read_run.__doc__


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: segkit.train(segkit.RunConfig(), quite=True),
            "segkit.train(quite=True): unknown keyword 'quite' (did you mean 'quiet'?); "
            "it takes config, quiet, rerun_of and the RunConfig fields, which help(segkit.RunConfig)"
            " lists",
        ),
        (
            lambda: segkit.train(data="pets", epoch=3),
            "segkit.train(epoch=3): unknown keyword 'epoch' (did you mean 'epochs'?)",
        ),
        (
            lambda: segkit.resume("runs/x", epoch=3),
            "segkit.resume(epoch=3): unknown keyword 'epoch' (did you mean 'epochs'?); "
            "it takes: run_dir, epochs, max_time, quiet, settings",
        ),
        (
            lambda: segkit.resume("runs/x", settings={"devce": "cpu"}),
            "settings=dict(devce='cpu'): unknown setting 'devce' (did you mean 'device'?); "
            "resume may change: epochs, max_time, data, device,",
        ),
        (
            lambda: segkit.Predictor("best.pt", mdoe="tile"),
            "segkit.Predictor(mdoe='tile'): unknown keyword 'mdoe' (did you mean 'mode'?); "
            "it takes: checkpoint, device, precision, num_workers, mode, tta,",
        ),
        (
            lambda: segkit.predict("best.pt", ["a.png"], "out", overlay=True),
            "segkit.predict(overlay=True): unknown keyword 'overlay' (did you mean 'overlays'?)",
        ),
        (
            lambda: segkit.evaluate("best.pt", batchsize=2),
            "segkit.evaluate(batchsize=2): unknown keyword 'batchsize' (did you mean "
            "'batch_size'?)",
        ),
        (
            lambda: segkit.export("best.pt", "m.onnx", dynamc=True),
            "segkit.export(dynamc=True): unknown keyword 'dynamc' (did you mean 'dynamic'?)",
        ),
        (
            lambda: segkit.open_trained("best.pt", devic="cpu"),
            "segkit.open_trained(devic='cpu'): unknown keyword 'devic' (did you mean "
            "'device'?); the overrides are RunConfig's fields, which help(segkit.RunConfig) "
            "lists",
        ),
        (
            lambda: segkit.lr_find(step=30),
            "segkit.lr_find(step=30): unknown keyword 'step' (did you mean 'steps'?)",
        ),
    ],
)
def test_a_typo_in_a_keyword_names_the_close_match_before_anything_is_opened(call, message):
    """Python's own TypeError names no close match; this one does, is a ConfigError (the CLI
    and `except segkit.ConfigError` take it) and a TypeError (`except TypeError` still
    does), and comes before any file is opened (none of these paths exists)."""
    with pytest.raises(segkit.UnknownSettingError) as caught:
        call()
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ConfigError)


def test_bad_options_name_the_keyword_written_not_a_flag(monkeypatch):
    from segkit.inference import predictor as predictor_mod

    opened = []
    monkeypatch.setattr(predictor_mod, "open_trained", lambda *a, **k: opened.append(a))
    with pytest.raises(ConfigError, match=r"^mode='tiles': expected one of auto, resize, tile"):
        segkit.Predictor("best.pt", mode="tiles")
    with pytest.raises(ConfigError, match=r"^threshold=2: expected a probability in \(0, 1\)"):
        segkit.predict("best.pt", ["a.png"], "out", threshold=2)
    with pytest.raises(
        ConfigError, match=r"^split='tests': expected one of auto, train, valid, test, all"
    ):
        segkit.evaluate("best.pt", split="tests")
    assert opened == []  # refused before the checkpoint is opened


def test_run_result_test_is_typed_as_what_it_holds():
    """``result.test["dice"]`` is a float, but the dict also holds ``definitions`` (a dict)
    and, for K classes, ``confusion`` (rows of counts): not a ``dict[str, float]``."""
    import typing
    from typing import Any

    from segkit.training.run_folder import RunResult

    assert typing.get_type_hints(RunResult)["test"] == dict[str, Any]
    assert "definitions" in RunResult.__doc__ and "confusion" in RunResult.__doc__


@pytest.fixture
def started(monkeypatch):
    """The configs segkit.train starts runs with (nothing is trained)."""
    from segkit.training import engine

    configs: list = []
    monkeypatch.setattr(engine, "_run", lambda config, *a, **k: configs.append(config) or config)
    return configs


def test_train_takes_the_settings_as_keywords_over_a_config(started, tmp_path, monkeypatch):
    """A notebook's first cell: ``segkit.train(data=..., epochs=2)``, no RunConfig needed;
    keywords given with a config replace its fields, the config itself left as it was."""
    monkeypatch.chdir(tmp_path)
    segkit.train(data="pets", image_size=32, epochs=2)
    config = segkit.RunConfig(data="cells", recipe="type1", epochs=50)
    segkit.train(config, data="pets", epochs=3, name="again")
    first, second = started
    assert (first.data, first.data_as_typed, first.image_size, first.epochs) == (
        str(tmp_path / "pets"), "pets", 32, 2,
    )  # fmt: skip
    # data's as-typed record follows the new data, not the config's
    assert (second.data, second.data_as_typed, second.epochs, second.name) == (
        str(tmp_path / "pets"), "pets", 3, "again",
    )  # fmt: skip
    assert second.recipe == "type1" and config.epochs == 50 and config.data_as_typed == "cells"
    assert segkit.train(config) is config


def test_train_refuses_a_bad_keyword_value_or_a_config_that_is_not_one(started):
    with pytest.raises(
        ConfigError, match=r"^lr='1e-3': expected a number, not a string: lr=0.001$"
    ):
        segkit.train(lr="1e-3")
    with pytest.raises(
        ConfigError, match=r"^epochs='3': expected an integer, not a string: epochs=3"
    ):
        segkit.RunConfig(epochs="3")
    with pytest.raises(ConfigError, match=r"^image_size='6x': expected an integer$"):
        segkit.RunConfig(image_size="6x")
    with pytest.raises(ConfigError) as e:
        segkit.train("run.yaml")
    assert str(e.value) == (
        "segkit.train(config=str): expected a segkit.RunConfig; pass the settings as keywords, "
        "segkit.train(epochs=2, ...), or segkit.RunConfig.from_file(path) for a configuration file"
    )
    assert started == []


def test_what_a_notebook_cell_shows_is_one_line_of_headlines(tiny_pets):
    """The default reprs printed every field: the nested test dicts, every history row,
    the whole nn.Module. A cell now shows the headline and where the rest is."""
    from segkit.reports.compare import Run
    from segkit.training.run_folder import RunResult

    history = [{"epoch": e, "valid_dice": 0.5} for e in (1, 2, 3)]
    test = {"dice": 0.48524973, "iou": 0.3336, "loss": 2.6, "images": 12.0, "definitions": {}}
    result = RunResult(Path("runs/exp"), test, 2, 0.449, 4.5, 7.1, history=history, epochs_run=3)
    result.best_value = 0.44937
    assert repr(result) == (
        "RunResult(run_dir=PosixPath('runs/exp'), test={'dice': 0.4852, 'iou': 0.3336}, "
        "best_epoch=2, monitor='valid_dice', best_value=0.4494, epochs_run=3, "
        "stopped_by='epochs', history=<3 epochs>)"
    )
    summary = {"test_miou": 0.61234, "test_mdice": 0.7, "best_epoch": 3, "stopped_by": "patience"}
    run = Run(Path("runs/k3"), segkit.RunConfig(), {}, summary, history, [("a", 0.5, 0.4)])
    assert repr(run) == (
        "Run(path=PosixPath('runs/k3'), model='unet', test={'miou': 0.6123, "
        "'mdice': 0.7}, best_epoch=3, stopped_by='patience', history=<3 epochs>, "
        "scores=<1 test image>)"
    )
    predictor = segkit.Predictor.from_model(torch.nn.Conv2d(3, 1, 1), image_size=32)
    assert repr(predictor) == (
        "Predictor(checkpoint=None, model='model', task='binary', image_size=32, mode='auto', "
        "tta='none', tile=32, device='cpu')"
    )
    assert repr(predictor.trained) == (
        "Trained(path=None, model='model', task='binary', image_size=32, device='cpu', "
        "precision='fp32')"
    )
    report = segkit.check_data(tiny_pets)
    assert repr(report) == (
        f"Report(dataset='oxford_pet', root={str(tiny_pets)!r}, splits=<train 13, valid 2, "
        "test 5>, ok=True, problems=<0 errors, 0 warnings>; print(report) shows it all)"
    )
    assert str(report).startswith(f"dataset oxford_pet ({tiny_pets})\nsplit  images")


def test_run_interrupted_is_public_and_names_the_folder_to_resume():
    """A notebook catches ``segkit.RunInterrupted`` and resumes ``e.run_dir`` (the engine
    sets it: tests/test_run_lifecycle.py); pickled, as an exception crossing processes is,
    it keeps its message."""
    import pickle

    from segkit.errors import RunInterrupted, SegkitError

    assert segkit.RunInterrupted is RunInterrupted and "RunInterrupted" in segkit.__all__
    error = RunInterrupted("interrupted during epoch 2", run_dir=Path("runs/x"))
    assert isinstance(error, SegkitError) and error.run_dir == Path("runs/x")
    assert str(pickle.loads(pickle.dumps(error))) == "interrupted during epoch 2"
    assert RunInterrupted("interrupted").run_dir is None


def test_lr_find_takes_the_settings_as_keywords_and_shows_one_line(tmp_path, monkeypatch):
    """``segkit.lr_find(data=..., image_size=64, steps=60)`` as ``segkit.train`` takes them
    (over a config's fields when one is given); ``plot`` draws the sweep into a file, and
    the result shows the suggestion, range, points and plot, not the two lists."""
    from types import SimpleNamespace

    from segkit.training import lr_sweep

    swept: list = []

    def sweep(config, sweep, **parts):
        swept.append((config, sweep))
        lrs = [sweep.lr(i) for i in range(sweep.steps)]
        return lr_sweep.LRFind(lrs, [1.0 / (i + 1) for i in range(sweep.steps)], lrs[3])

    monkeypatch.setattr(lr_sweep, "lr_find", sweep)
    monkeypatch.chdir(tmp_path)
    config = segkit.RunConfig(model="unet", epochs=50)
    parts = SimpleNamespace(config=config)  # what build.build_training gives (its .config)
    result = segkit.lr_find(
        config, image_size=32, data="pets", steps=40, end_lr=0.1, plot="lr.png",
        training=parts, runtime=object(),
    )  # fmt: skip
    (given, settings), = swept  # fmt: skip
    assert (given.image_size, given.data_as_typed, given.epochs) == (32, "pets", 50)
    assert config.image_size != 32  # the config itself is left as it was
    assert (settings.steps, settings.end_lr, settings.start_lr) == (40, 0.1, 1e-7)
    assert result.plot == Path("lr.png") and (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    assert repr(result) == (
        "LRFind(suggestion=2.89e-07, range=(1e-07, 0.1), points=40, plot=PosixPath('lr.png'))"
    )
    lrs, losses, suggestion = result  # unpacks as before
    assert len(lrs) == len(losses) == 40 and suggestion == result.suggestion
    with pytest.raises(ConfigError, match=r"^plot='lr.txt': expected a plot file ending in"):
        segkit.lr_find(plot="lr.txt", training=parts, runtime=object())
    with pytest.raises(ConfigError, match=r"segkit.lr_find\(image_size=64, \.\.\.\)"):
        segkit.lr_find("run.yaml")
    assert len(swept) == 1  # refused before any sweep


def test_a_task_shows_what_it_is():
    from segkit.task import Task

    assert repr(Task()) == "Task(binary)"
    pets = Task(("background", "cat", "dog"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), 255)
    assert repr(pets) == "Task(3 classes: background, cat, dog; ignore 255)"
    voc = Task(tuple(f"c{i}" for i in range(21)), ((0, 0, 0),) * 21)
    assert repr(voc) == "Task(21 classes: c0, c1, c2, c3, c4, c5, c6, ..., c20)"
    same = Task(("background", "cat", "dog"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), 255)
    assert pets == same and hash(pets) == hash(same) and pets != Task() and Task() == Task()


def test_an_interrupt_while_segkit_train_loads_torch_is_one_line(monkeypatch):
    """``segkit.train`` imports the engine (torch) on first use: a notebook interrupted
    there gets a RunInterrupted saying nothing was done, not an import's traceback."""
    import sys

    import segkit.training

    class Interrupted:
        def find_spec(self, name, path=None, target=None):
            if name == "segkit.training.engine":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "segkit.training.engine", raising=False)
    monkeypatch.delattr(segkit.training, "engine", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    with pytest.raises(segkit.RunInterrupted) as e:
        segkit.train  # noqa: B018 -- the attribute is what imports
    assert str(e.value) == (
        "interrupted while loading segkit.train (torch and the training code): nothing was "
        "trained or written; run the same call again"
    )
