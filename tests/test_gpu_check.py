"""The staged GPU check (benchmarks/gpu_check.py), its merge (merge_gpu_results.py), its
plan (GPU_PLAN.md) and the lab's loop (lab_loop.py).

`make gpu-check ARGS=--dry-run` runs every stage at tiny sizes on this machine, so the
script cannot rot while no GPU is at hand (on a GPU machine each stage runs at full size).
The fast tests here check the budget rules, the merge and the plan without a process."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _module(name: str):
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gc():
    return _module("gpu_check")


@pytest.fixture(scope="module")
def merge():
    return _module("merge_gpu_results")


def _rows(table: str) -> dict[str, list[str]]:
    """The Steps table's rows by step name (stage, step, status, seconds, note)."""
    section = table.split("## Steps", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[1] != "step" and set(cells[0]) - {"-"}:
            out[cells[1]] = cells
    return out


# ------------------------------------------------------------------- budget and records


def test_a_step_that_would_overrun_is_cut_before_it_starts(gc, tmp_path: Path) -> None:
    check = gc.Check(
        1, tmp_path / "out", tmp_path / "work", tmp_path / "data", gc.FULL, 10.0, False
    )
    marker = tmp_path / "started"
    step = check.run("lab-unet", [sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert step.status == "cut" and step.note.startswith("not started: needs about 45 s")
    assert not marker.exists()  # never started
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    status = {s["name"]: s["status"] for s in results["steps"]}
    # The stage's other steps are there too, as not reached yet.
    assert status == {"lab-unet": "cut", "env": "pending", "data": "pending",
                      "profile-unet": "pending", "lab-resnet34_unet": "pending"}  # fmt: skip
    rows = _rows((tmp_path / "out" / "table.md").read_text())
    assert rows["lab-unet"][2] == "cut" and "not started" in rows["lab-unet"][4]
    assert set(rows) == set(status)
    with tarfile.open(tmp_path / "out" / "files.tar.gz") as tar:
        assert tar.getnames() == []  # nothing logged: nothing ran


def test_stage_5_knows_what_passed_before_on_this_machine(gc, tmp_path: Path) -> None:
    work = tmp_path / "work"
    for stage, steps in ((2, [("compile-unet-default", "ok"), ("model-variants", "cut")]),
                         (5, [("bench-epoch-dali", "ok"), ("cuda-tier-dali", "skipped")])):  # fmt: skip
        (work / f"stage-{stage}").mkdir(parents=True)
        (work / f"stage-{stage}" / "results.json").write_text(
            json.dumps({"steps": [{"name": n, "status": s} for n, s in steps]})
        )
    check = gc.Check(5, tmp_path / "out", work / "stage-5", tmp_path / "data", gc.FULL, 60.0, False)
    check.write()  # a rerun of stage 5 overwrites its own copy; what passed is kept
    assert json.loads((work / "stage-5" / "results.json").read_text())["stage"] == 5
    assert check.passed_before == {"compile-unet-default", "bench-epoch-dali"}
    # A step skipped for want of CUDA (the CUDA tier in a dry run) is not run again by
    # stage 5 on the same machine; one skipped for another reason is.
    (work / "stage-4").mkdir()
    (work / "stage-4" / "results.json").write_text(
        json.dumps(
            {
                "steps": [
                    {
                        "name": "cuda-tier-dali",
                        "status": "skipped",
                        "note": "15 skipped: "
                        "no CUDA device here; the GPU machine runs `make gpu-check`",
                    },
                    {"name": "run-unet", "status": "skipped", "note": "the set is not there"},
                ]
            }
        )
    )
    check = gc.Check(5, tmp_path / "out", work / "stage-5", tmp_path / "data", gc.FULL, 60.0, False)
    assert check.no_cuda_before == {"cuda-tier-dali"}


@pytest.mark.slow
def test_a_running_step_is_stopped_at_its_limit(gc, tmp_path: Path) -> None:
    import dataclasses

    sizes = dataclasses.replace(gc.FULL, steps={"lab-unet": (0.0, 2.0)})
    check = gc.Check(1, tmp_path / "out", tmp_path / "work", tmp_path / "data", sizes, 60.0, False)
    step = check.run(
        "lab-unet", [sys.executable, "-c", "print('hi', flush=True); import time; time.sleep(60)"]
    )
    assert step.status == "cut" and "its limit of 2 s" in step.note and step.seconds < 30
    with tarfile.open(tmp_path / "out" / "files.tar.gz") as tar:
        assert "hi" in tar.extractfile("logs/lab-unet.log").read().decode()


def test_every_planned_step_has_code_and_full_size_timings(gc) -> None:
    prefixes = ("profile-", "lab-", "compile-", "cuda-tier-", "run-", "bench-epoch-")
    for stage, names in gc.PLAN.items():
        assert names[0] == "env", stage
        for name in names:
            assert name in ("env", "data", "model-variants") or name.startswith(prefixes), name
            if name not in ("env", "data"):
                assert name in gc.FULL.steps, f"stage {stage}: {name} has no full-size timing"
            if name.startswith("compile-"):
                gc._compile_name(name)  # parses


def test_the_plan_fits_its_stages_and_the_loan(gc) -> None:
    """Stages 1-3 fit their budgets; stage 4 fits its first 10-epoch run, and whatever of it
    may not fit is on stage 5's list. Four calls, their installs, a 2.5-minute machine
    start and the gaps between calls fit 12 of the loan's 15 minutes."""

    def estimate(names) -> float:
        return sum(gc.FULL.steps[n][0] for n in names if n in gc.FULL.steps) + 3 + gc.Check.RESERVE

    for stage in (1, 2, 3):
        assert estimate(gc.PLAN[stage]) <= gc.FULL.budget[stage], stage
    assert estimate(["run-resnet34_unet"]) <= gc.FULL.budget[4]
    assert set(gc.PLAN[4]) - {"env", "data"} <= set(gc.PLAN[5])
    installs = 15 + 18  # install-parts.sh small (stage 1), dali (stage 4)
    start, gaps = 150, 4 * 10
    total = start + sum(gc.FULL.budget[s] for s in (1, 2, 3, 4)) + installs + gaps
    assert total <= 12 * 60, total
    for stage, budget in gc.FULL.budget.items():  # each call well inside 150 s
        assert budget + (18 if stage == 4 else 15) <= 145, stage


# Bytes, as prepare-parts.sh cut them on 2026-12-06 (DALI 2.4: 195 MiB in four parts).
PART_BYTES = {
    "p00": 51361280,
    "p01": 51361280,
    "p02": 51361280,
    "p03": 51361280,
    "small.tar": 8038400,
    "big.sha256": 65,
    "install-parts.sh": 1919,
}


def _part_size(path: str) -> int:
    return PART_BYTES[Path(path).name]


def test_gpu_plan_calls_fit_the_device_tool(gc) -> None:
    calls = gc.plan_calls(gc.PLAN_FILE.read_text())
    assert len(calls) == 5  # four stages and the optional fifth
    assert gc.check_calls(calls, int(4.5 * 2**20), _part_size) == []
    for n, call in enumerate(calls[:4], 1):
        assert call["timeout_s"] >= gc.FULL.budget[n] + 40  # the install and a margin
        assert call["timeout_s"] <= 180  # well inside the loan
        assert "$OUT" in call["command"] and "--work /tmp/gc" in call["command"]
    assert "install-parts.sh small ." in calls[0]["command"]
    assert "install-parts.sh dali" in calls[3]["command"]
    # A call over the limits is named.
    big = [dict(calls[0], carry=calls[0]["carry"] * 3, command="x" * 2001)]
    problems = gc.check_calls(big, 0, _part_size)
    assert any("2001 characters" in p for p in problems)
    assert any("carries 12 paths" in p for p in problems)
    assert any("MiB travel" in p for p in problems)


@pytest.mark.slow  # git ls-files
def test_this_checkout_leaves_the_plan_a_mib_to_spare(gc) -> None:
    # The working tree travels with every call: with a MiB to spare for what a session
    # adds before its calls, the four calls must still fit (a PNG grows it unseen).
    calls = gc.plan_calls(gc.PLAN_FILE.read_text())
    tree = gc.tree_bytes()
    assert gc.check_calls(calls, tree + 2**20, _part_size) == [], (
        f"the working tree is {tree / 2**20:.1f} MiB: with DALI's parts a device call "
        "no longer carries it in 64 MiB with a MiB to spare; shrink what is committed "
        "(git ls-files -z | xargs -0 du -b | sort -n | tail)"
    )


def test_gpu_check_without_a_gpu_says_to_use_dry_run(gc, tmp_path: Path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gc.main(["--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        gc.main(["--stage", "9", "--out", str(tmp_path / "o")])


def test_junit_counts_and_variants(gc, tmp_path: Path) -> None:
    xml = tmp_path / "t.xml"
    xml.write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"/></testsuites>'
    )
    assert gc.junit_counts(xml) == {"tests": 5, "passed": 2, "failed": 1, "errors": 0, "skipped": 2}
    assert gc.junit_counts(tmp_path / "missing.xml") == {}
    tasks = _module("gpu_tasks")
    assert tasks.parse_variant("unet") == ("unet", "auto", 32, "eager")
    assert tasks.parse_variant("unet:fp16:64:graph") == ("unet", "fp16", 64, "graph")
    with pytest.raises(ValueError, match="batch 'x' is not an integer"):
        tasks.parse_variant("unet:bf16:x")
    with pytest.raises(ValueError, match="mode 'fast' is not one of eager, graph"):
        tasks.parse_variant("unet:bf16:32:fast")


# ---------------------------------------------------------------------------- the merge


def _stage(folder: Path, stage: int, steps: list[dict], files: dict[str, bytes], **extra) -> Path:
    folder.mkdir(parents=True)
    results = {"schema": "segkit-gpu-check/2", "stage": stage, "title": f"stage {stage}",
               "dry_run": False, "budget_s": 120.0, "wall_s": 100.0,
               "env": {"date": "2026-12-01", "device_name": "NVIDIA H100 80GB HBM3"},
               "steps": [s | {"stage": stage} for s in steps], **extra}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "table.md").write_text("# stage\n")
    with tarfile.open(folder / "files.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder


def test_wanted_keeps_small_files_and_never_checkpoints(merge) -> None:
    keep = ["logs/lab-unet.log", "parts/lab-unet.json", "runs/run-unet/summary.json",
            "runs/run-unet/metrics.csv", "profile-unet.txt", "bench-epoch-dali.json",
            "env.json", "nvidia-smi.txt", "cuda-tier-dali.xml"]  # fmt: skip
    drop = ["runs/run-unet/best.pt", "runs/run-unet/last.pt", "runs/run-unet/curves.png",
            "lab/lab-unet-best.pt", "cache/compile-unet-default/inductor/x.json",
            "runs/run-unet/checkpoints/summary.json", "results.json.tmp"]  # fmt: skip
    assert all(merge.wanted(Path(p)) for p in keep)
    assert not any(merge.wanted(Path(p)) for p in drop)


def test_merge_makes_one_folder_with_a_row_for_every_step(merge, tmp_path: Path) -> None:
    metrics = "epoch,epoch_seconds,valid_s\n" + "\n".join(
        f"{i},{12.0 if i == 1 else 3.0},0.2" for i in range(1, 11)
    )
    graphs = {"kept": True, "why_not": None, "eager_ms": 22.9, "replay_ms": 15.1, "trial_steps": 8}
    summary = {
        "wall_s": 55.0,
        "test_dice": 0.9,
        "peak_gpu_memory_mb": 2100.0,
        "cuda_graphs": graphs,
        "time": {"setup_s": 4.0, "train_s": 39.0, "valid_s": 2.0, "checkpoint_s": 0.3,
                 "between_epochs_s": 0.2, "test_s": 3.5, "reports_s": 6.0, "wall_s": 55.0},
    }  # fmt: skip
    run = merge.read_metrics(metrics)
    s1 = _stage(
        tmp_path / "a", 1,
        [{"name": "env", "status": "ok", "seconds": 3.0, "note": ""},
         {"name": "lab-unet", "status": "cut", "seconds": 60.0, "note": "stopped at 60 s"},
         {"name": "profile-unet", "status": "failed", "seconds": 4.0, "note": "rc 1: boom"}],
        {"logs/lab-unet.log": b"lab log", "profile-unet.txt": b"kernels"},
    )  # fmt: skip
    (s1 / "install.log").write_text("installed")
    s4 = _stage(
        tmp_path / "b", 4,
        [{"name": "run-unet", "status": "ok", "seconds": 61.0, "note": ""},
         {"name": "cuda-tier-dali", "status": "pending", "seconds": 0.0, "note": "not reached yet"}],
        {"runs/run-unet/summary.json": json.dumps(summary).encode(),
         "runs/run-unet/metrics.csv": metrics.encode(), "runs/run-unet/best.pt": b"weights",
         "logs/run-unet.log": b"run log"},
        runs={"run-unet": {"summary": summary, "metrics": run, "process_wall_s": 61.0}
              | merge.run_figures(summary, run)},
    )  # fmt: skip
    empty = tmp_path / "c"
    empty.mkdir()
    out = tmp_path / "merged"
    merged = merge.merge([s1, s4, empty], out)

    again = json.loads((out / "results.json").read_text())  # valid JSON
    assert again["steps"] == merged["steps"]
    names = [s["name"] for s in again["steps"]]
    assert names == ["env", "lab-unet", "profile-unet", "run-unet", "cuda-tier-dali", "stage"]
    rows = _rows((out / "table.md").read_text())
    assert set(rows) == set(names)
    assert rows["lab-unet"][2] == "cut" and rows["profile-unet"][2] == "failed"
    assert rows["cuda-tier-dali"][2] == "not run" and "stopped before" in rows["cuda-tier-dali"][4]
    assert "no results.json" in (out / "table.md").read_text()
    # Files: logs per stage, the call's own log, the run's small files, no checkpoint.
    assert (out / "logs" / "stage-1" / "lab-unet.log").read_text() == "lab log"
    assert (out / "logs" / "stage-1" / "install.log").read_text() == "installed"
    assert json.loads((out / "runs" / "run-unet" / "summary.json").read_text()) == summary
    assert (out / "runs" / "run-unet" / "metrics.csv").read_text() == metrics
    assert (out / "profile-unet.txt").read_text() == "kernels"
    assert (out / "stage-4" / "results.json").exists()
    assert not list(out.rglob("*.pt"))
    # The 10-epoch run's wall against its training epochs: 55 / (12 + 9 x 3) = 1.41.
    target = next(t for t in merged["targets"] if t["target"].startswith("unet: 10-epoch"))
    assert target["value"] == pytest.approx(55 / 39, abs=1e-3) and target["met"] is False
    epoch = next(t for t in merged["targets"] if t["target"].startswith("unet training epoch"))
    assert epoch["value"] == 3.0 and epoch["met"] is False
    assert "| unet training epoch (DALI) <= 2.5 s" in (out / "table.md").read_text()
    # The run's row says whether its CUDA graph was kept, with the trial's times.
    assert "| kept (15.1 vs 22.9 ms) |" in (out / "table.md").read_text()
    # Where its wall went, and the process's 6 s outside the run (61 s less 55 s).
    assert (
        "| run-unet | 55.0 | 4.0 | 39.0 | 2.0 | 0.3 | 0.2 | 3.5 | 6.0 | 6.0 |"
        in (out / "table.md").read_text()
    )
    assert merge._graph_cell(None) == "-"
    lost = graphs | {"kept": False, "why_not": "not 5% faster", "replay_ms": 22.0}
    assert merge._graph_cell(lost) == "off: not 5% faster (22.0 vs 22.9 ms)"


def test_merge_names_a_missing_stage_folder(merge, tmp_path: Path, capsys) -> None:
    assert merge.main(["--out", str(tmp_path / "m"), str(tmp_path / "nope")]) == 2
    assert "no such stage folder" in capsys.readouterr().err


def test_targets_read_the_lab_ratio_as_written(merge) -> None:
    lab = {"model": "resnet34_unet", "ratios": [
        {"lab_row": "as written (anomaly detection on)", "segkit_loader": "albumentations",
         "epoch": 12.5, "train": 14.0},
        {"lab_row": "anomaly detection off", "segkit_loader": "albumentations", "epoch": 6.0,
         "train": 7.0}]}  # fmt: skip
    found = [t for t in merge.targets({"lab": [lab]}) if "lab's loop" in t["target"]]
    assert len(found) == 1 and found[0]["value"] == 12.5 and found[0]["met"] is True
    unmeasured = [t for t in merge.targets({}) if t["met"] is None]
    assert len(unmeasured) == 4  # two epoch targets, two run targets: "not measured"


# ----------------------------------------------------------------------- the lab's loop


def test_the_lab_dice_and_its_process_settings() -> None:
    import torch

    lab_loop = _module("lab_loop")
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2] = 1.0  # image 0: 8 foreground pixels; image 1: none
    probs = target.clone()
    # Perfect on both (the empty image scores 1 through the smoothing term).
    assert lab_loop.dice_coefficient(probs, target).item() == pytest.approx(1.0)
    half = torch.full_like(target, 0.5)
    # image 0: (2*4 + 1) / (8 + 8 + 1); image 1: 1 / (8 + 0 + 1)
    expected = ((9 / 17) + (1 / 9)) / 2
    assert lab_loop.dice_coefficient(half, target).item() == pytest.approx(expected)
    assert lab_loop.DiceLoss()(half, target).item() == pytest.approx(1 - expected)
    before = (torch.is_anomaly_enabled(), torch.backends.cudnn.benchmark)
    with lab_loop._lab_globals(anomaly=True):
        assert torch.is_anomaly_enabled() and not torch.backends.cudnn.benchmark
    assert (torch.is_anomaly_enabled(), torch.backends.cudnn.benchmark) == before


@pytest.mark.slow
def test_the_lab_loop_runs_as_written_and_puts_the_process_back(tmp_path: Path) -> None:
    import torch

    lab_loop = _module("lab_loop")
    data = lab_loop.tiny_data(tmp_path / "pets")
    settings = lab_loop.LabSettings(image_size=32, batch_size=4, warmup=1, train_batches=1,
                                    valid_batches=1, progress=False)  # fmt: skip
    benchmark_before = torch.backends.cudnn.benchmark
    res = lab_loop.compare("resnet34_unet", data, settings, tmp_path / "work")
    assert not torch.is_anomaly_enabled()
    assert torch.backends.cudnn.benchmark == benchmark_before
    on, off = res["lab"]
    assert on["anomaly_detection"] and not off["anomaly_detection"]
    for row in (on, off):
        assert row["steps"] == 2 and row["timed_train_batches"] == 1  # warm-up + timed
        assert row["extrapolated"] and row["train_images"] == 16
        assert row["epoch_s"] == pytest.approx(
            row["train_s_per_epoch"] + row["valid_s_per_epoch"] + row["save_s"], abs=2e-3
        )
        assert 0.0 <= row["valid_dice"] <= 1.0 and row["save_s"] > 0
    assert (tmp_path / "work" / "lab-resnet34_unet-best.pt").exists()
    (seg,) = res["segkit"]
    assert seg["loader"] == "albumentations" and seg["train_s_per_epoch"] > 0
    assert [r["lab_row"] for r in res["ratios"]] == [on["row"], off["row"]]
    table = lab_loop.format_table([res])
    assert "as written (anomaly detection on)" in table and "(est.)" in table


# ---------------------------------------------------------------------- the dry run


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_stage_and_merges_them(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    merged = json.loads((out / "results.json").read_text())
    status = {(s["stage"], s["name"]): (s["status"], s["note"]) for s in merged["steps"]}
    gc = _module("gpu_check")
    for stage, names in gc.PLAN.items():
        for name in names:
            assert (stage, name) in status, (stage, name)
    assert {v[0] for v in status.values()} <= {"ok", "skipped"}, status
    # What needs CUDA says so; what passed earlier is not run twice.
    assert status[(3, "cuda-tier-nodali")][0] == "skipped"
    assert "CUDA" in status[(3, "cuda-tier-nodali")][1]
    assert status[(5, "compile-unet-default")] == (
        "skipped",
        "passed in an earlier stage on this machine",
    )
    for stage in (1, 2, 3, 4, 5):
        files = sorted(p.name for p in (out / f"stage-{stage}").iterdir())
        assert files == ["files.tar.gz", "results.json", "table.md"], files  # <= 8 come back
    modes = {(r["model"], r["precision"], r["mode"]): r for r in merged["model_only"]}
    assert modes[("unet", "fp16", "eager")]["status"] == "skipped"
    assert "needs a CUDA device" in modes[("unet", "fp16", "eager")]["note"]
    # segkit's graph step, refused on the CPU by the cuda_graphs policy in its words (the
    # benchmark builds it from Python: the keyword).
    assert modes[("unet", "auto", "graph")]["status"] == "skipped"
    assert modes[("unet", "auto", "graph")]["note"].startswith(
        "cuda_graphs='on': this run cannot capture its training step: needs a CUDA device"
    )
    assert modes[("resnet34_unet", "auto", "eager")]["images_per_s"] > 0
    assert {(c["model"], c["backend"]) for c in merged["compile"]} >= {
        ("unet", "aot_eager"),
        ("resnet34_unet", "aot_eager"),
    }
    # The compiled step captured as a graph: measured on a GPU, skipped here, saying why.
    assert {c["graph_status"] for c in merged["compile"]} == {"skipped"}
    assert {r["model"] for r in merged["lab"]} == {"unet", "resnet34_unet"}
    assert all(len(r["lab"]) == 2 and r["ratios"] for r in merged["lab"])
    for model in ("unet", "resnet34_unet"):
        folder = out / "runs" / f"run-{model}"
        assert json.loads((folder / "summary.json").read_text())["epochs_run"] == 2
        assert (folder / "metrics.csv").read_text().count("\n") == 3
        assert (out / f"profile-{model}.txt").read_text().count("\n") > 10
    assert {b["model"] for b in merged["bench"]} == {"unet", "resnet34_unet"}
    assert not list(out.rglob("*.pt"))
    table = (out / "table.md").read_text()
    assert set(_rows(table)) >= {name for names in gc.PLAN.values() for name in names}
    for heading in ("## The lab's loop", "## Model only", "## torch.compile", "## Profile: unet",
                    "## segkit run", "## Epoch benchmark", "## CUDA tier"):  # fmt: skip
        assert heading in table, heading
    assert "(dry run, tiny sizes)" in table and table in proc.stdout
