"""What every checker shares: the error, the plugin under test, and running named rules.

A kind's rules are a table ``name -> Rule(demand, check)``, in the order they run. Each
``check`` is a module-level function of one argument, the kind's *case*: a small object
holding the plugin under test (:class:`Target`), the checker's options and whatever the
rules share (a model made once, a dataset's samples). A rule states what it observed by
raising :class:`Broken` (through :func:`demand`); :func:`run_rules` turns that, or any
other exception, into a :class:`ConformanceError` naming plugin, rule and demand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from segkit.contracts import contract_problems
from segkit.errors import ConfigError, PluginLoadError, first_line
from segkit.registry import SINGULAR, canonical_kind, default_registry


class ConformanceError(AssertionError):
    """A plugin breaks a rule of its kind's contract.

    Attributes:
        plugin: Which plugin, e.g. ``"model 'unet' (segkit 0.1.0)"``.
        rule: The rule's name, a key of the kind's ``*_RULES`` table.
        detail: What was observed.
    """

    def __init__(self, plugin: str, rule: str, detail: str, demand: str = "") -> None:
        self.plugin, self.rule, self.detail = plugin, rule, detail
        message = f"{plugin} breaks rule '{rule}': {detail}"
        if demand:
            message += f" ({demand})"
        super().__init__(message)


class Broken(Exception):
    """Raised inside a rule with what was observed; :func:`run_rules` adds plugin and rule."""


def demand(condition: bool, detail: str) -> None:
    """Raise :class:`Broken` with ``detail`` unless ``condition``."""
    if not condition:
        raise Broken(detail)


def names(items: Sequence[Any], limit: int = 5) -> str:
    """``items`` for a message: the first ``limit`` of them and how many more."""
    shown = list(items[:limit])
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{shown}{more}"


# ----------------------------------------------------------------------------- targets

#: What the ``signature`` rule of every kind demands.
SIGNATURE = (
    "the factory's signature fits its kind's contract (segkit.contracts.CONTRACTS): it "
    "accepts every argument segkit passes, needs no other, and its declared capabilities "
    "have the right type"
)


def fits_contract(case: Case) -> None:
    """The ``signature`` rule of every kind (a registered plugin that breaks it fails to
    load; this also checks a factory passed directly)."""

    problems = contract_problems(case.target.kind, case.target.plugin)
    demand(not problems, "; ".join(problems))


@dataclass
class Target:
    """The plugin under test: how to describe it and how to call its factory.

    Attributes:
        kind: The plugin kind, e.g. ``"models"``.
        label: The plugin in messages, e.g. ``"model 'unet' (segkit 0.1.0)"``.
        factory: Calls the plugin (for a registered name, through the registry, which
            turns a wrong argument into a ConfigError listing the accepted ones).
        plugin: The object itself: the factory or class the entry point names, for
            what it declares (such as a dataset's ``generate``).
    """

    kind: str
    label: str
    factory: Callable[..., Any]
    plugin: Any


def target(kind: str, plugin: str | Callable[..., Any], name: str | None) -> Target:
    """The :class:`Target` of a registered plugin name or of a factory."""
    kind = canonical_kind(kind)
    if isinstance(plugin, str):
        return _registered(kind, plugin)
    if not callable(plugin):
        raise TypeError(f"expected a plugin name or a factory, got {type(plugin).__name__}")
    what = name or getattr(plugin, "__qualname__", None) or repr(plugin)
    module = getattr(plugin, "__module__", None)
    where = f" ({module})" if module and not name else ""
    return Target(kind, f"{SINGULAR[kind]} factory '{what}'{where}", plugin, plugin)


def _registered(kind: str, plugin: str) -> Target:

    registry = default_registry()
    info = registry.info(kind, plugin)  # PluginNotFoundError names close matches
    dist = f"{info.distribution} {info.version}".strip()
    label = f"{SINGULAR[kind]} '{plugin}' ({dist})"
    try:
        loaded = info.load()
    except PluginLoadError as e:
        raise ConformanceError(label, "loads", str(e)) from e

    def factory(*args: Any, **kwargs: Any) -> Any:
        return registry.create(kind, plugin, *args, **kwargs)

    return Target(kind, label, factory, loaded)


# ----------------------------------------------------------------------------- rules


class Case(Protocol):
    """What every kind's case holds: the plugin under test."""

    target: Target


C = TypeVar("C", bound=Case)


class Rule(NamedTuple, Generic[C]):
    """One rule of a kind: what it demands (for messages and docs) and its check."""

    demand: str
    check: Callable[[C], None]


def demands(table: Mapping[str, Rule[Any]]) -> dict[str, str]:
    """``rule name -> what it demands``: the public ``*_RULES`` dict of a rule table."""
    return {rule: entry.demand for rule, entry in table.items()}


def select(table: Mapping[str, Any], rules: Iterable[str] | None, kind: str) -> list[str]:
    """The rules to run, in the table's order; ValueError for a name not in the table."""
    if rules is None:
        return list(table)
    chosen = list(rules)
    unknown = [r for r in chosen if r not in table]
    if unknown:
        raise ValueError(f"unknown {kind} rule(s) {unknown}; the rules are: {', '.join(table)}")
    return [r for r in table if r in chosen]  # run in the table's order


def run_rule(target: Target, rule: str, demanded: str, fn: Callable[[], None]) -> None:
    """Run one rule; anything it raises becomes a ConformanceError naming plugin and rule."""
    try:
        fn()
    except ConformanceError:
        raise
    except Broken as e:
        raise ConformanceError(target.label, rule, str(e), demanded) from None
    except Exception as e:
        raise ConformanceError(
            target.label, rule, f"raised {type(e).__name__}: {first_line(e)}", demanded
        ) from e


def run_rules(table: Mapping[str, Rule[C]], selected: Iterable[str], case: C) -> None:
    """Run the ``selected`` rules of ``table`` on ``case``, stopping at the first broken."""
    for rule in selected:
        entry = table[rule]
        run_rule(case.target, rule, entry.demand, lambda check=entry.check: check(case))


# ----------------------------------------------------------------------------- refusals

#: The option :func:`refuses_unknown_option` passes; no factory should accept it.
NO_SUCH_OPTION = "no_such_option"

#: What the ``unknown_option`` rule of every kind demands.
UNKNOWN_OPTION = "an unknown option raises TypeError or ConfigError, never passes silently"


def _expected(errors: tuple[type[BaseException], ...]) -> str:
    qualified = [
        e.__name__ if e.__module__ == "builtins" else f"{e.__module__}.{e.__name__}" for e in errors
    ]
    return " or ".join(qualified)


def expect_refusal(
    call: Callable[[], Any],
    errors: tuple[type[BaseException], ...],
    *,
    naming: str,
    unnamed: str,
    accepted: str,
    other: str | None = None,
) -> None:
    """Demand that ``call()`` raise one of ``errors`` whose message contains ``naming``.

    Args:
        call: The call that must be refused.
        errors: The exception types a refusal may raise.
        naming: What the message must contain (the bad size, option, path...).
        unnamed: The detail when the message lacks ``naming`` (the message is appended).
        accepted: The detail when ``call()`` returns.
        other: What was called, for the detail when another exception is raised; None
            lets that exception through (the rule then reports it as raised).
    """
    try:
        call()
    except errors as e:
        demand(naming in str(e), f"{unnamed}: {e}")
        return
    except Exception as e:
        if other is None:
            raise
        raise Broken(
            f"{other} raised {type(e).__name__} ({first_line(e)}), not {_expected(errors)}"
        ) from e
    raise Broken(accepted)


def refuses_unknown_option(factory: Callable[..., Any]) -> None:
    """The ``unknown_option`` rule of every kind: ``factory(no_such_option=1)`` (with the
    kind's other arguments bound already) raises TypeError or ConfigError naming it."""
    expect_refusal(
        lambda: factory(**{NO_SUCH_OPTION: 1}),
        (TypeError, ConfigError),
        naming=NO_SUCH_OPTION,
        unnamed="the error does not name the option",
        accepted=f"{NO_SUCH_OPTION}=1 was accepted silently",
    )


def returned(value: Any, expected: type | tuple[type, ...], what: str) -> None:
    """Demand that the factory returned an instance of ``expected`` (``what`` names it)."""
    demand(
        isinstance(value, expected),
        f"the factory returned a {type(value).__name__}, {what}",
    )
