"""A dataset plugin's own bug in samples() (a KeyError for a split it lacks) stops a run
with a message naming the plugin, the call and the contract, not a bare traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import segkit
from segkit.contracts import Sample
from segkit.data.check import check_dataset
from segkit.data.prepare import prepare_training
from segkit.errors import PluginContractError


class TrainOnly:
    """Lists its train split only: samples('valid') is a KeyError."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.mask_spec = segkit.MaskSpec(background=0, allowed=(0, 1))

    def samples(self, split: str) -> list[Sample]:
        ids = {"train": ["a", "b"]}[split]
        return [Sample(i, self.root / f"{i}.png", self.root / f"{i}_mask.png") for i in ids]


@pytest.fixture
def train_only():
    segkit.register_plugin("datasets", "train_only", TrainOnly)
    yield
    segkit.unregister_plugin("datasets", "train_only")


def test_a_run_names_the_dataset_plugin_and_the_call(tmp_path: Path, train_only) -> None:
    with pytest.raises(
        PluginContractError,
        match=r"^dataset 'train_only' registered in this process raised KeyError: 'valid' in "
        r"samples\('valid'\); a dataset's samples\(split\) returns the list of "
        r"segkit.contracts.Sample of each of train, valid, test .*Run "
        r"segkit.testing.check_dataset\('train_only', root=...\)",
    ) as info:
        prepare_training(
            TrainOnly(tmp_path), name="train_only", skip_bad_samples=False, batch_size=2
        )
    assert isinstance(info.value.__cause__, KeyError)  # the plugin's traceback is kept


def test_segkit_data_check_says_the_same(tmp_path: Path, train_only) -> None:
    with pytest.raises(PluginContractError, match=r"dataset 'train_only' .* KeyError"):
        check_dataset(TrainOnly(tmp_path), name="train_only")


class BrokenSplit:
    """The shapes set, with samples() of one split (option ``broken``) a KeyError."""

    def __init__(self, root: Path | str, broken: str = "test") -> None:
        from segkit.testing import ShapesDataset

        self.shapes = ShapesDataset(root)
        self.root, self.mask_spec, self.broken = self.shapes.root, self.shapes.mask_spec, broken

    def samples(self, split: str) -> list[Sample]:
        if split == self.broken:
            raise KeyError(split)
        return self.shapes.samples(split)


@pytest.fixture
def broken_split():
    segkit.register_plugin("datasets", "broken_split", BrokenSplit)
    yield
    segkit.unregister_plugin("datasets", "broken_split")


def said(split: str) -> str:
    """The start of the message of a KeyError in samples(split) of 'broken_split'."""
    return (
        f"segkit: error: dataset 'broken_split' registered in this process raised KeyError: "
        f"'{split}' in samples('{split}'); a dataset's samples(split) returns the list of "
        "segkit.contracts.Sample"
    )


@pytest.mark.parametrize("split", ["train", "test"])
def test_segkit_preview_names_the_dataset_plugin(
    shapes_root: Path, tmp_path: Path, broken_split, capsys, split: str
) -> None:
    from segkit.cli import main

    argv = ["preview", "--data", str(shapes_root), "--dataset", "broken_split", "--n", "2"]
    argv += ["--dataset-opt", f"broken={split}", "--split", split]
    assert main([*argv, "--out", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err.startswith(said(split))
    assert not (tmp_path / "p.png").exists()


def test_segkit_plan_names_the_dataset_plugin(shapes_root: Path, broken_split, capsys) -> None:
    from segkit.cli import main

    argv = ["plan", str(shapes_root), "--dataset", "broken_split", "--dataset-opt", "broken=valid"]
    assert main([*argv, "-q"]) == 2
    assert said("valid") in capsys.readouterr().err
    # Planning from a data check's report made earlier lists the train split itself.
    from segkit.config import RunConfig
    from segkit.plan import make_plan
    from segkit.testing import ShapesDataset

    report = check_dataset(ShapesDataset(shapes_root), progress=False)
    base = RunConfig(
        data=str(shapes_root),
        dataset="broken_split",
        dataset_options={"broken": "train"},
        device="cpu",
    )
    with pytest.raises(PluginContractError, match=r"raised KeyError: 'train' in samples"):
        make_plan(base, epochs=1, report=report)


@pytest.mark.parametrize("through_predictor", [False, True])
def test_segkit_evaluate_names_the_dataset_plugin(
    shapes_root: Path, tmp_path: Path, broken_split, through_predictor: bool
) -> None:
    from helpers import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "best.pt")
    options = {"num_workers": 0, "device": "cpu", "batch_size": 2}
    if through_predictor:
        options["mode"] = "whole"
    with pytest.raises(
        PluginContractError,
        match=r"^dataset 'broken_split' registered in this process raised KeyError: 'test' in "
        r"samples\('test'\)",
    ) as info:
        segkit.evaluate(ckpt, "test", data=str(shapes_root), dataset="broken_split", **options)
    assert isinstance(info.value.__cause__, KeyError)


def test_segkit_evaluate_scores_a_split_a_plugin_lists_beside_one_it_cannot(
    shapes_root: Path, tmp_path: Path, broken_split, capsys
) -> None:
    # The split line after the scores counts each split; the one the plugin cannot list
    # counts 0 there instead of stopping evaluate after it scored.
    from helpers import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "best.pt")
    result = segkit.evaluate(
        ckpt,
        "test",
        data=str(shapes_root),
        dataset="broken_split",
        dataset_options={"broken": "valid"},
        num_workers=0,
        device="cpu",
        batch_size=2,
    )
    assert result.metrics["dice"] >= 0 and result.split_sizes["valid"] == 0
