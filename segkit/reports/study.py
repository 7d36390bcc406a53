"""``segkit study FILE.toml``: a grid of run configurations, each a normal run folder,
and the report that compares them.

A study file is TOML (or YAML or JSON, by its suffix, as ``segkit run --config``) with up
to three tables::

    [base]                      # settings of every run: segkit run --config's keys
    image_size = 64
    epochs = 3

    [axes]                      # the product of these lists: 2 x 3 x 2 = 12 runs
    model = ["unet", "resnet34_unet"]
    recipe = ["type1", "type2", "type3"]
    seed = [0, 1]

    [[runs]]                    # and/or an explicit list of configurations
    model = "unet"
    lr = 1e-4

With ``runs`` and ``axes`` both, every run of the list is crossed with the product of the
axes. Each configuration is ``base``, then its ``runs`` entry, then its axis values
(``*_options`` tables merged key by key, as on the command line), checked as a
:class:`~segkit.config.RunConfig` before anything runs. Its run folder is named from the
values that vary (``resnet34_unet-type1-seed0``; a ``runs`` entry may give its own
``name``).

The study folder (``--out``, default ``runs/<file stem>``) holds ``study.toml`` (the file
as it was run; ``study.yaml`` for a YAML file, ``study-file.json`` for JSON),
``study.json`` (every configuration in full), one run folder per configuration and, at
the end, the :mod:`segkit.reports.compare` report grouped over seeds.
Running the same command again skips finished runs (``summary.json``), resumes an
interrupted one from its ``last.pt`` (:func:`segkit.training.engine.resume`), starts again a run
killed before its first checkpoint, and refuses a file whose configurations changed
(``force``: changed runs are moved to ``replaced/`` and trained again, runs no longer in
the file moved there too, ``replaced/replaced.json`` recording their settings; a run
whose settings are exactly those of a finished run there, an edit reverted, gets that
folder back instead; a run whose only change is more ``epochs`` and/or a longer
``max_time`` and that kept its ``last.pt`` resumes to them instead, its
``extending.json`` there until it ends).

On one device the runs train one after the other in this process, through
:func:`segkit.training.engine.train` like ``segkit run``. ``parallel=N`` on a host with N GPUs or
more runs N at once, each in its own ``segkit study --run NAME`` process on its own GPU
(``CUDA_VISIBLE_DEVICES``), its output in ``logs/<name>.log``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.build import check_plugin_names
from segkit.config import (
    PYTHON,
    RENAMED_KEYS,
    RunConfig,
    given_as,
    parse_duration,
    read_table_file,
)
from segkit.errors import ConfigError, RunInterrupted, SegkitError
from segkit.system.files import atomic_open, atomic_path
from segkit.training import checkpoint as ckpt_io
from segkit.training import engine
from segkit.training.run_folder import FINISHED_BY, UNFINISHED_BY, RunFolder, stopped_by_of

#: The tables a study file may hold.
TABLES = ("base", "axes", "runs")
#: Settings a study decides itself: the run folders are its own.
STUDY_OWNED = ("out", "name")
#: Settings whose change only lets a run train longer: with ``force``, a run that kept its
#: ``last.pt`` resumes to the new values (as ``segkit run --resume --epochs N``, the same
#: result as an unbroken run) instead of being trained again.
EXTENDING = ("epochs", "max_time")


@dataclass(frozen=True)
class PlannedRun:
    """One configuration of a study: its run folder's name, the values that name it and
    its settings in full (a :class:`RunConfig` as a dict, ``out`` and ``name`` set)."""

    name: str
    values: dict[str, Any]
    settings: dict[str, Any]

    def config(self, source: str = "its settings") -> RunConfig:
        """The run's :class:`RunConfig`; a bad value's message names ``source`` and the
        key."""
        return RunConfig.from_dict(dict(self.settings), source=source)


@dataclass
class Study:
    """A study file, read and expanded."""

    path: Path
    out: Path
    runs: list[PlannedRun]

    @property
    def state_file(self) -> Path:
        return self.out / "study.json"

    @property
    def copy_file(self) -> Path:
        suffix = self.path.suffix.lower()
        if suffix in (".toml", ".yaml", ".yml"):
            return self.out / f"study{suffix}"
        return self.out / "study-file.json"  # JSON, or read as JSON: study.json is the state

    def run_dir(self, run: PlannedRun) -> Path:
        return self.out / run.name


# ----------------------------------------------------------------------------- the file


def read_study(path: Path | str, out: Path | str | None = None) -> Study:
    """Read and expand a study file.

    Args:
        path: The TOML, YAML or JSON file (by its suffix; another suffix is read as JSON).
        out: The study folder (default ``runs/<file stem>``).

    Raises:
        ConfigError: the file is missing or does not parse, a table or key is unknown (named,
            with a close match), an axis is not a non-empty list, two configurations get
            one folder name, or a configuration has a bad value.
    """
    path = Path(path).expanduser()
    data = read_table_file(path, "study file")
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table or key {', '.join(map(repr, unknown))}; a study file holds "
            "[base] (settings of every run), [axes] (lists of values, run as their product) "
            "and [[runs]] (explicit configurations)"
        )
    base = data.get("base", {})
    axes = data.get("axes", {})
    runs = data.get("runs", [])
    if not isinstance(base, dict) or not isinstance(axes, dict):
        raise ConfigError(f"{path}: [base] and [axes] must be tables")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"{path}: runs must be an array of tables ([[runs]] entries)")
    planned = expand(base, axes, runs, source=str(path))
    return Study(path, Path(out) if out is not None else Path("runs") / path.stem, planned)


def expand(
    base: dict[str, Any],
    axes: dict[str, list[Any]],
    runs: list[dict[str, Any]] | None = None,
    *,
    source: str = "study",
) -> list[PlannedRun]:
    """The configurations of a study: each of ``runs`` (or the base alone) crossed with
    the product of ``axes``, in file order (the last axis varies fastest).

    Raises:
        ConfigError: see :func:`read_study`; messages start with ``source``.
    """
    base = _renamed(base, f"{source} [base]")
    axes = _renamed(axes, f"{source} [axes]")
    entries = [_renamed(r, f"{source} [[runs]] {i + 1}") for i, r in enumerate(runs or [])]
    _check_keys(base, f"{source} [base]")
    _check_keys(axes, f"{source} [axes]")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{source} [axes] {key} = {values!r}: expected a non-empty list of values, "
                f"e.g. {key} = [{_toml(values)}, ...]"
            )
    for i, entry in enumerate(entries):
        where = f"{source} [[runs]] {i + 1}"
        _check_keys({k: v for k, v in entry.items() if k != "name"}, where)
        both = sorted(set(entry) & set(axes))
        if both:
            raise ConfigError(
                f"{where}: {', '.join(both)} is also an axis; give it in one of the two"
            )
    keys = list(axes)
    planned: list[PlannedRun] = []
    for entry in entries or [{}]:
        own = {k: v for k, v in entry.items() if k != "name"}
        for combo in itertools.product(*(axes[k] for k in keys)):
            values = {**own, **dict(zip(keys, combo, strict=True))}
            settings = _merge(base, values)
            name = run_name(values, entry.get("name"))
            planned.append(PlannedRun(name, values, settings))
    seen: dict[str, PlannedRun] = {}
    for run in planned:
        if run.name in seen:
            same = seen[run.name].settings == run.settings
            raise ConfigError(
                f"{source}: two configurations get the run folder name {run.name!r}"
                + (
                    " (they are the same configuration: remove one)"
                    if same
                    else f" ({_toml(seen[run.name].values)} and {_toml(run.values)}); give "
                    "the [[runs]] entries a name"
                )
            )
        seen[run.name] = run
    for run in planned:  # every value checked before anything runs
        where = f"{source}: run {run.name}"
        try:
            run.config(source=where)  # a bad value: "<file>: run <name>: key 'epochs' = 0: ..."
        except ConfigError as e:
            if str(e).startswith(where):
                raise
            raise ConfigError(f"{where}: {e}") from None
    return planned


def _renamed(table: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of settings")
    return {RENAMED_KEYS.get(k, k): v for k, v in table.items()}


def _check_keys(table: dict[str, Any], where: str) -> None:
    """Unknown keys name themselves (with a close match); ``out`` and ``name`` belong to
    the study."""
    owned = sorted(set(table) & set(STUDY_OWNED))
    if owned:
        raise ConfigError(
            f"{where}: {', '.join(owned)} cannot be set in a study: each run's folder is "
            "<study folder>/<name from its axis values>; choose the study folder with --out "
            "(a [[runs]] entry may set its own name)"
        )
    unknown = set(table) - set(RunConfig.__dataclass_fields__)
    if unknown:  # RunConfig's own message: each unknown key, a close match, the settings
        RunConfig.from_dict(dict.fromkeys(unknown), source=where)


def _merge(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    settings = dict(base)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return settings


def run_name(values: dict[str, Any], name: str | None = None) -> str:
    """A run folder's name from the values that vary between configurations: a plugin
    name or other string as it is, a number after its key (``seed0``, ``lr0.001``), a
    switch as its key or ``no-<key>``, an options table as ``key-value`` pairs; joined by
    ``-``, after ``name`` where given."""
    parts = [name] if name else []
    parts += [_name_part(key, value) for key, value in values.items()]
    text = "-".join(str(p) for p in parts) or "run"
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text)


def _name_part(key: str, value: Any) -> str:
    """One value's part of :func:`run_name`."""
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "-".join(f"{k}-{v}" for k, v in value.items()) or f"{key}-default"
    if value is None:
        return f"{key}-none"
    return f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}"


