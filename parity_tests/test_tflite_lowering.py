"""The graph converted for TF Lite (tf_impl/tflite_lowering.py) against the tf backend's own ops (tf_impl/layers.py).

Numerics, float64, eager, N(0, 1) inputs and kernels: the lowered nn.SpatialFullConvolution (a stride-1
correlation with every phase's sub-kernel and bias + depth_to_space + a crop) and the column-unfolded or
tap-split nn.SpatialConvolution sum the same products as ``layers.conv2d_transpose`` / ``layers.conv2d``
in another order: measured max |diff| 2.4e-14, at most 4.8e-16 of the case's largest output magnitude
(up to 50), over the cases below, so the tolerance is 1e-12 of that magnitude (a wrong tap or phase is
off by O(1)). Replication padding copies values: exact. Shapes must match exactly (Torch7's
``out = (H - 1)·s - 2p + k + adj``, docs/torch7-semantics.md).

TF Lite: the converted graph has no TRANSPOSE_CONV, MIRROR_PAD or SHAPE op; every named tensor's shape is
known once the interpreter has allocated for an input (the same before and after Invoke: no dynamic tensor,
which TF Lite would allocate outside its arena; the unlowered transposed convolution has them, checked below
so the check can fail); and the XNNPACK delegate takes every node of the ``output`` signature.
"""

from __future__ import annotations

import collections
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from parity_tests.ground_truth import fixture_runs  # noqa: E402
from tf_impl import layers  # noqa: E402
from tf_impl import tflite_lowering as lowering  # noqa: E402
from tf_impl.tflite_backend import TFLiteBackend, convert_to_tflite, make_interpreter  # noqa: E402

RELATIVE = 1e-12  # measured at most 4.8e-16 of the output's magnitude (float64, same products in another order)
MODEL = next(run for run in fixture_runs() if run.layout == "pretrained").model_path

# (k, stride, pad, adj, H, W): the johnson layers (3, 2, 1, 1), adj 0, adj > pad, pad >= k (input rows
# cropped), k not a multiple of s, stride 1 and 3, 1x1 inputs, odd sizes.
FULLCONV_CASES = [
    (3, 2, 1, 1, 5, 7), (3, 2, 1, 0, 4, 3), (4, 2, 1, 1, 3, 5), (5, 3, 2, 2, 4, 4), (3, 1, 1, 0, 6, 5),
    (1, 2, 0, 1, 3, 3), (4, 3, 0, 2, 2, 3), (7, 2, 5, 1, 6, 6), (2, 2, 0, 0, 1, 1), (3, 3, 2, 2, 3, 2),
    (3, 3, 3, 0, 4, 5), (2, 2, 3, 1, 5, 4), (5, 2, 6, 1, 7, 8), (3, 2, 1, 1, 1, 1),
]
# (k, stride, pad, planes, out planes, H, W): unfolded (9x9 on 3 planes, 3x3 on 1), neither (3x3 on 32 planes),
# taps split (stride 1 to at most 3 planes: the generators' last layer)
CONV_CASES = [(9, 1, 0, 3, 4, 12, 13), (9, 2, 1, 3, 4, 12, 15), (3, 1, 1, 1, 4, 5, 4), (5, 3, 2, 2, 4, 9, 11),
              (3, 2, 0, 32, 4, 6, 6), (9, 1, 4, 3, 4, 9, 9), (3, 1, 0, 32, 3, 7, 5), (5, 1, 2, 4, 1, 6, 9),
              (3, 2, 1, 8, 3, 7, 7), (1, 1, 0, 5, 3, 4, 4)]
# (left, right, top, bottom): wider than the input, negative (crop), one side only
PAD_CASES = [(1, 1, 1, 1), (4, 4, 4, 4), (0, 2, 3, 0), (-1, 2, 1, -2), (6, 0, 0, 7), (5, 1, -1, 2)]


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(actual - expected).max()) <= RELATIVE * scale


