"""The summary table `pytest benchmarks/` prints at the end (benchmarks/conftest.py): from
each result's extra_info, shown without -s, '-' for what a result lacks, nothing without
results."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFTEST = ROOT / "benchmarks" / "conftest.py"

EPOCH_COLUMNS = [
    "model", "loader", "precision", "images/s", "s/epoch", "model img/s",
    "loader img/s", "efficiency", "bottleneck",
]  # fmt: skip


@pytest.fixture(scope="module")
def summary():
    spec = importlib.util.spec_from_file_location("segkit_bench_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _epoch(**extra) -> dict:
    info = {
        "device_name": "cpu (x86_64, 2 cores)",
        "model": "resnet34_unet",
        "loader": "dali",
        "precision_resolved": "fp32",
        "images": 48,
        "epoch_images": 48,
        "size": 64,
        "epoch_seconds": 3.22,
        "images_per_s": 14.9,
        "model_only_images_per_s": 13.8,
        "loader_only_images_per_s": 131.2,
        "efficiency": 1.08,
        "bottleneck": "model",
    }
    return {"name": "test_epoch[resnet34_unet-dali]", "extra_info": info | extra, "mean_s": 3.22}


def _header(lines: list[str], first: str) -> list[str]:
    return next(line for line in lines if line.startswith(first)).split()


def test_no_results_print_nothing(summary) -> None:
    assert summary.summary_lines([]) == []
    # A benchmark of some other suite is not summarized either.
    assert summary.summary_lines([{"name": "test_other", "extra_info": {"x": 1}}]) == []


def test_epoch_table_on_a_cpu_has_no_floor(summary) -> None:
    lines = summary.summary_lines([_epoch()])
    text = "\n".join(lines)
    assert lines[0].startswith("epoch (test_epoch.py), cpu")
    assert " ".join(_header(lines, "model")) == " ".join(EPOCH_COLUMNS)
    row = next(line for line in lines if line.startswith("resnet34_unet")).split()
    assert row == ["resnet34_unet", "dali", "fp32", "14.9", "3.22", "13.8", "131.2", "108%",
                   "model"]  # fmt: skip
    assert "floor" not in text


def test_three_class_epochs_get_a_classes_column(summary) -> None:
    k3 = _epoch(classes=3, epoch_seconds=3.4)
    k3["name"] = "test_epoch_classes[resnet34_unet-dali]"
    lines = summary.summary_lines([_epoch(classes=1), k3])
    assert _header(lines, "model")[:3] == ["model", "loader", "classes"]
    rows = [line.split() for line in lines if line.startswith("resnet34_unet")]
    assert [r[2] for r in rows] == ["1", "3"] and rows[1][5] == "3.40"


def test_epoch_on_an_h100_reads_the_compute_floor(summary) -> None:
    # The README's numbers: resnet34_unet 42.1 GFLOP x 3312 images / 790 TFLOP/s = 0.18 s.
    h100 = dict(device_name="NVIDIA H100 80GB HBM3", precision_resolved="bf16",
                epoch_images=3312, epoch_seconds=2.93, train_gflop_per_image=42.1)  # fmt: skip
    lines = summary.summary_lines([_epoch(**h100)])
    assert _header(lines, "model")[-4:] == ["floor", "s", "x", "floor"]
    row = next(line for line in lines if line.startswith("resnet34_unet")).split()
    assert row[-2:] == ["0.18", "16.6"]  # 2.93 s / 0.1765 s
    # An A100 has its own peak; an unknown GPU or an fp32 run gets no floor.
    a100 = summary.summary_lines([_epoch(**h100 | {"device_name": "NVIDIA A100-SXM4-80GB"})])
    assert next(x for x in a100 if x.startswith("resnet34_unet")).split()[-2] == "0.45"
    for other in ({"device_name": "NVIDIA GeForce RTX 4090"}, {"precision_resolved": "fp32"}):
        assert "floor" not in "\n".join(summary.summary_lines([_epoch(**h100 | other)]))


def test_epoch_floor_takes_the_flop_count_of_the_model_only_result(summary) -> None:
    gpu = dict(device_name="NVIDIA H200", precision_resolved="bf16", size=256)  # fmt: skip
    model = {
        "name": "test_model_only[resnet34_unet]",
        "extra_info": gpu | {"model": "resnet34_unet", "images_per_s": 1388.0,
                             "train_gflop_per_image": 42.1, "achieved_tflops": 58.4},
    }  # fmt: skip
    lines = summary.summary_lines([_epoch(**gpu | {"epoch_images": 3312}), model])
    assert "x floor" in "\n".join(lines)
    i = lines.index("model only (test_model_throughput.py)")
    assert _header(lines[i + 1 :], "model") == [
        "model", "precision", "images/s", "GFLOP/image", "TFLOP/s", "of", "peak"]  # fmt: skip
    assert lines[i + 3].split() == ["resnet34_unet", "bf16", "1388.0", "42.10", "58.4", "7%"]


def test_partial_extra_info_prints_dashes(summary) -> None:
    results = [
        {"name": "test_epoch[unet-albumentations]", "extra_info": {"model": "unet"}},
        {"name": "test_model_only[unet]", "extra_info": {}},
        {"name": "test_loader_only[dali]", "extra_info": {"loader": "dali", "images_per_s": 9}},
        {"name": "test_feed_only[type3]", "extra_info": None},
    ]
    lines = summary.summary_lines(results)
    assert next(x for x in lines if x.startswith("unet")).split() == ["unet"] + ["-"] * 8
    for title in ("model only", "loader only", "dali feed only"):
        assert any(x.startswith(title) for x in lines)
    assert (
        next(x for x in lines if x.startswith("dali ")).split() == ["dali", "-", "9.0"] + ["-"] * 4
    )


def test_augmentations_show_each_ops_cost_over_its_loaders_baseline(summary) -> None:
    def result(loader: str, case: str, ips: float) -> dict:
        info = {"loader": loader, "loader_mode": "cpu", "augmentation": case, "size": 256}
        return {
            "name": f"test_augment_only[{loader}-{case}]",
            "extra_info": info | {"images_per_s": ips},
        }

    lines = summary.summary_lines(
        [
            result("dali", "Resize (baseline)", 200.0),
            result("dali", "Affine", 100.0),
            result("albumentations", "Resize (baseline)", 100.0),
            result("albumentations", "Affine", 50.0),
        ]
    )
    i = lines.index("augmentations (test_augment_throughput.py)")
    rows = [x.split() for x in lines[i + 3 : i + 7]]
    assert rows[1] == ["Affine", "dali", "cpu", "100.0", "+5.00", "256"]  # 10 ms - 5 ms
    assert rows[3] == ["Affine", "albumentations", "cpu", "50.0", "+10.00", "256"]
    assert rows[0][-2] == "-"  # the baseline itself


def test_collect_reads_nothing_without_pytest_benchmark(summary) -> None:
    class Config:
        pass

    assert summary.collect(Config()) == []


#: Appended to benchmarks/conftest.py in the in-process sessions: pytest-benchmark starts
#: processes at configure (`git`, `file`), so they run without it (``-p no:benchmark``) and
#: this stands in for its session object; the slow test below runs the real one.
FAKE_SESSION = """
import types


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    stats = types.SimpleNamespace(mean=7.5)
    bench = types.SimpleNamespace(name="test_epoch[unet-albumentations]", extra_info={},
                                  stats=stats)
    config._benchmarksession = types.SimpleNamespace(benchmarks=[bench])
