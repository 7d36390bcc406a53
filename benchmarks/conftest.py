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

Around the tables, for someone who ran the README's command and reads nothing else:

- Before the first benchmark: the device and every suite's sizes; on a CPU at the default
  sizes also about how long the selected benchmarks take (:data:`CPU_SECONDS`, measured)
  and the tiny command that shrinks them (:func:`start_lines`).
- At the end, without a CUDA GPU: once, what could not be measured here and how to
  measure it on a GPU (``make gpu-check``, ``benchmarks/GPU_PLAN.md``;
  :func:`gpu_notice_lines`).
- pytest-benchmark's own table gets readable defaults (:data:`TABLE_DEFAULTS`: one table
  per suite, each in its own time unit; min, mean and rounds; sorted by name), each
  overridden by the same option on the command line.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

import pytest

from segkit.errors import plural

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
            "model img/s",
            "loader img/s",
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
            "model img/s, loader img/s: the model alone, the loader alone, at these sizes;",
            "efficiency = images/s / min(model img/s, loader img/s)"
            + (
                "; floor = train GFLOP/image x images / peak TFLOP/s "
                f"({', '.join(f'{k} {v:g}' for k, v in PEAK_TFLOPS.items())})"
                if floors
                else ""
            ),
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


#: The sections of one table each, read off their records the same way: the suite, the
#: title, and each column's (heading, record key, number format).
SIMPLE_SECTIONS: list[tuple[str, str, list[tuple[str, str, str]]]] = [
    (
        "predict",
        "predict, files to masks (test_predict_throughput.py)",
        [
            ("model", "model", ".1f"),
            ("precision", "precision_resolved", ".1f"),
            ("batch", "predict_batch", "g"),
            ("images/s", "images_per_s", ".1f"),
            ("images", "images", "g"),
            ("size", "size", "g"),
        ],
    ),
    (
        "tiling",
        "one large image, tiled (overlap 0.25) against resized",
        [
            ("model", "model", ".1f"),
            ("image px", "image", "g"),
            ("tile px", "tile", "g"),
            ("tiled s", "tile_s", ".2f"),
            ("resized s", "resize_s", ".3f"),
            ("x resized", "tiling_overhead", ".1f"),
        ],
    ),
    (
        "onnx",
        "one image on the CPU, PyTorch against ONNX Runtime",
        [
            ("model", "model", ".1f"),
            ("size", "size", "g"),
            ("torch ms", "torch_cpu_ms", ".1f"),
            ("onnxruntime ms", "onnxruntime_cpu_ms", ".1f"),
            ("speedup", "speedup", ".2f"),
        ],
    ),
    (
        "peer",
        "segkit against smp, test Dice (mean of seeds) (test_peer_smp.py)",
        [
            ("set", "case", ".1f"),
            ("segkit Dice", "segkit_test_dice_mean", ".3f"),
            ("smp Dice", "smp_test_dice_mean", ".3f"),
            ("gap", "dice_gap", "+.3f"),
            ("segkit s/epoch", "segkit_s_per_epoch", ".2f"),
            ("smp s/epoch", "smp_s_per_epoch", ".2f"),
            ("ratio", "s_per_epoch_ratio", ".2f"),
        ],
    ),
]


