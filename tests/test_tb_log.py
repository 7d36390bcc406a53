"""``--log tensorboard`` (segkit.reports.tb_log): the one-line error without the package, and the
event files read back with TensorBoard's own reader where it is installed (CI installs the
``tensorboard`` extra)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from segkit.cli import main
from segkit.config import RunConfig


def test_log_tensorboard_without_the_package_says_what_to_install(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    code = main(["run", "--log", "tensorboard", "--out", str(tmp_path), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "--log tensorboard needs the tensorboard package" in err
    assert "pip install 'segkit[tensorboard]'" in err
    assert not any(tmp_path.iterdir())  # stopped before the run folder


def test_the_tensorboard_writer_logs_scalars_and_the_grid(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from segkit.build import resolve_runtime
    from segkit.contracts import Batch
    from segkit.reports.tb_log import TensorBoardLog
    from segkit.training.loops import EvalContext

    config = RunConfig(log="tensorboard", epochs=2, log_images_every=2, device="cpu")
    log = TensorBoardLog(tmp_path, config)
    row = {"epoch": 1, "train_loss": 0.9, "valid_loss": float("nan"), "valid_dice": 0.5,
           "lr": 1e-3, "epoch_seconds": 2.0}  # fmt: skip
    log.epoch(row)
    log.epoch({**row, "epoch": 2, "train_loss": 0.7})
    assert not log.wants_grid(1) and log.wants_grid(2)
    images = torch.rand(5, 3, 16, 16)
    masks = (torch.rand(5, 1, 16, 16) > 0.5).float()
    loader = [Batch(images[:3], masks[:3]), Batch(images[3:], masks[3:])]
    model = torch.nn.Conv2d(3, 1, 1)
    picture = log.grid(2, model, loader, EvalContext(resolve_runtime(config)))  # unnormalized
    assert picture is not None and picture.shape[1] == 4 * 160 + 3 * 4  # 4 columns of tiles
    log.test({"dice": 0.8, "iou": 0.7}, 2)
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert [e.value for e in events.Scalars("loss/train")] == pytest.approx([0.9, 0.7])
    assert "loss/valid" not in tags["scalars"]  # NaN: not measured, not logged
    assert {"dice/valid", "lr", "seconds/train", "test/dice"} <= set(tags["scalars"])
    assert [e.step for e in events.Images("predictions/valid")] == [2]


@pytest.mark.slow
def test_a_run_logs_to_tensorboard(tiny_pets: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from segkit.training.engine import train

    config = RunConfig(model="unet", image_size=32, batch_size=4, num_workers=0, epochs=2,
                       data=str(tiny_pets), out=str(tmp_path), name="tb", log="tensorboard",
                       log_images_every=1)  # fmt: skip
    result = train(config, quiet=True)
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    metrics = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    logged = [e.value for e in events.Scalars("dice/valid")]
    assert logged == pytest.approx([float(r["valid_dice"]) for r in metrics], rel=1e-5)
    assert [e.step for e in events.Images("predictions/valid")] == [1, 2]
    assert events.Scalars("test/dice")[0].value == pytest.approx(result.test["dice"])
