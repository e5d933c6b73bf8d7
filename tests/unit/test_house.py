"""The house rules of docs/design.md, checked on the source: no import cycles (imports inside functions count: a
cycle hidden in a function is still a cycle), no function over 60 lines, no folder of more than 15 modules, every
folder saying what it holds, and each room importing only the rooms below it. Read with :mod:`ast` alone, so a
contributor breaking a rule hears it from the unit tests, without root or tools."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("puller", "runner", "shared")
LONGEST_FUNCTION = 60
MODULES_PER_FOLDER = 15

# What each room may not import (a prefix matches a module and everything under it). The tools share only
# shared/; in the runner, the CLI is on top, the verbs of a Docker user's day under it, the container's life under
# them, then the executors, then isolation, the network and the logs, which take values and know no record.
ABOVE_EXECUTOR = ("runner.cli", "runner.verbs", "runner.oci", "runner.container")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "shared": ("puller", "runner"),
    "puller": ("runner",),
    "runner": ("puller",),
    "runner.verbs": ("runner.cli", "runner.oci"),
    # runner-oci: beside the CLI, over the executor's pieces; a caller's bundle has no container record
    "runner.oci": ("runner.cli", "runner.verbs", "runner.container", "runner.net", "runner.logs"),
    "runner.container": ("runner.cli", "runner.verbs", "runner.oci"),
    "runner.executor": ABOVE_EXECUTOR,
    "runner.isolation": (*ABOVE_EXECUTOR, "runner.executor", "runner.net"),
    "runner.net": (*ABOVE_EXECUTOR, "runner.executor", "runner.isolation"),
    "runner.logs": (*ABOVE_EXECUTOR, "runner.executor", "runner.isolation", "runner.net"),
    "runner.spec": (*ABOVE_EXECUTOR, "runner.executor"),
    "runner.linux": (*ABOVE_EXECUTOR, "runner.executor", "runner.isolation", "runner.net"),
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def package(self) -> bool:
        return self.path.name == "__init__.py"


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = Module(".".join(parts), path)
    return found


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].path.read_text(), str(modules()[name].path))


def _targets(module: Module, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        here = module.name.split(".") if module.package else module.name.split(".")[:-1]
        here = here[:len(here) - (node.level - 1)]
        base = ".".join(here + ([base] if base else []))
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base


def imports(name: str, source: ast.Module | None = None) -> set[str]:
    """The project modules ``name`` imports, anywhere in it (a name imported from a package counts as the package's
    module when it is one)."""
    found = set()
    for node in ast.walk(source or tree(name)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(modules()[name], node):
                while target and target not in modules():
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
    return found


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles({name: sorted(imports(name)) for name in modules()}) == []


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = [f"{module.path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
            for module in modules().values() for node in ast.walk(tree(module.name))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION]
    assert long == []


def test_no_folder_holds_more_than_fifteen_modules() -> None:
    folders: dict[Path, int] = {}
    for module in modules().values():
        folders[module.path.parent] = folders.get(module.path.parent, 0) + 1
    assert {str(k.relative_to(ROOT)): n for k, n in folders.items() if n > MODULES_PER_FOLDER} == {}


def test_every_folder_says_what_it_holds() -> None:
    silent = [name for name, module in modules().items() if module.package and not ast.get_docstring(tree(name))]
    assert silent == []


def _room(name: str) -> str:
    return max((room for room in FORBIDDEN if name == room or name.startswith(room + ".")), key=len, default="")


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_each_room_imports_only_what_is_below_it(room: str) -> None:
    wrong = sorted(f"{name} -> {target}" for name in modules() if _room(name) == room for target in imports(name)
                   if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[room]))
    assert wrong == []


def test_the_checker_sees_cycles_and_imports_inside_functions() -> None:
    """The checks above would pass vacuously if the walker missed imports or cycles."""
    source = ast.parse("def late():\n    from runner.container import record\n    from . import linux\n")
    assert imports("runner.spec", source) == {"runner.container.record", "runner.linux"}
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _room("runner.isolation.rootfs") == "runner.isolation" and _room("runner.cli.main") == "runner"
