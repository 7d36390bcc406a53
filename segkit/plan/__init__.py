"""``segkit plan``: a run planned from the data's fingerprint and measurements on this
machine, every choice with its reason, written as a configuration file.

:func:`make_plan` makes a :class:`Plan`; :func:`write_plan` writes it as a TOML, YAML or
JSON file that ``segkit run --config`` reads. The rules and the measurements behind them
are in :mod:`segkit.plan.rules` and docs/plan.md.
"""

from __future__ import annotations

from segkit.plan.files import write_plan
from segkit.plan.planner import Plan, make_plan
from segkit.plan.rules import Choice, parse_budget

__all__ = ["Choice", "Plan", "make_plan", "parse_budget", "write_plan"]
