"""`make gpu-check --dry-run`: every step of the GPU check at tiny sizes on this machine, so
the script cannot rot while no GPU is at hand (on a GPU machine it runs at full size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_and_writes_the_results(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    steps = {s["name"]: s["status"] for s in results["steps"]}
    expected = {"env", "data", "cuda-tier", "bench-model", "bench-feed", "bench-epoch",
                "run-resnet34_unet", "run-unet", "profile"}  # fmt: skip
    assert set(steps) == expected and set(steps.values()) == {"ok"}, steps
    # Both models x both loaders in the epoch suite, each with its own bound.
    epochs = {(b["model"], b["loader"]) for b in results["benchmarks"] if "epoch_seconds" in b}
    assert epochs == {
        (m, lo) for m in ("unet", "resnet34_unet") for lo in ("dali", "albumentations")
    }
    for model in ("unet", "resnet34_unet"):
        summary = json.loads((out / "runs" / f"{model}-dali" / "summary.json").read_text())
        assert 0.0 <= summary["test_dice"] <= 1.0
        assert (out / f"profile-{model}.txt").read_text().count("\n") > 10
    table = (out / "table.md").read_text()
    for heading in ("## Steps", "## Epoch", "## Model only, loader only, feed", "## segkit run"):
        assert heading in table
    assert "(dry run, tiny sizes)" in table and table in proc.stdout
    # The CUDA tier ran (collected, skipped here with its reason).
    assert "skipped" in (out / "logs" / "cuda-tier.log").read_text()


def test_gpu_check_without_a_gpu_says_to_use_dry_run(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look it up
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "o")]) == 2
