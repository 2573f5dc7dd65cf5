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

The real v1-era models (../shared/oracle/v1, each run's noise injected as graph inputs, its batch-norm mode),
ONNX Runtime float32 vs Torch7, max |diff| / max(1, max |oracle|), output / worst traced path:

| oracle run                      | onnx float32                         |
|---------------------------------|--------------------------------------|
| v1_starry_a_64x64_f32           | 6.42e-05 / 6.42e-05 (8.2)            |
| v1_starry_c_64x64_f64 (in f32)  | 3.21e-05 / 3.21e-05 (8.2)            |
| v1_pebble_a_64x64_f32           | 2.61e-05 / 2.61e-05 (11)             |
| v1_pebble_c_64x64_f64 (in f32)  | 9.96e-06 / 9.96e-06 (11)             |
| demos_starry_a_64x64_f32        | 2.70e-06 / 4.41e-06 (1.1.1.1.1.1.5.1) |
| doodle_starry_night_a_64x64_f32 | 1.09e-05 / 5.24e-06 (2.2.7...2.4.2)  |

Torch7's own float32 is 4.9e-5 from exact on starry_a: ONNX Runtime's convolution order, amplified by the
style nets' ill-conditioned batch norms (docs/real-models.md, "Float32 conditioning"), lands a little beyond.
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
from harness.core.compare import Tolerance, assert_close
from harness.core.registry import BUILTIN_BACKENDS, ENTRY_POINT_GROUP, get_backend
from harness.drift import run_drift
from parity_tests.ground_truth import OracleRun, v1_runs
from t7file import load_module_tree, trace_paths

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
    return load_module_tree(DEFAULT_MODEL)


# -- the real v1-era models: noise as graph inputs ------------------------------------------------------------------

V1_FLOAT32 = Tolerance(2e-4, 2e-4, why="measured max 6.42e-5 (v1_starry_a, Lua path 8.2); a float32 port that sums "
                                       "convolutions in its own order lands up to 2.0e-4 from Torch7 on the style "
                                       "nets' ill-conditioned inputs (docs/real-models.md)")


def _v1_params() -> list:
    """starry_a (the ill-conditioned style net) and the doodle (noise planes without nodes) by default; the
    others (an ONNX export each, 5-15 s here) with -m slow."""
    runs = v1_runs()
    if not runs:
        return [pytest.param(None, marks=pytest.mark.skip("no ../shared/oracle/v1"))]
    quick = {"v1_starry_a_64x64_f32", "doodle_starry_night_a_64x64_f32"}
    return [pytest.param(run, id=run.name, marks=() if run.name in quick else pytest.mark.slow) for run in runs]


_V1_RUNNERS: dict[tuple[str, str], object] = {}


def _v1_runner(run: OracleRun):
    key = (str(run.model_path), str(run.batchnorm))
    if key not in _V1_RUNNERS:
        _V1_RUNNERS[key] = get_backend("onnx").load(run.model_path, "float32", batchnorm=run.batchnorm)
    return _V1_RUNNERS[key]


@pytest.mark.oracle
@pytest.mark.parametrize("run", _v1_params())
def test_v1_oracle_run(run: OracleRun):
    runner = _v1_runner(run)
    output, trace = runner.forward(run.input, trace=True, noise=run.noise or None)
    assert list(trace) == trace_paths(load_module_tree(run.model_path))
    for path, expected in run.trace.items():
        assert_close(trace[path], expected, V1_FLOAT32, actual_name="onnx float32", expected_name="Torch7 oracle",
                     where=f"{run.name} Lua path {path}")
    assert_close(output, run.output, V1_FLOAT32, actual_name="onnx float32", expected_name="Torch7 oracle",
                 where=f"{run.name} output")


@pytest.mark.oracle
def test_v1_noise_inputs_single_modules_and_refusals(tmp_path):
    runs = {run.name: run for run in v1_runs()}
    if "doodle_starry_night_a_64x64_f32" not in runs:
        pytest.skip("no ../shared/oracle/v1")
    run = runs["doodle_starry_night_a_64x64_f32"]
    runner = _v1_runner(run)
    _, trace = runner.forward(run.input, trace=True, noise=run.noise)
    noise_path = "2.2.7.1.1.1.1"  # the doodle's GenNoise: its output is its noise input, no node of its own
    np.testing.assert_array_equal(trace[noise_path], run.noise[noise_path])
    np.testing.assert_array_equal(runner.run_module(noise_path, trace["2.2.6"], noise=run.noise), run.noise[noise_path])
    # A container with a noise module inside takes the noise it needs (the others are ignored).
    np.testing.assert_array_equal(runner.run_module("2.2.7.1.1.1", trace["2.2.6"], noise=run.noise),
                                  trace["2.2.7.1.1.1"])
    with pytest.raises(BackendError, match=r"Lua path\(s\) 2\.2\.7\.1\.1\.1\.1"):
        runner.run_module("2.2.7.1.1.1", trace["2.2.6"])
    with pytest.raises(BackendError, match=r"no noise given .* 2\.1\.1\.1"):
        runner.forward(run.input)
    with pytest.raises(BackendError, match=r"N x 4 x H x W"):
        runner.forward(run.input[:, :3], noise=run.noise)
    # The .onnx file describes itself: noise inputs, input width and trace paths come from its metadata.
    import onnx

    onnx.save(runner.proto, str(tmp_path / "doodle.onnx"))
    reloaded = get_backend("onnx").load(tmp_path / "doodle.onnx", "float32")
    output, reloaded_trace = reloaded.forward(run.input, trace=True, noise=run.noise)
    np.testing.assert_array_equal(output, runner.forward(run.input, noise=run.noise)[0])
    assert list(reloaded_trace) == list(trace) and reloaded.channels == 4


def test_noise_input_names_agree_with_torch_impl():
    from ort_backend import backend as plugin
    from torch_impl import export

    assert (plugin.ONNX_NOISE_PREFIX, plugin.ONNX_NOISE_PATHS_KEY, plugin.TRACE_PATHS_KEY) == (
        export.ONNX_NOISE_PREFIX, export.ONNX_NOISE_PATHS_KEY, export.ONNX_TRACE_PATHS_KEY)
