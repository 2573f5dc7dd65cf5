"""The faithful TF port (tf_impl, backend "tf") against real Torch7: whole models at every trace key, single
modules, Torch7's output shapes on odd sizes and batches, and conv/full-conv argument order on non-square cases
checked against loops written here.

Measured (tensorflow-cpu 2.21.0, 2 cores), max |diff| / max |oracle| per array; oneDNN off is TF 2.21's default
here, on = TF_ENABLE_ONEDNN_OPTS=1:

| oracle run                              | output (off / on)   | worst trace key, off        | on                  |
|-----------------------------------------|---------------------|-----------------------------|---------------------|
| narrow_head_seed77_f32_32x32            | 1.52e-06 / 1.67e-06 | 2.14e-06 (16.1.2.7)         | 2.55e-06 (16.1.2.7) |
| narrow_head_seed77_f32_37x29            | 2.01e-06 / 2.34e-06 | 2.55e-06 (17.1.2.4)         | 2.34e-06 (25)       |
| narrow_pretrained_seed78_f32_32x32      | 3.84e-06 / 3.55e-06 | 5.01e-06 (14.1.2.6)         | 5.53e-06 (14.1.2.7) |
| narrow_pretrained_seed78_f32_37x29      | 2.47e-06 / 2.93e-06 | 3.67e-06 (15.1.2.7)         | 3.67e-06 (16.1.2.7) |
| narrow_pretrained_seed78_f32_2x24x20    | 4.81e-06 / 4.68e-06 | 5.40e-06 (16.1.2.7)         | 6.22e-06 (22)       |
| narrow_head_seed77_f64_32x32            | 3.65e-15 / 3.65e-15 | (output only)               |                     |
| narrow_pretrained_seed78_f64_32x32      | 8.63e-15 / 8.63e-15 | (output only)               |                     |
| full-width head (../shared) f32 64x64   | 2.60e-06 / 2.89e-06 | 4.06e-06 (17.1.2.7)         | 3.84e-06 (15.1.2.7) |
| full-width head (../shared) f32 67x53   | 2.86e-06 / 2.81e-06 | 4.27e-06 (17.1.2.7)         | 3.85e-06 (17.1.2.7) |
| full-width head (../shared) f64 64x64   | 8.72e-15 / 8.72e-15 |                             |                     |
| full-width head (../shared) f64 67x53   | 1.03e-14 / 1.03e-14 |                             |                     |

Single-module Torch7 cases (max |diff| / max |oracle|): float32 worst 6.4e-07 (conv_k9_p0_gen_3to32) except the
instance norm with a constant channel, 9.0e-06 (2.4e-05 absolute): float32 ``tf.nn.moments`` leaves a variance of
a few ulp on the flat plane, which 1/sqrt(eps) ~ 316 amplifies (FACTS §2 "Flat inputs"; Torch7 accumulates in
double and outputs exactly the bias). float64 worst 1.0e-15, constant channel 3.4e-14. Replication padding
(crops, pads wider than the input, 3-D input) is bit-identical in both dtypes.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from harness.core.compare import Tolerance, assert_close  # noqa: E402
from parity_tests.ground_truth import OracleRun, SingleModuleCase, fixture_runs, shared_runs, single_module_cases  # noqa: E402
from t7file import T7Module, UnsupportedModuleError, trace_paths  # noqa: E402
from tf_impl.backend import TFBackend  # noqa: E402
from tf_impl.runner import tf_environment  # noqa: E402
from tf_impl.weights import load_root  # noqa: E402

WHOLE_MODEL = {
    "float32": Tolerance(1e-5, why="measured max rel 6.22e-6 over all float32 oracle runs/trace keys, oneDNN on/off"),
    "float64": Tolerance(3e-14, why="measured max rel 1.03e-14 over all float64 oracle runs"),
}
SINGLE_MODULE = {
    "float32": Tolerance(2e-6, why="measured max rel 6.4e-7 over the float32 single-module cases"),
    "float64": Tolerance(4e-15, why="measured max rel 1.0e-15 over the float64 single-module cases"),
}
# A constant plane entering an IN (FACTS §2): float32 moments noise times 1/sqrt(eps).
FLAT_PLANE_IN = {
    "float32": Tolerance(3e-5, why="measured max rel 9.0e-6 (abs 2.4e-5) on instnorm_c5_constchan float32"),
    "float64": Tolerance(1e-13, why="measured max rel 3.4e-14 on instnorm_c5_constchan float64"),
}
EXACT = Tolerance(0.0, why="pure data movement: measured bit-identical")
NAME = "tf"


@pytest.fixture(scope="module")
def runners():
    """(model path, dtype) -> runner, shared by the module's tests (building + tracing a TF graph costs ~1 s)."""
    cache: dict[tuple[str, str], object] = {}

    def get(model, dtype: str):
        key = (str(model), dtype)
        if key not in cache:
            cache[key] = TFBackend().load(model, dtype)
        return cache[key]

    return get


