"""What every TF-based runner shares: dtype checks, NCHW <-> NHWC, the code-built graph's runner, TF's environment.

The ``tf``, ``tf-seed`` and ``tflite`` backends and the SavedModel/checkpoint loaders all build on
this module; it imports none of them.
"""

from __future__ import annotations

import os

import numpy as np

from contract import BackendError
from t7file import T7Module, trace_paths
from tf_impl.weights import spec_from_module

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


def nchw_to_nhwc(x: np.ndarray, dtype: str) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    if x.ndim != 4 or x.shape[1] != 3:
        raise BackendError(f"expected an N x 3 x H x W input, got shape {x.shape}")
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nhwc_to_nchw(y) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(y).transpose(0, 3, 1, 2))


class TFRunner:
    """Runs a :class:`tf_impl.network.Generator` (code-built graph) on Torch-layout arrays."""

    def __init__(self, generator, dtype: str):
        self.generator = generator
        self.dtype = dtype

    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x_nhwc = nchw_to_nhwc(x, self.dtype)
        if not trace:
            return nhwc_to_nchw(self.generator.function(self.dtype, trace=False)(x_nhwc)), {}
        results = self.generator.function(self.dtype, trace=True)(x_nhwc)
        return nhwc_to_nchw(results["output"]), {path: nhwc_to_nchw(results[path])
                                                 for path in self.generator.trace_path_list}

    def run_module(self, lua_path: str, x: np.ndarray) -> np.ndarray:
        """One module (a residual block path runs the whole block), eagerly, NCHW in and out."""
        import tensorflow as tf

        try:
            layer = self.generator.spec.find(lua_path)
        except KeyError:
            raise BackendError(f"no module at Lua path {lua_path!r}") from None
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 4:
            raise BackendError(f"expected an N x C x H x W input, got shape {x.shape}")
        y = self.generator.run(layer, tf.constant(x.transpose(0, 2, 3, 1)), tf.as_dtype(self.dtype))
        return nhwc_to_nchw(y)


def build_generator(root: T7Module, dtype: str, ops=None, variable_dtype: str | None = None,
                    compute_dtypes: tuple[str, ...] | None = None):
    from tf_impl.network import Generator

    spec = spec_from_module(root, variable_dtype or dtype)
    return Generator(spec, trace_paths(root), variable_dtype=variable_dtype or dtype,
                     compute_dtypes=(dtype,) if compute_dtypes is None else compute_dtypes, ops=ops)
