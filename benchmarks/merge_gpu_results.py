"""Merge the GPU check's stages into one results folder, and render its table.

Each stage of benchmarks/gpu_check.py comes back from the device as a folder holding
``results.json``, ``table.md`` and ``files.tar.gz`` (and whatever else the call wrote
there, e.g. ``install.log``). This script makes one results folder of them::

    python benchmarks/merge_gpu_results.py --out benchmarks/results/2026-12-01-h100 \\
        /path/to/stage1 /path/to/stage2 /path/to/stage3 /path/to/stage4

- ``results.json``: valid JSON: every stage's environment, budget and wall time; every
  step of every stage with its stage, status and note; the measurements of all stages.
- ``table.md``: a row for every step (failed, cut and skipped ones too, saying so; a step a
  stage never reached says that), then the measurements and the targets.
- ``logs/stage-N/``: each stage's logs (and the call's own ``*.log`` files), env.json,
  nvidia-smi.txt and the CUDA tier's JUnit XML; ``parts/stage-N/``: its task results;
  ``runs/<name>/``: each run's ``summary.json``, ``metrics.csv`` and ``config.json``
  (never checkpoints); ``profile-*.txt``, ``bench-*.json``; ``stage-N/`` keeps each
  stage's own results.json and table.md as they came back.

A stage folder without results.json (its call was stopped before it wrote one, or its
files did not come back) is recorded as such, not skipped silently.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

SCHEMA = "segkit-gpu-check/2"

MODELS = ("resnet34_unet", "unet")

#: Issue 26's targets (H100, bf16, type3, 256 px, batch 32, 3312 images, the DALI loader).
TARGET_EPOCH_S = {"resnet34_unet": 1.0, "unet": 2.5}
#: The first milestone (issue 10's targets).
MILESTONE_EPOCH_S = {"resnet34_unet": 2.0, "unet": 3.0}
TARGET_LAB_RATIO = 10.0
TARGET_WALL_OVER_TRAIN = 1.3

#: What the lab reported for its own loop, on another machine (footnote only).
LAB_REPORTED_S = {"resnet34_unet": 80.0, "unet": 133.0}

#: Run files worth keeping: small, and what a reader of the results needs.
RUN_FILES = ("summary.json", "metrics.csv", "config.json", "summary.txt", "profile.txt")


# ------------------------------------------------------------------------- reading


def wanted(rel: Path | PurePosixPath) -> bool:
    """Whether a file of a stage's work folder (path relative to it) goes into its
    files.tar.gz: logs, task results, profiles, benchmark JSON, the environment, the CUDA
    tier's JUnit XML, and each run's small files. Never checkpoints, caches or images."""
    parts = PurePosixPath(rel).parts
    name = parts[-1]
    if name.endswith((".pt", ".pth", ".png", ".tmp")) or parts[0] in ("cache", "lab"):
        return False
    if parts[0] == "runs":
        return len(parts) == 3 and name in RUN_FILES
    if len(parts) == 2 and parts[0] in ("logs", "parts"):
        return name.endswith((".log", ".json"))
    return len(parts) == 1 and (
        name.startswith(("profile-", "bench-"))
        or name in ("env.json", "nvidia-smi.txt")
        or name.endswith(".xml")
    )


def _number(text: str) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def read_metrics(text: str) -> list[dict[str, Any]]:
    return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def run_figures(summary: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole-run wall against the sum of the training epochs, and the epochs' times."""
    train = [r["epoch_seconds"] for r in metrics if isinstance(r.get("epoch_seconds"), float)]
    valid = [r["valid_s"] for r in metrics if isinstance(r.get("valid_s"), float)]
    steady = train[1:] or train
    wall = summary.get("wall_s")
    total = sum(train)
    return {
        "epochs": len(metrics),
        "first_train_s": round(train[0], 3) if train else None,
        "steady_train_s": round(sum(steady) / len(steady), 3) if steady else None,
        "steady_valid_s": round(sum(valid[1:] or valid) / len(valid[1:] or valid), 3)
        if valid
        else None,
        "sum_train_s": round(total, 3),
        "wall_s": wall,
        "wall_over_train": round(wall / total, 3) if isinstance(wall, float) and total else None,
    }