def _check_run(run: OracleRun, runner) -> None:
    output, trace = runner.forward(run.input, trace=True)
    tolerance = WHOLE_MODEL[run.dtype]
    name = f"{NAME} {run.dtype}"
    assert output.dtype == np.dtype(run.dtype)
    assert list(trace) == trace_paths(load_root(run.model_path)), "trace keys must be the Lua paths in order"
    for path, expected in run.trace.items():
        assert_close(trace[path], expected, tolerance, actual_name=name, expected_name="Torch7 oracle",
                     where=f"{run.name} Lua path {path}")
    assert_close(output, run.output, tolerance, actual_name=name, expected_name="Torch7 oracle",
                 where=f"{run.name} output")


@pytest.mark.oracle
@pytest.mark.parametrize("run", fixture_runs(), ids=repr)
def test_committed_oracle_run(run: OracleRun, runners) -> None:
    _check_run(run, runners(run.model_path, run.dtype))


@pytest.mark.oracle
@pytest.mark.parametrize("run", shared_runs() or [pytest.param(None, marks=pytest.mark.skip("no ../shared/oracle"))],
                         ids=repr)
def test_shared_full_width_oracle_run(run: OracleRun, runners) -> None:
    _check_run(run, runners(run.model_path, run.dtype))


def _single_module_root(case: SingleModuleCase) -> T7Module:
    fields = dict(case.hparams)
    fields.update({name: case.arrays[name] for name in ("weight", "bias") if name in case.arrays})
    return T7Module("nn.Sequential", "", {}, (T7Module(case.torch_class, "1", fields),))


@pytest.mark.oracle
@pytest.mark.parametrize("case", single_module_cases(), ids=lambda case: case.name)
def test_single_module(case: SingleModuleCase) -> None:
    runner = TFBackend().load(_single_module_root(case), case.dtype)
    x = case.arrays["input"]
    batched = x[np.newaxis] if x.ndim == 3 else x  # nn accepts C x H x W; the TF port works on batches
    y = runner.run_module("1", batched)
    y = y[0] if x.ndim == 3 else y
    if case.torch_class == "nn.SpatialReplicationPadding":
        tolerance = EXACT
    elif "constchan" in case.name:
        tolerance = FLAT_PLANE_IN[case.dtype]
    else:
        tolerance = SINGLE_MODULE[case.dtype]
    assert y.dtype == np.dtype(case.dtype)
    assert_close(y, case.arrays["output"], tolerance, actual_name=f"{NAME} {case.dtype}",
                 expected_name="Torch7 oracle", where=f"{case.name} ({case.meta.get('constructor', case.torch_class)})")


# -- shapes: odd sizes and batches give exactly Torch's output shapes (FACTS §2 "Odd sizes") ---------------------
HEAD, PRETRAINED = (next(run.model_path for run in fixture_runs() if run.layout == layout)
                    for layout in ("head", "pretrained"))


def _torch_output_hw(layout: str, h: int, w: int) -> tuple[int, int]:
    if layout == "head":
        return 4 * -(-h // 4), 4 * -(-w // 4)
    down = lambda n: (n - 1) // 2 + 1  # noqa: E731 - stride-2 conv k3 p1: floor((n + 2 - 3)/2) + 1
    return 2 * (2 * down(down(h))), 2 * (2 * down(down(w)))  # two full convs: (n-1)*2 - 2 + 3 + 1 = 2n


@pytest.mark.parametrize("layout, model", [("head", HEAD), ("pretrained", PRETRAINED)])
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (3, 3, 13, 9), (2, 3, 1, 1), (1, 3, 67, 53)], ids=str)
def test_output_shapes_match_torch(layout: str, model, shape: tuple[int, ...], runners) -> None:
    x = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    output, trace = runners(model, "float32").forward(x, trace=True)  # trace=True: reuse the traced graph
    assert output.shape == (shape[0], 3, *_torch_output_hw(layout, shape[2], shape[3]))
    assert np.isfinite(output).all()
    assert np.array_equal(trace[trace_paths(load_root(model))[-1]], output)


