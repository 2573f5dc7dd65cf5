"""The NumPy reference (the judge) on the real v1-era models: against original Lua Torch7, and on all eleven files.

Ground truth: ``../shared/oracle/v1`` (README.md, SEMANTICS.md there), each run's own noise injected
and its batch-norm mode used. Distance = max |diff| / max(1, max |oracle|) (SEMANTICS.md's measure),
at the output and at every traced path the oracle stored. Measured (OpenBLAS, 2 threads):

| oracle run (Torch7 dtype) | reference float64: output / worst path | reference float32: output / worst path |
|---|---|---|
| v1_starry_c_64x64 (float64) | 2.9e-14 / 4.2e-14 (1.2.8) | 4.6e-05 / 5.8e-05 (1.2.8) |
| v1_pebble_c_64x64 (float64) | 1.3e-14 / 1.3e-14 (11) | 1.5e-05 / 1.5e-05 (11) |
| v1_starry_a_64x64 (float32) | 4.9e-05 / 4.9e-05 (8.2) | 2.5e-05 / 2.5e-05 (8.2) |
| v1_pebble_a_64x64 (float32) | 2.0e-05 / 2.0e-05 (11) | 1.1e-05 / 1.1e-05 (11) |
| doodle_starry_night_a_64x64 (float32) | 1.0e-05 / 5.8e-06 | 1.3e-05 / 1.7e-06 |
| demos_starry_a_64x64 (float32) | 2.2e-06 / 7.3e-06 | 2.5e-06 / 1.8e-06 |

Float64 against Torch7 float64 is the project contract (1e-9); it measures ~1e-13. The float64
reference against Torch7 *float32* is Torch7's own float32 rounding, and reproduces the distances
SEMANTICS.md measured with an independent float64 forward (2.2e-6, 1.0e-5, 2.0e-5, 4.9e-5).

Float32 tolerances follow the conditioning, not a fixed number (SEMANTICS.md, "Conditioning"): in
batch-statistics mode some batch-norm channels have a spread ~1000x smaller than their values, which
amplifies any float32 rounding. So the float32 reference is asked to be **as close to the exact forward
(the float64 reference) as Torch7 float32 is**, within a factor F = 2: SEMANTICS.md measured a port that
sums convolutions in BLAS order (as this reference does) at up to 1.43x Torch7's own distance (pleades_d
2.0e-4 against 1.4e-4); here the worst ratio is 1.19 (doodle, worst path), 1.10 at an output (demos).
Against Torch7 float32 itself that gives F + 1 = 3 times Torch7's distance (triangle inequality;
measured up to 1.27, doodle output). For the float64 oracle runs, where Torch7's float32 distance is not
available, the float32 reference must stay within the family's float32 budget from SEMANTICS.md
(v1-style 2.0e-4, the BLAS-order port's worst; other families 2.5e-5): measured 5.8e-5 and 1.5e-5.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from contract.families import detect_family, image_to_input, input_planes, noise_modules
from harness.core.noise import draw_noise
from parity_tests.ground_truth import REAL_MODELS_DIR, OracleRun, v1_runs
from reference import Network
from reference.backend import ReferenceBackend
from t7file import load_module_tree, trace_paths

pytestmark = pytest.mark.oracle

FLOAT64_CONTRACT = 1e-9
F_EXACT = 2.0  # float32 reference vs exact <= F x Torch7 float32 vs exact (module docstring)
FLOAT32_BUDGET = {"v1-style": 2.0e-4, "v1-texture": 2.5e-5, "demos": 2.5e-5, "doodle": 2.5e-5}
RUNS = v1_runs()
NO_ORACLE = [pytest.param(None, marks=pytest.mark.skip("no ../shared/oracle/v1"))]


def distance(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max(1, max |expected|), SEMANTICS.md's measure."""
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    expected = expected.astype(np.float64)
    return float(np.max(np.abs(actual.astype(np.float64) - expected)) / max(1.0, float(np.max(np.abs(expected)))))