def read_run(folder: Path) -> dict[str, Any] | None:
    """A run folder's summary, metrics and figures; None without a summary.json."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        metrics = read_metrics((folder / "metrics.csv").read_text())
    except OSError:
        metrics = []
    return {"summary": summary, "metrics": metrics} | run_figures(summary, metrics)


def read_benchmarks(path: Path, suite: str) -> list[dict[str, Any]]:
    """pytest-benchmark JSON as rows: the suite, the test's name, its extra_info, the mean."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [
        {"suite": suite, "name": b["name"], **b.get("extra_info", {}), "mean_s": b["stats"]["mean"]}
        for b in data.get("benchmarks", [])
    ]


# ------------------------------------------------------------------------- rendering


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x).replace("|", "/").replace("\n", " ")


def _rate(x: Any) -> str:
    """Images/s: whole numbers, but a tiny CPU rate keeps a decimal (never "0")."""
    if isinstance(x, float | int) and not isinstance(x, bool) and abs(x) < 10:
        return f"{x:.2f}"
    return _fmt(x, 0)


def _device_line(env: dict[str, Any]) -> str:
    device = env.get("device_name") or f"CPU ({env.get('cpu_count')} cores)"
    return (
        f"{device}; torch {env.get('torch')}, CUDA {env.get('cuda', '-')}, cudnn "
        f"{env.get('cudnn', '-')}, DALI {_short(env.get('nvidia.dali'))}, albumentations "
        f"{_short(env.get('albumentations'))}, Python {env.get('python')}, "
        f"{env.get('cpu_count')} CPU cores"
    )


def _short(value: Any) -> str:
    text = str(value)
    return "not installed" if text.startswith("not importable") else text


def _status(step: dict[str, Any]) -> str:
    if step["status"] == "pending":
        return "not run"
    return step["status"]


def render(results: dict[str, Any]) -> str:
    """The table of one stage's results or of merged results (``stages`` present)."""
    stages = results.get("stages")
    dry = results.get("dry_run")
    env = results.get("env") or {}
    lines = []
    if stages is None:
        lines += [
            f"# gpu-check stage {results.get('stage')}: {results.get('title')}"
            + (" (dry run, tiny sizes)" if dry else ""),
            "",
            f"{env.get('date', '-')}; {_device_line(env)}. Budget {results.get('budget_s')} s, "
            f"wall {results.get('wall_s')} s.",
        ]
    else:
        lines += [
            f"# gpu-check: {env.get('device_name') or 'CPU'}, stages "
            f"{', '.join(str(s['stage']) for s in stages)}"
            + (" (dry run, tiny sizes)" if dry else ""),
            "",
            _device_line(env) + ".",
            "",
            "| stage | what | date | budget s | wall s | results |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['stage']} | {_fmt(s.get('title'))} | {_fmt(s.get('date'))} | "
            f"{_fmt(s.get('budget_s'), 0)} | {_fmt(s.get('wall_s'), 1)} | {_fmt(s.get('found'))} |"
            for s in stages
        ]
    lines += [
        "",
        "## Steps",
        "",
        "| stage | step | status | seconds | note |",
        "|---|---|---|---|---|",
    ]
    for s in results.get("steps", []):
        note = s.get("note", "")
        if s["status"] == "pending" and stages is not None:
            note = "the stage stopped before this step (see its logs)"
        lines.append(
            f"| {s.get('stage', '-')} | {s['name']} | {_status(s)} | {_fmt(s.get('seconds'), 1)} "
            f"| {_fmt(note)} |"
        )
    lines += _lab_section(results)
    lines += _model_section(results)
    lines += _compile_section(results)
    lines += _profile_section(results)
    lines += _runs_section(results)
    lines += _bench_section(results)
    lines += _cuda_tier_section(results)
    if not dry:
        lines += _targets_section(results)
    lines += [
        "",
        f"Footnote: the lab reported {LAB_REPORTED_S['resnet34_unet']:.0f} s (ResNet34-UNet) and "
        f"{LAB_REPORTED_S['unet']:.0f} s (UNet) per epoch for its own loop on a cloud GPU whose "
        "model it did not record, with the data on a network drive. "
        "Nothing here is compared with those figures: the lab's loop is timed on the measuring "
        "machine itself, in the same process as segkit's epochs (stage 1).",
    ]
    return "\n".join(lines) + "\n"


