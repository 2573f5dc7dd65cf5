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

The v1-era modules (docs/real-models.md) are checked here on small trees built like the public files
(every parameter a view into one flat storage): the batch norm's aliased gamma/beta and both modes,
Torch7's float32 arithmetic of the batch norm and the average pooling (bit for bit against scalar
emulations of THNN), the circular padding's literal rule (pad 0 included), Concat's row-major copy,
both GenNoise classes, NoiseFill, and every refusal (missing or misshapen noise, aliased reads past the
storage, evaluate mode on more channels than running statistics). Their agreement with Torch7 on the
real files is in test_reference_v1_oracle.py, with the specification in test_definitions.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from contract import BackendError
from harness.core.compare import Tolerance, assert_close
from parity_tests.ground_truth import SingleModuleCase, single_module_cases
from reference import SUPPORTED_CLASSES, build_network, load_network
from reference.backend import ReferenceBackend
from reference.ops import Run
from t7file import T7ModelError, T7Module, TensorStorage, UnsupportedModuleError, trace_paths

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
    """docs/torch7-semantics.md: running stats, bn, train, momentum never matter; affine=false means w=1, b=0."""
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
    """docs/torch7-semantics.md: a constant float32 plane yields exactly b (sums in double are exact), also with eps = 0
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


# -- the v1-era modules (docs/real-models.md) ------------------------------------------------------------------------
#
# Small trees in the shape of the public v1 files, built here with every parameter a view into one flat
# float32 storage, as getParameters() leaves them (so a batch norm with fewer features than channels reads on
# into the next module's parameters). Also used by test_definitions.py.

Spec = tuple  # (torch_class, fields, children)


def build_tree(spec: Spec, flat_dtype: str = "float32") -> T7Module:
    """A T7Module tree from nested (class, fields, children) specs: Lua paths assigned, and every weight/bias a view
    into one flat storage in pre-order (weight then bias), like the real files."""
    parts: list[np.ndarray] = []
    offsets: dict[tuple[str, str], int] = {}

    def collect(node: Spec, path: str) -> None:
        for name in ("weight", "bias"):
            if name in node[1]:
                offsets[(path, name)] = sum(part.size for part in parts)
                parts.append(np.asarray(node[1][name], dtype=flat_dtype).reshape(-1))
        for index, child in enumerate(node[2] if len(node) > 2 else (), start=1):
            collect(child, f"{path}.{index}" if path else str(index))

    collect(spec, "")
    flat = np.concatenate(parts) if parts else np.zeros(0, flat_dtype)
    flat.setflags(write=False)

    def make(node: Spec, path: str) -> T7Module:
        torch_class, fields = node[0], dict(node[1])
        children = tuple(make(child, f"{path}.{index}" if path else str(index))
                         for index, child in enumerate(node[2] if len(node) > 2 else (), start=1))
        storages = {name: TensorStorage(flat, offsets[(path, name)]) for name in ("weight", "bias")
                    if (path, name) in offsets}
        for name in storages:
            fields[name] = np.asarray(fields[name], dtype=flat_dtype)
        return T7Module(torch_class, path, fields, children, storages)

    return make(spec, "")


def conv_spec(rng: np.random.Generator, n_in: int, n_out: int, k: int = 3, stride: int = 1,
              torch_class: str = "nn.SpatialConvolution") -> Spec:
    fields = {"nInputPlane": n_in, "nOutputPlane": n_out, "kW": k, "kH": k, "dW": stride, "dH": stride, "padW": 0,
              "padH": 0, "weight": rng.normal(0, 0.5, (n_out, n_in, k, k)), "bias": rng.normal(0, 0.5, n_out)}
    return (torch_class, fields)


def bn_spec(rng: np.random.Generator, features: int, torch_class: str = "nn.SpatialBatchNormalization") -> Spec:
    return (torch_class, {"eps": 1e-5, "affine": True, "momentum": 0.1, "train": True,
                          "weight": rng.uniform(0.5, 1.5, features), "bias": rng.normal(0, 0.5, features),
                          "running_mean": rng.normal(0, 1, features), "running_var": rng.uniform(0.5, 2, features)})


def circular(pad: int) -> Spec:
    return ("nn.SpatialCircularPadding", {"pad_l": pad, "pad_r": pad, "pad_t": pad, "pad_b": pad})


def leaky() -> Spec:
    return ("nn.LeakyReLU", {"negval": 0.01, "inplace": True})


def pool(k: int) -> Spec:
    return ("nn.SpatialAveragePooling", {"kW": k, "kH": k, "dW": k, "dH": k, "padW": 0, "padH": 0,
                                         "ceil_mode": False, "count_include_pad": True, "divide": True})


def pyramid_spec(seed: int = 0) -> Spec:
    """A two-level v1 style net (models/pyramid.lua): 6-plane input, GenNoise in each level, and the deeper level's
    'before merging' batch norm declared with 2 features on 4 channels (aliased, docs/real-models.md)."""
    rng = np.random.default_rng(seed)
    seq = "nn.Sequential"
    deep = (seq, {}, (pool(2), ("nn.GenNoise", {}), (seq, {}, (circular(1), conv_spec(rng, 6, 4))), bn_spec(rng, 4),
                      leaky(), ("nn.SpatialUpSamplingNearest", {"scale_factor": 2}), bn_spec(rng, 2)))
    shallow = (seq, {}, (pool(1), ("nn.GenNoise", {}), (seq, {}, (circular(1), conv_spec(rng, 6, 2))),
                         bn_spec(rng, 2), leaky()))
    return (seq, {}, (("nn.Concat", {"dimension": 2}, (deep, shallow)),
                      (seq, {}, (circular(1), conv_spec(rng, 6, 6))), bn_spec(rng, 6), leaky(),
                      (seq, {}, (circular(0), conv_spec(rng, 6, 3, k=1)))))


def doodle_spec(seed: int = 0) -> Spec:
    """An online-neural-doodle style net: NoiseFill(0), a Concat of the doodle's GenNoise (new planes) and a skip
    branch, cudnn convolutions, replication padding, stride 2 and nearest upsampling, evaluate-mode batch norms."""
    rng = np.random.default_rng(seed)
    seq = "nn.Sequential"
    projection = (seq, {}, (conv_spec(rng, 4, 2, k=1, torch_class="cudnn.SpatialConvolution"),
                            bn_spec(rng, 2, "cudnn.SpatialBatchNormalization")))
    skip = ("nn.Concat", {"dimension": 2}, (("nn.GenNoise", {"num_planes": 2, "mult": 1.0}), projection))
    down = (seq, {}, (("nn.SpatialReplicationPadding", {"pad_l": 1, "pad_r": 1, "pad_t": 1, "pad_b": 1}),
                      conv_spec(rng, 4, 4, stride=2, torch_class="cudnn.SpatialConvolution"), bn_spec(rng, 4), leaky(),
                      ("nn.SpatialUpSamplingNearest", {"scale_factor": 2})))
    return (seq, {}, (("nn.NoiseFill", {"num_noise_channels": 0, "mult": 1}),
                      ("nn.Concat", {"dimension": 2}, (skip, down)), bn_spec(rng, 8), ("cudnn.ReLU", {}),
                      conv_spec(rng, 8, 3, k=1)))


def _fill_noise(network, shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Noise of the right shape for every noise module of a network, for an input of ``shape``."""
    rng = np.random.default_rng(seed)
    sizes = {"1.1.2": 2, "1.2.2": 1}  # the pyramid's pooling factors, by GenNoise path
    noise = {}
    for path, spec in network.noise_modules.items():
        factor = sizes.get(path, 1)
        noise[path] = rng.random((shape[0], spec.planes, shape[2] // factor, shape[3] // factor))
    return noise


def test_pyramid_runs_with_aliased_batch_norm_and_in_place_noise() -> None:
    root = build_tree(pyramid_spec())
    network = load_network(root, "float64")
    assert network.batchnorm == "train" and set(network.noise_modules) == {"1.1.2", "1.2.2"}
    x = np.random.default_rng(1).random((2, 6, 8, 6))
    noise = _fill_noise(network, x.shape)
    output, trace = network.forward(x, trace=True, noise=noise)
    assert output.shape == (2, 3, 8, 6) and list(trace) == trace_paths(root)
    # GenNoise writes channels 4-6 in place, after the pooling's output was recorded (the pooled image survives).
    pooled = x.reshape(2, 6, 4, 2, 3, 2).mean(axis=(3, 5))
    assert_close(trace["1.1.1"], pooled, LOOPS, actual_name="pool trace", expected_name="mean", where="1.1.1")
    assert np.array_equal(trace["1.1.2"][:, :3], trace["1.1.1"][:, :3])
    assert np.array_equal(trace["1.1.2"][:, 3:], noise["1.1.2"])
    # The aliased batch norm: gamma/beta for channels 2, 3 are the values that follow its own weight/bias.
    bn = root.find("1.1.7")
    flat, w_off, b_off = bn.storage("weight").flat, bn.storage("weight").offset, bn.storage("bias").offset
    upsampled = trace["1.1.6"]
    mean, var = upsampled.mean(axis=(0, 2, 3)), upsampled.var(axis=(0, 2, 3))
    gamma, beta = flat[w_off:w_off + 4].astype(np.float64), flat[b_off:b_off + 4].astype(np.float64)
    assert np.array_equal(gamma[2:], flat[b_off:b_off + 2]), "gamma[2..3] is the module's own bias"
    expected = (upsampled - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5) \
        * gamma[None, :, None, None] + beta[None, :, None, None]
    assert_close(trace["1.1.7"], expected, LOOPS, actual_name="reference", expected_name="aliased formula",
                 where="1.1.7")
    # run_module on the Concat runs both levels, with their noise (extra noise for other paths is fine).
    assert np.array_equal(network.run_module("1", x, noise=noise), trace["1"])


def test_noise_errors_name_the_paths() -> None:
    root = build_tree(pyramid_spec())
    network = load_network(root, "float32")
    x = np.zeros((1, 6, 8, 6), np.float32)
    noise = _fill_noise(network, x.shape)
    with pytest.raises(BackendError, match=r"no noise given .*Lua path\(s\) 1\.1\.2, 1\.2\.2"):
        network.forward(x)
    with pytest.raises(BackendError, match=r"Lua path\(s\) 1\.2\.2"):
        network.forward(x, noise={"1.1.2": noise["1.1.2"]})
    with pytest.raises(BackendError, match=r"noise for Lua path 1\.2\.2 has shape 1x3x4x6; this input needs 1x3x8x6"):
        network.forward(x, noise={**noise, "1.2.2": noise["1.2.2"][:, :, :4]})
    with pytest.raises(BackendError, match=r"Lua path\(s\) 2\b.*draw no noise"):
        network.forward(x, noise={**noise, "2": noise["1.2.2"]})
    # run_module needs only the noise of the modules it runs.
    assert network.run_module("1.2", x, noise={"1.2.2": noise["1.2.2"]}).shape == (1, 2, 8, 6)
    with pytest.raises(BackendError, match=r"Lua path\(s\) 1\.1\.2"):
        network.run_module("1.1", x)
    with pytest.raises(BackendError, match="no module at Lua path '9'"):
        network.run_module("9", x)
    with pytest.raises(BackendError, match="N x C x H x W"):
        network.forward(x[0], noise=noise)
    with pytest.raises(BackendError, match=r"GenNoise at Lua path 1\.1\.2 fills channels 4-6 \(1-based\) of its "
                                           "input, which has 3"):
        network.forward(np.zeros((1, 3, 8, 6), np.float32), noise=noise)


def test_doodle_style_net_evaluate_mode_and_new_noise_planes() -> None:
    root = build_tree(doodle_spec())
    network = ReferenceBackend().load(root, "float64")
    assert network.batchnorm == "evaluate" and network.noise_modules["2.1.1"].kind == "planes"
    x = np.random.default_rng(2).random((2, 4, 8, 8))
    noise = {"2.1.1": np.random.default_rng(3).normal(size=(2, 2, 8, 8))}
    output, trace = network.forward(x, trace=True, noise=noise)
    assert output.shape == (2, 3, 8, 8)
    assert np.array_equal(trace["2.1.1"], noise["2.1.1"]) and np.array_equal(trace["2.1"][:, :2], noise["2.1.1"])
    bn = root.find("2.1.2.2")
    conv = trace["2.1.2.1"]
    expected = (conv - bn.fields["running_mean"].astype(np.float64)[None, :, None, None]) / np.sqrt(
        bn.fields["running_var"].astype(np.float64)[None, :, None, None] + 1e-5) * bn.fields["weight"].astype(
        np.float64)[None, :, None, None] + bn.fields["bias"].astype(np.float64)[None, :, None, None]
    assert_close(trace["2.1.2.2"], expected, LOOPS, actual_name="reference", expected_name="running statistics",
                 where="2.1.2.2")
    assert np.array_equal(trace["1"], x), "NoiseFill(0) copies its input"
    # The samples of a batch are independent in evaluate mode, coupled in train mode.
    single = network.forward(x[:1], noise={"2.1.1": noise["2.1.1"][:1]})[0]
    assert_close(single, output[:1], LOOPS, actual_name="batch of one", expected_name="batch of two", where="output")
    train = ReferenceBackend().load(root, "float64", batchnorm="train")
    coupled = train.forward(x[:1], noise={"2.1.1": noise["2.1.1"][:1]})[0]
    assert np.abs(coupled - train.forward(x, noise=noise)[0][:1]).max() > 1e-3


def test_batch_norm_train_mode_arithmetic_and_corner_cases() -> None:
    """THNN's float32 order (double sums, float mean and squares, float invstd), a 1x1 batch of one giving beta,
    and the aliasing errors."""
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(2, 3, 4, 5)) * 3 + 50).astype(np.float32)
    weight, bias = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    fields = {"eps": 1e-5, "affine": True, "weight": weight, "bias": bias}
    output = _runner("nn.SpatialBatchNormalization", fields, "float32").run_module("", x)
    expected = np.empty_like(x)
    for c in range(3):
        values = x[:, c]
        mean = np.float32(np.float32(values.astype(np.float64).sum()) / np.float32(values.size))
        squares = np.square(values - mean).astype(np.float64).sum()
        invstd = np.float32(1.0 / np.sqrt(squares / values.size + 1e-5))
        expected[:, c] = ((values - mean) * invstd) * weight[c] + bias[c]
    assert np.array_equal(output, expected), "float32 batch norm departs from THNN's arithmetic"
    point = rng.normal(size=(1, 3, 1, 1)).astype(np.float32)
    assert np.array_equal(_runner("cudnn.SpatialBatchNormalization", fields, "float32").run_module("", point),
                          bias.reshape(1, 3, 1, 1))
    fewer = _runner("nn.SpatialBatchNormalization", fields, "float64").run_module("", x[:, :2].astype(np.float64))
    again = _runner("nn.SpatialBatchNormalization", {**fields, "weight": weight[:2], "bias": bias[:2]},
                    "float64").run_module("", x[:, :2].astype(np.float64))
    assert np.array_equal(fewer, again), "fewer channels than features read the first ones"
    wider = np.concatenate([x, x], axis=1)
    with pytest.raises(T7ModelError, match="'weight' has no storage"):
        _runner("nn.SpatialBatchNormalization", fields, "float32").run_module("", wider)
    short = build_tree(("nn.Sequential", {}, (bn_spec(rng, 3),)))
    with pytest.raises(T7ModelError, match=r"Lua path 1: the input has 6 channels, 3 features.*holds only 3 values"):
        load_network(short, "float32", "train").forward(wider)
    with pytest.raises(T7ModelError, match="running statistics for 3 channels, but the input has 6"):
        load_network(short, "float32", "evaluate").forward(wider)
    with pytest.raises(ValueError, match="unknown batch-norm mode 'eval'"):
        load_network(short, "float32", "eval")
    plain = {"eps": 1e-5, "affine": False}
    x = x.astype(np.float64)
    unit = _runner("nn.SpatialBatchNormalization", plain, "float64").run_module("", x)
    standard = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    assert_close(unit, standard, LOOPS, actual_name="reference", expected_name="formula", where="BN without affine")


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 0, 0, 0), (2, 1, 0, 3), (-1, 1, 1, -2)],
                         ids=lambda v: "_".join(map(str, v)))
def test_circular_padding_is_the_utils_lua_rule(pads) -> None:
    """Pad 1 is a torus wrap; pad 0 overwrites the input's border; larger and negative pads follow the literal
    rule: zeros, interior copy (negative pads crop), row 1 := row h-1, row h := row 2, then the columns."""
    left, right, top, bottom = pads
    x = np.random.default_rng(6).random((2, 2, 5, 6))
    output = _runner("nn.SpatialCircularPadding", {"pad_l": left, "pad_r": right, "pad_t": top, "pad_b": bottom}
                     ).run_module("", x)
    canvas = np.zeros((2, 2, 5 + top + bottom, 6 + left + right))
    canvas[..., max(0, top):max(0, top) + 5 - max(0, -top) - max(0, -bottom),
           max(0, left):max(0, left) + 6 - max(0, -left) - max(0, -right)] = \
        x[..., max(0, -top):5 - max(0, -bottom), max(0, -left):6 - max(0, -right)]
    h, w = canvas.shape[-2:]
    for target, source in ((0, h - 2), (h - 1, 1)):  # Lua: narrow(3, 1, 1):copy(narrow(3, h - 1, 1)), ...
        canvas[..., target, :] = canvas[..., source, :]
    for target, source in ((0, w - 2), (w - 1, 1)):
        canvas[..., :, target] = canvas[..., :, source]
    assert np.array_equal(output, canvas)
    if pads == (1, 1, 1, 1):
        assert np.array_equal(output, np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="wrap"))
    if pads == (0, 0, 0, 0):
        assert np.array_equal(output[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1]) and not np.array_equal(output, x)
    with pytest.raises(ValueError, match="at least 2x2"):
        _runner("nn.SpatialCircularPadding", {"pad_l": 0, "pad_r": 0, "pad_t": 0, "pad_b": 0}).run_module(
            "", x[..., :1, :])


