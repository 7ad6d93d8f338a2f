"""No import circles inside animate_cli: imports run one way, from the command line down.

Every import statement counts, at module level and inside functions alike: a function-level import
still runs the other module when called, and both circles this test was written against (the CLI
and the command modules importing each other, the landmark base importing its backends) went
through function-level imports. Imports under ``if TYPE_CHECKING:`` never run and are left out.
Strings handed to ``importlib.import_module`` (the landmark registry's name-to-module map) are not
imports the code reads at a glance, and are not followed either.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module_names(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every .py file under root/package."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements anywhere in the tree, except inside ``if TYPE_CHECKING:`` blocks."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (``from pkg import sub`` counts as
    importing ``pkg.sub`` when that is a module, else ``pkg``)."""
    modules = _module_names(root, package)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            else:
                if node.level:
                    base = ".".join(here.split(".")[:len(here.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base)
                           for alias in node.names]
            graph[name].update(t for t in targets if t and t != name)
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_no_import_circle_inside_animate_cli():
    circles = import_circles(import_graph(REPO, "animate_cli"))
    assert circles == [], "modules that import each other (directly or around a loop): " + "; ".join(
        " <-> ".join(circle) for circle in circles)


def test_the_graph_sees_relative_function_level_and_package_imports():
    """The walker finds the edges the circle test depends on (else it would pass on an empty graph)."""
    graph = import_graph(REPO, "animate_cli")
    assert "animate_cli.commands.eval" in graph["animate_cli.cli"]              # from .commands.eval import
    assert "animate_cli.landmarks.base" in graph["animate_cli.landmarks.dlib_backend"]   # from .base import
    assert "animate_cli.eval.crop" in graph["animate_cli.commands.eval"]        # inside a function
    assert "animate_cli.commands.common" in graph["animate_cli.commands.tools"]


def test_a_planted_circle_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (package / "e.py").write_text("from . import d\n")
    assert import_circles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_typer_and_rich_only_at_the_edge():
    """The library never imports Typer or Rich: they belong to cli.py and animate_cli/commands/."""
    graph_modules = _module_names(REPO, "animate_cli")
    offenders = []
    for name, (path, _) in graph_modules.items():
        if name == "animate_cli.cli" or name.startswith("animate_cli.commands"):
            continue
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in ("typer", "rich")]
    assert offenders == []
