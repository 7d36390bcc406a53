"""Shared fixtures: the two generated datasets every module uses, and a cache folder inside
pytest's tmp.

Each dataset is written once per session and shared by every test that asks for it, so a
test must never modify one: ask for a writable copy (``broken_pets``) or copy it first.

- ``tiny_pets`` / ``tiny_pets_dataset``: pet-like photos (segkit's synthetic Oxford-IIIT Pet
  generator); what a real run trains on, at the smallest useful size.
- ``shapes_root`` / ``shapes``: the conformance kit's L shapes
  (:func:`segkit.testing.write_shapes_dataset`); the mask can be read back from the pixels
  after any augmentation.

Tests that need other data say why in their own fixture's docstring.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

#: ``pytester`` runs a pytest session in-process (no subprocess): test_bench_summary.py.
pytest_plugins = ["pytester"]

#: The smallest real run: `segkit run` options every training test starts from (UNet at
#: 32 px, batch 4, no worker processes).
TINY_RUN = ["--model", "unet", "--image-size", "32", "--batch-size", "4", "--num-workers", "0"]

#: Settings of ``tiny_pets``; test_datasets checks the generator against them.
TINY_PETS_COUNT = 20
TINY_PETS_SEED = 7


def pytest_configure(config: pytest.Config) -> None:
    """Build matplotlib's font cache once, before any test: on a fresh machine its first
    import runs ``fc-list`` in a subprocess, which the fast tier's guard below refuses (the
    first figure test then failed on a new clone, and the cache was never written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.font_manager  # noqa: F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The CUDA tier (tests/cuda, marker ``cuda``) is skipped, with its reason, where CUDA
    is absent: CI proves the CPU path, `make gpu-check` the GPU path."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device here; the GPU machine runs `make gpu-check`")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fast_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the tiers honest: a test outside the ``slow`` tier that trains a model or starts
    a process fails, saying to mark it."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import subprocess

    from segkit.training import engine

    def refuse(what: str):
        def call(*args, **kwargs):
            pytest.fail(f"{request.node.nodeid} {what}: mark it @pytest.mark.slow", pytrace=False)

        return call

    monkeypatch.setattr(engine, "train_one_epoch", refuse("trains a model"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a process"))


def interrupt_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int):
    """Make the engine's training loop raise KeyboardInterrupt (a Ctrl-C) when it starts
    ``epoch``. Returns a function that puts the real loop back (to resume the run)."""
    from segkit.training import engine

    real = engine.train_one_epoch

    def interrupted(*args, **kwargs):
        if kwargs["epoch"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    return lambda: monkeypatch.setattr(engine, "train_one_epoch", real)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The embedded synthetic dataset is cached under $SEGKIT_CACHE; never touch the
    # user's ~/.cache from tests. Nothing in the tests may download (pretrained weights):
    # a test of the download path unsets SEGKIT_OFFLINE and fakes the hub.
    os.environ["SEGKIT_CACHE"] = str(tmp_path_factory.mktemp("segkit-cache"))
    os.environ["SEGKIT_OFFLINE"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _children_are_not_xdist_workers() -> Iterator[None]:
    """`make test` runs the tests in pytest-xdist workers, which set ``PYTEST_XDIST_*`` in
    their environment. A pytest session a test starts (the benchmark summary's, gpu_check's
    epoch benchmark) must not inherit them: pytest-benchmark reads ``PYTEST_XDIST_WORKER``
    as running under xdist, turns itself off and refuses ``--benchmark-only``."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def tiny_pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic Oxford-IIIT Pet folder: ``write_synthetic(count=20, seed=7)``.

    20 JPEGs of 250-500 px with trimaps (1 pet, 2 background, 3 border). ``test.txt``
    lists 5, ``trainval.txt`` 15, which the ``oxford_pet`` reader splits into 13 train
    and 2 valid. Read-only: use ``broken_pets`` to damage a copy.
    """
    from segkit_datasets.synthetic import write_synthetic

    return write_synthetic(
        tmp_path_factory.mktemp("pets"), count=TINY_PETS_COUNT, seed=TINY_PETS_SEED
    )


@pytest.fixture(scope="session")
def tiny_pets_dataset(tiny_pets: Path):
    """``tiny_pets`` read by the registered ``oxford_pet`` dataset plugin (splits: train 13,
    valid 2, test 5)."""
    from segkit import registry

    return registry.create("datasets", "oxford_pet", tiny_pets)


@pytest.fixture
def broken_pets(tiny_pets: Path, tmp_path: Path) -> Path:
    """A writable copy of ``tiny_pets`` for one test to damage."""
    return Path(shutil.copytree(tiny_pets, tmp_path / "pets"))


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conformance kit's L-shape folder: ``segkit.testing.write_shapes_dataset(root,
    seed=0)``, the same data its loader and recipe checks read.

    16 JPEGs, image ``i`` is ``(90 + 3i) x (100 + 4i)`` px (every one a different size),
    named ``shape_00`` .. ``shape_15``: a bright L (channels 200-240) on a dark background
    (15-50), so the mask can be read back from the pixels and a flip or a shifted crop of
    only one of image and mask shows. Trimaps are 1 inside the L and 2 outside, in the
    Oxford-IIIT Pet layout: ``trainval.txt`` lists the first 12, ``test.txt`` the last 4.
    Read-only: copy it to damage it.
    """
    from segkit.testing import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), seed=0)


@pytest.fixture(scope="session")
def shapes(shapes_root: Path):
    """``shapes_root`` read by the kit's own :class:`segkit.testing.ShapesDataset`: train
    ``shape_00``-``shape_09`` (10 images), valid ``shape_10``-``shape_11``, test
    ``shape_12``-``shape_15``; mask spec background 2, values 1 and 2."""
    from segkit.testing import ShapesDataset

    return ShapesDataset(shapes_root)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on ``sys.path`` where a test writes fake distributions (``fake_*``
    modules with entry points); the default registry forgets them after the test."""
    from segkit import registry

    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reset()
    yield tmp_path
    registry.reset()
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]
