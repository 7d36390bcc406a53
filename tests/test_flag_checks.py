"""Values a run cannot use are refused in one line before anything is built, from a user
audit of `segkit run` and `segkit lr-find`: an infinite learning rate, a negative weight
decay, a device type segkit does not train on, an lr-find plot path matplotlib cannot
write; and more threads than cores is said on the run's first line."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.build import resolve_device
from segkit.cli import main
from segkit.config import RunConfig
from segkit.errors import ConfigError


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -1.0])
def test_a_learning_rate_that_is_not_positive_and_finite_is_refused(lr: float) -> None:
    with pytest.raises(ConfigError, match=r"--lr .*: expected a positive learning rate"):
        RunConfig(lr=lr)


@pytest.mark.parametrize("wd", [-1.0, float("inf"), float("nan")])
def test_a_weight_decay_below_zero_or_infinite_is_refused(wd: float) -> None:
    with pytest.raises(ConfigError, match=r"--weight-decay .*: expected 0 or more"):
        RunConfig(weight_decay=wd)
    assert RunConfig(weight_decay=1e-4).weight_decay == 1e-4


@pytest.mark.parametrize("name", ["mps", "meta", "xpu"])
def test_a_device_type_segkit_does_not_train_on_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"--device {name}: segkit trains and predicts on"):
        resolve_device(name)


def test_more_threads_than_cores_is_said_on_the_first_line(monkeypatch) -> None:
    from segkit.system import threads

    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "_reason", None)
    assert threads.note(2) == "2 CPU threads"
    assert threads.note(64).startswith(
        "64 CPU threads (more than this machine's 2 cores: each parallel operation waits"
    )


@pytest.mark.parametrize(
    ("out", "said"),
    [("plot.txt", "expected a plot file ending in .png"), ("{tmp}", "is a folder; name a file")],
)
def test_lr_find_refuses_a_plot_path_it_cannot_write_before_the_sweep(
    tmp_path: Path, capsys, out: str, said: str
) -> None:
    code = main(["lr-find", "--out", out.format(tmp=tmp_path), "--image-size", "32"])
    err = capsys.readouterr().err
    assert code == 2 and said in err and "Traceback" not in err
