"""A Ctrl-C however early in ``segkit``'s start (``python -m segkit`` and the console
script) ends with one line and exit status 130, not a KeyboardInterrupt traceback: the
entry point (segkit.command) sets its SIGINT handler on import, before anything heavy
loads, and ``import segkit`` imports nothing eagerly."""

from __future__ import annotations

import ast
import os
import runpy
import signal
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import segkit

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def command() -> Iterator[types.ModuleType]:
    """segkit.command, with SIGINT's handler put back as it was afterwards (importing the
    module, and the test, set the command's own)."""
    previous = signal.getsignal(signal.SIGINT)
    from segkit import command as module

    yield module
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_before_main_runs_is_the_line_and_130(
    command: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The handler set on import: a Ctrl-C between the console script's import of
    segkit.command and main()'s first line, where no except can catch it."""
    import segkit.cli

    signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C
    assert command._guard() and signal.getsignal(signal.SIGINT) is command._starting
    with pytest.raises(SystemExit) as e:
        signal.raise_signal(signal.SIGINT)
    assert e.value.code == 130 and capsys.readouterr().err == command.STARTING + "\n"
    # main() puts Python's handler back: the command's own Ctrl-C is a KeyboardInterrupt.
    monkeypatch.setattr(segkit.cli, "main", lambda argv: 0)
    assert command.main([]) == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # An ignored Ctrl-C (a job started in the background) stays ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert not command._guard() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_ctrl_c_while_the_command_loads_is_one_line_and_130(
    command: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loading = types.ModuleType("segkit.cli")

    def interrupted(name: str) -> object:  # `from segkit.cli import main`, torch loading
        raise KeyboardInterrupt

    loading.__getattr__ = interrupted  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "segkit.cli", loading)
    assert command.main(["list"]) == 130
    assert capsys.readouterr().err == command.STARTING + "\n"


def test_a_ctrl_c_while_the_arguments_are_parsed_is_the_same_line(
    command: types.ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import segkit.cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(segkit.cli, "build_parser", interrupted)
    assert command.main(["list"]) == 130
    assert capsys.readouterr().err == command.STARTING + "\n"
    # Without an interrupt, the command's own status and arguments pass through.
    seen: list[object] = []
    monkeypatch.setattr(segkit.cli, "main", lambda argv: seen.append(argv) or 7)
    assert command.main(["list", "models"]) == 7 and seen == [["list", "models"]]


def test_the_console_script_and_python_m_run_the_guarded_entry_point(
    command: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segkit.cli

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"segkit": "segkit.command:main"}
    monkeypatch.setattr(command, "main", lambda: 42)
    with pytest.raises(SystemExit) as e:
        runpy.run_module("segkit", run_name="__main__")  # python -m segkit
    assert e.value.code == 42
    # A console script made before segkit.command (an install not redone) imports
    # segkit.cli first: its own guard says the same line.
    assert f'print("{command.STARTING}", file=sys.stderr)' in Path(segkit.cli.__file__).read_text()


def _imports_at_import_time(path: Path) -> list[str]:
    """The modules a file imports when it is imported: its top-level imports (in a ``try``
    too), not those under ``if TYPE_CHECKING:`` nor in functions."""
    names = []
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, (ast.If, ast.FunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names.append(node.module or "")
    return names


def test_nothing_is_imported_before_the_guard_and_the_api_still_loads() -> None:
    assert _imports_at_import_time(REPO / "segkit" / "__init__.py") == ["__future__"]
    # sys and _signal are loaded with the interpreter; signal is the fallback
    assert _imports_at_import_time(REPO / "segkit" / "command.py") == [
        "__future__", "sys", "_signal", "signal"
    ]  # fmt: skip
    from segkit import ConfigError, RunInterrupted
    from segkit.errors import ConfigError as Config
    from segkit.errors import RunInterrupted as Interrupted

    assert ConfigError is Config and RunInterrupted is Interrupted
    assert segkit.SegkitError is segkit.errors.SegkitError
    assert {"ConfigError", "RunConfig", "train", "predict"} <= set(dir(segkit))
    with pytest.raises(AttributeError, match="module 'segkit' has no attribute 'trian'"):
        segkit.trian  # noqa: B018


def _console_script(folder: Path) -> Path:
    """The script pip writes for ``[project.scripts]``'s ``segkit`` entry."""
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["segkit"]
    module, function = spec.split(":")
    script = folder / "segkit"
    script.write_text(
        f"import re\nimport sys\nfrom {module} import {function}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({function}())\n"
    )
    return script


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("how", ["python -m segkit", "console script"])
def test_a_ctrl_c_right_after_start_is_one_line_and_130(
    command: types.ModuleType, tmp_path: Path, how: str
) -> None:
    """SIGINT sent as soon as segkit.command is imported (``-X importtime`` says when),
    while the command's modules load: one line on stderr, exit status 130."""
    start = ["-m", "segkit"] if how == "python -m segkit" else [str(_console_script(tmp_path))]
    path = os.pathsep.join([str(REPO), str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", *start, "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": path},
        # Ctrl-C's default, as in a terminal (a suite started in the background ignores it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    for line in process.stderr:  # each import's time, written as it finishes
        if line.rstrip().endswith("| segkit.command"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    said = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert said == [command.STARTING], err[-3000:]
    assert process.returncode == 130
