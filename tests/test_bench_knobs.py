"""The benchmark suites' size knobs (benchmarks/bench_common.py) and what a session says
around its tables (benchmarks/conftest.py): the shared tiny variables shrink every suite,
a suite's own variable still wins, a default-size CPU run says how long it takes and how
to shrink it before it starts, a GPU-less run says once what it could not measure, and
pytest-benchmark's table gets readable defaults the command line overrides. Nothing here
times anything."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
CONFTEST = BENCH / "conftest.py"
TINY = {"SEGKIT_BENCH_IMAGES": "8", "SEGKIT_BENCH_SIZE": "32", "SEGKIT_BENCH_BATCH": "4"}


@pytest.fixture
def bc(monkeypatch):
    """bench_common with no SEGKIT_BENCH_* variable set and its caches cleared."""
    import os

    for name in list(os.environ):
        if name.startswith("SEGKIT_BENCH_"):
            monkeypatch.delenv(name)
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_common

    def clear() -> None:
        for f in (bench_common.settings, bench_common.loader_sizes, bench_common.feed_sizes,
                  bench_common.tile_sizes):  # fmt: skip
            f.cache_clear()

    clear()
    yield bench_common
    clear()


@pytest.fixture(scope="module")
def conftest():
    spec = importlib.util.spec_from_file_location("segkit_bench_conftest_knobs", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_are_unchanged_without_variables(bc) -> None:
    assert bc.default_size()
    loader = bc.loader_sizes()
    assert (loader.size, loader.batch, loader.workers) == (256, 32, -1)
    assert bc.feed_sizes() == (256, 32, 256)
    assert bc.tile_sizes() == (256, 2048)
    assert bc.onnx_size() == 256 and bc.peer_sizes() == (48, 64)


def test_the_tiny_variables_shrink_every_suite(bc, monkeypatch) -> None:
    for name, value in TINY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SEGKIT_BENCH_WORKERS", "0")
    assert not bc.default_size()
    s = bc.settings()
    assert (s.images, s.size, s.batch, s.workers) == (8, 32, 4, 0)
    loader = bc.loader_sizes()
    assert (loader.images, loader.size, loader.batch, loader.workers) == (8, 32, 4, 0)
    assert bc.feed_sizes() == (8, 4, 32)
    assert bc.tile_sizes() == (32, 256)  # 8 tiles a side, as 256 px tiles of 2048
    assert bc.onnx_size() == 32 and bc.peer_sizes() == (8, 32)


def test_a_suites_own_variable_wins_over_the_shared_one(bc, monkeypatch) -> None:
    for name, value in TINY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SEGKIT_BENCH_LOADER_SIZE", "256")
    monkeypatch.setenv("SEGKIT_BENCH_TILE_IMAGE", "512")
    monkeypatch.setenv("SEGKIT_BENCH_LOADER_WORKERS", "auto")
    monkeypatch.setenv("SEGKIT_BENCH_WORKERS", "0")
    loader = bc.loader_sizes()
    assert (loader.images, loader.size, loader.batch, loader.workers) == (8, 256, 4, -1)
    assert bc.tile_sizes() == (32, 512)


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("SEGKIT_BENCH_LOADER_SIZE", "big", "a whole number"),
        ("SEGKIT_BENCH_SIZE", "0", "at least 1"),
        ("SEGKIT_BENCH_WORKERS", "many", "a whole number or auto"),
    ],
)
def test_a_bad_value_names_the_variable(bc, monkeypatch, var, value, expected) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=rf"{var}='{value}': expected {expected}; unset it"):
        bc.suite_setting("LOADER", var.rsplit("_", 1)[1], 256)


def test_the_epoch_settings_name_a_bad_shared_value(bc, monkeypatch) -> None:
    monkeypatch.setenv("SEGKIT_BENCH_IMAGES", "eight")
    with pytest.raises(ValueError, match=r"SEGKIT_BENCH_IMAGES='eight': expected a whole"):
        bc.settings()


SIZES = {"epoch": "48 images of 64 px, batch 8", "tiling": "one 2048x2048 image in tiles of 256 px"}


def test_a_default_size_cpu_run_says_how_long_and_how_to_shrink(conftest) -> None:
    functions = ["test_epoch"] * 6 + ["test_tiling_overhead"] * 3
    lines = conftest.start_lines(functions, SIZES, "cpu (x86_64, 2 cores)", False, True)
    text = "\n".join(lines)
    assert lines[0] == "cpu (x86_64, 2 cores), no CUDA GPU: 9 benchmarks"
    assert "  epoch: 48 images of 64 px, batch 8" in lines
    seconds = (
        6 * conftest.CPU_SECONDS["test_epoch"] + 3 * conftest.CPU_SECONDS["test_tiling_overhead"]
    )
    assert f"At the default CPU sizes these take about {conftest._minutes(seconds)} (" in text
    assert f"  {conftest.TINY} pytest benchmarks/ --benchmark-only" in lines
    # A benchmark the table has no time for is counted, not guessed.
    lines = conftest.start_lines([*functions, "test_mine"], SIZES, "cpu", False, True)
    assert " plus 1 benchmark not timed before (" in "\n".join(lines)


def test_a_sized_or_gpu_run_gives_no_estimate(conftest) -> None:
    tiny = conftest.start_lines(["test_epoch"], SIZES, "cpu", False, False)
    assert tiny == ["cpu, no CUDA GPU: 1 benchmark", "  epoch: 48 images of 64 px, batch 8"]
    gpu = conftest.start_lines(["test_epoch"], SIZES, "NVIDIA H100", True, True)
    assert gpu == ["NVIDIA H100: 1 benchmark", "  epoch: 48 images of 64 px, batch 8"]
    assert conftest.start_lines([], SIZES, "cpu", False, True) == []


def test_a_gpu_less_run_says_what_it_could_not_measure(conftest) -> None:
    results = [{"name": "test_epoch[unet-dali]", "extra_info": {"loader": "dali"}}]
    text = "\n".join(conftest.gpu_notice_lines(results, cuda=False))
    assert text.startswith("Not measured here (no CUDA GPU)")
    assert "ran in its CPU mode" in text and "ElasticTransform" in text
    assert "make gpu-check" in text and "benchmarks/GPU_PLAN.md" in text
    no_dali = "\n".join(conftest.gpu_notice_lines([{"name": "test_epoch[unet-x]"}], False))
    assert "DALI is not installed" in no_dali
    assert conftest.gpu_notice_lines(results, cuda=True) == []
    assert conftest.gpu_notice_lines([], cuda=False) == []


BENCH_FILE = """
def test_epoch(benchmark):
    benchmark.pedantic(lambda: None, rounds=2, iterations=1)
