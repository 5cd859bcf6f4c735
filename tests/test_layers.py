"""The package's import graph: no cycle, and no arrow from a lower layer up into a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import gptactions

PACKAGE = Path(gptactions.__file__).parent
# Each layer may import those below it, never those above it; `config` imports nothing of ours.
RANKS = {
    "app": 0,
    "cli": 0,
    "serving": 0,
    "workers": 0,
    "graceful": 0,
    "api": 1,
    "tracing": 1,
    "runtime": 2,
    "services": 3,
    "metrics": 3,
    "llm": 4,
    "store": 4,
    "config": 5,
}


def _modules() -> dict[str, set[str]]:
    """Every module of the package, with the package's modules it imports."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            imported.update(t for t in targets if t in names and t != name)
        graph[name] = imported
    return graph


def _layer(module: str) -> str:
    top = module.split(".")[1] if "." in module else ""
    return (
        "cli"
        if top in ("cli_actions", "cli_database", "cli_keys", "cli_types", "cli_users")
        else top
    )


def test_the_import_graph_has_no_cycle() -> None:
    graph = _modules()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path, module]))
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_layer_imports_one_above_it() -> None:
    upward = [
        f"{module} -> {imported}"
        for module, imports in _modules().items()
        for imported in imports
        if _layer(module) in RANKS
        and _layer(imported) in RANKS
        and RANKS[_layer(imported)] < RANKS[_layer(module)]
    ]
    assert upward == []
