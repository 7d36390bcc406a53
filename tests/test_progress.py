"""What a run prints while it trains: the estimate line, plain progress lines off a
terminal, and no output per step."""

from __future__ import annotations

import io

import pytest

from segkit.config import COMMAND_LINE, given_as
from segkit.training.progress import EpochProgress, ProgressSettings, RunEstimate, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def epoch(estimate, clock, lines, *, steps=50, log_every=30.0, step_s=0.5, epoch_no=1):
    settings = ProgressSettings(
        epochs=10,
        batch_size=8,
        say=lines.append,
        estimate=estimate,
        log_every=log_every,
        quiet=False,
        stream=io.StringIO(),  # not a terminal
        clock=clock,
    )
    p = EpochProgress(settings, epoch_no, steps)
    for i in range(steps):
        clock.now += step_s * (10 if i < 3 else 1)  # a slow warm-up, then steady steps
        p.update(1)
        if i % 20 == 0:
            p.set_postfix(loss=f"{1.0 / (i + 1):.4f}")
    p.close(seconds=steps * step_s)
    return p


def test_the_estimate_leaves_out_warm_up_and_counts_the_epochs_to_go() -> None:
    lines: list[str] = []
    est = RunEstimate(lines.append, epochs_left=10, device_type="cuda", resumed=False)
    epoch(est, Clock(), lines, log_every=0)
    assert lines == [
        "segkit: about 25 s per epoch of training, 4.0 min for the 10 epochs to go "
        "(timed over steps 4-23; validation and checkpoints not included)"
    ]
    epoch(est, Clock(), lines, log_every=0, epoch_no=2)  # once per run
    assert len(lines) == 1


@pytest.mark.parametrize(("left_s", "fit"), [(100.0, 4), (24.0, 1), (1000.0, None)])
def test_the_estimate_says_how_many_epochs_fit_max_time(left_s: float, fit: int | None) -> None:
    # 25 s an epoch, estimated 23 steps into the first (27 steps, 13.5 s, to go): with 100 s
    # left, that epoch and 3 more (86.5 s); with 24 s, that epoch alone; 1000 s: all 10.
    lines: list[str] = []
    est = RunEstimate(
        lines.append, epochs_left=10, device_type="cuda", resumed=False, max_time="3m",
        time_left=lambda: left_s,
    )  # fmt: skip
    with given_as(COMMAND_LINE):  # `segkit run`'s lines name the flag
        epoch(est, Clock(), lines, log_every=0)
    text = "\n".join(lines)
    if fit is None:
        assert "--max-time" not in text
    else:
        assert text.endswith(
            f"\nsegkit: --max-time 3m: at this pace training stops after about {fit} of the "
            "10 epochs"
        )


@pytest.mark.parametrize(
    ("device", "resumed", "hint"),
    [("cpu", False, True), ("cpu", True, False), ("cuda", False, False)],
)
def test_an_hour_long_cpu_run_gets_the_fast_settings_hint_once(device, resumed, hint) -> None:
    lines: list[str] = []
    est = RunEstimate(lines.append, epochs_left=300, device_type=device, resumed=resumed)
    epoch(est, Clock(), lines, log_every=0)  # 25 s x 300 epochs: 2.1 h
    assert "2.1 h for the 300 epochs to go" in lines[0]  # 13.5 s of this one, 299 x 25 s
    assert ("over an hour on the CPU" in lines[0]) is hint
    if hint:  # from Python (segkit.train), the keywords; `segkit run`, the flags
        assert "image_size=64 batch_size=8 (the settings of `make run`)" in lines[0]
        assert "a GPU (device='cuda')" in lines[0]
        lines.clear()
        est = RunEstimate(lines.append, epochs_left=300, device_type=device, resumed=resumed)
        with given_as(COMMAND_LINE):
            epoch(est, Clock(), lines, log_every=0)
        assert "--image-size 64 --batch-size 8 (the settings of `make run`)" in lines[0]
        assert "a GPU (--device cuda)" in lines[0]