def _toml(value: Any) -> str:
    return (
        json.dumps(value)
        if not isinstance(value, dict)
        else ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
    )


# ----------------------------------------------------------------------------- the folder


def _plan(study: Study) -> list[dict[str, Any]]:
    return [{"name": r.name, "values": r.values, "settings": r.settings} for r in study.runs]


def prepare_folder(
    study: Study, *, force: bool = False, say: Callable[[str], None] = print
) -> None:
    """Make the study folder, or check that the one there holds this study.

    Raises:
        ConfigError: the folder holds a study whose configurations differ from the
            file's, without ``force`` (the message says what changed); or the folder
            holds something else.
    """
    if study.out.exists() and not study.state_file.is_file() and any(study.out.iterdir()):
        raise ConfigError(
            f"{study.out}: the folder exists and holds no study (no study.json); choose "
            "another --out"
        )
    plan = _plan(study)
    if study.state_file.is_file():
        old = json.loads(study.state_file.read_text())
        before = {r["name"]: _effective(r["settings"]) for r in old.get("runs", [])}
        after = {r["name"]: _effective(r["settings"]) for r in plan}
        renamed = _renamed_runs(before, after)
        edited = _edited_runs(before, after, renamed)
        changes = _changes(before, after, renamed, edited)
        if changes and not force:
            raise ConfigError(
                f"{study.path} differs from the study in {study.out} ({'; '.join(changes)}): "
                "pass --force to run the new file there (changed and removed runs are moved "
                f"to {study.out / 'replaced'}, changed ones trained again, unless a finished "
                "run of their new settings is there to bring back; a run whose only "
                "change is more epochs or a longer max_time resumes from its last.pt instead; "
                "renamed ones keep their folder under the new name; the others kept), or "
                "choose another --out"
            )
        told = _move_aside(study, before, after, renamed, edited, say)
        _bring_back(study, after, told, say)
    study.out.mkdir(parents=True, exist_ok=True)
    state = {"file": str(study.path), "runs": plan}
    with atomic_open(study.state_file) as f:
        f.write(json.dumps(state, indent=2) + "\n")
    if study.path.resolve() != study.copy_file.resolve():
        with atomic_path(study.copy_file) as tmp:
            shutil.copyfile(study.path, tmp)


