"""How many loader workers a run gets: :func:`default_workers` when none are asked for,
and :func:`check_workers` for a count that is.

Here rather than in :mod:`segkit.build` because the data check (:mod:`segkit.data.check`)
reads files with as many threads, and the build path uses the data check (``auto`` loss
weights): both import it from here, so neither imports the other back.

The rule for ``--num-workers N`` (each worker is a process of its own, with its own copy
of the dataset's Python state):

- up to the usable cores (:func:`usable_cores`: those this process may run on): as asked;
- above them, up to :data:`MAX_WORKERS_PER_CORE` times as many: as asked, and one line
  says that the workers take turns on the cores (torch's own warning, which it gives once
  per loader, is left out);
- above that: refused, naming the cores and a count that fits. A thousand workers on a
  few cores spend the machine's time and memory on switching between processes.

A count recorded by a run on a bigger machine (a checkpoint opened by ``evaluate`` or
``predict``, a resumed run) and above this machine's limit is not the user's to fix:
:func:`recorded_workers` gives this machine's default instead.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

#: The most loader workers per usable core ``--num-workers`` may ask for.
MAX_WORKERS_PER_CORE = 4

#: Counts :func:`check_workers` has already said are above the cores (said once each).
_said: set[int] = set()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or ``taskset``
    limits it; all of the machine's where the platform cannot say)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(device: torch.device | str = "cpu", local_world: int = 1) -> int:
    """Loader workers when none are asked for.

    On a CUDA host the loader feeds a GPU that consumes thousands of images a second: it
    gets every core but two (one for the training loop, one for the rest of the system),
    shared among the processes of this host (``local_world``). On the CPU the model itself
    is the bottleneck and competes with the loader for the same cores: one worker per
    core, up to 8. Cores are the usable ones (:func:`usable_cores`): a container limited
    to 4 of a host's 64 gets 4's share, not 64's.
    """
    cores = usable_cores()
    if torch.device(device).type == "cuda":
        return max(1, (cores - 2) // max(1, local_world))
    return min(8, cores)


def check_workers(workers: int, default: int) -> str | None:
    """Check ``--num-workers`` against this machine's usable cores (see the module's rule).

    Args:
        workers: The count asked for.
        default: What a run here gets without ``--num-workers``, for the messages.

    Returns:
        The line to say when ``workers`` is above the cores (``None`` at or below them).

    Raises:
        ConfigError: ``workers`` is above :data:`MAX_WORKERS_PER_CORE` times the cores.
    """
    from segkit.config import named
    from segkit.errors import ConfigError

    cores = usable_cores()
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise ConfigError(
            f"{named('num_workers', workers)}: more than {MAX_WORKERS_PER_CORE} x this "
            f"machine's {cores} usable core{'s' * (cores != 1)} ({MAX_WORKERS_PER_CORE * cores} "
            "at most); each worker is a process of its own, and so many would spend the "
            f"machine's time and memory on switching between them. Pass "
            f"{named('num_workers', cores)} or fewer, or leave it out (the default here: "
            f"{default})"
        )
    if workers > cores:
        return (
            f"{named('num_workers', workers)} is more than this machine's {cores} usable "
            f"core{'s' * (cores != 1)}: the workers take turns on them; "
            f"{named('num_workers', cores)} or fewer gives each its own"
        )
    return None


def say_workers(note: str | None, workers: int, *, say: bool = True) -> None:
    """Print ``note`` (from :func:`check_workers`) on stderr, once per count in this
    process (``say``: this process speaks, rank 0 of a torchrun job), and leave out
    torch's warning of the same (it gives one per loader: the training, validation and
    test loaders made three)."""
    if note is None:
        return
    warnings.filterwarnings(
        "ignore",
        message=r"This DataLoader will create \d+ worker processes",
        category=UserWarning,
    )
    if say and workers not in _said:
        _said.add(workers)
        print(f"segkit: {note}", file=sys.stderr, flush=True)


def recorded_workers(workers: int | None) -> int | None:
    """A worker count recorded by a run (its checkpoint, its ``config.json``), or
    ``None`` (this machine's default) where it is above what :func:`check_workers`
    accepts here: the run was made on a machine with more cores."""
    if workers is not None and workers > MAX_WORKERS_PER_CORE * usable_cores():
        return None
    return workers
