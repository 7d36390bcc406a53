"""Dataset plugins: the Oxford-IIIT Pet reader, the folder reader and the synthetic set."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_PETS_COUNT, TINY_PETS_SEED
from PIL import Image

from segkit.config import COMMAND_LINE, given_as
from segkit.contracts import Dataset, Sample
from segkit.data.reading import read_image, read_sample
from segkit.errors import ConfigError, DataError
from segkit_datasets.folder import FolderDataset
from segkit_datasets.oxford_pet import OxfordPet, train_valid_split
from segkit_datasets.synthetic import MARKER, SyntheticPet, is_complete, write_synthetic

# The generated set under test is conftest's tiny_pets (read-only; broken_pets is a
# writable copy); these are the settings it was written with.
COUNT, SEED = TINY_PETS_COUNT, TINY_PETS_SEED


def _ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ generated data


def test_trimaps_hold_1_2_3_with_a_plausible_pet(tiny_pets: Path) -> None:
    trimaps = sorted((tiny_pets / "annotations" / "trimaps").glob("*.png"))
    assert len(trimaps) == COUNT
    for path in trimaps:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "L"
            t = np.asarray(im)
        assert set(np.unique(t).tolist()) == {1, 2, 3}, path
        foreground = np.mean(t != 2)
        assert 0.12 <= foreground <= 0.75, (path, foreground)  # the pet is the subject
        # The border band is thin: a small share of the pet.
        assert np.sum(t == 3) < 0.5 * np.sum(t != 2), path


def test_images_are_rgb_jpegs_of_varied_sizes_matching_their_trimaps(tiny_pets: Path) -> None:
    sizes = set()
    for i in range(COUNT):
        with Image.open(tiny_pets / "images" / f"synth_{i}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            size = im.size
        with Image.open(tiny_pets / "annotations" / "trimaps" / f"synth_{i}.png") as tm:
            assert tm.size == size
        assert 300 <= size[0] <= 500 and 250 <= size[1] <= 500
        sizes.add(size)
    assert len(sizes) > COUNT // 2


def test_split_lists_use_the_official_format(tiny_pets: Path) -> None:
    ann = tiny_pets / "annotations"
    for name in ("trainval.txt", "test.txt"):
        for line in (ann / name).read_text().splitlines():
            assert re.fullmatch(r"synth_\d+ 1 1 1", line), line
    trainval, test = _ids(ann / "trainval.txt"), _ids(ann / "test.txt")
    assert len(test) == round(0.25 * COUNT)
    assert set(trainval).isdisjoint(test)
    assert set(trainval) | set(test) == {f"synth_{i}" for i in range(COUNT)}
    assert is_complete(tiny_pets, COUNT, SEED)
    assert not is_complete(tiny_pets, COUNT + 1, SEED) and not is_complete(
        tiny_pets, COUNT, SEED + 1
    )


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_pets: Path, tmp_path: Path) -> None:
    # Each image has its own random stream, so a smaller set is a prefix of a larger one.
    a = write_synthetic(tmp_path / "a", count=3, seed=SEED)
    b = write_synthetic(tmp_path / "b", count=3, seed=SEED)
    c = write_synthetic(tmp_path / "c", count=3, seed=SEED + 1)
    for i in range(3):
        for rel in (f"images/synth_{i}.jpg", f"annotations/trimaps/synth_{i}.png"):
            assert (
                (a / rel).read_bytes() == (b / rel).read_bytes() == (tiny_pets / rel).read_bytes()
            )
            assert (a / rel).read_bytes() != (c / rel).read_bytes()


@pytest.mark.slow  # starts processes
def test_parallel_generation_writes_the_same_files(tiny_pets: Path, tmp_path: Path) -> None:
    out = write_synthetic(tmp_path / "p", count=5, seed=SEED, workers=2)
    for i in range(5):
        for rel in (f"images/synth_{i}.jpg", f"annotations/trimaps/synth_{i}.png"):
            assert (out / rel).read_bytes() == (tiny_pets / rel).read_bytes()
    assert is_complete(out, 5, SEED)
    with pytest.raises(ConfigError, match="workers=0: expected 1 or more"):
        write_synthetic(tmp_path / "z", count=5, workers=0)


def test_read_sample_gives_trimap_not_2(tiny_pets: Path) -> None:
    ds = OxfordPet(tiny_pets)
    sample = ds.samples("test")[0]
    image, mask = read_sample(sample, ds.mask_spec)
    trimap = np.asarray(Image.open(sample.mask))
    assert image.dtype == np.uint8 and image.shape == (*trimap.shape, 3)
    assert mask.dtype == np.uint8 and set(np.unique(mask).tolist()) == {0, 1}
    np.testing.assert_array_equal(mask, (trimap != 2).astype(np.uint8))


def test_writing_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes\.txt\); refusing to overwrite it"):
        write_synthetic(tmp_path, count=2)
    with pytest.raises(ConfigError, match="count=1: a synthetic set needs at least 2 images"):
        write_synthetic(tmp_path / "new", count=1)


# ------------------------------------------------------------------ oxford_pet reader


def test_oxford_pet_satisfies_the_contract(tiny_pets: Path) -> None:
    ds = OxfordPet(tiny_pets)
    assert isinstance(ds, Dataset)
    assert ds.mask_spec.background == 2 and ds.mask_spec.allowed == (1, 2, 3)
    splits = {s: ds.samples(s) for s in ("train", "valid", "test")}
    ids = {s: [x.id for x in v] for s, v in splits.items()}
    assert ids["test"] == _ids(tiny_pets / "annotations" / "test.txt")  # file order
    assert ids["train"] == sorted(ids["train"]) and ids["valid"] == sorted(ids["valid"])
    assert len(ids["valid"]) == round(0.1 * (COUNT - len(ids["test"])))
    first = splits["test"][0]
    assert first == Sample(
        first.id,
        tiny_pets / "images" / f"{first.id}.jpg",
        tiny_pets / "annotations" / "trimaps" / f"{first.id}.png",
    )
    with pytest.raises(
        ConfigError, match="unknown split 'val'; expected one of train, valid, test"
    ):
        ds.samples("val")


def test_train_valid_split_of_3680_ids_is_the_labs_rule() -> None:
    """The rule alone, on the official trainval size; the reader's use of it is checked
    on a folder of that size below (slow: 7,400 files to write)."""
    ids = [f"Breed_{i}" for i in range(3680)]
    split = train_valid_split(ids, 0.1, 0)
    train, valid = split["train"], split["valid"]
    assert (len(valid), len(train)) == (368, 3312)
    assert set(train).isdisjoint(valid) and set(train) | set(valid) == set(ids)
    assert train == sorted(train) and valid == sorted(valid)
    assert train_valid_split(ids[::-1], 0.1, 0) == split  # the order of the list is no input
    assert train_valid_split(ids, 0.1, 1)["valid"] != valid


@pytest.fixture(scope="module")
def fake_official(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official trainval size (3680 ids) with empty files: samples() never decodes.
    Its own data: the split sizes are the official set's, and only its file names matter.
    """
    root = tmp_path_factory.mktemp("official")
    (root / "images").mkdir()
    (root / "annotations" / "trimaps").mkdir(parents=True)
    ids = [f"Breed_{i}" for i in range(3680 + 20)]
    for i in ids:
        (root / "images" / f"{i}.jpg").touch()
        (root / "annotations" / "trimaps" / f"{i}.png").touch()
    lines = ["#Image CLASS-ID SPECIES BREED ID", ""] + [f"{i} 1 1 1" for i in ids[:3680]]
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (root / "annotations" / "test.txt").write_text("".join(f"{i} 2 2 5\n" for i in ids[:3679:-1]))
    return root