def _move_aside(
    study: Study,
    before: dict[str, Any],
    after: dict[str, Any],
    renamed: dict[str, str],
    edited: dict[str, str],
    say: Callable[[str], None],
) -> set[str]:
    """Move to ``replaced/`` (never delete) each run folder whose run changed (trained
    again, or brought back from ``replaced/``) or is no longer in the file, whose folder
    would otherwise pass for one of the study's runs; keep an extensible run and rename a
    renamed one. A line each; returns the new runs whose line said why they train again."""
    back = {name: _replaced_run(study, name, after[name]) for name in after}
    told: set[str] = set()
    for name, settings in before.items():
        folder = study.out / name
        if not folder.exists() or (name in after and after[name] == settings):
            continue
        if name in renamed and not (study.out / renamed[name]).exists():
            continue  # renamed below
        new = name if name in after else edited.get(name)  # the run it became
        found = back[new] if new is not None else (None, None)
        longer = (
            _extension(folder, settings, after[name])
            if name in after and found[0] is None
            else None
        )
        change = _change_text(settings, after[new]) if new is not None else ""
        if longer is not None and longer[0]:
            say(f"segkit study: {name}: {change}; {longer[1]}")
            continue  # run_one resumes it: its settings ask more than its folder ran
        target = _to_replaced(study, name, settings)
        if longer is not None:
            say(
                f"segkit study: {name} changed ({change}) but cannot be resumed to it: "
                f"{longer[1]}; its old run folder is now {target}, and it is trained again"
            )
            continue
        if new is None:
            say(
                f"segkit study: {name} is no longer in the study; its old run folder is now {target}"
            )
            continue
        named = f" and is now named {new}" if new != name else ""
        told.add(new)
        then = (
            ""
            if found[0] is not None
            else ", and it is trained again" + (f" ({found[1]})" if found[1] else "")
        )
        say(
            f"segkit study: {name} changed ({change}){named}; its old run folder is now "
            f"{target}{then}"
        )
    for old_name, new_name in renamed.items():
        if (study.out / old_name).exists():
            (study.out / old_name).rename(study.out / new_name)
            _move_log(study.out / "logs" / f"{old_name}.log", study.out / "logs", new_name)
            say(
                f"segkit study: {old_name} is now named {new_name} (the same settings); "
                "its run folder renamed, not trained again"
            )
    return told


def _bring_back(
    study: Study, after: dict[str, Any], told: set[str], say: Callable[[str], None]
) -> None:
    """Each run of the study without a folder whose settings, exactly, are those of a
    finished run in ``replaced/`` (an edit reverted, a run put back in the file) gets
    that run folder back instead of training again: one line each. A run of these
    settings there that cannot be (unfinished, damaged) is said, unless ``told``."""
    index = _read_replaced(study)
    for name, settings in after.items():
        folder = study.out / name
        if folder.exists():
            continue
        found, why = _replaced_run(study, name, settings)
        if found is None:
            if why is not None and name not in told:
                say(f"segkit study: {name}: {why}; it is trained again")
            continue
        found.rename(folder)
        log = study.out / "logs" / f"{name}.log"
        if not log.exists():
            _move_log(study.out / "replaced" / "logs" / f"{found.name}.log", log.parent, name)
        index.pop(found.name, None)
        _write_replaced(study, index)
        say(
            f"segkit study: {name}: {found} is a finished run of exactly these settings; "
            f"moved back to {folder}, not trained again"
        )


def _replaced_run(
    study: Study, name: str, settings: dict[str, Any]
) -> tuple[Path | None, str | None]:
    """The run folder in ``replaced/`` to bring back as ``name``, whose ``settings`` (as
    :func:`_effective` gives them) are exactly those it was moved there with, and that
    finished sound: ``(folder, None)``; else ``(None, why not)`` for the newest one of
    these settings that cannot be, or ``(None, None)`` where there is none."""
    why = None
    run = PlannedRun(name, {}, settings)
    for moved, entry in reversed(list(_read_replaced(study).items())):
        folder = study.out / "replaced" / moved
        if entry.get("settings") != settings or not folder.is_dir():
            continue
        wrong = _unsound(folder, run)
        if wrong is None:
            return folder, None
        why = why or f"{folder} holds a run of these settings, but {wrong}"
    return None, why