@pytest.mark.parametrize(("k", "s", "p", "adj", "h", "w"), FULLCONV_CASES)
def test_lowered_full_convolution_equals_the_transposed_one(k, s, p, adj, h, w) -> None:
    rng = np.random.default_rng(k * 1000 + s * 100 + p * 10 + adj)
    x, kernel, bias = rng.standard_normal((2, h, w, 3)), rng.standard_normal((k, k, 4, 3)), rng.standard_normal(4)
    args = (tf.constant(kernel), tf.constant(bias), (s, s), (p, p), (adj, adj))
    expected = layers.conv2d_transpose(tf.constant(x), *args).numpy()
    assert expected.shape[1:3] == ((h - 1) * s - 2 * p + k + adj, (w - 1) * s - 2 * p + k + adj)
    _close(lowering.conv2d_transpose(tf.constant(x), *args).numpy(), expected)


def test_lowered_full_convolution_with_unequal_strides_and_no_bias() -> None:
    rng = np.random.default_rng(5)
    x, kernel = rng.standard_normal((2, 5, 4, 3)), rng.standard_normal((3, 4, 2, 3))
    args = (tf.constant(kernel), None, (2, 3), (1, 0), (1, 2))
    _close(lowering.conv2d_transpose(tf.constant(x), *args).numpy(),
           layers.conv2d_transpose(tf.constant(x), *args).numpy())


@pytest.mark.parametrize(("k", "s", "p", "planes", "n_out", "h", "w"), CONV_CASES)
def test_lowered_convolution_equals_the_plain_one(k, s, p, planes, n_out, h, w) -> None:
    rng = np.random.default_rng(k * 100 + planes)
    x, kernel, bias = (rng.standard_normal((2, h, w, planes)), rng.standard_normal((k, k, planes, n_out)),
                       rng.standard_normal(n_out))
    args = (tf.constant(kernel), tf.constant(bias), (s, s), (p, p))
    _close(lowering.conv2d(tf.constant(x), *args).numpy(), layers.conv2d(tf.constant(x), *args).numpy())


def test_lowerings_are_chosen_for_the_first_and_last_layers() -> None:
    assert lowering.unfolds_columns((9, 9), 3)  # the johnson nets' first layer
    assert not lowering.unfolds_columns((3, 3), 32)
    assert not lowering.unfolds_columns((1, 1), 3)
    assert lowering.splits_taps((3, 3), (1, 1), 3)  # their last layer
    assert not lowering.splits_taps((3, 3), (1, 1), 32)
    assert not lowering.splits_taps((3, 3), (2, 2), 3)
    assert not lowering.splits_taps((1, 1), (1, 1), 3)


@pytest.mark.parametrize("pads", PAD_CASES)
def test_replication_pad_by_slices_equals_stacked_symmetric_pads(pads) -> None:
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 2))
    expected = layers.replication_pad(tf.constant(x), *pads).numpy()
    actual = lowering.replication_pad(tf.constant(x), *pads).numpy()
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected)


