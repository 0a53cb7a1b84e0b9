"""The package's shape: every module says what it does in its docstring, and the package's modules import each other
without cycles, at the top (not hidden inside functions or behind conditions), so the import graph read from the source
is the real one."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ovserve"
# __main__ sets GRPC_VERBOSITY before anything imports grpc, so it imports the CLI inside its function on purpose.
LATE_IMPORTS_ALLOWED = {"__main__"}


def _sources() -> dict[str, ast.Module]:
    """Every module of the package and its subpackages but the generated protobuf code, by path inside the package."""
    return {
        str(path.relative_to(PACKAGE).with_suffix("")): ast.parse(path.read_text(encoding="utf-8"), str(path))
        for path in PACKAGE.rglob("*.py")
        if "_proto" not in path.parts
    }


def _top_modules() -> dict[str, ast.Module]:
    return {name: tree for name, tree in _sources().items() if "/" not in name}


def _own(node: ast.stmt) -> bool:
    """Whether an import statement names the package itself (relatively or as `ovserve`)."""
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "ovserve"
    return isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "ovserve" for alias in node.names)


def _imported(node: ast.stmt, modules: set[str]) -> list[str]:
    """The top-level modules an import at the package's top level names: `from . import a, b`, `from .a import x`,
    `import ovserve.a`, `from ovserve import a`, `from ovserve.a import x`; a name that is no module or subpackage
    (`from . import __version__`) comes from the package's __init__; subpackages are left out."""
    if isinstance(node, ast.Import):
        paths = [alias.name.split(".")[1:] for alias in node.names if alias.name.split(".")[0] == "ovserve"]
    elif isinstance(node, ast.ImportFrom) and _own(node):
        parts = (node.module or "").split(".")
        inner = parts if node.level else parts[1:]  # relative: below the package; absolute: after "ovserve"
        paths = [[p for p in inner if p]] if any(inner) else [[alias.name] for alias in node.names]
    else:
        return []
    named = [path[0] for path in paths if path]
    return [name if name in modules else "__init__" for name in named if not (PACKAGE / name).is_dir()]


def _type_checking(node: ast.stmt) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`) exactly: its body runs only under the type checker."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _late_imports(tree: ast.Module) -> list[str]:
    """Imports of the package anywhere but the module's top level or the body of an `if TYPE_CHECKING:` block."""
    allowed = {id(n) for n in tree.body}
    for block in tree.body:
        if isinstance(block, ast.If) and _type_checking(block):
            allowed.update(id(n) for statement in block.body for n in ast.walk(statement))
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.stmt) and _own(node) and id(node) not in allowed
    ]


def test_every_module_has_a_docstring() -> None:
    missing = [name for name, tree in _sources().items() if not ast.get_docstring(tree)]
    assert missing == []


def test_no_imports_hidden_inside_functions() -> None:
    late = {name: found for name, tree in _sources().items() if (found := _late_imports(tree))}
    assert set(late) <= LATE_IMPORTS_ALLOWED, late


def test_the_import_graph_has_no_cycle() -> None:
    modules = _top_modules()
    graph = {name: {m for node in tree.body for m in _imported(node, set(modules))} for name, tree in modules.items()}
    assert graph["server"] >= {"manager", "dataplane"}  # the reader sees the imports it must see
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_the_reader_sees_every_form_of_import() -> None:
    forms = ast.parse(
        "from . import a, __version__, _proto\nfrom .b import x\nimport ovserve.c\nfrom ovserve import d\n"
        "from ovserve.e.f import y\nimport numpy\nfrom .._proto import z\n"
    )
    found = [m for node in forms.body for m in _imported(node, {"a", "b", "c", "d", "e"})]
    assert found == ["a", "__init__", "b", "c", "d", "e"]
    hidden = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nelse:\n    from .b import B\n"
        "if not TYPE_CHECKING:\n    from .c import C\ndef f():\n    import ovserve.d\n"
    )
    assert _late_imports(hidden) == ["from .b import B", "from .c import C", "import ovserve.d"]