"""


def test_summary_shows_without_s(pytester) -> None:
    """The hook in a pytest session (in-process, no training): an epoch result's extra_info
    comes out as the table, with pytest's capture on."""
    pytester.makeconftest(CONFTEST.read_text() + FAKE_SESSION)
    pytester.makepyfile(
        test_epoch="""
        def test_epoch(request):
            request.config._benchmarksession.benchmarks[0].extra_info.update(
                model="unet", loader="albumentations", precision_resolved="fp32",
                images_per_s=6.4, epoch_seconds=7.5, efficiency=0.99)
            print("captured")
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:benchmark", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "segkit benchmark summary" in out and "captured" not in out
    row = next(x for x in out.splitlines() if x.startswith("unet "))
    assert row.split() == ["unet", "albumentations", "fp32", "6.4", "7.50", "-", "-", "99%", "-"]


def test_no_summary_without_benchmark_results(pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())  # no session object at all
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:benchmark", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "segkit benchmark summary" not in result.stdout.str()
    # A session object with no results prints nothing either.
    pytester.makeconftest(
        CONFTEST.read_text() + FAKE_SESSION.replace("benchmarks=[bench]", "benchmarks=[]")
    )
    result = pytester.runpytest_inprocess("-p", "no:benchmark", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "segkit benchmark summary" not in result.stdout.str()


@pytest.mark.slow
def test_tiny_benchmark_session_ends_with_the_summary(tmp_path: Path) -> None:
    """The real suites at tiny sizes (one model, the albumentations loader, no worker
    processes): the summary's sections and columns come out of their extra_info. The
    loader suite follows the shared tiny variables (no SEGKIT_BENCH_LOADER_* set)."""
    env = os.environ | {
        "SEGKIT_CACHE": str(tmp_path / "cache"),
        "SEGKIT_BENCH_IMAGES": "8",
        "SEGKIT_BENCH_SIZE": "32",
        "SEGKIT_BENCH_BATCH": "4",
        "SEGKIT_BENCH_WORKERS": "0",
        "SEGKIT_BENCH_MODELS": "resnet34_unet",
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/",
            "--benchmark-only",
            "-p",
            "no:cacheprovider",
            "-k",
            "(albumentations and not classes and not augment) or model_only",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = proc.stdout
    # After pytest-benchmark's own tables (one per test function), without -s.
    assert out.index("benchmark 'test_model_only': 1 tests") < out.index("segkit benchmark summary")
    lines = out[out.index("segkit benchmark summary") :].splitlines()[1:]
    assert lines[0].startswith("epoch (test_epoch.py)")
    assert " ".join(_header(lines, "model")) == " ".join(EPOCH_COLUMNS)
    row = next(x for x in lines if x.startswith("resnet34_unet")).split()
    assert row[:3] == ["resnet34_unet", "albumentations", "fp32"] and "-" not in row
    assert row[-1] in ("model", "loader") and row[-2].endswith("%")
    assert "model only (test_model_throughput.py)" in lines
    assert "loader only (test_loader_throughput.py)" in lines
    loader = lines[lines.index("loader only (test_loader_throughput.py)") + 3].split()
    assert loader[0] == "albumentations" and loader[-3:] == ["32", "4", "0"]  # size batch workers


def test_predict_tiling_onnx_and_the_peer_comparison_are_summarized(summary) -> None:
    results = [
        {
            "name": "test_predict_images_per_s[unet-8]",
            "extra_info": {"model": "unet", "predict_batch": 8, "images_per_s": 12.07,
                           "images": 10, "size": 32, "precision_resolved": "fp32"},
        },
        {
            "name": "test_tiling_overhead[unet]",
            "extra_info": {"model": "unet", "image": 2048, "tile": 256, "tile_s": 96.57,
                           "resize_s": 0.811, "tiling_overhead": 119.1},
        },
        {
            "name": "test_onnx_cpu_latency",
            "extra_info": {"model": "resnet34_unet", "size": 256, "torch_cpu_ms": 170.2,
                           "onnxruntime_cpu_ms": 166.1, "speedup": 1.02},
        },
        {
            "name": "test_peer_smp[collar]",
            "extra_info": {"segkit_test_dice_mean": 0.4123, "smp_test_dice_mean": 0.4011,
                           "dice_gap": 0.0112, "segkit_s_per_epoch": 2.5,
                           "smp_s_per_epoch": 2.25, "s_per_epoch_ratio": 1.111},
        },
    ]  # fmt: skip
    lines = summary.summary_lines(results)
    assert _header(lines, "model  precision  batch") == [
        "model", "precision", "batch", "images/s", "images", "size"
    ]  # fmt: skip
    predict = lines.index("predict, files to masks (test_predict_throughput.py)")
    assert lines[predict + 3].split() == ["unet", "fp32", "8", "12.1", "10", "32"]
    assert _header(lines, "model  image px") == [
        "model", "image", "px", "tile", "px", "tiled", "s", "resized", "s", "x", "resized"
    ]  # fmt: skip
    tiling = lines.index("one large image, tiled (overlap 0.25) against resized")
    assert lines[tiling + 3].split() == ["unet", "2048", "256", "96.57", "0.811", "119.1"]
    onnx = lines.index("one image on the CPU, PyTorch against ONNX Runtime")
    assert lines[onnx + 3].split() == ["resnet34_unet", "256", "170.2", "166.1", "1.02"]
    peer = lines.index("segkit against smp, test Dice (mean of seeds) (test_peer_smp.py)")
    assert lines[peer + 3].split() == ["collar", "0.412", "0.401", "+0.011", "2.50", "2.25", "1.11"]
