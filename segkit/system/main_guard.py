"""Worker processes and a training script without ``if __name__ == "__main__":``.

Worker processes started by a fork server or by spawning (the ``albumentations`` loader's
DataLoader workers; any loader plugin's) import the parent's ``__main__`` script again
before they run. A script whose training code sits at its top level then starts training
again inside each worker, and multiprocessing refuses the worker's own worker start with
a 40-line RuntimeError ("An attempt has been made to start a new process before the
current process has finished its bootstrapping phase"), printed by each worker, while the
parent waits for a worker that died and then fails with "DataLoader worker exited
unexpectedly".

Instead, both sides say it once:

- in the worker, :func:`exit_if_reimporting_main` (called where training or a loader with
  worker processes starts) leaves at once, quietly, with :data:`EXIT_REIMPORTED`, before
  the run folder or the model is made again;
- in the parent, the loader that sees its workers die asks :func:`main_guard_error` for
  the error to raise in place of the DataLoader's: a :class:`~segkit.errors.MainGuardError`
  that names the script and the fix, where a worker left with that exit status.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterable

from segkit.errors import MainGuardError

#: Exit status of a worker that was importing the main script when training started
#: again in it (``EX_CONFIG`` of sysexits.h).
EXIT_REIMPORTED = 78


def reimporting_main() -> bool:
    """Whether this process is a spawned or fork-server worker still importing its
    parent's ``__main__`` (multiprocessing's own test before it refuses a process start)."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def exit_if_reimporting_main() -> None:
    """In a worker importing the parent's script, which has just started training again:
    exit with :data:`EXIT_REIMPORTED`, printing nothing (the parent says why). Anywhere
    else: nothing."""
    if reimporting_main():
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(EXIT_REIMPORTED)  # SystemExit would be printed or re-coded by forkserver


def main_guard_error(exitcodes: Iterable[int | None], what: str) -> MainGuardError | None:
    """The error to raise when workers of ``what`` (e.g. "the albumentations loader") have
    died with these exit codes, or None when none left for the missing main guard."""
    if EXIT_REIMPORTED not in set(exitcodes):
        return None
    script = getattr(sys.modules.get("__main__"), "__file__", None) or "the main script"
    return MainGuardError(
        f"{script}: {what}'s worker processes import this script again, and it starts "
        'training at import; put the training code under `if __name__ == "__main__":` '
        "(or use num_workers=0, --num-workers 0)"
    )
