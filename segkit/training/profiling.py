"""``segkit run --profile N``: torch.profiler over N training steps of the run's first
epoch, and a report of where their time went.

:class:`ProfiledLoader` wraps the epoch's loader. It lets the first steps pass (the
warm-up: cuDNN's autotuner, the loader's start, a CUDA graph's capture), then profiles
the next N: each wait for a batch is recorded as ``segkit.data`` and everything the loop
does with it (the step and its metrics) as ``segkit.step``. The device is synchronized at
both ends of the window, so its wall time covers the work the steps queued.

:meth:`ProfiledLoader.report` writes ``profile.txt`` (the steps' wall time, how it splits
between waiting for data and the step on the host, how long the device ran kernels, and
torch's table of the top operators and kernels) and ``profile-trace.json`` (a Chrome
trace: https://ui.perfetto.dev or chrome://tracing), and returns one line for the log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from segkit.config import named
from segkit.errors import described

#: Steps left out before the window: the warm-up of an epoch.
SKIP = 5
#: Rows of torch's operator table in profile.txt.
TABLE_ROWS = 30
#: The files the report writes into the run folder.
FILES = ("profile.txt", "profile-trace.json")


class ProfiledLoader:
    """``loader``, with steps ``[start, start + steps)`` of the epoch profiled.

    ``start`` is :data:`SKIP`, or earlier in an epoch too short for it (never before
    the first step); an epoch shorter than ``steps`` is profiled whole.
    """

    def __init__(self, loader: Any, steps: int, device: torch.device) -> None:
        self.loader = loader
        n = len(loader)
        self.steps = min(steps, n)
        self.start = max(0, min(SKIP, n - self.steps))
        self.device = device
        self.profiler: Any = None
        self.wall_s = 0.0
        self.done = 0  # steps profiled
        self.failed: str | None = None  # why the profiler could not start

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:  # set_epoch, batch_size, ...
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        i = 0
        try:
            while True:
                if i == self.start and self.steps > 0:
                    self._begin()
                profiling = self.profiler is not None
                with _labelled("segkit.data", profiling):
                    batch = next(batches, None)
                if batch is None:
                    return
                with _labelled("segkit.step", profiling):
                    yield batch
                if profiling:
                    self._step_done()
                i += 1
        finally:
            if self.profiler is not None:  # the loop broke off inside the window
                self._end()

    def _step_done(self) -> None:
        """Count a profiled step; the window's last one stops the profiler."""
        self.done += 1
        if self.done == self.steps:
            self._end()

    def _begin(self) -> None:
        """Start the profiler; one that cannot start leaves the epoch unprofiled (the
        report says why): a diagnostic never stops the training."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
            torch.cuda.synchronize(self.device)
        try:
            profiler = profile(activities=activities)
            profiler.__enter__()
        except Exception as e:  # noqa: BLE001 -- e.g. CUPTI refused on this machine
            self.failed = described(e)
            return
        self.profiler = profiler
        self._t0 = time.perf_counter()

    def _end(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.wall_s = time.perf_counter() - self._t0
        self.profiler.__exit__(None, None, None)
        self.taken, self.profiler = self.profiler, None

    def report(self, folder: Path, epoch: int) -> str:
        """Write :data:`FILES` into ``folder``; the line that says where they are and what
        they found (nothing written, and a line that says so, if no step was profiled)."""
        if self.failed is not None:
            return f"segkit: {named('profile')}: the profiler could not start ({self.failed})"
        if self.done == 0:
            return f"segkit: {named('profile')}: the epoch ended before any step could be profiled"
        prof = self.taken
        events = prof.key_averages()
        host = {e.key: e.cpu_time_total / 1e6 for e in events if e.key.startswith("segkit.")}
        data, step = host.get("segkit.data", 0.0), host.get("segkit.step", 0.0)
        busy = device_busy_s(prof.events())
        first, last = self.start + 1, self.start + self.done
        wall = self.wall_s
        cuda = self.device.type == "cuda"
        lines = [
            f"segkit run --profile: steps {first}-{last} of epoch {epoch} on {self.device}",
            f"wall: {wall:.4f} s for {self.done} steps ({wall / self.done * 1000:.1f} ms a step)",
            f"host: waiting for data {data:.4f} s ({_share(data, wall)}), in the step and its "
            f"metrics {step:.4f} s ({_share(step, wall)})",
            (
                f"device: kernels ran {busy:.4f} s of the {wall:.4f} s ({_share(busy, wall)}; "
                "every stream, the loader's included)"
                if cuda
                else "device: none (a CPU run: the step's time is the host's)"
            ),
            "",
        ]
        sort = "self_device_time_total" if cuda else "self_cpu_time_total"
        lines.append(events.table(sort_by=sort, row_limit=TABLE_ROWS))
        (folder / FILES[0]).write_text("\n".join(lines) + "\n")
        prof.export_chrome_trace(str(folder / FILES[1]))
        where = (
            f"the device ran kernels {_share(busy, wall)} of it"
            if cuda
            else f"in the step {_share(step, wall)}"
        )
        return (
            f"segkit: profiled steps {first}-{last} of epoch {epoch}: "
            f"{wall / self.done * 1000:.1f} ms a step, waiting for data {_share(data, wall)}, "
            f"{where}; {FILES[0]} and {FILES[1]} in {folder}"
        )


def device_busy_s(events: Any) -> float:
    """Seconds during which the device ran at least one kernel or copy: the union of the
    device events' intervals (kernels overlapping on several streams count once), without
    the ranges ``record_function`` draws on the device's timeline (``segkit.step``...)."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in events
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
        and not getattr(e, "is_user_annotation", False)
        and not e.name.startswith("segkit.")
    )
    busy, end = 0, None
    for a, b in spans:
        if end is None or a > end:
            busy += b - a
            end = b
        elif b > end:
            busy += b - end
            end = b
    return busy / 1e6  # microseconds


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "-"


def _labelled(label: str, profiling: bool) -> contextlib.AbstractContextManager[Any]:
    """``label`` around a block in the profiler's trace while ``profiling``, else nothing."""
    if not profiling:
        return contextlib.nullcontext()
    from torch.profiler import record_function

    return record_function(label)
