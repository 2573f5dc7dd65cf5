"""The NumPy reference (the judge) against real Torch7: whole models at every trace key and output.

Measured max |diff| (abs) and max |diff| / max |oracle| (rel) per array, float32 with OpenBLAS on 1 and on
2 threads (the GEMM blocking changes the float32 rounding; the worse of the two is listed):

| oracle run                                  | output abs | output rel | worst trace key (rel, abs)        |
|---------------------------------------------|------------|------------|-----------------------------------|
| narrow_head_seed77_f32_32x32                | 3.9e-06    | 1.6e-06    | 2.0e-06, 8.1e-06 at 16.1.2.7      |
| narrow_head_seed77_f32_37x29 (-> 40x32)     | 4.9e-06    | 2.2e-06    | 2.3e-06, 1.0e-05 at 16.1.2.7      |
| narrow_pretrained_seed78_f32_32x32          | 4.6e-06    | 3.0e-06    | 3.9e-06, 1.5e-05 at 14.1.2.7      |
| narrow_pretrained_seed78_f32_37x29          | 5.4e-06    | 2.8e-06    | 3.5e-06, 1.5e-05 at 16.1.2.7      |
| narrow_pretrained_seed78_f32_2x24x20        | 7.0e-06    | 3.9e-06    | 5.5e-06, 2.0e-05 at 15.1.2.7      |
| narrow_head_seed77_f64_32x32                | 6.7e-16    | 2.7e-16    | (output only)                     |
| narrow_pretrained_seed78_f64_32x32          | 4.4e-16    | 2.9e-16    | (output only)                     |
| full-width head (../shared) f32 64x64       | 4.2e-06    | 1.9e-06    | 2.5e-06, 1.2e-05 at 17.1.2.7      |
| full-width head (../shared) f32 67x53->68x56| 3.1e-06    | 1.4e-06    | 1.8e-06, 1.1e-05 at 3             |
| full-width head (../shared) f64 64x64       | 5.4e-15    | 2.5e-15    | (output only)                     |
| full-width head (../shared) f64 67x53       | 6.2e-15    | 2.7e-15    | (output only)                     |

The float32 reference is as close to Torch7 float32 as Torch7 float32 is to its own float64 run (README:
within ~5e-6 absolute); the worst keys are late residual-branch instance norms, where the rounding of
~20 convolutions has accumulated. Float64 agrees to a few ulps (its instance norms sum in Torch's order,
bit-exact on the single-module cases); the project contract is 1e-9.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from harness.core.compare import Tolerance, assert_close
from harness.core.registry import get_backend
from parity_tests.ground_truth import OracleRun, fixture_runs, shared_runs
from reference import Network, load_network
from reference.backend import ReferenceBackend
from t7file import load_module_tree, trace_paths

WHOLE_MODEL = {
    "float32": Tolerance(2e-5, why="measured max rel 5.5e-6 (trace) / 3.9e-6 (output) over all float32 runs, "
                                   "1 and 2 BLAS threads; ~3.5x margin for other BLAS builds"),
    "float64": Tolerance(1e-9, why="project contract; measured max rel 2.9e-15 over all float64 runs"),
}
ORACLE = "Torch7 oracle"


@cache
def _network(model_path: Path, dtype: str) -> Network:
    return load_network(model_path, dtype)


_FORWARDS: dict[Path, tuple[np.ndarray, dict[str, np.ndarray]]] = {}


def _forward(run: OracleRun) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One traced forward per oracle run, shared by the tests that look at it (full width is the slow part)."""
    if run.npz_path not in _FORWARDS:
        _FORWARDS[run.npz_path] = _network(run.model_path, run.dtype).forward(run.input, trace=True)
    return _FORWARDS[run.npz_path]


def test_shared_odd_size_keeps_the_head_layout_shape() -> None:
    """67x53 -> 68x56: the head layout never crops (docs/torch7-semantics.md, odd sizes)."""
    runs = [run for run in shared_runs() if run.input.shape[2:] == (67, 53)]
    if not runs:
        pytest.skip("no ../shared/oracle")
    for run in runs:
        assert _forward(run)[0].shape == run.output.shape == (1, 3, 68, 56)


