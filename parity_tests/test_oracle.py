"""Every faithful backend against real Lua Torch7, at the output and at every traced Lua path.

One module for every backend (``--backend``; default: every installed built-in): the committed
narrow runs, the full-width johnson runs and the real v1-era models' runs of ../shared/oracle (skipped
without it; CI has it). Each run is replayed as Torch7 ran it: the same input, the batch-norm mode its
script used, and the very noise its noise modules drew (docs/real-models.md).

Tolerances:
* float64: the project's contract, max|diff| <= 1e-9 * max(1, max|oracle|); measured 2.9e-15 on the
  johnson runs and ~1e-13 on the v1 runs (docs/tolerances.md).
* float32: the tolerance model (harness.core.tolerance), computed from the float64 reference's trace of
  the same input and noise, for both sides: the backend's float32 rounding plus Torch7's own (a float32
  Torch7 run is itself up to 1.4e-4 of the scale away from the exact result on ill-conditioned v1 batch
  norms, docs/real-models.md), each held to the rounding ceiling of the reference's own float32 run of the
  same input (Torch7's float32 erred up to 3.4x that: docs/tolerances.md), never a fixed number.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from harness.core.compare import Tolerance, compare
from harness.core.runs import forward, judge_float32_rounding, load_runner
from harness.core.tolerance import instance_norm_statistics, layer_budgets, output_budget
from parity_tests.ground_truth import OracleRun, fixture_runs, shared_runs, v1_runs
from t7file import T7Module, load_module_tree

pytestmark = pytest.mark.oracle

FLOAT64_CONTRACT = 1e-9  # relative to max(1, max|oracle|): the project's float64 promise
ORACLE = "Torch7 oracle"


def _runs_or_skip(runs: list[OracleRun], why: str) -> list:
    return runs or [pytest.param(None, marks=pytest.mark.skip(why))]


@cache
def _tree_of(model_path: Path) -> T7Module:
    return load_module_tree(model_path)


def _tree(run: OracleRun) -> T7Module:
    return _tree_of(run.model_path)


@cache
def _judge_trace_of(npz_path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from reference.backend import ReferenceBackend

    run = _RUNS[npz_path]
    runner = load_runner(ReferenceBackend(), _tree(run), "float64", batchnorm=run.batchnorm)
    return forward(runner, run.input.astype(np.float64), trace=True,
                   noise={path: array.astype(np.float64) for path, array in run.noise.items()})


def _judge_trace(run: OracleRun) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The float64 reference's output and trace on the run's input and noise: the tolerance model's basis."""
    _RUNS[run.npz_path] = run
    return _judge_trace_of(run.npz_path)


_RUNS: dict[Path, OracleRun] = {}


@cache
def _judge_rounding_of(npz_path: Path) -> dict[str, float]:
    from reference.backend import ReferenceBackend

    run = _RUNS[npz_path]
    return judge_float32_rounding(ReferenceBackend(), _tree(run), run.input, _judge_trace_of(npz_path)[1],
                                  noise=run.noise, batchnorm=run.batchnorm)


def _judge_rounding(run: OracleRun) -> dict[str, float]:
    """The reference's own float32 error at each path on the run's input and noise: the rounding ceiling's basis."""
    _RUNS[run.npz_path] = run
    return _judge_rounding_of(run.npz_path)


def _tolerances(run: OracleRun, backend) -> tuple[dict[str, Tolerance], Tolerance]:
    """Per traced path and for the output: the backend's budget plus Torch7 float32's own (both round)."""
    if run.dtype == "float64":
        contract = Tolerance(FLOAT64_CONTRACT, FLOAT64_CONTRACT, why="project contract for float64 runs")
        return {}, contract
    root = _tree(run)
    _, trace = _judge_trace(run)
    rounding = _judge_rounding(run)
    mine = layer_budgets(root, run.input, trace, "float32", statistics=instance_norm_statistics(backend),
                         judge_rounding=rounding)
    torch7 = layer_budgets(root, run.input, trace, "float32", statistics="float64", judge_rounding=rounding)

    def both(path: str) -> Tolerance:
        a, b = mine[path].tolerance(), torch7[path].tolerance()
        return Tolerance(a.rtol + b.rtol, a.atol + b.atol, why=f"{a.why}; plus Torch7 float32's own rounding")

    per_path = {path: both(path) for path in mine}
    return per_path, both(output_budget(root, mine).lua_path)


def _check(run: OracleRun, backend, load_runner_cached) -> None:
    if run.dtype not in backend.dtypes:
        pytest.skip(f"backend '{backend.name}' supports {', '.join(backend.dtypes)}, not {run.dtype}")
    runner = load_runner_cached(backend, run.model_path, run.dtype, run.batchnorm)
    output, trace = forward(runner, run.input.astype(run.dtype), trace=True,
                            noise={path: array.astype(run.dtype) for path, array in run.noise.items()})
    per_path, at_output = _tolerances(run, backend)
    name = f"{backend.name} {run.dtype}"
    failures = []
    # Traces are keyed by Lua path and record every noise module's output (the noise each backend was given).
    missing_noise = sorted(set(run.noise) - set(trace))
    if missing_noise:
        failures.append(f"noise modules {', '.join(missing_noise)} are not in the {name} trace")
    for path, expected in run.trace.items():
        if path not in trace:
            failures.append(f"Lua path {path}: not in the {name} trace")
            continue
        where = f"{run.name}, Lua path {path} ({_tree(run).find(path).torch_class})"
        result = compare(trace[path], expected, per_path.get(path, at_output), actual_name=name,
                         expected_name=ORACLE, where=where)
        if not result.passed:
            failures.append(result.message())
    result = compare(output, run.output, at_output, actual_name=name, expected_name=ORACLE,
                     where=f"{run.name}, output")
    if not result.passed:
        failures.append(result.message())
    if failures:
        raise AssertionError(f"{len(failures)} check(s) failed; first (in execution order):\n" + "\n".join(failures[:3])
                             + f"\n  tolerance basis: {at_output.why}")


@pytest.fixture(scope="module")
def load_runner_cached():
    cache_: dict = {}

    def load(backend, model, dtype, batchnorm):
        key = (backend.name, str(model), dtype, batchnorm)
        if key not in cache_:
            cache_[key] = load_runner(backend, model, dtype, root=load_module_tree(model), batchnorm=batchnorm)
        return cache_[key]

    return load


@pytest.mark.parametrize("run", fixture_runs(), ids=repr)
def test_committed_run(backend, run, load_runner_cached):
    _check(run, backend, load_runner_cached)


@pytest.mark.parametrize("run", _runs_or_skip(shared_runs(), "no ../shared/oracle"), ids=repr)
def test_full_width_run(backend, run, load_runner_cached):
    _check(run, backend, load_runner_cached)


@pytest.mark.parametrize("run", _runs_or_skip(v1_runs(), "no ../shared/oracle/v1"), ids=repr)
def test_real_model_run(backend, run, load_runner_cached):
    """The real trained v1-era models (v1 style and texture nets, the demos' and the doodle's nets)."""
    _check(run, backend, load_runner_cached)
