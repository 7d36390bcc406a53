"""torch's CPU threads for a run: ``--threads N``, or ``auto``.

torch runs a CPU operator on as many threads as the machine has cores, and each operator
waits for its slowest thread. On a machine other work keeps busy, one of them is often
off its core, so every operator waits for the scheduler: the same epoch took 2.7 to 4.4
times longer on 2 threads than on 1 on a 2-core machine with a load average of 15-19
(docs/training.md, "CPU threads", has the numbers). ``auto`` therefore uses the cores the load
leaves free: torch's default while the machine is idle, fewer (at least one) while it is
busy. The load is the lower of the 1-minute load average and the processes runnable at
the start (:func:`runnable_now`), so work that has just ended does not count. The run says so in its first line and records the count in
``config.json`` (``resolved.threads``): CPU sums over other thread counts round
differently, so a seeded run repeats its numbers exactly at the same count
(``--threads N``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from segkit.config import PYTHON, given, named
from segkit.system.workers import usable_cores

#: torch's own thread count, read before segkit first changes it.
_torch_default: int | None = None
#: What ``auto`` chose, decided once per process: later runs of one process (a study, a
#: test session) would otherwise count their own earlier epochs as other work.
_auto: int | None = None
#: Why ``auto`` chose fewer threads than torch's default (None: it did not).
_reason: str | None = None


def auto_threads(default: int, cores: int, load: float) -> int:
    """The threads ``auto`` uses: the cores the 1-minute ``load`` average leaves free of
    ``cores``, rounded up (a fraction of a core of other work leaves it to us), at least
    one and at most torch's ``default``.

    Both counts are the whole machine's (``os.cpu_count()`` and ``os.getloadavg()``), so
    in a container limited to a few of a big host's cores the host's load is compared
    with the host's cores. (:func:`note`'s "more than this machine's cores" counts the
    usable ones, :func:`~segkit.system.workers.usable_cores`, as the loader workers' check
    does: the cores this process's threads can run on.)
    """
    return max(1, min(default, math.ceil(cores - load)))


def apply_threads(setting: str | int) -> int:
    """Set torch's intra-op threads for ``setting`` (a number, or ``"auto"``: see
    :func:`auto_threads`) and return them. ``auto`` keeps torch's default where the
    machine's load average is unknown or ``OMP_NUM_THREADS`` is set (the user chose it);
    :func:`note` says why when it chose fewer."""
    global _torch_default, _auto
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    if setting != "auto":
        threads = int(setting)
    else:
        if _auto is None:
            _auto = _decide(_torch_default)
        threads = _auto
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def note(threads: int) -> str:
    """``threads`` for a run's first line: ``1 CPU thread (load average 15.2 on 2 cores;
    --threads N to choose)`` when ``auto`` chose fewer than torch's default, else just the
    count. The setting is named as it was given (:func:`segkit.config.named`): ``threads=N``
    for a run started from Python."""
    said = f"{threads} CPU thread{'s' * (threads != 1)}"
    cores = usable_cores()  # as --num-workers' check counts them (CPU affinity)
    if _reason is not None and threads == _auto:
        choose = "threads=N" if given() == PYTHON else f"{named('threads')} N"
        said += f" ({_reason}; {choose} to choose)"
    elif threads > cores:
        said += (
            f" (more than this machine's {cores} cores: each parallel operation waits for "
            f"threads that take turns on a core; {named('threads', 'auto', as_typed=True)} "
            "chooses)"
        )
    return said


def _decide(default: int) -> int:
    global _reason
    if os.environ.get("OMP_NUM_THREADS") or not hasattr(os, "getloadavg"):
        return default
    cores = os.cpu_count() or default
    load = os.getloadavg()[0]
    threads = auto_threads(default, cores, load)
    if threads < default and (now := runnable_now()) is not None and now < load:
        # The 1-minute average still counts work that has ended (the previous run of
        # `make run`: 1.2 a minute after it, so auto took 1 thread of 2 and the epoch took
        # 18.9 s instead of 13.6 s); fewer threads only for other work running now. Read
        # only when the average says fewer: the readings take 0.2 s of the start.
        load = now
        threads = auto_threads(default, cores, load)
    if threads < default:
        _reason = f"load average {load:.1f} on {cores} cores, torch's default {default}"
    return threads


def runnable_now(samples: int = 5, every: float = 0.05) -> float | None:
    """Other processes ready to run at this moment: the mean over ``samples`` readings of
    the kernel's count of runnable tasks (``/proc/loadavg``'s fourth field), less this
    process; None where there is no such file (not Linux)."""
    counts = []
    for i in range(samples):
        try:
            field = Path("/proc/loadavg").read_text().split()[3]
        except (OSError, IndexError):
            return None
        counts.append(max(0, int(field.split("/")[0]) - 1))
        if i + 1 < samples:
            time.sleep(every)
    return sum(counts) / len(counts)
