"""Data-parallel training: two CPU processes on the gloo backend, launched by torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_RUN

from segkit.cli import _without_devices


@pytest.mark.slow
def test_two_processes_train_in_sync_and_rank_0_alone_writes(
    tiny_pets: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    args = [
        "run",
        "--devices",
        "2",
        *TINY_RUN,
        "--epochs",
        "2",
        "--data",
        str(tiny_pets),
        "--out",
        str(out),
        "--name",
        "ddp",
        "-q",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "segkit", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test dice ") == 1  # one voice: rank 0
    assert [p.name for p in out.iterdir()] == ["ddp"]  # one run folder
    assert (out / "ddp" / "test_scores.csv").read_text().count("\n") == 1 + 5  # 5 test images
    summary = json.loads((out / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["weights_in_sync"] is True  # both ranks ended with identical weights
    # 13 train images, sharded over 2 ranks like DistributedSampler: 7 each (one repeated);
    # batches of 4 with --last-batch drop (the default): one batch of 4 on each rank, and
    # the training metrics count both ranks' images.
    rows = (out / "ddp" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert [int(r.split(",")[header.index("train_images")]) for r in rows[1:]] == [8, 8]


def test_devices_flag_is_removed_for_the_processes_it_launches() -> None:
    assert _without_devices(["run", "--devices", "2", "--epochs", "3"]) == ["run", "--epochs", "3"]
    assert _without_devices(["run", "--devices=4", "-q"]) == ["run", "-q"]


@pytest.mark.slow
def test_two_processes_accumulate_in_sync(tiny_pets: Path, tmp_path: Path) -> None:
    """--accumulate 2 under DDP: no_sync on a group's first batch, the all-reduce on its
    last (7 images per rank in batches of 4: one group of 2 batches); the ranks' weights
    end identical, so the gradients were averaged across them. --max-time 1s (less than
    the set-up) stops the run after its first epoch of 3: rank 0 decides, both ranks stop
    (a hang or a second epoch on rank 1 would fail here)."""
    out = tmp_path / "runs"
    args = [*TINY_RUN, "--epochs", "3", "--accumulate", "2", "--ema", "0.5", "--max-time", "1s"]
    args += ["--data", str(tiny_pets), "--out", str(out), "--name", "acc", "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "segkit", "run", "--devices", "2", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "acc" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["weights_in_sync"] is True
    assert (summary["epochs_run"], summary["stopped_by"]) == (1, "max_time")