@pytest.mark.slow  # fake_official writes 7,400 files: 1-3 s on this 2-core VM
def test_train_valid_split_of_3680_ids_is_the_labs(fake_official: Path) -> None:
    ds = OxfordPet(fake_official)
    train = [s.id for s in ds.samples("train")]
    valid = [s.id for s in ds.samples("valid")]
    assert (len(valid), len(train)) == (368, 3312)
    assert set(train).isdisjoint(valid)
    assert set(train) | set(valid) == {f"Breed_{i}" for i in range(3680)}
    assert train == sorted(train) and valid == sorted(valid)
    # Deterministic across instances; another seed gives another split.
    assert [s.id for s in OxfordPet(fake_official).samples("valid")] == valid
    assert [s.id for s in OxfordPet(fake_official, split_seed=1).samples("valid")] != valid
    # The rule does not depend on the order of the list.
    ids = [f"Breed_{i}" for i in range(3680)]
    assert train_valid_split(ids[::-1], 0.1, 0)["valid"] == valid
    assert [s.id for s in ds.samples("test")] == [f"Breed_{i}" for i in range(3699, 3679, -1)]


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope: data folder not found; pass data pointing at"):
        OxfordPet(tmp_path / "nope")  # from Python: the keyword
    with (
        given_as(COMMAND_LINE),
        pytest.raises(DataError, match=r"nope: data folder not found; pass --data pointing at"),
    ):
        OxfordPet(tmp_path / "nope")
    with pytest.raises(DataError, match=r"^no data folder given; pass data pointing at a folder "
                       r"with images/ and masks/$"):  # fmt: skip
        FolderDataset(None)
    with given_as(COMMAND_LINE), pytest.raises(DataError, match=r"^no data folder given; pass "
                       r"--data pointing at a folder with images/ and masks/$"):  # fmt: skip
        FolderDataset(None)
    with pytest.raises(DataError, match=r"no data folder given; .*segkit data synth PATH"):
        OxfordPet(None)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"annotations/trimaps: folder not found; expected"):
        OxfordPet(tmp_path)


