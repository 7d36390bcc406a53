"""A third-party package for real: examples/segkit-attention-unet is pip-installed (built
as a wheel, offline), found by `segkit list`, trained by `segkit run`, passes the
conformance kit in its own tests, and is gone after `pip uninstall`. Also the plugin
controls: `segkit list --check` exit codes and SEGKIT_DISABLE_PLUGIN_AUTOLOAD.

The package goes into a throwaway virtual environment layered over the test one (its
site-packages adds ours with ``site.addsitedir``), not into the test venv itself: the
install and uninstall are the same pip commands, but other test processes sharing the
venv (xdist workers, a colleague's run) never see a plugin appear and vanish under them,
and a killed test run leaves nothing installed. Commands run in fresh interpreters, so
package metadata is read anew each time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from segkit import registry
from segkit.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "segkit-attention-unet"
DISTRIBUTION = "segkit-attention-unet"
PLUGINS = {"models": "attention_unet", "losses": "focal_dice", "recipes": "light"}


@dataclass
class PluginEnv:
    """A virtual environment over the test venv, with the example's source copy."""

    root: Path
    python: Path
    source: Path

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != registry.DISABLE_ENV}
        # Offline: nothing may come from an index (and --no-deps asks for nothing).
        env |= {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        return subprocess.run(
            [str(self.python), *args],
            capture_output=True,
            text=True,
            cwd=cwd or self.root,
            env=env,
            timeout=timeout,
        )

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "pip", *args)

    def segkit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "segkit", *args)


def make_layered_venv(root: Path) -> Path:
    """``python -m venv --without-pip`` whose site-packages adds this interpreter's:
    segkit, torch, pip and setuptools are importable there, and what pip installs there
    stays there. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    parent = sysconfig.get_paths()["purelib"]
    # addsitedir, not a bare path line: it also runs the .pth files there (segkit's
    # editable install is one).
    (Path(own.stdout.strip()) / "_segkit_test_parent.pth").write_text(
        f"import site; site.addsitedir({parent!r})\n"
    )
    return python


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory):
    """The example package pip-installed (a real wheel, offline) into a layered venv;
    built only for the slow tests that use it. test_uninstall_removes_the_plugins, last
    in this module, uninstalls it."""
    root = tmp_path_factory.mktemp("plugin-env")
    # Install from a copy: building writes build/ and *.egg-info next to the sources.
    source = Path(
        shutil.copytree(
            EXAMPLE,
            root / "segkit-attention-unet",
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"),
        )
    )
    env = PluginEnv(root, make_layered_venv(root / "venv"), source)
    try:
        # Non-editable: a real wheel, so uninstall removes every file it put there.
        done = env.pip("install", "--no-deps", "--no-build-isolation", "-q", str(source))
        assert done.returncode == 0, done.stdout + done.stderr
        yield env
    finally:
        env.pip("uninstall", "-y", DISTRIBUTION)


def _rows(listing: str) -> dict[str, str]:
    """`segkit list` output: plugin name -> its whole row."""
    return {line.split()[1]: line for line in listing.splitlines()[1:] if len(line.split()) >= 3}


@pytest.mark.slow
def test_segkit_list_shows_the_plugins_with_their_distribution(plugin_env: PluginEnv) -> None:
    where = plugin_env.run("-c", "import segkit_attention_unet as m; print(m.__file__)")
    assert str(plugin_env.root / "venv") in where.stdout  # the installed copy, not the source

    done = plugin_env.segkit("list")

    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    for kind, name in PLUGINS.items():
        assert re.fullmatch(
            rf"{kind}\s+{name}\s+segkit[_-]attention[_-]unet 0\.1\.0\s+ok", rows[name].strip()
        ), rows[name]
    assert "segkit 0.1.0" in rows["unet"]  # the built-ins are still there


@pytest.mark.slow
def test_segkit_run_trains_with_the_three_plugins(
    plugin_env: PluginEnv, tiny_pets: Path, tmp_path: Path
) -> None:
    done = plugin_env.segkit(
        "run", "--model", "attention_unet", "--recipe", "light", "--loss", "focal_dice",
        "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "-q",
        "--data", str(tiny_pets), "--out", str(tmp_path), "--name", "attention",
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("test dice ")
    run_dir = tmp_path / "attention"
    assert (run_dir / "summary.json").is_file() and (run_dir / "best.pt").is_file()
    config = (run_dir / "config.json").read_text()
    for name in PLUGINS.values():
        assert f'"{name}"' in config


@pytest.mark.slow
def test_the_conformance_kit_passes_in_the_packages_own_tests(plugin_env: PluginEnv) -> None:
    # Run from outside the source tree, so the tests import the installed package.
    done = plugin_env.run(
        "-m", "pytest", str(plugin_env.source / "tests"), "-q", "-p", "no:cacheprovider"
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 20, summary  # rules x plugins, not skips
    assert "skipped" not in summary and "failed" not in summary


@pytest.mark.slow
def test_uninstall_removes_the_plugins(plugin_env: PluginEnv) -> None:
    done = plugin_env.pip("uninstall", "-y", DISTRIBUTION)
    assert done.returncode == 0, done.stderr

    listing = plugin_env.segkit("list")

    assert listing.returncode == 0, listing.stderr
    rows = _rows(listing.stdout)
    assert not set(PLUGINS.values()) & set(rows)
    assert "attention" not in listing.stdout
    assert "unet" in rows


# --- plugin controls: segkit list --check, SEGKIT_DISABLE_PLUGIN_AUTOLOAD -----------------


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake installed distribution whose model fails to import."""
    info = tmp_path / "fake_broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-broken-plugin\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[segkit.models]\nbroken_model = fake_broken_model:create\n"
    )
    (tmp_path / "fake_broken_model.py").write_text(
        textwrap.dedent("""
            import a_module_that_does_not_exist

            def create(in_channels=3, out_channels=1):
                raise AssertionError("never reached")
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(registry.DISABLE_ENV, raising=False)
    registry.reset()
    yield
    registry.reset()
    sys.modules.pop("fake_broken_model", None)


def test_list_reports_a_broken_plugin_and_check_exits_1(broken_plugin, capsys) -> None:
    assert main(["list", "models"]) == 0  # listing is informative, not a failure
    out, err = capsys.readouterr()
    rows = _rows(out)
    assert re.fullmatch(
        r"models\s+broken_model\s+fake_broken_plugin 1\.0\s+FAILED", rows["broken_model"].strip()
    )
    assert rows["unet"].rstrip().endswith("ok")  # the others still load
    assert (
        "model 'broken_model' from distribution 'fake_broken_plugin' 1.0 failed to load "
        "(fake_broken_model:create): ModuleNotFoundError: No module named 'a_module_that_does_not_exist'"
    ) in err
    assert "Traceback" not in err

    assert main(["list", "models", "--check"]) == 1
    _, err = capsys.readouterr()
    assert "Traceback (most recent call last)" in err and "fake_broken_model.py" in err


def test_disabling_autoload_hides_the_broken_plugin(broken_plugin, capsys, monkeypatch) -> None:
    monkeypatch.setenv(registry.DISABLE_ENV, "1")
    registry.reset()

    assert main(["list", "models", "--check"]) == 0

    out, err = capsys.readouterr()
    assert "broken_model" not in out + err
    assert {"unet", "resnet34_unet", "timm_unet"} <= set(_rows(out))


def test_check_exits_0_when_every_plugin_loads(capsys) -> None:
    registry.reset()
    assert main(["list", "models", "--check"]) == 0
    assert "FAILED" not in capsys.readouterr().out
