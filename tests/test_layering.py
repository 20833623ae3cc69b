"""The package's layering: ``lint-imports`` keeps the contract in pyproject.toml, and an independent
scan of opcd's source (``ast``; module-level and function-local imports) finds no import cycle, either
between opcd's top-level modules/subpackages or between any two of its modules."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "opcd"


def module_name(path: Path, package_dir: Path) -> str:
    """``opcd/sync/broadcast.py`` -> ``opcd.sync.broadcast``; a package's ``__init__`` is the package."""
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports, anywhere in its source.

    Every ``import`` statement counts wherever it is (module level, inside a function, under
    ``TYPE_CHECKING``), as import-linter counts them. ``from a.b import c`` points at ``a.b.c`` when
    that is a module, else at ``a.b``; relative imports are resolved. Importing ``a.b.c`` is not
    taken to import the package ``a.b`` too (Python runs its ``__init__``, but counting that would make
    every package that re-exports a submodule cyclic), which is also import-linter's view.
    """
    root = package_dir.name
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here[:len(here) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for t in targets:
                if t == root or t.startswith(root + "."):
                    # `import opcd.a.b.X` where X is a name, not a module: the nearest module above it
                    while t not in files and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t != mod:
                        graph[mod].add(t)
    return graph


def collapse(graph: dict[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The graph between modules cut to their first ``depth`` dotted parts (``2``: opcd's top level)."""
    def cut(m: str) -> str:
        return ".".join(m.split(".")[:depth])

    out: dict[str, set[str]] = {}
    for a, bs in graph.items():
        out.setdefault(cut(a), set()).update(cut(b) for b in bs if cut(b) != cut(a))
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of a directed graph, or ``None`` (iterative DFS, sorted order)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def explain(cycle: list[str], graph: dict[str, set[str]], depth: int) -> str:
    """The module-level imports that make each step of a (collapsed) cycle."""
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        via = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                     if ".".join(m.split(".")[:depth]) == a and ".".join(t.split(".")[:depth]) == b)
        lines.append(f"  {a} -> {b}: " + ", ".join(via))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the checker itself
def test_find_cycle_returns_the_cycle_or_none():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None  # a diamond is no cycle


def test_scan_sees_function_local_and_relative_imports(tmp_path):
    """A cycle closed only by an import inside a function (or a relative one) is still found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from pkg.sub import high\n    return high\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "high.py").write_text("from ..low import f\nimport pkg.sub.other\n")
    (pkg / "sub" / "other.py").write_text("X = 1\n")
    graph = import_graph(pkg)
    assert graph["pkg.low"] == {"pkg.sub.high"} and graph["pkg.sub.high"] == {"pkg.low", "pkg.sub.other"}
    assert find_cycle(collapse(graph, 2)) == ["pkg.low", "pkg.sub", "pkg.low"]
    assert find_cycle(graph) == ["pkg.low", "pkg.sub.high", "pkg.low"]


# --------------------------------------------------------------------------- opcd
def test_no_cycle_between_opcd_top_level_modules():
    graph = import_graph(PACKAGE)
    assert "opcd.engine" in graph and "opcd.loop" in graph  # the scan found the package
    cycle = find_cycle(collapse(graph, 2))
    assert cycle is None, "import cycle between opcd's top-level modules:\n" + explain(cycle, graph, 2)


def test_no_cycle_between_any_two_opcd_modules():
    graph = import_graph(PACKAGE)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between opcd modules:\n" + explain(cycle, graph, 99)


def test_engine_layer_imports_nothing_from_opcd():
    """opcd.engine is the bottom of the actor stack: everything vLLM goes through it, it needs no one
    but two leaves that import nothing from opcd (the dtype choice, the known-harmless vLLM messages)."""
    graph = import_graph(PACKAGE)
    assert graph["opcd.engine"] <= {"opcd.hardware", "opcd.quiet"}
    assert graph["opcd.hardware"] == graph["opcd.quiet"] == set()


def test_import_linter_contracts_are_kept():
    """The layers and acyclic-siblings contracts of pyproject.toml ([tool.importlinter])."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (it is in the dev extra: pip install -e '.[dev]')")
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = out.stdout[out.stdout.find("Contracts"):]  # past the banner
    assert out.returncode == 0, report[-6000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout
