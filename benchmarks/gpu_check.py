"""`make gpu-check`: prove and measure segkit's GPU path in one command, in minutes.

Run from the project root on a GPU machine once segkit and its wheels are installed there
(../shared/gpu/README.md). Each step runs as its own process under a hard time limit; a
step that fails or runs out of time is recorded and the next one runs, so one call
always comes back with results:

1. ``env``       nvidia-smi, versions of Python, torch, CUDA, cudnn, DALI, albumentations
2. ``data``      a Pet-shaped synthetic set (train 3312 / valid 368 / test 1227 JPEGs of
                 about 500x375), generated with one process per core while step 3 runs
3. ``cuda-tier`` pytest tests/cuda (bf16/fp16, resume, compile, DALI GPU vs CPU, nvJPEG
                 formats, DDP over NCCL, no host sync per step, peak memory)
4. ``bench-*``   the benchmark suite at full size (type3, 256 px, batch 32, bf16): model
                 only, the DALI feed, and the epoch of both models x both loaders (each
                 with its model-only and loader-only bound); pytest-benchmark JSON each
5. ``run-*``     ``segkit run --model resnet34_unet --loader dali`` and ``--model unet``,
                 3 epochs each on the Pet-shaped set: summary.json, metrics, timings
6. ``profile``   torch.profiler over steady-state training steps of each model on DALI
                 batches: the top kernels and the host/device time split

It writes ``OUT/`` (default ``gpu-check/``): ``table.md`` (the results and the targets),
``results.json``, ``env.json``, ``logs/<step>.log``, ``bench-*.json``, ``runs/*/`` and
``profile-*.txt``; and prints the table last.

``--dry-run`` runs every step at tiny sizes on whatever device is here (the CPU in CI),
so this script cannot rot while no GPU is at hand.

Usage: python benchmarks/gpu_check.py [--dry-run] [--out DIR] [--data DIR] [--budget S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("resnet34_unet", "unet")
LOADERS = ("dali", "albumentations")

#: The targets of issue 10 (one H100, DALI, bf16, Pet train split, 256 px, batch 32).
TARGET_EPOCH_S = {"unet": 3.0, "resnet34_unet": 2.0}
TARGET_WALL_OVER_TRAIN = 1.3
TARGET_EFFICIENCY = 0.85
#: The course lab's epoch times on a cloud GPU, for the comparison column.
LAB_EPOCH_S = {"unet": 133.0, "resnet34_unet": 80.0}


@dataclass(frozen=True)
class Sizes:
    count: int  # images in the generated set (trainval 75%, of which valid 10%)
    image_size: int
    batch: int
    epochs: int
    loader_images: int
    limits: dict[str, int] = field(default_factory=dict)


# Pet: trainval 3680 (train 3312, valid 368), test 3669. The generated set keeps the
# train/valid split exactly and a smaller test split (1227): 4907 images in all.
FULL = Sizes(
    count=4907,
    image_size=256,
    batch=32,
    epochs=3,
    loader_images=3312,
    limits={"cuda-tier": 180, "bench": 60, "bench-epoch": 180, "run": 75, "profile": 75},
)
DRY = Sizes(
    count=24,
    image_size=32,
    batch=4,
    epochs=1,
    loader_images=16,
    limits={"cuda-tier": 60, "bench": 180, "bench-epoch": 480, "run": 180, "profile": 240},
)


@dataclass
class Step:
    name: str
    status: str  # ok, failed (rc), timeout, skipped
    seconds: float
    note: str = ""


class Check:
    def __init__(self, out: Path, sizes: Sizes, budget: float, dry: bool) -> None:
        self.out = out
        self.sizes = sizes
        self.dry = dry
        self.deadline = time.monotonic() + budget
        self.start = time.monotonic()
        self.steps: list[Step] = []
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        print(f"[gpu-check {time.monotonic() - self.start:6.1f}s] {text}", flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(
        self, name: str, cmd: list[str], limit: float, env: dict[str, str] | None = None
    ) -> Step:
        """Run ``cmd`` as its own process group, logging to logs/<name>.log, killed at
        ``limit`` seconds (or at the overall deadline)."""
        limit = min(limit, self.left())
        if limit < 5:
            step = Step(name, "skipped", 0.0, "no time left in the budget")
            self.steps.append(step)
            self.say(f"{name}: skipped (no time left)")
            return step
        log = self.out / "logs" / f"{name}.log"
        self.say(f"{name}: {' '.join(cmd)}  (limit {limit:.0f} s)")
        t0 = time.monotonic()
        with log.open("w") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=self.env(env),
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=limit)
                status = "ok" if rc == 0 else f"failed (rc {rc})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                status = "timeout"
        seconds = time.monotonic() - t0
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        step = Step(name, status, round(seconds, 1), "" if status == "ok" else tail[0][:300])
        self.steps.append(step)
        self.say(f"{name}: {status} in {seconds:.1f} s")
        return step

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        # The repository's own code, also where segkit is installed elsewhere.
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        return env | (extra or {})


# ------------------------------------------------------------------------------ steps


def record_environment(check: Check) -> dict[str, Any]:
    t0 = time.monotonic()
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "dry_run": check.dry,
    }
    for module in ("torch", "torchvision", "timm", "nvidia.dali", "albumentations", "numpy"):
        try:
            mod = __import__(module, fromlist=["__version__"])
            info[module] = getattr(mod, "__version__", "?")
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            info[module] = f"not importable: {e}"
    import torch

    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        props = torch.cuda.get_device_properties(0)
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        info["bf16"] = torch.cuda.is_bf16_supported()
    smi = shutil.which("nvidia-smi")
    text = ""
    if smi:
        try:
            text = subprocess.run(
                [smi], capture_output=True, text=True, timeout=20, check=False
            ).stdout
        except subprocess.TimeoutExpired:
            text = "nvidia-smi timed out"
    (check.out / "nvidia-smi.txt").write_text(text or "no nvidia-smi on this machine\n")
    (check.out / "env.json").write_text(json.dumps(info, indent=2) + "\n")
    check.steps.append(Step("env", "ok", round(time.monotonic() - t0, 1)))
    check.say(
        f"env: {info.get('device_name', 'no GPU')}, torch {info['torch']}, "
        f"DALI {info['nvidia.dali']}, {info['cpu_count']} cores"
    )
    return info


def start_data(check: Check, data: Path) -> subprocess.Popen | None:
    """Generate the set in the background (one process per core); None if it is there."""
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from segkit_datasets.synthetic import is_complete

    if is_complete(data, check.sizes.count, 0):
        check.say(f"data: {data} is complete ({check.sizes.count} images), reused")
        check.steps.append(Step("data", "ok", 0.0, "reused"))
        return None
    workers = max(1, (os.cpu_count() or 1) - (1 if check.dry else 2))
    code = (
        "import sys; from pathlib import Path; "
        "from segkit_datasets.synthetic import write_synthetic; "
        f"write_synthetic(Path(sys.argv[1]), count={check.sizes.count}, seed=0, "
        f"workers={workers})"
    )
    check.say(f"data: generating {check.sizes.count} images into {data} ({workers} processes)")
    log = (check.out / "logs" / "data.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(data)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=check.env(),
        start_new_session=True,
    )
    proc.t0 = time.monotonic()  # type: ignore[attr-defined]
    return proc


def finish_data(check: Check, proc: subprocess.Popen | None, data: Path) -> bool:
    if proc is None:
        return True
    try:
        rc = proc.wait(timeout=max(1.0, min(240.0, check.left())))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = -9
    seconds = round(time.monotonic() - proc.t0, 1)  # type: ignore[attr-defined]
    ok = rc == 0
    check.steps.append(Step("data", "ok" if ok else f"failed (rc {rc})", seconds))
    check.say(f"data: {'ready' if ok else 'FAILED'} after {seconds} s")
    return ok


def benchmarks(check: Check, data: Path) -> None:
    s = check.sizes
    env = {
        "SEGKIT_BENCH_FULL": "1",
        "SEGKIT_BENCH_DATA": str(data),
        "SEGKIT_BENCH_SIZE": str(s.image_size),
        "SEGKIT_BENCH_BATCH": str(s.batch),
        "SEGKIT_BENCH_MODELS": ",".join(MODELS),
        "SEGKIT_BENCH_LOADER_IMAGES": str(s.loader_images),
        "SEGKIT_BENCH_LOADER_SIZE": str(s.image_size),
        "SEGKIT_BENCH_LOADER_BATCH": str(s.batch),
    }
    base = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
    ]
    # The loader-only numbers come with the epoch suite (each epoch's bound, measured in
    # the same process); benchmarks/test_loader_throughput.py and the 3-class epochs
    # (test_epoch_classes: they generate a set of their own) are left to `make bench`.
    suites = [
        ("bench-model", "benchmarks/test_model_throughput.py", s.limits["bench"]),
        ("bench-feed", "benchmarks/test_feed_throughput.py", s.limits["bench"]),
        ("bench-epoch", "benchmarks/test_epoch.py::test_epoch", s.limits["bench-epoch"]),
    ]
    for name, path, limit in suites:
        out = check.out / f"{name}.json"
        check.run(name, [*base, path, f"--benchmark-json={out}"], limit, env)


def runs(check: Check, data: Path) -> None:
    s = check.sizes
    for model in MODELS:
        cmd = [
            sys.executable, "-m", "segkit", "run",
            "--model", model, "--loader", "dali", "--recipe", "type3",
            "--dataset", "oxford_pet", "--data", str(data),
            "--image-size", str(s.image_size), "--batch-size", str(s.batch),
            "--epochs", str(s.epochs), "--out", str(check.out / "runs"),
            "--name", f"{model}-dali",
        ]  # fmt: skip
        check.run(f"run-{model}", cmd, s.limits["run"])


def profiles(check: Check, data: Path) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--profile", ",".join(MODELS),
           "--data", str(data), "--out", str(check.out)]  # fmt: skip
    if check.dry:
        cmd.append("--dry-run")
    check.run("profile", cmd, check.sizes.limits["profile"])


def profile(model: str, data: Path, out: Path, sizes: Sizes) -> None:
    """torch.profiler over steady-state steps of ``model`` on DALI batches."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from segkit import build
    from segkit.config import RunConfig
    from segkit.training.loops import StepContext, TrainStep, train_one_epoch

    config = RunConfig(
        model=model, loader="dali", recipe="type3", image_size=sizes.image_size,
        batch_size=sizes.batch, dataset="oxford_pet", data=str(data),
    )  # fmt: skip
    rt = build.resolve_runtime(config)
    dataset = build.build_dataset(config)
    net = build.build_model(config, rt)
    optimizer = build.build_optimizer(net, config)
    loader = build.build_loader(
        config, rt, dataset, build.build_recipe(config), "train", train=True
    )
    loss_fn = build.build_loss(config)
    steps = 12 if sizes is not DRY else 2

    class Slice:  # the first ``steps`` batches of an epoch
        def __init__(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            loader.set_epoch(self.epoch)
            for i, batch in enumerate(loader):
                if i == steps:
                    return
                yield batch

    def go(epoch: int) -> None:
        train_one_epoch(TrainStep(StepContext(net, loss_fn, optimizer, rt)), Slice(epoch))
        if rt.device.type == "cuda":
            torch.cuda.synchronize()

    go(0)  # warm-up: cudnn autotune, DALI pipeline build
    activities = [ProfilerActivity.CPU]
    if rt.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    t0 = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        go(1)
    wall = time.perf_counter() - t0
    sort = "cuda_time_total" if rt.device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=60)
    head = (
        f"{model} + dali, {steps} steps of batch {sizes.batch} at {sizes.image_size} px, "
        f"{rt.precision.name}, channels_last={rt.channels_last}, device {rt.device}: "
        f"{wall:.3f} s under the profiler ({steps * sizes.batch / wall:.0f} images/s)\n\n"
    )
    (out / f"profile-{model}.txt").write_text(head + table + "\n")
    print(head + table)


