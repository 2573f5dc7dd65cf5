"""The NumPy reference's primitives: each Torch7 single-module case, plus definitions checked with loops here.

Single-module Torch7 cases (``ground_truth.single_module_cases()``, committed + ../shared), measured
max |diff| / max |oracle|:

| case family                                   | float32          | float64            |
|-----------------------------------------------|------------------|--------------------|
| SpatialReplicationPadding (7 cases, 3-D too)   | 0 (bit-exact)    | 0 (bit-exact)      |
| SpatialConvolution k3 s1/s2, k9, 3->32 k9      | <= 5.7e-07       | <= 4.5e-16         |
| SpatialFullConvolution (adj 0/1, 1x1, batch 2, 128->64) | <= 3.0e-07 | <= 3.9e-16       |
| InstanceNormalization (batch 2, const channel, evaluate) | <= 8.4e-08 | 0 (bit-exact)   |

Worst float32: conv_k9_p0_float32 5.7e-07; worst float64: conv_k3_s1_p0_float64 4.5e-16. The float64
instance norms are bit-exact because their sums run in Torch's left-to-right order: with NumPy's
pairwise sum the constant-channel case was 3.4e-14 off (Torch7's own output there is b + ~1e-13, not b).
The loop checks below (float64, non-square kernels, strides, pads and adjustments, so a W/H swap changes
the result) measured <= 2.7e-16.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.compare import Tolerance, assert_close
from parity_tests.ground_truth import SingleModuleCase, single_module_cases
from reference import SUPPORTED_CLASSES, load_network
from reference.backend import ReferenceBackend
from t7file import T7ModelError, T7Module, UnsupportedModuleError

SINGLE_MODULE = {
    "float32": Tolerance(2e-6, why="measured max rel 5.7e-7 (conv_k9_p0) over the float32 single-module cases"),
    "float64": Tolerance(1e-14, why="measured max rel 4.5e-16 (conv_k3_s1_p0) over the float64 cases"),
}
EXACT = Tolerance(0.0, why="pure data movement: measured bit-identical")
LOOPS = Tolerance(1e-13, why="float64 vs float64 loops written here: measured max rel 2.7e-16")


def _runner(torch_class: str, fields: dict, dtype: str = "float64"):
    return ReferenceBackend().load(T7Module(torch_class, "", fields), dtype)


@pytest.mark.oracle
@pytest.mark.parametrize("case", single_module_cases(), ids=lambda case: case.name)
def test_single_module_case(case: SingleModuleCase) -> None:
    fields = dict(case.hparams)
    fields.update({key: case.arrays[key] for key in ("weight", "bias") if key in case.arrays})
    output = _runner(case.torch_class, fields, case.dtype).run_module("", case.arrays["input"])
    assert output.dtype == np.dtype(case.dtype)
    tolerance = EXACT if case.torch_class == "nn.SpatialReplicationPadding" else SINGLE_MODULE[case.dtype]
    assert_close(output, case.arrays["output"], tolerance, actual_name=f"reference {case.dtype}",
                 expected_name="Torch7 oracle", where=f"{case.name} ({case.meta.get('constructor', case.torch_class)})")


# -- definitions, written as loops (independent of reference/) ----------------------------------------


def _conv_loops(x, weight, bias, kw, kh, dw, dh, padw, padh):
    n, c_in, h, w = x.shape
    padded = np.zeros((n, c_in, h + 2 * padh, w + 2 * padw))
    padded[:, :, padh:padh + h, padw:padw + w] = x
    out_h, out_w = (h + 2 * padh - kh) // dh + 1, (w + 2 * padw - kw) // dw + 1
    out = np.empty((n, weight.shape[0], out_h, out_w))
    for b in range(n):
        for y in range(out_h):
            for z in range(out_w):
                patch = padded[b, :, y * dh:y * dh + kh, z * dw:z * dw + kw]
                out[b, :, y, z] = np.einsum("cij,ocij->o", patch, weight) + bias
    return out


def _full_conv_loops(x, weight, bias, kw, kh, dw, dh, padw, padh, adjw, adjh):
    n, _, h, w = x.shape
    n_out = weight.shape[1]
    canvas = np.zeros((n, n_out, (h - 1) * dh + kh + adjh, (w - 1) * dw + kw + adjw))
    for b in range(n):
        for y in range(h):
            for z in range(w):
                canvas[b, :, y * dh:y * dh + kh, z * dw:z * dw + kw] += np.einsum("c,coij->oij", x[b, :, y, z], weight)
    out_h, out_w = (h - 1) * dh - 2 * padh + kh + adjh, (w - 1) * dw - 2 * padw + kw + adjw
    return canvas[:, :, padh:padh + out_h, padw:padw + out_w] + bias[None, :, None, None]


# (kW, kH, dW, dH, padW, padH), every W differing from its H; (4, 2) planes takes the output-taps path
# (stride 1, fewer outputs than inputs), the others the unfold path.
CONV_CASES = [((2, 3), (3, 2, 1, 2, 0, 1)), ((2, 3), (1, 4, 3, 1, 2, 0)), ((2, 3), (5, 3, 2, 3, 1, 2)),
              ((4, 2), (3, 2, 1, 1, 1, 0)), ((4, 2), (2, 5, 1, 1, 0, 2))]
FULL_CONV_CASES = [(3, 2, 2, 1, 1, 0, 1, 0), (2, 4, 1, 3, 0, 1, 0, 2), (4, 3, 3, 2, 2, 1, 2, 1)]


@pytest.mark.parametrize("planes,hparams", CONV_CASES, ids=lambda v: "x".join(map(str, v)))
def test_convolution_follows_torch7_argument_order(planes, hparams) -> None:
    (n_in, n_out), (kw, kh, dw, dh, padw, padh) = planes, hparams
    rng = np.random.default_rng(sum(hparams))
    x = rng.normal(size=(2, n_in, 9, 8))
    weight, bias = rng.normal(size=(n_out, n_in, kh, kw)), rng.normal(size=n_out)
    fields = {"nInputPlane": n_in, "nOutputPlane": n_out, "kW": kw, "kH": kh, "dW": dw, "dH": dh, "padW": padw,
              "padH": padh, "weight": weight, "bias": bias}
    output = _runner("nn.SpatialConvolution", fields).run_module("", x)
    assert_close(output, _conv_loops(x, weight, bias, kw, kh, dw, dh, padw, padh), LOOPS,
                 actual_name="reference", expected_name="loops", where=f"SpatialConvolution({n_in},{n_out},{hparams})")


@pytest.mark.parametrize("hparams", FULL_CONV_CASES, ids=lambda v: "x".join(map(str, v)))
def test_full_convolution_follows_torch7_argument_order(hparams) -> None:
    kw, kh, dw, dh, padw, padh, adjw, adjh = hparams
    rng = np.random.default_rng(sum(hparams))
    x = rng.normal(size=(2, 3, 5, 4))
    weight, bias = rng.normal(size=(3, 2, kh, kw)), rng.normal(size=2)
    fields = {"nInputPlane": 3, "nOutputPlane": 2, "kW": kw, "kH": kh, "dW": dw, "dH": dh, "padW": padw,
              "padH": padh, "adjW": adjw, "adjH": adjh, "weight": weight, "bias": bias}
    output = _runner("nn.SpatialFullConvolution", fields).run_module("", x)
    assert_close(output, _full_conv_loops(x, weight, bias, *hparams), LOOPS, actual_name="reference",
                 expected_name="loops", where=f"SpatialFullConvolution(3,2,{hparams})")


def test_convolution_float32_path_is_float32() -> None:
    rng = np.random.default_rng(1)
    fields = {"nInputPlane": 2, "nOutputPlane": 3, "kW": 3, "kH": 3, "weight": rng.normal(size=(3, 2, 3, 3)),
              "bias": rng.normal(size=3)}
    output = _runner("nn.SpatialConvolution", fields, "float32").run_module("", rng.random((1, 2, 6, 6)))
    assert output.dtype == np.float32


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 3, 2, 0), (9, 8, 10, 7), (-1, 2, 0, -2), (-2, -1, -1, -3)],
                         ids=lambda v: "_".join(map(str, v)))
def test_replication_padding_is_edge_padding_after_crops(pads) -> None:
    left, right, top, bottom = pads
    x = np.random.default_rng(3).random((2, 3, 7, 6))
    cropped = x[..., max(0, -top):7 - max(0, -bottom), max(0, -left):6 - max(0, -right)]
    expected = np.pad(cropped, ((0, 0), (0, 0), (max(0, top), max(0, bottom)), (max(0, left), max(0, right))),
                      mode="edge")
    fields = {"pad_l": left, "pad_r": right, "pad_t": top, "pad_b": bottom}
    output = _runner("nn.SpatialReplicationPadding", fields).run_module("", x)
    assert_close(output, expected, EXACT, actual_name="reference", expected_name="np.pad edge", where=f"pads {pads}")


def test_instance_norm_ignores_running_statistics_and_bn() -> None:
    """FACTS §2: running stats, bn, train, momentum never matter; affine=false means w=1, b=0."""
    x = np.random.default_rng(5).normal(3.0, 2.0, (2, 3, 5, 4))
    misleading = {"nOutput": 3, "eps": 1e-5, "affine": False, "train": False, "momentum": 0.5,
                  "running_mean": np.full(3, 100.0), "running_var": np.full(3, 1e-3),
                  "weight": np.full(3, 9.0), "bias": np.full(3, 9.0),  # ignored: affine is false
                  "bn": {"running_mean": np.full(6, 7.0), "train": False}}
    output = _runner("nn.InstanceNormalization", misleading).run_module("", x)
    expected = (x - x.mean(axis=(2, 3), keepdims=True)) / np.sqrt(x.var(axis=(2, 3), keepdims=True) + 1e-5)
    assert_close(output, expected, Tolerance(1e-14, why="float64 vs direct formula: measured max rel 3.7e-16"),
                 actual_name="reference", expected_name="numpy formula", where="IN without affine, misleading fields")


def test_instance_norm_constant_plane_gives_bias_in_float32() -> None:
    """FACTS §2: a constant float32 plane yields exactly b (sums in double are exact), also with eps = 0
    (THNN sets invstd = 0 when the variance sum and eps are both 0). In float64 Torch7 itself is ~1e-13 off
    (sequential sum; oracle case instnorm_c5_constchan_float64), which the single-module case checks."""
    x = np.full((1, 2, 4, 5), 0.7)
    for eps in (1e-5, 0.0):
        fields = {"nOutput": 2, "eps": eps, "affine": True, "weight": np.array([1.5, 0.5]),
                  "bias": np.array([-0.25, 3.0])}
        output = _runner("nn.InstanceNormalization", fields, "float32").run_module("", x)
        expected = np.broadcast_to(np.array([-0.25, 3], np.float32)[None, :, None, None], x.shape)
        assert_close(output, expected, EXACT, actual_name="reference", expected_name="b", where=f"constant, eps={eps}")


def test_relu_is_torch7_threshold() -> None:
    """nn.ReLU = Threshold(0, 0): y = x > 0 ? x : 0, so NaN -> 0 like Torch; a general Threshold keeps val."""
    x = np.array([[[[-1.0, 0.0, 2.5, np.nan]]]])
    relu = _runner("nn.ReLU", {"threshold": 0, "val": 0, "inplace": True}).run_module("", x)
    assert np.array_equal(relu, np.array([[[[0.0, 0.0, 2.5, 0.0]]]]))
    assert np.isnan(x[0, 0, 0, 3]) and x[0, 0, 0, 0] == -1.0, "the caller's array must not be modified"
    other = _runner("cudnn.ReLU", {"threshold": 1.0, "val": -3.0}).run_module("", x)
    assert np.array_equal(other, np.array([[[[-3.0, -3.0, 2.5, -3.0]]]]))


# -- generic tree walking ------------------------------------------------------------------------


def _conv(path: str, n_in: int, n_out: int, seed: int, torch_class: str = "nn.SpatialConvolution") -> T7Module:
    rng = np.random.default_rng(seed)
    return T7Module(torch_class, path, {"nInputPlane": n_in, "nOutputPlane": n_out, "kW": 3, "kH": 3, "dW": 1,
                                        "dH": 1, "padW": 1, "padH": 1, "weight": rng.normal(size=(n_out, n_in, 3, 3)),
                                        "bias": rng.normal(size=n_out)})


def test_nested_containers_and_three_way_residual() -> None:
    """Sequential{Sequential{conv}}, ConcatTable{Identity, conv, Sequential{conv}} + CAddTable = x + c1(x) + c2(x)."""
    conv1, conv2, conv3 = _conv("1.1", 2, 2, 1), _conv("2.1.2", 2, 2, 2), _conv("2.1.3.1", 2, 2, 3)
    block = T7Module("nn.Sequential", "2", {}, (
        T7Module("nn.ConcatTable", "2.1", {}, (T7Module("nn.Identity", "2.1.1", {}), conv2,
                                               T7Module("nn.Sequential", "2.1.3", {}, (conv3,)))),
        T7Module("nn.CAddTable", "2.2", {})))
    root = T7Module("nn.Sequential", "", {}, (T7Module("nn.Sequential", "1", {}, (conv1,)), block))
    network = load_network(root, "float64")
    x = np.random.default_rng(0).normal(size=(2, 2, 5, 6))
    output, trace = network.forward(x, trace=True)
    single = {m.lua_path: load_network(m, "float64") for m in (conv1, conv2, conv3)}
    y = single["1.1"].forward(x)[0]
    expected = y + single["2.1.2"].forward(y)[0] + single["2.1.3.1"].forward(y)[0]
    assert_close(output, expected, LOOPS, actual_name="nested tree", expected_name="modules run one by one",
                 where="three-way residual")
    assert list(trace) == ["1.1", "1", "2.1.3.1", "2"]
    assert np.array_equal(network.run_module("2", y), output)


def test_cudnn_aliases_match_nn() -> None:
    x = np.random.default_rng(2).normal(size=(1, 3, 6, 5))
    plain = load_network(_conv("", 3, 4, 7), "float64").forward(x)[0]
    alias = load_network(_conv("", 3, 4, 7, "cudnn.SpatialConvolution"), "float64").forward(x)[0]
    assert np.array_equal(plain, alias)


def test_unknown_class_names_class_path_and_supported() -> None:
    branch = T7Module("nn.Sequential", "2.1.2", {}, (T7Module("nn.SpatialMaxPooling", "2.1.2.1", {}),))
    block = T7Module("nn.Sequential", "2", {}, (
        T7Module("nn.ConcatTable", "2.1", {}, (T7Module("nn.Identity", "2.1.1", {}), branch)),
        T7Module("nn.CAddTable", "2.2", {})))
    root = T7Module("nn.Sequential", "", {}, (T7Module("nn.TVLoss", "1", {}), block))
    with pytest.raises(UnsupportedModuleError) as raised:
        load_network(root, "float32")
    message = str(raised.value)
    assert "nn.SpatialMaxPooling" in message and "Lua path 2.1.2.1" in message
    assert set(raised.value.supported) == set(SUPPORTED_CLASSES)
    assert "nn.SpatialConvolution" in message and "nn.InstanceNormalization" in message


def test_weight_shape_mismatch_names_the_module() -> None:
    bad = _conv("3", 2, 2, 0)
    bad = T7Module(bad.torch_class, "3", {**bad.fields, "nInputPlane": 5})
    with pytest.raises(T7ModelError, match=r"Lua path 3.*expected \(2, 5, 3, 3\)"):
        load_network(T7Module("nn.Sequential", "", {}, (bad,)), "float32")


def test_table_into_a_tensor_module_is_an_error() -> None:
    root = T7Module("nn.Sequential", "", {}, (
        T7Module("nn.ConcatTable", "1", {}, (T7Module("nn.Identity", "1.1", {}),)), T7Module("nn.ReLU", "2", {})))
    with pytest.raises(T7ModelError, match="Lua path 2"):
        load_network(root, "float32").forward(np.zeros((1, 3, 4, 4), np.float32))
