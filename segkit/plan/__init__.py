"""``segkit plan``: a run planned from the data's fingerprint and measurements on this
machine, every choice with its reason, written as a configuration file.

:func:`make_plan` makes a :class:`Plan`; :func:`write_plan` writes it as a TOML, YAML or
JSON file that ``segkit run --config`` reads. The rules and the measurements behind them
are in :mod:`segkit.plan.rules` and docs/plan.md. The names are imported on first use,
so that ``segkit --help`` (which registers the subcommand from :mod:`segkit.plan.cli`)
imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Choice", "Plan", "make_plan", "parse_budget", "write_plan"]

_WHERE = {
    "Choice": "segkit.plan.rules",
    "parse_budget": "segkit.plan.rules",
    "Plan": "segkit.plan.planner",
    "make_plan": "segkit.plan.planner",
    "write_plan": "segkit.plan.files",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'segkit.plan' has no attribute {name!r}")
