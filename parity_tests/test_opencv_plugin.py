"""The ``opencv`` backend (opencv_backend/): OpenCV 4.x's own Torch importer and layers, judged against Torch7.

Registered only through the ``texture_nets.backends`` entry point, like ``onnx``; ``pytest parity_tests
--backend opencv`` runs the generic suite on it too. Here: the plug-in contract, every Torch7 run it can
load, the Lua paths computed by adapter code (never evidence about OpenCV), the adapter's custom layers
(exact against the float64 reference), and one strict expected failure per deviation the harness finds
(docs/ports/opencv.md, numbers from scripts/opencv_finding.py, OpenCV 4.14.0, opencv-python-headless
4.14.0.94, AVX-512 CPU). Each asserts that OpenCV is within the project's tolerance model
(harness.core.tolerance through parity_tests.parity.check_trace), so it turns into an XPASS, and fails,
the day OpenCV computes what Torch7 computes. No tolerance here is widened for OpenCV.

Where the tolerance model does not determine a run's output (it does not bound the v1-era families' batch
norms yet: their output budget is marked undetermined), the expected failures of those runs use the
yardstick docs/real-models.md gives for them instead: twice Torch7's own float32 deviation from the exact
(float64) forward of the same input and noise (a faithful float32 port that sums in BLAS order lands at up
to 1.5x it: 2.0e-4 against Torch7's 1.4e-4 on pleades).
"""

from __future__ import annotations

from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from contract import BackendError  # noqa: E402
from harness.core.registry import BUILTIN_BACKENDS, ENTRY_POINT_GROUP, get_backend  # noqa: E402
from harness.core.runs import forward, load_runner  # noqa: E402
from harness.core.tolerance import layer_budgets, module_inputs, output_budget  # noqa: E402
from opencv_backend import OpenCVBackend, layers, patched  # noqa: E402
from opencv_backend.files import aliased_batch_norms  # noqa: E402
from parity_tests.ground_truth import OracleRun, fixture_runs, shared_runs, v1_runs  # noqa: E402
from parity_tests.parity import check_trace  # noqa: E402
from parity_tests.strategies import instance_norm_module, single_module_root  # noqa: E402
from t7file import T7Module, load_module_tree, trace_paths  # noqa: E402

F32 = np.float32


class OpenCVDeviation(AssertionError):
    """OpenCV outside the tolerance: what the expected failures below expect (any other error fails them)."""