def test_missing_split_list(broken_pets: Path) -> None:
    (broken_pets / "annotations" / "test.txt").unlink()
    with pytest.raises(DataError, match=r"annotations/test\.txt: split list not found"):
        OxfordPet(broken_pets).samples("test")


def test_split_list_naming_a_missing_image(broken_pets: Path) -> None:
    with (broken_pets / "annotations" / "test.txt").open("a") as f:
        f.write("Ghost_1 1 1 1\nGhost_2 1 1 1\n")
    with pytest.raises(
        DataError,
        match=r"images/Ghost_1\.jpg: image named in \S+test\.txt not found "
        r"\(3 more files it names are missing too: Ghost_1\.png, Ghost_2\.jpg, Ghost_2\.png\); "
        r"restore the file",
    ):
        OxfordPet(broken_pets).samples("test")


def test_split_list_naming_a_missing_trimap(broken_pets: Path) -> None:
    name = _ids(broken_pets / "annotations" / "test.txt")[0]
    (broken_pets / "annotations" / "trimaps" / f"{name}.png").unlink()
    with pytest.raises(
        DataError, match=rf"trimaps/{name}\.png: trimap named in \S+test\.txt not found;"
    ):
        OxfordPet(broken_pets).samples("test")


def test_empty_split(broken_pets: Path) -> None:
    (broken_pets / "annotations" / "test.txt").write_text("# nothing here\n\n")
    with pytest.raises(DataError, match=r"test\.txt: split 'test' has no samples"):
        OxfordPet(broken_pets).samples("test")


def test_repeated_name_in_split_list(broken_pets: Path) -> None:
    path = broken_pets / "annotations" / "test.txt"
    first = path.read_text().splitlines()[0]
    with path.open("a") as f:
        f.write(first + "\n")
    with pytest.raises(DataError, match=r"test\.txt: line \d+ repeats 'synth_\d+' \(first on"):
        OxfordPet(broken_pets).samples("test")


