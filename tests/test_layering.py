"""The package's layering, read from the source with ``ast``: no import circle between modules,
and no import up the declared layers (the study service never imports the rig, the test
fixtures or the CLI). Imports inside functions count; those under ``if TYPE_CHECKING:`` do not.

The checker itself is tested first, on small packages written to ``tmp_path``.
"""

from __future__ import annotations

import ast
import importlib
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer's modules and lower layers'; the key is a
# module's first part under the package (``errors`` for vivit_hpo.errors, ``search`` for
# vivit_hpo.search.spec; ``__init__`` for the package's own __init__, its version).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "_io", "_output", "errors", "settings", "metrics", "infra"}),
    frozenset({"config"}),
    frozenset({"data"}),
    frozenset({"models"}),
    frozenset({"training"}),
    frozenset({"search"}),
    frozenset({"report"}),
    frozenset({"_live"}),  # rich's live view of a run, for the API's console=, bench and cli
    frozenset({"api"}),  # the public Python API: the service's functions, lazily re-exported
    frozenset({"testing"}),  # fixtures for tests and the rig: a private PostgreSQL, tiny specs
    frozenset({"bench"}),  # the benchmarks and the chaos driver
    frozenset({"cli", "__main__"}),
)

# Modules left at an old path when their code moved: each only re-exports its new module, so
# its one import of it may go up the layers (test_moved_modules_only_re_export holds them to it).
MOVED: dict[str, str] = {
    "vivit_hpo.search.chaos": "vivit_hpo.bench.chaos",
    "vivit_hpo.search.benchmark": "vivit_hpo.bench.search",
    "vivit_hpo.search.benchmark_curves": "vivit_hpo.bench.search_curves",
    "vivit_hpo.search.bench_connections": "vivit_hpo.bench.connections",
    "vivit_hpo.search.bench_coordinator": "vivit_hpo.bench.coordinator_overhead",
    "vivit_hpo.search.tiny": "vivit_hpo.testing.tiny",
    "vivit_hpo.bench.pgserver": "vivit_hpo.testing.pgserver",
    "vivit_hpo.cli._output": "vivit_hpo._output",
}

# -- the checker ---------------------------------------------------------------------------------


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, except in ``if TYPE_CHECKING:``."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    elif isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.orelse:
            yield from _imports(child)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _imports(child)


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}`` for every module of ``src/package``.

    ``from a.b import c`` imports module ``a.b.c`` when there is one, else ``a.b`` (its
    ``__init__``); a parent package's ``__init__``, run by Python on the way, is not counted
    (a package that re-exports its modules would be in a circle with each of them).
    """
    files = {_module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_pkg else name.split(".")[:-1]
                up = here[: len(here) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def library_imports(src: Path, package: str) -> dict[str, set[str]]:
    """``{module: the top-level names of the libraries outside the package it imports}`` for
    every module of ``src/package`` (``from rich.live import Live`` imports ``rich``)."""
    out: dict[str, set[str]] = {}
    for path in sorted((src / package).rglob("*.py")):
        names: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif not node.level and node.module:
                names.add(node.module.split(".")[0])
        out[_module_name(path, src)] = names - {package}
    return out


def reached(graph: Mapping[str, set[str]], module: str) -> set[str]:
    """``module`` and every module of the package it imports, directly or through others."""
    seen, todo = {module}, [module]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def layer_key(module: str) -> str:
    """The layer key of a module: its first part under the package, ``__init__`` for the
    package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(
    graph: Mapping[str, set[str]],
    layers: tuple[frozenset[str], ...],
    moved: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per import of a higher layer's module (a moved module's one import of its new
    home excepted), and per module whose layer is not declared."""
    rank = {key: i for i, keys in enumerate(layers) for key in keys}
    moved = moved or {}
    problems = []
    for module in sorted(graph):
        key = layer_key(module)
        if key not in rank:
            problems.append(f"{module}: layer {key!r} is not in LAYERS; declare where it sits")
            continue
        for target in sorted(graph[module]):
            up = rank.get(layer_key(target), len(layers))
            if up > rank[key] and moved.get(module) != target:
                problems.append(
                    f"{module} imports {target}: {layer_key(target)!r} is above {key!r}"
                )
    return problems


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One import circle per strongly connected group of modules, as ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle_in(graph, g) for g in groups]


def _circle_in(graph: Mapping[str, set[str]], group: set[str]) -> list[str]:
    """The shortest circle through the group's first module (breadth first, inside the group)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle in {group}")


