"""The ``segkit`` command's entry point: the console script (``[project.scripts]``) and
``python -m segkit`` call :func:`main`.

A Ctrl-C in the first second of ``segkit`` lands while Python imports the command
(argparse, segkit's command modules, then torch and the plugins as a command needs them).
Before any of that, importing this module (it imports :mod:`sys` and ``_signal``, both
loaded with the interpreter; :mod:`segkit`'s ``__init__`` imports nothing) makes SIGINT's
handler one that prints :data:`STARTING` and exits 130; :func:`main` puts Python's back
once the command's modules are loaded, inside its own ``except KeyboardInterrupt`` that
says the same. An interrupt however early in segkit's start ends with that one line and
exit status 130, as one later in a command's set-up does, never a ``KeyboardInterrupt``
traceback. (A Ctrl-C can still land before Python runs any of segkit, in the
interpreter's own start: Python's, out of segkit's reach.)

The handler exits rather than raise ``KeyboardInterrupt`` while the modules load: one
raised inside code that a module runs with ``exec`` of a string (``dataclasses`` makes
each class's methods so) has Python 3.11 end the process by SIGINT however it is caught,
after the line (a status of -2 to a parent process, 130 to a shell).

The handler is only set where a Ctrl-C would raise ``KeyboardInterrupt``: an ignored
SIGINT (a job started in the background) or a program's own handler is left alone.
"""

from __future__ import annotations

import sys

try:  # the C module `signal` wraps, loaded with the interpreter: `signal` builds its enums
    import _signal as signal  # first, some milliseconds in which a Ctrl-C is a traceback
except ImportError:  # pragma: no cover -- an interpreter without it
    import signal

#: What a Ctrl-C before a command starts says on stderr; the exit status is 130.
STARTING = "segkit: interrupted while starting: nothing was done"


def _starting(signum: int, frame: object) -> None:
    """SIGINT's handler from this module's import until :func:`main` is under way."""
    print(STARTING, file=sys.stderr)
    raise SystemExit(130)


def _guard() -> bool:
    """Make :func:`_starting` SIGINT's handler where Python's default is; whether it did."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    try:
        signal.signal(signal.SIGINT, _starting)
    except ValueError:  # imported from a thread other than the main one
        return False
    return True


# On import: a Ctrl-C before main() is called (the console script calls it right after
# this import) would otherwise be raised where no handler of segkit's can catch it.
_guard()


def main(argv: list[str] | None = None) -> int:
    """Run the ``segkit`` command with ``argv`` (default: ``sys.argv[1:]``); its exit
    status. A Ctrl-C while the command loads or parses its arguments returns 130 after
    :data:`STARTING`; later ones are the command's to tell (:func:`segkit.cli.main`)."""
    try:
        from segkit.cli import main as command  # a Ctrl-C here: _starting's exit

        if signal.getsignal(signal.SIGINT) is _starting:  # from here: KeyboardInterrupt
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return command(argv)
    except KeyboardInterrupt:
        print(STARTING, file=sys.stderr)
        return 130