# -- argument order on non-square cases, against loops written here ----------------------------------------------
def _conv_loop(x, weight, bias, dH, dW, padH, padW):
    """nn.SpatialConvolution by definition: weight (nOut, nIn, kH, kW), zero padding, cross-correlation."""
    n, _, h, w = x.shape
    n_out, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padH, padH), (padW, padW)))
    oh, ow = (h + 2 * padH - kh) // dH + 1, (w + 2 * padW - kw) // dW + 1
    y = np.empty((n, n_out, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * dH:i * dH + kh, j * dW:j * dW + kw]
            y[:, :, i, j] = np.einsum("ncij,ocij->no", patch, weight) + bias
    return y


def _full_conv_loop(x, weight, bias, dH, dW, padH, padW, adjH, adjW):
    """nn.SpatialFullConvolution by definition: weight (nIn, nOut, kH, kW), scatter-add, keep full[p : p + out]."""
    n, _, h, w = x.shape
    _, n_out, kh, kw = weight.shape
    oh, ow = (h - 1) * dH - 2 * padH + kh + adjH, (w - 1) * dW - 2 * padW + kw + adjW
    full = np.zeros((n, n_out, (h - 1) * dH + kh + adjH, (w - 1) * dW + kw + adjW))
    for i in range(h):
        for j in range(w):
            full[:, :, i * dH:i * dH + kh, j * dW:j * dW + kw] += np.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
    return full[:, :, padH:padH + oh, padW:padW + ow] + bias[None, :, None, None]


LOOP_TOLERANCE = Tolerance(1e-14, why="float64 vs a float64 loop: measured max rel <= 4e-16")


@pytest.mark.parametrize("hp", [dict(kW=3, kH=2, dW=1, dH=2, padW=1, padH=0), dict(kW=1, kH=4, dW=3, dH=1, padW=0,
                                                                                  padH=2)], ids=str)
def test_conv_argument_order_nonsquare(hp: dict) -> None:
    rng = np.random.default_rng(5)
    weight, bias, x = rng.standard_normal((4, 3, hp["kH"], hp["kW"])), rng.standard_normal(4), rng.random((2, 3, 9, 7))
    fields = dict(hp, nInputPlane=3, nOutputPlane=4, weight=weight, bias=bias)
    root = T7Module("nn.Sequential", "", {}, (T7Module("nn.SpatialConvolution", "1", fields),))
    y = TFBackend().load(root, "float64").run_module("1", x)
    assert_close(y, _conv_loop(x, weight, bias, hp["dH"], hp["dW"], hp["padH"], hp["padW"]), LOOP_TOLERANCE,
                 actual_name="tf float64", expected_name="loop", where=f"SpatialConvolution {hp}")


@pytest.mark.parametrize("hp", [dict(kW=3, kH=4, dW=2, dH=3, padW=1, padH=2, adjW=1, adjH=0),
                                dict(kW=2, kH=3, dW=3, dH=2, padW=0, padH=0, adjW=2, adjH=1)], ids=str)
def test_full_conv_argument_order_nonsquare(hp: dict) -> None:
    rng = np.random.default_rng(6)
    weight, bias, x = rng.standard_normal((3, 5, hp["kH"], hp["kW"])), rng.standard_normal(5), rng.random((2, 3, 4, 6))
    fields = dict(hp, nInputPlane=3, nOutputPlane=5, weight=weight, bias=bias)
    root = T7Module("nn.Sequential", "", {}, (T7Module("nn.SpatialFullConvolution", "1", fields),))
    y = TFBackend().load(root, "float64").run_module("1", x)
    expected = _full_conv_loop(x, weight, bias, hp["dH"], hp["dW"], hp["padH"], hp["padW"], hp["adjH"], hp["adjW"])
    assert_close(y, expected, LOOP_TOLERANCE, actual_name="tf float64", expected_name="loop",
                 where=f"SpatialFullConvolution {hp}")


def test_instance_norm_without_affine_parameters() -> None:
    """affine=false: no weight/bias fields, so scale 1 and offset 0 (texture_nets' IN with affine off)."""
    x = np.random.default_rng(7).random((2, 3, 5, 4))
    root = T7Module("nn.Sequential", "", {}, (T7Module("nn.InstanceNormalization", "1",
                                                       {"nOutput": 3, "eps": 1e-5, "affine": False}),))
    y = TFBackend().load(root, "float64").run_module("1", x)
    mean, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    assert_close(y, (x - mean) / np.sqrt(var + 1e-5), LOOP_TOLERANCE, actual_name="tf float64",
                 expected_name="numpy formula", where="InstanceNormalization affine=false")


def test_unsupported_class_names_the_path() -> None:
    root = T7Module("nn.Sequential", "", {}, (T7Module("nn.ReLU", "1", {}), T7Module("nn.Tanh", "2", {})))
    with pytest.raises(UnsupportedModuleError) as info:
        TFBackend().load(root, "float32")
    assert info.value.lua_path == "2" and info.value.torch_class == "nn.Tanh"
    assert "nn.SpatialFullConvolution" in info.value.supported


def test_residual_block_runs_as_one_module(runners) -> None:
    """run_module on a residual block path = input + conv branch, as in the oracle trace."""
    run = next(run for run in fixture_runs() if run.layout == "pretrained" and run.dtype == "float32")
    y = runners(run.model_path, "float32").run_module("13", run.trace["12"])
    assert_close(y, run.trace["13"], WHOLE_MODEL["float32"], actual_name="tf float32 (isolated)",
                 expected_name="Torch7 oracle", where=f"{run.name} Lua path 13 fed the oracle's 12")


def test_tf_environment_records_onednn() -> None:
    env = tf_environment()
    assert env["tensorflow"] == tf.__version__
    assert set(env) >= {"TF_ENABLE_ONEDNN_OPTS", "onednn_enabled", "intra_op_threads", "inter_op_threads"}