def test_average_pooling_upsampling_and_leaky_relu_in_torch7_float32_order() -> None:
    rng = np.random.default_rng(8)
    x = (rng.random((1, 2, 7, 9)) * 100).astype(np.float32)
    pooled = _runner("nn.SpatialAveragePooling", {"kW": 3, "kH": 2, "dW": 2, "dH": 2}, "float32").run_module("", x)
    assert pooled.shape == (1, 2, 3, 4)
    for c, i, j in np.ndindex(2, 3, 4):
        total = np.float32(0)
        for ky in range(2):  # THNN: real sum, ky then kx, then / (kH * kW)
            for kx in range(3):
                total = np.float32(total + x[0, c, 2 * i + ky, 2 * j + kx])
        assert pooled[0, c, i, j] == np.float32(total / np.float32(6))
    upsampled = _runner("nn.SpatialUpSamplingNearest", {"scale_factor": 3}).run_module("", x[:, :, :2, :2])
    assert np.array_equal(upsampled, x[:, :, :2, :2].repeat(3, axis=2).repeat(3, axis=3))
    values = np.array([[[[-2.0, -0.0, 0.0, 3.0, np.nan, -np.inf]]]], np.float32)
    leaky_out = _runner("nn.LeakyReLU", {"negval": 0.01, "inplace": True}, "float32").run_module("", values)
    assert np.array_equal(leaky_out, np.where(values > 0, values, values * np.float32(0.01)), equal_nan=True)
    assert values[0, 0, 0, 0] == -2.0, "the caller's array must not be modified"
    for fields in ({"kW": 2, "kH": 2, "dW": 2, "dH": 2, "padW": 1}, {"kW": 2, "kH": 2, "ceil_mode": True},
                   {"kW": 2, "kH": 2, "divide": False}):
        with pytest.raises(T7ModelError, match="only unpadded, floor-mode, dividing"):
            _runner("nn.SpatialAveragePooling", fields)


