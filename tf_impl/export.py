"""Entry points of ``texture-nets convert --to tf-savedmodel | tf-checkpoint | tflite``.

Each is called as ``function(model, out_path, dtype) -> str`` (see
texture_nets/commands/convert.py): it writes the artefact, reloads it with its
own runtime, runs it and the code-built TF graph (from the .t7) on one seeded
input (and seeded noise, for models that draw some), and returns a one-line
account of that check. Batch norms are built in the model family's mode
(docs/real-models.md). Unsupported dtypes raise ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract import BackendError
from contract.families import input_planes
from t7file import T7Module
from tf_impl.backend import TFBackend
from tf_impl.runner import DTYPES, resolve_batchnorm
from tf_impl.shapes import walk_shapes
from tf_impl.weights import load_root, spec_from_module

# Odd and non-square first (exercises the crops and the adj rows of the johnson generators); the
# pyramid nets need multiples of 16 or 32, so the first size their shape walk accepts is used.
CHECK_SIZES = ((23, 18), (64, 32), (64, 64), (128, 96))


def check_inputs(root: T7Module, dtype: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A seeded input (and noise) of the first size in CHECK_SIZES that the model can take."""
    spec = spec_from_module(root, dtype, batchnorm=resolve_batchnorm(root, None))
    planes = input_planes(root)
    rng = np.random.default_rng(0)
    for h, w in CHECK_SIZES:
        try:
            walk = walk_shapes(spec, (1, planes, h, w))
        except BackendError:
            continue
        x = rng.random((1, planes, h, w)).astype(dtype)
        return x, {path: rng.random(shape).astype(dtype) for path, shape in walk.noise.items()}
    raise ValueError(f"none of the check sizes {', '.join(f'{h}x{w}' for h, w in CHECK_SIZES)} suits this model")


class ExportCheckError(RuntimeError):
    """A reloaded artefact does not reproduce the code-built graph of the .t7."""


# How far a reloaded artefact may be from the code-built graph, relative to the output's scale. A SavedModel or a
# checkpoint runs the very graph: measured bit-identical at every path in both dtypes (the bound only allows a
# thread-order difference). TF Lite sums its normalisation statistics in float32 (the .t7 graph in float64):
# measured at the check size up to 8.3e-5 (pollock; 3.8e-5 pleades, <= 1.3e-5 the others, 2.5-5.3e-6 the
# johnson fixtures), so 1e-3 leaves 12x for other machines' XNNPACK kernels.
CHECK_RTOL = {"SavedModel": 1e-6, "checkpoint": 1e-6, "TF Lite model": 1e-3}


def _check(kind: str, root: T7Module, runner, dtype: str) -> str:
    x, noise = check_inputs(root, dtype)
    kwargs = {"noise": noise} if noise else {}
    expected, _ = TFBackend().load(root, dtype).forward(x, **kwargs)
    actual, _ = runner.forward(x, **kwargs)
    if actual.shape != expected.shape:
        raise ExportCheckError(f"the reloaded {kind} gives shape {actual.shape}, the .t7 graph {expected.shape}")
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected)))
    rel = diff / scale if scale else 0.0
    noise_note = f" with {len(noise)} noise inputs" if noise else ""
    summary = (f"reloaded and checked against the .t7 graph on {'x'.join(map(str, x.shape))} {dtype}{noise_note}: "
               f"max |diff| {diff:.3g} (rel {rel:.3g}, limit {CHECK_RTOL[kind]:g})")
    if not np.isfinite(actual).all() or rel > CHECK_RTOL[kind]:
        raise ExportCheckError(f"{kind}: {summary}")
    return summary


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
