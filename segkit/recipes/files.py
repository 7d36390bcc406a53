"""Recipe files: ``--recipe FILE`` (TOML, YAML or JSON) read into a :class:`Recipe`.

A file holds what :meth:`Recipe.from_dict` reads: ``name`` (default: the file's stem),
``train`` and optionally ``eval``, each a list of op tables. :func:`read_recipe_file`
returns that description made independent of the file (a plugin's op that names other
files holds their contents instead), which is what a run records, so ``evaluate``,
``predict`` and ``--resume`` rebuild the recipe without the file.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml

from segkit.errors import ConfigError, PluginError
from segkit.recipes.lookup import PLUGIN_KEY, op_class, op_plugin
from segkit.recipes.recipe import Recipe
from segkit.wording import named_as

#: Suffixes :func:`load_recipe` reads.
RECIPE_FILE_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def is_recipe_file(name: str) -> bool:
    """Whether ``--recipe NAME`` names a file rather than a registered recipe."""
    return name.lower().endswith(RECIPE_FILE_SUFFIXES)


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The description in a recipe file (TOML, YAML or JSON by its suffix).

    Each table of a plugin's op gets the op's own :meth:`~segkit.recipes.Op.file_parameters`
    (paths it names are read relative to the recipe file) and the distribution of its
    plugin (``plugin``). Unknown ops are left for :meth:`Recipe.from_dict` to report.

    Raises:
        ConfigError: the file is missing or does not parse; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"recipe file {path} does not exist; {named_as('recipe')} takes a recipe name "
            "(segkit list recipes) or a .toml, .yaml or .json file"
        )
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError, JSONDecodeError
        raise ConfigError(f"recipe file {path} does not parse: {e}") from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
        for stage in ("train", "eval"):
            entries = data.get(stage)
            if isinstance(entries, list):
                data[stage] = [_independent(entry, path.parent) for entry in entries]
    return data


def _independent(entry: Any, folder: Path) -> Any:
    """A plugin op's table with what it names in ``folder`` read, and its plugin named."""
    if not (isinstance(entry, dict) and isinstance(entry.get("op"), str)):
        return entry
    try:
        cls = op_class(entry["op"])
    except PluginError:  # a broken plugin: Recipe.from_dict reports it with its place
        return entry
    plugin = op_plugin(cls) if cls is not None else None
    if cls is None or plugin is None:
        return entry
    params = {k: v for k, v in entry.items() if k not in ("op", PLUGIN_KEY)}
    params = cls.file_parameters(params, folder)
    return {"op": entry["op"], PLUGIN_KEY: plugin.distribution, **params}


def load_recipe(path: str | Path, image_size: int = 256) -> Recipe:
    """The :class:`Recipe` a file describes (see :meth:`Recipe.from_dict`)."""
    return Recipe.from_dict(read_recipe_file(path), image_size=image_size, source=str(path))