def test_a_short_run_on_the_cpu_gets_no_hint() -> None:
    lines: list[str] = []
    est = RunEstimate(lines.append, epochs_left=3, device_type="cpu", resumed=False)
    epoch(est, Clock(), lines, log_every=0)
    assert "over an hour" not in lines[0]


def test_an_epoch_too_short_to_time_is_estimated_from_its_whole_time() -> None:
    lines: list[str] = []
    est = RunEstimate(lines.append, epochs_left=4, device_type="cpu", resumed=False)
    epoch(est, Clock(), lines, steps=4, log_every=0)
    assert lines == [
        "segkit: about 2 s per epoch of training, 6 s for the 3 epochs to go "
        "(timed over epoch 1; validation and checkpoints not included)"
    ]


def test_an_estimate_made_at_the_end_of_a_one_epoch_run_is_not_said() -> None:
    lines: list[str] = []
    est = RunEstimate(lines.append, epochs_left=1, device_type="cpu", resumed=False)
    epoch(est, Clock(), lines, steps=4, log_every=0)
    assert lines == []


def test_off_a_terminal_a_plain_line_every_log_every_seconds() -> None:
    lines: list[str] = []
    epoch(None, Clock(), lines, steps=200, log_every=30.0, step_s=0.5)
    # 200 steps of 0.5 s (the first three 5 s): 113.5 s, so a line at about 30, 60, 90 s.
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/10  step ")
    assert "images/s  loss " in lines[0]
    steps = [int(line.split("step ")[1].split("/")[0]) for line in lines]
    assert steps == sorted(steps) and all("/200" in line for line in lines)


def test_log_every_zero_and_quiet_print_nothing() -> None:
    lines: list[str] = []
    epoch(None, Clock(), lines, steps=200, log_every=0)
    assert lines == []
    settings = ProgressSettings(
        epochs=1, batch_size=1, say=lines.append, estimate=None,
        log_every=0.001, quiet=True, stream=io.StringIO(), clock=Clock(),
    )  # fmt: skip
    p = EpochProgress(settings, 1, 5)
    for _ in range(5):
        p.update(1)
    assert lines == [] and p.bar is None


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (4, 89, 90, 600, 5399, 5400, 36000)] == [
        "4 s", "89 s", "1.5 min", "10.0 min", "90.0 min", "1.5 h", "10.0 h"
    ]  # fmt: skip


def test_log_every_is_validated() -> None:
    from segkit.config import RunConfig
    from segkit.errors import ConfigError

    assert RunConfig(log_every=0).log_every == 0
    with pytest.raises(ConfigError, match="^log_every=-1.0: expected 0 or more seconds"):
        RunConfig(log_every=-1)


@pytest.mark.slow
def test_a_run_off_a_terminal_prints_the_estimate_and_progress_lines(
    tiny_pets, tmp_path, capsys
) -> None:
    from conftest import TINY_RUN

    from segkit.cli import main

    args = [*TINY_RUN, "--data", str(tiny_pets), "--out", str(tmp_path), "--epochs", "2"]
    assert main(["run", *args, "--log-every", "0.001"]) == 0
    out = capsys.readouterr().out.splitlines()
    estimates = [line for line in out if line.startswith("segkit: about ")]
    assert len(estimates) == 1 and "for the 1 epoch to go" in estimates[0]
    progress = [line for line in out if line.startswith("epoch 1/2  step ")]
    assert progress and all("images/s" in line for line in progress)


@pytest.mark.slow
def test_a_one_epoch_runs_first_line_says_1_epoch(tiny_pets, tmp_path, capsys) -> None:
    from conftest import TINY_RUN

    from segkit.cli import main

    args = [*TINY_RUN, "--data", str(tiny_pets), "--out", str(tmp_path), "--epochs", "1"]
    assert main(["run", *args]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("segkit: ") and ", 1 epoch -> " in first, first
