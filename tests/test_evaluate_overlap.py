"""``segkit evaluate`` never silently scores a model's own training images: checkpoints
record each split's images' fingerprints (their files' bytes hashed), and ``split="auto"``
leaves out the images of a folder that trained the model, saying how many; a split asked
for is scored as asked, with the count of training images in it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import save_checkpoint, tiny

import segkit
from segkit.errors import DataError
from segkit.inference.evaluate import Overlap
from segkit.training import checkpoint as ckpt_io

FAST = {"num_workers": 0, "device": "cpu", "batch_size": 4}
CLI_FAST = ["--device", "cpu", "--num-workers", "0", "--batch-size", "4"]


def _trained_on(ckpt: Path, folder: Path, *, fingerprints: bool = True) -> Path:
    """``ckpt`` recording, as a run's best.pt does, that it was trained on ``folder``
    (its splits' digests and, unless not ``fingerprints`` as before 2026-12-07, their
    images' fingerprints)."""
    from segkit import registry

    dataset = registry.create("datasets", "oxford_pet", folder)
    state = ckpt_io.load(ckpt, map_location="cpu")
    state |= {"splits": ckpt_io.split_record(dataset), "data_root": str(folder)}
    state["config"]["data"] = str(folder)
    if fingerprints:
        state["fingerprints"] = ckpt_io.sample_fingerprints(dataset)
    ckpt_io.save_atomic(state, ckpt)
    return ckpt


def _new_folder(root: Path, seen: list, *, new: int = 8) -> Path:
    """``new`` generated pets (named as tiny_pets' are, other pictures) and copies of the
    samples ``seen`` renamed ``seen_<id>``, in the Oxford-IIIT Pet layout."""
    from segkit_datasets.synthetic import write_synthetic

    if new:
        write_synthetic(root, count=new, seed=99)
    else:
        (root / "annotations" / "trimaps").mkdir(parents=True)
        (root / "images").mkdir()
        (root / "annotations" / "test.txt").write_text("")
    lines = []
    for sample in seen:
        shutil.copy(sample.image, root / "images" / f"seen_{sample.id}.jpg")
        shutil.copy(sample.mask, root / "annotations" / "trimaps" / f"seen_{sample.id}.png")
        lines.append(f"seen_{sample.id} 1 1 1")
    with open(root / "annotations" / "trainval.txt", "a") as f:
        f.write("".join(f"{line}\n" for line in lines))
    return root


def test_a_run_takes_the_fingerprints_in_the_background_and_sizes_them_before(
    tiny_pets_dataset,
) -> None:
    """The run starts hashing when its parts are built and waits for it at the first
    checkpoint: the same tensors as taken in the calling thread; the file-size check
    counts them before they exist (8 bytes an image)."""
    taking = ckpt_io.Fingerprinting(tiny_pets_dataset)
    assert taking._thread.daemon  # a run stopped before its first checkpoint does not wait
    got, want = taking.result(), ckpt_io.sample_fingerprints(tiny_pets_dataset)
    assert got is not None and want is not None and got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert taking.result() is got  # waited once, kept

    class Unlisted:  # a dataset plugin without samples(): nothing recorded, no error
        pass

    assert ckpt_io.Fingerprinting(Unlisted()).result() is None


def test_fingerprints_are_the_images_bytes_not_their_names(
    tiny_pets: Path, tiny_pets_dataset, tmp_path: Path
) -> None:
    prints = ckpt_io.sample_fingerprints(tiny_pets_dataset)
    assert prints is not None
    assert {k: len(v) for k, v in prints.items()} == {"train": 13, "valid": 2, "test": 5}
    train = prints["train"]
    assert train.dtype == torch.int64 and torch.equal(train, train.sort().values)
    first = tiny_pets_dataset.samples("train")[0]
    # A copy under another name, in another folder: the same fingerprint.
    copy = Path(shutil.copy(first.image, tmp_path / "renamed.jpg"))
    assert ckpt_io.image_fingerprint(copy) in train.tolist()
    # Another picture under a training image's name: not taken for it.
    other = _new_folder(tmp_path / "other", [])
    assert (other / "images" / first.image.name).is_file()
    assert ckpt_io.image_fingerprint(other / "images" / first.image.name) not in train.tolist()
    # 8 bytes an image: 3312 images (Oxford-IIIT Pet's trainval) take 26 KB.
    assert torch.zeros(3312, dtype=torch.int64).nbytes == 26_496


def test_auto_leaves_out_the_training_images_of_a_mixed_folder(
    tiny_pets: Path, tiny_pets_dataset, tmp_path: Path, capsys
) -> None:
    """A folder of 8 new images and 4 of the run's (3 train, 1 valid) under new names was
    taken for new data and all 12 scored. `auto` scores the 8 and says why; `--split
    all` scores the 12 and says 4 trained the model."""
    from segkit.cli import main

    seen = tiny_pets_dataset.samples("train")[:3] + tiny_pets_dataset.samples("valid")[:1]
    mixed = _new_folder(tmp_path / "mixed", seen)
    ckpt = _trained_on(save_checkpoint(tmp_path / "best.pt"), tiny_pets)
    assert main(["evaluate", str(ckpt), "--data", str(mixed), *CLI_FAST]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"segkit: {mixed}: 3 of 12 images were in this model's train split and 1 in its "
        "valid split; scored the 8 others; --split all scores every image\n"
    )
    assert captured.out.startswith("all dice ") and "(8 images, " in captured.out

    result = segkit.evaluate(ckpt, data=str(mixed), **FAST)
    assert result.overlap == Overlap("all", 12, train=3, valid=1, left_out=True)
    assert (result.overlap.scored, result.metrics["images"]) == (8, 8)
    assert result.split_note() == ""  # the overlap note says what was scored
    # Through the predictor too.
    assert segkit.evaluate(ckpt, data=str(mixed), mode="resize", **FAST).metrics["images"] == 8

    assert main(["evaluate", str(ckpt), "--data", str(mixed), "--split", "all", *CLI_FAST]) == 0
    captured = capsys.readouterr()
    assert captured.err.endswith(
        f"segkit: {mixed}: 3 of 12 images were in this model's train split and 1 in its "
        "valid split: these scores flatter it; --split auto leaves them out\n"
    )
    assert "(12 images, " in captured.out
    asked = segkit.evaluate(ckpt, "all", data=str(mixed), **FAST)
    assert asked.overlap == Overlap("all", 12, train=3, valid=1)
    assert asked.metrics["images"] == 12
    assert asked.overlap_note() == (
        f"{mixed}: 3 of 12 images were in this model's train split and 1 in its valid "
        "split: these scores flatter it; split='auto' leaves them out"
    )


def test_the_runs_own_splits_asked_for_say_they_trained_it(
    tiny_pets: Path, tmp_path: Path, capsys
) -> None:
    from segkit.cli import main

    ckpt = _trained_on(save_checkpoint(tmp_path / "best.pt"), tiny_pets)
    assert main(["evaluate", str(ckpt), "--split", "train", *CLI_FAST]) == 0
    assert capsys.readouterr().err == (
        f"segkit: {tiny_pets}: all 13 images were in this model's train split: these scores "
        "flatter it; --split auto leaves them out\n"
    )
    # Its own test split: nothing trained on, nothing said or left out.
    own = segkit.evaluate(ckpt, **FAST)
    assert (own.split, own.metrics["images"], own.overlap_note()) == ("test", 5, "")
    assert own.overlap == Overlap("test", 5, left_out=True)


def test_a_duplicate_of_a_training_image_in_the_test_split_is_left_out(
    broken_pets: Path, tmp_path: Path, capsys
) -> None:
    """The run's own folder (the same samples), but one test image has the bytes of a
    training image: `auto` scores the test split without it."""
    from segkit import registry
    from segkit.cli import main

    dataset = registry.create("datasets", "oxford_pet", broken_pets)
    train, test = dataset.samples("train")[0], dataset.samples("test")[0]
    ckpt = save_checkpoint(tmp_path / "best.pt")
    shutil.copy(train.image, test.image)
    ckpt = _trained_on(ckpt, broken_pets)
    assert main(["evaluate", str(ckpt), *CLI_FAST]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"segkit: {broken_pets}: 1 of 5 images was in this model's train split; scored the 4 "
        "others; --split test scores all 5 of its test split\n"
    )
    assert captured.out.startswith("test dice ") and "(4 images, " in captured.out


def test_a_folder_of_training_images_alone_says_so(
    tiny_pets: Path, tiny_pets_dataset, tmp_path: Path
) -> None:
    only = _new_folder(tmp_path / "only", tiny_pets_dataset.samples("train")[:4], new=0)
    ckpt = _trained_on(save_checkpoint(tmp_path / "best.pt"), tiny_pets)
    with pytest.raises(DataError) as caught:
        segkit.evaluate(ckpt, data=str(only), **FAST)
    assert str(caught.value) == (
        f"{only}: every one of its 4 images trained this model (4 in its train split): their "
        "scores would say how well it remembers them, not how it does on images it has not "
        "seen. Evaluate it on other images, or pass split='all' to score these anyway "
        "(scores that flatter it)"
    )
    # Following it scores them, and says so.
    asked = segkit.evaluate(ckpt, "all", data=str(only), **FAST)
    assert asked.metrics["images"] == 4 and asked.overlap == Overlap("all", 4, train=4)


def test_an_older_checkpoint_says_once_that_it_cannot_be_checked(
    tiny_pets: Path, tiny_pets_dataset, tmp_path: Path, capsys
) -> None:
    """A checkpoint with its splits' digests but no fingerprints (written before them):
    scored as before (all 12 of a new folder), and one line says why it is not checked."""
    from segkit.cli import main

    mixed = _new_folder(tmp_path / "mixed", tiny_pets_dataset.samples("train")[:4])
    ckpt = _trained_on(save_checkpoint(tmp_path / "best.pt"), tiny_pets, fingerprints=False)
    assert main(["evaluate", str(ckpt), "--data", str(mixed), *CLI_FAST]) == 0
    captured = capsys.readouterr()
    cannot = (
        f"segkit: {mixed}: the checkpoint records which samples trained the model but not "
        "their images' fingerprints (it was written before segkit recorded them): whether "
        "some of these images trained it cannot be checked; a run of this segkit records "
        "them\n"
    )
    assert captured.err.endswith(cannot) and captured.err.count("fingerprints") == 1
    assert "(12 images, " in captured.out
    assert segkit.evaluate(ckpt, data=str(mixed), **FAST).overlap == Overlap(
        "all", 12, checked=False
    )
    # A checkpoint recording no split at all: nothing to check against, nothing said.
    bare = save_checkpoint(tmp_path / "bare.pt")
    assert segkit.evaluate(bare, data=str(mixed), **FAST).overlap is None


@pytest.mark.slow
@pytest.mark.parametrize("classes", ["binary", "collar"])
def test_a_run_records_its_images_fingerprints(
    tiny_pets: Path, tmp_path: Path, classes: str
) -> None:
    """A 1-epoch run at 32 px, binary and K classes: last.pt and best.pt both record each
    split's fingerprints (8 bytes an image), which a mixed folder is checked against."""
    from segkit.training import engine

    options = {"epochs": 1, "keep_last": True}
    if classes == "collar":
        options |= {"dataset": "synthetic", "dataset_options": {"variant": "collar", "count": 16}}
    config = tiny(tiny_pets, tmp_path / "runs", **options)
    if classes == "collar":
        config.data = None  # generated
    result = engine.train(config, quiet=True)
    dataset = segkit.registry.create(
        "datasets", *(("oxford_pet", tiny_pets) if classes == "binary" else ("synthetic",)),
        **(options.get("dataset_options") or {}),
    )  # fmt: skip
    expected = ckpt_io.sample_fingerprints(dataset)
    assert expected is not None
    for name in ("last.pt", "best.pt"):
        state = ckpt_io.load(result.run_dir / name)
        assert state["fingerprints"].keys() == expected.keys()
        for split, prints in expected.items():
            assert torch.equal(state["fingerprints"][split], prints)
            assert state["fingerprints"][split].nbytes == 8 * state["splits"][split]["count"]


def _reencoded(source: Path, target: Path) -> None:
    """``source``'s picture flipped, written as a JPEG at ``target`` (other bytes)."""
    from PIL import Image, ImageOps

    with Image.open(source) as im:
        ImageOps.mirror(im.convert("RGB")).save(target, "JPEG", quality=90)


def test_the_runs_own_images_edited_under_their_names_are_told(
    broken_pets: Path, tmp_path: Path, capsys
) -> None:
    """The run's own data (the same sample ids) with two test images changed since the
    model was trained: one edited, one given a training image's bytes. Evaluate scores
    them as they are now and says which changed; the one with a training image's bytes is
    also left out, as in any folder."""
    from segkit import registry
    from segkit.cli import main

    ckpt = _trained_on(save_checkpoint(tmp_path / "best.pt"), broken_pets)
    dataset = registry.create("datasets", "oxford_pet", broken_pets)
    train, test = dataset.samples("train"), dataset.samples("test")
    _reencoded(test[0].image, test[0].image)
    shutil.copy(train[0].image, test[3].image)
    shutil.copy(train[0].mask, test[3].mask)  # a pair: scored whole by --split all
    assert main(["evaluate", str(ckpt), *CLI_FAST]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"segkit: {broken_pets}: 1 of 5 images was in this model's train split; scored the 4 "
        "others; --split test scores all 5 of its test split\n"
        f"segkit: warning: {broken_pets}: 2 of 5 test images changed since this model was "
        f"trained (same names, other bytes): {test[0].image.name}, {test[3].image.name}; 1 of "
        "them has the bytes of an image of its train split; the scores are of the images as "
        "they are now\n"
    )
    result = segkit.evaluate(ckpt, **FAST)
    (changed,) = result.changed
    assert changed == ckpt_io.Changed(
        "test", 5, (test[0].image.name, test[3].image.name), {"train": 1}
    )
    assert result.to_dict()["changed"] == [
        {"split": "test", "images": 5, "names": [test[0].image.name, test[3].image.name],
         "elsewhere": {"train": 1}}
    ]  # fmt: skip
    # A train image given a test image's bytes: told when the train split is scored.
    shutil.copy(test[1].image, train[1].image)
    shutil.copy(test[1].mask, train[1].mask)
    trained = segkit.evaluate(ckpt, "train", **FAST)
    assert trained.changed_notes() == [
        f"{broken_pets}: 1 of 13 train images changed since this model was trained (same "
        f"names, other bytes): {train[1].image.name}; it has the bytes of an image of its "
        "test split; the scores are of the images as they are now"
    ]
    # Every split: each split's own line.
    assert [c.split for c in segkit.evaluate(ckpt, "all", **FAST).changed] == ["train", "test"]


def test_changed_images_are_not_told_of_other_data_or_an_older_checkpoint(
    broken_pets: Path, tiny_pets: Path, tmp_path: Path
) -> None:
    """Other samples (a folder with other ids): the overlap says what trained the model,
    nothing is 'changed'. A checkpoint without fingerprints: its one line, nothing more."""
    from segkit import registry

    ckpt = _trained_on(save_checkpoint(tmp_path / "best.pt"), tiny_pets)
    dataset = registry.create("datasets", "oxford_pet", broken_pets)
    _reencoded(dataset.samples("test")[0].image, dataset.samples("test")[0].image)
    (broken_pets / "annotations" / "test.txt").write_text(
        "".join(f"{s.id} 1 1 1\n" for s in dataset.samples("test")[1:])
    )
    other = segkit.evaluate(ckpt, data=str(broken_pets), **FAST)
    assert other.split == "all" and other.changed == () and other.changed_notes() == []
    old = _trained_on(save_checkpoint(tmp_path / "old.pt"), broken_pets, fingerprints=False)
    _reencoded(dataset.samples("test")[1].image, dataset.samples("test")[1].image)
    result = segkit.evaluate(old, **FAST)
    assert result.changed == () and result.overlap is not None and not result.overlap.checked


@pytest.mark.slow
def test_a_resume_on_images_edited_under_their_names_warns(
    broken_pets: Path, tmp_path: Path, capsys
) -> None:
    """A run resumed after two train images were edited (same names): one warning line
    names them; the run goes on, and its new last.pt records the images as they are."""
    from segkit import registry
    from segkit.training import engine

    config = tiny(broken_pets, tmp_path / "runs", epochs=1, keep_last=True)
    result = engine.train(config, quiet=True)
    train = registry.create("datasets", "oxford_pet", broken_pets).samples("train")
    for sample in train[:2]:
        _reencoded(sample.image, sample.image)
    capsys.readouterr()
    engine.resume(result.run_dir, epochs=2)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "changed" in line]
    assert warnings == [
        f"segkit: warning: {broken_pets}: 2 of 13 train images changed since last.pt recorded "
        f"them (same names, other bytes): {train[0].image.name}, {train[1].image.name}: the "
        "run goes on with the images as they are now"
    ]
    state = ckpt_io.load(result.run_dir / "last.pt")
    assert ckpt_io.image_fingerprint(train[0].image) in state["fingerprints"]["train"].tolist()
    capsys.readouterr()
    engine.resume(result.run_dir, epochs=3)  # unchanged since: nothing said
    assert "changed" not in capsys.readouterr().err