def _lab_section(results: dict[str, Any]) -> list[str]:
    labs = results.get("lab") or []
    if not labs:
        return []
    lines = [
        "",
        "## The lab's loop against segkit's epoch (same device, same process, same data)",
        "",
        "| model | lab's loop | lab train s/epoch | lab epoch s | segkit | segkit train s/epoch "
        "| segkit epoch s | lab / segkit (epoch) | lab / segkit (train) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in labs:
        seg = {s["loader"]: s for s in res.get("segkit", [])}
        lab = {r["row"]: r for r in res.get("lab", [])}
        for ratio in res.get("ratios", []):
            r, s = lab[ratio["lab_row"]], seg[ratio["segkit_loader"]]
            est = " (est.)" if r.get("extrapolated") else ""
            lines.append(
                f"| {res['model']} | {r['row']} | {_fmt(r['train_s_per_epoch'])}{est} | "
                f"{_fmt(r['epoch_s'])}{est} | {s['loader']}, {s['runtime']['precision']} | "
                f"{_fmt(s['train_s_per_epoch'])} | {_fmt(s['epoch_s'])} | "
                f"{_fmt(ratio['epoch'], 1)}x | {_fmt(ratio['train'], 1)}x |"
            )
    first = labs[0]["lab"][0] if labs[0].get("lab") else {}
    lines += [
        "",
        "Lab rows: fp32, NCHW, num_workers=0, cuDNN autotuner off, Adam, BCELoss + soft Dice, "
        "`.item()` twice a step, tqdm, a validation pass and `torch.save` of the best weights "
        f"(lab_loop.py). (est.): {first.get('timed_train_batches', '?')} training batch(es) "
        "timed after the warm-up, per image times the split's images; segkit: whole epochs "
        "after a warm-up epoch; epoch = training + validation (+ the lab's checkpoint write).",
    ]
    return lines


def _model_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("model_only") or []
    if not rows:
        return []
    lines = [
        "",
        "## Model only (training steps on tensors already on the device)",
        "",
        "| model | precision | batch | mode | images/s | step ms | rounds spread | peak MB | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r.get('precision_resolved', r['precision'])} | {r['batch']} | "
            f"{r['mode']} | {_rate(r.get('images_per_s'))} | {_fmt(r.get('step_ms'))} | "
            f"{_pct(r.get('spread'))} | {_fmt(r.get('peak_memory_mb'), 0)} | "
            f"{_fmt(r.get('note') or ('' if r.get('status') == 'ok' else r.get('status')))} |"
        )
    return lines


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, float) else "-"


def _compile_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("compile") or []
    if not rows:
        return []
    lines = [
        "",
        "## torch.compile (model only, cold caches)",
        "",
        "| model | mode | backend | first step s (compiles) | second step s | images/s | "
        "eager images/s | speed-up | + CUDA graph images/s | speed-up | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        graph = _rate(r.get("graph_images_per_s"))
        if r.get("graph_status") not in (None, "ok"):
            graph = f"{r['graph_status']}: {_fmt(r.get('graph_note'))}"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['backend']} | {_fmt(r.get('cold_first_step_s'), 1)} "
            f"| {_fmt(r.get('second_step_s'))} | {_rate(r.get('images_per_s'))} | "
            f"{_rate(r.get('eager_images_per_s'))} | {_fmt(r.get('speedup'))} | {graph} | "
            f"{_fmt(r.get('graph_speedup'))} | {_fmt(r.get('note'))} |"
        )
    lines += [
        "",
        "+ CUDA graph: the compiled model's whole step captured by segkit's GraphStep "
        "(`--compile --cuda-graphs on`), speed-up over the eager step.",
    ]
    return lines


