"""The ``tflite`` backend: the faithful port converted to TensorFlow Lite (the seed's smartphone goal), float32.

Conversion: the code-built :class:`tf_impl.network.Generator` (or an exported
SavedModel) is saved with two signatures, ``output`` and ``trace``, both on an
NHWC input of dynamic shape ``[-1, -1, -1, 3]``, and converted with the stock
``tf.lite.TFLiteConverter`` (built-in ops only: MIRROR_PAD for the stacked
SYMMETRIC pads, PAD, CONV_2D, TRANSPOSE_CONV with a computed output shape,
STRIDED_SLICE, MEAN/SQUARED_DIFFERENCE/RSQRT for the IN).

Interpreter: tensorflow-cpu 2.21 still ships ``tf.lite.Interpreter`` (it warns
that it is deprecated in favour of the separate ``ai_edge_litert`` package,
which is not installed here); this backend uses ``ai_edge_litert`` when present
and ``tf.lite.Interpreter`` otherwise. Inputs of any N, H, W are handled by the
signature runner, which resizes the input tensor per call. The default CPU path
uses the XNNPACK delegate.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from contract import BackendError
from t7file import T7Module
from tf_impl.runner import build_generator, check_dtype, nchw_to_nhwc, nhwc_to_nchw, tf_environment
from tf_impl.weights import load_root

DTYPES = ("float32",)
# signature names: our own conversion, and one from an exported SavedModel (tf_impl.savedmodel)
OUTPUT_SIGNATURES = ("output", "serving_default")
TRACE_SIGNATURES = ("trace", "trace_float32")


def convert_to_tflite(model: str | Path | T7Module) -> bytes:
    """A .t7 path, an in-memory T7Module or a SavedModel directory -> .tflite flatbuffer bytes (float32)."""
    import tensorflow as tf

    from tf_impl.savedmodel import is_savedmodel_dir

    if not isinstance(model, T7Module) and is_savedmodel_dir(model):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(model), signature_keys=["serving_default",
                                                                                         "trace_float32"])
        try:
            return converter.convert()
        except Exception as error:  # ConverterError: the SavedModel's float64 statistics have no TFLite op
            raise BackendError(f"{model}: this SavedModel cannot be converted to TFLite ({type(error).__name__}: "
                               "its instance norms sum in float64, which TFLite lacks); convert the .t7 "
                               "instead") from None
    from tf_impl.network import FaithfulOps

    # TFLite has no float64 reductions: instance-norm statistics stay float32 (its measured drift
    # is larger than the tf backend's for that reason; see docs/tolerances.md).
    generator = build_generator(load_root(model), "float32", ops=FaithfulOps(double_statistics=False))
    with tempfile.TemporaryDirectory(prefix="texture_nets_tflite_") as tmp:
        tf.saved_model.save(generator, tmp, signatures={"output": generator.output_float32,
                                                        "trace": generator.trace_float32})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["output", "trace"])
        return converter.convert()


def export_tflite(model: str | Path | T7Module, out_path: str | Path) -> Path:
    """Convert and write ``out_path`` (via a temporary file and rename, so a failure leaves no partial file)."""
    out_path = Path(out_path)
    blob = convert_to_tflite(model)
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
    def __init__(self, model_content: bytes, num_threads: int | None = None):
        self.interpreter = make_interpreter(model_content, num_threads)
        names = self.interpreter.get_signature_list()
        self._output_name = next((n for n in OUTPUT_SIGNATURES if n in names), None)
        self._trace_name = next((n for n in TRACE_SIGNATURES if n in names), None)
        if self._output_name is None:
            raise BackendError(f"the .tflite model has no '{OUTPUT_SIGNATURES[0]}' signature (it has {list(names)})")
        self._input_name = names[self._output_name]["inputs"][0]
        self.dtype = "float32"

    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x_nhwc = nchw_to_nhwc(x, self.dtype)
        if not trace:
            results = self.interpreter.get_signature_runner(self._output_name)(**{self._input_name: x_nhwc})
            (output,) = results.values()
            return nhwc_to_nchw(output), {}
        if self._trace_name is None:
            raise BackendError("this .tflite model was converted without the 'trace' signature")
        results = self.interpreter.get_signature_runner(self._trace_name)(**{self._input_name: x_nhwc})
        output = nhwc_to_nchw(results.pop("output"))
        return output, {path: nhwc_to_nchw(results[path]) for path in sorted(results, key=execution_order)}


class TFLiteBackend:
    """The faithful TF port run by the TF Lite interpreter (float32 only)."""

    name = "tflite"
    dtypes = DTYPES
    framework = "tensorflow"
    # TF Lite has no float64 reductions: the IN moments are float32 sums (Torch7's are double), whose
    # rounding grows like sqrt(H*W); harness/core/tolerance.py budgets for that.
    instance_norm_statistics = "float32"

    def environment(self) -> dict:
        return tf_environment()

    def load(self, model: str | Path | T7Module, dtype: str) -> TFLiteRunner:
        check_dtype(dtype, DTYPES)
        if not isinstance(model, T7Module) and Path(model).suffix == ".tflite":
            try:
                return TFLiteRunner(Path(model).read_bytes())
            except OSError as error:
                raise BackendError(f"cannot read {model}: {error}") from None
        return TFLiteRunner(convert_to_tflite(model))