@cache
def _network(model: Path, dtype: str, batchnorm: str) -> Network:
    return ReferenceBackend().load(model, dtype, batchnorm=batchnorm)


_FORWARDS: dict[tuple[Path, str], tuple[np.ndarray, dict[str, np.ndarray]]] = {}


def _forward(run: OracleRun, dtype: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One traced forward per run and dtype, shared by the tests that look at it."""
    key = (run.npz_path, dtype)
    if key not in _FORWARDS:
        network = _network(run.model_path, dtype, run.batchnorm)
        _FORWARDS[key] = network.forward(run.input, trace=True, noise=run.noise or None)
    return _FORWARDS[key]


def _worst(trace: dict[str, np.ndarray], reference: dict[str, np.ndarray], paths) -> tuple[float, str]:
    return max((distance(trace[path], reference[path]), path) for path in paths)


@pytest.mark.parametrize("run", RUNS or NO_ORACLE, ids=repr)
def test_float64_reference_is_torch7_at_every_stored_path(run: OracleRun) -> None:
    output, trace = _forward(run, "float64")
    network = _network(run.model_path, "float64", run.batchnorm)
    assert output.dtype == np.float64 and list(trace) == list(network.trace_keys)
    assert set(run.trace) | set(run.traces_left_out) <= set(trace), "oracle paths the reference does not trace"
    for spec in noise_modules(network.root_module):  # noise modules are traced with what they wrote
        written = trace[spec.lua_path]
        drawn = written if spec.kind == "planes" else written[:, spec.first_channel:spec.first_channel + spec.planes]
        assert np.array_equal(drawn, run.noise[spec.lua_path].astype(np.float64))
    if run.dtype == "float64":
        worst = _worst(trace, run.trace, run.trace)
        assert worst[0] <= FLOAT64_CONTRACT, f"{run.name}: float64 reference {worst[0]:.3g} from Torch7 at {worst[1]}"
        assert distance(output, run.output) <= FLOAT64_CONTRACT
    else:  # Torch7's own float32 rounding, as SEMANTICS.md measured it with an independent float64 forward
        published = {"demos_starry_a": 2.2e-6, "doodle_starry_night_a": 1.0e-5, "v1_pebble_a": 2.0e-5,
                     "v1_starry_a": 4.9e-5}
        key = run.name.rsplit("_64x64", 1)[0]
        if key in published:
            assert distance(output, run.output) == pytest.approx(published[key], rel=0.06)


@pytest.mark.parametrize("run", [run for run in RUNS if run.dtype == "float32"] or NO_ORACLE, ids=repr)
def test_float32_reference_is_as_close_to_exact_as_torch7(run: OracleRun) -> None:
    exact_output, exact = _forward(run, "float64")
    output, trace = _forward(run, "float32")
    assert output.dtype == np.float32
    paths = list(run.trace)
    torch_output, torch_worst = distance(run.output, exact_output), _worst(run.trace, exact, paths)[0]
    ours_output, ours_worst = distance(output, exact_output), _worst(trace, exact, paths)[0]
    assert ours_output <= F_EXACT * torch_output, f"output: {ours_output:.3g} from exact, Torch7 {torch_output:.3g}"
    assert ours_worst <= F_EXACT * torch_worst, f"paths: {ours_worst:.3g} from exact, Torch7 {torch_worst:.3g}"
    against_torch = distance(output, run.output)
    assert against_torch <= (F_EXACT + 1) * torch_output, f"output: {against_torch:.3g} from Torch7 float32"
    worst = _worst(trace, run.trace, paths)
    assert worst[0] <= (F_EXACT + 1) * torch_worst, f"{worst[1]}: {worst[0]:.3g} from Torch7 float32"


@pytest.mark.parametrize("run", [run for run in RUNS if run.dtype == "float64"] or NO_ORACLE, ids=repr)
def test_float32_reference_within_the_family_budget(run: OracleRun) -> None:
    output, trace = _forward(run, "float32")
    budget = FLOAT32_BUDGET[detect_family(load_module_tree(run.model_path)).name]
    worst = _worst(trace, run.trace, run.trace)
    assert worst[0] <= budget, f"{run.name}: float32 reference {worst[0]:.3g} from Torch7 float64 at {worst[1]}"
    assert distance(output, run.output) <= budget


@pytest.mark.parametrize("run", [run for run in RUNS if run.dtype == "float64"] or NO_ORACLE, ids=repr)
def test_run_module_of_a_concat_runs_its_pyramid_with_its_noise(run: OracleRun) -> None:
    """Each pyramid Concat takes the network input: run_module(path, x, noise) gives Torch7's stored output."""
    network = _network(run.model_path, "float64", run.batchnorm)
    concats = [op.lua_path for op in network.root.walk() if op.torch_class == "nn.Concat" and op.lua_path in run.trace]
    assert concats
    for path in concats:
        output = network.run_module(path, run.input, noise=run.noise)
        assert distance(output, run.trace[path]) <= FLOAT64_CONTRACT, path


# -- all eleven public files ------------------------------------------------------------------------------------------

REAL_MODELS = sorted(REAL_MODELS_DIR.glob("*.t7")) if REAL_MODELS_DIR.is_dir() else []
# Float32 against float64 of the same run, a sanity bound only (the oracle tests above pin the accuracy): with a
# batch-norm conditioning g ~ 1e3 (SEMANTICS.md) a conv's float32 rounding u * sqrt(K) (K <= 40 * 9) reaches
# 6e-8 * 19 * 1e3 = 1.1e-3. Measured on these inputs: up to 2.4e-4 (pleades, 2x96x64) and 1.8e-4 (pollock, demos
# family, 2x96x64); every other file <= 5.7e-5.
FLOAT32_SANITY = 1.1e-3


@cache
def _tree(path: Path):
    return load_module_tree(path)


def _input(root, shape: tuple[int, int, int]) -> np.ndarray:
    """The family's input for a smooth synthetic picture (a colour mask for the doodle), N x C x H x W."""
    batch, height, width = shape
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    image = np.stack([0.5 + 0.4 * np.sin(6 * x + 3 * y), y, 1 - x * y])[None].repeat(batch, axis=0)
    image[1:] = image[1:, ::-1]  # a different picture per sample
    family = detect_family(root)
    if family.name == "doodle":
        planes = input_planes(root)
        labels = (np.floor(x * 2) + 2 * np.floor(y * 2)).astype(int) % planes
        return np.eye(planes)[labels].transpose(2, 0, 1)[None].repeat(batch, axis=0) / 10.0
    return image_to_input(image, family)


@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 96, 64)], ids=["1x64x64", "2x96x64"])
@pytest.mark.parametrize("model", REAL_MODELS or [pytest.param(None, marks=pytest.mark.skip(
    "no ../shared/realmodels"))], ids=lambda path: path.stem.split("__")[-1][:24] if path else "none")
def test_every_real_file_loads_and_runs(model: Path, shape: tuple[int, int, int]) -> None:
    root = _tree(model)
    x = _input(root, shape)
    noise = draw_noise(root, x.shape, seed=len(model.name))
    outputs = {}
    for dtype in ("float64", "float32"):
        network = ReferenceBackend().load(root, dtype)
        output, trace = network.forward(x, trace=dtype == "float64", noise=noise or None)
        assert output.dtype == np.dtype(dtype) and output.shape == (shape[0], 3, *shape[1:])
        assert np.isfinite(output).all()
        outputs[dtype] = output
        if trace:
            assert list(trace) == trace_paths(root)
            assert all(np.isfinite(value).all() for value in trace.values())
    assert distance(outputs["float32"], outputs["float64"]) <= FLOAT32_SANITY
