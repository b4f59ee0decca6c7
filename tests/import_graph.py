"""The import graph of the streamkd package, and its cycles.

Every ``import streamkd.x`` / ``from streamkd.x import y`` counts, also one inside a function
(a deferred import still ties the two modules together). ``python tests/import_graph.py``
prints each module's layer (0: imports no other streamkd module) and any cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "streamkd"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> Dict[str, Set[str]]:
    """Module -> the streamkd modules it imports (packages' ``__init__`` excluded as targets)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: Dict[str, Set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from streamkd.a import b`: b may be a module of package a, or a name in a.
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            for target in targets:
                if target in files and target != name and files[target].name != "__init__.py":
                    graph[name].add(target)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layers(graph: Dict[str, Set[str]]) -> Dict[str, int]:
    """Longest import chain below each module (an acyclic graph only)."""
    depth: Dict[str, int] = {}

    def layer(v: str) -> int:
        if v not in depth:
            depth[v] = 1 + max((layer(w) for w in graph[v]), default=-1)
        return depth[v]

    for v in graph:
        layer(v)
    return depth


if __name__ == "__main__":
    graph = import_graph()
    found = cycles(graph)
    for component in found:
        print("cycle:", " <-> ".join(component))
    if not found:
        for name, depth in sorted(layers(graph).items(), key=lambda item: (item[1], item[0])):
            print(f"{depth:2d}  {name}")
    sys.exit(1 if found else 0)
