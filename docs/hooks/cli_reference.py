"""The CLI reference page, generated from the ``segkit`` command's own parser.

A mkdocs hook (``hooks:`` in mkdocs.yml): when the site is built, the line
``<!-- segkit-cli-reference -->`` in ``docs/reference/cli.md`` is replaced by a section per
subcommand (walked from :func:`segkit.cli.build_parser`, nested ones such as ``data
check`` included) and a table of the configuration-file keys (the fields of
:class:`segkit.config.RunConfig` with their metadata). A flag added to, renamed in or
removed from the parser changes the page on the next build; nothing here lists flags by
hand. ``tests/test_docs.py`` imports :func:`render` to check that every flag is on the
page.

Why a hook rather than mkdocs-gen-files: the page is one string made from one function,
so a 150-line file that mkdocs loads itself needs no plugin, no extra dependency and no
virtual file; ``mkdocs serve`` rebuilds it the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

MARKER = "<!-- segkit-cli-reference -->"
#: The page whose marker is replaced (relative to docs/).
PAGE = "reference/cli.md"
_ROOT = Path(__file__).resolve().parents[2]


def _import_segkit() -> None:
    """Document the checkout being built, not whichever segkit is installed."""
    for path in (_ROOT / "plugins", _ROOT):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def subcommands(
    parser: argparse.ArgumentParser | None = None, prefix: str = "segkit"
) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """Every subcommand as ``(command line, help, parser)``, depth first, in the order the
    parser lists them (``segkit data synth`` after ``segkit data``)."""
    if parser is None:
        _import_segkit()
        from segkit.cli import build_parser

        parser = build_parser()
    out: list[tuple[str, str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        for name, sub in action.choices.items():
            command = f"{prefix} {name}"
            out.append((command, helps.get(name, ""), sub))
            out.extend(subcommands(sub, command))
    return out


def documented_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings of ``parser`` that its ``--help`` shows (not ``--help`` itself)."""
    return [
        flag
        for action in parser._actions
        if action.option_strings
        and action.help is not argparse.SUPPRESS
        and not isinstance(action, argparse._HelpAction)
        for flag in action.option_strings
    ]


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell (help texts hold ``<stem>`` and ``|``)."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("\n", " ")
    )


def _help(action: argparse.Action) -> str:
    """The help text as ``--help`` prints it, with the default added where the text does
    not give it (as ``ArgumentDefaultsHelpFormatter`` does)."""
    text = action.help or ""
    if "%" in text:
        params = {**vars(action), "prog": "segkit"}
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    default = action.default
    shown = default not in (None, False, argparse.SUPPRESS) and not isinstance(
        action, argparse._VersionAction
    )
    if shown and "default" not in text:
        text += f" (default: {default})"
    if action.required and action.option_strings:
        text = "required: " + text
    return text


def _value(action: argparse.Action) -> str:
    """What follows the flag: its choices, its metavar, or nothing for a switch."""
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        value = " \\| ".join(f"`{c}`" for c in action.choices)
    else:
        value = f"`{action.metavar or action.dest.upper()}`"
    if action.nargs == "?":
        value = f"[{value}]"
    elif action.nargs in ("+", "*"):
        value += " ..."
    return value


def _usage(parser: argparse.ArgumentParser) -> str:
    # A fixed width, so the page does not depend on the terminal that built it.
    formatter = argparse.HelpFormatter(parser.prog, width=88)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def render_command(command: str, help_text: str, parser: argparse.ArgumentParser) -> str:
    """One subcommand's section: its purpose, usage, the examples its ``--help`` ends
    with, positional arguments and a table of options per argument group."""
    lines = [f"## `{command}`", ""]
    if help_text:
        lines += [help_text[0].upper() + help_text[1:] + ".", ""]
    lines += ["```", _usage(parser), "```", ""]
    if parser.epilog and parser.epilog.startswith("examples:\n"):
        shown = [line.strip() for line in parser.epilog.splitlines()[1:]]
        lines += ["Examples:", "", "```sh", *shown, "```", ""]
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        ]
        if not actions:
            continue
        positional = not actions[0].option_strings
        title = group.title or "options"
        if title in ("options", "optional arguments"):
            title = "options"
        lines += [f"**{_cell(title)}**", ""]
        if positional:
            lines += ["| argument | meaning |", "|---|---|"]
            for a in actions:
                name = a.metavar or a.dest
                lines.append(f"| `{name}` | {_cell(_help(a))} |")
        else:
            lines += ["| option | value | meaning |", "|---|---|---|"]
            for a in actions:
                flags = ", ".join(f"`{f}`" for f in a.option_strings)
                lines.append(f"| {flags} | {_value(a)} | {_cell(_help(a))} |")
        lines.append("")
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        names = ", ".join(f"`{command} {n}`" for n in action.choices)
        lines += [f"Subcommands: {names}.", ""]
    return "\n".join(lines)


def render_config_keys() -> str:
    """The keys of a configuration file (``segkit run --config``, study files), one row
    per :class:`RunConfig` field: its type, its default and its flag."""
    _import_segkit()
    from segkit.config import RunConfig, choices, field_types, flag

    hints = field_types()
    lines = [
        "## Configuration file keys",
        "",
        "`segkit run --config FILE` (and `lr-find --config`, and a study file's `[base]`, "
        "`[axes]` and `[[runs]]`) reads these keys; a run folder's `config.json` holds all of "
        "them. Each is the long option with `_` for `-`.",
        "",
        "| key | type | default | option | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(RunConfig):
        meta = f.metadata
        values = choices(hints[f.name])
        if values is not None:
            kind = " \\| ".join(f"`{v}`" for v in values)
        else:
            kind = _cell(_type_name(hints[f.name]))
        if f.default is not dataclasses.MISSING:
            default = "none" if f.default is None else f"`{f.default!r}`".replace("'", '"')
            if isinstance(f.default, bool):
                default = f"`{str(f.default).lower()}`"
        else:
            default = "`{}`"
        option = "written by segkit" if meta["group"] == "recorded" else f"`{flag(f.name)}`"
        lines.append(f"| `{f.name}` | {kind} | {default} | {option} | {_cell(meta['help'])} |")
    return "\n".join(lines)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is dict or hint is dict:
        return "table"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:  # X | None
        return " or ".join(_type_name(a) for a in args)
    return {int: "integer", float: "number", str: "string", bool: "true/false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def render() -> str:
    """The whole generated reference: every subcommand, then the configuration keys."""
    _import_segkit()
    from segkit.cli import build_parser

    parser = build_parser()
    parts = [
        "```",
        _usage(parser),
        "```",
        "",
        (parser.description or "").strip(),
        "",
    ]
    for command, help_text, sub in subcommands(parser):
        parts.append(render_command(command, help_text, sub))
    parts.append(render_config_keys())
    return "\n".join(parts) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: put the generated reference where the marker is."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE}: the line {MARKER} is missing; the hook fills it in")
    return markdown.replace(MARKER, render())
