"""The package's import graph, read from the source with ``ast`` (imports inside functions
included): no circles, every arrow points down the floors of the flow, and no module imports
a command. Old flat import paths still work, with a DeprecationWarning naming the new place.

Floors, bottom to top (docs/ARCHITECTURE.md): the ground (settings, errors, files, processes)
-> data -> models -> eval -> train / tracking -> use -> the API in ``symclr_ft/__init__.py``.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "symclr_ft"

FLOORS = {
    "symclr_ft.config": 0, "symclr_ft.errors": 0, "symclr_ft.io": 0, "symclr_ft.distributed": 0,
    "symclr_ft._moved": 0,
    "symclr_ft.data": 1,
    "symclr_ft.models": 2,
    "symclr_ft.eval": 3,
    "symclr_ft.train": 4, "symclr_ft.tracking": 4,
    "symclr_ft.use": 5,
    "symclr_ft": 6,  # the package itself: the public API
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


MODULES = module_names()


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: the module run as a script, not imported."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def _nodes(tree: ast.AST):
    """Every node, imports inside functions too, but not under a ``__main__`` guard."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in ast.iter_child_nodes(node) if not _is_main_guard(c))


def _known(name: str) -> str | None:
    """The package module a dotted name lives in (``symclr_ft.use.index.load_index`` ->
    ``symclr_ft.use.index``), or None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports: import statements, ``from`` imports (relative too,
    a name that is a submodule counts as that module) and ``importlib.import_module("...")``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _nodes(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            targets = [str(node.args[0].value)]
        found |= {m for m in map(_known, targets) if m and m != name}
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def floor(name: str) -> int:
    for prefix in sorted(FLOORS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return FLOORS[prefix]
    raise AssertionError(f"{name}: on no floor; add it to FLOORS in tests/test_layout.py")


def command_modules() -> set[str]:
    """Modules whose ``main`` is a console script of setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return {line.split("=", 1)[1].strip().split(":")[0] for line in lines if "=" in line}


def test_every_module_is_on_a_floor():
    assert [floor(name) for name in MODULES]


def test_arrows_point_down_the_floors():
    upward = sorted(f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
                    for a, targets in GRAPH.items() for b in targets if floor(b) > floor(a))
    assert not upward, "\n".join(upward)


def circles(graph: dict[str, set[str]]) -> list[str]:
    """Depth-first search; a node met again while still open closes a circle: its path."""
    state: dict[str, str] = {}
    found = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path
                             else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    return found


def test_no_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    found = circles(GRAPH)
    assert not found, "\n".join(found)


def test_no_module_imports_a_command():
    commands = command_modules()
    assert {"symclr_ft.use.predict", "symclr_ft.use.spot.spotting", "symclr_ft.train"} <= commands
    assert commands <= set(MODULES), "setup.cfg names a module that does not exist"
    offenders = sorted(f"{a} imports the command module {b}"
                       for a, targets in GRAPH.items() for b in targets
                       if b in commands and a != "symclr_ft.__main__")
    assert not offenders, "\n".join(offenders)


def test_the_graph_reader_sees_imports_inside_functions():
    """The reader itself: a function-level import and a ``from package import module`` count,
    the ``__main__`` guard does not."""
    assert "symclr_ft.eval.plots" in GRAPH["symclr_ft.train"]  # imported inside a function
    assert "symclr_ft.data.coco" in GRAPH["symclr_ft.data.crops"]  # from symclr_ft.data import coco
    assert "symclr_ft.data.shardset" in GRAPH["symclr_ft.data"]  # importlib.import_module("...")
    assert "symclr_ft.use.predict" not in GRAPH["symclr_ft.use.embedder"]


def test_the_api_comes_from_library_modules():
    """``symclr_ft.__getattr__`` imports the public names from the modules its map names
    (strings, so not in the graph above): modules of the package, none of them a command."""
    import symclr_ft

    homes = set(symclr_ft._API.values())
    assert homes <= set(MODULES) and not homes & command_modules()
    assert set(symclr_ft.__all__) == {"__version__", *symclr_ft._API}
    for name in symclr_ft._API:
        assert getattr(symclr_ft, name).__module__ == symclr_ft._API[name]


# --------------------------------------------------------------------------- old import paths


@pytest.mark.parametrize("statement, new", [
    ("import symclr_ft.predict", "symclr_ft.use.predict"),
    ("from symclr_ft.model import build_model", "symclr_ft.models.backbones"),
])
def test_old_import_paths_work_with_a_deprecation_warning(statement, new, monkeypatch):
    old = statement.split()[1]
    monkeypatch.delitem(sys.modules, old, raising=False)  # imported before: import it afresh
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace: dict = {}
        exec(statement, namespace)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
    assert sys.modules[old] is importlib.import_module(new)


def test_every_old_name_points_at_a_module():
    from symclr_ft._moved import MOVED

    missing = [f"symclr_ft.{old} -> symclr_ft.{new}" for old, new in MOVED.items()
               if importlib.util.find_spec(f"symclr_ft.{new}") is None]
    assert not missing, missing
