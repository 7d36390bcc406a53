"""The committed benchmark results can be trusted as files: every JSON file under
benchmarks/results/ loads, every step a results.json lists has its row in the table.md
beside it, and no checkpoint was committed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
JSON_FILES = sorted(RESULTS.rglob("*.json"))


def test_there_are_results_to_check() -> None:
    assert any(p.name == "results.json" for p in JSON_FILES), RESULTS


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_json_file_loads(path: Path) -> None:
    try:
        json.loads(path.read_text())
    except ValueError as e:
        pytest.fail(f"{path}: not valid JSON: {e}")


def _step_rows(table: str) -> set[str]:
    """Step names in the rows of a table.md's "## Steps" table (the step column is the
    first cell, or the second where the first is the stage)."""
    section = table.split("## Steps", 1)[-1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and not set(cells[0]) <= {"-"}:
            names.add(cells[0])
            names.add(cells[1])
    return names


def _with_steps(path: Path) -> bool:
    """A results.json of the GPU check (it lists steps); one that does not load is the
    load test's failure, not a collection error here."""
    try:
        return "steps" in json.loads(path.read_text())
    except ValueError:
        return False


STEP_FILES = [p for p in JSON_FILES if p.name == "results.json" and _with_steps(p)]


def test_there_are_step_results_to_check() -> None:
    assert STEP_FILES, f"no results.json with steps under {RESULTS}"


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_step_has_its_row_in_the_table(path: Path) -> None:
    steps = json.loads(path.read_text())["steps"]
    table = path.with_name("table.md")
    assert table.exists(), f"{path}: no table.md beside it"
    rows = _step_rows(table.read_text())
    missing = [s["name"] for s in steps if s["name"] not in rows]
    assert not missing, f"{table}: no row for step(s) {missing}"


def test_no_checkpoint_is_committed_with_results() -> None:
    heavy = [p for p in RESULTS.rglob("*") if re.search(r"\.(pt|pth|ckpt)$", p.name)]
    assert not heavy, heavy