# -- the checker on small packages ----------------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in {"__init__.py": "", **files}.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return import_graph(tmp_path, "pkg")


def test_a_circle_through_a_lazy_import_is_listed(tmp_path: Path) -> None:
    graph = _package(
        tmp_path,
        {
            "low/__init__.py": "",
            "low/a.py": "from pkg.low.b import x\n",
            "low/b.py": "x = 1\ndef f():\n    from pkg.low import c\n",
            "low/c.py": "from . import a\n",
        },
    )
    assert circles(graph) == [["pkg.low.a", "pkg.low.b", "pkg.low.c", "pkg.low.a"]]


def test_type_checking_imports_are_left_out(tmp_path: Path) -> None:
    graph = _package(
        tmp_path,
        {
            "a.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg import b
            """,
            "b.py": """
                import typing
                if typing.TYPE_CHECKING:
                    import pkg.a
                else:
                    import pkg.c
            """,
            "c.py": "",
        },
    )
    assert graph["pkg.a"] == set() and graph["pkg.b"] == {"pkg.c"}
    assert circles(graph) == []


def test_an_upward_import_and_an_undeclared_layer_are_named(tmp_path: Path) -> None:
    graph = _package(
        tmp_path,
        {
            "low.py": "def f():\n    from pkg.high import g\n",
            "high.py": "from pkg.low import f\ndef g(): ...\n",
            "old.py": "from pkg.high import *\n",
            "stray.py": "",
        },
    )
    layers = (frozenset({"__init__", "low", "old"}), frozenset({"high"}))
    assert upward_imports(graph, layers, {"pkg.old": "pkg.high"}) == [
        "pkg.low imports pkg.high: 'high' is above 'low'",
        "pkg.stray: layer 'stray' is not in LAYERS; declare where it sits",
    ]


def test_a_library_reached_through_another_module_is_found(tmp_path: Path) -> None:
    graph = _package(
        tmp_path,
        {
            "view.py": "from rich.live import Live\n",
            "service.py": "import os.path\ndef f():\n    from pkg import view\n",
        },
    )
    libraries = library_imports(tmp_path, "pkg")
    assert libraries["pkg.view"] == {"rich"} and libraries["pkg.service"] == {"os"}
    assert reached(graph, "pkg.service") == {"pkg.service", "pkg.view"}


# -- vivit_hpo -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT, "vivit_hpo")


def test_no_import_goes_up_the_layers(graph: dict[str, set[str]]) -> None:
    problems = upward_imports(graph, LAYERS, MOVED)
    assert not problems, "\n".join(problems)


def test_no_import_circle(graph: dict[str, set[str]]) -> None:
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_modules_only_re_export(old: str, graph: dict[str, set[str]]) -> None:
    """A module left at an old path imports its new home and nothing else, and gives the same
    objects under the same names."""
    new = MOVED[old]
    assert graph[old] == {new}
    old_mod, new_mod = importlib.import_module(old), importlib.import_module(new)
    assert old_mod.__all__ == new_mod.__all__
    for name in new_mod.__all__:
        assert getattr(old_mod, name) is getattr(new_mod, name), name


# The study service reports through callbacks and return values; drawing them (rich's live
# table, typer's commands) is for the layers above it.
UI_LIBRARIES = frozenset({"rich", "typer"})


def test_the_study_service_imports_no_ui_library(graph: dict[str, set[str]]) -> None:
    libraries = library_imports(ROOT, "vivit_hpo")
    problems = [
        f"{module} imports {', '.join(sorted(ui))}"
        + ("" if other == module else f" through {other}")
        for module in sorted(graph)
        if layer_key(module) == "search" and module not in MOVED
        for other in sorted(reached(graph, module))
        if (ui := libraries[other] & UI_LIBRARIES)
    ]
    assert not problems, "\n".join(problems)
