"""``segkit evaluate`` on data other than the checkpoint's: the checkpoint's dataset
options stay with its own dataset plugin, and data labelled with other classes than the
model's is reported as such (not as a plugin's option error or a bare mask-value error)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from helpers import save_checkpoint

import segkit
from segkit.errors import ConfigError, DataError, MaskValuesError
from segkit.inference.trained import open_checkpoint
from segkit.task import Task
from segkit.training import checkpoint as ckpt_io

COLLAR = Task(("background", "pet", "collar"), ((0, 0, 0), (255, 0, 0), (0, 0, 255)))
FAST = {"num_workers": 0, "device": "cpu", "batch_size": 2}


@pytest.fixture(scope="module")
def collar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 synthetic pets wearing collars (3 classes), in the Oxford-IIIT Pet layout."""
    from segkit_datasets.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("collar"), count=4, seed=1, variant="collar")


def collar_checkpoint(path: Path) -> Path:
    """A 3-class checkpoint of a run on the generated collar set, as `segkit run
    --dataset-opt variant=collar` records it: dataset_options {"variant": "collar"}."""
    save_checkpoint(path, task=COLLAR)
    state = ckpt_io.load(path, map_location="cpu")
    state["config"]["dataset_options"] = {"variant": "collar"}
    ckpt_io.save_atomic(state, path)
    return path


def test_dataset_options_stay_with_their_dataset(tiny_pets: Path, tmp_path: Path) -> None:
    ckpt = collar_checkpoint(tmp_path / "collar.pt")
    # --data recognised as another layout (oxford_pet): the synthetic plugin's options go.
    config, _ = open_checkpoint(ckpt, data=str(tiny_pets))
    assert config.resolved_dataset() == "oxford_pet" and config.dataset_options == {}
    # Given with it, they stay; without another dataset, the checkpoint's stay.
    config, _ = open_checkpoint(ckpt, data=str(tiny_pets), dataset_options={"target": "trimap"})
    assert config.dataset_options == {"target": "trimap"}
    assert open_checkpoint(ckpt, device="cpu")[0].dataset_options == {"variant": "collar"}


def test_dataset_options_stay_for_another_folder_of_the_same_layout(
    tiny_pets: Path, collar_root: Path, tmp_path: Path
) -> None:
    ckpt = save_checkpoint(tmp_path / "best.pt")
    state = ckpt_io.load(ckpt, map_location="cpu")
    state["config"] |= {"data": str(tiny_pets), "dataset_options": {"valid_fraction": 0.3}}
    ckpt_io.save_atomic(state, ckpt)
    config, _ = open_checkpoint(ckpt, data=str(collar_root))
    assert config.dataset_options == {"valid_fraction": 0.3}


def test_a_k_class_model_on_binary_data_names_the_mismatch(tiny_pets: Path, tmp_path: Path) -> None:
    ckpt = collar_checkpoint(tmp_path / "collar.pt")
    with pytest.raises(
        ConfigError,
        match=r"collar.pt: the model predicts 3 classes \(background, pet, collar\), but "
        r"dataset 'oxford_pet' .* is binary",
    ):
        segkit.evaluate(ckpt, data=str(tiny_pets), **FAST)


def test_the_mismatch_names_the_dataset_the_model_was_trained_on(
    collar_root: Path, tmp_path: Path
) -> None:
    """A folder of the generated collar set is recognised as oxford_pet (binary) and the
    checkpoint's variant=collar goes; the error named only --dataset-opt target=..., which
    reads the pet border, not the collar. It now names the checkpoint's own dataset and
    options, and following it scores the folder."""
    ckpt = collar_checkpoint(tmp_path / "collar.pt")
    with pytest.raises(ConfigError) as caught:
        segkit.evaluate(ckpt, data=str(collar_root), **FAST)
    assert str(caught.value).endswith(
        "; the model was trained on dataset 'synthetic' with dataset_options={'variant': "
        "'collar'}: if the folder is of that kind, pass dataset='synthetic' and the "
        "dataset_options that chose its classes"  # from Python: the keywords
    )
    scores = segkit.evaluate(
        ckpt, data=str(collar_root), dataset="synthetic", dataset_options={"variant": "collar"},
        **FAST,
    )  # fmt: skip
    assert scores.task.classes == COLLAR.classes and "miou" in scores.metrics


