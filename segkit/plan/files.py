"""A plan as a configuration file: TOML, YAML or JSON by the file's suffix, the same
files ``segkit run --config`` reads (:func:`segkit.config.read_config_file`).

TOML and YAML files carry each choice's reason as a comment above its key, and the data
and machine the plan was made for at the top; JSON has no comments, so a JSON plan holds
the settings alone (``segkit plan --json`` prints everything). A user edits any value;
the comments are ignored by ``segkit run``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.errors import ConfigError

if TYPE_CHECKING:
    from segkit.plan.planner import Plan

#: Which settings each printed choice explains (its comment goes above the first).
_EXPLAINS: dict[str, tuple[str, ...]] = {
    "model": ("model", "model_options"),
    "loss": ("loss", "loss_options"),
    "image_size": ("image_size",),
    "crops_per_image": ("crops_per_image",),
    "recipe": ("recipe",),
    "eval_size": ("eval_size",),
    "batch_size": ("batch_size",),
    "schedule": ("schedule", "lr", "warmup_epochs"),
    "epochs": ("epochs",),
    "max_time": ("max_time",),
    "validate_every": ("validate_every",),
    "save_every": ("save_every",),
    "grid_images": ("grid_images",),
}


PLAN_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def check_plan_path(path: Path | str, *, force: bool = False) -> Path:
    """``path`` (expanded) if a plan may be written there: ``segkit plan`` asks before it
    reads the data and times steps (minutes), so a taken ``--out`` is refused at once.

    Raises:
        ConfigError: the file exists (without ``force``), or the suffix is not
            .toml, .yaml, .yml or .json.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in PLAN_SUFFIXES:
        raise ConfigError(
            f"{path}: a plan is written as .toml, .yaml or .json (the files `segkit run "
            "--config` reads); name one of those"
        )
    if path.exists() and not force:
        raise ConfigError(
            f"{path}: exists (a plan you may have edited); pass --force to overwrite it, or "
            "--out another file"
        )
    return path


def write_plan(plan: Plan, path: Path | str, *, force: bool = False) -> Path:
    """Write ``plan`` to ``path`` (TOML, YAML or JSON by its suffix; another suffix is
    refused) and check that it reads back as the same configuration.

    Raises:
        ConfigError: the file exists (without ``force``), or the suffix is not
            .toml, .yaml, .yml or .json.
    """
    path = check_plan_path(path, force=force)
    writers = {".toml": to_toml, ".yaml": to_yaml, ".yml": to_yaml, ".json": to_json}
    suffix = path.suffix.lower()
    from segkit.system.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(writers[suffix](plan, path))
    from segkit.config import RunConfig

    if RunConfig.from_file(path).to_dict() != plan.config().to_dict():
        raise AssertionError(f"{path}: the plan does not read back as planned")
    return path


def run_command(path: Path | str) -> str:
    """The command that runs the plan file ``path``, quoted for a shell (a path with
    spaces pastes as one argument)."""
    import shlex

    return f"segkit run --config {shlex.quote(str(path))}"


def _header(plan: Plan, path: Path) -> list[str]:
    fp = plan.fingerprint
    return [
        f"segkit plan, {time.strftime('%Y-%m-%d %H:%M')}: edit any value; segkit run ignores "
        "these comments",
        f"run it: {run_command(path)}",
        f"data: {fp.root}: {fp.describe()}",
        f"machine: {plan.machine.describe()}",
        plan.lines()[2 + len(plan.choices)],  # the estimate
    ]


def _comments(plan: Plan) -> dict[str, str]:
    """Setting -> the comment above it."""
    out = {}
    for choice in plan.choices:
        keys = _EXPLAINS.get(choice.key)
        if keys:
            out[keys[0]] = f"{choice.key}: {choice.shown} -- {choice.reason}"
    return out


def _predict_comment(plan: Plan) -> str:
    choice = next(c for c in plan.choices if c.key == "predict")
    return f"predict: segkit predict RUN/best.pt IMAGES {choice.shown} -- {choice.reason}"


def _ordered(settings: dict[str, Any]) -> list[str]:
    """The settings' keys in the order of :class:`segkit.config.RunConfig`'s fields."""
    import dataclasses

    from segkit.config import RunConfig

    order = [f.name for f in dataclasses.fields(RunConfig)]
    return [k for k in order if k in settings and settings[k] is not None]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # TOML's basic strings escape as JSON does
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"plan: cannot write {value!r} ({type(value).__name__}) to TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(plan: Plan, path: Path) -> str:
    """The plan as a TOML file, reasons as comments (tables written inline, so each
    stays beside its comment)."""
    comments = _comments(plan)
    lines = [f"# {line}" for line in _header(plan, path)] + [""]
    for key in _ordered(plan.settings):
        if key in comments:
            lines.append(f"# {comments[key]}")
        lines.append(f"{key} = {_toml_value(plan.settings[key])}")
    lines += ["", f"# {_predict_comment(plan)}"]
    return "\n".join(lines) + "\n"


def to_yaml(plan: Plan, path: Path) -> str:
    """The plan as a YAML file, reasons as comments."""
    import yaml

    comments = _comments(plan)
    lines = [f"# {line}" for line in _header(plan, path)] + [""]
    for key in _ordered(plan.settings):
        if key in comments:
            lines.append(f"# {comments[key]}")
        value = yaml.safe_dump(plan.settings[key], default_flow_style=True, width=10**6)
        value = value.strip().removesuffix("...").strip()
        lines.append(f"{key}: {value}")
    lines += ["", f"# {_predict_comment(plan)}"]
    return "\n".join(lines) + "\n"


def to_json(plan: Plan, path: Path) -> str:
    """The plan's settings as JSON (no comments: ``segkit plan --json`` prints why)."""
    return json.dumps({k: plan.settings[k] for k in _ordered(plan.settings)}, indent=2) + "\n"