"""


def _table_header(out: str) -> list[str]:
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "benchmark 'test_epoch': 1 tests" in line)
    return lines[at + 1].split()


def _config(args: list[str], addopts: list[str] = ()) -> object:
    option = types.SimpleNamespace(
        benchmark_group_by="group", benchmark_columns=None, benchmark_sort="min",
        benchmark_name="normal",
    )  # fmt: skip
    return types.SimpleNamespace(
        option=option,
        invocation_params=types.SimpleNamespace(args=tuple(args)),
        getini=lambda name: list(addopts),
    )


def test_table_defaults_apply_unless_the_option_is_given(conftest, monkeypatch) -> None:
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    config = _config(["benchmarks/"])
    conftest.pytest_configure(config)
    assert vars(config.option) == {
        "benchmark_group_by": "func",
        "benchmark_columns": ["min", "mean", "rounds"],
        "benchmark_sort": "name",
        "benchmark_name": "short",
    }
    # Given on the command line (even at pytest-benchmark's own default), in
    # PYTEST_ADDOPTS or the ini file's addopts: left as given.
    monkeypatch.setenv("PYTEST_ADDOPTS", "--benchmark-name long")
    config = _config(
        ["--benchmark-sort=min", "--benchmark-columns", "max"], ["--benchmark-group-by=group"]
    )
    conftest.pytest_configure(config)
    assert vars(config.option) == {
        "benchmark_group_by": "group",
        "benchmark_columns": None,
        "benchmark_sort": "min",
        "benchmark_name": "normal",
    }
    # Without pytest-benchmark (no such options) nothing is set.
    config = _config([])
    config.option = types.SimpleNamespace()
    conftest.pytest_configure(config)
    assert vars(config.option) == {}


@pytest.mark.slow  # pytest-benchmark's machine info starts processes
def test_the_benchmark_table_defaults_and_a_given_option_wins(pytester, bc) -> None:
    """A real pytest-benchmark session (a no-op benchmark) with the conftest: one table per
    function, min, mean and rounds; a column list on the command line replaces them. The
    start lines come before the first test and the GPU notice after the summary."""
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_epoch=BENCH_FILE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--benchmark-only")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert _table_header(out)[-3:] == ["Min", "Mean", "Rounds"]
    assert "Max" not in _table_header(out) and "OPS" not in _table_header(out)
    start = out.index("segkit benchmarks")
    assert start < out.index("test_epoch.py .")
    import torch

    if not torch.cuda.is_available():
        assert "At the default CPU sizes these take about" in out[start:]
        notice = out.index("Not measured here (no CUDA GPU)")
        assert out.index("segkit benchmark summary") < notice
        assert out.count("Not measured here") == 1
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--benchmark-only", "--benchmark-columns=max"
    )
    assert _table_header(out := result.stdout.str())[-1] == "Max"
    assert "Mean" not in _table_header(out)
