"""How messages word a setting: the way the settings of the work under way were given.

``image_size=64`` for a keyword argument in Python (the default), ``--image-size 64``
for a flag of the ``segkit`` command, which runs each command in :func:`given_as`
``(COMMAND_LINE)``. This module imports nothing of segkit, so that the modules
:mod:`segkit.config` itself imports (dataset layouts, recipes) word their messages so
too without an import cycle; :func:`segkit.config.named` adds what it knows of
:class:`~segkit.config.RunConfig`'s fields (their own flags, switches) and is what the
rest of segkit uses. :mod:`segkit.config` re-exports :func:`given_as`, :func:`given`,
:data:`PYTHON` and :data:`COMMAND_LINE`.

The origin is a :mod:`contextvars` variable: a new process (a DataLoader worker) or a
new thread starts at the default, so work handed to one carries :func:`given` with it
and runs under :func:`given_as` there (the albumentations loader's workers do).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any

#: ``source`` of :meth:`segkit.config.RunConfig.from_dict` for settings that are all
#: command-line flags.
COMMAND_LINE = "command line"
#: ``source`` of :meth:`segkit.config.RunConfig.from_dict` for settings that are all
#: keyword arguments of Python code, and how settings are named by default (:func:`given_as`).
PYTHON = "Python"

#: How the settings checked now were given, where no file names them: :data:`PYTHON`
#: (keyword arguments) unless the ``segkit`` command runs (:data:`COMMAND_LINE`).
_GIVEN_AS: contextvars.ContextVar[str] = contextvars.ContextVar("segkit_given_as", default=PYTHON)


@contextlib.contextmanager
def given_as(origin: str) -> Iterator[None]:
    """Inside, a message about a setting names it as ``origin`` gives it (:func:`named`):
    :data:`COMMAND_LINE` (``--image-size 64``: the ``segkit`` command runs each command
    so) or :data:`PYTHON` (``image_size=64``, the default)."""
    token = _GIVEN_AS.set(origin)
    try:
        yield
    finally:
        _GIVEN_AS.reset(token)


def given() -> str:
    """How the settings checked now were given (:func:`given_as`): :data:`COMMAND_LINE`
    or :data:`PYTHON`."""
    return _GIVEN_AS.get()


def named_as(
    key: str,
    value: Any = dataclasses.MISSING,
    *,
    origin: str | None = None,
    flag: str | None = None,
    as_typed: bool = False,
) -> str:
    """Setting ``key`` (and its ``value``) named as ``origin`` (default: :func:`given`)
    gives it: ``key=value`` (the value's ``repr``) or ``key`` alone from Python;
    ``flag`` (default ``--`` and the name with ``-``) and the value on the command line,
    as typed with ``as_typed`` (``--dataset folder``), else its ``repr``. For a
    :class:`~segkit.config.RunConfig` field use :func:`segkit.config.named`, which knows
    each field's flag and its switches."""
    if (origin or _GIVEN_AS.get()) == PYTHON:
        return key if value is dataclasses.MISSING else f"{key}={value!r}"
    name = flag or "--" + key.replace("_", "-")
    if value is dataclasses.MISSING:
        return name
    return f"{name} {value if as_typed else repr(value)}"