def test_concat_takes_the_first_branch_shape_and_copies_row_major() -> None:
    """Torch7's nn.Concat(2): channels summed, the first branch's size, ``copy`` checking element counts only."""
    def branch(path: str, pads: tuple[int, int, int, int]) -> T7Module:
        left, right, top, bottom = pads
        return T7Module("nn.SpatialReplicationPadding", path, {"pad_l": left, "pad_r": right, "pad_t": top,
                                                               "pad_b": bottom})
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float64).reshape(2, 1, 3, 3)
    same = T7Module("nn.Concat", "", {"dimension": 2}, (branch("1", (0, 0, 0, 0)), branch("2", (1, 0, 0, 0))))
    with pytest.raises(BackendError, match=r"nn\.Concat at the root module: sizes do not match: branch 2 outputs "
                                           r"2x1x3x4, but its slice of the output is 2x1x3x3"):
        load_network(same, "float64").forward(x)
    # 4 x 2 against 2 x 4: equal counts, so Torch7 silently copies the values in row-major order.
    reshaped = T7Module("nn.Concat", "", {"dimension": 2}, (branch("1", (0, -1, 0, 1)), branch("2", (0, 1, -1, 0))))
    out, trace = load_network(reshaped, "float64").forward(x, trace=True)
    first, second = trace["1"], trace["2"]
    assert first.shape == (2, 1, 4, 2) and second.shape == (2, 1, 2, 4) and out.shape == (2, 2, 4, 2)
    assert np.array_equal(out[:, :1], first)
    assert np.array_equal(out[:, 1:], second.reshape(2, 1, 4, 2))
    with pytest.raises(T7ModelError, match="only 2"):
        load_network(T7Module("nn.Concat", "", {"dimension": 3}, (branch("1", (0, 0, 0, 0)),)), "float64")


