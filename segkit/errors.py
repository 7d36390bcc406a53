"""Exceptions segkit raises.

Every mistake a user can make (a bad path, a corrupt file, an unknown plugin name,
an impossible setting) raises a subclass of :class:`SegkitError`. The CLI prints its
message on one line and exits with status 2, without a traceback; anything else is a
bug in segkit or in a plugin and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class SegkitError(Exception):
    """Base class for errors caused by user input, data or configuration."""


class ConfigError(SegkitError, ValueError):
    """A setting has a value segkit cannot use (for example an image size not divisible by 32)."""


class UnknownSettingError(ConfigError, TypeError):
    """A keyword argument (or a configuration key) no setting has: ``RunConfig(imagesize=64)``,
    ``segkit.resume(run, epoch=3)``, ``Predictor(path, mdoe="tile")``. The message names
    it, its close match (``did you mean 'image_size'?``) and where the settings are
    listed. A :class:`ConfigError`, as every bad setting is, and a :class:`TypeError`, as
    Python's own unexpected-keyword error is, so ``except TypeError`` keeps catching it."""


class DataError(SegkitError):
    """A dataset folder, split list, image or mask is missing or malformed.

    The message always names the offending file.
    """


class MaskValuesError(DataError):
    """A mask holds values outside those its dataset declares
    (:func:`segkit.data.reading.check_mask_values`), or an RGB colour mask holds colours
    outside its palette (:func:`segkit.data.reading.colours_to_raw`): ``values`` are the
    raw values found outside, ``colours`` the ``(r, g, b)`` colours found outside (one of
    the two is empty), ``path`` the mask file. ``segkit evaluate`` catches it to say that
    the data is likely labelled with other classes than the model's.

    It pickles with its values and colours (:meth:`__reduce__`), so it crosses a loader's
    worker processes whole; built from a message alone (as torch re-raises a worker's
    exception type from its text) it has neither but keeps its type.
    """

    def __init__(
        self,
        message: str,
        values: tuple[int, ...] = (),
        path: str | None = None,
        colours: tuple[tuple[int, int, int], ...] = (),
    ) -> None:
        super().__init__(message)
        self.values = tuple(values)
        self.path = path
        self.colours = tuple(colours)

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (str(self), self.values, self.path, self.colours)


class PluginError(SegkitError):
    """Base class for registry errors."""


class PluginNotFoundError(PluginError, KeyError):
    """No plugin of that kind has that name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PluginLoadError(PluginError):
    """A plugin was found but could not be imported or has the wrong type.

    Raised ``from`` the original exception, so the plugin's own traceback is kept.
    """


class DuplicatePluginError(PluginError):
    """Two distributions register the same name in one entry-point group (raised when that
    name is used; the other plugins of the group keep working)."""


class PluginContractError(PluginError):
    """A plugin loaded, but what it returned breaks its kind's contract (a model's logits
    of the wrong shape or dtype, a loss that is not a scalar tensor). The message names the
    plugin, what it returned, what was expected, and the conformance check to run."""


class CheckpointError(SegkitError):
    """A checkpoint file is missing, truncated, foreign, or unsafe to load."""


class ExportError(SegkitError):
    """An exported model disagrees with the PyTorch model beyond the tolerance, or the
    exporter cannot trace it."""


class NumericalError(SegkitError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class DistributedError(SegkitError):
    """A data-parallel rank lost contact with the others (one died or stopped answering);
    the message names the rank, and on rank 0 says how to resume."""


class RunInterrupted(SegkitError):
    """Training was interrupted (Ctrl-C, or a notebook's interrupt); the message says how
    to resume, and ``run_dir`` is the run's folder (None where this process writes none:
    a rank of a multi-GPU run other than the first), for ``segkit.resume(e.run_dir)``."""

    def __init__(self, message: str, run_dir: Any = None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


def interrupted_setting_up(resumed: Any = None) -> RunInterrupted:
    """The error of a Ctrl-C before a run made its folder (loading segkit and torch,
    reading the settings or ``last.pt``): nothing was trained, and the same call or command
    starts it again (``resumed``: the folder of a run being resumed, which is as it was).
    Worded for the caller: a ``segkit.train`` call from Python, a command from ``segkit``."""
    from segkit.wording import PYTHON, given

    said = "interrupted while setting up, before any epoch was trained: nothing was trained"
    python = given() == PYTHON
    if resumed is not None:
        again = "segkit.resume call" if python else "segkit run --resume command"
        return RunInterrupted(
            f"{said}, and {resumed} is as it was; resume it with the same {again}",
            run_dir=resumed,
        )
    again = "segkit.train call" if python else "segkit run command"
    return RunInterrupted(
        f"{said} and no run folder was made; start it again with the same {again}"
    )


class MainGuardError(ConfigError):
    """A script without ``if __name__ == "__main__":`` trained with loader worker processes:
    each worker imports the script again and would start training too
    (:mod:`segkit.system.main_guard`)."""


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 image``, ``2 images``: a count and its noun, for messages; ``nouns`` is the
    plural where it is not ``noun + "s"`` (``plural(2, "process", "processes")``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {nouns or noun + 's'}"


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, at most ``limit`` characters (``""``
    where the message is empty)."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


def described(error: BaseException, limit: int = 300) -> str:
    """An exception for a message that wraps it: ``Type: its first line`` (at most
    ``limit`` characters of the line), or ``Type`` alone where the message is empty."""
    line = first_line(error, limit)
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
