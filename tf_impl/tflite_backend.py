"""The ``tflite`` backend: the faithful port converted to TensorFlow Lite (the seed's smartphone goal), float32.

Conversion: the code-built generator lowered for TF Lite
(:mod:`tf_impl.tflite_lowering`: :class:`tf_impl.network.Generator` with each
SpatialFullConvolution as CONV_2D + DEPTH_TO_SPACE, replication padding as
STRIDED_SLICE + CONCATENATION, wide kernels on few planes and the 3-plane last layer
rewritten to keep XNNPACK's pointers small), or an exported
SavedModel as it is, saved with two signatures, ``output`` and ``trace``, both on an
NHWC input ``x`` of dynamic shape ``[-1, -1, -1, C]`` plus one ``noise_<path>``
input ``[-1, -1, -1, planes]`` per noise module, and converted with the stock
``tf.lite.TFLiteConverter`` (built-in ops only: PAD, CONV_2D, DEPTH_TO_SPACE,
STRIDED_SLICE, CONCATENATION, MEAN/SQUARED_DIFFERENCE/RSQRT for the IN, SUM for
batch-norm statistics, AVERAGE_POOL_2D, IF for a Concat's row-major copy). For the
johnson generators every tensor's shape then follows the input's when the
interpreter prepares, so TF Lite plans and reuses one arena and XNNPACK takes the
whole graph (docs/benchmarks.md, "TF Lite at 2048²").

TF Lite has no float64 reductions, so instance- and batch-norm statistics are
float32 sums here (``instance_norm_statistics = "float32"``). The batch-norm mode
is built in; it is recorded, with the input planes, the noise inputs and the
architecture, as the flatbuffer metadata entry ``texture_nets`` (JSON), so a
``.tflite`` file checks its inputs like the other runners and refuses another mode.

Interpreter: tensorflow-cpu 2.21 still ships ``tf.lite.Interpreter`` (it warns
that it is deprecated in favour of the separate ``ai_edge_litert`` package,
which is not installed here); this backend uses ``ai_edge_litert`` when present
and ``tf.lite.Interpreter`` otherwise. Inputs of any N, H, W are handled by the
signature runner, which resizes the input tensors per call. The default CPU path
uses the XNNPACK delegate.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from contract import BackendError
from t7file import T7Module
from tf_impl.runner import (
    build_generator,
    check_dtype,
    nchw_to_nhwc,
    nhwc_to_nchw,
    noise_inputs,
    resolve_batchnorm,
    tf_environment,
    trace_to_nchw,
)
from tf_impl.weights import SUPPORTED_CLASSES, LayerSpec, architecture_from_json, load_root

DTYPES = ("float32",)
# signature names: our own conversion, and one from an exported SavedModel (tf_impl.savedmodel)
OUTPUT_SIGNATURES = ("output", "serving_default")
TRACE_SIGNATURES = ("trace", "trace_float32")
METADATA_NAME = "texture_nets"
METADATA_FORMAT = "texture-nets tflite"
# Conversions of .t7 files kept per process, keyed by the file's bytes and the batch-norm mode built in: a
# conversion takes 5-15 s (v1 nets 15-40 s on busy cores), and the suite, verify and the demo convert the same
# few files again and again. Each entry: the converted flatbuffer before its metadata, the metadata, and the
# finished flatbuffer per source path (the metadata names the file it came from).
CONVERSION_MEMO_SIZE = 8
_CONVERSIONS: OrderedDict[tuple[str, str], tuple[bytes, dict, dict[str, bytes]]] = OrderedDict()


def convert_to_tflite(model: str | Path | T7Module, *, batchnorm: str | None = None) -> bytes:
    """A .t7 path, an in-memory T7Module or a SavedModel directory -> .tflite flatbuffer bytes (float32).

    ``batchnorm``: the batch-norm mode built in (None: the model family's convention; a SavedModel
    keeps the mode it was exported with)."""
    import tensorflow as tf

    from tf_impl.savedmodel import METADATA_FILE, is_savedmodel_dir

    if not isinstance(model, T7Module) and is_savedmodel_dir(model):
        metadata = json.loads((Path(model) / METADATA_FILE).read_text())
        if batchnorm is not None and metadata.get("batchnorm") not in (None, batchnorm):
            raise BackendError(f"{model} was exported with batch norms in {metadata['batchnorm']} mode; export the "
                               f".t7 again for {batchnorm} mode")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(model), signature_keys=["serving_default",
                                                                                         "trace_float32"])
        try:
            blob = converter.convert()
        except Exception as error:  # ConverterError: the SavedModel's float64 statistics have no TFLite op
            raise BackendError(f"{model}: this SavedModel cannot be converted to TFLite ({type(error).__name__}: "
                               "its instance or batch norms sum in float64, which TFLite lacks); convert the .t7 "
                               "instead") from None
        return with_metadata(blob, _metadata(metadata))
    from tf_impl.tflite_lowering import LoweredOps

    # TFLite has no float64 reductions: normalisation statistics stay float32 (its measured drift
    # is larger than the tf backend's for that reason; see docs/tolerances.md).
    root = load_root(model)
    mode = resolve_batchnorm(root, batchnorm)
    key = None if isinstance(model, T7Module) else (hashlib.sha256(Path(model).read_bytes()).hexdigest(), mode)
    if key in _CONVERSIONS:
        _CONVERSIONS.move_to_end(key)
        raw, metadata, finished = _CONVERSIONS[key]
        source = str(model)
        if source not in finished:
            finished[source] = with_metadata(raw, {**metadata, "source": source})
        return finished[source]
    # The graph lowered for TF Lite (tf_impl.tflite_lowering): every tensor's shape follows the input's at
    # prepare time, so TF Lite plans and reuses its arena and XNNPACK takes the transposed convolutions and pads.
    generator = build_generator(root, "float32", ops=LoweredOps(), batchnorm=mode)
    with tempfile.TemporaryDirectory(prefix="texture_nets_tflite_") as tmp:
        tf.saved_model.save(generator, tmp, signatures={"output": generator.output_float32,
                                                        "trace": generator.trace_float32})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["output", "trace"])
        try:
            blob = converter.convert()
        except Exception as error:  # ConverterError: an op TF Lite's built-in set cannot express for this model
            detail = next((line.strip() for line in str(error).splitlines() if "error:" in line), str(error))
            raise BackendError(f"TF Lite's converter cannot convert this model: {detail[-240:]}") from None
    from tf_impl.savedmodel import export_metadata

    metadata = _metadata(export_metadata(generator, model, METADATA_FORMAT))
    finished = with_metadata(blob, metadata)
    if key is not None:
        _CONVERSIONS[key] = (blob, metadata, {str(model): finished})
        while len(_CONVERSIONS) > CONVERSION_MEMO_SIZE:
            _CONVERSIONS.popitem(last=False)
    return finished


def _metadata(export: dict) -> dict:
    keep = ("source", "input_planes", "batchnorm", "noise_inputs", "trace_paths", "architecture")
    return {"format": METADATA_FORMAT, "version": 1, **{key: export.get(key) for key in keep}}


def with_metadata(blob: bytes, metadata: dict) -> bytes:
    """``blob`` with the JSON ``metadata`` added as the flatbuffer metadata entry ``texture_nets``."""
    from tensorflow.lite.python import schema_py_generated as schema_fb
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = schema_fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return flatbuffer_utils.convert_object_to_bytearray(model)


def read_metadata(blob: bytes) -> dict | None:
    """The ``texture_nets`` metadata of a .tflite flatbuffer, or None (a model converted elsewhere)."""
    from tensorflow.lite.python import schema_py_generated as schema_fb

    model = schema_fb.Model.GetRootAsModel(blob, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() == METADATA_NAME.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                return json.loads(bytes(data).decode())
            except (ValueError, TypeError):
                return None
    return None


def export_tflite(model: str | Path | T7Module, out_path: str | Path, *, batchnorm: str | None = None) -> Path:
    """Convert and write ``out_path`` (via a temporary file and rename, so a failure leaves no partial file)."""
    out_path = Path(out_path)
    blob = convert_to_tflite(model, batchnorm=batchnorm)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    tmp_path.write_bytes(blob)
    os.replace(tmp_path, out_path)
    return out_path


def make_interpreter(model_content: bytes, num_threads: int | None = None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    if num_threads is None:
        # The interpreter's own default is one thread (bench measured CPU/wall = 1.00 at every size).
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return Interpreter(model_content=model_content, num_threads=num_threads)


def execution_order(lua_path: str) -> tuple[float, ...]:
    """Sort key putting traced Lua paths in execution order: "12.1.2.7" before "12" before "13.1.2.1".

    (A .tflite signature lists its outputs alphabetically; t7file.trace_paths lists a block's
    members before the block itself, which this key reproduces.)
    """
    return (*(float(part) for part in lua_path.split(".")), math.inf)


class TFLiteRunner:
    def __init__(self, model_content: bytes, num_threads: int | None = None, *, batchnorm: str | None = None):
        self.interpreter = make_interpreter(model_content, num_threads)
        names = self.interpreter.get_signature_list()
        self._output_name = next((n for n in OUTPUT_SIGNATURES if n in names), None)
        self._trace_name = next((n for n in TRACE_SIGNATURES if n in names), None)
        if self._output_name is None:
            raise BackendError(f"the .tflite model has no '{OUTPUT_SIGNATURES[0]}' signature (it has {list(names)})")
        self._inputs = list(names[self._output_name]["inputs"])
        self._input_name = "x" if "x" in self._inputs else self._inputs[0]
        self.dtype = "float32"
        metadata = read_metadata(model_content) or {}
        self.batchnorm = metadata.get("batchnorm")
        if batchnorm is not None and self.batchnorm is not None and batchnorm != self.batchnorm:
            raise BackendError(f"this .tflite model was converted with its batch norms in {self.batchnorm} mode, "
                               f"which is part of the graph; convert the .t7 again for {batchnorm} mode")
        self.input_planes: int | None = metadata.get("input_planes")
        self._spec: LayerSpec | None = (architecture_from_json(metadata["architecture"])
                                        if metadata.get("architecture") else None)
        self.trace_paths: list[str] | None = metadata.get("trace_paths")

    def _feed(self, x: np.ndarray, noise: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        from tf_impl.network import noise_input_name

        x_nhwc = nchw_to_nhwc(x, self.dtype, self.input_planes)
        n, h, w, c = x_nhwc.shape
        feed = {self._input_name: x_nhwc}
        if self._spec is not None:
            arrays = noise_inputs(self._spec, (n, c, h, w), noise, self.dtype)
            feed.update({noise_input_name(path): array for path, array in arrays.items()})
            return feed
        # A model converted elsewhere: match the noise inputs by name, let the interpreter check shapes.
        for path, array in (noise or {}).items():
            name = noise_input_name(path)
            if name not in self._inputs:
                raise BackendError(f"noise given for Lua path {path}, which this .tflite model takes no input for")
            feed[name] = np.ascontiguousarray(np.asarray(array, dtype=self.dtype).transpose(0, 2, 3, 1))
        missing = [name for name in self._inputs if name not in feed]
        if missing:
            raise BackendError(f"no noise given for the .tflite input(s) {', '.join(missing)}")
        return feed

    def _call(self, signature: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self.interpreter.get_signature_runner(signature)(**feed)
        except (ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise BackendError(f"the TF Lite interpreter refused this input: {first}") from None

    def forward(self, x: np.ndarray, trace: bool = False,
                noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feed = self._feed(x, noise)
        if not trace:
            (output,) = self._call(self._output_name, feed).values()
            return nhwc_to_nchw(output), {}
        if self._trace_name is None:
            raise BackendError("this .tflite model was converted without the 'trace' signature")
        results = self._call(self._trace_name, feed)
        output = nhwc_to_nchw(results.pop("output"))
        order = self.trace_paths if self.trace_paths else sorted(results, key=execution_order)
        return output, trace_to_nchw(results, order, (x, *(noise or {}).values()))  # views, as the tf backend's


class TFLiteBackend:
    """The faithful TF port run by the TF Lite interpreter (float32 only)."""

    name = "tflite"
    dtypes = DTYPES
    framework = "tensorflow"
    supported_classes = frozenset(SUPPORTED_CLASSES)
    # TF Lite has no float64 reductions: the IN and batch-norm statistics are float32 sums (Torch7's are
    # double), whose rounding grows like sqrt(count); harness/core/tolerance.py budgets for that.
    instance_norm_statistics = "float32"

    def environment(self) -> dict:
        return tf_environment()

    def load(self, model: str | Path | T7Module, dtype: str, *, batchnorm: str | None = None) -> TFLiteRunner:
        check_dtype(dtype, DTYPES)
        if not isinstance(model, T7Module) and Path(model).suffix == ".tflite":
            try:
                content = Path(model).read_bytes()
            except OSError as error:
                raise BackendError(f"cannot read {model}: {error}") from None
            return TFLiteRunner(content, batchnorm=batchnorm)
        return TFLiteRunner(convert_to_tflite(model, batchnorm=batchnorm))
