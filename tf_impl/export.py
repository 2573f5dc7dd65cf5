"""Entry points of ``texture-nets convert --to tf-savedmodel | tf-checkpoint | tflite``.

Each is called as ``function(model, out_path, dtype) -> str`` (see
texture_nets/commands/convert.py): it writes the artefact, reloads it with its
own runtime, runs it and the code-built TF graph (from the .t7) on one seeded
input, and returns a one-line account of that check. Unsupported dtypes raise
``ValueError``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t7file import T7Module
from tf_impl.backend import TFBackend
from tf_impl.runner import DTYPES
from tf_impl.weights import load_root

CHECK_SHAPE = (1, 3, 23, 18)  # odd, non-square: exercises the crops and the adj rows


def _check(kind: str, root: T7Module, runner, dtype: str) -> str:
    x = np.random.default_rng(0).random(CHECK_SHAPE).astype(dtype)
    expected, _ = TFBackend().load(root, dtype).forward(x)
    actual, _ = runner.forward(x)
    if actual.shape != expected.shape:
        raise ValueError(f"the reloaded {kind} gives shape {actual.shape}, the .t7 graph {expected.shape}")
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected)))
    return (f"reloaded and checked against the .t7 graph on a {CHECK_SHAPE} input: max|diff|={diff:.3g} "
            f"(rel {diff / scale if scale else 0.0:.3g})")


def _dtype_ok(dtype: str, supported: tuple[str, ...], kind: str) -> None:
    if dtype not in supported:
        raise ValueError(f"{kind} supports {', '.join(supported)}, not {dtype}")


def convert_savedmodel(model: str | Path | T7Module, out_path: str | Path, dtype: str = "float32") -> str:
    """SavedModel directory (graph + weights; both dtypes inside, ``dtype`` is the one checked)."""
    from tf_impl.savedmodel import export_savedmodel, load_savedmodel_runner

    _dtype_ok(dtype, DTYPES, "tf-savedmodel")
    root = load_root(model)
    export_savedmodel(root, out_path)
    return "float32+float64 functions; " + _check("SavedModel", root, load_savedmodel_runner(out_path, dtype), dtype)


def convert_checkpoint(model: str | Path | T7Module, out_path: str | Path, dtype: str = "float32") -> str:
    """Directory with architecture.json + a tf.train.Checkpoint (restored into the code-built graph)."""
    from tf_impl.savedmodel import export_checkpoint, load_checkpoint_runner

    _dtype_ok(dtype, DTYPES, "tf-checkpoint")
    root = load_root(model)
    export_checkpoint(root, out_path)
    return _check("checkpoint", root, load_checkpoint_runner(out_path, dtype), dtype)


def convert_tflite(model: str | Path | T7Module, out_path: str | Path, dtype: str = "float32") -> str:
    """.tflite flatbuffer (float32), run back with the TF Lite interpreter."""
    from tf_impl.tflite_backend import DTYPES as TFLITE_DTYPES
    from tf_impl.tflite_backend import TFLiteRunner, export_tflite

    _dtype_ok(dtype, TFLITE_DTYPES, "tflite")
    root = load_root(model)
    export_tflite(root, out_path)
    return _check("TF Lite model", root, TFLiteRunner(Path(out_path).read_bytes()), dtype)
