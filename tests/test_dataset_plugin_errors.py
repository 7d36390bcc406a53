"""A dataset plugin's own bug in samples() (a KeyError for a split it lacks) stops a run
with a message naming the plugin, the call and the contract, not a bare traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import segkit
from segkit.contracts import Sample
from segkit.data.check import check_dataset
from segkit.data.prepare import ready_for_training
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
        ready_for_training(
            TrainOnly(tmp_path), name="train_only", skip_bad_samples=False, batch_size=2
        )
    assert isinstance(info.value.__cause__, KeyError)  # the plugin's traceback is kept


def test_segkit_data_check_says_the_same(tmp_path: Path, train_only) -> None:
    with pytest.raises(PluginContractError, match=r"dataset 'train_only' .* KeyError"):
        check_dataset(TrainOnly(tmp_path), name="train_only")
