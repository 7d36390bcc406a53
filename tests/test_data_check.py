"""``segkit data check`` (segkit.data.check) and ``--loss-opt pos_weight=auto``.

The datasets are small ``folder`` layouts written here (images/<stem>.jpg|png,
masks/<stem>.png, splits/*.txt), each holding one kind of problem, so every finding's
line and the exit status can be asserted on its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit import registry
from segkit.cli import main
from segkit.data.check import check_dataset, format_report, train_pos_weight


def _image(seed: int, w: int = 40, h: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _mask(w: int = 40, h: int = 32, top: int = 8, value: int = 1) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[top:, : w // 2] = value
    return m


def write_folder(root: Path, splits: dict[str, list[str]]) -> Path:
    """A clean folder dataset: one JPEG image with a 0/1 mask per stem, split as given.
    Image ``i`` (in order over the splits) is 40x32 noise from seed ``i``; its mask's
    foreground is the left half below row 8."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    i = 0
    for split, stems in splits.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        for stem in stems:
            _image(i).save(root / "images" / f"{stem}.jpg", quality=95)
            Image.fromarray(_mask(top=8 + i % 4)).save(root / "masks" / f"{stem}.png")
            i += 1
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(
        tmp_path / "data",
        {"train": ["a", "b", "c", "d"], "valid": ["e", "f"], "test": ["g", "h"]},
    )