def test_noise_fill_and_the_cudnn_twins() -> None:
    x = np.random.default_rng(9).normal(size=(1, 3, 4, 4))
    assert np.array_equal(_runner("nn.NoiseFill", {"num_noise_channels": 0}).run_module("", x), x)
    with pytest.raises(T7ModelError, match="num_noise_channels = 2"):
        _runner("nn.NoiseFill", {"num_noise_channels": 2})
    rng = np.random.default_rng(10)
    bn = {"eps": 1e-5, "affine": True, "weight": rng.normal(size=3), "bias": rng.normal(size=3),
          "running_mean": rng.normal(size=3), "running_var": rng.random(3) + 0.5}
    for mode in ("train", "evaluate"):
        plain = ReferenceBackend().load(T7Module("nn.SpatialBatchNormalization", "", bn), "float64", batchnorm=mode)
        twin = ReferenceBackend().load(T7Module("cudnn.SpatialBatchNormalization", "", bn), "float64", batchnorm=mode)
        assert np.array_equal(plain.run_module("", x), twin.run_module("", x))


def test_model_and_input_errors_name_the_module() -> None:
    """Each refusal is one line naming the module: bad trees at load time, bad inputs at run time."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(1, 2, 4, 4))
    with pytest.raises(T7ModelError, match="Lua path 1: expects a non-empty table input"):
        load_network(T7Module("nn.Sequential", "", {}, (T7Module("nn.CAddTable", "1", {}),)), "float64").forward(x)
    with pytest.raises(T7ModelError, match="the root module: outputs a table"):
        load_network(T7Module("nn.ConcatTable", "", {}, (T7Module("nn.Identity", "1", {}),)), "float64").forward(x)
    unbiased = {**_conv("", 2, 2, 0).fields, "bias": None}
    assert _runner("nn.SpatialConvolution", unbiased).run_module("", x).shape == (1, 2, 4, 4)
    with pytest.raises(BackendError, match="expects 3 input planes"):
        load_network(_conv("", 3, 2, 0), "float64").forward(x)
    with pytest.raises(T7ModelError, match="grouped convolutions"):
        _runner("nn.SpatialConvolution", {**_conv("", 2, 2, 0).fields, "groups": 2})
    with pytest.raises(BackendError, match="expects N x 3 x H x W"):
        _runner("nn.InstanceNormalization", {"affine": True, "weight": np.ones(3), "bias": np.zeros(3)}).run_module(
            "", x)
    no_affine = _runner("nn.InstanceNormalization", {"affine": True, "eps": 1e-5}).run_module("", x)
    assert_close(no_affine, (x - x.mean(axis=(2, 3), keepdims=True)) / np.sqrt(x.var(axis=(2, 3), keepdims=True)
                                                                               + 1e-5), LOOPS,
                 actual_name="IN without weight", expected_name="formula", where="IN, affine without tensors")
    with pytest.raises(T7ModelError, match="a non-container module has child modules"):
        load_network(T7Module("nn.ReLU", "", {}, (T7Module("nn.ReLU", "1", {}),)), "float64")
    with pytest.raises(BackendError, match=r"nn\.SpatialUpSamplingNearest at the root module expects N x C x H x W"):
        _runner("nn.SpatialUpSamplingNearest", {"scale_factor": 2}).run_module("", x[0])
    with pytest.raises(T7ModelError, match="has no branches"):
        load_network(T7Module("nn.Concat", "", {"dimension": 2}), "float64")
    bn = {"eps": 1e-5, "affine": True, "weight": np.ones(2), "bias": np.zeros(3), "running_mean": np.zeros(2),
          "running_var": np.ones(2)}
    with pytest.raises(T7ModelError, match="'bias' has 3 values, 'weight' 2"):
        _runner("nn.SpatialBatchNormalization", bn)
    with pytest.raises(T7ModelError, match="'running_var' has 3 values, 'running_mean' 2"):
        ReferenceBackend().load(T7Module("nn.SpatialBatchNormalization", "", {**bn, "bias": np.zeros(2),
                                                                               "running_var": np.ones(3)}),
                                "float64", batchnorm="evaluate")
    # A weight without a bias reads only the weight on into the storage (beta stays 0).
    gamma_only = build_tree(("nn.Sequential", {}, (("nn.SpatialBatchNormalization",
                                                    {"eps": 1e-5, "affine": True, "weight": np.array([2.0])}),
                                                   conv_spec(rng, 1, 1, k=1))))
    out = load_network(gamma_only, "float64").run_module("1", x)
    flat = gamma_only.find("1").storage("weight").flat
    standard = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    assert_close(out, standard * flat[:2].astype(np.float64)[None, :, None, None], LOOPS, actual_name="reference",
                 expected_name="gamma from the storage", where="BN without bias, 2 channels, 1 feature")
    assert build_network(gamma_only, "float64").batchnorm == "train"


def test_gen_noise_guards_a_direct_call() -> None:
    """The network checks the noise up front; the op itself still refuses to run without it."""
    network = load_network(build_tree(pyramid_spec()), "float64")
    op = next(op for op in network.root.walk() if op.torch_class == "nn.GenNoise")
    with pytest.raises(BackendError, match=r"no noise given for the noise module at Lua path 1\.1\.2"):
        op.apply(np.zeros((1, 6, 4, 3)), Run(None), True)
