"""Running checkers by kind, and parametrizing pytest over the installed plugins."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from segkit.registry import SINGULAR, canonical_kind
from segkit.testing.datasets import DATASET_RULES, check_dataset
from segkit.testing.loaders import LOADER_RULES, check_loader
from segkit.testing.losses import LOSS_RULES, check_loss
from segkit.testing.models import MODEL_RULES, check_model
from segkit.testing.recipes import RECIPE_RULES, check_recipe

#: The checker of each kind that has one.
CHECKERS: dict[str, Callable[..., None]] = {
    "models": check_model,
    "losses": check_loss,
    "recipes": check_recipe,
    "loaders": check_loader,
    "datasets": check_dataset,
}

_RULES = {
    "models": MODEL_RULES,
    "losses": LOSS_RULES,
    "recipes": RECIPE_RULES,
    "loaders": LOADER_RULES,
    "datasets": DATASET_RULES,
}


def check(kind: str, plugin: str | Callable[..., Any], **kwargs: Any) -> None:
    """Run the checker of ``kind`` ("models", "losses", "recipes", "loaders",
    "datasets"; the old name "augmentations" still works).

    Keyword arguments go to :func:`check_model`, :func:`check_loss`, :func:`check_recipe`,
    :func:`check_loader` or :func:`check_dataset`.
    """
    kind = canonical_kind(kind)
    if kind not in CHECKERS:
        raise ValueError(f"no conformance checks for kind {kind!r}; kinds: {', '.join(CHECKERS)}")
    CHECKERS[kind](plugin, **kwargs)


def _normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def plugin_names(kind: str, distribution: str | None = None) -> list[str]:
    """Registered names of ``kind``, optionally only those of one distribution (its name
    as in ``pyproject.toml``; ``-``, ``_`` and ``.`` are equivalent)."""
    from segkit.registry import default_registry

    plugins = default_registry().plugins(kind)
    if distribution is None:
        return list(plugins)
    want = _normalize(distribution)
    # A name several distributions register is listed for each of them (its checks then
    # fail with the DuplicatePluginError naming them all). A built-in's name registered by
    # another distribution is segkit's: that distribution's plugin of it is hidden, and
    # checking the name would check the built-in (parametrize_plugins refuses it).
    return [
        n
        for n, info in plugins.items()
        if any(_normalize(p.distribution) == want for p in info.claims or (info,))
    ]


def parametrize_plugins(*kinds: str, distribution: str | None = None, rules: bool = False) -> Any:
    """A ``pytest.mark.parametrize`` over the registered plugins of ``kinds``.

    The test receives ``kind`` and ``name``, and with ``rules=True`` also ``rule``: one
    test per plugin and rule, so a report shows exactly which rule a plugin breaks::

        @parametrize_plugins("models", "losses", rules=True)
        def test_contract(kind, name, rule):
            check(kind, name, rules=[rule])

    Args:
        kinds: Plugin kinds; with ``rules=True`` only kinds that have a checker.
        distribution: Only the plugins of this distribution (e.g. your own package's).
        rules: Parametrize over the rules of each kind too.

    Returns:
        A pytest mark. No plugin found gives pytest's "empty parameter set" skip.
    """
    import pytest

    cases = []
    for kind in map(canonical_kind, kinds):
        if rules and kind not in _RULES:
            raise ValueError(f"no conformance rules for kind {kind!r}; kinds: {', '.join(_RULES)}")
        if distribution is not None:
            _refuse_shadowed(kind, distribution)
        for plugin in plugin_names(kind, distribution):
            if rules:
                cases += [
                    pytest.param(kind, plugin, rule, id=f"{kind}-{plugin}-{rule}")
                    for rule in _RULES[kind]
                ]
            else:
                cases.append(pytest.param(kind, plugin, id=f"{kind}-{plugin}"))
    argnames = ("kind", "name", "rule") if rules else ("kind", "name")
    return pytest.mark.parametrize(argnames, cases)


def _refuse_shadowed(kind: str, distribution: str) -> None:
    """Raise where ``distribution`` registers a plugin of ``kind`` under a built-in's name:
    segkit hides it, so no test of that name would test it.

    Raises:
        ConformanceError: naming the plugin and the entry point to rename.
    """
    from segkit.registry import default_registry
    from segkit.testing._rules import ConformanceError

    want = _normalize(distribution)
    for name, hidden in default_registry().shadowed(kind).items():
        builtin = default_registry().plugins(kind)[name]
        for p in hidden:
            if _normalize(p.distribution) == want:
                dist = f"{p.distribution} {p.version}".strip()
                raise ConformanceError(
                    f"{SINGULAR[kind]} '{name}' ({dist})",
                    "name",
                    builtin.shadow_problem(p),
                )