def rel(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def _runs(runs: list[OracleRun], why: str) -> list:
    return runs or [pytest.param(None, marks=pytest.mark.skip(why))]


FLOAT32_RUNS = [run for run in fixture_runs() + shared_runs() + v1_runs() if run.dtype == "float32"]
V1_FILES = [run for run in v1_runs() if run.name.startswith("v1_") and run.dtype == "float32"]


def _backend_for(run: OracleRun) -> OpenCVBackend:
    """The v1 files need the adapter's batch-norm rewrite (plain ``opencv`` refuses them); the others run as is."""
    return patched() if aliased_batch_norms(_tree(run.model_path), _planes(run)) else get_backend("opencv")


def _planes(run: OracleRun) -> int:
    return int(run.input.shape[1])


@cache
def _tree(model: Path) -> T7Module:
    return load_module_tree(model)


@cache
def _runner(model: Path, batchnorm: str | None, bn_alias: str):
    return load_runner(OpenCVBackend(bn_alias=bn_alias), model, "float32", root=_tree(model), batchnorm=batchnorm)


def _run_runner(run: OracleRun):
    return _runner(run.model_path, run.batchnorm, _backend_for(run).bn_alias)


def _noise(run: OracleRun, dtype: str) -> dict[str, np.ndarray]:
    return {path: array.astype(dtype) for path, array in run.noise.items()}


@cache
def _judge_of(npz_path: Path):
    """The float64 reference's output and trace on the run's input and noise (the judge of every tolerance)."""
    from reference.backend import ReferenceBackend

    run = next(r for r in FLOAT32_RUNS if r.npz_path == npz_path)
    try:
        judge = load_runner(ReferenceBackend(), _tree(run.model_path), "float64", batchnorm=run.batchnorm)
    except (TypeError, BackendError) as error:
        pytest.skip(f"the float64 reference cannot run {run.name}: {error}")
    return forward(judge, run.input.astype(np.float64), trace=True, noise=_noise(run, "float64"))


# -- the plug-in contract ---------------------------------------------------------------------------------------


def test_registered_as_an_entry_point_not_a_builtin():
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert entry_points.get("opencv") == "opencv_backend:OpenCVBackend", entry_points
    assert "opencv" not in BUILTIN_BACKENDS


@pytest.mark.parametrize(("spec", "name"), [("opencv", "opencv"), ("opencv_backend:OpenCVBackend", "opencv"),
                                            ("opencv_backend:patched", "opencv-bn-alias-patched")])
def test_found_by_name_and_by_module_factory(spec, name):
    backend = get_backend(spec)
    assert (backend.name, backend.dtypes, backend.framework, backend.faithful) == (name, ("float32",), "cv2", True)
    environment = backend.environment()
    assert environment["opencv"] == cv2.__version__ and environment["dnn_backend"] == "DNN_BACKEND_OPENCV"


def test_float64_and_unknown_options_are_refused():
    with pytest.raises(BackendError, match="float32 only"):
        get_backend("opencv").load(fixture_runs()[0].model_path, "float64")
    with pytest.raises(BackendError, match="bn_alias"):
        OpenCVBackend(bn_alias="guess")


def test_registering_the_layers_twice_is_harmless():
    """A second cv2.dnn_registerLayer of one type would abort the process; register() must be idempotent."""
    layers.register()
    layers.register()
    assert set(layers.LAYER_TYPES) <= cv2._texture_nets_parity_layers


def test_requests_it_cannot_serve_raise_backend_error():
    run = next(r for r in fixture_runs() if r.dtype == "float32")
    runner = _run_runner(run)
    with pytest.raises(BackendError, match="N x 3 x H x W"):
        runner.forward(np.zeros((1, 4, 8, 8), F32))
    with pytest.raises(BackendError, match="no module at Lua path"):
        runner.run_module("99", np.zeros((1, 3, 8, 8), F32))
    with pytest.raises(BackendError, match="draw no noise"):
        runner.forward(run.input.astype(F32), noise={"1": np.zeros(1)})


# -- every Torch7 run it can load ------------------------------------------------------------------------------------


@pytest.mark.oracle
@pytest.mark.parametrize("run", _runs(FLOAT32_RUNS, "no Torch7 runs"), ids=repr)
def test_runs_the_torch7_case_with_a_complete_trace(run):
    """Loads (v1 files through the rewrite), runs with the run's own noise and batch-norm mode, traces every Lua path
    the Torch7 run traced, with Torch7's shapes; output and trace finite."""
    runner = _run_runner(run)
    output, trace = forward(runner, run.input.astype(F32), trace=True, noise=_noise(run, "float32"))
    assert output.shape == run.output.shape and np.isfinite(output).all()
    assert list(trace) == trace_paths(_tree(run.model_path))
    for path, expected in run.trace.items():
        assert trace[path].shape == expected.shape, path
        assert np.isfinite(trace[path]).all(), path


@pytest.mark.oracle
@pytest.mark.parametrize("run", _runs(FLOAT32_RUNS, "no Torch7 runs"), ids=repr)
def test_adapter_paths_are_exactly_the_custom_layers_and_rewritten_batch_norms(run):
    root = _tree(run.model_path)
    runner = _run_runner(run)
    custom = {m.lua_path for m in root.walk() if m.torch_class in layers.ADAPTER_CLASSES}
    rewritten = {bn.lua_path for bn in aliased_batch_norms(root, _planes(run))}
    assert set(runner.adapter_paths) == custom | rewritten
    assert all(runner.adapter_paths[p].startswith("supplied by the adapter") for p in custom)
    assert all(runner.adapter_paths[p].startswith("parameters rewritten by the adapter") for p in rewritten)


@pytest.mark.oracle
@pytest.mark.parametrize("run", _runs(V1_FILES, "no ../shared/oracle/v1"), ids=repr)
def test_v1_files_are_refused_as_distributed_and_the_rewrite_uses_the_oracle_offsets(run):
    with pytest.raises(BackendError, match="cannot run this file as distributed"):
        get_backend("opencv").load(run.model_path, "float32", batchnorm="train")
    found = sorted((bn.weight_offset + 1, bn.bias_offset + 1, bn.channels)  # the json's offsets are 1-based
                   for bn in aliased_batch_norms(_tree(run.model_path), _planes(run)))
    assert found == sorted((a["weight_offset"], a["bias_offset"], a["planes"]) for a in run.meta["bn_alias"])


@pytest.mark.oracle
@pytest.mark.parametrize("run", _runs(V1_FILES, "no ../shared/oracle/v1"), ids=repr)
def test_opencv_itself_cannot_run_the_v1_files_as_distributed(run):
    """Why plain ``opencv`` refuses them (D5), with OpenCV's own layers and the adapter's noise: the default (fused)
    net raises in fastNormChannel (the 8-element scale against 16 channels), the unfused one reads past the scale's
    buffer: whatever memory lies there (measured: NaN in every element on most runs; finite values once, under
    pytest-xdist, which no reading of that memory makes agree with Torch7). Fails the day OpenCV runs these files:
    then revisit the refusal."""
    from opencv_backend.backend import forward_as_distributed

    outcomes = []
    for fusion in (True, False):
        try:
            outcomes.append(forward_as_distributed(run.model_path, run.input, run.noise, fusion=fusion))
        except cv2.error as error:
            outcomes.append(str(error))
    assert isinstance(outcomes[0], str) and "fastNormChannel" in outcomes[0], outcomes[0]
    unfused = outcomes[1]
    assert not isinstance(unfused, str)
    assert not np.isfinite(unfused).all() or rel(unfused, run.output) > 1e-2, rel(unfused, run.output)


# -- the adapter's own layers: exact --------------------------------------------------------------------------------


ADAPTER_RUNS = [run for run in FLOAT32_RUNS if run.name in (
    "narrow_head_seed77_f32_37x29", "narrow_pretrained_seed78_f32_2x24x20", "v1_starry_a_64x64_f32",
    "v1_pebble_a_64x64_f32", "demos_starry_a_64x64_f32", "doodle_starry_night_a_64x64_f32")]


@pytest.mark.oracle
@pytest.mark.parametrize("run", _runs(ADAPTER_RUNS, "no Torch7 runs"), ids=repr)
def test_custom_layers_alone_are_exact_against_the_float64_reference(run):
    """Each custom layer, fed the judge's float64 input rounded to float32 (run_module), returns the judge's output
    rounded to float32 bit for bit (copies, pads, injected noise); LeakyReLU, x > 0 ? x : x * negval in float32 as
    Torch7 computes it, is within the three float32 roundings of its input, negval and the product (3 * 2^-24
    relative) of the float64 value."""
    root = _tree(run.model_path)
    runner = _run_runner(run)
    _, trace64 = _judge_of(run.npz_path)
    inputs = module_inputs(root, run.input.astype(np.float64), trace64)
    noise = _noise(run, "float32")
    custom = [m for m in root.walk() if m.torch_class in layers.ADAPTER_CLASSES and m.lua_path in trace64]
    assert custom
    for module in custom:
        path = module.lua_path
        mine = runner.run_module(path, np.array(inputs[path], dtype=F32),
                                 noise={p: a for p, a in noise.items() if p == path} or None)
        expected = trace64[path]
        if module.torch_class == "nn.LeakyReLU":
            bound = 3 * 2.0**-24 * np.abs(expected)  # input, negval and the product each rounded once to float32
            assert (np.abs(mine - expected) <= bound).all(), f"{path} {module.torch_class}"
        else:
            np.testing.assert_array_equal(mine, expected.astype(F32), err_msg=f"{path} {module.torch_class}")


# -- the deviations the harness finds: strict expected failures -----------------------------------------------------


def _assert_output_within_the_tolerance_model(runner, root: T7Module, x: np.ndarray, trace64: dict, *, case: str,
                                              noise: dict | None = None) -> None:
    results = check_trace(runner, root, x, trace64, dtype="float32", view="accumulated", case=case,
                          backend_name="opencv", noise=noise)
    output = results[-1]
    assert output.check.lua_path == "output"
    if not output.determined:
        raise RuntimeError(f"{case}: the tolerance model does not determine the output; it cannot judge this case")
    if not output:
        raise OpenCVDeviation(output.comparison.message())


def _committed(name: str) -> OracleRun | None:
    return next((run for run in FLOAT32_RUNS if run.name == name), None)


D1_CASES = [
    pytest.param("narrow_head_seed77_f32_32x32", marks=pytest.mark.xfail(strict=True, raises=OpenCVDeviation, reason=(
        "D1 (+D2): OpenCV's IN is MVN (eps 1e-9, float32 single-pass variance) + BatchNorm(0, 1, gamma, beta, eps): "
        "eps outside the sqrt; first IN (path 3) 1.6e-4 in isolation, output 2.4e-4 vs Torch7 (Torch7's own float32 "
        "1.4e-6); allowed 7.8e-6"))),
    pytest.param("narrow_pretrained_seed78_f32_37x29", marks=pytest.mark.xfail(strict=True, raises=OpenCVDeviation,
                 reason="D1 (+D2): first IN (path 4) 2.2e-4 in isolation; output 2.5e-4 vs Torch7 (its own float32 "
                        "2.5e-6); allowed 9.3e-6")),
    pytest.param("narrow_pretrained_seed78_f32_2x24x20", marks=pytest.mark.xfail(strict=True, raises=OpenCVDeviation,
                 reason="D1 (+D2), batch 2: output 3.5e-4 vs Torch7 (its own float32 4.1e-6); allowed 1.4e-5")),
    pytest.param("johnson_head_seed1234_f32_64x64", marks=pytest.mark.xfail(strict=True, raises=OpenCVDeviation,
                 reason="D1 (+D2), full width (../shared): output 1.3e-4 vs Torch7 (its own float32 2.3e-6); "
                        "allowed 1.7e-5")),
    pytest.param("johnson_head_seed1234_f32_67x53", marks=pytest.mark.xfail(strict=True, raises=OpenCVDeviation,
                 reason="D1 (+D2), full width, odd size (../shared): output 1.2e-4 vs Torch7 (its own float32 "
                        "1.9e-6); allowed 1.8e-5")),
]


@pytest.mark.oracle
@pytest.mark.parametrize("name", D1_CASES)
def test_d1_instance_norm_output_within_the_tolerance_model(name):
    """At the output, against the float64 reference on the Torch7 run's input (the johnson family). The full-width
    runs were left out while their budgets were within 1.02x of OpenCV's error; the model's budgets for them are now
    7x below it (1.7e-5 and 1.8e-5 against 1.3e-4 and 1.2e-4)."""
    run = _committed(name)
    if run is None:
        pytest.skip(f"{name}: no such Torch7 run here")
    _, trace64 = _judge_of(run.npz_path)
    _assert_output_within_the_tolerance_model(_run_runner(run), _tree(run.model_path), run.input, trace64, case=name)


@pytest.mark.xfail(strict=True, raises=OpenCVDeviation, reason=(
    "D1: eps outside the sqrt, visible where the plane variance is small: IN on 2x2 planes of variance ~1e-4 "
    "(std 0.01) is off by 5.6e-2 of its output scale (gamma/sqrt(var+1e-5) vs gamma/(sqrt(var+1e-9)*sqrt(1+1e-5))); "
    "allowed 7.7e-6"))
def test_d1_instance_norm_on_small_variance_planes():
    _assert_instance_norm(seed=5, mean=0.3, std=0.01, size=2, case="IN on 2x2 planes, std 0.01")


@pytest.mark.xfail(strict=True, raises=OpenCVDeviation, reason=(
    "D2: OpenCV sums x and x*x in float32 in one pass (var = s2/n - mean^2); on 64x64 planes of mean 1000, std 1 "
    "the variance loses every significant digit (clamped to 0 on some planes: 1/sqrt(1e-9)): output off by 3.4e4 "
    "times its scale (D1 alone would be 5e-6); allowed 9.0e-5"))
def test_d2_single_pass_float32_variance_on_a_large_mean():
    _assert_instance_norm(seed=6, mean=1000.0, std=1.0, size=64, case="IN on 64x64 planes, mean 1000, std 1")


def _assert_instance_norm(seed: int, mean: float, std: float, size: int, case: str) -> None:
    """A 3-plane InstanceNormalization (random gamma/beta) on 1 x 3 x size x size planes of ``mean`` and ``std``
    (float32 values; std 1.0 multiplies exactly), against the float64 reference."""
    rng = np.random.default_rng(seed)
    weight, bias = rng.uniform(0.5, 1.5, 3), rng.uniform(-0.5, 0.5, 3)
    root = single_module_root(instance_norm_module("1", weight, bias, n_output=3))
    x = (mean + std * rng.standard_normal((1, 3, size, size))).astype(F32).astype(np.float64)
    _assert_single_module(root, x, case)


def _batch_norm_root(channels: int, rng: np.random.Generator) -> T7Module:
    fields = {"weight": rng.uniform(0.5, 1.5, channels).astype(F32),
              "bias": rng.uniform(-0.5, 0.5, channels).astype(F32),
              "running_mean": np.zeros(channels, F32), "running_var": np.ones(channels, F32), "eps": 1e-5,
              "momentum": 0.1, "train": True, "affine": True, "nDim": 4}
    return single_module_root(T7Module("nn.SpatialBatchNormalization", "1", fields))


@pytest.mark.xfail(strict=True, raises=OpenCVDeviation, reason=(
    "D3: readNetFromTorch(evaluate=False) turns a train-mode batch norm into MVN, which normalises each sample on "
    "its own; Torch7 uses the statistics over N x H x W. Batch 2 with different sample statistics: 0.93 of the "
    "output (OpenCV = per-sample statistics to 1.7e-5)"))
def test_d3_train_mode_batch_norm_couples_the_samples():
    rng = np.random.default_rng(1)
    root = _batch_norm_root(4, rng)
    x = np.concatenate([rng.standard_normal((1, 4, 8, 8)) * 2 + 1, rng.standard_normal((1, 4, 8, 8)) * 0.5 - 3])
    _assert_single_module(root, x.astype(F32).astype(np.float64), "train-mode BN, batch 2", batchnorm="train")


def _assert_single_module(root: T7Module, x: np.ndarray, case: str, batchnorm: str | None = None) -> None:
    from reference.backend import ReferenceBackend

    judge = load_runner(ReferenceBackend(), root, "float64", batchnorm=batchnorm)
    _, trace64 = judge.forward(x, trace=True)
    runner = load_runner(get_backend("opencv"), root, "float32", batchnorm=batchnorm)
    _assert_output_within_the_tolerance_model(runner, root, x, trace64, case=case)


# D4 in the isolated view (each 3x3 convolution fed the judge's input) is marginal: the worst convolution of
# the narrow pretrained layout on the 64x64 photo is 1.66x its rounding budget with this machine's AVX-512 Winograd
# kernels, 1.39x on the head layout, within budget at full width; another machine's kernels may land either side,
# so it is reported in docs/ports/opencv.md and not asserted here. Its effect at the output is asserted below.


def _model(layout: str) -> Path:
    from parity_tests.parity import MODELS

    return MODELS[layout]


def _run_and_its_judge(name: str) -> tuple[OracleRun, np.ndarray]:
    """The committed Torch7 run ``name`` and the float64 reference's output on it (skips without ../shared)."""
    run = _committed(name)
    if run is None:
        pytest.skip("no ../shared/oracle/v1")
    out64, _ = _judge_of(run.npz_path)
    return run, out64


def _yardstick(run: OracleRun, out64: np.ndarray) -> float:
    """Twice Torch7's own float32 deviation from the exact forward on this very input and noise (module docstring)."""
    return 2.0 * rel(run.output, out64)


V1_CASES = [
    pytest.param("v1_starry_a_64x64_f32", marks=pytest.mark.xfail(strict=True, raises=OpenCVDeviation, reason=(
        "D1 + D2 on the v1 style net (adapter-rewritten batch norms): batch norms after the upsampled coarse levels "
        "see near-flat planes (variance down to 1e-15) and 1.2.7 a mean 500x its std; output 4.3e-2 vs Torch7, "
        "870x Torch7's own float32 level (4.9e-5)"))),
    pytest.param("v1_pebble_a_64x64_f32", marks=pytest.mark.xfail(strict=True, raises=OpenCVDeviation, reason=(
        "D1 + D2 on the v1 texture net (adapter-rewritten batch norms): output 0.29 vs Torch7, 1.4e4x Torch7's own "
        "float32 level (2.0e-5)"))),
]


@pytest.mark.oracle
@pytest.mark.parametrize("name", V1_CASES)
def test_v1_output_with_the_rewritten_batch_norms(name):
    """The rewrite is the adapter's; what is judged is OpenCV's MVN + BatchNorm on the values Torch7 reads."""
    run = _committed(name)
    if run is None:
        pytest.skip(f"{name}: no ../shared/oracle/v1")
    root = _tree(run.model_path)
    out64, trace64 = _judge_of(run.npz_path)
    runner = _run_runner(run)
    budget = output_budget(root, layer_budgets(root, run.input, trace64, "float32"))
    output, _ = forward(runner, run.input.astype(F32), noise=_noise(run, "float32"))
    if budget.determined:
        _assert_output_within_the_tolerance_model(runner, root, run.input, trace64, case=name,
                                                  noise=_noise(run, "float64"))
        return
    allowed = _yardstick(run, out64)
    if rel(output, out64) > allowed:
        raise OpenCVDeviation(f"{name}: output {rel(output, out64):.3g} from the float64 reference; allowed "
                              f"{allowed:.2g} "
                              "(2x Torch7's own float32 deviation; the tolerance model does not determine this output)")


@pytest.mark.xfail(strict=True, raises=OpenCVDeviation, reason=(
    "D5: OpenCV cannot run the v1 files as distributed (fused: fastNormChannel raises; unfused: NaN); this asserts "
    "the plain backend runs starry within 2x Torch7's own float32 level"))
@pytest.mark.oracle
def test_d5_v1_file_as_distributed():
    run, out64 = _run_and_its_judge("v1_starry_a_64x64_f32")
    try:
        runner = get_backend("opencv").load(run.model_path, "float32", batchnorm="train")
        output, _ = runner.forward(run.input.astype(F32), noise=_noise(run, "float32"))
    except BackendError as error:
        raise OpenCVDeviation(str(error)) from None
    if not np.isfinite(output).all() or rel(output, out64) > _yardstick(run, out64):
        raise OpenCVDeviation(f"output {rel(output, out64):.3g}")


# -- what reaches the output without the tolerance model's help ---------------------------------------------------


@pytest.mark.xfail(strict=True, raises=OpenCVDeviation, reason=(
    "D4 reaches the output of the demos net (evaluate-mode batch norms folded, no instance norm): 1.42e-5 from the "
    "float64 reference, 6.5x Torch7's own float32 level (2.2e-6); 3.5e-6 with enableWinograd(False)"))
@pytest.mark.oracle
def test_d4_winograd_reaches_the_demos_output():
    run, out64 = _run_and_its_judge("demos_starry_a_64x64_f32")
    output, _ = forward(_run_runner(run), run.input.astype(F32))
    if rel(output, out64) > _yardstick(run, out64):
        raise OpenCVDeviation(f"output {rel(output, out64):.3g}; allowed {_yardstick(run, out64):.2g} "
                              "(2x Torch7's own float32 deviation; the tolerance model does not determine this output)")