@pytest.mark.parametrize("run", [run for run in fixture_runs() if run.trace][:2] + [
    run for run in fixture_runs() if run.trace and run.input.shape[0] == 2], ids=repr)
def test_run_module_reproduces_each_top_level_module(run: OracleRun) -> None:
    """run_module(path, input of that module) gives the oracle's trace entry; a block path runs the whole block."""
    network = _network(run.model_path, run.dtype)
    previous = run.input
    for child in network.root_module.children:
        expected = run.trace[child.lua_path]
        assert_close(network.run_module(child.lua_path, previous), expected, WHOLE_MODEL[run.dtype],
                     actual_name="reference run_module", expected_name=ORACLE, where=f"{run.name} Lua path "
                     f"{child.lua_path} ({child.torch_class})")
        previous = expected


def test_backend_registry_and_protocol() -> None:
    backend = get_backend("reference")
    assert isinstance(backend, ReferenceBackend)
    assert backend.name == "reference" and backend.dtypes == ("float32", "float64")
    run = fixture_runs()[0]
    from_path = backend.load(run.model_path, "float64")
    from_tree = backend.load(load_module_tree(run.model_path), "float64")
    x = run.input.astype(np.float32)  # a float32 array is cast, like Torch's :double() input
    a, _ = from_path.forward(x)
    b, _ = from_tree.forward(x.astype(np.float64))
    assert a.dtype == np.float64 and np.array_equal(a, b)
    with pytest.raises(ValueError, match="float16"):
        backend.load(run.model_path, "float16")


# -- trace keys and shapes on both layouts ---------------------------------------------------------

MODELS = sorted({run.model_path for run in fixture_runs()})


@pytest.mark.parametrize("model", MODELS, ids=lambda path: path.stem)
def test_trace_keys_are_the_lua_paths(model: Path) -> None:
    network = _network(model, "float32")
    _, trace = network.forward(np.random.default_rng(0).random((1, 3, 12, 10), dtype=np.float32), trace=True)
    assert list(trace) == trace_paths(network.root_module) == list(network.trace_keys)
    _, untraced = network.forward(np.zeros((1, 3, 8, 8), np.float32))
    assert untraced == {}


@pytest.mark.parametrize("height,width", [(1, 1), (5, 7), (13, 6), (67, 53)], ids=lambda v: str(v))
@pytest.mark.parametrize("model", MODELS, ids=lambda path: path.stem)
def test_odd_sizes_give_four_times_ceil_quarter(model: Path, height: int, width: int) -> None:
    """Both layouts: stride-2 convs give ceil(H/2), the full convs double it, so 4*ceil(H/4) (no crop)."""
    x = np.random.default_rng(height * width).random((1, 3, height, width), dtype=np.float32)
    output, _ = _network(model, "float32").forward(x)
    assert output.shape == (1, 3, 4 * math.ceil(height / 4), 4 * math.ceil(width / 4))
    assert np.isfinite(output).all()


def test_tracing_does_not_change_the_output() -> None:
    """ReLUs and instance norms run in place only on arrays no trace holds: both paths must agree bit for bit."""
    run = fixture_runs()[0]
    network = _network(run.model_path, "float32")
    plain, _ = network.forward(run.input)
    traced, trace = network.forward(run.input, trace=True)
    assert np.array_equal(plain, traced)
    assert np.array_equal(trace[trace_paths(network.root_module)[-1]], traced)
    again, _ = network.forward(run.input)
    assert np.array_equal(plain, again), "a forward pass changed state it reads later (weights, caches)"


def test_ascii_file_gives_the_same_model() -> None:
    run = next(run for run in fixture_runs() if run.layout == "pretrained" and run.dtype == "float32")
    ascii_path = run.model_path.with_name(run.model_path.stem + "_ascii.t7")
    from_binary, _ = _network(run.model_path, "float32").forward(run.input)
    from_ascii, _ = load_network(ascii_path, "float32").forward(run.input)
    assert np.array_equal(from_ascii, from_binary)
