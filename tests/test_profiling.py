"""segkit run --profile: which steps are profiled, what the report says, and the run's files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_RUN

from segkit.cli import main
from segkit.config import COMMAND_LINE, RunConfig, given_as
from segkit.errors import ConfigError
from segkit.training import run_folder
from segkit.training.profiling import FILES, ProfiledLoader, device_busy_s

CPU = torch.device("cpu")


class Batches:
    """A loader of ``n`` batches that does a little torch work for each one it hands out."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        for i in range(self.n):
            yield torch.full((4,), float(i)).sum()


def consume(loader: ProfiledLoader) -> list[float]:
    out = []
    for batch in loader:
        out.append(float((batch * 2).sum()))  # "the step"
    return out


@pytest.mark.parametrize(
    "batches,steps,first,last",
    [
        (20, 4, 6, 9),  # the first 5 steps are left out
        (7, 4, 4, 7),  # a short epoch: the window ends with it
        (3, 4, 1, 3),  # shorter than the window: all of it
    ],
)
def test_the_window_leaves_the_warm_up_out(
    batches: int, steps: int, first: int, last: int, tmp_path: Path
) -> None:
    loader = ProfiledLoader(Batches(batches), steps, CPU)
    assert len(loader) == batches
    loader.set_epoch(3)  # the loader's own methods pass through
    assert loader.loader.epoch == 3
    assert consume(loader) == [2.0 * 4 * i for i in range(batches)]  # every batch, unchanged
    assert loader.done == last - first + 1
    line = loader.report(tmp_path, epoch=1)
    assert line.startswith(f"segkit: profiled steps {first}-{last} of epoch 1: ")
    assert line.endswith(f"profile.txt and profile-trace.json in {tmp_path}")
    text = (tmp_path / "profile.txt").read_text()
    assert text.startswith(f"segkit run --profile: steps {first}-{last} of epoch 1 on cpu\n")
    assert "host: waiting for data " in text and "in the step and its metrics " in text
    assert "device: none (a CPU run" in text
    assert "segkit.step" in text and "segkit.data" in text  # torch's table, with our ranges
    trace = json.loads((tmp_path / "profile-trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"segkit.data", "segkit.step"} <= names
    steps_seen = sum(1 for e in trace["traceEvents"] if e.get("name") == "segkit.step")
    assert steps_seen == last - first + 1


def test_a_loop_that_breaks_off_in_the_window_still_reports(tmp_path: Path) -> None:
    loader = ProfiledLoader(Batches(20), 10, CPU)
    for i, _ in enumerate(loader):
        if i == 7:  # steps 6, 7 and 8 were profiled (the 8th is left when it breaks)
            break
    assert loader.profiler is None  # stopped when the generator closed
    assert loader.report(tmp_path, epoch=2).startswith("segkit: profiled steps 6-7 of epoch 2")


def test_nothing_profiled_is_said_and_writes_nothing(tmp_path: Path) -> None:
    loader = ProfiledLoader(Batches(20), 4, CPU)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    line = loader.report(tmp_path, epoch=1)
    assert line == "segkit: profile: the epoch ended before any step could be profiled"  # Python
    with given_as(COMMAND_LINE):
        line = loader.report(tmp_path, epoch=1)
    assert line == "segkit: --profile: the epoch ended before any step could be profiled"
    assert list(tmp_path.iterdir()) == []


def test_a_profiler_that_cannot_start_leaves_the_epoch_unprofiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.profiler

    def refused(*args, **kwargs):
        raise RuntimeError("CUPTI_ERROR_INSUFFICIENT_PRIVILEGES")

    monkeypatch.setattr(torch.profiler, "profile", refused)
    loader = ProfiledLoader(Batches(10), 3, CPU)
    assert consume(loader) == [2.0 * 4 * i for i in range(10)]  # the epoch goes on
    assert loader.report(tmp_path, epoch=1) == (
        "segkit: profile: the profiler could not start "
        "(RuntimeError: CUPTI_ERROR_INSUFFICIENT_PRIVILEGES)"
    )
    assert list(tmp_path.iterdir()) == []


def _event(name: str, start: int, end: int, device: str = "cuda", annotation: bool = False):
    kind = torch.autograd.DeviceType.CUDA if device == "cuda" else torch.autograd.DeviceType.CPU
    return SimpleNamespace(
        name=name,
        device_type=kind,
        is_user_annotation=annotation,
        time_range=SimpleNamespace(start=start, end=end),
    )


def test_device_busy_time_counts_overlapping_kernels_once() -> None:
    events = [
        _event("kernel a", 0, 100),
        _event("kernel b (another stream)", 50, 150),  # overlaps a: 0-150 busy
        _event("memcpy", 200, 250),
        _event("kernel c", 210, 240),  # inside the copy
        _event("aten::conv2d", 0, 1000, device="cpu"),  # host events do not count
        _event("segkit.step", 0, 1000),  # record_function's range on the device timeline
        _event("an annotation", 0, 1000, annotation=True),
    ]
    assert device_busy_s(events) == pytest.approx(200e-6)  # microseconds -> seconds
    assert device_busy_s([]) == 0.0


def test_a_run_folder_with_only_a_profile_records_no_run(tmp_path: Path) -> None:
    assert set(FILES) <= set(run_folder._BEFORE_FIRST_EPOCH)  # the two lists agree
    folder = run_folder.RunFolder(tmp_path)
    for name in ("config.json", *FILES):
        (tmp_path / name).write_text("{}")
    assert folder.records_nothing()


def test_a_negative_profile_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^profile=-1: expected 0 or a positive integer$"):
        RunConfig(profile=-1)
    assert RunConfig().profile == 0


@pytest.mark.slow
def test_a_run_with_profile_writes_the_report_into_its_folder(
    tiny_pets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    args = ["run", "--epochs", "2", "--data", str(tiny_pets), "--out", str(out)]
    assert main([*args, "--name", "p", "--profile", "2", *TINY_RUN]) == 0
    printed = capsys.readouterr().out
    # 13 train images in batches of 4: 3 steps an epoch, the last 2 of epoch 1 profiled.
    line = next(x for x in printed.splitlines() if x.startswith("segkit: profiled"))
    assert line.startswith("segkit: profiled steps 2-3 of epoch 1: ")
    assert printed.count("segkit: profiled") == 1  # the first epoch only
    folder = out / "p"
    for name in FILES:
        assert (folder / name).stat().st_size > 0
    json.loads((folder / "profile-trace.json").read_text())
    assert json.loads((folder / "config.json").read_text())["profile"] == 2