def _inference_and_peer(by_suite: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The sections of :data:`SIMPLE_SECTIONS` that have records, in that order."""
    lines: list[str] = []
    for suite, title, columns in SIMPLE_SECTIONS:
        if records := by_suite.get(suite, []):
            rows = [[_fmt(x.get(key), spec) for _, key, spec in columns] for x in records]
            lines += ["", title, *_table([heading for heading, _, _ in columns], rows)]
    return lines


# ------------------------------------------------------------ before and around the run

#: The tiny settings: every suite at a size where a 2-core CPU runs all of them in about
#: two minutes (the numbers are noise; it proves the suites run).
TINY = "SEGKIT_BENCH_IMAGES=8 SEGKIT_BENCH_SIZE=32 SEGKIT_BENCH_BATCH=4"

#: Seconds per benchmark (set-up included) at the CPU default sizes, by test function: the
#: mean over its benchmarks in one default run (59 benchmarks, 10 min 24 s) on this
#: project's 2-core machine, 2026-12-07, shared with other work (a quiet machine is
#: faster). ``test_tiling_overhead`` is 158 s for unet, 25 s for the ResNet-34 models. The
#: start of a default-size CPU run sums them over the selected benchmarks.
CPU_SECONDS: dict[str, float] = {
    "test_augment_only": 2.8,
    "test_epoch": 16.6,
    "test_epoch_classes": 19.2,
    "test_feed_only": 2.6,
    "test_loader_only": 7.3,
    "test_model_only": 6.7,
    "test_peer_smp": 18.0,
    "test_predict_images_per_s": 3.7,
    "test_tiling_overhead": 69.4,
    "test_onnx_cpu_latency": 5.9,
}
CPU_MEASURED = "measured on 2 shared cores, 2026-12-07"

#: pytest-benchmark's table: option -> (attribute on config.option, value). One table per
#: test function (each scales its own time unit: seconds for epochs, ms for the DALI feed,
#: not one table in microseconds for all), three columns, rows by name.
TABLE_DEFAULTS: dict[str, tuple[str, Any]] = {
    "--benchmark-group-by": ("benchmark_group_by", "func"),
    "--benchmark-columns": ("benchmark_columns", ["min", "mean", "rounds"]),
    "--benchmark-sort": ("benchmark_sort", "name"),
    "--benchmark-name": ("benchmark_name", "short"),
}


def _given_options(config: pytest.Config) -> list[str]:
    """The command line's arguments, PYTEST_ADDOPTS' and the ini file's addopts."""
    try:
        ini = [str(a) for a in config.getini("addopts")]
    except ValueError:  # no such ini option
        ini = []
    return [
        *map(str, config.invocation_params.args),
        *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
        *ini,
    ]


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark reads its options
def pytest_configure(config: pytest.Config) -> None:
    given = _given_options(config)
    for flag, (attr, value) in TABLE_DEFAULTS.items():
        if not hasattr(config.option, attr):  # pytest-benchmark not loaded
            continue
        if any(a == flag or a.startswith(flag + "=") for a in given):
            continue
        setattr(config.option, attr, value)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def start_lines(
    functions: list[str], sizes: dict[str, str], device: str, cuda: bool, default_size: bool
) -> list[str]:
    """What a session prints before its first benchmark: the device and each selected
    suite's sizes; on a CPU at the default sizes, the time the selected benchmarks take
    (:data:`CPU_SECONDS`) and the command that shrinks them. ``functions``: the test
    function of each selected benchmark; ``sizes``: a suite's label -> its sizes, in
    words; nothing without benchmarks."""
    if not functions:
        return []
    lines = [f"{device}{'' if cuda else ', no CUDA GPU'}: {plural(len(functions), 'benchmark')}"]
    suites = {_suite(f) for f in functions}
    lines += [f"  {label}: {text}" for label, text in sizes.items() if label in suites]
    if cuda or not default_size:
        return lines
    known = [CPU_SECONDS[f] for f in functions if f in CPU_SECONDS]
    unknown = len(functions) - len(known)
    lines += [
        f"At the default CPU sizes these take about {_minutes(sum(known))}"
        + (f" plus {plural(unknown, 'benchmark')} not timed before" if unknown else "")
        + f" ({CPU_MEASURED};",
        "a busier or smaller machine takes longer). To check that every suite runs in about",
        "2 minutes instead (its numbers are noise; sizes: benchmarks/README.md):",
        f"  {TINY} pytest benchmarks/ --benchmark-only",
    ]
    return lines


def gpu_notice_lines(results: list[dict[str, Any]], cuda: bool) -> list[str]:
    """Without a CUDA GPU, once at the end: what this run could not measure and how to
    measure it on a GPU. ``results`` as :func:`collect` returns them; nothing on a GPU or
    without results."""
    if cuda or not results:
        return []
    dali_ran = any((r.get("extra_info") or {}).get("loader") == "dali" for r in results)
    return [
        "Not measured here (no CUDA GPU); these numbers are CPU numbers:",
        "- GPU training speed: bf16/fp16 autocast, channels_last, torch.compile and CUDA",
        "  graphs, and the compute floor (x floor) that needs a GPU's peak TFLOP/s;",
        "- the dali loader on the GPU: "
        + (
            "here it ran in its CPU mode, without ElasticTransform (GPU-only in DALI);"
            if dali_ran
            else "not run here (DALI is not installed, or no dali benchmark was selected);"
        ),
        "- the GPU check: the lab's loop against segkit's epoch, the CUDA test tier,",
        "  10-epoch `segkit run --loader dali`.",
        "On a GPU machine: make gpu-check (one stage per device call: benchmarks/GPU_PLAN.md);",
        "make gpu-check ARGS=--dry-run rehearses every stage here at tiny sizes.",
    ]


def _bench_sizes() -> tuple[dict[str, str], str, bool, bool]:
    """Each suite's sizes in words, the device, CUDA or not, default size or not, from
    bench_common (the suites' own source of their sizes)."""
    import bench_common as bc
    import torch

    s = bc.settings()
    loader = bc.loader_sizes()
    feed_images, feed_batch, feed_size = bc.feed_sizes()
    tile, side = bc.tile_sizes()
    peer_images, peer_size = bc.peer_sizes()
    epoch = f"{s.images} images of {s.size} px, batch {s.batch}"
    sizes = {
        "epoch": epoch,
        "model": f"{s.size} px, batch {s.batch}",
        "predict": f"the test split of the epoch set at {s.size} px",
        "loader": f"{loader.images} images of {loader.size} px, batch {loader.batch}",
        "augment": f"{loader.images} images of {loader.size} px, batch {loader.batch}",
        "feed": f"{feed_images} images of {feed_size} px, batch {feed_batch}",
        "tiling": f"one {side}x{side} image in tiles of {tile} px",
        "onnx": f"one {bc.onnx_size()} px image",
        "peer": f"{peer_images} images per set of {peer_size} px",
    }
    cuda = torch.cuda.is_available()
    return sizes, str(bc.device_info().get("device_name")), cuda, bc.default_size()


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    bench = getattr(config, "_benchmarksession", None)
    if bench is None or getattr(bench, "skip", False) or getattr(bench, "disabled", False):
        return
    functions = [
        item.originalname if hasattr(item, "originalname") else item.name.split("[")[0]
        for item in session.items
        if "benchmark" in getattr(item, "fixturenames", ())
    ]
    if not functions:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    try:
        sizes, device, cuda, default = _bench_sizes()
    except ImportError:  # this file used outside benchmarks/ (tests/test_bench_summary.py)
        return
    lines = start_lines(functions, sizes, device, cuda, default)
    reporter.write_sep("-", "segkit benchmarks")
    for line in lines:
        reporter.write_line(line)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = collect(config)
    lines = summary_lines(results)
    if not lines:
        return
    terminalreporter.write_sep("=", "segkit benchmark summary")
    for line in lines:
        terminalreporter.write_line(line)
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    notice = gpu_notice_lines(results, cuda)
    if notice:
        terminalreporter.write_line("")
        for line in notice:
            terminalreporter.write_line(line)
