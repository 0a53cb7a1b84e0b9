"""The package's shape: every module says what it does in its docstring, and modules import each other without cycles,
at the top (not hidden inside functions), so the import graph read from the source is the real one."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ovserve"
# __main__ sets GRPC_VERBOSITY before anything imports grpc, so it imports the CLI inside its function on purpose.
LATE_IMPORTS_ALLOWED = {"__main__"}


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in PACKAGE.glob("*.py")}


def _imported(node: ast.ImportFrom, modules: set[str]) -> list[str]:
    """The package's modules a relative import names (`from . import a, b` or `from .a import x`); a name that is no
    module (`from . import __version__`) comes from the package's __init__."""
    if node.level != 1:
        return []
    if node.module is None:
        return [alias.name if alias.name in modules else "__init__" for alias in node.names]
    return [node.module.split(".")[0]]


def _type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            found.update(_imported(node, modules))
    return found - {"_proto"}


def _late_imports(tree: ast.Module) -> list[str]:
    """Relative imports anywhere but the module's top level or an `if TYPE_CHECKING:` block."""
    top = {id(n) for n in tree.body}
    for block in tree.body:
        if _type_checking(block):
            top.update(id(n) for n in ast.walk(block))
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level and id(node) not in top
    ]


def test_every_module_has_a_docstring() -> None:
    missing = [name for name, tree in _modules().items() if not ast.get_docstring(tree)]
    assert missing == []


def test_no_imports_hidden_inside_functions() -> None:
    late = {name: found for name, tree in _modules().items() if (found := _late_imports(tree))}
    assert set(late) <= LATE_IMPORTS_ALLOWED, late


def test_the_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph = {name: _top_level_imports(tree, set(modules)) for name, tree in modules.items()}
    assert all(target in graph for targets in graph.values() for target in targets)  # the reader sees every module
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle
