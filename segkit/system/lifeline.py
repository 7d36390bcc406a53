"""Helper processes die with the process that started them, however it dies.

A ``segkit run`` killed with SIGKILL (or by the OOM killer, or a cluster preempting it)
gets no chance to stop its helpers, and without this they run on, parented to init, for
good: the albumentations loader's fork server (about 580 MB resident) keeps waiting for
its clients, and its DataLoader workers (about 360 MB each) watch the fork server, their
own parent, not the run. The two keep each other alive: every worker holds the pipe end
whose closing would tell the fork server that its clients are gone.

The remedy is Linux's ``PR_SET_PDEATHSIG``: a process asks the kernel for SIGKILL when
its parent dies (it survives ``exec``, so a fork server started as a new interpreter keeps
it). :func:`tie_to_parent` asks for it and closes the race of a parent that died before
the request, by comparing its parent with the pid the parent left in :data:`ENV`
(:func:`mark_parent`). Helpers call it first thing:

- the fork server imports :mod:`segkit.system._lifeline_preload` first of its preload modules
  (``segkit_albumentations`` lists it), so it dies with the training process;
- each DataLoader worker calls it in its ``worker_init_fn``, so it dies with the fork
  server (and therefore with the run);
- a torchrun rank calls it when it joins the process group (:mod:`segkit.training.distributed`),
  so it dies with its launcher agent.

A loader plugin with a worker pool of its own does the same: call :func:`mark_parent`
in the parent before starting it, and ``tie_to_parent(recorded_parent())`` in each
helper. The signal follows the parent *thread* that started the helper: start helpers
from a thread that lives as long as they should (the training loop's). DALI's
threads live inside the training process and need nothing. Elsewhere than Linux
``tie_to_parent`` does nothing (the helpers then rely on their pipes, as before).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: The pid a helper's parent had when it started the helper, as a decimal string.
ENV = "SEGKIT_LIFELINE_PARENT"

#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1


def mark_parent() -> None:
    """Record this process as the parent of the helpers it is about to start (they
    inherit the environment and read it with :func:`recorded_parent`)."""
    os.environ[ENV] = str(os.getpid())


def recorded_parent() -> int | None:
    """The pid :func:`mark_parent` recorded in this process's environment, if any."""
    value = os.environ.get(ENV, "")
    return int(value) if value.isdigit() else None


def tie_to_parent(expected: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies, and record this
    process as the parent of its own helpers (:func:`mark_parent`).

    Args:
        expected: The parent's pid, where the caller knows it (:func:`recorded_parent`):
            a parent that died before the request sends no signal, so if the parent is
            no longer ``expected`` this process exits at once. None: no such check (a
            torchrun rank's agent may legitimately be pid 1 in a container).

    Returns:
        Whether the tie is in place (False off Linux, where ``prctl`` does not exist).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    tied = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if tied and expected is not None and os.getppid() != expected and not _alive(expected):
        os._exit(1)  # orphaned already: the parent died before the request
    mark_parent()
    return tied


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not). A parent that is not ``expected`` but
    alive means the recorded pid is stale (inherited from an older process), not that
    the parent died."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"
