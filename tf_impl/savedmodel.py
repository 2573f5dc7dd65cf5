"""Independence from the .t7, as the seed's three scripts intended: SavedModel and TF checkpoint.

* :func:`export_savedmodel` writes a SavedModel directory holding the graph and
  the weights. Loading it (``--backend tf --model DIR``) needs neither the .t7
  nor this package's graph code: the functions come from the SavedModel.
  It carries ``output_float32/float64(x, noise)`` and ``trace_float32/float64(x, noise)``
  (x is NHWC ``[None, None, None, C]``, noise a dict of NHWC arrays keyed by Lua path,
  empty for models that draw none), the signatures ``serving_default`` (float32
  output) and ``trace_float32`` (for TF Lite conversion), whose inputs are ``x`` and
  ``noise_<path with _ for .>``, and ``assets.extra/texture_nets.json`` (trace paths,
  batch-norm mode, input planes, noise inputs, the architecture, provenance).
* :func:`export_checkpoint` writes ``architecture.json`` + a ``tf.train.Checkpoint``;
  :func:`load_checkpoint_runner` rebuilds the graph from code and restores the
  weights into it (the seed's ``stylize_tensorflow.py`` route).

The batch-norm mode (docs/real-models.md) is part of the graph and of the
architecture, so both artefacts carry the mode they were exported with; loading
one with another mode is refused.

Weights are stored as float64: every float32 .t7 value is exact in float64 and
the float32 functions cast back (round to nearest, like Torch's ``:float()``),
so one export serves both dtypes and equals the .t7 path. (An evaluate-mode batch
norm's ``invstd`` is computed in float64 from the running variance, so the cast
gives Torch7's float32 ``(real)(1 / sqrt(var + eps))`` exactly.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from contract import BackendError
from t7file import T7Module
from tf_impl.network import Generator
from tf_impl.runner import (
    DTYPES,
    TFRunner,
    build_generator,
    check_dtype,
    nchw_to_nhwc,
    nhwc_to_nchw,
    noise_inputs,
    tf_error,
)
from tf_impl.weights import LayerSpec, architecture_from_json, architecture_to_json, batchnorm_modes, load_root

STORE_DTYPE = "float64"
METADATA_FILE = Path("assets.extra") / "texture_nets.json"
ARCHITECTURE_FILE = "architecture.json"
SAVEDMODEL_FORMAT = "texture-nets tf savedmodel"
CHECKPOINT_FORMAT = "texture-nets tf checkpoint"
FORMAT_VERSION = 2  # 2: noise inputs, batch-norm mode, input planes, architecture in the SavedModel metadata


def _source_name(model: str | Path | T7Module) -> str:
    return "in-memory T7Module" if isinstance(model, T7Module) else str(model)


def _batchnorm_of(spec: LayerSpec) -> str | None:
    modes = batchnorm_modes(spec)
    return next(iter(modes)) if modes else None


def export_metadata(generator: Generator, model: str | Path | T7Module, kind: str) -> dict:
    """What an export records besides the weights (both formats)."""
    return {"format": kind, "version": FORMAT_VERSION, "source": _source_name(model), "variable_dtype": STORE_DTYPE,
            "layout": "NHWC", "input_planes": generator.input_planes, "batchnorm": _batchnorm_of(generator.spec),
            # tf.Module wraps dict and list attributes for tracking; json wants the plain ones.
            "noise_inputs": dict(generator.noise_planes), "trace_paths": list(generator.trace_path_list),
            "architecture": architecture_to_json(generator.spec)}


def export_savedmodel(model: str | Path | T7Module, out_dir: str | Path, *, batchnorm: str | None = None) -> Path:
    """Write a SavedModel of the faithful port (both dtypes) to ``out_dir``; return it.

    ``batchnorm``: the batch-norm mode built in (None: the model family's convention)."""
    out_dir = Path(out_dir)
    generator = build_generator(load_root(model), STORE_DTYPE, variable_dtype=STORE_DTYPE, compute_dtypes=DTYPES,
                                batchnorm=batchnorm)
    tf.saved_model.save(generator, str(out_dir), signatures={"serving_default": generator.output_float32,
                                                               "trace_float32": generator.trace_float32})
    metadata = export_metadata(generator, model, SAVEDMODEL_FORMAT)
    metadata["dtypes"] = list(DTYPES)
    (out_dir / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return out_dir


def is_savedmodel_dir(path: str | Path) -> bool:
    return (Path(path) / "saved_model.pb").is_file()


def is_checkpoint_dir(path: str | Path) -> bool:
    return (Path(path) / ARCHITECTURE_FILE).is_file()


def _check_mode(directory: Path, metadata: dict, batchnorm: str | None) -> None:
    exported = metadata.get("batchnorm")
    if batchnorm is not None and exported is not None and batchnorm != exported:
        raise BackendError(f"{directory} was exported with its batch norms in {exported} mode, which is part of the "
                           f"graph; export the .t7 again for {batchnorm} mode")


class SavedModelRunner:
    """Runs the functions of a loaded SavedModel (no graph code of ours involved; the recorded architecture
    only serves to check inputs and noise before TensorFlow sees them)."""

    def __init__(self, loaded, dtype: str, metadata: dict):
        self.loaded = loaded
        self.dtype = dtype
        self.trace_paths = metadata["trace_paths"]
        self.input_planes: int | None = metadata.get("input_planes")
        self.batchnorm = metadata.get("batchnorm")
        self._spec = architecture_from_json(metadata["architecture"], STORE_DTYPE)
        self._output = getattr(loaded, f"output_{dtype}")
        self._trace = getattr(loaded, f"trace_{dtype}")

    def forward(self, x: np.ndarray, trace: bool = False,
                noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x_nhwc = nchw_to_nhwc(x, self.dtype, self.input_planes)
        n, h, w, c = x_nhwc.shape
        noise_nhwc = noise_inputs(self._spec, (n, c, h, w), noise, self.dtype)
        try:
            if not trace:
                return nhwc_to_nchw(self._output(x_nhwc, noise_nhwc)), {}
            results = self._trace(x_nhwc, noise_nhwc)
        except tf.errors.InvalidArgumentError as error:
            raise tf_error(error) from None
        return nhwc_to_nchw(results["output"]), {path: nhwc_to_nchw(results[path]) for path in self.trace_paths}


def load_savedmodel_runner(directory: str | Path, dtype: str, *, batchnorm: str | None = None):
    """A runner for ``directory``: a SavedModel from :func:`export_savedmodel` or a checkpoint directory."""
    check_dtype(dtype)
    directory = Path(directory)
    if is_checkpoint_dir(directory):
        return load_checkpoint_runner(directory, dtype, batchnorm=batchnorm)
    if not is_savedmodel_dir(directory):
        raise BackendError(f"{directory} is neither a SavedModel (no saved_model.pb) nor a texture-nets TF checkpoint "
                           f"(no {ARCHITECTURE_FILE})")
    metadata = _read_json(directory / METADATA_FILE, SAVEDMODEL_FORMAT)
    _check_mode(directory, metadata, batchnorm)
    loaded = tf.saved_model.load(str(directory))
    return SavedModelRunner(loaded, dtype, metadata)


def export_checkpoint(model: str | Path | T7Module, out_dir: str | Path, *, batchnorm: str | None = None) -> Path:
    """Write ``architecture.json`` and a tf.train.Checkpoint of the weights to ``out_dir``; return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = build_generator(load_root(model), STORE_DTYPE, variable_dtype=STORE_DTYPE, compute_dtypes=(),
                                batchnorm=batchnorm)
    checkpoint_path = tf.train.Checkpoint(generator=generator).write(str(out_dir / "weights"))
    metadata = export_metadata(generator, model, CHECKPOINT_FORMAT)
    metadata["checkpoint"] = Path(checkpoint_path).name
    (out_dir / ARCHITECTURE_FILE).write_text(json.dumps(metadata, indent=1))
    return out_dir


def load_checkpoint_runner(directory: str | Path, dtype: str, *, batchnorm: str | None = None) -> TFRunner:
    """Rebuild the graph from ``architecture.json`` (code-defined) and restore the weights from the checkpoint."""
    check_dtype(dtype)
    directory = Path(directory)
    metadata = _read_json(directory / ARCHITECTURE_FILE, CHECKPOINT_FORMAT)
    _check_mode(directory, metadata, batchnorm)
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
    if data.get("version") != FORMAT_VERSION:
        raise BackendError(f"{path} was written by an earlier version of this exporter (version "
                           f"{data.get('version')!r}, now {FORMAT_VERSION}); export the .t7 again")
    return data