def test_the_mismatch_suggests_only_the_options_that_change_how_data_is_read(
    collar_root: Path, tmp_path: Path
) -> None:
    """A run on the generated collar set records count=60 (and a seed): the hint passed
    them on, though they only chose what was generated (and count=60 on a 4-image folder
    is refused as another set). The synthetic plugin declares them generate_options: the
    hint names the options that change how a folder is read, and following it works."""
    from segkit.contracts import capability, contract_problems
    from segkit_datasets.synthetic import SyntheticPet

    assert capability("datasets", SyntheticPet, "generate_options") == ("count", "seed", "size")
    ckpt = collar_checkpoint(tmp_path / "collar.pt")
    state = ckpt_io.load(ckpt, map_location="cpu")
    state["config"]["dataset_options"] = {
        "count": 60, "seed": 3, "variant": "collar", "valid_fraction": 0.25,
    }  # fmt: skip
    ckpt_io.save_atomic(state, ckpt)
    with pytest.raises(ConfigError) as caught:
        segkit.evaluate(ckpt, data=str(collar_root), **FAST)
    assert str(caught.value).endswith(  # from Python: the keywords
        "; the model was trained on dataset 'synthetic' with dataset_options={'variant': "
        "'collar', 'valid_fraction': 0.25}: if the folder is of that kind, pass "
        "dataset='synthetic' and the dataset_options that chose its classes"
    )
    opts = {"variant": "collar", "valid_fraction": 0.25}
    scores = segkit.evaluate(
        ckpt, data=str(collar_root), dataset="synthetic", dataset_options=opts, **FAST
    )
    assert scores.task.classes == COLLAR.classes

    class Odd:
        generate_options = "count"  # a string, not a tuple of names

        def __init__(self, root=None): ...

    assert (
        "declares generate_options='count'; expected a tuple"
        in contract_problems("datasets", Odd)[0]
    )


def test_a_binary_model_on_data_with_more_classes_says_so(
    collar_root: Path, tmp_path: Path
) -> None:
    ckpt = save_checkpoint(tmp_path / "best.pt")
    with pytest.raises(DataError) as caught:
        segkit.evaluate(ckpt, data=str(collar_root), **FAST)
    message = str(caught.value)
    assert "values {4} found, masks of this dataset hold 1, 2, 3. The model predicts binary" in (
        message
    )
    assert f"dataset 'oxford_pet' reads {collar_root} as binary, but these masks hold" in message
    assert "labelled with other classes than the model's" in message
    with pytest.raises(DataError, match=r"labelled with other classes than the model's"):
        segkit.evaluate(ckpt, data=str(collar_root), mode="resize", **FAST)