def _profile_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("profiles") or []
    lines: list[str] = []
    for r in rows:
        lines += [
            "",
            f"## Profile: {r['model']} ({r['steps']} model-only steps, batch {r['batch']}, "
            f"{r['precision']}, {r['device']})",
            "",
            f"{r['kind'].capitalize()} time {_fmt(r.get('busy_s'), 3)} s of {_fmt(r.get('wall_s'), 3)} s "
            f"wall ({_pct(r.get('busy_share'))}). Top {r['kind']}s (the whole table: "
            f"{r.get('file')}):",
            "",
            f"| {r['kind']} | calls | total ms | share | avg us |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {_fmt(t['name'][:90])} | {t['calls']} | {_fmt(t['total_ms'], 2)} | "
            f"{_pct(t['share'])} | {_fmt(t['avg_us'], 1)} |"
            for t in r.get("top", [])[:8]
        ]
    return lines


def _runs_section(results: dict[str, Any]) -> list[str]:
    runs = results.get("runs") or {}
    if not runs:
        return []
    lines = [
        "",
        "## segkit run --loader dali",
        "",
        "| run | epochs | first epoch train s | steady train s/epoch | valid s/epoch | sum of train s "
        "| run wall s | wall / sum of train | process wall s | test Dice | peak GPU MB "
        "| CUDA graph |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        s = r.get("summary", {})
        lines.append(
            f"| {name} | {r.get('epochs')} | {_fmt(r.get('first_train_s'))} | "
            f"{_fmt(r.get('steady_train_s'))} | {_fmt(r.get('steady_valid_s'))} | "
            f"{_fmt(r.get('sum_train_s'), 1)} | {_fmt(r.get('wall_s'), 1)} | "
            f"{_fmt(r.get('wall_over_train'))} | {_fmt(r.get('process_wall_s'), 1)} | "
            f"{_fmt(s.get('test_dice'), 4)} | {_fmt(s.get('peak_gpu_memory_mb'), 0)} | "
            f"{_graph_cell(s.get('cuda_graphs'))} |"
        )
    lines += [
        "",
        "Steady: the mean of epochs 2 onwards (epoch 1 pays cuDNN autotuning, the "
        "DALI pipeline build and the first file reads).",
    ]
    return lines + _wall_parts(runs)


#: summary.json's "time" parts (segkit.training.run_folder.RunClock), in the table's order.
WALL_PARTS = (
    "setup_s",
    "train_s",
    "valid_s",
    "checkpoint_s",
    "between_epochs_s",
    "test_s",
    "reports_s",
)


def _wall_parts(runs: dict[str, Any]) -> list[str]:
    """Where each run's wall time went (summary.json's ``time``; runs of a segkit older
    than it have none), and what the process spent outside the run (imports, exit)."""
    timed = {name: r for name, r in runs.items() if r.get("summary", {}).get("time")}
    if not timed:
        return []
    lines = [
        "",
        "Where the wall time went (seconds; summary.json's `time`; outside: the process's "
        "wall less the run's, Python's start, imports and exit):",
        "",
        "| run | wall | set-up | training | validation | checkpoints | between epochs | test "
        "| reports | outside |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in timed.items():
        t = r["summary"]["time"]
        wall, process = t.get("wall_s"), r.get("process_wall_s")
        outside = process - wall if isinstance(process, float) and isinstance(wall, float) else None
        cells = " | ".join(_fmt(t.get(k), 1) for k in WALL_PARTS)
        lines.append(f"| {name} | {_fmt(wall, 1)} | {cells} | {_fmt(outside, 1)} |")
    return lines


def _graph_cell(record: dict[str, Any] | None) -> str:
    """A run's ``cuda_graphs`` record (summary.json) in a few words: kept or not, and the
    trial's median milliseconds (replay against eager)."""
    if not record:
        return "-"
    times = ""
    if record.get("replay_ms") is not None and record.get("eager_ms") is not None:
        times = f" ({record['replay_ms']:.1f} vs {record['eager_ms']:.1f} ms)"
    if record.get("kept"):
        return f"kept{times}"
    return f"off: {_fmt(record.get('why_not'))}{times}"


def _bench_section(results: dict[str, Any]) -> list[str]:
    rows = [b for b in results.get("bench") or [] if "epoch_seconds" in b]
    if not rows:
        return []
    lines = [
        "",
        "## Epoch benchmark (benchmarks/test_epoch.py)",
        "",
        "| model | loader | s/epoch | images/s | model-only images/s | loader-only images/s "
        "| efficiency | bottleneck |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in rows:
        lines.append(
            f"| {b.get('model')} | {b.get('loader')} | {_fmt(b.get('epoch_seconds'))} | "
            f"{_rate(b.get('images_per_s'))} | {_rate(b.get('model_only_images_per_s'))} | "
            f"{_rate(b.get('loader_only_images_per_s'))} | {_fmt(b.get('efficiency'))} | "
            f"{b.get('bottleneck')} |"
        )
    return lines


def _cuda_tier_section(results: dict[str, Any]) -> list[str]:
    tiers = results.get("cuda_tier") or {}
    if not tiers:
        return []
    lines = [
        "",
        "## CUDA tier (tests/cuda)",
        "",
        "| part | tests | passed | failed | errors | skipped |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in tiers.items():
        lines.append(
            f"| {name} | {c.get('tests', '-')} | {c.get('passed', '-')} | {c.get('failed', '-')} | "
            f"{c.get('errors', '-')} | {c.get('skipped', '-')} |"
        )
    return lines


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 26 with what was measured against it (None: not measured)."""
    out = []
    runs = results.get("runs") or {}
    bench = {b.get("model"): b for b in results.get("bench") or [] if b.get("loader") == "dali"}
    for model in MODELS:
        run = runs.get(f"run-{model}") or {}
        value = run.get("steady_train_s")
        source = f"run-{model}, steady epochs"
        if value is None and model in bench:
            value, source = bench[model].get("epoch_seconds"), "bench-epoch-dali"
        out.append(
            {
                "target": f"{model} training epoch (DALI) <= {TARGET_EPOCH_S[model]} s "
                f"(first milestone {MILESTONE_EPOCH_S[model]} s)",
                "value": value,
                "unit": "s",
                "source": source,
                "met": None if value is None else value <= TARGET_EPOCH_S[model],
            }
        )
    for res in results.get("lab") or []:
        for ratio in res.get("ratios", []):
            if ratio["lab_row"].startswith("as written"):
                out.append(
                    {
                        "target": f"{res['model']}: at least {TARGET_LAB_RATIO:.0f}x the lab's "
                        f"loop as written, per epoch ({ratio['segkit_loader']})",
                        "value": ratio["epoch"],
                        "unit": "x",
                        "source": f"lab-{res['model']}",
                        "met": ratio["epoch"] >= TARGET_LAB_RATIO,
                    }
                )
    for model in MODELS:
        run = runs.get(f"run-{model}") or {}
        value = run.get("wall_over_train")
        out.append(
            {
                "target": f"{model}: {run.get('epochs') or 10}-epoch run wall <= "
                f"{TARGET_WALL_OVER_TRAIN}x the sum of its training epochs",
                "value": value,
                "unit": "x",
                "source": f"run-{model}",
                "met": None if value is None else value <= TARGET_WALL_OVER_TRAIN,
            }
        )
    return out


def _targets_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Targets (issue 26)",
        "",
        "| target | measured | from | verdict |",
        "|---|---|---|---|",
    ]
    for t in targets(results):
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        value = "-" if t["value"] is None else f"{t['value']:.2f} {t['unit']}"
        lines.append(f"| {t['target']} | {value} | {t['source']} | {verdict} |")
    return lines


# --------------------------------------------------------------------------- merging


def merge(folders: list[Path], out: Path) -> dict[str, Any]:
    """Merge stage folders into ``out`` (see the module docstring); returns the results.

    Raises:
        FileNotFoundError: a folder given does not exist.
    """
    out.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {"schema": SCHEMA, "stages": [], "steps": [], "env": {}}
    lists = ("model_only", "compile", "profiles", "lab", "bench")
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such stage folder (the files_at of a run call)")
        res = _read_json(folder / "results.json")
        if res is None:
            merged["stages"].append(
                {
                    "stage": "?",
                    "title": folder.name,
                    "found": "no results.json: the call stopped before writing one, or its "
                    "files did not come back",
                }
            )
            continue
        n = res.get("stage")
        env = res.get("env") or {}
        merged["stages"].append(
            {
                "stage": n,
                "title": res.get("title"),
                "date": env.get("date"),
                "budget_s": res.get("budget_s"),
                "wall_s": res.get("wall_s"),
                "dry_run": res.get("dry_run"),
                "env": env,
                "found": _found(folder),
            }
        )
        if env.get("device_name") or not merged["env"]:
            merged["env"] = merged["env"] or env
        merged["dry_run"] = bool(merged.get("dry_run")) or bool(res.get("dry_run"))
        merged["steps"] += [s | {"stage": n} for s in res.get("steps", [])]
        for key in lists:
            merged.setdefault(key, []).extend(res.get(key) or [])
        for key in ("runs", "cuda_tier"):
            merged.setdefault(key, {}).update(res.get(key) or {})
        _copy_files(folder, out, n)
    stage_dirs = {s["stage"] for s in merged["stages"]}
    if "?" in stage_dirs:
        merged["steps"].append(
            {
                "stage": "?",
                "name": "stage",
                "status": "failed",
                "seconds": 0.0,
                "note": "a stage folder held no results.json",
            }
        )
    merged["targets"] = targets(merged)
    (out / "results.json").write_text(json.dumps(merged, indent=2, default=str) + "\n")
    (out / "table.md").write_text(render(merged))
    return merged


def _found(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    return ", ".join(names)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _copy_files(folder: Path, out: Path, stage: Any) -> None:
    """A stage's results.json and table.md into ``out/stage-N``; its logs, environment,
    nvidia-smi and JUnit XML into ``out/logs/stage-N``; its runs' small files into
    ``out/runs``; its task results into ``out/parts/stage-N``; profiles and benchmark
    JSON into ``out``."""
    mine = out / f"stage-{stage}"
    if mine.resolve() != folder.resolve():
        mine.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "table.md"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, mine / name)
    logs = out / "logs" / f"stage-{stage}"
    for path in folder.glob("*.log"):  # the call's own, e.g. install.log
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, logs / path.name)
    tar_path = folder / "files.tar.gz"
    if not tar_path.is_file():
        return
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tar_path) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.isfile() and _safe(m.name) and wanted(PurePosixPath(m.name))
        ]
        tar.extractall(tmp, members=members, filter="data")
        root = Path(tmp)
        for m in members:
            rel = PurePosixPath(m.name)
            src = root / rel
            if rel.parts[0] == "logs":
                dest = logs / rel.name
            elif rel.parts[0] == "runs":
                dest = out / "runs" / rel.parts[1] / rel.name
            elif rel.parts[0] == "parts":
                dest = out / "parts" / f"stage-{stage}" / rel.name
            elif rel.name in ("env.json", "nvidia-smi.txt") or rel.name.endswith(".xml"):
                dest = logs / rel.name
            else:
                dest = out / rel.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)


def _safe(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stages", nargs="+", help="stage folders (each with results.json)")
    p.add_argument("--out", required=True, help="the merged results folder")
    args = p.parse_args(argv)
    try:
        merged = merge([Path(s) for s in args.stages], Path(args.out))
    except FileNotFoundError as e:
        print(f"merge_gpu_results: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "table.md").read_text())
    bad = [s for s in merged["steps"] if s["status"] in ("failed", "cut", "pending")]
    print(f"{len(merged['steps'])} steps, {len(bad)} failed, cut or not run; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