# ------------------------------------------------------------------------------ table


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _benchmarks(out: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(out.glob("bench-*.json")):
        data = _load(path) or {}
        for b in data.get("benchmarks", []):
            rows.append(
                {
                    "suite": path.stem,
                    "name": b["name"],
                    **b.get("extra_info", {}),
                    "mean_s": b["stats"]["mean"],
                }
            )
    return rows


def _run_results(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for model in MODELS:
        folder = out / "runs" / f"{model}-dali"
        summary = _load(folder / "summary.json")
        if summary is None:
            continue
        metrics: list[dict[str, Any]] = []
        path = folder / "metrics.csv"
        if path.exists():
            import csv

            with path.open() as f:
                for row in csv.DictReader(f):
                    metrics.append({k: _number(v) for k, v in row.items()})
        found[model] = {"summary": summary, "metrics": metrics}
    return found


def _number(text: str) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def write_table(check: Check, env: dict[str, Any]) -> str:
    out = check.out
    bench = _benchmarks(out)
    run_results = _run_results(out)
    device = env.get("device_name") or f"CPU ({env.get('cpu_count')} cores)"
    lines = [
        f"# gpu-check: {device}, {env['date']}{' (dry run, tiny sizes)' if check.dry else ''}",
        "",
        f"torch {env.get('torch')}, CUDA {env.get('cuda', '-')}, cudnn {env.get('cudnn', '-')}, "
        f"DALI {env.get('nvidia.dali')}, albumentations {env.get('albumentations')}, "
        f"Python {env['python']}, {env['cpu_count']} CPU cores. Sizes: {check.sizes.count} "
        f"images generated, {check.sizes.image_size} px, batch {check.sizes.batch}, type3.",
        "",
        "## Steps",
        "",
        "| step | status | seconds | note |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s.name} | {s.status} | {s.seconds} | {s.note} |" for s in check.steps]
    epochs = [b for b in bench if b["suite"] == "bench-epoch"]
    if epochs:
        lines += [
            "",
            "## Epoch (benchmarks/test_epoch.py)",
            "",
            "| model | loader | s/epoch | images/s | model-only images/s | loader-only images/s "
            "| efficiency | bottleneck | target |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for b in epochs:
            target = TARGET_EPOCH_S.get(b.get("model", ""))
            verdict = "-"
            if target and b.get("loader") == "dali" and not check.dry:  # full size only
                verdict = f"<= {target} s: {'met' if b['epoch_seconds'] <= target else 'MISSED'}"
            lines.append(
                f"| {b.get('model')} | {b.get('loader')} | {_fmt(b.get('epoch_seconds'))} | "
                f"{_fmt(b.get('images_per_s'), 0)} | {_fmt(b.get('model_only_images_per_s'), 0)} "
                f"| {_fmt(b.get('loader_only_images_per_s'), 0)} | "
                f"{_fmt(b.get('efficiency'))} | {b.get('bottleneck')} | {verdict} |"
            )
    others = [b for b in bench if b["suite"] != "bench-epoch"]
    if others:
        lines += [
            "",
            "## Model only, loader only, feed",
            "",
            "| suite | case | result |",
            "|---|---|---|",
        ]
        for b in others:
            keys = ("images_per_s", "samples_per_s", "achieved_tflops", "train_gflop_per_image")
            result = ", ".join(f"{k} {_fmt(b[k])}" for k in keys if k in b)
            lines.append(f"| {b['suite']} | {b['name']} | {result} |")
    if run_results:
        lines += [
            "",
            "## segkit run --loader dali (Pet-shaped set)",
            "",
            "| model | epochs | train s/epoch | valid s/epoch | checkpoint s/epoch | wall s/epoch "
            "| wall / train | run wall s | peak GPU MB | test Dice | lab s/epoch |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model, r in run_results.items():
            s = r["summary"]
            m = r["metrics"][1:] or r["metrics"]  # leave out the warm-up epoch

            def mean(key: str, rows: list[dict[str, Any]] = m) -> float | None:
                vals = [row[key] for row in rows if isinstance(row.get(key), int | float)]
                return sum(vals) / len(vals) if vals else None

            train_s = mean("epoch_seconds")
            wall = mean("epoch_wall_s")
            ratio = wall / train_s if wall and train_s else None
            lines.append(
                f"| {model} | {len(r['metrics'])} | {_fmt(train_s)} | "
                f"{_fmt(mean('valid_s'))} | {_fmt(mean('checkpoint_s'))} | "
                f"{_fmt(wall)} | {_fmt(ratio)} | {_fmt(s.get('wall_s'), 1)} | "
                f"{_fmt(s.get('peak_gpu_memory_mb'), 0)} | "
                f"{_fmt(s.get('test_dice'), 4)} | {LAB_EPOCH_S[model]:.0f} |"
            )
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    results = {
        "env": env,
        "steps": [s.__dict__ for s in check.steps],
        "benchmarks": bench,
        "runs": {k: v["summary"] for k, v in run_results.items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return text


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, any device (CI)")
    p.add_argument("--out", default="gpu-check", help="results folder (default: gpu-check)")
    p.add_argument("--data", help="the Pet-shaped set (default: OUT/../gpu-check-data)")
    p.add_argument(
        "--budget",
        type=float,
        help="seconds in all (default 420; --dry-run 1500: a 2-core CPU is slow at anything)",
    )
    p.add_argument("--profile", metavar="MODEL", help=argparse.SUPPRESS)  # one profile step
    args = p.parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve() if args.data else out.parent / f"{out.name}-data"
    if args.profile:
        for model in args.profile.split(","):
            profile(model, data, out, sizes)
        return 0

    import torch

    if not torch.cuda.is_available() and not args.dry_run:
        print(
            "gpu-check: no CUDA device here; use --dry-run to exercise the script on the CPU",
            file=sys.stderr,
        )
        return 2
    budget = args.budget if args.budget is not None else (1500.0 if args.dry_run else 420.0)
    check = Check(out, sizes, budget, args.dry_run)
    env = record_environment(check)
    gen = start_data(check, data)
    tier = [sys.executable, "-m", "pytest", "tests/cuda", "-q", "-rA", "-p", "no:cacheprovider",
            f"--junitxml={out / 'cuda-tier.xml'}"]  # fmt: skip
    import importlib.util

    if importlib.util.find_spec("xdist") is not None:
        # Four processes share the GPU: the tests are small, and the cold torch.compile
        # of one overlaps the others (measured on an H100: 150 s in one process, cold).
        tier += ["-n", "4"]
    check.run("cuda-tier", tier, sizes.limits["cuda-tier"])
    if finish_data(check, gen, data):
        benchmarks(check, data)
        runs(check, data)
        profiles(check, data)
    text = write_table(check, env)
    print(text)
    bad = [s for s in check.steps if s.status != "ok"]
    total = time.monotonic() - check.start
    print(
        f"gpu-check: {len(check.steps) - len(bad)} of {len(check.steps)} steps ok in "
        f"{total:.0f} s; results in {out}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
