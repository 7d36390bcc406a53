"""No import cycles in segkit/ and plugins/, counting every import statement.

The graph is read with :mod:`ast`, not by importing anything, so it sees what an import
at run time would miss: imports inside functions (a cycle hidden there still ties two
modules together, and breaks as soon as someone moves the import to the top), under
``if TYPE_CHECKING:`` (a dependency a reader and a type checker follow) and in ``try``
blocks. An edge goes from the module holding the statement to the module it names:

* ``import a.b.c`` -> ``a.b.c``;
* ``from a.b import c`` -> ``a.b.c`` when that is a module, else ``a.b`` (``c`` is a name
  defined there);
* relative imports are resolved against the importing module's package.

Parent packages run on import (``import a.b`` runs ``a/__init__.py``) but are not edges:
a package's ``__init__`` that re-exports its modules would otherwise be in a cycle with
each of them. A module's own package ``__init__`` should therefore import its modules, not
the other way round.

Only modules of segkit/ and plugins/ are nodes; the standard library and third-party
packages are leaves and cannot close a cycle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Source roots: a folder whose packages are importable by their own names.
SOURCE_ROOTS = (REPO, REPO / "plugins")
#: The packages whose modules are the graph's nodes.
PACKAGES = ("segkit", *sorted(p.name for p in (REPO / "plugins").glob("segkit_*") if p.is_dir()))

#: Cycles allowed, each as the set of modules its strongly connected component holds.
#: None is: a new cycle fails the test (cut it: move what both sides need down a layer).
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def where(self, modules: dict[str, Path]) -> str:
        path = modules[self.source]
        return f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{self.line}"


def find_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of :data:`PACKAGES`."""
    modules: dict[str, Path] = {}
    for root in SOURCE_ROOTS:
        for package in PACKAGES:
            folder = root / package
            if not (folder / "__init__.py").is_file():
                continue
            for path in sorted(folder.rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


def _deepest_module(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is one of ``modules``; ``import a.b.c`` where
    ``c`` is a class still depends on ``a.b``."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """Every edge out of module ``name`` (file ``path``), inside functions included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: dict[tuple[str, int], Edge] = {}  # one per target and line
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else base)
        else:
            continue
        for target in targets:
            found = _deepest_module(target, modules)
            if found is not None and found != name:
                edges[found, node.lineno] = Edge(name, found, node.lineno)
    return sorted(edges.values(), key=lambda e: (e.line, e.target))


def import_graph() -> tuple[dict[str, Path], dict[str, list[Edge]]]:
    """The modules and, per module, its edges (one per statement and target)."""
    modules = find_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    return modules, graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """The components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted({e.target for e in graph[start]})))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted({e.target for e in graph[child]}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def shortest_cycle(component: list[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """A shortest cycle through the component's first module (breadth first)."""
    members = set(component)
    start = component[0]
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target not in members:
                    continue
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came[path[0].source])
                    return path
                if edge.target not in came:
                    came[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"{component} is not a cycle")


def describe(component: list[str], graph: dict[str, list[Edge]], modules: dict[str, Path]) -> str:
    """A component: a shortest cycle in it, and every import inside it with its line."""
    cycle = shortest_cycle(component, graph)
    lines = [
        "cycle: " + " -> ".join([cycle[0].source, *(e.target for e in cycle)]),
        f"  its component ({len(component)} modules): {', '.join(component)}",
    ]
    members = set(component)
    for name in component:
        for edge in graph[name]:
            if edge.target in members:
                lines.append(f"  {edge.where(modules)}: {edge.source} -> {edge.target}")
    return "\n".join(lines)


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The reader itself, on a package written for it."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import x\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.sub import b\n"
        "def f():\n    from . import c\n    return c\n"
        "x = 1\n"
    )
    (package / "c.py").write_text("import pkg.sub.b.thing\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from ..a import x\nfrom .. import a\n")
    modules = {
        "pkg": package / "__init__.py",
        "pkg.a": package / "a.py",
        "pkg.c": package / "c.py",
        "pkg.sub": package / "sub" / "__init__.py",
        "pkg.sub.b": package / "sub" / "b.py",
    }
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    targets = {name: sorted({e.target for e in edges}) for name, edges in graph.items()}
    assert targets == {
        "pkg": ["pkg.a"],
        "pkg.a": ["pkg.c", "pkg.sub.b"],  # under TYPE_CHECKING and inside a function
        "pkg.c": ["pkg.sub.b"],  # `import a.b.c.name`: the deepest module
        "pkg.sub": [],
        "pkg.sub.b": ["pkg.a"],  # `from ..a import x` and `from .. import a`
    }
    assert strongly_connected(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    text = describe(["pkg.a", "pkg.c", "pkg.sub.b"], graph, modules)
    assert text.splitlines()[0] == "cycle: pkg.a -> pkg.sub.b -> pkg.a"


def test_no_import_cycles():
    modules, graph = import_graph()
    assert "segkit.recipes" in modules and "segkit_dali._loader" in modules  # it found them
    components = strongly_connected(graph)
    unknown = [c for c in components if not any(set(c) <= known for known in KNOWN_CYCLES)]
    stale = [k for k in KNOWN_CYCLES if not any(set(c) <= k for c in components)]
    report = [describe(c, graph, modules) for c in unknown]
    report += [
        f"stale entry in KNOWN_CYCLES, no cycle is left within it (delete it): {sorted(k)}"
        for k in stale
    ]
    assert not report, "import cycles (counting imports inside functions):\n" + "\n".join(report)


if __name__ == "__main__":  # python tests/test_import_graph.py: every cycle, known or not
    found_modules, found_graph = import_graph()
    for found in strongly_connected(found_graph):
        print(describe(found, found_graph, found_modules), end="\n\n")


def test_no_test_file_imports_another() -> None:
    """Shared helpers live in conftest.py, helpers.py, dali_helpers.py or faultkit.py: a
    test file importing another would run (and collect) the other's module twice."""
    found = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [
                f"{path.relative_to(REPO)}:{node.lineno}: {n}"
                for n in names
                if n.startswith("test_")
            ]
    assert not found, "test files importing test files:\n" + "\n".join(found)
