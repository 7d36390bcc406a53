"""`make gpu-check`: prove and measure segkit's GPU path in stages that fit a GPU loan.

A GPU loan here lasts 15 minutes of device time, the machine stays warm only about 30 s
between calls, and each call carries at most 64 MiB: DALI's wheels arrive in four parts,
one per call. So the check runs in stages, one per call, each ending well inside 150 s
and writing its own results; benchmarks/merge_gpu_results.py merges them into one
results folder. benchmarks/GPU_PLAN.md gives the four calls verbatim.

====== ============================================================ =====================
stage  measures                                                     needs
====== ============================================================ =====================
1      a torch.profiler table of UNet's model-only step; the lab's  ``install-parts.sh
       loop (as written, and anomaly detection off) side by side    small .`` (no DALI)
       with segkit's epoch (albumentations loader), both models
2      model-only steps: bf16 vs fp16, batch 32 vs 64, eager vs     the same
       one CUDA graph per step; ``--compile`` cold seconds and
       steady images/s for UNet (default mode)
3      the CUDA tier without DALI (tests/cuda); ``--compile`` for   the same
       ResNet34-UNet (default mode)
4      two 10-epoch ``segkit run --loader dali`` (whole-run wall    ``install-parts.sh
       against the sum of training epochs; DALI epoch times); the   dali``
       CUDA tier's DALI part
5      optional, when device time is left: whatever of the list     the same
       below has not passed in an earlier stage on this machine:
       the CUDA tier's DALI part, the compile steps, compile with
       max-autotune-no-cudagraphs, the DALI epoch benchmark with
       its model-only and loader-only bounds, ResNet34-UNet's profile,
       and a one-epoch ``segkit run --profile`` of ResNet34-UNet
       (how busy the GPU is with DALI feeding it)
====== ============================================================ =====================

Every step runs as its own process under a time limit. A stage has a budget (``--budget``,
default 120-130 s): a step whose estimate no longer fits is not started, and a step that
reaches its limit (or the end of the budget) is stopped; both are recorded as ``cut``. A
step that cannot run here (no CUDA, no DALI) is recorded as ``skipped`` with the reason;
a step that fails as ``failed`` with its log's last line. Nothing is left out of the table.

A stage writes three files into ``--out`` (``$OUT`` on the device; the device tool brings
back at most 8 files): ``results.json``, ``table.md`` and ``files.tar.gz`` (logs, profile
tables, benchmark JSON, the runs' summary.json / metrics.csv / config.json, never
checkpoints), rewritten after every step, so a stage stopped from outside still returns
what it did. Scratch (run folders, checkpoints, compile caches) goes to ``--work``, the
Pet-shaped set (train 3312 / valid 368 / test 1227 JPEGs of about 500x375) to ``--data``.

``--dry-run`` runs a stage (or ``--stage all``: stages 1-5, then the merge) at tiny sizes on
whatever device is here (the CPU in CI), so none of this rots while no GPU is at hand.
Where a step needs CUDA the dry run still runs its code as far as the CPU allows and
records the rest as skipped (fp16, CUDA graphs, the CUDA tier's tests); compile steps use
the ``aot_eager`` backend there (inductor's CPU code generation takes minutes on 2 cores).

Usage: python benchmarks/gpu_check.py [--stage 1|2|3|4|5|all] [--dry-run] [--out DIR]
       [--work DIR] [--data DIR] [--budget S]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import merge_gpu_results as report  # noqa: E402

MODELS = ("resnet34_unet", "unet")
STAGES = (1, 2, 3, 4, 5)
SCHEMA = report.SCHEMA

#: tests/cuda tests that need DALI (by keyword: names and the DALI module's file name).
CUDA_DALI_K = "dali or nvjpeg or masks_stay_valid or nccl_ddp or peak_gpu_memory"


@dataclass(frozen=True)
class Sizes:
    """The sizes of one kind of check (full on a GPU, tiny for ``--dry-run``).

    ``steps`` maps a step name to ``(estimate, limit)`` seconds; a name not listed uses
    ``default_step``. ``budget`` is each stage's default budget.
    """

    count: int  # images in the generated set (trainval 75%, of which valid 10%)
    image_size: int
    batch: int
    run_epochs: int
    model_steps: int
    model_rounds: int
    model_warmup: int
    profile_steps: int
    lab_train_batches: int | None  # None: lab_loop's default
    compile_backend: str
    budget: dict[int, float]
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)
    default_step: tuple[float, float] = (30.0, 60.0)


# Pet: trainval 3680 (train 3312, valid 368), test 3669. The generated set keeps the
# train/valid split exactly and a smaller test split (1227): 4907 images in all.
FULL = Sizes(
    count=4907,
    image_size=256,
    batch=32,
    run_epochs=10,
    model_steps=20,
    model_rounds=3,
    model_warmup=5,
    profile_steps=10,
    lab_train_batches=None,
    compile_backend="inductor",
    budget={1: 115.0, 2: 115.0, 3: 115.0, 4: 125.0, 5: 120.0},
    # Estimates from the H100 run of 2026-11-26 (process start and imports ~6 s each).
    steps={
        "profile-unet": (20, 40),
        "profile-resnet34_unet": (20, 40),
        "lab-resnet34_unet": (40, 60),
        "lab-unet": (45, 60),
        "model-variants": (38, 55),
        "compile-unet-default": (70, 90),
        "compile-resnet34_unet-default": (70, 90),
        "compile-resnet34_unet-max-autotune-no-cudagraphs": (110, 125),
        "cuda-tier-nodali": (35, 55),
        "cuda-tier-dali": (40, 55),
        "run-resnet34_unet": (60, 75),
        "run-unet": (66, 80),
        "run-profile-resnet34_unet": (35, 50),
        "bench-epoch-dali": (70, 95),
    },
)
DRY = Sizes(
    count=16,
    image_size=32,
    batch=4,
    run_epochs=2,
    model_steps=1,
    model_rounds=2,
    model_warmup=1,
    profile_steps=1,
    lab_train_batches=1,
    compile_backend="aot_eager",
    # A shared 2-core CPU is slow at everything: the dry run proves the code, not a speed.
    budget=dict.fromkeys(STAGES, 1500.0),
    default_step=(20.0, 900.0),
)

#: The step names of each stage, in order (stage 5: those not yet ok in an earlier stage).
PLAN: dict[int, tuple[str, ...]] = {
    1: ("env", "data", "profile-unet", "lab-resnet34_unet", "lab-unet"),
    # The compile first: it keeps its numbers only once they are measured, while the
    # variants are written one by one, so a stage that runs out keeps most of them.
    2: ("env", "compile-unet-default", "model-variants"),
    3: ("env", "cuda-tier-nodali", "compile-resnet34_unet-default"),
    4: ("env", "data", "run-resnet34_unet", "run-unet", "cuda-tier-dali"),
    5: (
        "env",
        "data",
        "run-unet",
        "cuda-tier-dali",
        "run-resnet34_unet",
        "run-profile-resnet34_unet",
        "compile-unet-default",
        "compile-resnet34_unet-default",
        "bench-epoch-dali",
        "profile-resnet34_unet",
        "compile-resnet34_unet-max-autotune-no-cudagraphs",
    ),
}
TITLES = {
    1: "no DALI: the lab's loop against segkit's epoch, UNet's profile",
    2: "compile UNet (and as a CUDA graph), model-only variants (precision, batch, CUDA graph)",
    3: "the CUDA tier without DALI, compile ResNet34-UNet",
    4: "DALI: two 10-epoch segkit runs (the second if it fits), the CUDA tier's DALI part",
    5: "what is left: the steps of the list not yet passed on this machine",
}


@dataclass
class Step:
    name: str
    status: str  # ok, failed, cut, skipped, pending
    seconds: float
    note: str = ""
    stage: int = 0


class Check:
    """One stage: its budget, its steps, and the files it writes after every step."""

    RESERVE = 4.0  # seconds kept for writing the results at the end

    def __init__(
        self,
        stage: int,
        out: Path,
        work: Path,
        data: Path,
        sizes: Sizes,
        budget: float,
        dry: bool,
    ) -> None:
        self.stage = stage
        self.out = out
        self.work = work
        self.data = data
        self.sizes = sizes
        self.budget = budget
        self.dry = dry
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.steps: list[Step] = []
        self.results: dict[str, Any] = {}
        self.env: dict[str, Any] = {}
        # Read before this stage writes anything (a rerun of a stage overwrites its copy).
        self.passed_before = passed_before(work.parent)
        self.no_cuda_before = skipped_without_cuda(work.parent)
        for d in (out, work / "logs", work / "parts"):
            d.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ time and records

    def say(self, text: str) -> None:
        print(f"[gpu-check {self.stage} {time.monotonic() - self.start:6.1f}s] {text}", flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic() - self.RESERVE

    def timing(self, name: str) -> tuple[float, float]:
        return self.sizes.steps.get(name, self.sizes.default_step)

    def record(self, name: str, status: str, seconds: float, note: str = "") -> Step:
        step = Step(name, status, round(seconds, 1), note, self.stage)
        self.steps.append(step)
        self.say(f"{name}: {status}{' (' + note + ')' if note else ''} in {seconds:.1f} s")
        self.write()
        return step

    def skip(self, name: str, reason: str) -> Step:
        return self.record(name, "skipped", 0.0, reason)

    # ------------------------------------------------------------------------- processes

    def run(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str] | None = None,
        ok: Callable[[int, str], tuple[str, str]] | None = None,
    ) -> Step:
        """Run ``cmd`` as its own process group, logging to logs/<name>.log. Not started
        (``cut``) when its estimate exceeds what is left of the budget; stopped (``cut``)
        at its limit or at the end of the budget. ``ok(rc, log)`` may turn an exit status
        and the log into a status and a note (the CUDA tier reads its counts)."""
        estimate, limit = self.timing(name)
        left = self.left()
        if estimate > left:
            return self.record(
                name,
                "cut",
                0.0,
                f"not started: needs about {estimate:.0f} s, {max(0, left):.0f} s left",
            )
        own = limit
        limit = min(limit, left)
        log = self.work / "logs" / f"{name}.log"
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
                env=self.environ(env),
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        seconds = time.monotonic() - t0
        text = log.read_text(errors="replace")
        if rc is None:
            why = f"its limit of {own:.0f} s" if limit >= own else "the end of the stage's budget"
            status, note = "cut", f"stopped at {seconds:.0f} s: {why}"
        elif ok is not None:
            status, note = ok(rc, text)
        elif rc == 0:
            status, note = "ok", ""
        else:
            status, note = "failed", f"rc {rc}: {last_line(text)}"
        return self.record(name, status, seconds, note)

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        # The repository's own code first, also where segkit is installed (--no-deps).
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), str(ROOT / "plugins"), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        return env | (extra or {})

    def task(self, name: str, task: str, *args: str, env: dict[str, str] | None = None) -> Any:
        """Run a benchmarks/gpu_tasks.py task as step ``name``; its JSON, or None."""
        part = self.work / "parts" / f"{name}.json"
        part.unlink(missing_ok=True)
        cmd = [sys.executable, str(HERE / "gpu_tasks.py"), task, "--json", str(part), *args]
        step = self.run(name, cmd, env)
        value = _load(part)
        if value is None and step.status == "ok":
            step.status, step.note = "failed", "the task wrote no result"
            self.write()
        return value

    # ----------------------------------------------------------------------------- files

    def write(self) -> None:
        """results.json, table.md and files.tar.gz in ``out``, as they stand now."""
        planned = [s for s in PLAN[self.stage] if s not in {x.name for x in self.steps}]
        results = {
            "schema": SCHEMA,
            "stage": self.stage,
            "title": TITLES[self.stage],
            "dry_run": self.dry,
            "budget_s": self.budget,
            "wall_s": round(time.monotonic() - self.start, 1),
            "env": self.env,
            "sizes": asdict(self.sizes),
            "steps": [asdict(s) for s in self.steps]
            + [asdict(Step(n, "pending", 0.0, "not reached yet", self.stage)) for n in planned],
            **self.results,
        }
        _write_json(self.out / "results.json", results)
        # A copy beside the scratch, where a later stage on this machine finds it (``out``
        # is emptied before each device call): stage 5 skips what passed.
        _write_json(self.work / "results.json", results)
        (self.out / "table.md").write_text(report.render(results))
        self.pack()

    def pack(self) -> None:
        """files.tar.gz: everything a reader needs, nothing large (no checkpoints, caches,
        images)."""
        tmp = self.out / "files.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(self.work.rglob("*")):
                rel = path.relative_to(self.work)
                if path.is_file() and report.wanted(rel):
                    tar.add(path, arcname=str(rel))
        os.replace(tmp, self.out / "files.tar.gz")


def last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ steps


def record_environment(check: Check) -> None:
    t0 = time.monotonic()
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "dry_run": check.dry,
    }
    for module in (
        "torch",
        "torchvision",
        "timm",
        "nvidia.dali",
        "albumentations",
        "numpy",
        "segkit",
    ):
        try:
            mod = __import__(module, fromlist=["__version__"])
            info[module] = getattr(mod, "__version__", "?")
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            info[module] = f"not importable: {type(e).__name__}: {e}"[:200]
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
    text = "no nvidia-smi on this machine\n"
    if smi:
        try:
            text = subprocess.run(
                [smi], capture_output=True, text=True, timeout=20, check=False
            ).stdout
        except subprocess.TimeoutExpired:
            text = "nvidia-smi timed out\n"
    (check.work / "nvidia-smi.txt").write_text(text)
    _write_json(check.work / "env.json", info)
    check.env = info
    check.record(
        "env",
        "ok",
        time.monotonic() - t0,
        f"{info.get('device_name', 'no GPU')}, torch {info['torch']}, DALI "
        f"{info['nvidia.dali'] if has_dali() else 'not importable'}",
    )


def has_dali() -> bool:
    return importlib.util.find_spec("nvidia") is not None and (
        importlib.util.find_spec("nvidia.dali") is not None
    )


def start_data(check: Check) -> subprocess.Popen | None:
    """Generate the Pet-shaped set in the background (at nice 19, so the steps timed
    meanwhile keep their cores); None if it is there."""
    from segkit_datasets.synthetic import is_complete

    if is_complete(check.data, check.sizes.count, 0):
        check.record(
            "data", "ok", 0.0, f"{check.data} complete ({check.sizes.count} images), reused"
        )
        return None
    workers = max(1, min(12, (os.cpu_count() or 1) - 4)) if not check.dry else 1
    code = (
        f"import os, sys; from pathlib import Path; os.nice({0 if check.dry else 19}); "
        "from segkit_datasets.synthetic import write_synthetic; "
        f"write_synthetic(Path(sys.argv[1]), count={check.sizes.count}, seed=0, "
        f"workers={workers})"
    )
    check.say(
        f"data: generating {check.sizes.count} images into {check.data} ({workers} processes)"
    )
    log = (check.work / "logs" / "data.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(check.data)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=check.environ(),
        start_new_session=True,
    )
    proc.t0 = time.monotonic()  # type: ignore[attr-defined]
    proc.note = f"{check.sizes.count} images, {workers} processes" + (  # type: ignore[attr-defined]
        "" if check.dry else " at nice 19"
    )
    return proc


def finish_data(check: Check, proc: subprocess.Popen | None) -> bool:
    """Wait for the set (within the budget); records the data step once."""
    if proc is None:
        return any(s.name == "data" and s.status == "ok" for s in check.steps)
    if getattr(proc, "done", None) is not None:
        return proc.done  # type: ignore[attr-defined]
    try:
        rc = proc.wait(timeout=max(1.0, check.left()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = None
    seconds = time.monotonic() - proc.t0  # type: ignore[attr-defined]
    note = proc.note  # type: ignore[attr-defined]
    if rc == 0:
        check.record("data", "ok", seconds, note)
    elif rc is None:
        check.record("data", "cut", seconds, "stopped: the stage's budget ran out")
    else:
        check.record(
            "data",
            "failed",
            seconds,
            f"rc {rc}: "
            + last_line((check.work / "logs" / "data.log").read_text(errors="replace")),
        )
    proc.done = rc == 0  # type: ignore[attr-defined]
    return rc == 0


def model_variants(check: Check) -> None:
    s = check.sizes
    # The CUDA graphs last: a capture that breaks the CUDA context cannot take the eager
    # rows with it.
    variants = [
        f"{m}:{p}:{b}:{mode}"
        for p, b, mode in (
            ("bf16", s.batch, "eager"),
            ("fp16", s.batch, "eager"),
            ("bf16", 2 * s.batch, "eager"),
            ("bf16", s.batch, "graph"),
            ("fp16", s.batch, "graph"),
        )
        for m in MODELS
    ]
    if check.dry:  # bf16 on the CPU is slow and proves nothing more than fp32
        variants = [v.replace(":bf16:", ":auto:") for v in variants]
    rows = check.task(
        "model-variants",
        "model",
        "--variants",
        ",".join(variants),
        "--size",
        str(s.image_size),
        "--steps",
        str(s.model_steps),
        "--rounds",
        str(s.model_rounds),
        "--warmup",
        str(s.model_warmup),
    )
    # A task stopped at its limit leaves the variants it finished (written after each).
    if rows is None:
        rows = _load(check.work / "parts" / "model-variants.json")
    check.results.setdefault("model_only", []).extend(rows or [])
    failed = [r["variant"] for r in rows or [] if r.get("status") == "failed"]
    step = check.steps[-1]
    if failed and step.name == "model-variants" and step.status == "ok":
        step.status, step.note = "failed", f"variant(s) failed: {', '.join(failed)}"
    check.write()


def compile_step(check: Check, model: str, mode: str) -> None:
    name = f"compile-{model}-{mode}"
    s = check.sizes
    cache = check.work / "cache" / name
    shutil.rmtree(cache, ignore_errors=True)  # cold: an empty inductor and Triton cache
    env = {
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
    }
    row = check.task(
        name,
        "compile",
        "--model",
        model,
        "--mode",
        mode,
        "--backend",
        s.compile_backend,
        "--size",
        str(s.image_size),
        "--batch",
        str(s.batch),
        "--steps",
        str(s.model_steps),
        "--rounds",
        str(s.model_rounds),
        "--warmup",
        str(s.model_warmup),
        env=env,
    )
    if row is not None:
        if check.dry:
            row["note"] = (
                "dry run: backend aot_eager (inductor's CPU code generation takes "
                "minutes on 2 cores); the GPU stage compiles with inductor"
            )
        check.results.setdefault("compile", []).append(row)
        check.write()


def profile_step(check: Check, model: str) -> None:
    s = check.sizes
    row = check.task(
        f"profile-{model}",
        "profile",
        "--model",
        model,
        "--size",
        str(s.image_size),
        "--batch",
        str(s.batch),
        "--steps",
        str(s.profile_steps),
        "--warmup",
        str(s.model_warmup),
        "--work",
        str(check.work),
    )
    if row is not None:
        check.results.setdefault("profiles", []).append(row)
        check.write()


def lab_step(check: Check, model: str) -> None:
    s = check.sizes
    args = [
        "--model",
        model,
        "--data",
        str(check.data),
        "--work",
        str(check.work / "lab"),
        "--size",
        str(s.image_size),
        "--batch",
        str(s.batch),
    ]
    if s.lab_train_batches is not None:
        args += ["--train-batches", str(s.lab_train_batches)]
    if check.dry:
        args.append("--tiny")
    result = check.task(f"lab-{model}", "lab", *args)
    if result is not None:
        check.results.setdefault("lab", []).append(result)
        check.write()


def cuda_tier(check: Check, name: str, dali: bool) -> None:
    """tests/cuda: its DALI part (``dali``) or the rest, counted from its JUnit XML."""
    if dali and not has_dali():
        check.skip(name, "DALI is not importable here (install-parts.sh dali did not run)")
        return
    xml = check.work / f"{name}.xml"
    xml.unlink(missing_ok=True)
    expr = CUDA_DALI_K if dali else f"not ({CUDA_DALI_K})"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/cuda",
        "-q",
        "-rA",
        "-p",
        "no:cacheprovider",
        "-k",
        expr,
        f"--junitxml={xml}",
    ]
    if importlib.util.find_spec("xdist") is not None and check.env.get("cuda_available"):
        # Four processes share the GPU: the tests are small, and one's cold torch.compile
        # overlaps the others (on the H100: 150 s in one process, cold). Without CUDA
        # every test skips: one process collects them (four took 60 s of CI's 2 cores).
        cmd += ["-n", "4"]

    def ok(rc: int, log: str) -> tuple[str, str]:
        counts = junit_counts(xml)
        check.results.setdefault("cuda_tier", {})[name] = counts
        text = ", ".join(f"{v} {k}" for k, v in counts.items() if k != "tests" and v)
        if rc not in (0, 5) or counts.get("failed") or counts.get("errors"):
            return "failed", f"rc {rc}: {text or last_line(log)}"
        if counts.get("passed", 0) == 0:
            return "skipped", f"{text or 'no tests ran'}: {skip_reason(log)}"
        return "ok", text

    check.run(name, cmd, ok=ok)


def junit_counts(xml: Path) -> dict[str, int]:
    """tests, passed, failed, errors, skipped of a pytest JUnit XML file ({} if absent)."""
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    return {
        "tests": total["tests"],
        "passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
        "failed": total["failures"],
        "errors": total["errors"],
        "skipped": total["skipped"],
    }


def skip_reason(log: str) -> str:
    for line in log.splitlines():
        if line.startswith("SKIPPED"):
            return line.split(":", 2)[-1].strip()[:160]
    return "see the log"


def run_step(check: Check, model: str, *, profile: bool = False) -> None:
    """A ``segkit run --loader dali`` of ``model``: ``run_epochs`` epochs, as a user would
    see them; with ``profile``, one epoch with ``--profile`` (``profile_steps`` steps of
    the whole loop, DALI's feeding included: how busy the GPU is end to end), kept apart
    from the timed runs because the profiler slows the steps it records."""
    name = f"run-profile-{model}" if profile else f"run-{model}"
    if not has_dali():
        check.skip(name, "DALI is not importable here (install-parts.sh dali did not run)")
        return
    s = check.sizes
    runs = check.work / "runs"
    shutil.rmtree(runs / name, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "segkit",
        "run",
        "--model",
        model,
        "--loader",
        "dali",
        "--recipe",
        "type3",
        "--dataset",
        "oxford_pet",
        "--data",
        str(check.data),
        "--image-size",
        str(s.image_size),
        "--batch-size",
        str(s.batch),
        "--epochs",
        str(1 if profile else s.run_epochs),
        "--out",
        str(runs),
        "--name",
        name,
        *(("--profile", str(s.profile_steps)) if profile else ()),
    ]
    step = check.run(name, cmd)
    found = report.read_run(runs / name)
    if found is not None:
        found["process_wall_s"] = step.seconds
        check.results.setdefault("runs", {})[name] = found
        check.write()


def bench_epoch(check: Check, loader: str) -> None:
    name = f"bench-epoch-{loader}"
    if loader == "dali" and not has_dali():
        check.skip(name, "DALI is not importable here (install-parts.sh dali did not run)")
        return
    s = check.sizes
    out = check.work / f"{name}.json"
    out.unlink(missing_ok=True)
    env = {
        "SEGKIT_BENCH_FULL": "1",
        "SEGKIT_BENCH_DATA": str(check.data),
        "SEGKIT_BENCH_SIZE": str(s.image_size),
        "SEGKIT_BENCH_BATCH": str(s.batch),
        "SEGKIT_BENCH_MODELS": ",".join(MODELS),
        "SEGKIT_BENCH_LOADER_IMAGES": str(max(2 * s.batch, min(3312, s.count // 2))),
        "SEGKIT_BENCH_LOADER_SIZE": str(s.image_size),
        "SEGKIT_BENCH_LOADER_BATCH": str(s.batch),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        "benchmarks/test_epoch.py::test_epoch",
        "-k",
        loader,
        f"--benchmark-json={out}",
    ]
    check.run(name, cmd, env)
    rows = report.read_benchmarks(out, name)
    if rows:
        check.results.setdefault("bench", []).extend(rows)
        check.write()


# ------------------------------------------------------------------------------ stages


def passed_before(root: Path) -> set[str]:
    """Steps that passed in the stages whose results are under ``root`` (each stage keeps
    a copy in ``root/stage-N/results.json``): stage 5 skips them."""
    done = set()
    for path in root.glob("stage-*/results.json"):
        for s in (_load(path) or {}).get("steps", []):
            if s.get("status") == "ok":
                done.add(s.get("name"))
    return done


#: How tests/conftest.py skips the CUDA tier without a device.
NO_CUDA = "no CUDA device here"


def skipped_without_cuda(root: Path) -> set[str]:
    """Steps that an earlier stage under ``root`` skipped for want of a CUDA device (the
    CUDA tier in a dry run): stage 5 does not run them again, on the same machine."""
    return {
        s.get("name")
        for path in root.glob("stage-*/results.json")
        for s in (_load(path) or {}).get("steps", [])
        if s.get("status") == "skipped" and NO_CUDA in s.get("note", "")
    }


def run_stage(check: Check) -> None:
    record_environment(check)
    names = PLAN[check.stage]
    # The set is checked (and reused) by every stage that reads it: never skipped as done.
    skip_done = check.passed_before - {"env", "data"} if check.stage == 5 else set()
    no_cuda = check.no_cuda_before - skip_done if check.stage == 5 else set()
    data_proc = None
    needs_data = {
        "lab-resnet34_unet",
        "lab-unet",
        "run-resnet34_unet",
        "run-unet",
        "run-profile-resnet34_unet",
        "bench-epoch-dali",
    }
    pending_data = [n for n in names if n in needs_data and n not in skip_done]
    for name in names:
        if name == "env":
            continue
        if name in skip_done:
            check.skip(name, "passed in an earlier stage on this machine")
            continue
        if name in no_cuda:
            check.skip(name, f"skipped in an earlier stage on this machine: {NO_CUDA}")
            continue
        if name == "data":
            if pending_data:
                data_proc = start_data(check)
            else:
                check.skip("data", "no step of this stage reads it")
            continue
        if name in needs_data and not finish_data(check, data_proc):
            check.skip(name, "the Pet-shaped set is not there (see the data step)")
            continue
        if name.startswith("profile-"):
            profile_step(check, name.removeprefix("profile-"))
        elif name.startswith("lab-"):
            lab_step(check, name.removeprefix("lab-"))
        elif name == "model-variants":
            model_variants(check)
        elif name.startswith("compile-"):
            model, mode = _compile_name(name)
            compile_step(check, model, mode)
        elif name.startswith("cuda-tier-"):
            cuda_tier(check, name, dali=name == "cuda-tier-dali")
        elif name.startswith("run-profile-"):
            run_step(check, name.removeprefix("run-profile-"), profile=True)
        elif name.startswith("run-"):
            run_step(check, name.removeprefix("run-"))
        elif name.startswith("bench-epoch-"):
            bench_epoch(check, name.removeprefix("bench-epoch-"))
        else:  # a PLAN entry without code: a bug in this file
            raise AssertionError(f"stage {check.stage}: no code for step {name!r}")
    if data_proc is not None and getattr(data_proc, "done", None) is None:
        finish_data(check, data_proc)


def _compile_name(name: str) -> tuple[str, str]:
    rest = name.removeprefix("compile-")
    for model in MODELS:
        if rest.startswith(model + "-"):
            return model, rest.removeprefix(model + "-")
    raise ValueError(f"compile step {name!r}: expected compile-<model>-<mode>")


# ------------------------------------------------------------------------------ plan

PLAN_FILE = HERE / "GPU_PLAN.md"
#: The device tool's limits (/work/.library/device/README.md): what one call may carry.
CALL_BYTES = 64 * 2**20
CALL_COMMAND_CHARS = 2000
CALL_CARRY_PATHS = 8
CALL_TIMEOUT_S = 600


def plan_calls(text: str) -> list[dict[str, Any]]:
    """The ``run`` calls of GPU_PLAN.md: its fenced json blocks, in order.

    Raises:
        ValueError: a block is not valid JSON, naming the block.
    """
    calls = []
    for i, block in enumerate(text.split("```json")[1:], 1):
        body = block.split("```", 1)[0]
        try:
            calls.append(json.loads(body))
        except ValueError as e:
            raise ValueError(f"{PLAN_FILE.name}: json block {i} is not valid JSON: {e}") from None
    return calls


def check_calls(
    calls: list[dict[str, Any]], tree_bytes: int, size_of: Callable[[str], int | None]
) -> list[str]:
    """Problems of the plan's calls against the device tool's limits: the arguments, the
    stage each call runs, and the bytes it carries (``size_of(path)``: None if missing)."""
    problems = []
    for n, call in enumerate(calls, 1):
        where = f"call {n}"
        unknown = set(call) - {"command", "carry", "timeout_s", "kind"}
        if unknown:
            problems.append(f"{where}: unknown arguments {sorted(unknown)}")
        command = call.get("command", "")
        if not command or len(command) > CALL_COMMAND_CHARS:
            problems.append(
                f"{where}: command of {len(command)} characters (1..{CALL_COMMAND_CHARS})"
            )
        if f"--stage {n}" not in command:
            problems.append(f"{where}: does not run --stage {n}")
        carry = call.get("carry", [])
        if len(carry) > CALL_CARRY_PATHS:
            problems.append(f"{where}: carries {len(carry)} paths, at most {CALL_CARRY_PATHS}")
        if not 1 <= call.get("timeout_s", 0) <= CALL_TIMEOUT_S:
            problems.append(
                f"{where}: timeout_s {call.get('timeout_s')} not in 1..{CALL_TIMEOUT_S}"
            )
        total = tree_bytes
        for path in carry:
            size = size_of(path)
            if size is None:
                problems.append(f"{where}: carries {path}, which is not here (prepare-parts.sh)")
            else:
                total += size
        if total > CALL_BYTES:
            problems.append(
                f"{where}: {total / 2**20:.1f} MiB travel, at most {CALL_BYTES // 2**20}"
            )
        call["_mib"] = round(total / 2**20, 1)
    return problems


def tree_bytes() -> int:
    """Bytes of the working tree the device tool sends: tracked files and untracked ones
    that git does not ignore."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum(
        (ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file()
    )


def plan_check() -> int:
    """``--plan-check``: the plan's calls against the limits, with this checkout's sizes."""

    def size_of(path: str) -> int | None:
        p = ROOT / path
        return p.stat().st_size if p.is_file() else None

    calls = plan_calls(PLAN_FILE.read_text())
    problems = check_calls(calls, tree_bytes(), size_of)
    for n, call in enumerate(calls, 1):
        print(
            f"call {n}: {call['_mib']} MiB (tree + {len(call.get('carry', []))} carried), "
            f"timeout {call.get('timeout_s')} s"
        )
    for p in problems:
        print(f"plan-check: {p}", file=sys.stderr)
    print("plan-check: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", default="all", help="1, 2, 3, 4, 5 or all (default: all)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, any device (CI)")
    p.add_argument("--out", default="gpu-check", help="results folder (default: gpu-check)")
    p.add_argument("--work", help="scratch: runs, checkpoints, caches (default: OUT-work)")
    p.add_argument("--data", help="the Pet-shaped set (default: OUT-data)")
    p.add_argument("--budget", type=float, help="seconds per stage (default: the stage's own)")
    p.add_argument(
        "--plan-check",
        action="store_true",
        help="check GPU_PLAN.md's calls against the device tool's limits here, then exit",
    )
    args = p.parse_args(argv)
    if args.plan_check:
        return plan_check()
    if args.stage != "all" and (not args.stage.isdigit() or int(args.stage) not in STAGES):
        p.error(f"--stage {args.stage}: expected one of {', '.join(map(str, STAGES))} or all")
    stages = list(STAGES) if args.stage == "all" else [int(args.stage)]
    sizes = DRY if args.dry_run else FULL
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else out.parent / f"{out.name}-work"
    data = Path(args.data).resolve() if args.data else out.parent / f"{out.name}-data"

    import torch

    if not torch.cuda.is_available() and not args.dry_run:
        print(
            "gpu-check: no CUDA device here; use --dry-run to exercise the script on the CPU",
            file=sys.stderr,
        )
        return 2
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    bad = 0
    folders = []
    for stage in stages:
        stage_out = out / f"stage-{stage}" if len(stages) > 1 else out
        budget = args.budget if args.budget is not None else sizes.budget[stage]
        check = Check(stage, stage_out, work / f"stage-{stage}", data, sizes, budget, args.dry_run)
        check.say(f"stage {stage}: {TITLES[stage]} (budget {budget:.0f} s) -> {stage_out}")
        run_stage(check)
        check.write()
        counts = {
            st: sum(s.status == st for s in check.steps)
            for st in ("ok", "skipped", "cut", "failed")
        }
        check.say(
            f"stage {stage} done in {time.monotonic() - check.start:.0f} s: "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
        )
        bad += counts["failed"] + counts["cut"]
        folders.append(stage_out)
    if len(stages) > 1:
        report.merge(folders, out)
    print((out / "table.md").read_text())
    print(f"gpu-check: results in {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
