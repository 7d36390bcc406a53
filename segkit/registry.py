"""Plugin discovery through entry points.

Six groups, one per kind (see :mod:`segkit.contracts` for what each must provide)::

    segkit.models  segkit.losses  segkit.recipes  segkit.loaders  segkit.datasets  segkit.ops

The recipes' group was first called ``segkit.augmentations``; it is still read, and
``augmentations`` is still accepted as the kind's name, with a DeprecationWarning.

Names are listed from the installed distributions' metadata with the ``entrypoints``
package, which reads ``entry_points.txt`` without importing anything; a plugin module is
imported the first time its object is asked for. A plugin that fails to import raises
:class:`~segkit.errors.PluginLoadError` naming it and its distribution, chained to the
original exception, and other plugins keep working. On load, the factory's signature is
compared with its kind's contract (:func:`segkit.contracts.contract_problems`); a
mismatch is a :class:`~segkit.errors.PluginLoadError` naming the plugin and the
parameter. Two distributions claiming one name is a
:class:`~segkit.errors.DuplicatePluginError` naming both, raised when that name is used
(:meth:`Registry.info`, :meth:`Registry.get`, ``load()``): listing a kind never raises, so
the other plugins keep working and ``segkit list`` shows every claimant of the name. A
built-in's name is the exception: installing a package must never break segkit's own
plugins, so segkit's wins and the other distribution's plugin of that name is hidden
(:attr:`PluginInfo.shadows`; ``segkit list`` shows it as ``SHADOWED`` and ``--check``
fails for it; a run using the name says so once, :func:`say_shadowed`).

A notebook or script can add a plugin without packaging an entry point:
:func:`register_plugin` registers a factory in this process only (:data:`IN_PROCESS` is its
distribution in messages and in a run's ``config.json``). Registering the name again
replaces it (a notebook cell run twice); a name an installed distribution holds is
refused.

Set ``SEGKIT_DISABLE_PLUGIN_AUTOLOAD=1`` to see only the plugins of the ``segkit``
distribution itself (useful to rule out a broken third-party package).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit.contracts import CONTRACTS, capability, contract_problems
from segkit.errors import DuplicatePluginError, PluginLoadError, PluginNotFoundError

#: Plugin kind -> entry-point group.
GROUPS: dict[str, str] = {
    "models": "segkit.models",
    "losses": "segkit.losses",
    "recipes": "segkit.recipes",
    "loaders": "segkit.loaders",
    "datasets": "segkit.datasets",
    "ops": "segkit.ops",
}

#: Plugin kinds, in the order segkit lists them.
KINDS: tuple[str, ...] = tuple(GROUPS)

#: Old kind names, still accepted: old -> current.
KIND_ALIASES: dict[str, str] = {"augmentations": "recipes"}

#: Groups read besides a kind's own (their first names): kind -> groups.
_LEGACY_GROUPS: dict[str, tuple[str, ...]] = {"recipes": ("segkit.augmentations",)}

#: Plugin kind -> how messages call one plugin of it.
SINGULAR: dict[str, str] = {
    "models": "model",
    "losses": "loss",
    "recipes": "recipe",
    "loaders": "loader",
    "datasets": "dataset",
    "ops": "op",
}


def canonical_kind(kind: str) -> str:
    """``kind``, with an old name (:data:`KIND_ALIASES`) replaced and a warning given."""
    if kind in KIND_ALIASES:
        new = KIND_ALIASES[kind]
        warnings.warn(
            f"the plugin kind '{kind}' is now called '{new}'", DeprecationWarning, stacklevel=3
        )
        return new
    return kind


CORE_DISTRIBUTION = "segkit"
#: The distribution of a plugin :func:`register_plugin` registered in this process.
IN_PROCESS = "<in-process>"
DISABLE_ENV = "SEGKIT_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class PluginInfo:
    """One discovered plugin. ``load()`` imports it (once) and returns its object."""

    kind: str
    name: str
    target: str  # "module:attr"
    distribution: str
    version: str
    _entry_point: Any = field(repr=False, default=None)
    _loaded: Any = field(repr=False, default=None)
    #: Every plugin registered under this name when several distributions claim it (this
    #: one included, sorted by distribution); empty when the name is this plugin's alone.
    claims: tuple[PluginInfo, ...] = field(repr=False, compare=False, default=())
    #: For a plugin of segkit's own: the plugins other distributions register under its
    #: name, hidden because a built-in name wins (installing a package must never break
    #: segkit's built-ins); empty when the name is this plugin's alone.
    shadows: tuple[PluginInfo, ...] = field(repr=False, compare=False, default=())

    def clash_error(self) -> DuplicatePluginError | None:
        """The error naming every distribution that claims this name, or None."""
        if not self.claims:
            return None
        by = [
            f"distribution '{p.distribution}'{' ' + p.version if p.version else ''} ({p.target})"
            for p in self.claims
        ]
        times = "twice" if len(by) == 2 else f"{len(by)} times"
        return DuplicatePluginError(
            f"{SINGULAR[self.kind]} name '{self.name}' is registered {times}: by "
            f"{', by '.join(by[:-1])} and by {by[-1]}; uninstall all but one of them "
            f"or rename the entry point in group '{GROUPS[self.kind]}' (the other "
            f"{self.kind} keep working; `segkit list {self.kind}` shows every claimant)"
        )

    def shadow_problem(self, hidden: PluginInfo) -> str:
        """What is wrong with ``hidden`` (one of :attr:`shadows`), and how its author
        fixes it, in a sentence."""
        return (
            f"{hidden.label} ({hidden.target}) is hidden: '{self.name}' is the name of "
            f"segkit's built-in {SINGULAR[self.kind]}, which wins, so that package's "
            f"{SINGULAR[self.kind]} cannot be used; rename its entry point in group "
            f"'{GROUPS[self.kind]}' of {hidden.distribution}'s pyproject.toml and reinstall "
            "it (`pip install -e .` again for an editable install)"
        )

    def shadow_note(self) -> str | None:
        """The line a run that uses this built-in prints when other distributions' plugins
        of its name are hidden (:attr:`shadows`), or None."""
        if not self.shadows:
            return None
        hidden = " and ".join(
            f"'{p.distribution}'{' ' + p.version if p.version else ''} ({p.target})"
            for p in self.shadows
        )
        return (
            f"{SINGULAR[self.kind]} '{self.name}' is segkit's built-in; the "
            f"{SINGULAR[self.kind]} of that name from distribution{'s' * (len(self.shadows) > 1)} "
            f"{hidden} is hidden (rename it to use it; `segkit list {self.kind}` shows it)"
        )

    @property
    def label(self) -> str:
        """The plugin in messages: ``model 'unet' from distribution 'segkit' 0.1.0``."""
        if self.distribution == IN_PROCESS:
            return f"{SINGULAR[self.kind]} '{self.name}' registered in this process"
        where = f"{SINGULAR[self.kind]} '{self.name}' from distribution '{self.distribution}'"
        return f"{where} {self.version}" if self.version else where

    def load(self) -> Any:
        """Import the plugin and return its object (factory, class or recipe function).

        Raises:
            PluginLoadError: the import failed or the object is not callable.
            DuplicatePluginError: several distributions claim this plugin's name.
        """
        if (clash := self.clash_error()) is not None:
            raise clash
        if self._loaded is not None:
            return self._loaded
        where = self.label
        try:
            obj = self._entry_point.load()
        except Exception as e:
            raise PluginLoadError(
                f"{where} failed to load ({self.target}): {type(e).__name__}: {e}"
                f"{self._load_hint(e)}"
            ) from e
        if not callable(obj):
            raise PluginLoadError(
                f"{where} points at {self.target}, a {type(obj).__name__}; expected a callable "
                f"factory (see segkit.contracts)"
            )

        problems = contract_problems(self.kind, obj)
        if problems:
            raise PluginLoadError(
                f"{where}: its factory {self.target} {'; '.join(problems)}. The "
                f"{GROUPS[self.kind]} contract is {CONTRACTS[self.kind].call} (see "
                "segkit.contracts)"
            )
        self._loaded = obj
        return obj

    def _load_hint(self, error: Exception) -> str:
        """What to do about ``error``, raised importing the entry point's module or
        resolving its attribute, in a sentence that starts with ``"; "`` (with the file
        and line of the plugin's code that raised it, where there is one)."""
        module, _, attr = self.target.partition(":")
        fix_target = (
            f"fix the entry point '{self.name} = \"{self.target}\"' in group "
            f"'{GROUPS[self.kind]}' of {self.distribution}'s pyproject.toml, then reinstall "
            "it (`pip install -e .` again for an editable install)"
        )
        missing = getattr(error, "name", None)
        if isinstance(error, ModuleNotFoundError) and missing:
            if module == missing or module.startswith(f"{missing}."):
                return f"; no module '{missing}' is installed: {fix_target}"
            return (
                f"; {_raised_at(error)}imports '{missing}', which is not installed here: "
                f"install the package that provides it (and list it in "
                f"{self.distribution}'s dependencies, so pip installs it with the plugin)"
            )
        imported = sys.modules.get(module)
        if isinstance(error, AttributeError) and attr and imported is not None:
            head = attr.split(".")[0]
            if not hasattr(imported, head):
                public = [n for n in dir(imported) if not n.startswith("_")]
                close = difflib.get_close_matches(head, public, n=1)
                hint = f" (did you mean '{module}:{close[0]}'?)" if close else ""
                source = getattr(imported, "__file__", None)
                return f"; {source or module} has no '{head}'{hint}: {fix_target}"
        return f"; {_raised_at(error)}raised it" if _raised_at(error) else ""

    def capability(self, name: str) -> Any:
        """A capability the plugin's factory declares (or its default), read without
        calling the factory; see :data:`segkit.contracts.CONTRACTS`."""

        return capability(self.kind, self.load(), name)


@dataclass(frozen=True)
class Misplaced:
    """An entry point in a group segkit does not read, close to the group of ``kind``
    (:meth:`Registry.misplaced`). ``str()`` says what is wrong and how to fix it."""

    kind: str
    name: str
    group: str
    target: str
    distribution: str
    version: str

    def __str__(self) -> str:
        dist = f"'{self.distribution}'{' ' + self.version if self.version else ''}"
        return (
            f"distribution {dist} registers '{self.name}' ({self.target}) under the "
            f"entry-point group '{self.group}', which segkit does not read; the group of "
            f"{self.kind} is '{GROUPS[self.kind]}': rename it in the distribution's "
            f'pyproject.toml ([project.entry-points."{GROUPS[self.kind]}"]) and reinstall '
            "it (`pip install -e .` again for an editable install)"
        )


@dataclass(frozen=True)
class Copy:
    """One installed copy of a distribution: its version, its metadata folder (a
    ``.dist-info``, ``.egg-info`` or ``.egg``) and, for an editable install, the source
    folder it points at."""

    version: str
    where: str
    editable: str = ""
    #: Its segkit entry points, ``(group, name, target)`` sorted.
    entry_points: tuple[tuple[str, str, str], ...] = ()

    def __str__(self) -> str:
        text = f"{self.version or '(no version)'} at {self.where}"
        return f"{text} (editable install of {self.editable})" if self.editable else text


@dataclass(frozen=True)
class Copies:
    """A distribution with segkit plugins installed more than once on the search path,
    the copies differing (:meth:`Registry.copies`): Python, and segkit, use the first on
    the path and hide the others. ``str()`` says which is used and how to fix it."""

    distribution: str
    used: Copy
    hidden: tuple[Copy, ...]

    def registers(self, kind: str) -> bool:
        """Whether a copy registers plugins of ``kind`` (in its group or an old name)."""
        groups = (GROUPS[kind], *_LEGACY_GROUPS.get(kind, ()))
        return any(g in groups for c in (self.used, *self.hidden) for g, _, _ in c.entry_points)

    def __str__(self) -> str:
        hidden = "; ".join(f"{c} is hidden" for c in self.hidden)
        return (
            f"distribution '{self.distribution}' is installed {len(self.hidden) + 1} times "
            f"on the path: {self.used} is used (the first on sys.path wins); {hidden}. "
            "Uninstall the copies you do not want (`python -m pip uninstall "
            f"{self.distribution}` with the Python whose site folder holds each, or delete "
            "the stale metadata folder) so that one is left"
        )


class Registry:
    """The plugins visible on a search path (``sys.path`` by default).

    Tests build their own ``Registry(path=[tmp_dir])`` to fake installed distributions.
    """

    def __init__(
        self,
        path: list[str] | None = None,
        autoload: bool | None = None,
        local: dict[str, dict[str, PluginInfo]] | None = None,
    ) -> None:
        self.path = path
        #: Plugins registered in this process (:func:`register_plugin`), seen besides the
        #: installed ones: kind -> name -> plugin. The default registry's only.
        self.local = local if local is not None else {}
        if autoload is None:
            autoload = os.environ.get(DISABLE_ENV, "").strip().lower() in ("", "0", "false", "no")
        self.autoload = autoload
        self._cache: dict[str, dict[str, PluginInfo]] = {}
        self._misplaced: list[Misplaced] | None = None
        self._copies: list[Copies] | None = None

    def _check_kind(self, kind: str) -> str:
        kind = canonical_kind(kind)
        if kind not in GROUPS:
            close = difflib.get_close_matches(kind, GROUPS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PluginNotFoundError(
                f"unknown plugin kind '{kind}'{hint} Kinds: {', '.join(GROUPS)}"
            )
        return kind

    def plugins(self, kind: str) -> dict[str, PluginInfo]:
        """All plugins of ``kind`` by name, discovered without importing them.

        A name several distributions register maps to segkit's own plugin where it is one
        of them (the others in its ``shadows``), else to the first of them (by distribution
        name), whose ``claims`` lists them all; using it raises
        :class:`~segkit.errors.DuplicatePluginError` (see :meth:`clashes`). Listing never
        raises for it, so the other plugins keep working.
        """
        kind = self._check_kind(kind)
        installed = self._installed(kind)
        local = self.local.get(kind)
        return dict(sorted({**installed, **local}.items())) if local else installed

    def _installed(self, kind: str) -> dict[str, PluginInfo]:
        """The plugins of ``kind`` that installed distributions register (cached)."""
        if kind in self._cache:
            return self._cache[kind]
        import entrypoints

        found: dict[str, list[PluginInfo]] = {}  # name -> its claimants, one per distribution
        groups = (GROUPS[kind], *_LEGACY_GROUPS.get(kind, ()))
        eps = [ep for group in groups for ep in entrypoints.get_group_all(group, path=self.path)]
        for ep in eps:
            distro = ep.distro.name if ep.distro is not None else "<unknown>"
            version = (ep.distro.version if ep.distro is not None else None) or _version(distro)
            if not self.autoload and not is_core(distro):
                continue
            target = f"{ep.module_name}:{ep.object_name}" if ep.object_name else ep.module_name
            claimants = found.setdefault(ep.name, [])
            if any(p.distribution == distro for p in claimants):
                # The same distribution seen twice on the path (an egg-info in the source
                # tree beside the installed dist-info): the first one wins, as in Python's
                # own importlib.metadata.
                continue
            claimants.append(PluginInfo(kind, ep.name, target, distro, version, ep))
        plugins = {}
        for name, claimants in sorted(found.items()):
            core = [p for p in claimants if is_core(p.distribution)]
            if core and len(claimants) > 1:  # a built-in name wins; the others are hidden
                hidden = [p for p in claimants if not is_core(p.distribution)]
                core[0].shadows = tuple(sorted(hidden, key=lambda p: (p.distribution, p.target)))
                plugins[name] = core[0]
                continue
            if len(claimants) > 1:
                claimants.sort(key=lambda p: (p.distribution, p.target))
                for p in claimants:
                    p.claims = tuple(claimants)
            plugins[name] = claimants[0]
        self._cache[kind] = plugins
        return plugins

    def misplaced(self) -> list[Misplaced]:
        """Entry points in a group segkit does not read but whose name is close to one it
        does (``segkit.model``, ``segkit_models``): a typo in a plugin's
        ``pyproject.toml``, which would otherwise leave its plugins silently unlisted.
        Read from metadata, nothing imported; cached."""
        if self._misplaced is not None:
            return self._misplaced
        import entrypoints

        known = {g: kind for kind in GROUPS for g in (GROUPS[kind], *_LEGACY_GROUPS.get(kind, ()))}
        found = []
        for config, distro in entrypoints.iter_files_distros(path=self.path):
            name = distro.name if distro is not None else "<unknown>"
            if not self.autoload and not is_core(name):
                continue
            for group in config.sections():
                if group in known or not group.lower().startswith("segkit"):
                    continue
                spelled = group.lower().replace("_", ".").replace("-", ".")
                close = difflib.get_close_matches(spelled, known, n=1, cutoff=0.85)
                if not close:
                    continue
                version = (distro.version if distro is not None else None) or _version(name)
                for ep_name, target in config[group].items():
                    found.append(Misplaced(known[close[0]], ep_name, group, target, name, version))
        self._misplaced = found
        return found

    def shadowed(self, kind: str) -> dict[str, tuple[PluginInfo, ...]]:
        """The names of segkit's built-ins of ``kind`` that other distributions register
        too, with their (hidden) plugins: the built-in is used."""
        return {n: p.shadows for n, p in self.plugins(kind).items() if p.shadows}

    def copies(self) -> list[Copies]:
        """Distributions with segkit entry points installed more than once on the path
        (an editable install and a wheel in another site folder, two versions), where the
        copies differ in version or segkit entry points, or one is an editable install
        and another is not: only the first on the path is seen, silently otherwise. Read
        from metadata, nothing imported; cached. Identical copies (an editable install
        beside its source tree's ``.egg-info``) are not reported."""
        if self._copies is not None:
            return self._copies
        found: dict[str, list[Copy]] = {}  # normalised name -> copies in path order
        for folder in self.path if self.path is not None else sys.path:
            for meta in _metadata_folders(folder):
                stem = re.sub(r"\.(dist-info|egg-info|egg)$", "", meta.name)
                name = re.sub(r"[-_.]+", "_", stem.split("-", 1)[0]).lower()
                if not self.autoload and name != CORE_DISTRIBUTION:
                    continue
                copy = _read_copy(meta)
                if copy is not None:
                    found.setdefault(name, []).append(copy)
        result = []
        for name, copies in found.items():
            if not any(c.entry_points for c in copies) or len(copies) < 2:
                continue
            first, rest = copies[0], copies[1:]
            differ = [
                c
                for c in rest
                if (c.version, c.entry_points, bool(c.editable) or c.where.endswith("egg-info"))
                != (
                    first.version,
                    first.entry_points,
                    bool(first.editable) or first.where.endswith("egg-info"),
                )
            ]
            if differ:
                result.append(Copies(name, first, tuple(rest)))
        self._copies = result
        return result

    def clashes(self, kind: str) -> dict[str, tuple[PluginInfo, ...]]:
        """The names of ``kind`` that several distributions register, with every claimant."""
        return {n: p.claims for n, p in self.plugins(kind).items() if p.claims}

    def names(self, kind: str) -> list[str]:
        """Sorted plugin names of ``kind``."""
        return list(self.plugins(kind))

    def info(self, kind: str, name: str) -> PluginInfo:
        """The :class:`PluginInfo` for ``name``.

        Raises:
            PluginNotFoundError: no such plugin; the message suggests close names.
            DuplicatePluginError: several distributions register ``name``.
        """
        kind = self._check_kind(kind)
        plugins = self.plugins(kind)
        if name in plugins:
            if (clash := plugins[name].clash_error()) is not None:
                raise clash
            return plugins[name]
        for m in self.misplaced():
            if m.kind == kind and m.name == name:
                raise PluginNotFoundError(f"no {SINGULAR[kind]} named '{name}': {m}")
        close = difflib.get_close_matches(name, plugins, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(plugins) if len(plugins) <= 12 else f"{len(plugins)} installed"
        raise PluginNotFoundError(
            f"no {SINGULAR[kind]} named '{name}'.{hint} Available: {available or 'none'}. "
            f"Run `segkit list {kind}` to see them all."
        )

    def get(self, kind: str, name: str) -> Callable[..., Any]:
        """Import plugin ``name`` and return its factory (or class)."""
        return self.info(kind, name).load()

    def option_names(self, kind: str, name: str) -> list[str] | None:
        """The options (keyword arguments beyond its contract's) that plugin ``name``'s
        factory takes, read from its signature (the plugin is imported); None where it
        takes any (``**kwargs``) or has no signature. Private parameters (``_lenient``:
        a leading underscore) are segkit's own, never an option a user gives.

        Raises:
            PluginError: no such plugin, or it fails to load.
        """
        from segkit.contracts import CONTRACTS

        kind = self._check_kind(kind)
        factory = self.get(kind, name)
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):
            return None
        params = signature.parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        contract = CONTRACTS[kind]
        passed = {"self", "args", *contract.positional, *contract.keywords}
        return [p.name for p in params if p.name not in passed and not p.name.startswith("_")]

    def create(self, kind: str, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Import plugin ``name`` and call its factory with the given arguments.

        Raises:
            ConfigError: the factory does not accept these arguments.
        """
        kind = self._check_kind(kind)
        factory = self.get(kind, name)
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # some builtins have no signature: just call
            signature = None
        if signature is not None:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as e:
                from segkit.contracts import CONTRACTS
                from segkit.errors import ConfigError

                contract = CONTRACTS[kind]
                passed = {"self", "args", "kwargs", *contract.positional, *contract.keywords}
                options = [
                    p for p in signature.parameters if p not in passed and not p.startswith("_")
                ]
                unknown = [k for k in kwargs if k not in signature.parameters]
                close = [
                    m[0]
                    for k in unknown[:1]  # the one TypeError names
                    if (m := difflib.get_close_matches(k, options, n=1, cutoff=0.6))
                ]
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(
                    f"{SINGULAR[kind]} '{name}' does not accept these options: {e}{hint}. "
                    f"It accepts: {', '.join(options) or 'no options'}"
                ) from None
        return factory(*args, **kwargs)


_default: Registry | None = None


#: What :func:`register_plugin` registered: kind -> name -> plugin (kept by :func:`reset`).
_LOCAL: dict[str, dict[str, PluginInfo]] = {}


def default_registry() -> Registry:
    """The process-wide registry over ``sys.path``, with the plugins registered in this
    process (:func:`register_plugin`)."""
    global _default
    if _default is None:
        _default = Registry(local=_LOCAL)
    return _default


def register_plugin(kind: str, name: str, factory: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``factory`` as plugin ``name`` of ``kind`` in this process, as an entry
    point would (see :func:`segkit.register_plugin`). Returns ``factory``.

    Raises:
        PluginNotFoundError: an unknown kind.
        PluginLoadError: ``name`` is not a non-empty string, or ``factory`` is not
            callable or does not take its kind's contract (as for an entry point's).
        DuplicatePluginError: an installed distribution registers ``name``.
    """
    kind = default_registry()._check_kind(kind)
    what = f"register_plugin({kind!r}, {name!r})"
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise PluginLoadError(
            f"{what}: the name must be a non-empty string without surrounding spaces "
            "(what a user types: --model NAME, e.g. 'my_unet')"
        )
    if not callable(factory):
        raise PluginLoadError(
            f"{what}: expected a callable factory or class, got {type(factory).__name__}. "
            f"The {GROUPS[kind]} contract is {CONTRACTS[kind].call} (see segkit.contracts)"
        )
    problems = contract_problems(kind, factory)
    if problems:
        raise PluginLoadError(
            f"{what}: the factory {'; '.join(problems)}. The {GROUPS[kind]} contract is "
            f"{CONTRACTS[kind].call} (see segkit.contracts)"
        )
    installed = default_registry()._installed(kind).get(name)
    if installed is not None:
        raise DuplicatePluginError(
            f"{what}: the name is taken by the installed {installed.label} "
            f"({installed.target}); register yours under another name"
        )
    module = getattr(factory, "__module__", None) or "?"
    qualname = getattr(factory, "__qualname__", None) or type(factory).__name__
    info = PluginInfo(kind, name, f"{module}:{qualname}", IN_PROCESS, "", _loaded=factory)
    _LOCAL.setdefault(kind, {})[name] = info
    return factory


def unregister_plugin(kind: str, name: str) -> None:
    """Forget plugin ``name`` of ``kind`` registered by :func:`register_plugin`.

    Raises:
        PluginNotFoundError: no such plugin was registered in this process.
    """
    kind = default_registry()._check_kind(kind)
    if _LOCAL.get(kind, {}).pop(name, None) is None:
        registered = ", ".join(_LOCAL.get(kind, {})) or "none"
        raise PluginNotFoundError(
            f"unregister_plugin({kind!r}, {name!r}): no {SINGULAR[kind]} of that name was "
            f"registered in this process (registered: {registered})"
        )


def reset() -> None:
    """Forget discovered plugins (after installing or removing a distribution)."""
    global _default
    _default = None
    import importlib

    importlib.invalidate_caches()


def list_plugins(kind: str) -> list[str]:
    """Sorted names of the installed plugins of ``kind`` ("models", "losses", ...)."""
    return default_registry().names(kind)


def get(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` in ``kind``, imported on first use."""
    return default_registry().get(kind, name)


def create(kind: str, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Call the factory registered as ``name`` in ``kind``."""
    return default_registry().create(kind, name, *args, **kwargs)


#: The (kind, name) whose hidden namesakes this process has announced (:func:`say_shadowed`).
_said_shadowed: set[tuple[str, str]] = set()


def say_shadowed(kind: str, name: str, instead: str | None = None) -> None:
    """Print, once per process (rank 0 of a torchrun job), that the built-in ``name`` of
    ``kind`` is used and other distributions' plugins of that name are hidden; nothing
    when no other distribution registers it, or ``name`` is not installed. ``instead``:
    the line to print in place of that one (a checkpoint's run used another
    distribution's plugin of that name: :func:`segkit.inference.trained.plugin_change`),
    printed whether or not a namesake is installed."""
    info = default_registry().plugins(kind).get(name)
    note = instead or (info.shadow_note() if info is not None else None)
    if note is None or (kind, name) in _said_shadowed:
        return
    _said_shadowed.add((kind, name))
    if os.environ.get("RANK", "0") in ("", "0"):
        print(f"segkit: {note}", file=sys.stderr, flush=True)


def _metadata_folders(folder: str) -> list[Path]:
    """The distributions' metadata folders in one ``sys.path`` entry, as the
    ``entrypoints`` package finds them (an ``.egg`` entry is its own ``EGG-INFO``)."""
    path = Path(folder or ".")
    if folder.rstrip("/\\").endswith(".egg") and (path / "EGG-INFO").is_dir():
        return [path]
    if not path.is_dir():
        return []
    try:
        return sorted(p for p in path.iterdir() if p.name.endswith((".dist-info", ".egg-info")))
    except OSError:
        return []


def _read_copy(meta: Path) -> Copy | None:
    """The :class:`Copy` a metadata folder describes, or None where it is unreadable."""
    import configparser
    import json

    info = meta / "EGG-INFO" if meta.name.endswith(".egg") else meta
    version = ""
    for file in ("METADATA", "PKG-INFO"):
        try:
            text = (info / file).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        version = next(
            (line[8:].strip() for line in text.splitlines() if line.startswith("Version:")), ""
        )
        break
    else:
        stem = re.sub(r"\.(dist-info|egg-info|egg)$", "", meta.name)
        version = stem.split("-")[1] if "-" in stem else ""
    entry_points: list[tuple[str, str, str]] = []
    config = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    config.optionxform = str  # type: ignore[assignment,method-assign]  # names keep their case
    try:
        config.read(info / "entry_points.txt", encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None
    for group in config.sections():
        if group.lower().startswith("segkit"):
            entry_points += [(group, n, t.strip()) for n, t in config[group].items()]
    editable = ""
    try:
        url = json.loads((info / "direct_url.json").read_text(encoding="utf-8"))
        if url.get("dir_info", {}).get("editable"):
            editable = str(url.get("url", "")).removeprefix("file://")
    except (OSError, ValueError, AttributeError):
        pass
    return Copy(version, str(meta), editable, tuple(sorted(entry_points)))


def is_core(distribution: str) -> bool:
    """Whether ``distribution`` is segkit itself (as its metadata spells it)."""
    return distribution.replace("-", "_").lower() == CORE_DISTRIBUTION


def _raised_at(error: BaseException) -> str:
    """``"path/to/file.py, line 3, "``: the last frame of ``error``'s traceback outside
    Python's import machinery (the plugin's own code, where the import failed), or ``""``."""
    import traceback

    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if not f.filename.startswith("<")
        and "importlib" not in f.filename
        and not f.filename.endswith(("entrypoints.py", "registry.py"))
    ]
    return f"{frames[-1].filename}, line {frames[-1].lineno}, " if frames else ""


def _version(distribution: str) -> str:
    """The installed version, for entry points read from an egg-info that lacks it."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""
