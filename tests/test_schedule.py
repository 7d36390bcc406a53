"""Learning-rate schedules: the lab's per-epoch exponential decay, cosine, warm-up, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import interrupt_in_epoch
from helpers import comparable, rows, tiny

from segkit.build import build_scheduler, lr_factor
from segkit.cli import main
from segkit.config import RunConfig
from segkit.errors import ConfigError, RunInterrupted
from segkit.training.engine import resume, train


def lrs(config: RunConfig, steps_per_epoch: int) -> list[float]:
    """The learning rate of every step of a run, read from a real optimizer."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    sched = build_scheduler(opt, config, steps_per_epoch)
    out = []
    for _ in range(steps_per_epoch * config.epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_exponential_is_the_labs_per_epoch_decay() -> None:
    config = RunConfig(epochs=4, lr=1e-3, lr_gamma=0.9)
    got = lrs(config, steps_per_epoch=5)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    lab = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    expected = []
    for _ in range(4):
        expected += [opt.param_groups[0]["lr"]] * 5
        opt.step()
        lab.step()
    assert got == pytest.approx(expected, rel=1e-12)


def test_cosine_warms_up_then_decays_towards_zero() -> None:
    config = RunConfig(epochs=10, lr=2e-3, schedule="cosine", warmup_epochs=1)
    got = lrs(config, steps_per_epoch=4)
    assert got[:5] == pytest.approx([0.5e-3, 1e-3, 1.5e-3, 2e-3, 2e-3])  # linear warm-up
    tail = got[4:]
    assert all(a > b for a, b in zip(tail, tail[1:], strict=False))  # then only down
    # half a cosine period over the 36 steps after warm-up: the midpoint is half the peak,
    # and the last step is one step short of 0
    assert got[4 + 18] == pytest.approx(1e-3)
    assert got[-1] == pytest.approx(1e-3 * (1 - math.cos(math.pi / 36)))


def test_warmup_also_applies_to_the_exponential_schedule() -> None:
    config = RunConfig(epochs=3, lr=1e-3, lr_gamma=0.5, warmup_epochs=0.5)
    got = lrs(config, steps_per_epoch=4)
    assert got == pytest.approx(
        [
            0.5e-3,
            1e-3,
            1e-3,
            1e-3,
            0.5e-3,
            0.5e-3,
            0.5e-3,
            0.5e-3,
            0.25e-3,
            0.25e-3,
            0.25e-3,
            0.25e-3,
        ]
    )


def test_a_scheduler_positioned_mid_run_continues_the_schedule() -> None:
    config = RunConfig(epochs=5, lr=1e-3, schedule="cosine", warmup_epochs=0.5)
    whole = lrs(config, steps_per_epoch=6)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    build_scheduler(opt, config, 6, steps_done=13)
    assert opt.param_groups[0]["lr"] == pytest.approx(whole[13])
    assert lr_factor(config, 6)(13) * 1e-3 == pytest.approx(whole[13])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schedule": "linear"}, "schedule='linear': expected one of exponential, cosine"),
        ({"warmup_epochs": -1.0}, "warmup_epochs=-1.0: expected a value from 0"),
        ({"epochs": 2, "warmup_epochs": 2.0}, "(not including) epochs=2"),
    ],
)
def test_bad_schedule_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig(**options)


def test_unknown_schedule_on_the_command_line(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run", "--schedule", "linear"])
    assert e.value.code == 2
    assert "invalid choice: 'linear'" in capsys.readouterr().err


@pytest.mark.slow
def test_cosine_run_records_its_learning_rates(tiny_pets: Path, tmp_path: Path) -> None:
    config = tiny(
        tiny_pets, tmp_path, epochs=3, schedule="cosine", warmup_epochs=1.0, name="cos", lr=1e-3
    )
    result = train(config, quiet=True)
    lr = [float(r["lr"]) for r in rows(tmp_path / "cos")]
    steps = math.ceil(result.history[0]["train_images"] / 4)  # batch 4
    assert lr[0] == pytest.approx(1e-3 / steps)  # the first warm-up step
    assert lr[1] == pytest.approx(1e-3)  # warm-up done: the peak
    assert 0 < lr[2] < lr[1]


@pytest.mark.slow
def test_resumed_cosine_run_matches_an_uninterrupted_one(
    tiny_pets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"epochs": 3, "schedule": "cosine", "warmup_epochs": 0.5, "seed": 5}
    train(tiny(tiny_pets, tmp_path, name="whole", **options), quiet=True)

    put_back = interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(RunInterrupted, match="holds epoch 2"):
        train(tiny(tiny_pets, tmp_path, name="cut", **options), quiet=True)
    put_back()
    resume(tmp_path / "cut", quiet=True)

    whole, resumed = comparable(tmp_path / "whole"), comparable(tmp_path / "cut")
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for a, b in zip(whole, resumed, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["epoch"], key)
