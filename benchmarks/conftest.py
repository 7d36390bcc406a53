"""One summary table at the end of ``pytest benchmarks/``, read from every result's
``extra_info``: what the suites print per test (images/s, efficiency, the bottleneck) is
captured unless ``-s``, and pytest-benchmark's own table shows only times.

- Epoch results (``test_epoch.py``): model, loader, precision, images/s, s/epoch, the
  model-only and loader-only images/s, efficiency and the bottleneck; on a GPU whose peak is
  in :data:`PEAK_TFLOPS` and a bf16/fp16 run, also the compute floor of the epoch
  (train GFLOP per image x images / peak TFLOP/s) and how many times the floor it took.
- Model only, loader only and the DALI feed, each in a few lines, where they ran.

A value missing from a result's ``extra_info`` prints as ``-``; a session with no benchmark
results prints nothing. The results are read from pytest-benchmark's session object
(``config._benchmarksession.benchmarks``, what its own terminal table is made from: it
offers no public accessor); a missing or changed session object prints nothing, never fails
the run.
"""

from __future__ import annotations

from typing import Any

import pytest

#: Dense bf16/fp16 tensor-core peak, TFLOP/s, by a name found in ``device_name``
#: (first match wins). The H100 figure is the one benchmarks/README.md reads the compute
#: floor against; an unknown GPU gets no floor.
PEAK_TFLOPS: dict[str, float] = {"H200": 790.0, "H100": 790.0, "A100": 312.0}

#: Precisions the peak applies to (an fp32 run on the same chip has a far lower peak).
_PEAK_PRECISIONS = {"bf16", "fp16"}

DASH = "-"


def peak_tflops(device_name: Any, precision: Any) -> float | None:
    """The peak of :data:`PEAK_TFLOPS` for a GPU name and a resolved precision, or None."""
    if not isinstance(device_name, str) or precision not in _PEAK_PRECISIONS:
        return None
    for key, peak in PEAK_TFLOPS.items():
        if key in device_name.upper():
            return peak
    return None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _fmt(x: Any, spec: str = ".1f") -> str:
    n = _num(x)
    if n is not None:
        return format(n, spec)
    if x is None or x == "":
        return DASH
    return str(x)