def test_truncated_jpeg_names_the_file(broken_pets: Path) -> None:
    ds = OxfordPet(broken_pets)
    sample = ds.samples("test")[0]
    data = sample.image.read_bytes()
    sample.image.write_bytes(data[: len(data) // 2])
    pattern = re.escape(str(sample.image)) + r": cannot decode image .*corrupt or truncated"
    with pytest.raises(DataError, match=pattern):
        read_image(sample.image)
    with pytest.raises(DataError, match=pattern):
        read_sample(sample, ds.mask_spec)


def test_trimap_with_value_7_names_the_file(broken_pets: Path) -> None:
    ds = OxfordPet(broken_pets)
    sample = ds.samples("test")[0]
    bad = np.asarray(Image.open(sample.mask)).copy()
    bad[:5] = 0
    bad[5:10] = 7
    Image.fromarray(bad, "L").save(sample.mask)
    with pytest.raises(
        DataError, match=re.escape(str(sample.mask)) + r": values \{0, 7\} found.* hold 1, 2, 3"
    ):
        read_sample(sample, ds.mask_spec)


def test_image_and_trimap_of_different_sizes(broken_pets: Path) -> None:
    ds = OxfordPet(broken_pets)
    sample = ds.samples("test")[0]
    with Image.open(sample.mask) as im:
        w, h = im.size
        im.resize((w // 2, h // 2), Image.Resampling.NEAREST).save(sample.mask)
    with pytest.raises(
        DataError,
        match=re.escape(str(sample.mask)) + rf": mask is {w // 2}x{h // 2} but image "
        rf"{sample.image.name} is {w}x{h}",
    ):
        read_sample(sample, ds.mask_spec)


# ------------------------------------------------------------------ synthetic plugin


def test_synthetic_cache_is_generated_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path))
    ds = SyntheticPet(None, count=4, seed=1)
    assert ds.root == tmp_path / "synthetic-4-1-v2"
    marker = ds.root / MARKER
    first = marker.stat().st_mtime_ns
    image = ds.root / "images" / "synth_0.jpg"
    image_mtime = image.stat().st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-4-1-v2"]  # no temp left

    again = SyntheticPet(None, count=4, seed=1, valid_fraction=0.5)
    assert marker.stat().st_mtime_ns == first and image.stat().st_mtime_ns == image_mtime
    assert len(again.samples("valid")) == round(0.5 * 3)  # 4 images: 1 test, 3 trainval
    assert isinstance(again, Dataset)

    # An interrupted generation (no marker) is never reused.
    marker.unlink()
    SyntheticPet(None, count=4, seed=1)
    assert marker.exists()


def test_synthetic_never_turns_a_data_folder_into_another_set(tmp_path: Path) -> None:
    # A checkpoint's recorded variant=collar once regenerated a pet set a user evaluated on.
    root = tmp_path / "set"
    SyntheticPet(root, count=4, seed=1)
    for asked in ({"count": 3}, {"seed": 2}, {"variant": "collar"}):
        with pytest.raises(DataError, match=r"holds a synthetic set \(count 4, seed 1, "
                           r"variant pet\), and this asks for another"):  # fmt: skip
            SyntheticPet(root, **asked)
    assert is_complete(root, 4, 1)
    # The way out names the settings as they were given: keywords in Python, flags in a command.
    with pytest.raises(DataError, match=r"Leave those dataset_options values out to read it as "
                       r"it is, or pass data with a new folder"):  # fmt: skip
        SyntheticPet(root, count=3)
    with given_as(COMMAND_LINE), pytest.raises(DataError, match=r"not overwrite a --data folder "
                       r"with another set. Leave those --dataset-opt values out"):  # fmt: skip
        SyntheticPet(root, count=3)
    assert SyntheticPet(root).count == 4  # read as it is
    assert SyntheticPet(root, count=4, seed=1, variant="pet").count == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_synthetic_generate_is_what_segkit_data_synth_calls(tmp_path: Path) -> None:
    assert SyntheticPet.generate(tmp_path / "s", count=2, seed=5) == tmp_path / "s"
    assert is_complete(tmp_path / "s", 2, 5)


def test_stale_temporary_folders_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".set.tmp-123-abcd"
    stale.mkdir()
    os.utime(stale, (0, 0))
    fresh = tmp_path / ".set.tmp-456-abcd"  # may belong to a run in progress
    fresh.mkdir()
    SyntheticPet(tmp_path / "set", count=2)
    assert not stale.exists() and fresh.exists()


def test_synthetic_never_overwrites_other_data(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cat.jpg").write_bytes(b"not ours")
    with pytest.raises(DataError, match=r"images/cat\.jpg\); refusing to overwrite it"):
        SyntheticPet(tmp_path, count=2)
    assert (tmp_path / "images" / "cat.jpg").read_bytes() == b"not ours"


# ------------------------------------------------------------------ folder reader


def _folder(root: Path, stems: list[str], *, masks: list[str] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    m = np.zeros((8, 10), np.uint8)
    m[2:6, 3:7] = 255
    for stem in stems:
        Image.fromarray(np.full((8, 10, 3), 100, np.uint8)).save(root / "images" / f"{stem}.png")
    for stem in stems if masks is None else masks:
        Image.fromarray(m).save(root / "masks" / f"{stem}.png")
    return root


def test_folder_random_split_and_binary_masks(tmp_path: Path) -> None:
    stems = [f"img{i:02d}" for i in range(20)]
    ds = FolderDataset(_folder(tmp_path, stems))
    assert isinstance(ds, Dataset)
    split = {s: [x.id for x in ds.samples(s)] for s in ("train", "valid", "test")}
    assert [len(split[s]) for s in ("train", "valid", "test")] == [16, 2, 2]
    assert sorted(sum(split.values(), [])) == stems
    assert split == {s: [x.id for x in FolderDataset(tmp_path).samples(s)] for s in split}
    _, mask = read_sample(ds.samples("train")[0], ds.mask_spec)
    assert set(np.unique(mask).tolist()) == {0, 1} and mask.sum() == 16


def test_folder_split_lists(tmp_path: Path) -> None:
    _folder(tmp_path, ["a", "b", "c"])
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("c\na\n")
    (tmp_path / "splits" / "valid.txt").write_text("b\n")
    (tmp_path / "splits" / "test.txt").write_text("# none yet\nzebra\n")
    ds = FolderDataset(tmp_path)
    assert [s.id for s in ds.samples("train")] == ["c", "a"]
    with pytest.raises(DataError, match=r"test\.txt: line 2 names 'zebra', which has no image"):
        ds.samples("test")


def test_folder_image_without_mask(tmp_path: Path) -> None:
    _folder(tmp_path, ["a", "b", "c"], masks=["a"])
    with pytest.raises(
        DataError,
        match=r"masks/b\.png: mask for image b\.png not found \(1 more images lack masks: c\); "
        r"every image needs masks/<same name>\.png; `segkit data check --data \S+` lists every "
        r"problem$",
    ):
        FolderDataset(tmp_path)


def test_folder_mask_without_image_and_no_images(tmp_path: Path) -> None:
    _folder(tmp_path / "one", ["a"], masks=["a", "z"])
    with pytest.raises(DataError, match=r"masks/z\.png: mask has no image images/z\.jpg"):
        FolderDataset(tmp_path / "one")
    _folder(tmp_path / "none", [], masks=[])
    with pytest.raises(
        DataError,
        match=r"images: no images \(\.jpg, \.jpeg, \.png, \.tif, \.tiff, \.bmp, \.webp or \.gif\) found",
    ):
        FolderDataset(tmp_path / "none")
    with pytest.raises(DataError, match=r"missing/masks: folder not found"):
        (tmp_path / "missing" / "images").mkdir(parents=True)
        FolderDataset(tmp_path / "missing")


# ------------------------------------------------------------------ registration


def test_entry_points_name_these_classes() -> None:
    entrypoints = pytest.importorskip("entrypoints")
    group = entrypoints.get_group_named("segkit.datasets")
    if not group:
        pytest.skip("segkit is not installed (no entry points)")
    assert group["oxford_pet"].load() is OxfordPet
    assert group["folder"].load() is FolderDataset
    assert group["synthetic"].load() is SyntheticPet


def test_a_name_in_both_trainval_and_test_is_refused(broken_pets: Path) -> None:
    """A test image that is also trained on would make the test score meaningless."""
    test = (broken_pets / "annotations" / "test.txt").read_text().splitlines()
    with (broken_pets / "annotations" / "trainval.txt").open("a") as f:
        f.write(test[0] + "\n")
    name = test[0].split()[0]
    for split in ("train", "test"):
        with pytest.raises(
            DataError, match=rf"'{name}' is listed in .*(trainval|test)\.txt too; a sample must"
        ):
            OxfordPet(broken_pets).samples(split)


def test_folder_split_lists_must_not_share_a_name(tmp_path: Path) -> None:
    _folder(tmp_path, ["a", "b", "c", "d"])
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("a\nb\nc\n")
    (tmp_path / "splits" / "valid.txt").write_text("d\n")
    (tmp_path / "splits" / "test.txt").write_text("c\nb\n")
    with pytest.raises(
        DataError,
        match=r"(train|test)\.txt: '[bc]' is listed in .*(train|test)\.txt too \(1 more names "
        r"are in both\)",
    ):
        FolderDataset(tmp_path).samples("test")
