"""The ``onnx`` backend (ort_backend/) reached only through the plug-in mechanism, as a third party's would be.

It is not in harness.core.registry.BUILTIN_BACKENDS: pyproject.toml registers it in the
``texture_nets.backends`` entry-point group, so these tests also prove that discovery works.
``pytest parity_tests --backend onnx`` runs the whole suite on it (conftest.py); here, the plug-in
contract and one drift run in both views.

Measured (narrow pretrained, random 1x3x32x32 seed 1, float32, vs reference float64, max |diff| /
scale): output 1.3e-6, every traced layer <= 1.3e-6 accumulated and <= 5e-7 isolated; `pytest
parity_tests --backend onnx` passed 562 tests (float64 cases skip: ONNX Runtime's CPU Conv is
float32 only). Tolerances are harness/core/tolerance.py's; this module adds one: the same graph run twice
by the same runtime is bit-identical (measured 0).
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from contract import BackendError
from fixtures import DEFAULT_MODEL
from harness.core.registry import BUILTIN_BACKENDS, ENTRY_POINT_GROUP, get_backend
from harness.drift import run_drift
from t7file import trace_paths

REPO = Path(__file__).resolve().parents[1]


def random_input(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, 32, 32))


def test_registered_as_an_entry_point_not_a_builtin():
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert entry_points.get("onnx") == "ort_backend:OnnxRuntimeBackend", entry_points
    assert "onnx" not in BUILTIN_BACKENDS


@pytest.mark.parametrize("spec", ["onnx", "ort_backend:OnnxRuntimeBackend"])
def test_found_by_name_and_by_module_factory(spec):
    backend = get_backend(spec)
    assert (backend.name, backend.dtypes) == ("onnx", ("float32",))


def test_float64_is_refused_with_the_reason():
    with pytest.raises(BackendError, match="no float64 Conv"):
        get_backend("onnx").load(DEFAULT_MODEL, "float64")


_RUNNERS: dict[str, object] = {}


class ExportOnce:
    """The entry-point backend with its DEFAULT_MODEL export memoised (exporting takes seconds), handed to
    drift as ``module:factory`` like any plug-in."""

    name, dtypes = "onnx", ("float32",)

    def load(self, model, dtype):
        key = f"{model}:{dtype}"
        if key not in _RUNNERS:
            _RUNNERS[key] = get_backend("onnx").load(model, dtype)
        return _RUNNERS[key]


@pytest.fixture(scope="module")
def runner():
    return ExportOnce().load(DEFAULT_MODEL, "float32")


def test_drift_agrees_in_both_views(runner):
    report = run_drift(DEFAULT_MODEL, random_input(), ["parity_tests.test_onnx_plugin:ExportOnce"])
    onnx = report.backends[0]
    failing = [r.lua_path for r in [*onnx.accumulated, *onnx.isolated, onnx.output] if not r.passed]
    assert onnx.passed, f"out of tolerance at {failing}"
    assert [r.status for r in onnx.accumulated].count("missing") == 0  # the trace has every Lua path
    assert report.environment["frameworks"]["onnxruntime"]["version"]
    environment = get_backend("onnx").environment()
    assert environment["opset"] >= 13 and environment["onnxruntime"]


def test_trace_keys_and_single_modules(runner):
    x = random_input().astype(np.float32)
    output, trace = runner.forward(x, trace=True)
    assert list(trace) == trace_paths(runner_root())
    np.testing.assert_array_equal(trace["1"], x)  # TVLoss: no node of its own, the input passes through
    np.testing.assert_array_equal(runner.run_module("1", x), x)
    np.testing.assert_array_equal(runner.run_module("12", trace["11"]), trace["12"])  # a whole residual block
    np.testing.assert_array_equal(runner.run_module("24", trace["23"]), output)
    with pytest.raises(BackendError, match="no traced module"):
        runner.run_module("99", x)


def test_an_onnx_file_it_wrote_describes_its_own_trace(runner, tmp_path):
    import onnx

    path = tmp_path / "model.onnx"
    onnx.save(runner.proto, str(path))
    reloaded = get_backend("onnx").load(path, "float32")
    x = random_input(2).astype(np.float32)
    (output, trace), (expected, expected_trace) = reloaded.forward(x, trace=True), runner.forward(x, trace=True)
    np.testing.assert_array_equal(output, expected)  # same graph, same runtime: bit-identical (measured)
    assert list(trace) == list(expected_trace)


@pytest.mark.slow  # a pytest inside pytest: ~40 s (torch import, ONNX export per layout)
def test_pytest_backend_option_selects_the_plugin():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "parity_tests/test_end_to_end.py", "--backend", "onnx", "-q",
         "-p", "no:cacheprovider", "-k", "random and float32 and pretrained"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "[onnx-" in result.stdout or " passed" in result.stdout


def runner_root():
    from t7file import load_module_tree

    return load_module_tree(DEFAULT_MODEL)
