"""A training script without `if __name__ == "__main__":` and the albumentations loader's
worker processes (started from a fork server, they import the script again): one
MainGuardError naming the script and the fix, not multiprocessing's 40-line traceback
from every worker (segkit.system.main_guard)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segkit.errors import ConfigError, MainGuardError
from segkit.registry import create
from segkit.system import main_guard


def test_main_guard_error_only_for_a_worker_that_left_for_it() -> None:
    assert main_guard.main_guard_error([], "the x loader") is None
    assert main_guard.main_guard_error([None, 1, -9], "the x loader") is None
    error = main_guard.main_guard_error([None, main_guard.EXIT_REIMPORTED], "the x loader")
    assert isinstance(error, MainGuardError) and isinstance(error, ConfigError)
    message = str(error)
    assert "\n" not in message and "the x loader's worker processes" in message
    assert 'if __name__ == "__main__":' in message and "num_workers=0" in message


def test_not_reimporting_main_here() -> None:
    assert not main_guard.reimporting_main()
    main_guard.exit_if_reimporting_main()  # returns: this process is no worker


def test_albumentations_loader_raises_the_main_guard_error_for_its_workers(shapes) -> None:
    """The translation alone, without processes: a worker that left with
    EXIT_REIMPORTED turns the DataLoader's RuntimeError into the MainGuardError; any other
    exit keeps the DataLoader's error."""
    loader = create(
        "loaders", "albumentations", shapes, "train", create("recipes", "type1", image_size=32),
        4, train=True,
    )  # fmt: skip

    def dead_worker():
        raise RuntimeError("DataLoader worker (pid(s) 123) exited unexpectedly")
        yield

    loader._batches = dead_worker
    loader._worker_exitcodes = lambda: [main_guard.EXIT_REIMPORTED]
    with pytest.raises(MainGuardError, match="albumentations loader's worker processes") as e:
        next(iter(loader))
    assert e.value.__suppress_context__
    loader._worker_exitcodes = lambda: [-9]
    with pytest.raises(RuntimeError, match="exited unexpectedly") as e:
        next(iter(loader))
    assert not isinstance(e.value, MainGuardError)


@pytest.mark.slow  # trains (tries to) and starts a worker process
def test_script_without_main_guard_fails_in_one_short_message(tiny_pets: Path, tmp_path):
    script = tmp_path / "train_pets.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import segkit

            segkit.train(
                segkit.RunConfig(model="unet", data={str(tiny_pets)!r}, image_size=32,
                                 batch_size=4, epochs=1, num_workers=1,
                                 out={str(tmp_path / "runs")!r}, grid_images=2),
                quiet=True,
            )
            print("trained")
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip().splitlines()
    assert err[-1] == (
        f"segkit.errors.MainGuardError: {script}: the albumentations loader's worker processes "
        "import this script again, and it starts training at import; put the training code "
        'under `if __name__ == "__main__":` (or use num_workers=0, --num-workers 0)'
    ), proc.stderr
    # The script's line and segkit.train's: no worker traceback, no bootstrapping text.
    assert len(err) <= 8, proc.stderr
    assert "bootstrapping" not in proc.stderr and "exited unexpectedly" not in proc.stderr
    assert "trained" not in proc.stdout
    # The worker left before making a run folder of its own, and the parent's run failed
    # before its first epoch, which leaves no folder: nothing is left in runs/.
    runs = tmp_path / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
