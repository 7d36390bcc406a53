"""`segkit lr-find` / :func:`segkit.lr_find`: an exponential learning-rate sweep that
leaves the model and optimizer as it found them and writes only its plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

import segkit
from segkit import build
from segkit.cli import main
from segkit.training.lr_sweep import suggest


def test_suggestion_is_the_steepest_descent_of_the_loss() -> None:
    lrs = [10.0**e for e in range(-6, 1)]
    losses = [1.0, 0.99, 0.98, 0.6, 0.2, 0.19, 2.0]
    assert suggest(lrs, losses) == 1e-3  # (0.2 - 0.98) over two decades: the steepest
    assert suggest(lrs[:2], losses[:2]) == lrs[0]


@pytest.mark.slow
def test_lr_find_restores_the_model_and_optimizer(tiny_pets: Path) -> None:
    config = segkit.RunConfig(
        model="unet", image_size=32, batch_size=4, num_workers=0, data=str(tiny_pets)
    )
    runtime = build.resolve_runtime(config)
    t = build.build_training(config, runtime)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    lr_before = t.optimizer.param_groups[0]["lr"]

    lrs, losses, suggestion = segkit.lr_find(
        config, start_lr=1e-5, end_lr=1e-1, steps=8, training=t, runtime=runtime
    )

    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert t.optimizer.state_dict()["state"] == {}
    assert t.optimizer.param_groups[0]["lr"] == lr_before
    assert 2 <= len(lrs) == len(losses) <= 8
    assert lrs[0] == pytest.approx(1e-5)
    assert all(b > a for a, b in zip(lrs, lrs[1:], strict=False))
    assert all(math.isfinite(x) for x in losses)
    assert lrs[0] <= suggestion <= lrs[-1]


@pytest.mark.slow
def test_cli_writes_the_plot_and_nothing_else(
    tiny_pets: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["lr-find", *TINY_RUN, "--data", str(tiny_pets), "--steps", "6", "--out", "lr.png"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.png"]
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = {line.split(" ")[0]: line for line in out.splitlines()}
    suggested = float(lines["suggested"].split()[2])
    assert 1e-7 <= suggested <= 1.0
    assert "min loss lr / 10" in out and "plot: lr.png" in out
    assert "unet + bce_dice via albumentations" in out  # --loss auto, resolved


def test_suggestion_leaves_out_the_noisy_start() -> None:
    lrs = [10 ** (-7 + 7 * i / 59) for i in range(60)]
    losses = [1.0 - 0.001 * i for i in range(60)]
    losses[1] = 0.5  # a noisy drop in the first points is not the steepest descent
    losses[30] = 0.7  # a real drop in the middle is
    assert suggest(lrs, losses) in (lrs[29], lrs[31])
