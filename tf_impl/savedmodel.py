"""Independence from the .t7, as the seed's three scripts intended: SavedModel and TF checkpoint.

* :func:`export_savedmodel` writes a SavedModel directory holding the graph and
  the weights. Loading it (``--backend tf --model DIR``) needs neither the .t7
  nor this package's graph code: the functions come from the SavedModel.
  It carries ``output_float32/float64(x)`` and ``trace_float32/float64(x)``
  (x is NHWC ``[None, None, None, 3]``), the signatures ``serving_default``
  (float32 output) and ``trace_float32`` (for TF Lite conversion),
  and ``assets.extra/texture_nets.json`` (trace paths, provenance).
* :func:`export_checkpoint` writes ``architecture.json`` + a ``tf.train.Checkpoint``;
  :func:`load_checkpoint_runner` rebuilds the graph from code and restores the
  weights into it (the seed's ``stylize_tensorflow.py`` route).

Weights are stored as float64: every float32 .t7 value is exact in float64 and
the float32 functions cast back (round to nearest, like Torch's ``:float()``),
so one export serves both dtypes and equals the .t7 path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from contract import BackendError
from t7file import T7Module
from tf_impl.network import Generator
from tf_impl.runner import DTYPES, TFRunner, build_generator, check_dtype, nchw_to_nhwc, nhwc_to_nchw
from tf_impl.weights import architecture_from_json, architecture_to_json, load_root

STORE_DTYPE = "float64"
METADATA_FILE = Path("assets.extra") / "texture_nets.json"
ARCHITECTURE_FILE = "architecture.json"
SAVEDMODEL_FORMAT = "texture-nets tf savedmodel"
CHECKPOINT_FORMAT = "texture-nets tf checkpoint"


def _source_name(model: str | Path | T7Module) -> str:
    return "in-memory T7Module" if isinstance(model, T7Module) else str(model)


def export_savedmodel(model: str | Path | T7Module, out_dir: str | Path) -> Path:
    """Write a SavedModel of the faithful port (both dtypes) to ``out_dir``; return it."""
    out_dir = Path(out_dir)
    generator = build_generator(load_root(model), STORE_DTYPE, variable_dtype=STORE_DTYPE, compute_dtypes=DTYPES)
    tf.saved_model.save(generator, str(out_dir), signatures={"serving_default": generator.output_float32,
                                                               "trace_float32": generator.trace_float32})
    metadata = {"format": SAVEDMODEL_FORMAT, "version": 1, "source": _source_name(model),
                "variable_dtype": STORE_DTYPE, "dtypes": list(DTYPES), "layout": "NHWC",
                "trace_paths": generator.trace_path_list}
    (out_dir / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return out_dir


def is_savedmodel_dir(path: str | Path) -> bool:
    return (Path(path) / "saved_model.pb").is_file()


def is_checkpoint_dir(path: str | Path) -> bool:
    return (Path(path) / ARCHITECTURE_FILE).is_file()


class SavedModelRunner:
    """Runs the functions of a loaded SavedModel (no graph code of ours involved)."""

    def __init__(self, loaded, dtype: str, trace_paths: list[str]):
        self.loaded = loaded
        self.dtype = dtype
        self.trace_paths = trace_paths
        self._output = getattr(loaded, f"output_{dtype}")
        self._trace = getattr(loaded, f"trace_{dtype}")

    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x_nhwc = nchw_to_nhwc(x, self.dtype)
        if not trace:
            return nhwc_to_nchw(self._output(x_nhwc)), {}
        results = self._trace(x_nhwc)
        return nhwc_to_nchw(results["output"]), {path: nhwc_to_nchw(results[path]) for path in self.trace_paths}


def load_savedmodel_runner(directory: str | Path, dtype: str):
    """A runner for ``directory``: a SavedModel from :func:`export_savedmodel` or a checkpoint directory."""
    check_dtype(dtype)
    directory = Path(directory)
    if is_checkpoint_dir(directory):
        return load_checkpoint_runner(directory, dtype)
    if not is_savedmodel_dir(directory):
        raise BackendError(f"{directory} is neither a SavedModel (no saved_model.pb) nor a texture-nets TF checkpoint "
                           f"(no {ARCHITECTURE_FILE})")
    metadata = _read_json(directory / METADATA_FILE, SAVEDMODEL_FORMAT)
    loaded = tf.saved_model.load(str(directory))
    return SavedModelRunner(loaded, dtype, metadata["trace_paths"])


def export_checkpoint(model: str | Path | T7Module, out_dir: str | Path) -> Path:
    """Write ``architecture.json`` and a tf.train.Checkpoint of the weights to ``out_dir``; return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = build_generator(load_root(model), STORE_DTYPE, variable_dtype=STORE_DTYPE, compute_dtypes=())
    checkpoint_path = tf.train.Checkpoint(generator=generator).write(str(out_dir / "weights"))
    metadata = {"format": CHECKPOINT_FORMAT, "version": 1, "source": _source_name(model),
                "variable_dtype": STORE_DTYPE, "checkpoint": Path(checkpoint_path).name,
                "trace_paths": generator.trace_path_list, "architecture": architecture_to_json(generator.spec)}
    (out_dir / ARCHITECTURE_FILE).write_text(json.dumps(metadata, indent=1))
    return out_dir


def load_checkpoint_runner(directory: str | Path, dtype: str) -> TFRunner:
    """Rebuild the graph from ``architecture.json`` (code-defined) and restore the weights from the checkpoint."""
    check_dtype(dtype)
    directory = Path(directory)
    metadata = _read_json(directory / ARCHITECTURE_FILE, CHECKPOINT_FORMAT)
    spec = architecture_from_json(metadata["architecture"], metadata["variable_dtype"])
    generator = Generator(spec, metadata["trace_paths"], variable_dtype=metadata["variable_dtype"],
                          compute_dtypes=(dtype,))
    status = tf.train.Checkpoint(generator=generator).read(str(directory / metadata["checkpoint"]))
    status.assert_existing_objects_matched()  # every variable of the code-built graph was in the checkpoint
    return TFRunner(generator, dtype)


def _read_json(path: Path, expected_format: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BackendError(f"cannot read {path}: {error}") from None
    if data.get("format") != expected_format:
        raise BackendError(f"{path} is not a {expected_format} description (format={data.get('format')!r})")
    return data
