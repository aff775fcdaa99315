"""The sparsity core's import graph has no cycle, counting the modules loaded on first use by name
(``import_or_none("sparse_lab....")``) as imports too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "sparse_lab" / "sparsity"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports: import statements (``from pkg import sub``
    counts as ``pkg.sub``) and string constants that name a module (loaded on first use)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return (found & modules) - {_module_name(path)}


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    # A package's __init__ importing its own submodules is not a cycle with them: keep only module files.
    graph = {_module_name(p): _imports(p, modules) for p in paths if p.name != "__init__.py"}
    return {m: {d for d in deps if d in graph} for m, deps in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_walk_kernel_and_its_numba_module_do_not_import_each_other() -> None:
    graph = _graph()
    assert "sparse_lab.sparsity._walk_numba" in graph["sparse_lab.sparsity.walk_kernel"]  # loaded on first use
    assert "sparse_lab.sparsity.walk_kernel" not in graph["sparse_lab.sparsity._walk_numba"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("first", ["sparse_lab.sparsity._walk_numba", "sparse_lab.sparsity.walk_kernel"])
def test_each_walk_module_imports_fresh(first: str) -> None:
    pytest.importorskip("numba")
    code = f"import importlib; importlib.import_module({first!r}); import sparse_lab.sparsity._walk_numba as k; print(k.BLOCK)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "64"


def test_what_hydra_answers_itself_imports_neither_torch_nor_lightning(tmp_path: Path) -> None:
    # --cfg job, --help and a bad override come back before a run starts: about 0.3 s, not the
    # 5 s of importing Lightning (torchmetrics, torchvision, torch._dynamo).
    code = (
        "import sys; from sparse_lab.app import run_cli\n"
        "try:\n    run_cli()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'numba') if m in sys.modules))"
    )
    for args in (["data=synthetic", "--cfg", "job"], ["method=no_such_method"]):
        result = subprocess.run([sys.executable, "-c", code, *args, f"hydra.run.dir={tmp_path}"],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.stdout.strip().splitlines()[-1] == "[]", (args, result.stdout, result.stderr)
    assert "no_such_method" in result.stderr