def _unsound(folder: Path, run: PlannedRun) -> str | None:
    """What keeps the run in ``folder`` from counting as a finished run of ``run``'s
    settings; None where nothing does."""
    try:
        state = state_of(folder, run)
    except ConfigError as e:  # settings of an older segkit
        return f"its settings do not read as a run's now ({e})"
    if state == "interrupted":
        return "it did not finish (it stopped after its last.pt: resumable, not finished)"
    if state == "started":
        return "it did not finish (it stopped before its first checkpoint)"
    if state == "extend" or RunFolder(folder).read_extending() is not None:
        return "its extension to more epochs or a longer max_time did not finish"
    summary = _read_json(folder / "summary.json")
    if stopped_by_of(summary) not in FINISHED_BY:
        return f"its {folder / 'summary.json'} does not read as a finished run's"
    best = folder / "best.pt"
    if not best.is_file():
        return f"it has no best.pt ({best})"
    try:
        wrong = ckpt_io.damage(best)
    except OSError as e:
        wrong = (f"cannot be read ({e.strerror or e})", False)
    return f"its {best}: {wrong[0]}" if wrong is not None else None


#: ``replaced/replaced.json``: each run folder a ``--force`` moved to ``replaced/`` (its
#: name there) to the study's name and settings it had then; what :func:`_bring_back`
#: matches a run's settings against.
REPLACED_INDEX = "replaced.json"


def _read_replaced(study: Study) -> dict[str, dict[str, Any]]:
    runs = _read_json(study.out / "replaced" / REPLACED_INDEX).get("runs")
    return runs if isinstance(runs, dict) else {}


def _write_replaced(study: Study, index: dict[str, dict[str, Any]]) -> None:
    with atomic_open(study.out / "replaced" / REPLACED_INDEX) as f:
        f.write(json.dumps({"runs": index}, indent=2) + "\n")


def _to_replaced(study: Study, name: str, settings: dict[str, Any]) -> Path:
    """Move run folder ``name`` (and its ``--parallel`` log) to ``replaced/``, under a
    free name, and record its settings there; the folder it went to."""
    target = _free(study.out / "replaced" / name)
    target.parent.mkdir(parents=True, exist_ok=True)
    (study.out / name).rename(target)
    _move_log(study.out / "logs" / f"{name}.log", target.parent / "logs", target.name)
    index = _read_replaced(study)
    index[target.name] = {"name": name, "settings": settings}
    _write_replaced(study, index)
    return target


def _move_log(log: Path, folder: Path, name: str) -> None:
    """A run's ``--parallel`` log (``logs/<run>.log``) moved with its run folder, to
    ``folder/<name>.log``: a run trained again starts a log of its own, not appended to
    the old run's."""
    if log.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        log.rename(folder / f"{name}.log")


def _effective(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's settings in full, defaults included (``out`` and ``name`` left out): two
    runs are the same configuration when these are equal, however the file wrote them
    (``model = "unet"`` given or left to its default). Settings that no longer read as a
    run configuration are compared as written."""
    try:
        full = RunConfig.from_dict(dict(settings), source="study.json").to_dict()
    except (ConfigError, TypeError, ValueError):
        return dict(settings)
    return {k: v for k, v in full.items() if k not in STUDY_OWNED}


def _default(key: str) -> Any:
    return RunConfig.__dataclass_fields__[key].default


def _change_text(old: dict[str, Any], new: dict[str, Any], sep: str = ", ") -> str:
    """The settings that differ between two of a run's configurations, each one
    ``epochs 2 -> 3``, joined by ``sep``."""
    return sep.join(
        f"{k} {old.get(k, _default(k))!r} -> {new.get(k, _default(k))!r}"
        for k in _differing(old, new)
    )


def _extension(folder: Path, old: dict[str, Any], new: dict[str, Any]) -> tuple[bool, str] | None:
    """Whether a study run whose settings went from ``old`` to ``new`` (as
    :func:`_effective` gives them) keeps its run folder and resumes from its ``last.pt``
    to them: ``(True, what it does)`` or ``(False, why not)``. None where a setting outside
    :data:`EXTENDING` changed (a run trained again, as every changed run)."""
    differ = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    if not differ or not differ <= set(EXTENDING):
        return None
    was, now = old.get("epochs", _default("epochs")), new.get("epochs", _default("epochs"))
    summary = _read_json(folder / "summary.json")
    ran = summary.get("epochs_run") if isinstance(summary.get("epochs_run"), int) else None
    last = folder / "last.pt"
    if now < was:
        than = f"the {ran} it ran" if ran is not None and now < ran else f"the {was} it was asked"
        return False, f"{now} epochs are fewer than {than} (a resume only adds epochs)"
    if "max_time" in differ:
        before, after = old.get("max_time"), new.get("max_time")
        if after is None:
            return False, "a resume sets a new max_time but cannot lift one"
        if before is not None and parse_duration(after, "max_time") < parse_duration(
            before, "max_time"
        ):
            return False, f"max_time {after} is shorter than its {before}"
    if now > was and new.get("schedule") == "cosine":
        return False, (
            "its cosine schedule takes the learning rate to 0 at its last epoch, so epochs "
            f"added after it would not train as a {now}-epoch run does"
        )
    if now > was and summary.get("stopped_by") == "patience":
        return False, (
            f"it stopped early (patience, after epoch {ran}): resumed with more epochs it "
            "would train on past that stop"
        )
    if not last.is_file():
        kept = " (keep_last = false deletes it when a run finishes)" if summary else ""
        return False, f"it has no last.pt to resume from{kept}"
    try:
        wrong = ckpt_io.damage(last)
    except OSError as e:
        wrong = (f"cannot be read ({e.strerror or e})", False)
    if wrong is not None:
        return False, f"its {last}: {wrong[0]}"
    limit = (
        f" (max_time {new.get('max_time')}, counted from the resume)"
        if "max_time" in differ
        else ""
    )
    return True, (
        f"it keeps its run folder and resumes from its last.pt to {now} epochs{limit}, not "
        "trained again"
    )


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file's contents; {} without a readable one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _renamed_runs(before: dict[str, Any], after: dict[str, Any]) -> dict[str, str]:
    """Runs whose name changed but not their settings (an axis added, such as a second
    model, names every run anew): each removed name to the added name of the same
    configuration."""
    added = [n for n in after if n not in before]
    renamed: dict[str, str] = {}
    for name in (n for n in before if n not in after):
        match = next((n for n in added if after[n] == before[name]), None)
        if match is not None:
            renamed[name] = match
            added.remove(match)
    return renamed


#: The most settings a removed run and an added one may differ in to be told as one run
#: edited (and named anew by the edit), not as one removed and another added.
EDITED_AT_MOST = 3


def _edited_runs(
    before: dict[str, Any], after: dict[str, Any], renamed: dict[str, str]
) -> dict[str, str]:
    """Runs whose name changed because values in it were edited (``lr = 0.001`` made
    ``0.0003`` renames ``fast-lr0.001`` to ``fast-lr0.0003``): each removed name (not
    ``renamed``) to the added name it is paired with. A removed run and an added one pair
    when each is the other's closest (the fewest differing settings, at most
    :data:`EDITED_AT_MOST`), a tie broken by the same place in the file's order; a run
    left without a pair is removed, and the new one added."""
    removed = [n for n in before if n not in after and n not in renamed]
    added = [n for n in after if n not in before and n not in renamed.values()]
    place = {n: i for i, n in enumerate(before)} | {n: i for i, n in enumerate(after)}
    apart = {
        (old, new): len(_differing(before[old], after[new])) for old in removed for new in added
    }
    edited: dict[str, str] = {}
    while True:  # a pair made can leave another run's closest one alone
        free_old = [n for n in removed if n not in edited]
        free_new = [n for n in added if n not in edited.values()]
        pairs = {}
        for old in free_old:
            new = _closest({n: apart[old, n] for n in free_new}, place[old], place)
            if new is not None:
                back = _closest({o: apart[o, new] for o in free_old}, place[new], place)
                if back == old:
                    pairs[old] = new
        if not pairs:
            return edited
        edited.update(pairs)


def _closest(apart: dict[str, int], at: int, place: dict[str, int]) -> str | None:
    """The run fewest settings ``apart`` (each candidate's count; at most
    :data:`EDITED_AT_MOST`), or, of several, the one at place ``at`` in the file's order;
    None where there is no such one."""
    near = {n: d for n, d in apart.items() if d <= EDITED_AT_MOST}
    closest = [n for n, d in near.items() if d == min(near.values())]
    if len(closest) > 1:
        closest = [n for n in closest if place[n] == at]
    return closest[0] if len(closest) == 1 else None


def _differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _changes(
    before: dict[str, Any],
    after: dict[str, Any],
    renamed: dict[str, str] | None = None,
    edited: dict[str, str] | None = None,
) -> list[str]:
    """What differs between two plans (each run's name to its settings), briefly: runs
    changed (with the first setting that differs), changed and renamed by it
    (``edited``), renamed (``renamed``), added and removed."""
    renamed, edited = renamed or {}, edited or {}
    changed: dict[str, list[str]] = {}  # "epochs 2 -> 3" -> the runs it changed
    for name in after:
        if name in before and before[name] != after[name]:
            a, b = before[name], after[name]
            key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            changed.setdefault(f"{key} {a.get(key)!r} -> {b.get(key)!r}", []).append(name)
    out = [
        f"{what} in {_some(names)}" if len(names) > 1 else f"run {names[0]}: {what}"
        for what, names in changed.items()
    ]
    if edited:
        pairs = [
            f"{a} -> {b}: {_change_text(before[a], after[b], ' and ')}" for a, b in edited.items()
        ]
        out.append(f"{len(pairs)} run(s) changed, and named anew by it ({_some(pairs)})")
    if renamed:
        pairs = [f"{a} -> {b}" for a, b in renamed.items()]
        out.append(f"{len(pairs)} run(s) renamed, the same settings ({_some(pairs)})")
    added = [
        n
        for n in after
        if n not in before and n not in renamed.values() and n not in edited.values()
    ]
    removed = [n for n in before if n not in after and n not in renamed and n not in edited]
    if added:
        out.append(f"{len(added)} run(s) added ({_some(added)})")
    if removed:
        out.append(f"{len(removed)} run(s) removed ({_some(removed)})")
    return out


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _free(path: Path) -> Path:
    n, candidate = 2, path
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{n}")
        n += 1
    return candidate


def state_of(folder: Path, run: PlannedRun | None = None) -> str:
    """``done`` (summary.json), ``interrupted`` (last.pt, no summary), ``started`` (a
    folder without a checkpoint: killed in its first epochs) or ``new``. Given the
    ``run`` planned there, ``extend``: a finished run with its last.pt that ``run`` asks to
    train longer (``--force`` kept it for that: :func:`_extension`), or whose extension
    did not finish."""
    if (folder / "summary.json").is_file():
        if run is not None and (folder / "last.pt").is_file() and _behind(folder, run):
            return "extend"
        return "done"
    if (folder / "last.pt").is_file():
        return "interrupted"
    return "started" if folder.exists() else "new"


def _behind(folder: Path, run: PlannedRun) -> bool:
    """Whether the finished run in ``folder`` ran less than ``run`` asks: fewer epochs or
    another max_time in its config.json, or an extension that did not finish: its
    ``extending.json`` still there (written before it started, removed with its summary:
    a run killed outright in an extension to a longer max_time alone leaves nothing else
    that tells it from one the new limit stopped), config.json rewritten by the resume
    with the summary still the earlier finish's, or a stopped.json written after the
    finish."""
    if RunFolder(folder).read_extending() is not None:
        return True
    asked, summary = _read_json(folder / "config.json"), _read_json(folder / "summary.json")
    config = run.config()
    epochs = asked.get("epochs", _default("epochs"))
    if not isinstance(epochs, int):
        return False
    if epochs < config.epochs or _seconds(asked.get("max_time")) != config.max_time_s:
        return True
    ran = summary.get("epochs_run")
    if summary.get("stopped_by") == "epochs" and isinstance(ran, int) and ran < epochs:
        return True
    stopped = _read_json(folder / "stopped.json")
    return stopped.get("stopped_by") in UNFINISHED_BY


def _seconds(max_time: Any) -> float | None:
    try:
        return parse_duration(max_time, "max_time") if max_time is not None else None
    except (ConfigError, TypeError, ValueError):
        return None


def _resume_to(folder: Path, run: PlannedRun, state: str) -> dict[str, Any]:
    """The ``epochs`` and ``max_time`` to resume ``run``'s folder with: the planned ones
    where they differ from its config.json's, and always for an extension (its last.pt
    may still hold the epochs it first ran to)."""
    asked, config = _read_json(folder / "config.json"), run.config()
    to: dict[str, Any] = {}
    if state == "extend" or asked.get("epochs") != config.epochs:
        to["epochs"] = config.epochs
    if config.max_time is not None and (
        state == "extend" or _seconds(asked.get("max_time")) != config.max_time_s
    ):
        to["max_time"] = config.max_time
    return to


# ----------------------------------------------------------------------------- running


def run_one(study: Study, run: PlannedRun, *, quiet: bool = False, workers_share: int = 1) -> str:
    """Train (or resume, or skip) one configuration of a prepared study; returns what
    was done: ``skipped``, ``resumed`` or ``trained``.

    ``workers_share``: processes sharing this host's cores (``--parallel``); a run that
    leaves ``num_workers`` to the machine gets its share of the loader workers.
    """

    folder = study.run_dir(run)
    state = state_of(folder, run)
    if state == "done":
        return "skipped"
    if state in ("interrupted", "extend"):
        to = _resume_to(folder, run, state)
        if state == "extend":  # until its summary says it ended: a kill leaves it there
            config = run.config()
            RunFolder(folder).write_extending(config.epochs, config.max_time)
        engine.resume(folder, quiet=quiet, **to)
        return "resumed"
    if state == "started":
        shutil.rmtree(folder)  # nothing to resume from: no checkpoint was written
    config = run.config()
    config.out, config.name = str(study.out), run.name
    if config.num_workers is None and workers_share > 1:
        from segkit.build import default_workers, resolve_device

        config.num_workers = default_workers(resolve_device(config.device), workers_share)
    engine.train(config, quiet=quiet)
    return "trained"


@dataclass
class StudyResult:
    """What :func:`run_study` did: per run ``skipped``, ``resumed``, ``trained`` or
    ``failed``; the comparison report (None where no run finished); the seconds."""

    study: Study
    outcome: dict[str, str]
    comparison: Any
    wall_s: float


def run_study(
    path: Path | str,
    out: Path | str | None = None,
    *,
    force: bool = False,
    parallel: int = 1,
    quiet: bool = False,
    gpus: list[str] | None = None,
    say: Callable[[str], None] = print,
) -> StudyResult:
    """Run a study file into its folder and write the comparison report there.

    Args:
        path: The study file.
        out: The study folder (default ``runs/<file stem>``).
        force: Accept a file whose configurations changed since the folder's study.
        parallel: Configurations at once, one per GPU (1 on the CPU).
        quiet: Only the study's own lines and each run's summary line.
        gpus: The GPUs to spread ``parallel`` runs over (``CUDA_VISIBLE_DEVICES``
            values; default: ``0 .. parallel-1``). Tests pass ``""`` (no GPU) to run the
            parallel path on the CPU.

    Raises:
        ConfigError: a bad study file or folder, or a ``parallel`` this host cannot do.
        RunInterrupted: Ctrl-C; the message says how to continue the study.
        SegkitError: a run failed (sequential); the runs before it are kept.
    """
    started = time.perf_counter()
    study = read_study(path, out)

    for run in study.runs:  # a misspelt plugin name stops the study before any run
        check_plugin_names(run.config())
    check_models(study)
    if gpus is None:
        gpus = _gpus(parallel, study)
    prepare_folder(study, force=force, say=say)
    n = len(study.runs)
    todo = {r.name: state_of(study.run_dir(r), r) for r in study.runs}
    _say_plan(study, todo, len(gpus), say)
    errors: dict[str, SegkitError] = {}
    if len(gpus) > 1:
        outcome = _run_parallel(study, gpus, quiet, say)
    else:
        outcome = _run_sequential(study, todo, quiet, say, errors)
    finished = [study.run_dir(r) for r in study.runs if state_of(study.run_dir(r)) == "done"]
    comparison = _compare_runs(study, say, outcome, errors) if finished else None
    failed = [name for name, what in outcome.items() if what == "failed"]
    for name, error in errors.items():  # sequential: the study stopped at this run
        raise type(error)(
            f"study run {name}: {error} (the runs before it are kept"
            + (f", and in the report {comparison.files['md']}" if comparison else "")
            + f"; fix it and continue with: {_command(study)})"
        ) from None
    if failed:
        raise ConfigError(
            f"{len(failed)} of {n} study runs failed ({', '.join(failed)}); their output is in "
            f"{study.out / 'logs'}. The report covers the {len(finished)} finished runs; "
            f"fix the cause and continue with: {_command(study)}"
        )
    return StudyResult(study, outcome, comparison, time.perf_counter() - started)


def check_models(study: Study) -> None:
    """Build each distinct model of the study on PyTorch's ``meta`` device (no memory, no
    weights: the ``weights`` option left out), so that a model option its factory refuses
    (an encoder timm does not have, an image size the model cannot take) stops the study
    before any run rather than after the runs before it. A factory that cannot build on
    ``meta`` for another reason is left for its run to show.

    Raises:
        ConfigError: the first run whose model its factory refuses, with the factory's
            message.
    """
    import torch

    from segkit.build import create_model

    seen: set[str] = set()
    for run in study.runs:
        config = run.config()
        options = {k: v for k, v in config.model_options.items() if k != "weights"}
        key = json.dumps([config.model, options, config.image_size], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:  # a setting named as the study file writes it: image_size=33, not a flag
            with torch.device("meta"), given_as(PYTHON):
                create_model(config.model, image_size=config.image_size, **options)
        except SegkitError as e:
            raise ConfigError(
                f"{study.path}: run {run.name}: {e} (no run has started; fix the study file)"
            ) from None
        except Exception:  # noqa: BLE001 - not buildable on meta: its run will say
            continue


def _say_plan(study: Study, todo: dict[str, str], at_once: int, say: Callable[[str], None]) -> None:
    """The study's first line: its runs, how many are finished, to resume and to train."""
    counts = {
        s: sum(1 for v in todo.values() if v == s)
        for s in ("done", "interrupted", "extend", "started", "new")
    }
    longer = f", {counts['extend']} to train longer" if counts["extend"] else ""
    say(
        f"segkit study {study.path}: {len(study.runs)} runs in {study.out} ({counts['done']} "
        f"finished, {counts['interrupted']} to resume{longer}, "
        f"{counts['new'] + counts['started']} to train)"
        + (f", {at_once} at a time" if at_once > 1 else "")
    )


