"""End to end through the command line: run, evaluate, predict, list, data synth, and the
messages a user sees for each kind of bad input."""

from __future__ import annotations

import csv
import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN
from PIL import Image

import segkit
from segkit.cli import main

TINY = [*TINY_RUN, "-q"]


@pytest.fixture(scope="module")
def run_dir(tiny_pets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch UNet run on tiny_pets at 32 px (slow tests only)."""
    out = tmp_path_factory.mktemp("runs")
    code = main(
        [
            "run",
            "--epochs",
            "2",
            "--data",
            str(tiny_pets),
            "--out",
            str(out),
            "--name",
            "e2e",
            "--keep-last",  # last.pt is read below
            *TINY,
        ]
    )
    assert code == 0
    return out / "e2e"


def error_of(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


@pytest.mark.slow
def test_run_writes_every_file_of_the_run_folder(run_dir: Path, capsys) -> None:
    for name in (
        "config.json",
        "metrics.csv",
        "curves.png",
        "best.pt",
        "last.pt",
        "predictions.png",
        "test_scores.csv",
        "summary.txt",
        "summary.json",
    ):
        assert (run_dir / name).is_file(), name
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "valid_dice", "valid_iou", "lr", "epoch_seconds"} <= set(rows[0])
    for row in rows:  # the seconds of each epoch: training, validation, checkpoint, all
        train, valid, ckpt, wall = (
            float(row[k]) for k in ("epoch_seconds", "valid_s", "checkpoint_s", "epoch_wall_s")
        )
        assert min(train, valid, ckpt) >= 0 and train + valid + ckpt <= wall
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "unet" and config["image_size"] == 32
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["test_dice"] <= 1.0 and summary["images_per_second"] > 0
    means = ("mean_train_s", "mean_valid_s", "mean_checkpoint_s", "mean_epoch_wall_s")
    assert all(summary[k] >= 0 for k in (*means, "checkpoint_write_s"))
    assert summary["checkpoint_writes"] >= 2  # last.pt of epochs 1 and 2 (and best.pt)
    assert summary["wall_s"] >= 2 * summary["mean_epoch_wall_s"]
    # Where the wall went: the parts add up to it, the training part is metrics.csv's.
    t = summary["time"]
    assert t["wall_s"] == summary["wall_s"]
    assert sum(v for k, v in t.items() if k != "wall_s") == pytest.approx(t["wall_s"], abs=0.01)
    train = sum(float(r["epoch_seconds"]) for r in rows)
    assert t["train_s"] == pytest.approx(train, abs=0.002)
    assert min(t[k] for k in ("setup_s", "test_s", "reports_s")) > 0
    assert (run_dir / "summary.txt").read_text().startswith("test dice ")
    with Image.open(run_dir / "predictions.png") as im:
        assert im.width == 4 * 160 + 3 * 4  # image | truth | prediction | overlay, 32 px x 5
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    assert ckpt["config"]["model"] == "unet" and ckpt["epoch"] in (1, 2)
    # best.pt holds the weights alone; last.pt the whole training state.
    assert ckpt["kind"] == "weights" and "optimizer" not in ckpt
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and {"optimizer", "rng", "history"} <= set(last)
    assert (run_dir / "best.pt").stat().st_size < (run_dir / "last.pt").stat().st_size / 2


@pytest.mark.slow
def test_test_scores_csv_lists_every_test_image_and_averages_to_test_dice(
    run_dir: Path, tiny_pets_dataset
) -> None:
    rows = list(csv.DictReader((run_dir / "test_scores.csv").open()))
    ids = [s.id for s in tiny_pets_dataset.samples("test")]
    assert [(int(r["index"]), r["id"]) for r in rows] == list(enumerate(ids))  # loader order
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("dice", "iou"):
        mean = sum(float(r[key]) for r in rows) / len(rows)
        assert mean == pytest.approx(summary[f"test_{key}"], rel=1e-6, abs=1e-7)
    with Image.open(run_dir / "predictions.png") as im:  # 5 test images: each shown once
        assert im.height > 5 * 160


@pytest.mark.slow
def test_config_json_records_what_auto_became(run_dir: Path) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    assert config["precision"] == "auto" and config["device"] == "auto"  # as asked
    resolved = config["resolved"]
    assert resolved["precision"] == "fp32" and resolved["device"] == "cpu"  # as run
    assert resolved["num_workers"] == 0 and resolved["channels_last"] is False
    assert resolved["plugins"]["models"] == {
        "name": "unet",
        "distribution": "segkit",
        "version": "0.1.0",
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["precision"], summary["device"]) == ("fp32", "cpu")
    env = resolved["environment"]  # what else decides the numbers
    assert env["segkit"] == segkit.__version__ and env["python"] == platform.python_version()
    assert env["albumentations"] and env["numpy"] and env["timm"] and env["cpu"]


@pytest.mark.slow
def test_a_runs_config_json_reproduces_its_test_dice_exactly(run_dir: Path, capsys) -> None:
    """`segkit run --config runs/X/config.json` trains X again: on the CPU the new run's
    test Dice and every epoch's metrics are bit-identical. --name (a flag) overrides the
    file; --num-workers 1 shows the worker count changes nothing."""
    again = ["run", "--config", str(run_dir / "config.json"), "--name", "again"]
    assert main([*again, "--num-workers", "1"]) == 0
    out = capsys.readouterr()
    assert "rerunning" not in out.out and "warning" not in out.err  # nothing differs
    rerun = run_dir.parent / "again"
    first = json.loads((run_dir / "summary.json").read_text())
    second = json.loads((rerun / "summary.json").read_text())
    assert second["test_dice"] == first["test_dice"]
    assert second["test_iou"] == first["test_iou"]

    def metrics(folder: Path) -> list[dict[str, str]]:
        rows = list(csv.DictReader((folder / "metrics.csv").open()))
        times = ("epoch_seconds", "valid_s", "checkpoint_s", "epoch_wall_s")
        return [{k: v for k, v in r.items() if k not in times} for r in rows]

    assert metrics(rerun) == metrics(run_dir)
    assert json.loads((rerun / "config.json").read_text())["resolved"]["num_workers"] == 1


@pytest.mark.slow
def test_a_rerun_says_which_data_and_versions_differ_from_the_runs_record(
    run_dir: Path, tiny_pets: Path, tmp_path: Path, capsys
) -> None:
    """A colleague's run folder rerun from its config.json on data that lists an image less, at
    another thread count: a warning names the splits that differ, a note after the header
    names the thread count and says the numbers may differ; neither refuses the run."""
    data = tmp_path / "pets"
    shutil.copytree(tiny_pets, data)
    listed = data / "annotations" / "trainval.txt"
    listed.write_text("".join(listed.read_text().splitlines(keepends=True)[1:]))  # one out
    capsys.readouterr()
    config = str(run_dir / "config.json")
    threads = json.loads((run_dir / "config.json").read_text())["resolved"]["threads"]
    other = 1 if threads != 1 else 2
    rerun = ["run", "--config", config, "--data", str(data), "--name", "other", "--epochs", "1"]
    assert main([*rerun, "--threads", str(other)]) == 0
    out = capsys.readouterr()
    assert f"segkit: warning: data {data} is not the data {config} recorded (" in out.err
    assert "images -> " in out.err and "pass --data with the run's data" in out.err
    lines = out.out.splitlines()
    assert lines[1] == (
        f"segkit: note: rerunning {config} with threads {threads} -> {other}: the numbers may "
        "differ from the recorded run's accordingly"
    )


@pytest.mark.slow
def test_evaluate_rebuilds_the_model_from_the_checkpoint(run_dir: Path, capsys) -> None:
    assert main(["evaluate", str(run_dir / "best.pt"), "--num-workers", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test dice ")
    expected = json.loads((run_dir / "summary.json").read_text())["test_dice"]
    assert f"{expected:.4f}" in out
    # A full training state (what best.pt was before it held the weights alone) works too.
    assert main(["evaluate", str(run_dir / "last.pt"), "--num-workers", "0"]) == 0
    assert capsys.readouterr().out.startswith("test dice ")


@pytest.mark.slow
def test_predict_writes_masks_at_the_image_size(
    run_dir: Path, tiny_pets: Path, tmp_path: Path, capsys
) -> None:
    images = sorted((tiny_pets / "images").glob("*.jpg"))[:2]
    assert (
        main(
            [
                "predict",
                str(run_dir / "best.pt"),
                *map(str, images),
                "--out",
                str(tmp_path),
                "--overlays",
            ]
        )
        == 0
    )
    for image in images:
        with Image.open(image) as src, Image.open(tmp_path / f"{image.stem}_mask.png") as mask:
            assert mask.size == src.size
            assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}
        assert (tmp_path / f"{image.stem}_overlay.png").is_file()


def test_list_shows_builtins_with_their_distribution(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "unet",
        "resnet34_unet",
        "bce_dice",
        "type3",
        "albumentations",
        "oxford_pet",
        "synthetic",
    ):
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert "segkit 0.1.0" in line and line.rstrip().endswith("ok")


def test_data_synth_writes_the_oxford_layout(tmp_path: Path, capsys) -> None:
    assert main(["data", "synth", str(tmp_path / "s"), "--count", "6", "--seed", "1"]) == 0
    assert len(list((tmp_path / "s" / "images").glob("*.jpg"))) == 6
    assert (tmp_path / "s" / "annotations" / "trainval.txt").is_file()


@pytest.mark.slow  # a fresh interpreter
def test_help_does_not_import_torch() -> None:
    code = "import sys, segkit.cli; segkit.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------------------- bad input


def test_missing_data_folder(capsys, tmp_path: Path) -> None:
    err = error_of(capsys, ["run", "--data", str(tmp_path / "nowhere"), *TINY])
    assert f"{tmp_path / 'nowhere'}" in err and "not found" in err


def test_unknown_model_suggests_close_names(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path))
    err = error_of(capsys, ["run", *TINY, "--model", "resnet34unet"])
    assert (
        "no model named 'resnet34unet'" in err
        and "'resnet34_unet'" in err
        and "segkit list models" in err
    )
    assert list(tmp_path.iterdir()) == []  # it failed before generating the default set


def test_image_size_not_divisible_by_32(capsys, tiny_pets: Path) -> None:
    err = error_of(
        capsys,
        [
            "run",
            "--model",
            "resnet34_unet",
            "--data",
            str(tiny_pets),
            "--image-size",
            "48",
            "--batch-size",
            "4",
        ],
    )
    assert "--image-size 48 is not divisible by 32" in err and "use 32 or 64" in err


def test_bad_option_value(capsys) -> None:
    err = error_of(capsys, ["run", "--epochs", "0"])
    assert "--epochs 0: expected a positive integer" in err
    err = error_of(capsys, ["run", "--save-every", "0"])
    assert "--save-every 0: expected a positive integer" in err


def one_epoch(data: Path, out: Path) -> list[str]:
    """``segkit run`` arguments for one tiny UNet epoch on ``data``."""
    return [
        "run",
        "--epochs",
        "1",
        "--data",
        str(data),
        "--out",
        str(out),
        *TINY,
    ]


def _first(root: Path, split_file: str = "test.txt") -> str:
    return (root / "annotations" / split_file).read_text().split()[0]


@pytest.mark.slow  # starts training: the error comes from the first batch
def test_corrupt_jpeg_is_named(capsys, broken_pets: Path, tmp_path: Path) -> None:
    name = _first(broken_pets, "trainval.txt")
    jpeg = broken_pets / "images" / f"{name}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 3])
    err = error_of(capsys, one_epoch(broken_pets, tmp_path / "o"))
    assert f"{name}.jpg: cannot decode image" in err and "truncated" in err


@pytest.mark.slow  # starts training
def test_trimap_with_foreign_values_is_named(capsys, broken_pets: Path, tmp_path: Path) -> None:
    name = _first(broken_pets)
    trimap = broken_pets / "annotations" / "trimaps" / f"{name}.png"
    values = np.asarray(Image.open(trimap)).copy()
    values[:3, :3] = 7
    Image.fromarray(values).save(trimap)
    err = error_of(capsys, one_epoch(broken_pets, tmp_path / "o"))
    assert f"{name}.png: values {{7}} found, masks of this dataset hold 1, 2, 3" in err


def test_split_list_naming_a_missing_image(capsys, broken_pets: Path) -> None:
    name = _first(broken_pets)
    (broken_pets / "images" / f"{name}.jpg").unlink()
    err = error_of(capsys, ["run", "--data", str(broken_pets), *TINY])
    assert f"{name}.jpg" in err and "test.txt" in err


def test_empty_split(capsys, broken_pets: Path) -> None:
    (broken_pets / "annotations" / "test.txt").write_text("")
    err = error_of(capsys, ["run", "--data", str(broken_pets), *TINY])
    assert "test.txt" in err and "no samples" in err


@pytest.mark.slow  # starts training
def test_image_and_mask_of_different_sizes(capsys, broken_pets: Path, tmp_path: Path) -> None:
    name = _first(broken_pets)
    trimap = broken_pets / "annotations" / "trimaps" / f"{name}.png"
    Image.open(trimap).resize((40, 30), Image.NEAREST).save(trimap)
    err = error_of(capsys, one_epoch(broken_pets, tmp_path / "o"))
    assert f"{name}.png: mask is 40x30 but image {name}.jpg is" in err


def test_checkpoint_errors(capsys, tmp_path: Path) -> None:
    from segkit.config import RunConfig
    from segkit.training import checkpoint as ckpt_io

    whole = tmp_path / "whole.pt"  # a segkit checkpoint, small: no run needed
    state = {"conv.weight": torch.randn(64, 3, 3, 3)}
    config = RunConfig(model="unet", image_size=32).to_dict()
    ckpt_io.save_atomic(
        {"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "config": config, "model": state},
        whole,
    )
    assert ckpt_io.load(whole)["config"]["model"] == "unet"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[:1000])
    assert "not a readable checkpoint" in error_of(capsys, ["evaluate", str(truncated)])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert "not a segkit checkpoint" in error_of(capsys, ["evaluate", str(foreign)])
    bomb = tmp_path / "bomb.pt"
    torch.save({"format": "segkit-checkpoint", "payload": Path("/etc/passwd")}, bomb)
    image = tmp_path / "photo.jpg"  # predict checks its inputs before the checkpoint
    Image.new("RGB", (8, 8)).save(image)
    out = str(tmp_path / "out")
    assert "refused" in error_of(capsys, ["predict", str(bomb), str(image), "--out", out])
    assert "checkpoint not found" in error_of(capsys, ["evaluate", str(tmp_path / "none.pt")])
    err = error_of(capsys, ["evaluate", str(image)])
    assert "photo.jpg: not a checkpoint" in err and "best.pt or last.pt" in err


def test_encoder_and_weights_flags_are_model_options() -> None:
    from segkit.cli import build_parser, settings_from_args

    args = build_parser().parse_args(
        [
            "run",
            "--encoder",
            "resnet18",
            "--weights",
            "/w.pt",
            "--model-opt",
            "decoder_channels=[8,8,8,8,8]",
        ]
    )
    assert settings_from_args(args)["model_options"] == {
        "decoder_channels": [8, 8, 8, 8, 8],
        "encoder": "resnet18",
        "weights": "/w.pt",
    }


def test_restoring_a_checkpoint_does_not_need_the_initial_weights_file(tmp_path: Path) -> None:
    from segkit.build import build_model
    from segkit.config import RunConfig
    from segkit.errors import ConfigError

    config = RunConfig(
        model="timm_unet",
        model_options={"encoder": "resnet18", "weights": str(tmp_path / "gone.pt")},
        image_size=64,
    )
    with pytest.raises(ConfigError, match="gone.pt"):
        build_model(config)
    assert isinstance(build_model(config, restoring=True), torch.nn.Module)


@pytest.mark.slow  # a shell pipeline
def test_list_into_a_closed_pipe_is_quiet() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m segkit list | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.startswith("KIND") and "Traceback" not in proc.stderr


def test_resume_refuses_settings_it_would_ignore(capsys, tmp_path: Path) -> None:
    err = error_of(capsys, ["run", "--resume", str(tmp_path), "--model-opt", "a=1", "--lr", "1"])
    assert "--lr, --model-opt cannot change them (only --epochs can" in err
    assert f"segkit run --config {tmp_path / 'config.json'}" in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["run", "--epcohs", "2"], "segkit run: error: unrecognized arguments: --epcohs 2 "
         "(--epcohs: did you mean --epochs?)"),
        (["data", "check", "--dta=x"], "segkit data check: error: unrecognized arguments: "
         "--dta=x (--dta: did you mean --data?)"),
        (["predict", "c.pt", "i.png", "--out", "o", "--tresh=0.3"], "(--tresh: did you mean --threshold?)"),
        (["run", "--banana", "1"], "segkit run: error: unrecognized arguments: --banana 1\n"),
    ],
)  # fmt: skip
def test_a_misspelt_flag_gets_the_closest_flag_of_its_command(capsys, argv, said) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert said in capsys.readouterr().err


def test_preview_defaults_to_the_recipe_run_defaults_to() -> None:
    from segkit.cli import build_parser
    from segkit.config import RunConfig

    args = build_parser().parse_args(["preview"])
    assert args.recipe == RunConfig().recipe == "type3"


def test_weights_of_other_model_options_name_the_tensor_and_the_fix(capsys, tmp_path) -> None:
    """A timm_unet checkpoint from before the 3x3 head (head_kernel=1, not recorded then)."""
    from segkit import create_model
    from segkit.config import RunConfig
    from segkit.training import checkpoint as ckpt_io

    old = create_model(
        "timm_unet", in_channels=3, out_channels=1, encoder="resnet18", head_kernel=1
    )
    config = RunConfig(model="timm_unet", image_size=32, model_options={"encoder": "resnet18"})
    path = tmp_path / "old.pt"
    ckpt = {"format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "config": config.to_dict()}
    ckpt_io.save_atomic({**ckpt, "model": old.state_dict()}, path)
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (32, 32)).save(image)
    err = error_of(capsys, ["predict", str(path), str(image), "--out", str(tmp_path / "o")])
    assert re.search(r"old\.pt: weights do not fit model 'timm_unet': \S*head\S* is \(1, \d+, 1, 1\) "
                     r"in the checkpoint and \(1, \d+, 3, 3\) in the model rebuilt with "
                     r"encoder=resnet18\. .*--model-opt KEY=VALUE", err), err  # fmt: skip


def test_a_run_folder_given_as_the_checkpoint_names_the_file_to_pass(tmp_path, capsys) -> None:
    """`segkit predict runs/x photos/` said "runs/x: checkpoint not found" of a folder that
    holds best.pt; now it names the file, or says the folder holds none."""
    from helpers import save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    empty = (
        f"segkit: error: {run} is a folder without best.pt or last.pt: pass the path of a "
        "best.pt or last.pt in a run folder made by segkit run (a run writes them at the end "
        "of its first epoch)\n"
    )
    assert error_of(capsys, ["evaluate", str(run)]) == empty
    save_checkpoint(run / "last.pt")
    err = error_of(capsys, ["export", str(run), "--out", str(tmp_path / "m.onnx")])
    assert (
        err
        == f"segkit: error: {run} is a folder; pass the checkpoint file in it: {run / 'last.pt'}\n"
    )
    save_checkpoint(run / "best.pt")
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(image)
    err = error_of(capsys, ["predict", str(run), str(image), "--out", str(tmp_path / "out")])
    assert err == (
        f"segkit: error: {run} is a folder; pass the checkpoint file in it: {run / 'best.pt'} "
        "(the best epoch's weights)\n"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.onnx").exists()
