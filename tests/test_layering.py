"""The package's import graph: no circles, and no library module imports the command line.

Imports are read from the source (``ast``), function-level ones included, since a lazy import
still ties two modules together; imports under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "mtbioner"


def _module_name(path: Path) -> str:
    parts = ["mtbioner", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str]) -> set[str]:
    """mtbioner modules that ``path`` imports (a package ``__init__`` only when nothing deeper is named)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "mtbioner")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] == "mtbioner":
                targets = {f"{base}.{alias.name}" for alias in node.names} & modules
                found.update(targets or {base})
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    # every module imports its parent packages implicitly; those edges say nothing about layering
    return {_module_name(f): {m for m in _imports(f, modules) if m != "mtbioner"} for f in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_finder_sees_a_circle_and_lazy_imports() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "mtbioner.onnx_backend" in graph["mtbioner.loading"]  # a function-level import is an edge
    assert "mtbioner.cli.train" in graph["mtbioner.cli"]


def test_the_package_has_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_no_library_module_imports_the_command_line() -> None:
    offenders = {
        module: sorted(m for m in targets if m == "mtbioner.cli" or m.startswith("mtbioner.cli."))
        for module, targets in import_graph().items()
        if not module.startswith("mtbioner.cli") and module != "mtbioner.__main__"
    }
    assert {m: t for m, t in offenders.items() if t} == {}