def _table(header: list[str], rows: list[list[str]], names: int = 1) -> list[str]:
    """Aligned columns: the first ``names`` to the left, the numbers to the right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < names else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _suite(name: str) -> str:
    func = name.split("[")[0]
    return {
        "test_epoch": "epoch",
        "test_epoch_classes": "epoch",
        "test_model_only": "model",
        "test_loader_only": "loader",
        "test_augment_only": "augment",
        "test_feed_only": "feed",
        "test_predict_images_per_s": "predict",
        "test_tiling_overhead": "tiling",
        "test_onnx_cpu_latency": "onnx",
        "test_peer_smp": "peer",
    }.get(func, "")


def collect(config: pytest.Config) -> list[dict[str, Any]]:
    """The session's benchmark results as ``{"name", "extra_info", "mean_s"}`` dicts; []
    where pytest-benchmark is absent or recorded nothing."""
    session = getattr(config, "_benchmarksession", None)
    out = []
    for bench in getattr(session, "benchmarks", None) or []:
        stats = getattr(bench, "stats", None)
        out.append(
            {
                "name": str(getattr(bench, "name", "")),
                "extra_info": dict(getattr(bench, "extra_info", None) or {}),
                "mean_s": _num(getattr(stats, "mean", None)) if stats else None,
            }
        )
    return out


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    """The summary's lines for ``results`` (as :func:`collect` returns them); [] when
    none of them comes from a segkit suite."""
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        suite = _suite(r.get("name", ""))
        if suite:
            # A parameter the extra_info does not repeat (test_peer_smp's set) as "case".
            case = r.get("name", "").partition("[")[2].rstrip("]")
            by_suite.setdefault(suite, []).append({"case": case, **(r.get("extra_info") or {})})
    lines: list[str] = []
    gflop_of = {
        (e.get("model"), e.get("size")): e.get("train_gflop_per_image")
        for e in by_suite.get("model", [])
        if _num(e.get("train_gflop_per_image")) is not None
    }

    epochs = by_suite.get("epoch", [])
    if epochs:
        rows, floors = [], False
        # A classes column where some epoch trained K classes (test_epoch_classes).
        classes = any((_num(e.get("classes")) or 1) > 1 for e in epochs)
        for e in epochs:
            row = [
                _fmt(e.get("model")),
                _fmt(e.get("loader")),
                *([_fmt(e.get("classes", 1), "g")] if classes else []),
                _fmt(e.get("precision_resolved") or e.get("precision")),
                _fmt(e.get("images_per_s")),
                _fmt(e.get("epoch_seconds"), ".2f"),
                _fmt(e.get("model_only_images_per_s")),
                _fmt(e.get("loader_only_images_per_s")),
                _fmt(_num(e.get("efficiency")), ".0%"),
                _fmt(e.get("bottleneck")),
            ]
            peak = peak_tflops(e.get("device_name"), e.get("precision_resolved"))
            gflop = _num(e.get("train_gflop_per_image"))
            if gflop is None:
                gflop = _num(gflop_of.get((e.get("model"), e.get("size"))))
            images = _num(e.get("epoch_images")) or _num(e.get("images"))
            seconds = _num(e.get("epoch_seconds"))
            floor = gflop * 1e9 * images / (peak * 1e12) if peak and gflop and images else None
            floors = floors or floor is not None
            row += [
                _fmt(floor, ".2f"),
                _fmt(seconds / floor if floor and seconds else None, ".1f"),
            ]
            rows.append(row)
        header = [
            "model",
            "loader",
            *(["classes"] if classes else []),
            "precision",
            "images/s",
            "s/epoch",
            "model-only img/s",
            "loader-only img/s",
            "efficiency",
            "bottleneck",
            "floor s",
            "x floor",
        ]
        if not floors:  # no GPU with a known peak: leave the columns out
            header, rows = header[:-2], [r[:-2] for r in rows]
        device = epochs[0].get("device_name")
        lines += [f"epoch (test_epoch.py){f', {device}' if device else ''}"]
        lines += _table(header, rows, names=2)
        lines += [
            "efficiency = images/s / min(model-only, loader-only images/s)"
            + (
                "; floor = train GFLOP/image x images / peak TFLOP/s "
                f"({', '.join(f'{k} {v:g}' for k, v in PEAK_TFLOPS.items())})"
                if floors
                else ""
            )
        ]

    models = by_suite.get("model", [])
    if models:
        rows = []
        for m in models:
            peak = peak_tflops(m.get("device_name"), m.get("precision_resolved"))
            tflops = _num(m.get("achieved_tflops"))
            rows.append(
                [
                    _fmt(m.get("model")),
                    _fmt(m.get("precision_resolved") or m.get("precision")),
                    _fmt(m.get("images_per_s")),
                    _fmt(m.get("train_gflop_per_image"), ".2f"),
                    _fmt(tflops, ".3g"),
                    _fmt(tflops / peak if tflops is not None and peak else None, ".0%"),
                ]
            )
        header = ["model", "precision", "images/s", "GFLOP/image", "TFLOP/s", "of peak"]
        if all(r[-1] == DASH for r in rows):
            header, rows = header[:-1], [r[:-1] for r in rows]
        lines += ["", "model only (test_model_throughput.py)", *_table(header, rows)]

    loaders = by_suite.get("loader", [])
    if loaders:
        rows = [
            [
                _fmt(x.get("loader")),
                _fmt(x.get("loader_mode")),
                _fmt(x.get("images_per_s")),
                _fmt(x.get("best_images_per_s")),
                _fmt(x.get("size"), "g"),
                _fmt(x.get("batch"), "g"),
                _fmt(x.get("workers"), "g"),
            ]
            for x in loaders
        ]
        header = ["loader", "mode", "images/s", "best images/s", "size", "batch", "workers"]
        lines += ["", "loader only (test_loader_throughput.py)", *_table(header, rows, names=2)]

    augments = by_suite.get("augment", [])
    if augments:
        base = {
            x.get("loader"): _num(x.get("images_per_s"))
            for x in augments
            if x.get("augmentation") == "Resize (baseline)"
        }

        def extra_ms(x: dict[str, Any]) -> str:
            ips, ref = _num(x.get("images_per_s")), base.get(x.get("loader"))
            if not ips or not ref or x.get("augmentation") == "Resize (baseline)":
                return DASH
            return f"{1000 / ips - 1000 / ref:+.2f}"

        rows = [
            [
                _fmt(x.get("augmentation")),
                _fmt(x.get("loader")),
                _fmt(x.get("loader_mode")),
                _fmt(x.get("images_per_s")),
                extra_ms(x),
                _fmt(x.get("size"), "g"),
            ]
            for x in augments
        ]
        header = ["augmentation", "loader", "mode", "images/s", "ms/image over Resize", "size"]
        lines += ["", "augmentations (test_augment_throughput.py)", *_table(header, rows, names=3)]

    feeds = by_suite.get("feed", [])
    if feeds:
        rows = [
            [
                _fmt(f.get("recipe")),
                _fmt(f.get("samples_per_s"), ".0f"),
                _fmt(f.get("us_per_batch")),
                _fmt(f.get("first_epoch_samples_per_s"), ".0f"),
            ]
            for f in feeds
        ]
        header = ["recipe", "samples/s", "us/batch", "first epoch samples/s"]
        lines += ["", "dali feed only (test_feed_throughput.py)", *_table(header, rows)]

    lines += _inference_and_peer(by_suite)
    return lines[1:] if lines and lines[0] == "" else lines


def _inference_and_peer(by_suite: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The sections of test_predict_throughput.py and test_peer_smp.py."""
    lines: list[str] = []
    if predicts := by_suite.get("predict", []):
        rows = [
            [
                _fmt(x.get("model")),
                _fmt(x.get("precision_resolved")),
                _fmt(x.get("predict_batch"), "g"),
                _fmt(x.get("images_per_s")),
                _fmt(x.get("images"), "g"),
                _fmt(x.get("size"), "g"),
            ]
            for x in predicts
        ]
        header = ["model", "precision", "batch", "images/s", "images", "size"]
        lines += ["", "predict, files to masks (test_predict_throughput.py)", *_table(header, rows)]
    if tilings := by_suite.get("tiling", []):
        rows = [
            [
                _fmt(x.get("model")),
                _fmt(x.get("tile"), "g"),
                _fmt(x.get("tile_s"), ".2f"),
                _fmt(x.get("resize_s"), ".3f"),
                _fmt(x.get("tiling_overhead"), ".1f"),
            ]
            for x in tilings
        ]
        header = ["model", "tile", "tiled s", "resized s", "x resized"]
        lines += [
            "",
            "one 2048x2048 image, tiled (overlap 0.25) against resized",
            *_table(header, rows),
        ]
    if onnx := by_suite.get("onnx", []):
        rows = [
            [
                _fmt(x.get("model")),
                _fmt(x.get("size"), "g"),
                _fmt(x.get("torch_cpu_ms")),
                _fmt(x.get("onnxruntime_cpu_ms")),
                _fmt(x.get("speedup"), ".2f"),
            ]
            for x in onnx
        ]
        header = ["model", "size", "torch ms", "onnxruntime ms", "speedup"]
        lines += ["", "one image on the CPU, PyTorch against ONNX Runtime", *_table(header, rows)]
    if peers := by_suite.get("peer", []):
        rows = [
            [
                _fmt(x.get("case")),
                _fmt(x.get("segkit_test_dice_mean"), ".3f"),
                _fmt(x.get("smp_test_dice_mean"), ".3f"),
                _fmt(x.get("dice_gap"), "+.3f"),
                _fmt(x.get("segkit_s_per_epoch"), ".2f"),
                _fmt(x.get("smp_s_per_epoch"), ".2f"),
                _fmt(x.get("s_per_epoch_ratio"), ".2f"),
            ]
            for x in peers
        ]
        header = ["set", "segkit Dice", "smp Dice", "gap", "segkit s/epoch", "smp s/epoch", "ratio"]
        lines += ["", "segkit against smp, test Dice (mean of seeds) (test_peer_smp.py)"]
        lines += _table(header, rows)
    return lines


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = summary_lines(collect(config))
    if not lines:
        return
    terminalreporter.write_sep("=", "segkit benchmark summary")
    for line in lines:
        terminalreporter.write_line(line)
