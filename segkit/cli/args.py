"""How the commands' arguments are generated: from :class:`~segkit.config.RunConfig`'s
fields (``segkit run`` and the run settings other commands accept) and from the options
dataclasses of :mod:`segkit.inference.options` (``predict``, ``evaluate``, ``export``),
each field's metadata giving its help, choices (``Literal`` types), type, group and flag.

RunConfig's options default to "not given", so the settings of a run are the dataclass
defaults, overridden by ``--config FILE``, overridden by the flags actually typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

_GROUPS = {
    "plugins": "plugins (see `segkit list`)",
    "training": "training",
    "output": "output",
}


#: Options that only shorten another: flag -> (field, key in that field's options).
_SHORTCUTS = {
    "--encoder": ("model_options", "encoder", "a backbone, for models that take one"),
    "--weights": (
        "model_options",
        "weights",
        "initial weights: PATH or imagenet (timm's, downloaded into its cache when missing; "
        "SEGKIT_OFFLINE=1 forbids downloads)",
    ),
}


#: Second names of options: field -> extra flags (``--augment`` is what albumentations
#: users reach for; both names are documented).
_ALIASES: dict[str, tuple[str, ...]] = {"recipe": ("--augment",)}


def add_config_args(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add an option for each :class:`RunConfig` field (or those in ``names``), with
    help, type and choices from the field. Defaults are left out of the namespace, so
    only the options given appear in it."""
    from segkit.config import RunConfig, field_types, flag

    wanted = set(names) if names is not None else None
    hints = field_types()
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        if wanted is not None and f.name not in wanted:
            continue
        if f.metadata["group"] == "recorded":  # written by segkit into config.json, not a flag
            continue
        title = f.metadata["group"]
        if title not in groups:
            groups[title] = parser.add_argument_group(_GROUPS[title])
        kw = _config_argument(f, hints[f.name])
        groups[title].add_argument(flag(f.name), *_ALIASES.get(f.name, ()), **kw)
    if wanted is None or "model_options" in wanted:
        for shortcut, (_, key, text) in _SHORTCUTS.items():
            groups["plugins"].add_argument(
                shortcut,
                dest=shortcut[2:],
                default=argparse.SUPPRESS,
                help=f"{text}; shortcut for --model-opt {key}=...",
            )


def _config_argument(f: dataclasses.Field[Any], annotation: Any) -> dict[str, Any]:
    """The keywords of ``add_argument`` for a :class:`RunConfig` field: ``*_options``
    repeatable ``KEY=VALUE``, a bool ``--x/--no-x``, else choices or a type; no default
    (the option is left out of the namespace unless given)."""
    from segkit.config import choices

    meta = f.metadata
    kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
    help_text = meta["help"]
    members = [t for t in _members(annotation) if t is not type(None)]
    if typing.get_origin(members[0]) is dict:
        kw.update(action="append", metavar="KEY=VALUE")
        help_text += " (repeatable)"
    elif members == [bool]:
        kw["action"] = argparse.BooleanOptionalAction
    else:
        values = choices(annotation)
        kw.update({"choices": values} if values is not None else {"type": members[0]})
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
    if f.default not in (None, dataclasses.MISSING) and "default:" not in help_text:
        shown = ("on" if f.default else "off") if isinstance(f.default, bool) else f.default
        help_text += f" (default: {shown})"
    kw["help"] = help_text.replace("%", "%%")
    return kw


