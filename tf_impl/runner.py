"""What every TF-based runner shares: dtype checks, NCHW <-> NHWC, input and noise checks, the code-built
graph's runner, TF's environment.

The ``tf``, ``tf-seed`` and ``tflite`` backends and the SavedModel/checkpoint loaders all build on
this module; it imports none of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import numpy as np

from contract import BATCHNORM_MODES, BackendError
from contract.families import batchnorm_mode
from t7file import T7Module, trace_paths
from tf_impl.shapes import walk_shapes
from tf_impl.weights import LayerSpec, spec_from_module

DTYPES = ("float32", "float64")


def tf_environment() -> dict:
    """What decides TF's arithmetic here: version, oneDNN (TF_ENABLE_ONEDNN_OPTS) and thread pools.

    In tensorflow-cpu 2.21 on x86 Linux oneDNN is *off* unless TF_ENABLE_ONEDNN_OPTS=1
    (measured: IsMklEnabled() is False by default, True with the variable set).
    """
    import tensorflow as tf

    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = None
    return {
        "tensorflow": tf.__version__,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "onednn_enabled": onednn,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),  # 0 = TF's default (all cores)
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count(),
    }


def check_dtype(dtype: str, supported: tuple[str, ...] = DTYPES) -> str:
    if dtype not in supported:
        raise BackendError(f"dtype {dtype!r} is not supported here; use one of {', '.join(supported)}")
    return dtype


def resolve_batchnorm(root: T7Module, batchnorm: str | None) -> str:
    """The batch-norm mode to build with: the caller's, else the model family's convention."""
    mode = batchnorm_mode(root) if batchnorm is None else batchnorm
    if mode not in BATCHNORM_MODES:
        raise BackendError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, not {mode!r}")
    return mode


def nchw_to_nhwc(x: np.ndarray, dtype: str, planes: int | None = 3) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    if x.ndim != 4 or (planes is not None and x.shape[1] != planes):
        raise BackendError(f"expected an N x {planes or 'C'} x H x W input, got shape {x.shape}")
    if 0 in x.shape:
        raise BackendError(f"the input has an empty dimension (shape {x.shape})")
    return _transposed(x, (0, 2, 3, 1))


def nhwc_to_nchw(y) -> np.ndarray:
    """A contiguous N x C x H x W copy of an NHWC value (outputs and single-module runs)."""
    return _transposed(y, (0, 3, 1, 2))


def _transposed(value, perm: tuple[int, ...]) -> np.ndarray:
    """A contiguous copy of ``value`` with its axes permuted, by TensorFlow's transpose: blocked and on every core,
    2-3.5x NumPy's strided copy of a 32 x 512 x 512 layer (docs/benchmarks.md), which drift's isolated view makes
    twice per layer."""
    import tensorflow as tf

    return np.asarray(tf.transpose(value, perm))


def trace_to_nchw(values: Mapping[str, object], paths: Iterable[str],
                  owned: Iterable[np.ndarray] = ()) -> dict[str, np.ndarray]:
    """The traced NHWC values at ``paths`` (those present) as N x C x H x W **views**, in ``paths``' order.

    No copy: a trace hands out every layer of the run, and the contiguous copies cost as much as the traced
    forward itself (512², full-width generator: traced/untraced 1.9-2.3 with copies; docs/benchmarks.md).
    A value is copied only when its memory is shared with one handed out under an earlier path or with an
    array in ``owned`` (the caller's input and noise): TensorFlow forwards an identity's buffer (TVLoss, a
    noise module handing its noise on), and trace entries must not alias one another or the caller's arrays,
    as Torch7's own trace entries (separate tensors) do not.
    """
    taken = [np.asarray(array) for array in owned]
    arrays: dict[str, np.ndarray] = {}
    for path in paths:
        if path not in values:
            continue
        view = np.asarray(values[path]).transpose(0, 3, 1, 2)
        if any(np.may_share_memory(view, other) for other in taken):
            view = view.copy()  # C order
        taken.append(view)
        arrays[path] = view
    return arrays


def noise_inputs(spec: LayerSpec, input_shape: tuple[int, ...], noise: Mapping[str, np.ndarray] | None,
                 dtype: str, elsewhere: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Check ``noise`` (Lua path -> N x planes x h x w, contract/protocol.py) against what a forward of
    ``spec`` on ``input_shape`` draws; return it as NHWC arrays of ``dtype``. One BackendError naming
    the path for anything missing, unexpected or ill-shaped; sizes the model cannot take fail here too.
    ``elsewhere``: noise paths of the model outside ``spec`` (a module run alone), ignored when given."""
    expected = walk_shapes(spec, input_shape).noise
    noise = {} if noise is None else noise
    unknown = sorted(set(noise) - set(expected) - elsewhere)
    if unknown:
        raise BackendError(f"noise given for Lua path(s) {', '.join(unknown)}, which draw no noise in this model"
                           + (f" (noise modules: {', '.join(expected)})" if expected else ""))
    arrays = {}
    for path, shape in expected.items():
        if path not in noise:
            raise BackendError(f"no noise given for the noise module at Lua path {path} (needs an array of "
                               f"{'x'.join(map(str, shape))}; contract/protocol.py)")
        array = np.asarray(noise[path])
        if tuple(array.shape) != shape:
            raise BackendError(f"noise for Lua path {path} has shape {'x'.join(map(str, array.shape))}; this input "
                               f"needs {'x'.join(map(str, shape))}")
        arrays[path] = np.ascontiguousarray(array.astype(dtype, copy=False).transpose(0, 2, 3, 1))
    return arrays


def tf_error(error: Exception) -> BackendError:
    """A TensorFlow runtime error as one line (its first, without the graph dump)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return BackendError(f"TensorFlow refused this input: {first}")


class TFRunner:
    """Runs a :class:`tf_impl.network.Generator` (code-built graph) on Torch-layout arrays."""

    def __init__(self, generator, dtype: str):
        self.generator = generator
        self.dtype = dtype

    def _inputs(self, x: np.ndarray, noise) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x_nhwc = nchw_to_nhwc(x, self.dtype, self.generator.input_planes)
        n, h, w, c = x_nhwc.shape
        return x_nhwc, noise_inputs(self.generator.spec, (n, c, h, w), noise, self.dtype)

    def forward(self, x: np.ndarray, trace: bool = False,
                noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        import tensorflow as tf

        x_nhwc, noise_nhwc = self._inputs(x, noise)
        try:
            if not trace:
                return nhwc_to_nchw(self.generator.function(self.dtype, trace=False)(x_nhwc, noise_nhwc)), {}
            results = self.generator.function(self.dtype, trace=True)(x_nhwc, noise_nhwc)
        except tf.errors.InvalidArgumentError as error:
            raise tf_error(error) from None
        return nhwc_to_nchw(results["output"]), trace_to_nchw(results, self.generator.trace_path_list,
                                                              (x, *(noise or {}).values()))

    def run_module(self, lua_path: str, x: np.ndarray, noise: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """One module (a container's path runs the whole container), eagerly, NCHW in and out."""
        import tensorflow as tf

        try:
            layer = self.generator.spec.find(lua_path)
        except KeyError:
            raise BackendError(f"no module at Lua path {lua_path!r}") from None
        x_nhwc = nchw_to_nhwc(x, self.dtype, planes=None)
        n, h, w, c = x_nhwc.shape
        # The whole run's noise may come along (drift's isolated view): only this subtree's is used.
        elsewhere = frozenset(self.generator.noise_planes) - {sub.lua_path for sub in layer.walk()}
        noise_nhwc = noise_inputs(layer, (n, c, h, w), noise, self.dtype, elsewhere)
        try:
            y = self.generator.run(layer, tf.constant(x_nhwc), tf.as_dtype(self.dtype),
                                   noise={path: tf.constant(array) for path, array in noise_nhwc.items()})
        except tf.errors.InvalidArgumentError as error:
            raise tf_error(error) from None
        return nhwc_to_nchw(y)


def build_generator(root: T7Module, dtype: str, ops=None, variable_dtype: str | None = None,
                    compute_dtypes: tuple[str, ...] | None = None, batchnorm: str | None = None):
    """A :class:`tf_impl.network.Generator` for ``root``; ``batchnorm`` None = the family's convention."""
    from tf_impl.network import Generator

    spec = spec_from_module(root, variable_dtype or dtype, batchnorm=resolve_batchnorm(root, batchnorm))
    return Generator(spec, trace_paths(root), variable_dtype=variable_dtype or dtype,
                     compute_dtypes=(dtype,) if compute_dtypes is None else compute_dtypes, ops=ops)