def check(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> tuple[int, str]:
    rc = main(["data", "check", "--data", str(root), "--dataset", "folder", *extra])
    return rc, capsys.readouterr().out


def test_clean_folder_passes(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = check(capsys, folder)
    assert rc == 0, out
    assert "train       4      40x32      40x32      40x32" in out
    assert "image formats: JPEG RGB 8" in out
    assert "mask formats: PNG L 8" in out
    assert "mask values: 0, 1 found; declared 0, 1, 255 (background 0)" in out
    assert "duplicates: none" in out
    assert "problems: none" in out
    assert "suggested --image-size 32: the median short side is 32 px" in out
    assert out.rstrip().endswith(
        f"ok: nothing here would stop a run\nrun it: segkit run --data {folder} --dataset "
        "folder --image-size 32"
    )


def test_png_named_jpg_is_a_warning(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _image(100).save(folder / "images" / "b.jpg", format="PNG")
    rc, out = check(capsys, folder)
    assert rc == 0, out  # a warning: PIL reads it by content
    path = folder / "images" / "b.jpg"
    assert (
        f"  warning: {path}: a PNG file named .jpg; PIL reads it by content, but other tools "
        "go by the name: rename it to b.png"
    ) in out
    assert "image formats: JPEG RGB 7, PNG RGB 1" in out


def test_mask_value_outside_declared_fails_with_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0/255 mask where the dataset declares 0/1 gets the divide-by-255 hint. (The folder
    plugin accepts 0, 1 and 255, so its files are read through a dataset declaring 0/1.)"""
    root = write_folder(tmp_path / "data", {"train": ["a", "b"], "valid": ["c"], "test": ["d"]})
    Image.fromarray(_mask(value=255)).save(root / "masks" / "b.png")
    dataset = _ZeroOne(registry.create("datasets", "folder", root))
    report = check_dataset(dataset, workers=2, name="zero_one")
    lines = [p.message for p in report.problems]
    assert lines == [
        f"{root / 'masks' / 'b.png'}: values {{255}} found, masks of this dataset hold 0, 1; "
        "looks like 0/255 encoding: divide by 255 (mask // 255)"
    ]
    assert [p.kind for p in report.problems] == ["mask_values"]
    assert not report.ok
    assert report.mask_values == {"0": 4, "1": 3, "255": 1}


class _ZeroOne:
    """A dataset that declares 0/1 masks, over a folder dataset's files."""

    def __init__(self, inner) -> None:
        from segkit.contracts import MaskSpec

        self.root = inner.root
        self.mask_spec = MaskSpec(background=0, allowed=(0, 1))
        self.samples = inner.samples


def test_mask_value_outside_fails_the_cli(
    broken_pets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The oxford layout declares 1, 2, 3: a 0/255 trimap is named, exit status 1."""
    split = (broken_pets / "annotations" / "test.txt").read_text().split()[0]
    trimap = broken_pets / "annotations" / "trimaps" / f"{split}.png"
    h, w = np.asarray(Image.open(trimap)).shape
    Image.fromarray(_mask(w, h, value=255)).save(trimap)
    rc, out = check(capsys, broken_pets, "--dataset", "oxford_pet")
    assert rc == 1
    assert f"  error: {trimap}: values {{0, 255}} found, masks of this dataset hold 1, 2, 3" in out
    assert out.rstrip().endswith("FAILED: 1 problem would stop a run; check again once fixed")


def test_empty_mask_is_listed(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(folder / "masks" / "f.png")
    rc, out = check(capsys, folder)
    assert rc == 0, out
    assert "empty masks (valid, no foreground): f.png" in out
    assert "valid       2      40x32      40x32      40x32" in out
    assert out.splitlines()[3].endswith("  1")  # valid's row: 1 empty mask


def test_duplicate_across_splits_fails(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(folder / "images" / "a.jpg", folder / "images" / "g.jpg")
    rc, out = check(capsys, folder)
    assert rc == 1
    a, g = folder / "images" / "a.jpg", folder / "images" / "g.jpg"
    assert (
        f"  error: {g} (test) has the same bytes as {a} (train); one image in two splits "
        "inflates the scores: remove one"
    ) in out
    assert "duplicates: 1 group of identical images, 1 across splits" in out


def test_unreadable_image_and_size_mismatch(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = folder / "images" / "c.jpg"
    img.write_bytes(img.read_bytes()[:200])  # truncated
    Image.fromarray(_mask(w=20)).save(folder / "masks" / "d.png")
    rc, out = check(capsys, folder)
    assert rc == 1
    problems = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert len(problems) == 2, out
    assert problems[0].startswith(f"  error: {img}: cannot decode image (")
    assert problems[0].endswith(  # the folder's splits/*.txt name the samples
        "the file is corrupt or truncated. Replace it, or remove its name from the split list"
    )
    assert problems[1] == (
        f"  error: {folder / 'masks' / 'd.png'}: mask is 20x32 but image d.jpg is 40x32; "
        "an image and its mask must have the same size"
    )
    assert out.rstrip().endswith(
        "FAILED: 2 problems would stop a run; check again once fixed (or leave the file that "
        "cannot be decoded out: a run with --skip-bad-samples skips it)"
    )


def test_json_matches_the_text(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(folder / "images" / "a.jpg", folder / "images" / "h.jpg")
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(folder / "masks" / "b.png")
    rc, out = check(capsys, folder, "--json", "--workers", "2")
    assert rc == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert {k: v["count"] for k, v in report["splits"].items()} == {
        "train": 4,
        "valid": 2,
        "test": 2,
    }
    assert report["splits"]["train"]["empty_masks"] == ["b.png"]
    assert report["splits"]["train"]["size_median"] == [40, 32]
    assert report["image_formats"] == {"JPEG RGB": 8}
    assert report["mask_values"] == {"0": 8, "1": 7}
    assert report["duplicates"][0]["splits"] == ["train", "test"]
    assert [(p["severity"], p["kind"]) for p in report["problems"]] == [("error", "duplicate")]
    assert report["problems"][0]["file"] == str(folder / "images" / "h.jpg")
    assert report["suggestions"]["image_size"]["value"] == 32
    assert report["suggestions"]["pos_weight"]["value"] == pytest.approx(
        _bg_over_fg(folder, ["a", "b", "c", "d"]), rel=1e-4
    )


def _bg_over_fg(root: Path, stems: list[str]) -> float:
    masks = [np.asarray(Image.open(root / "masks" / f"{s}.png")) for s in stems]
    fg = sum(int((m != 0).sum()) for m in masks)
    return (sum(m.size for m in masks) - fg) / fg


def test_pos_weight_auto_is_train_bg_over_fg(folder: Path) -> None:
    from segkit.build import build_dataset, build_loss, resolve_loss_options
    from segkit.config import RunConfig

    config = RunConfig(
        data=str(folder), dataset="folder", loss="bce_dice", loss_options={"pos_weight": "auto"}
    )
    dataset = build_dataset(config)
    expected = _bg_over_fg(folder, ["a", "b", "c", "d"])
    assert train_pos_weight(dataset, 2) == pytest.approx(expected, rel=1e-12)
    options = resolve_loss_options(config, dataset, 2)
    assert options["pos_weight"] == pytest.approx(expected, rel=1e-6)
    loss = build_loss(config, dataset, 2)
    assert loss.pos_weight == options["pos_weight"]
    assert "pos_weight=" in repr(loss)


def test_pos_weight_weighs_bce() -> None:
    import torch

    from segkit import create_loss
    from segkit.errors import ConfigError

    logits = torch.tensor([[[[-1.0, 2.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    plain = create_loss("bce")(logits, target)
    weighted = create_loss("bce", pos_weight=3.0)(logits, target)
    fg = torch.nn.functional.softplus(torch.tensor(1.0))  # -log sigmoid(-1)
    bg = torch.nn.functional.softplus(torch.tensor(2.0))  # -log(1 - sigmoid(2))
    assert plain.item() == pytest.approx(((fg + bg) / 2).item(), rel=1e-6)
    assert weighted.item() == pytest.approx(((3 * fg + bg) / 2).item(), rel=1e-6)
    with pytest.raises(ConfigError, match="pos_weight='auto' is resolved by segkit run"):
        create_loss("bce_dice", pos_weight="auto")


def test_pos_weight_auto_without_dataset_is_refused() -> None:
    from segkit.build import build_loss
    from segkit.config import COMMAND_LINE, RunConfig, given_as
    from segkit.errors import ConfigError

    config = RunConfig(loss_options={"pos_weight": "auto"})
    with pytest.raises(ConfigError, match=r"^loss_options=\{'pos_weight': 'auto'\} needs the"):
        build_loss(config)  # from Python: the keyword
    with given_as(COMMAND_LINE), pytest.raises(ConfigError, match="^--loss-opt pos_weight=auto"):
        build_loss(config)


@pytest.mark.slow
def test_run_records_the_resolved_pos_weight(tiny_pets: Path, tmp_path: Path) -> None:
    """One epoch with ``--loss-opt pos_weight=auto``: config.json keeps "auto" as asked and
    records the number under ``resolved.loss_options``."""
    from conftest import TINY_RUN

    argv = ["run", "--epochs", "1", "--data", str(tiny_pets), "--out", str(tmp_path)]
    argv += ["--name", "pw", "--loss-opt", "pos_weight=auto", *TINY_RUN, "-q"]
    assert main(argv) == 0
    config = json.loads((tmp_path / "pw" / "config.json").read_text())
    assert config["loss_options"] == {"pos_weight": "auto"}
    dataset = registry.create("datasets", "oxford_pet", tiny_pets)
    expected = train_pos_weight(dataset, 1)
    assert config["resolved"]["loss_options"]["pos_weight"] == pytest.approx(expected, rel=1e-5)
    report = check_dataset(dataset, 1)
    assert report.suggestions["pos_weight"]["value"] == pytest.approx(expected, rel=1e-4)


def test_public_api(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segkit
    from segkit.training import engine

    report = segkit.check_data(folder, dataset="folder", workers=2)
    assert "check_data" in segkit.__all__
    assert report.ok and report.dataset == "folder"
    assert report.to_dict()["splits"]["test"]["count"] == 2
    # Called from Python, the way to train on it is the Python call, not a shell command:
    # the settings as keywords, the folder as it was given (relative here).
    call = f"segkit.train(data={str(folder)!r}, dataset='folder', image_size=32)"
    assert report.command == call
    assert format_report(report).rstrip().endswith(f"run it: {call}")
    monkeypatch.chdir(folder.parent)
    report = segkit.check_data(Path(folder.name), dataset="folder", workers=2)
    assert report.command == f"segkit.train(data={folder.name!r}, dataset='folder', image_size=32)"
    configs: list = []
    monkeypatch.setattr(engine, "_run", lambda config, *a, **k: configs.append(config) or config)
    eval(report.command, {"segkit": segkit}, {})  # as a notebook's user pastes it
    assert configs[0].data == str(folder) and configs[0].image_size == 32


FOLDER_OPTIONS = (
    "valid_fraction, test_fraction, split_seed, classes, palette, ignore, ignore_color, values"
)


@pytest.mark.parametrize("dataset", [[], ["--dataset", "folder"]])
def test_an_unknown_dataset_option_is_one_line_naming_it_and_the_options(
    folder: Path, capsys: pytest.CaptureFixture[str], dataset: list[str]
) -> None:
    """As ``segkit run`` names a bad option: the flag, the close match and the options the
    layout's plugin takes (never its private ``_lenient``), also when the layout is
    recognised from the folder (no --dataset)."""
    argv = ["data", "check", str(folder), *dataset, "--dataset-opt", "foo=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "segkit: error: --dataset-opt foo=1: dataset 'folder' has no option 'foo'; it takes: "
        + FOLDER_OPTIONS
    )
    assert main([*argv[:-1], "split_sed=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "segkit: error: --dataset-opt split_sed=3: dataset 'folder' has no option 'split_sed' "
        f"(did you mean 'split_seed'?); it takes: {FOLDER_OPTIONS}"
    )


def test_private_parameters_are_never_options() -> None:
    """``_lenient`` (what ``audit`` passes) is neither listed nor suggested."""
    from segkit.errors import ConfigError

    assert "_lenient" not in registry.default_registry().option_names("datasets", "folder")
    with pytest.raises(ConfigError) as e:
        registry.create("datasets", "folder", Path("."), lenient=True)
    assert "_lenient" not in str(e.value) and "did you mean" not in str(e.value)
    assert str(e.value).endswith(f"It accepts: {FOLDER_OPTIONS}")


def test_run_and_evaluate_name_an_unknown_option_of_the_recognised_layout(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``segkit run`` without --dataset checks the option against the layout it recognised
    before reading anything; ``build_dataset`` (what ``evaluate`` uses) does the same."""
    from segkit.build import build_dataset
    from segkit.config import RunConfig
    from segkit.errors import ConfigError

    argv = ["run", "--data", str(folder), "--dataset-opt", "foo=1", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "segkit: error: --dataset-opt foo=1: dataset 'folder' has no option 'foo'; it takes: "
        + FOLDER_OPTIONS
    )
    with pytest.raises(ConfigError, match=r"^dataset_options=\{'foo': 1\}: dataset 'folder'"):
        build_dataset(RunConfig(data=str(folder), dataset_options={"foo": 1}))


def test_a_file_that_cannot_be_decoded_gets_the_advice_of_its_layout(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without split lists nothing names the file: delete it with its pair, or skip it."""
    shutil.rmtree(folder / "splits")
    (folder / "images" / "c.jpg").write_bytes(b"not a jpeg")
    (folder / "masks" / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rc, out = check(capsys, folder)
    assert rc == 1
    problems = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert problems[0].startswith(f"  error: {folder / 'images' / 'c.jpg'}: cannot decode image")
    assert problems[0].endswith(
        "the file is corrupt or truncated. Replace it, or delete it and its mask"
    )
    assert problems[1] == (
        f"  error: {folder / 'masks' / 'e.png'}: cannot decode mask (Truncated File Read); the "
        "file is corrupt. Replace it, or delete it and its image"
    )
    assert "split list" not in out
    assert out.rstrip().endswith(
        "FAILED: 2 problems would stop a run; check again once fixed (or leave the 2 files "
        "that cannot be decoded out: a run with --skip-bad-samples skips them)"
    )


def test_an_oxford_pet_file_that_cannot_be_decoded_is_removed_from_its_split_list(
    broken_pets: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trimap = sorted((broken_pets / "annotations" / "trimaps").glob("*.png"))[0]
    trimap.write_bytes(b"not a png")
    assert main(["data", "check", str(broken_pets)]) == 1
    out = capsys.readouterr().out
    assert f"  error: {trimap}: cannot decode mask (" in out
    assert "the file is corrupt. Replace it, or remove its name from the split list\n" in out
