"""The "may import" table of docs/ARCHITECTURE.md, enforced by walking every module's imports (ast).

Every import statement counts, lazy ones inside functions included: a lazy import is still a
dependency. The table is the architecture; a change to it is a change to docs/ARCHITECTURE.md. A
planted violation must fail (the checker is tested on a source string too).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Project packages, and what each may import from the project (by top-level package, or by
# sub-package of harness). Third-party modules are listed separately.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "t7file": frozenset(),
    "contract": frozenset({"t7file"}),
    "fileio": frozenset({"contract", "t7file"}),
    "zoo": frozenset({"fileio"}),
    "reference": frozenset({"contract", "t7file"}),
    "torch_impl": frozenset({"contract", "t7file"}),
    "tf_impl": frozenset({"contract", "t7file"}),
    "harness.core": frozenset({"contract", "t7file", "fileio"}),
    "harness.drift": frozenset({"harness.core", "contract", "t7file", "fileio"}),
    "harness.bench": frozenset({"harness.core", "contract", "t7file", "fileio", "fixtures"}),
    "harness.verify": frozenset({"harness.core", "harness.drift", "contract", "t7file", "fileio", "zoo"}),
    "ort_backend": frozenset({"contract", "t7file", "torch_impl"}),
    "opencv_backend": frozenset({"contract", "t7file"}),
    "fixtures": frozenset({"t7file"}),
}
# Third-party modules each package may import (the standard library is always allowed).
THIRD_PARTY: dict[str, frozenset[str]] = {
    "t7file": frozenset({"numpy", "torchfile"}),
    "contract": frozenset({"numpy"}),
    "fileio": frozenset({"numpy", "PIL"}),
    "zoo": frozenset(),
    "reference": frozenset({"numpy"}),
    "torch_impl": frozenset({"numpy", "torch", "onnx", "onnxruntime"}),
    "tf_impl": frozenset({"numpy", "tensorflow", "ai_edge_litert"}),
    # environment.py describes a framework only once a backend has imported it (versions, threads).
    "harness.core": frozenset({"numpy", "threadpoolctl", "psutil", "torch", "tensorflow", "onnxruntime"}),
    "harness.drift": frozenset({"numpy", "PIL", "jsonschema"}),
    "harness.bench": frozenset({"numpy", "threadpoolctl", "psutil", "torch", "tensorflow"}),
    "harness.verify": frozenset({"numpy", "jsonschema"}),
    "ort_backend": frozenset({"numpy", "onnx", "onnxruntime", "torch"}),
    "opencv_backend": frozenset({"numpy", "cv2"}),
    "fixtures": frozenset({"numpy"}),
}
PROJECT = frozenset({"t7file", "contract", "fileio", "zoo", "reference", "torch_impl", "tf_impl", "harness",
                     "ort_backend", "opencv_backend", "fixtures", "texture_nets", "parity_tests", "scripts"})


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to ("harness.drift.analysis" -> "harness.drift")."""
    parts = module.split(".")
    if parts[0] == "harness" and len(parts) > 1 and f"harness.{parts[1]}" in MAY_IMPORT:
        return f"harness.{parts[1]}"
    return parts[0] if parts[0] in PROJECT else None


def imports_of(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source`` (relative imports resolved against ``module``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base))
    return found


def violations(source: str, module: str) -> list[str]:
    """The imports of ``module`` (its source given) that the table forbids."""
    layer = layer_of(module)
    if layer not in MAY_IMPORT:
        return []
    problems = []
    for line, target in imports_of(source, module):
        top = target.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        target_layer = layer_of(target)
        if target_layer is None:
            if top not in THIRD_PARTY[layer]:
                problems.append(f"{module}:{line} imports {target} (third party, not allowed in {layer})")
        elif target_layer != layer and target_layer not in MAY_IMPORT[layer]:
            problems.append(f"{module}:{line} imports {target} ({layer} may import "
                            f"{', '.join(sorted(MAY_IMPORT[layer])) or 'no project package'})")
    return problems


def project_modules():
    for layer in MAY_IMPORT:
        folder = REPO / layer.replace(".", "/")
        files = sorted(folder.glob("*.py")) if layer.startswith("harness.") else sorted(folder.rglob("*.py"))
        for path in files:
            relative = path.relative_to(REPO).with_suffix("")
            yield ".".join(relative.parts), path


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_imports_follow_the_table(layer):
    problems = []
    for module, path in project_modules():
        if layer_of(module) == layer:
            problems += violations(path.read_text(encoding="utf-8"), module)
    assert not problems, "\n".join(problems)


def test_the_three_implementations_never_import_each_other():
    for impl in ("reference", "torch_impl", "tf_impl"):
        assert not MAY_IMPORT[impl] & {"reference", "torch_impl", "tf_impl", "harness.core"}


@pytest.mark.parametrize("source, module, expected", [
    ("from harness.core.registry import get_backend\n", "reference.network", "reference.network:1 imports"),
    ("def f():\n    import torch_impl.build\n", "tf_impl.network", "tf_impl.network:2 imports torch_impl.build"),
    ("from texture_nets.cli import main\n", "harness.drift.analysis", "imports texture_nets.cli"),
    ("import torch\n", "reference.padding", "third party"),
    ("from ..drift import analysis\n", "harness.core.judge", "imports harness.drift"),
])
def test_a_planted_violation_fails(source, module, expected):
    found = violations(source, module)
    assert found and expected in found[0]


def test_allowed_imports_pass():
    assert violations("import numpy as np\nfrom t7file import T7Module\nfrom contract import BackendError\n",
                      "reference.network") == []
    assert violations("from harness.core.compare import compare\n", "harness.drift.analysis") == []


def test_no_import_cycles_between_modules():
    """No module imports (even lazily) a module that imports it back, directly or through others."""
    graph: dict[str, set[str]] = {}
    modules = {module: path for module, path in project_modules()}
    for name in list(modules):
        if name.endswith(".__init__"):
            modules[name[: -len(".__init__")]] = modules.pop(name)
    for module, path in modules.items():
        graph[module] = {target for _, target in imports_of(path.read_text(encoding="utf-8"), module)
                         if target in modules and target != module}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    # A package's __init__ re-exporting its own modules is not a cycle of concern.
    real = [cycle for cycle in cycles if len({part.split(".")[0] for part in cycle.split(" -> ")}) > 1
            or not any(part.count(".") == 0 for part in cycle.split(" -> "))]
    assert not real, "\n".join(real)