@pytest.mark.slow  # DataLoader worker processes
@pytest.mark.parametrize("mode", [None, "resize"])
def test_other_classes_are_recognised_by_type_across_loader_workers(
    collar_root: Path, tmp_path: Path, mode: str | None
) -> None:
    """With worker processes (the run's loader) or threads (the predictor's reads), the
    mask reader's MaskValuesError reaches evaluate with its type and values."""
    ckpt = save_checkpoint(tmp_path / "best.pt")
    options = {**FAST, "num_workers": 2, **({"mode": mode} if mode else {})}
    with pytest.raises(MaskValuesError) as caught:
        segkit.evaluate(ckpt, data=str(collar_root), **options)
    assert caught.value.values == (4,)
    assert caught.value.path is not None and caught.value.path.endswith(".png")
    assert "labelled with other classes than the model's" in str(caught.value)
    assert "Traceback" not in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [pytest.param({"num_workers": 2}, marks=pytest.mark.slow), {"mode": "resize"}],
    ids=["options0", "options1"],
)  # num_workers 2: DataLoader worker processes (the slow tier's; 9 s when the first to start)
def test_rgb_masks_with_colours_outside_the_palette_are_told_as_other_colours(
    tmp_path: Path, options: dict
) -> None:
    """A 3-class model on RGB colour masks holding a colour its palette lacks: the same
    MaskValuesError, carrying the colours, with advice for colours (through the loader's
    worker processes, and through the predictor)."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "rgb"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background 0 0 0\npet 255 0 0\ncollar 0 0 255\n")
    for i in range(6):
        Image.fromarray(np.full((32, 32, 3), 40 + i, np.uint8)).save(root / "images" / f"m{i}.png")
        mask = np.zeros((32, 32, 3), np.uint8)
        mask[8:16] = (255, 0, 0)
        mask[16:] = (255, 255, 255)  # a void colour the palette lacks
        Image.fromarray(mask).save(root / "masks" / f"m{i}.png")
    ckpt = save_checkpoint(tmp_path / "best.pt", task=COLLAR)
    with pytest.raises(MaskValuesError) as caught:
        segkit.evaluate(ckpt, data=str(root), split="train", **{**FAST, **options})
    assert caught.value.colours == ((255, 255, 255),) and caught.value.values == ()
    message = str(caught.value)
    assert "colours (255, 255, 255) on 512 pixels are not in the dataset's palette" in message
    assert "but these masks hold colours outside its palette: the folder is likely labelled" in (
        message
    )
    assert "Traceback" not in message


def test_the_mask_values_error_pickles_whole_and_rebuilds_from_a_message() -> None:
    error = MaskValuesError("m.png: values {4} found, masks of this dataset hold 1", (4,), "m.png")
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), str(back), back.values, back.path, back.colours) == (
        MaskValuesError,
        str(error),
        (4,),
        "m.png",
        (),
    )
    error = MaskValuesError("m.png: colours ...", path="m.png", colours=((1, 2, 3),))
    assert pickle.loads(pickle.dumps(error)).colours == ((1, 2, 3),)
    # torch re-raises a worker's exception as type(message): the type survives that too.
    assert isinstance(MaskValuesError("Caught MaskValuesError in worker"), DataError)


def _trained_on(ckpt: Path, data: Path | None, splits_of: Path | None) -> Path:
    """``ckpt`` recording, as a run's best.pt does since 2026-12-07, that it was trained on
    the folder ``data`` with the splits (and their images' fingerprints) of the folder
    ``splits_of`` (None: not recorded)."""
    from segkit import registry

    state = ckpt_io.load(ckpt, map_location="cpu")
    if splits_of is not None:
        dataset = registry.create("datasets", "oxford_pet", splits_of)
        state["splits"] = ckpt_io.split_record(dataset)
        state["fingerprints"] = ckpt_io.sample_fingerprints(dataset)
    if data is not None:
        state["data_root"] = str(data)
    ckpt_io.save_atomic(state, ckpt)
    return ckpt


def test_evaluate_scores_all_of_a_new_folder_and_the_test_split_of_the_runs_own(
    tiny_pets: Path, collar_root: Path, tmp_path: Path, capsys
) -> None:
    """A folder of new labelled images was scored on its test split alone (5 of 20) with
    no way to score the rest. `--split all` scores every image, and the default (`auto`)
    does so for a folder whose samples are not the run's recorded splits; the run's own
    data (the same samples, wherever it is) keeps the test split: its other images
    trained the model."""
    from segkit.cli import main

    fast = ["--device", "cpu", "--num-workers", "0", "--batch-size", "4"]
    new = _trained_on(save_checkpoint(tmp_path / "new.pt"), collar_root, collar_root)
    assert main(["evaluate", str(new), "--data", str(tiny_pets), *fast]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"segkit: {tiny_pets}: all 20 images scored (train 13, valid 2, test 5): its samples "
        "are not the ones the model was trained on; --split test scores its test split "
        "alone (5)\n"
    )
    assert captured.out.startswith("all dice ") and "(20 images, " in captured.out
    # Through the predictor as well; and a split given is scored as given.
    scores = segkit.evaluate(new, data=str(tiny_pets), mode="resize", **FAST)
    assert (scores.split, scores.metrics["images"]) == ("all", 20)
    assert segkit.evaluate(new, "test", data=str(tiny_pets), **FAST).metrics["images"] == 5

    own = _trained_on(save_checkpoint(tmp_path / "own.pt"), tmp_path / "moved", tiny_pets)
    assert main(["evaluate", str(own), "--data", str(tiny_pets), *fast]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"segkit: {tiny_pets}: the test split holds 5 images of its 20 (train 13, valid 2): "
        "the data the model was trained on (the same samples), whose other splits trained "
        "it; --split all scores all of them, --split train or --split valid the others\n"
    )
    assert "(5 images, " in captured.out
    assert main(["evaluate", str(own), "--data", str(tiny_pets), "--split", "all", *fast]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"segkit: {tiny_pets}: all 20 images scored (train 13, valid 2, test 5): the data the "
        "model was trained on, whose train and valid splits trained it: these scores flatter "
        "it; --split test scores its test split alone (5)\n"
        f"segkit: {tiny_pets}: 13 of 20 images were in this model's train split and 2 in its "
        "valid split: these scores flatter it; --split auto leaves them out\n"
    )
    assert "(20 images, " in captured.out


def test_evaluate_keeps_the_test_split_of_the_runs_folder_changed_or_of_unknown_data(
    tiny_pets: Path, collar_root: Path, tmp_path: Path, capsys
) -> None:
    """The folder the run trained on, with files added since (other samples, same
    folder), and a checkpoint that records no splits (older, or a dataset that lists no
    samples): the test split, and the line says why."""
    from segkit.cli import main

    fast = ["--device", "cpu", "--num-workers", "0", "--batch-size", "4"]
    grown = _trained_on(save_checkpoint(tmp_path / "grown.pt"), tiny_pets, collar_root)
    assert main(["evaluate", str(grown), "--data", str(tiny_pets), *fast]) == 0
    assert "(train 13, valid 2): the folder the model was trained on (its files changed " in (
        capsys.readouterr().err
    )
    old = save_checkpoint(tmp_path / "best.pt")
    assert main(["evaluate", str(old), "--data", str(tiny_pets), *fast]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"segkit: {tiny_pets}: the test split holds 5 images of its 20 (train 13, valid 2): "
        "the checkpoint records no split of its run to tell whether the model was trained "
        "on this folder; --split all scores all of them, --split train or --split valid the others\n"
    )
    assert "(5 images, " in captured.out
    scores = segkit.evaluate(old, "valid", data=str(tiny_pets), **FAST)
    assert scores.split_sizes == {"train": 13, "valid": 2, "test": 5}
    assert scores.split_note() == (
        f"{tiny_pets}: the valid split holds 2 images of its 20 (train 13, test 5); "
        "split='all' scores all of them, split='train' or split='test' the others"
    )


def test_a_run_records_its_splits_and_folder_in_best_pt(tiny_pets: Path, tmp_path: Path) -> None:
    """What evaluate's `auto` reads: the weights-only checkpoint keeps the training
    state's split record and data folder."""
    state = ckpt_io.load(save_checkpoint(tmp_path / "best.pt"), map_location="cpu")
    state |= {"epoch": 1, "best_valid_dice": 0.5, "best_epoch": 1, "splits": {"train": {}}}
    weights = ckpt_io.weights_state(state | {"data_root": str(tiny_pets)})
    assert (weights["splits"], weights["data_root"]) == ({"train": {}}, str(tiny_pets))