def _run_sequential(
    study: Study,
    todo: dict[str, str],
    quiet: bool,
    say: Callable[[str], None],
    errors: dict[str, SegkitError],
) -> dict[str, str]:
    """Run the configurations one after the other in this process; each one's outcome.
    A run that fails stops the study (``failed``, its error in ``errors``; the runs after
    it ``not started``), so that the report is still written.

    Raises:
        RunInterrupted: Ctrl-C, saying how to continue the study.
    """
    n = len(study.runs)
    outcome: dict[str, str] = {}
    for i, run in enumerate(study.runs, 1):
        verb = {
            "done": "finished, skipped",
            "interrupted": "resuming",
            "extend": f"resuming to {run.config().epochs} epochs",
        }.get(todo[run.name], "training")
        say(f"segkit study: [{i}/{n}] {run.name}: {verb}")
        try:
            outcome[run.name] = run_one(study, run, quiet=quiet)
            if quiet and outcome[run.name] != "skipped":  # the engine printed nothing
                say((study.run_dir(run) / "summary.txt").read_text().strip())
        except RunInterrupted as e:
            raise RunInterrupted(
                f"{e}; or continue the whole study: {_command(study)}", run_dir=e.run_dir
            ) from None
        except SegkitError as e:
            outcome[run.name], errors[run.name] = "failed", e
            break
    for run in study.runs:
        outcome.setdefault(run.name, "not started")
    return outcome