# -- TF Lite ------------------------------------------------------------------------------------------------------
def _op_names(blob: bytes) -> collections.Counter:
    from tensorflow.lite.python import schema_py_generated as schema_fb
    from tensorflow.lite.tools import flatbuffer_utils

    codes = {value: name for name, value in vars(schema_fb.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    names: collections.Counter = collections.Counter()
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            names[codes[max(code.builtinCode, code.deprecatedBuiltinCode)]] += 1
    return names


def _dynamic_tensors(blob: bytes, signature: str, feed: dict[str, np.ndarray]) -> list[str]:
    """Named tensors of ``signature`` whose shape Invoke changed after AllocateTensors (TF Lite's dynamic ones)."""
    without_xnnpack = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        interpreter = tf.lite.Interpreter(model_content=blob, experimental_op_resolver_type=without_xnnpack)
    runner = interpreter.get_signature_runner(signature)
    wrapper, subgraph = interpreter._interpreter, runner._subgraph_index
    details = runner.get_input_details()
    for name, array in feed.items():
        wrapper.ResizeInputTensor(details[name]["index"], np.array(array.shape, np.int32), False, subgraph)
    wrapper.AllocateTensors(subgraph)

    def shapes() -> dict[str, tuple | None]:
        found = {}
        for index in range(wrapper.NumTensors(subgraph)):
            name = wrapper.TensorName(index, subgraph)
            if name:  # unnamed: the kernels' own scratch tensors
                try:
                    found[f"{index}:{name}"] = tuple(wrapper.TensorSize(index, subgraph))
                except ValueError:
                    found[f"{index}:{name}"] = None
        return found

    before = shapes()
    runner(**feed)
    after = shapes()
    return [name for name in after if before[name] != after[name]]


def _undelegated_nodes(interpreter) -> collections.Counter:
    """The nodes of subgraph 0 that run outside the delegate(s), after a run: those not fused into a DELEGATE node
    (whose outputs are not a delegate's) and needed by a delegate node, a graph output or another such node."""
    wrapper = interpreter._interpreter
    count = wrapper.NumNodes()
    names = [wrapper.NodeName(i) for i in range(count)]
    inputs = [{int(t) for t in wrapper.NodeInputs(i)} for i in range(count)]
    outputs = [{int(t) for t in wrapper.NodeOutputs(i)} for i in range(count)]
    delegates = [i for i in range(count) if names[i] == "DELEGATE"]
    delegated_outputs = set().union(*(outputs[i] for i in delegates))
    needed = set().union(*(inputs[i] for i in delegates)) | {int(t) for t in wrapper.OutputIndices()}
    outside: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i in range(count):
            if i in delegates or i in outside or outputs[i] & delegated_outputs or not outputs[i] & needed:
                continue
            outside.add(i)
            needed |= inputs[i]
            changed = True
    return collections.Counter(names[i] for i in outside)


def _convert(function, folder) -> bytes:
    """``function`` as the ``serving_default`` signature of a .tflite flatbuffer (via a SavedModel in ``folder``)."""
    module = tf.Module()
    module.graph = function
    tf.saved_model.save(module, str(folder), signatures={"serving_default": function})
    return tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["serving_default"]).convert()


def _one_full_convolution(lowered: bool):
    rng = np.random.default_rng(11)
    kernel = tf.constant(rng.standard_normal((3, 3, 4, 5)).astype(np.float32))
    bias = tf.constant(rng.standard_normal(4).astype(np.float32))
    op = lowering.conv2d_transpose if lowered else layers.conv2d_transpose

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 5], tf.float32, name="x")])
    def graph(x):
        return {"y": tf.nn.relu(op(x, kernel, bias, (2, 2), (1, 1), (1, 1)) * 2.0)}

    return graph


def test_lowered_full_convolution_is_static_in_tf_lite_and_the_check_can_fail(tmp_path) -> None:
    feed = {"x": np.random.default_rng(0).standard_normal((2, 7, 5, 5)).astype(np.float32)}
    lowered = _convert(_one_full_convolution(lowered=True), tmp_path / "lowered")
    assert "TRANSPOSE_CONV" not in _op_names(lowered)
    assert _dynamic_tensors(lowered, "serving_default", feed) == []
    # the tf backend's transposed convolution, output shape computed at run time: dynamic downstream
    assert _dynamic_tensors(_convert(_one_full_convolution(lowered=False), tmp_path / "plain"), "serving_default", feed)
    # and TF Lite's float32 result is the float64 transposed convolution's, to float32 rounding
    interpreter = make_interpreter(lowered)
    (actual,) = interpreter.get_signature_runner("serving_default")(**feed).values()
    expected = _one_full_convolution(lowered=False)(tf.constant(feed["x"]))["y"].numpy()
    assert actual.shape == expected.shape == (2, 14, 10, 4)
    assert float(np.abs(actual - expected).max()) <= 1e-5 * float(np.abs(expected).max())
    assert _undelegated_nodes(interpreter) == collections.Counter()


@pytest.mark.slow  # one conversion of the narrow pretrained generator: 5-15 s on 2 busy cores
def test_converted_generator_is_static_and_fully_delegated() -> None:
    blob = convert_to_tflite(MODEL)
    ops = _op_names(blob)
    assert not {"TRANSPOSE_CONV", "MIRROR_PAD", "SHAPE"} & set(ops), ops
    assert ops["DEPTH_TO_SPACE"] == 4  # two transposed convolutions, in each signature
    feed = {"x": np.random.default_rng(1).random((2, 37, 29, 3), dtype=np.float32)}
    for signature in ("output", "trace"):
        assert _dynamic_tensors(blob, signature, feed) == [], signature
    runner = TFLiteBackend().load(MODEL, "float32")
    if runner.interpreter.get_signature_runner("output")._subgraph_index != 0:
        pytest.skip("the node inspection reads subgraph 0, which is not the output signature here")
    runner.forward(feed["x"].transpose(0, 3, 1, 2))
    assert _undelegated_nodes(runner.interpreter) == collections.Counter()
