"""Ops by name, and an op from its table: segkit's vocabulary and the ops plugins add.

A recipe file or a recorded run names each op by its class name (``{"op": "Affine",
"rotate": [-10, 10]}``). :func:`op_class` finds the class: one of segkit's own
(:data:`segkit.recipes.ops.VOCABULARY`) or one a plugin registers in the ``segkit.ops``
entry-point group under its class name, imported on first use.
:func:`op_from_dict` builds an op with its parameters checked; :func:`op_to_dict` writes
the table back. A plugin's op is written with the distribution that registers it
(``"plugin"``), so that where that plugin is missing the error names what to install.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from segkit.errors import ConfigError, PluginError, PluginLoadError
from segkit.recipes.ops import SIZE_FIELDS, VOCABULARY, Op
from segkit.registry import PluginInfo, default_registry

#: The key of an op's table that names the distribution of a plugin's op.
PLUGIN_KEY = "plugin"


def plugin_ops() -> dict[str, PluginInfo]:
    """The ops plugins register, by name, without importing them."""
    return default_registry().plugins("ops")


def _load(info: PluginInfo) -> type[Op]:
    """The op class of a ``segkit.ops`` entry point, checked.

    Raises:
        PluginLoadError: it does not import, is not an :class:`Op` subclass declaring its
            loaders, is registered under another name than its class's, or takes the name
            of one of segkit's own ops.
    """
    cls = info.load()  # import errors and the contract (segkit.contracts._op_problems)
    where = f"op '{info.name}' from distribution '{info.distribution}' ({info.target})"
    if not (isinstance(cls, type) and issubclass(cls, Op)):
        raise PluginLoadError(f"{where} is not a subclass of segkit.recipes.Op")
    if cls.__name__ != info.name:
        raise PluginLoadError(
            f"{where}: its class is named '{cls.__name__}'; recipes record an op by its class "
            f"name, so register it as '{cls.__name__}'"
        )
    if info.name in VOCABULARY:
        raise PluginLoadError(f"{where} takes the name of segkit's own op; rename it")
    return cls


def op_class(name: str) -> type[Op] | None:
    """The op class recipes call ``name``, or None if neither segkit nor an installed
    plugin has one.

    Raises:
        PluginLoadError: the plugin registering ``name`` is broken.
    """
    if name in VOCABULARY:
        return VOCABULARY[name]
    info = plugin_ops().get(name)
    return None if info is None else _load(info)


def known_ops() -> dict[str, type[Op]]:
    """Every op a recipe may hold: segkit's own, then those of every installed plugin that
    loads (``segkit list ops --check`` says why one does not)."""
    found = dict(VOCABULARY)
    for name, info in plugin_ops().items():
        try:
            found.setdefault(name, _load(info))
        except PluginError:
            continue
    return found


def op_plugin(cls: type[Op]) -> PluginInfo | None:
    """The plugin that registers ``cls``: None for segkit's own ops and for a class no
    installed plugin registers."""
    if VOCABULARY.get(cls.__name__) is cls:
        return None
    info = plugin_ops().get(cls.__name__)
    if info is None:
        return None
    try:
        return info if _load(info) is cls else None
    except PluginError:
        return None


def op_to_dict(op: Op) -> dict[str, Any]:
    """``{"op": NAME, **parameters}``; a plugin's op also names its distribution."""
    plugin = op_plugin(type(op))
    origin = {PLUGIN_KEY: plugin.distribution} if plugin is not None else {}
    return {"op": type(op).__name__, **origin, **op.params()}


def op_from_dict(entry: Any, *, image_size: int = 256, where: str = "op") -> Op:
    """One op from ``{"op": NAME, **parameters}`` (a recipe file's table), type-checked.

    ``NAME`` is one of segkit's ops or an installed plugin's; size parameters left out
    (:data:`~segkit.recipes.ops.SIZE_FIELDS`) are ``image_size``. A ``plugin`` key (the
    distribution of a plugin's op, as :func:`op_to_dict` writes it) is read only to name
    what to install when the op is missing.

    Raises:
        ConfigError: naming ``where`` and the key that is wrong: an unknown op (with the
            close names, or the plugin to install), an unknown parameter, a value of the
            wrong type or out of range, or a broken plugin.
    """
    if not isinstance(entry, dict) or "op" not in entry:
        raise ConfigError(f"{where}: expected a table with an 'op' key, got {entry!r}")
    name = entry["op"]
    try:
        cls = op_class(name) if isinstance(name, str) else None
    except PluginLoadError as e:
        raise ConfigError(f"{where}: {e}") from e
    if cls is None:
        raise ConfigError(f"{where}: {_missing(name, entry.get(PLUGIN_KEY))}")
    given = {k: v for k, v in entry.items() if k not in ("op", PLUGIN_KEY)}
    hints = cls.parameter_types()
    allowed = list(hints)
    bad = [k for k in given if k not in allowed]
    if bad:
        raise ConfigError(
            f"{where} ({name}): unknown parameter {with_close(bad[0], allowed)}; "
            f"{name} takes {', '.join(allowed)}"
        )
    if cls in SIZE_FIELDS and SIZE_FIELDS[cls] not in given:
        given[SIZE_FIELDS[cls]] = image_size
    values = {
        key: _coerce(value, hints[key], f"{where} ({name}): {key}") for key, value in given.items()
    }
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _missing(name: Any, plugin: Any) -> str:
    """Why no op is called ``name``: the plugin to install, or the close names."""
    if isinstance(plugin, str) and plugin:
        return (
            f"op '{name}' comes from a plugin of distribution '{plugin}', which is not "
            f"installed here or no longer registers it (segkit list ops); install it, e.g. "
            f"pip install {plugin}"
        )
    added = [n for n in plugin_ops() if n not in VOCABULARY]
    by_plugins = f"; installed plugins add {', '.join(added)}" if added else ""
    return (
        f"unknown op {with_close(str(name), [*VOCABULARY, *added])}; segkit's ops are "
        f"{', '.join(VOCABULARY)}{by_plugins}. An op a plugin adds needs that plugin "
        "installed (segkit list ops)"
    )


def with_close(key: str, names: list[str]) -> str:
    """``'key'``, with the close names in ``names`` if there are any."""
    close = difflib.get_close_matches(key, names, n=2, cutoff=0.5)
    return f"{key!r}" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else "")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from TOML, YAML or JSON) as the type ``hint`` of an op field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{where}={value!r}: expected a list of {len(args)} numbers")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"{where}={value!r}: expected a whole number")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}={value!r}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r}: expected a string")
        return value
    return value  # Any, or a type a file cannot spell: the op's own checks judge it