def _compare_runs(
    study: Study,
    say: Callable[[str], None],
    outcome: dict[str, str] | None = None,
    errors: dict[str, SegkitError] | None = None,
) -> Any:
    """The comparison report of every run that has a folder: one that failed gets its
    row, saying what ended it. A run that failed before its folder was made, and the
    runs a failure left unstarted, get a note each."""
    from segkit.errors import first_line
    from segkit.reports.compare import compare

    folders = [study.run_dir(r) for r in study.runs if state_of(study.run_dir(r)) != "new"]
    notes = []
    for run in study.runs:
        if state_of(study.run_dir(run)) != "new":
            continue
        what = (outcome or {}).get(run.name)
        if what == "failed":
            error = (errors or {}).get(run.name)
            why = first_line(error) if error is not None else "see its log in logs/"
            notes.append(f"`{run.name}`: failed before its run folder was made: {why}")
        elif what == "not started":
            notes.append(f"`{run.name}`: not started (the study stopped at a failed run)")
    comparison = compare(folders, study.out, group_seeds=True, notes=notes)
    say(f"segkit study: report in {comparison.files['md']}")
    return comparison


def _command(study: Study) -> str:
    return f"segkit study {study.path} --out {study.out}"


def _gpus(parallel: int, study: Study) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each parallel slot.

    Raises:
        ConfigError: ``parallel`` above 1 without that many GPUs, or with runs that name
            their own device.
    """
    if parallel < 1:
        raise ConfigError(f"--parallel {parallel}: expected 1 or more")
    if parallel == 1:
        return [""]
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(
            f"--parallel {parallel}: there is no GPU here, and on the CPU a study runs one "
            "configuration at a time (runs side by side would share its cores); use --parallel 1"
        )
    if parallel > count:
        raise ConfigError(
            f"--parallel {parallel}: this host has {count} GPU(s); use --parallel {count} or less"
        )
    named = [r.name for r in study.runs if r.settings.get("device", "auto") not in ("auto", "cuda")]
    if named:
        raise ConfigError(
            f"--parallel {parallel}: run {named[0]} sets device "
            f"{study.runs[0].settings.get('device')!r}; with --parallel each run gets its own "
            "GPU: leave device at auto (or cuda)"
        )
    return [str(i) for i in range(parallel)]


def _run_parallel(
    study: Study, gpus: list[str], quiet: bool, say: Callable[[str], None]
) -> dict[str, str]:
    """Run the unfinished configurations ``len(gpus)`` at a time, each as
    ``segkit study <study.toml> --out <folder> --run NAME`` with its own
    ``CUDA_VISIBLE_DEVICES``. After a failure no new run starts; those running finish."""
    outcome = {r.name: "skipped" for r in study.runs if state_of(study.run_dir(r), r) == "done"}
    queue = [r for r in study.runs if r.name not in outcome]
    logs = study.out / "logs"
    logs.mkdir(exist_ok=True)
    slots = _Slots(study, gpus, quiet, say)
    try:
        while queue or slots.running:
            slots.fill(queue)
            if not slots.running:
                break
            time.sleep(0.5)
            slots.reap(outcome)
        for run in queue:
            outcome.setdefault(run.name, "not started")
    except KeyboardInterrupt:
        slots.stop()
        raise RunInterrupted(f"interrupted; continue the study with: {_command(study)}") from None
    return outcome


@dataclass
class _Slots:
    """The GPUs of a parallel study: the process, run and open log on each busy one (by
    slot), the free ones, and whether a run has failed (then no new run starts)."""

    study: Study
    gpus: list[str]
    quiet: bool
    say: Callable[[str], None]
    running: dict[int, tuple[subprocess.Popen[bytes], PlannedRun, Any]] = field(
        default_factory=dict
    )
    free: list[int] = field(init=False)
    failed: bool = False

    def __post_init__(self) -> None:
        self.free = list(range(len(self.gpus)))

    def fill(self, queue: list[PlannedRun]) -> None:
        """Start the next runs of ``queue`` on the free GPUs, unless a run has failed."""
        while queue and self.free and not self.failed:
            run = queue.pop(0)
            slot = self.free.pop(0)
            proc, log = _start_run(
                self.study, run, self.gpus[slot], len(self.gpus), self.quiet, self.say
            )
            self.running[slot] = (proc, run, log)

    def reap(self, outcome: dict[str, str]) -> None:
        """The runs whose process has exited: their outcome told and recorded, their log
        closed, their GPU free."""
        for slot, (proc, run, log) in list(self.running.items()):
            code = proc.poll()
            if code is None:
                continue
            log.close()
            del self.running[slot]
            self.free.append(slot)
            outcome[run.name] = _ended(self.study, run, code, self.say)
            self.failed = self.failed or code != 0

    def stop(self) -> None:
        """Terminate every running process and wait for each."""
        for proc, _, _ in self.running.values():
            proc.terminate()
        for proc, _, _ in self.running.values():
            proc.wait()


def _start_run(
    study: Study,
    run: PlannedRun,
    gpu: str,
    slots: int,
    quiet: bool,
    say: Callable[[str], None],
) -> tuple[subprocess.Popen[bytes], Any]:
    """Start ``run`` as its own process on ``gpu`` (one of ``slots`` sharing the host's
    workers), its output appended to ``logs/<run>.log``; the process and the open log."""
    log = (study.out / "logs" / f"{run.name}.log").open("ab")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
    command = [
        sys.executable, "-m", "segkit", "study", str(study.copy_file),
        "--out", str(study.out), "--run", run.name, "--workers-share", str(slots),
    ] + ["-q"] * quiet  # fmt: skip
    state = state_of(study.run_dir(run), run)
    what = "resuming" if state in ("interrupted", "extend") else "training"
    say(f"segkit study: {run.name}: {what} on GPU {gpu or '(none)'}, log {log.name}")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, log


def _ended(study: Study, run: PlannedRun, code: int, say: Callable[[str], None]) -> str:
    """The outcome of ``run``'s process, which exited with ``code``: ``trained`` (its
    summary line said) or ``failed`` (the last line of its log said)."""
    if code == 0:
        summary = study.run_dir(run) / "summary.txt"
        line = summary.read_text().strip() if summary.is_file() else ""
        say(f"segkit study: {run.name}: done. {line}")
        return "trained"
    log = study.out / "logs" / f"{run.name}.log"
    say(f"segkit study: {run.name}: failed (exit {code}): {_last_line(log)}")
    return "failed"


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def run_named(
    study_file: Path | str,
    out: Path | str,
    name: str,
    *,
    quiet: bool = False,
    workers_share: int = 1,
) -> str:
    """One configuration of a study already prepared in ``out`` (what each process of
    ``--parallel`` runs).

    Raises:
        ConfigError: ``name`` is not one of the study's configurations.
    """
    study = read_study(study_file, out)
    run = next((r for r in study.runs if r.name == name), None)
    if run is None:
        raise ConfigError(
            f"--run {name!r}: not a run of {study_file}; its runs are "
            f"{', '.join(r.name for r in study.runs)}"
        )
    return run_one(study, run, quiet=quiet, workers_share=workers_share)
