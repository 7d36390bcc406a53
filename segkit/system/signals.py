"""Holding Ctrl-C and SIGTERM back while a file is written.

A checkpoint written in the training loop (on the CPU, :class:`segkit.training.checkpoint.
BackgroundWriter` with ``background=False``) would otherwise be cut by the
``KeyboardInterrupt`` those signals raise: torch's zip writer turns it into its own
``RuntimeError`` (``[enforce fail at inline_container.cc:...]``), which reads as a failed
write (a full disk), and the run ends as ``failed`` with exit status 2 instead of
``interrupted`` (130) with the line that says how to resume. :func:`signals_held` lets the
write finish, then delivers the signal to the handler that was there before.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: The signals a scheduler or a user stops a run with.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held(signums: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Inside the block, ``signums`` are recorded instead of handled; on leaving it their
    handlers are put back and each signal that came is raised again, once, so the
    handler runs then (Ctrl-C's ``KeyboardInterrupt``, ``segkit run``'s SIGTERM, or the
    default: the process ends), after the write.

    A signal the process ignores stays ignored. Outside the main thread (where Python
    runs no signal handler) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)

    previous: dict[int, Any] = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN or handler is None:  # None: set outside Python
            continue
        previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)
