"""The PyTorch rebuild (torch_impl) against real Torch7: whole models at every trace key, single modules,
and Torch7's conv/full-conv argument order on non-square cases checked against loops written here.

Measured (torch 2.13.0+cpu), max |diff| / max |oracle| per array:

| oracle run                                | worst over the output and every trace key |
|-------------------------------------------|-----------|
| narrow_head_seed77_f32_32x32              | 2.1e-06   |
| narrow_head_seed77_f32_37x29              | 3.3e-06   |
| narrow_pretrained_seed78_f32_32x32        | 5.0e-06   |
| narrow_pretrained_seed78_f32_37x29        | 3.8e-06   |
| narrow_pretrained_seed78_f32_2x24x20      | 5.9e-06   |
| narrow_head_seed77_f64_32x32              | 3.2e-15   |
| narrow_pretrained_seed78_f64_32x32        | 5.9e-15   |
| johnson_head_seed1234_f32_64x64 (shared)  | 4.2e-06   |
| johnson_head_seed1234_f32_67x53 (shared)  | 3.7e-06   |
| johnson_head_seed1234_f64_64x64 (shared)  | 7.4e-15   |
| johnson_head_seed1234_f64_67x53 (shared)  | 7.8e-15   |

(2026-12-01, channels-last float32 convolutions; `scripts/agreement_table.py --backend torch`.)

Single-module Torch7 cases, worst per class: SpatialConvolution f32 6.4e-07 / f64 7.6e-16
(conv_k9_p0_gen_3to32), SpatialFullConvolution f32 8.5e-08 / f64 4.7e-16, InstanceNormalization f32 0
(bit-identical: torch_impl repeats THNN's arithmetic) / f64 3.4e-14 (instnorm_c5_constchan: Torch7's own
double sum leaves one ulp of the constant channel's mean, which 1/sqrt(eps) = 316 amplifies; torch_impl
gives exactly b there, other f64 IN cases 2.8e-16), SpatialReplicationPadding exactly 0 (crops included).
The float32 whole-model error is the convolutions' summation order (PyTorch/oneDNN vs OpenBLAS).

The real v1-era models (../shared/oracle/v1, docs/real-models.md), each run's own noise injected and its
batch-norm mode, max |diff| / max(1, max |oracle|) over the output and every traced path of the file:

| oracle run                        | torch, worst over the output and every path |
|-----------------------------------|------------------|
| v1_starry_c_64x64_f64             | 1.0e-13          |
| v1_pebble_c_64x64_f64             | 1.4e-14          |
| v1_starry_a_64x64_f32             | 5.8e-05 (output 5.82e-05; 2.65e-05 with the plain-layout convolutions before) |
| v1_pebble_a_64x64_f32             | 3.1e-05 (output 3.13e-05; 1.72e-05 before) |
| demos_starry_a_64x64_f32          | 4.8e-06 (output 3.3e-06; 3.61e-06 before) |
| doodle_starry_night_a_64x64_f32   | 1.7e-05 (output 1.67e-05; 1.16e-05 before) |

Torch7's own float32 output on these runs is 2.2e-6 (demos), 1.0e-5 (doodle), 2.0e-5 (pebble) and 4.9e-5
(starry) from the exact forward of the same input (../shared/oracle/v1/README.md): torch float32 is within 1.6x
of how close Torch7 is to exact arithmetic; its convolutions sum in oneDNN's channels-last order, not THBlas's,
which the ill-conditioned batch norms of the style nets amplify (docs/real-models.md, "Float32 conditioning").
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contract import BackendError  # noqa: E402
from harness.core.compare import Tolerance, assert_close  # noqa: E402
from parity_tests.ground_truth import (  # noqa: E402
    REAL_MODELS_DIR,
    fixture_runs,
    single_module_cases,
)
from t7file import T7ModelError, T7Module, TensorStorage, UnsupportedModuleError, load_module_tree, trace_paths  # noqa: E402
from torch_impl import SUPPORTED_CLASSES, load_torch_model  # noqa: E402
from torch_impl.backend import TorchBackend  # noqa: E402

WHOLE_MODEL = {
    "float32": Tolerance(1e-5, why="measured max rel 5.24e-6 over all committed and shared float32 runs/trace keys"),
    "float64": Tolerance(5e-14, why="measured max rel 7.8e-15 over all float64 runs (a few ulp)"),
}
SINGLE_MODULE = {
    "float32": Tolerance(2e-6, why="measured max rel 6.4e-7 over the float32 single-module cases"),
    "float64": Tolerance(1e-13, why="measured max rel 3.4e-14 (IN constant channel, Torch7's one-ulp mean; "
                                    "others <= 7.7e-16)"),
}
EXACT = Tolerance(0.0, why="pure data movement: measured bit-identical")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.oracle
@pytest.mark.parametrize("model", sorted({run.model_path for run in fixture_runs()}), ids=lambda p: p.stem)
def test_trace_keys_are_the_lua_paths(model) -> None:
    root = load_module_tree(model)
    runner = TorchBackend().load(root, "float32")
    _, trace = runner.forward(np.random.default_rng(0).random((1, 3, 16, 12), dtype=np.float32), trace=True)
    assert list(trace) == trace_paths(root)
    built = dict(load_torch_model(root).named_modules())
    assert {m.lua_path for m in root.walk()} == set(built), "every Lua path names exactly one built module"


def test_modules_are_reachable_by_lua_path() -> None:
    model = load_torch_model(fixture_runs()[0].model_path)
    branch_relu = model.get_submodule("13.1.2.4")
    assert isinstance(branch_relu, torch.nn.ReLU)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_ascii_file_gives_the_same_model() -> None:
    runs = [run for run in fixture_runs() if run.layout == "pretrained" and run.dtype == "float32"]
    ascii_path = runs[0].model_path.with_name(runs[0].model_path.stem + "_ascii.t7")
    x = runs[0].input
    from_binary, _ = TorchBackend().load(runs[0].model_path, "float32").forward(x)
    from_ascii, _ = TorchBackend().load(ascii_path, "float32").forward(x)
    assert_close(from_ascii, from_binary, EXACT, actual_name="ascii .t7", expected_name="binary .t7", where="output")


# -- single modules ------------------------------------------------------------------


def _one_module_model(torch_class: str, fields: dict) -> T7Module:
    return T7Module("nn.Sequential", "", {}, (T7Module(torch_class, "1", fields),))


@pytest.mark.oracle
@pytest.mark.parametrize("case", single_module_cases(), ids=lambda case: case.name)
def test_single_module_case(case) -> None:
    fields = dict(case.hparams)
    fields.update({key: case.arrays[key] for key in ("weight", "bias") if key in case.arrays})
    runner = TorchBackend().load(_one_module_model(case.torch_class, fields), case.dtype)
    output = runner.run_module("1", case.arrays["input"])
    tolerance = EXACT if case.torch_class == "nn.SpatialReplicationPadding" else SINGLE_MODULE[case.dtype]
    assert_close(output, case.arrays["output"], tolerance, actual_name=f"torch {case.dtype}",
                 expected_name="Torch7 oracle", where=f"{case.name} ({case.meta.get('constructor', case.torch_class)})")


def test_instance_norm_ignores_running_statistics_and_bn() -> None:
    """docs/torch7-semantics.md: evaluate() is a no-op; running stats, bn, train, momentum are never used;
    no affine -> 1, 0."""
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, (2, 3, 5, 4))
    misleading = {"nOutput": 3, "eps": 1e-5, "train": False, "momentum": 0.5, "running_mean": np.full(3, 100.0),
                  "running_var": np.full(3, 1e-3), "bn": {"running_mean": np.full(6, 7.0), "train": False}}
    runner = TorchBackend().load(_one_module_model("nn.InstanceNormalization", misleading), "float64")
    output = runner.run_module("1", x)
    mean = x.mean(axis=(2, 3), keepdims=True)
    expected = (x - mean) / np.sqrt(x.var(axis=(2, 3), keepdims=True) + 1e-5)  # biased variance, eps inside
    assert_close(output, expected, Tolerance(1e-14, why="float64 vs direct formula: measured max rel 3.7e-16"),
                 actual_name="torch", expected_name="numpy formula", where="IN without affine, misleading fields")


def test_instance_norm_of_a_single_pixel_plane_is_the_bias() -> None:
    """docs/torch7-semantics.md: a constant plane yields exactly b; a 1x1 plane is one (PyTorch's
    F.instance_norm refuses it)."""
    fields = {"nOutput": 3, "eps": 1e-5, "weight": np.array([0.5, 1.5, 2.0]), "bias": np.array([-0.25, 0.0, 0.75])}
    runner = TorchBackend().load(_one_module_model("nn.InstanceNormalization", fields), "float32")
    output = runner.run_module("1", np.random.default_rng(1).random((2, 3, 1, 1), dtype=np.float32))
    expected = np.broadcast_to(fields["bias"].astype(np.float32)[None, :, None, None], (2, 3, 1, 1))
    assert_close(output, expected, EXACT, actual_name="torch", expected_name="bias", where="IN on 1x1 planes")


@pytest.mark.parametrize("height,width", [(1, 1), (4, 4), (5, 3)])
def test_tiny_inputs_run_like_torch7(height: int, width: int) -> None:
    """Head layout: output 4*ceil(H/4) x 4*ceil(W/4) (docs/torch7-semantics.md), even when the residual stage is 1x1."""
    run = next(run for run in fixture_runs() if run.layout == "head")
    output, _ = TorchBackend().load(run.model_path, "float32").forward(np.full((1, 3, height, width), 0.5, np.float32))
    assert output.shape == (1, 3, 4 * -(-height // 4), 4 * -(-width // 4)) and np.isfinite(output).all()


def test_unknown_class_names_class_path_and_supported() -> None:
    root = T7Module("nn.Sequential", "", {}, (T7Module("nn.Tanh", "1", {}),))
    with pytest.raises(UnsupportedModuleError) as raised:
        load_torch_model(root)
    message = str(raised.value)
    assert "nn.Tanh" in message and "Lua path 1" in message
    assert set(raised.value.supported) == set(SUPPORTED_CLASSES) and "nn.SpatialConvolution" in message


# -- Torch7's (kW, kH, dW, dH, padW, padH) order on non-square cases -------------------


def _torch7_conv_loops(x, weight, bias, kw, kh, dw, dh, padw, padh):
    """SpatialConvolution by definition: zero-pad, cross-correlate, out = floor((H + 2p - k)/d) + 1."""
    n, c_in, h, w = x.shape
    padded = np.zeros((n, c_in, h + 2 * padh, w + 2 * padw))
    padded[:, :, padh:padh + h, padw:padw + w] = x
    out_h, out_w = (h + 2 * padh - kh) // dh + 1, (w + 2 * padw - kw) // dw + 1
    out = np.zeros((n, weight.shape[0], out_h, out_w))
    for b in range(n):
        for o in range(weight.shape[0]):
            for i in range(out_h):
                for j in range(out_w):
                    patch = padded[b, :, i * dh:i * dh + kh, j * dw:j * dw + kw]
                    out[b, o, i, j] = np.sum(patch * weight[o]) + bias[o]
    return out


def _torch7_full_conv_loops(x, weight, bias, kw, kh, dw, dh, padw, padh, adjw, adjh):
    """SpatialFullConvolution by definition: scatter-add weight (nIn, nOut, kH, kW), no flip, crop p, add adj."""
    n, c_in, h, w = x.shape
    full = np.zeros((n, weight.shape[1], (h - 1) * dh + kh + adjh, (w - 1) * dw + kw + adjw))
    for b in range(n):
        for i in range(h):
            for j in range(w):
                for c in range(c_in):
                    full[b, :, i * dh:i * dh + kh, j * dw:j * dw + kw] += x[b, c, i, j] * weight[c]
    out_h, out_w = (h - 1) * dh - 2 * padh + kh + adjh, (w - 1) * dw - 2 * padw + kw + adjw
    return full[:, :, padh:padh + out_h, padw:padw + out_w] + bias[None, :, None, None]


LOOPS = Tolerance(1e-13, why="float64 vs float64 loops: measured max rel 2.9e-16")

# (kW, kH, dW, dH, padW, padH): every pair differs, so a swap of W and H changes the result or its shape.
CONV_CASES = [(3, 2, 1, 2, 0, 1), (1, 4, 3, 1, 2, 0), (5, 3, 2, 3, 1, 2)]
FULL_CONV_CASES = [(3, 2, 2, 1, 1, 0, 1, 0), (2, 4, 1, 3, 0, 1, 0, 2), (4, 3, 3, 2, 2, 1, 2, 1)]


@pytest.mark.parametrize("kw,kh,dw,dh,padw,padh", CONV_CASES)
def test_convolution_follows_torch7_argument_order(kw, kh, dw, dh, padw, padh) -> None:
    rng = np.random.default_rng(kw * 100 + kh)
    x = rng.normal(size=(2, 2, 7, 6))
    weight, bias = rng.normal(size=(3, 2, kh, kw)), rng.normal(size=3)
    fields = {"nInputPlane": 2, "nOutputPlane": 3, "kW": kw, "kH": kh, "dW": dw, "dH": dh, "padW": padw,
              "padH": padh, "weight": weight, "bias": bias}
    output = TorchBackend().load(_one_module_model("nn.SpatialConvolution", fields), "float64").run_module("1", x)
    expected = _torch7_conv_loops(x, weight, bias, kw, kh, dw, dh, padw, padh)
    assert_close(output, expected, LOOPS, actual_name="torch", expected_name="Torch7 loops",
                 where=f"SpatialConvolution(2,3,{kw},{kh},{dw},{dh},{padw},{padh})")


@pytest.mark.parametrize("kw,kh,dw,dh,padw,padh,adjw,adjh", FULL_CONV_CASES)
def test_full_convolution_follows_torch7_argument_order(kw, kh, dw, dh, padw, padh, adjw, adjh) -> None:
    rng = np.random.default_rng(kw * 100 + kh)
    x = rng.normal(size=(2, 3, 4, 5))
    weight, bias = rng.normal(size=(3, 2, kh, kw)), rng.normal(size=2)
    fields = {"nInputPlane": 3, "nOutputPlane": 2, "kW": kw, "kH": kh, "dW": dw, "dH": dh, "padW": padw,
              "padH": padh, "adjW": adjw, "adjH": adjh, "weight": weight, "bias": bias}
    output = TorchBackend().load(_one_module_model("nn.SpatialFullConvolution", fields), "float64").run_module("1", x)
    expected = _torch7_full_conv_loops(x, weight, bias, kw, kh, dw, dh, padw, padh, adjw, adjh)
    assert_close(output, expected, LOOPS, actual_name="torch", expected_name="Torch7 loops",
                 where=f"SpatialFullConvolution(3,2,{kw},{kh},{dw},{dh},{padw},{padh},{adjw},{adjh})")


def test_thread_count_applies_during_runs_only() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    runner = TorchBackend(num_threads=before + 1).load(fixture_runs()[0].model_path, "float32")
    runner.model.get_submodule("1").register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    runner.forward(np.zeros((1, 3, 8, 8), dtype=np.float32))
    assert seen == [before + 1] and torch.get_num_threads() == before


# -- the real v1-era models (docs/real-models.md) -------------------------------------------------------------------

# Scale max(1, max |oracle|), as ../shared/oracle/v1/README.md measures: atol = rtol.
STARRY = REAL_MODELS_DIR / "texture_nets_v1__starry_style.t7"
PEBBLE = REAL_MODELS_DIR / "texture_nets_v1__pebble.png_model.t7"
DOODLE = REAL_MODELS_DIR / "online-neural-doodle__starry_night.t7"
needs_real_models = pytest.mark.skipif(not STARRY.is_file(), reason="no ../shared/realmodels")


@needs_real_models
def test_noise_is_checked_and_named_by_lua_path() -> None:
    runner = TorchBackend().load(STARRY, "float64")
    x = np.random.default_rng(0).random((1, 6, 32, 32))
    shapes = {"1.1.1.1.1.1.1.1.2": 2, "1.1.1.1.1.1.1.2.2": 4, "1.1.1.1.1.2.2": 8, "1.1.1.2.2": 16, "1.2.2": 32}
    noise = {path: np.zeros((1, 3, size, size)) for path, size in shapes.items()}
    runner.forward(x, noise=noise)
    with pytest.raises(BackendError, match=r"no noise given .* 1\.1\.1\.1\.1\.1\.1\.1\.2, .*1\.2\.2"):
        runner.forward(x)
    with pytest.raises(BackendError, match=r"Lua path\(s\) 1\.2\.2"):
        runner.forward(x, noise={path: value for path, value in noise.items() if path != "1.2.2"})
    with pytest.raises(BackendError, match=r"Lua path 1\.1\.1\.2\.2 has shape 1x3x15x16"):
        runner.forward(x, noise={**noise, "1.1.1.2.2": np.zeros((1, 3, 15, 16))})
    with pytest.raises(BackendError, match=r"Lua path\(s\) 2\.1, which draw no noise"):
        runner.forward(x, noise={**noise, "2.1": np.zeros((1, 3, 32, 32))})
    with pytest.raises(BackendError, match=r"N x 6 x H x W"):
        runner.forward(x[:, :3], noise=noise)
    # run_module needs only the noise inside the module; a container runs whole.
    branch = runner.run_module("1.2", x, noise={"1.2.2": noise["1.2.2"]})
    assert branch.shape == (1, 8, 32, 32)
    with pytest.raises(BackendError, match=r"1\.2\.2"):
        runner.run_module("1.2", x)


@needs_real_models
def test_gen_noise_places_the_injected_arrays() -> None:
    """texture_nets' GenNoise replaces channels 4-6 of a style net's pooled input (all of a texture net's);
    the doodle's returns the injected planes (docs/real-models.md)."""
    rng = np.random.default_rng(3)
    style = TorchBackend().load(STARRY, "float64")
    x, drawn = rng.random((2, 6, 4, 6)), rng.random((2, 3, 4, 6))
    filled = style.run_module("1.2.2", x, noise={"1.2.2": drawn})
    np.testing.assert_array_equal(filled, np.concatenate([x[:, :3], drawn], axis=1))
    texture = TorchBackend().load(PEBBLE, "float32")
    x, drawn = rng.random((1, 3, 4, 4), dtype=np.float32), rng.random((1, 3, 4, 4), dtype=np.float32)
    np.testing.assert_array_equal(texture.run_module("1.2.2", x, noise={"1.2.2": drawn}), drawn)
    doodle = TorchBackend().load(DOODLE, "float32")
    planes = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    out = doodle.run_module("2.1.1.1", rng.random((1, 4, 8, 8), dtype=np.float32), noise={"2.1.1.1": planes})
    np.testing.assert_array_equal(out, planes)


def _pad_rule(x: np.ndarray, left: int, right: int, top: int, bottom: int) -> np.ndarray:
    """supplementary/utils.lua's SpatialCircularPadding, written out step by step, 1-based as in Lua."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    src = x[:, :, max(0, -top):h - max(0, -bottom), max(0, -left):w - max(0, -right)]
    out[:, :, max(0, top):max(0, top) + src.shape[2], max(0, left):max(0, left) + src.shape[3]] = src
    oh, ow = out.shape[2:]
    row = lambda i: out[:, :, i - 1]  # noqa: E731
    out[:, :, 0] = row(oh - 1).copy()
    out[:, :, oh - 1] = row(2).copy()
    out[:, :, :, 0] = out[:, :, :, ow - 2].copy()
    out[:, :, :, ow - 1] = out[:, :, :, 1].copy()
    return out


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 0, 0, 0), (2, 1, 0, 3), (-1, 1, 1, -2)],
                         ids=["pad1", "pad0", "uneven", "negative"])
def test_circular_padding_is_the_utils_lua_rule(pads) -> None:
    x = np.random.default_rng(4).normal(size=(2, 3, 5, 6))
    fields = dict(zip(("pad_l", "pad_r", "pad_t", "pad_b"), pads, strict=True))
    output = TorchBackend().load(_one_module_model("nn.SpatialCircularPadding", fields), "float64").run_module("1", x)
    assert_close(output, _pad_rule(x, *pads), EXACT, actual_name="torch", expected_name="utils.lua rule",
                 where=f"SpatialCircularPadding{pads}")
    if pads == (1, 1, 1, 1):
        np.testing.assert_array_equal(output, np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="wrap"))
    if pads == (0, 0, 0, 0):
        assert not np.array_equal(output, x), "pad 0 overwrites the border: not an identity"


def test_average_pooling_sums_sequentially_in_the_element_type() -> None:
    """THNN's order, reproduced by PyTorch's kernel (torch_impl.pyramid.AveragePool): a float32 running sum
    over ky then kx, divided afterwards. Heavy-tailed values make any other order differ."""
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(1, 2, 37, 29)) * np.exp(rng.normal(0, 4, size=(1, 2, 37, 29)))).astype(np.float32)
    for k_w, k_h, d_w, d_h in [(4, 4, 4, 4), (16, 16, 16, 16), (3, 2, 1, 2)]:
        fields = {"kW": k_w, "kH": k_h, "dW": d_w, "dH": d_h, "padW": 0, "padH": 0, "ceil_mode": False}
        runner = TorchBackend().load(_one_module_model("nn.SpatialAveragePooling", fields), "float32")
        output = runner.run_module("1", x)
        out_h, out_w = (37 - k_h) // d_h + 1, (29 - k_w) // d_w + 1
        expected = np.zeros((1, 2, out_h, out_w), dtype=np.float32)
        for i in range(out_h):
            for j in range(out_w):
                total = np.zeros((1, 2), dtype=np.float32)
                for ky in range(k_h):
                    for kx in range(k_w):
                        total = total + x[:, :, i * d_h + ky, j * d_w + kx]
                expected[:, :, i, j] = total / np.float32(k_h * k_w)
        np.testing.assert_array_equal(output, expected, err_msg=f"pooling {k_w}x{k_h} stride {d_w}x{d_h}")


def test_concat_copies_row_major_when_counts_match_and_names_the_path_otherwise() -> None:
    """nn.Concat(2): the first branch's shape, channels summed; Torch7's copy reshapes a branch with the same
    element count (2x4 into 4x2) and refuses any other size."""
    def branch(path: str, pads: tuple[int, int, int, int]) -> T7Module:
        fields = dict(zip(("pad_l", "pad_r", "pad_t", "pad_b"), pads, strict=True))
        return T7Module("nn.SpatialReplicationPadding", path, fields)

    def concat(second: tuple[int, int, int, int]) -> T7Module:
        node = T7Module("nn.Concat", "1", {"dimension": 2},
                        (branch("1.1", (0, 0, 0, 0)), branch("1.2", second)))
        return T7Module("nn.Sequential", "", {}, (node,))

    x = np.arange(2 * 3 * 4 * 2, dtype=np.float64).reshape(2, 3, 4, 2)
    runner = TorchBackend().load(concat((1, 1, -1, -1)), "float64")  # second branch: 2x4
    output = runner.run_module("1", x)
    second = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1)), mode="edge")[:, :, 1:-1]
    np.testing.assert_array_equal(output, np.concatenate([x, second.reshape(2, 3, 4, 2)], axis=1))
    with pytest.raises(BackendError, match=r"nn.Concat at Lua path 1: branch 2 gives 2x3x5x3.*2x3x4x2"):
        TorchBackend().load(concat((0, 1, 0, 1)), "float64").run_module("1", x)


def _batch_norm_tree(features: int, flat: np.ndarray | None = None, offsets: tuple[int, int] = (0, 0)) -> T7Module:
    rng = np.random.default_rng(6)
    fields = {"eps": 1e-5, "affine": True, "running_mean": rng.normal(size=features),
              "running_var": rng.random(features) + 0.5}
    storages = {}
    if flat is None:
        fields.update(weight=rng.normal(size=features), bias=rng.normal(size=features))
    else:
        fields.update(weight=flat[offsets[0]:offsets[0] + features], bias=flat[offsets[1]:offsets[1] + features])
        storages = {"weight": TensorStorage(flat, offsets[0]), "bias": TensorStorage(flat, offsets[1])}
    return T7Module("nn.Sequential", "", {}, (T7Module("nn.SpatialBatchNormalization", "1", fields, (), storages),))


def test_batch_norm_train_and_evaluate_modes() -> None:
    """Train: the batch's mean and biased variance over N x H x W (samples coupled); evaluate: running statistics."""
    tree = _batch_norm_tree(3)
    bn = tree.children[0].fields
    x = np.random.default_rng(7).normal(2.0, 3.0, size=(2, 3, 4, 5))
    train = TorchBackend().load(tree, "float64", batchnorm="train").run_module("1", x)
    mean, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    gamma, beta = bn["weight"][None, :, None, None], bn["bias"][None, :, None, None]
    formula = Tolerance(1e-14, why="float64 vs the direct formula: measured max rel 4.4e-16")
    assert_close(train, (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, formula, actual_name="torch",
                 expected_name="batch statistics", where="train mode")
    evaluate = TorchBackend().load(tree, "float64", batchnorm="evaluate").run_module("1", x)
    running = (x - bn["running_mean"][None, :, None, None]) / np.sqrt(bn["running_var"][None, :, None, None] + 1e-5)
    assert_close(evaluate, running * gamma + beta, formula, actual_name="torch", expected_name="running statistics",
                 where="evaluate mode")


def test_batch_norm_with_fewer_features_reads_the_flat_storage_in_train_mode_only() -> None:
    """docs/real-models.md, "The aliasing trap": gamma[c] = flat[weight_offset + c], beta[c] = flat[bias_offset + c]."""
    flat = np.random.default_rng(8).normal(size=40)
    tree = _batch_norm_tree(2, flat, (10, 12))
    x = np.random.default_rng(9).normal(size=(2, 5, 3, 3))
    output = TorchBackend().load(tree, "float64", batchnorm="train").run_module("1", x)
    normalised = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    expected = normalised * flat[10:15][None, :, None, None] + flat[12:17][None, :, None, None]
    assert_close(output, expected, Tolerance(1e-14, why="measured max rel 2.2e-16"), actual_name="torch",
                 expected_name="flat-storage gamma/beta", where="2 features, 5 channels")
    with pytest.raises(T7ModelError, match=r"2 features cannot normalise 5 channels.*running statistics"):
        TorchBackend().load(tree, "float64", batchnorm="evaluate").run_module("1", x)
    with pytest.raises(T7ModelError, match=r"2 features cannot normalise 50 channels.*holds 28 values"):
        TorchBackend().load(tree, "float64", batchnorm="train").run_module("1", np.zeros((1, 50, 2, 2)))
    without_storage = _batch_norm_tree(2)
    with pytest.raises(T7ModelError, match=r"without the file's flat storage"):
        TorchBackend().load(without_storage, "float64", batchnorm="train").run_module("1", x)


@needs_real_models
def test_aliased_batch_norms_of_a_real_file_refuse_evaluate_mode() -> None:
    with pytest.raises(T7ModelError, match=r"Lua path 1\.1\.1\.1\.1\.1\.9: in evaluate mode .* 16 channels"):
        TorchBackend().load(STARRY, "float32", batchnorm="evaluate")
    with pytest.raises(BackendError, match="batchnorm must be one of"):
        TorchBackend().load(STARRY, "float32", batchnorm="eval")


def test_classes_of_old_and_cudnn_files_are_their_nn_twins() -> None:
    """nn.SpatialConvolutionMM (2-D weight), cudnn.SpatialConvolution, cudnn.ReLU and cudnn.SpatialBatchNormalization
    run as nn.SpatialConvolution, nn.ReLU and nn.SpatialBatchNormalization."""
    rng = np.random.default_rng(10)
    weight, bias = rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
    conv = {"nInputPlane": 3, "nOutputPlane": 4, "kW": 2, "kH": 3, "dW": 1, "dH": 1, "padW": 1, "padH": 0,
            "weight": weight, "bias": bias}
    x = rng.normal(size=(2, 3, 6, 5))
    expected = TorchBackend().load(_one_module_model("nn.SpatialConvolution", conv), "float64").run_module("1", x)
    for torch_class, fields in [("nn.SpatialConvolutionMM", {**conv, "weight": weight.reshape(4, -1)}),
                                ("cudnn.SpatialConvolution", {**conv, "groups": 1, "weight_offset": 24})]:
        output = TorchBackend().load(_one_module_model(torch_class, fields), "float64").run_module("1", x)
        np.testing.assert_array_equal(output, expected, err_msg=torch_class)
    relu = TorchBackend().load(_one_module_model("cudnn.ReLU", {"inplace": True}), "float64").run_module("1", x)
    np.testing.assert_array_equal(relu, np.maximum(x, 0))
    bn_fields = dict(_batch_norm_tree(3).children[0].fields)
    nn_bn = TorchBackend().load(_one_module_model("nn.SpatialBatchNormalization", bn_fields), "float64")
    cudnn_bn = TorchBackend().load(_one_module_model("cudnn.SpatialBatchNormalization", bn_fields), "float64")
    np.testing.assert_array_equal(cudnn_bn.run_module("1", x), nn_bn.run_module("1", x))


def test_noise_fill_copies_without_noise_channels_and_refuses_others() -> None:
    x = np.random.default_rng(11).random((1, 4, 3, 3))
    copy = TorchBackend().load(_one_module_model("nn.NoiseFill", {"num_noise_channels": 0}), "float64")
    np.testing.assert_array_equal(copy.run_module("1", x), x)
    with pytest.raises(T7ModelError, match=r"num_noise_channels = 3"):
        TorchBackend().load(_one_module_model("nn.NoiseFill", {"num_noise_channels": 3}), "float64")


def test_leaky_relu_and_upsampling() -> None:
    x = np.random.default_rng(12).normal(size=(1, 2, 3, 4)).astype(np.float32)
    leaky = TorchBackend().load(_one_module_model("nn.LeakyReLU", {"negval": 0.01}), "float32").run_module("1", x)
    np.testing.assert_array_equal(leaky, np.where(x > 0, x, x * np.float32(0.01)))
    up = TorchBackend().load(_one_module_model("nn.SpatialUpSamplingNearest", {"scale_factor": 3}), "float32")
    np.testing.assert_array_equal(up.run_module("1", x), x.repeat(3, axis=2).repeat(3, axis=3))


@needs_real_models
def test_every_real_model_runs_at_batch_2_and_a_non_square_size() -> None:
    """All eleven public files, 2 x C x 96 x 64: the output shape, finite values, and batch-statistics coupling
    exactly where the family's batch norms run in train mode (float64: in float32 the convolution kernels
    themselves change with the batch size, by rounding)."""
    from contract.families import batchnorm_mode, noise_modules

    for path in sorted(REAL_MODELS_DIR.glob("*.t7")):
        root = load_module_tree(path)
        runner = TorchBackend().load(root, "float64")
        rng = np.random.default_rng(13)
        x = rng.random((2, runner.planes, 96, 64))
        shapes = _noise_shapes(root, runner)
        noise = {p: rng.random(shape) for p, shape in shapes.items()}
        output, _ = runner.forward(x, noise=noise)
        assert output.shape == (2, 3, 96, 64) and np.isfinite(output).all(), path.name
        alone, _ = runner.forward(x[:1], noise={p: a[:1] for p, a in noise.items()})
        # Measured: 0.27 .. 1.4 of the output scale where batch statistics couple the samples, 0 where they do not.
        change = np.abs(alone[0] - output[0]).max() / np.abs(output[0]).max()
        assert (change > 1e-6) == (batchnorm_mode(root) == "train"), f"{path.name}: {change:.3g}"
        assert [m.lua_path for m in noise_modules(root)] == list(shapes), path.name


def _noise_shapes(root: T7Module, runner) -> dict[str, tuple[int, ...]]:
    from torch_impl.noise import probe_noise_shapes

    return probe_noise_shapes(runner.model, torch.zeros((2, runner.planes, 96, 64), dtype=torch.float64))