def _members(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def settings_from_args(
    args: argparse.Namespace, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The settings given on the command line, over ``base`` (a configuration file's).
    ``*_options`` given as flags are merged key by key into the file's."""
    from segkit.config import RunConfig, field_types, flag, parse_options

    settings = dict(base or {})
    given = vars(args)
    hints = field_types()
    for f in dataclasses.fields(RunConfig):
        if f.name not in given:
            continue
        value = given[f.name]
        if typing.get_origin(_members(hints[f.name])[0]) is dict:
            merged = dict(settings.get(f.name) or {})
            merged.update(parse_options(value, flag(f.name)))
            value = merged
        settings[f.name] = value
    if "recipe" in given:  # a recipe named here is read afresh, not the file's recorded one
        settings.pop("recipe_definition", None)
    for shortcut, (field_name, key, _) in _SHORTCUTS.items():
        if shortcut[2:] in given:
            settings[field_name] = {**settings.get(field_name, {}), key: given[shortcut[2:]]}
    return settings


# ---------------------------------------------------------------------------- examples


class ExamplesHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that a text of several lines (a command's ``examples:``
    epilog) is printed line by line as written instead of refilled into one paragraph; the
    description and the options' help are wrapped as before."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "".join(indent + line for line in text.splitlines(keepends=True))


def examples(*commands: str) -> dict[str, Any]:
    """The keywords of ``add_parser`` (or ``ArgumentParser``) that end a command's
    ``--help`` with ``examples:`` and ``commands``, one a line, as the docs show them
    (``tests/test_cli_help.py`` parses each and finds it in the docs)."""
    return {
        "epilog": "examples:\n" + "\n".join(f"  {c}" for c in commands),
        "formatter_class": ExamplesHelpFormatter,
    }


# ----------------------------------------------------------------------------- options

T = TypeVar("T")


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add an argument for each field of the options dataclass ``cls``
    (:mod:`segkit.inference.options`), in the order of its fields: help, group, flag,
    metavar and the rest from the field's metadata, choices from a ``Literal`` type,
    ``store_true`` for a bool, one or more values for a positional list, ``required``
    without a default. The run settings among them (``config``) get
    :class:`~segkit.config.RunConfig`'s flags (:func:`add_config_args`), together, where
    the first of them is."""
    from segkit.inference.options import option_types

    fields = dataclasses.fields(cls)
    settings = [f.name for f in fields if f.metadata.get("config")]
    groups: dict[str | None, Any] = {None: parser}
    for f in fields:
        if f.metadata.get("config"):
            if f.name == settings[0]:
                add_config_args(parser, settings)
            continue
        title = f.metadata.get("group")
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        names, kw = _argument(f, option_types(cls)[f.name])
        groups[title].add_argument(*names, **kw)


def _argument(f: dataclasses.Field[Any], annotation: Any) -> tuple[list[str], dict[str, Any]]:
    """The names and keywords of ``add_argument`` for an options field."""
    from segkit.config import choices

    meta = f.metadata
    kw: dict[str, Any] = {k: meta[k] for k in ("help", "metavar") if meta.get(k) is not None}
    kind = [t for t in _members(annotation) if t is not type(None)][0]
    if meta.get("positional"):
        if typing.get_origin(kind) is list:
            kw["nargs"] = "+"
        return [f.name], kw
    names = [
        *filter(None, [meta.get("short")]),
        meta.get("flag") or "--" + f.name.replace("_", "-"),
    ]
    kw["dest"] = f.name
    if kind is bool:
        return names, {**kw, "action": "store_true"}
    values = choices(annotation)
    kw.update({"choices": values} if values is not None else {"type": kind})
    if meta.get("const") is not None:
        kw.update(nargs="?", const=meta["const"])
    if f.default is dataclasses.MISSING:
        kw["required"] = True
    else:
        kw["default"] = f.default
    return names, kw


def options_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The options dataclass ``cls`` made from the arguments :func:`add_options` added
    (validated as it is made). A run setting not given keeps the field's default; the
    ``KEY=VALUE`` items of an ``*_options`` setting become a dict."""
    from segkit.config import field_types, flag, parse_options

    given = vars(args)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in given:
            continue
        value = given[f.name]
        setting = f.metadata.get("config")
        if setting and typing.get_origin(_members(field_types()[f.name])[0]) is dict:
            value = parse_options(value, flag(f.name))
        values[f.name] = value
    return cls(**values)
