"""--threads: torch's CPU threads, a number or auto (fewer on a machine busy with other
work, said in the run's first line and recorded in config.json)."""

from __future__ import annotations

import pytest
import torch

import segkit
from segkit import build
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.system import threads as threads_mod


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not decided yet, its threads restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads_mod, "_torch_default", None)
    monkeypatch.setattr(threads_mod, "_auto", None)
    monkeypatch.setattr(threads_mod, "_reason", None)
    monkeypatch.setattr(threads_mod, "runnable_now", lambda: None)  # the load average alone
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield monkeypatch
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("default", "cores", "load", "expected"),
    [
        (2, 2, 0.0, 2),  # idle: torch's default
        (2, 2, 0.6, 2),  # a fraction of a core of other work leaves it to us
        (2, 2, 1.0, 1),
        (2, 2, 18.9, 1),  # the 2-core machine this was measured on: never below one
        (16, 16, 10.2, 6),
        (4, 64, 40.0, 4),  # never above torch's default (a container's share of a host)
    ],
)
def test_auto_uses_the_cores_the_load_leaves_free(default, cores, load, expected):
    assert threads_mod.auto_threads(default, cores, load) == expected


def test_auto_on_a_busy_machine_says_why_in_the_note(fresh, capsys):
    fresh.setattr(threads_mod.os, "getloadavg", lambda: (7.5, 6.0, 5.0))
    fresh.setattr(threads_mod.os, "cpu_count", lambda: 8)
    fresh.setattr(threads_mod, "usable_cores", lambda: 8)  # all 8 this process's
    torch.set_num_threads(4)  # torch's default in this process, as far as segkit knows
    assert threads_mod.apply_threads("auto") == 1
    assert torch.get_num_threads() == 1
    with given_as(COMMAND_LINE):  # segkit run: the flag
        assert threads_mod.note(1) == (
            "1 CPU thread (load average 7.5 on 8 cores, torch's default 4; --threads N to choose)"
        )
    assert threads_mod.note(1) == (  # a run started from Python: the keyword
        "1 CPU thread (load average 7.5 on 8 cores, torch's default 4; threads=N to choose)"
    )
    # A number is set as given (and noted as such); auto again is the first decision.
    assert threads_mod.apply_threads(3) == 3 and torch.get_num_threads() == 3
    assert threads_mod.note(3) == "3 CPU threads"
    assert threads_mod.apply_threads("auto") == 1 and torch.get_num_threads() == 1
    assert capsys.readouterr().err == ""  # nothing printed: an error stays one line


def test_more_threads_than_cores_names_auto_as_the_setting_was_given(fresh):
    fresh.setattr(threads_mod, "usable_cores", lambda: 2)
    said = "3 CPU threads (more than this machine's 2 cores: each parallel operation waits for "
    with given_as(COMMAND_LINE):
        assert threads_mod.note(3) == said + (
            "threads that take turns on a core; --threads auto chooses)"
        )
    assert threads_mod.note(3) == said + (
        "threads that take turns on a core; threads='auto' chooses)"
    )


def test_auto_on_an_idle_machine_or_with_omp_num_threads_keeps_the_default(fresh, capsys):
    fresh.setattr(threads_mod.os, "getloadavg", lambda: (0.2, 0.1, 0.1))
    fresh.setattr(threads_mod.os, "cpu_count", lambda: 2)
    torch.set_num_threads(2)
    assert threads_mod.apply_threads("auto") == 2
    fresh.setattr(threads_mod, "_auto", None)
    fresh.setattr(threads_mod.os, "getloadavg", lambda: (30.0, 30.0, 30.0))
    fresh.setenv("OMP_NUM_THREADS", "2")  # the user chose: auto keeps it
    assert threads_mod.apply_threads("auto") == 2
    assert capsys.readouterr().err == ""


def test_the_runtime_applies_and_records_the_setting(fresh):
    runtime = build.resolve_runtime(RunConfig(device="cpu", threads=1))
    assert torch.get_num_threads() == 1
    assert runtime.threads == 1 and runtime.record()["threads"] == 1


@pytest.mark.slow
def test_a_resumed_auto_run_keeps_the_count_it_started_with(fresh, tiny_pets, tmp_path, capsys):
    """--threads auto chose 1 thread on a busy machine; the machine is idle when the run is
    resumed: the resume trains on 1 thread (CPU sums round by thread count, so a seeded
    resume equals the unbroken run only at the count it started with) and says why."""
    from segkit.training import checkpoint as ckpt_io
    from segkit.training import engine

    fresh.setattr(threads_mod.os, "getloadavg", lambda: (7.5, 6.0, 5.0))
    fresh.setattr(threads_mod.os, "cpu_count", lambda: 2)
    torch.set_num_threads(2)
    config = RunConfig(
        data=str(tiny_pets), model="unet", image_size=32, batch_size=4, epochs=1,
        num_workers=0, threads="auto", keep_last=True, out=str(tmp_path), name="r", seed=1,
    )  # fmt: skip
    engine.train(config)
    last = ckpt_io.load(tmp_path / "r" / "last.pt", map_location="cpu")
    assert last["threads"] == 1
    # The checkpoints name the package of each plugin (a moved best.pt still can).
    best = ckpt_io.load(tmp_path / "r" / "best.pt", map_location="cpu")
    for state in (last, best):
        assert state["plugins"]["models"] == {
            "name": "unet", "distribution": "segkit", "version": segkit.__version__
        }  # fmt: skip
    fresh.setattr(threads_mod, "_auto", None)  # a new process, on an idle machine
    fresh.setattr(threads_mod, "_reason", None)
    fresh.setattr(threads_mod.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    torch.set_num_threads(2)
    capsys.readouterr()
    engine.resume(tmp_path / "r", epochs=2)
    assert torch.get_num_threads() == 1
    assert "1 CPU thread (as when it started" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("average", "now", "expected"),
    [
        (1.2, 0.0, 2),  # a minute after the last run ended: the average still counts it
        (18.9, 17.0, 1),  # busy now too
        (0.1, 3.0, 2),  # a burst now, idle on average: the lower one
    ],
)
def test_auto_counts_only_work_that_is_still_running(fresh, average, now, expected):
    fresh.setattr(threads_mod.os, "getloadavg", lambda: (average, 1.0, 1.0))
    fresh.setattr(threads_mod.os, "cpu_count", lambda: 2)
    fresh.setattr(threads_mod, "runnable_now", lambda: now)
    torch.set_num_threads(2)
    assert threads_mod.apply_threads("auto") == expected


def test_runnable_now_reads_the_kernels_count_less_this_process() -> None:
    now = threads_mod.runnable_now(samples=2, every=0.0)
    assert now is None or now >= 0
