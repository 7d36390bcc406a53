"""Values a run cannot use are refused in one line before anything is built, from a user
audit of `segkit run` and `segkit lr-find`: an infinite learning rate, a negative weight
decay, a device type segkit does not train on, an lr-find plot path matplotlib cannot
write; and more threads than cores is said on the run's first line."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.build import resolve_device
from segkit.cli import main
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.errors import ConfigError


@pytest.fixture(autouse=True)
def command_line():
    """Settings named as `segkit run` names them, by their flags (the command runs its work
    so; called from Python, the same checks name the keyword: tests/test_config.py)."""
    with given_as(COMMAND_LINE):
        yield


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

    # The usable cores (CPU affinity), as --num-workers' check counts them: not the host's.
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
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


def test_lr_find_probes_the_plot_folder_before_the_sweep(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    # A file in the way above the plot, and a read-only disk (os.access says yes to root):
    # both found by writing a probe, before any model is built.
    import errno
    import os

    from segkit.system import files

    (tmp_path / "afile").write_text("x")
    code = main(["lr-find", "--out", str(tmp_path / "afile" / "sub" / "lr.png")])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in err

    def refuse(fd: int) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.os, "fsync", refuse)
    code = main(["lr-find", "--out", str(tmp_path / "plots" / "lr.png")])
    err = capsys.readouterr().err
    assert (
        code == 2
        and f"--out {tmp_path / 'plots' / 'lr.png'}: the folder {tmp_path / 'plots'}" in err
    )
    assert os.strerror(errno.EROFS) in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no folder, no probe


def test_num_workers_far_above_the_cores_is_refused_naming_them(monkeypatch) -> None:
    from segkit.build import resolve_runtime
    from segkit.system import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    with pytest.raises(ConfigError) as e:
        resolve_runtime(RunConfig(num_workers=1000, device="cpu"))
    assert str(e.value).startswith(
        "--num-workers 1000: more than 4 x this machine's 2 usable cores (8 at most); "
    )
    assert "Pass --num-workers 2 or fewer, or leave it out (the default here: " in str(e.value)
    assert workers.check_workers(8, 2) is not None  # 4 x the cores: said, not refused
    assert workers.check_workers(2, 2) is None


def test_num_workers_above_the_cores_is_said_once_and_torch_warns_no_more(
    monkeypatch, capsys
) -> None:
    import warnings

    import torch

    from segkit.build import resolve_runtime
    from segkit.system import workers

    monkeypatch.setattr(workers, "_said", set())
    cores = workers.usable_cores()
    config = RunConfig(num_workers=cores + 1, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # a study's runs, evaluate after a run: one process, one line
            assert resolve_runtime(config).num_workers == cores + 1
        # What torch checks as each loader starts its workers: segkit has said it.
        loader = torch.utils.data.DataLoader(list(range(4)), num_workers=cores + 1)
        loader.check_worker_number_rationality()
    assert not [w for w in caught if "worker processes" in str(w.message)]
    err = capsys.readouterr().err
    assert err.count("segkit: --num-workers") == 1
    assert f"--num-workers {cores + 1} is more than this machine's {cores} usable core" in err


def test_a_recorded_worker_count_from_a_bigger_machine_becomes_the_default(monkeypatch) -> None:
    from segkit.system import workers

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    assert workers.recorded_workers(60) is None
    assert workers.recorded_workers(3) == 3
    assert workers.recorded_workers(None) is None
