"""Ground-truth runs made by the original Lua Torch7, read from any folder that holds them.

The folders are the caller's to name (the committed fixtures, ../shared/oracle and its v1/
runs); this module knows their format, not where a checkout keeps them.

An :class:`OracleRun` is one ``*.npz`` forward run with its ``.json`` sidecar:
the model file it used, the dtype, the input, the output and (for float32 runs)
the per-module trace keyed by dotted Lua path. A :class:`SingleModuleCase` is one
``single/*.npz`` module test (input, weight, bias, output, hyper-parameters).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

# The folder beside the project with the full-width and real-model ground truth (optional).
SHARED_DIR = Path(os.environ.get("TEXTURE_NETS_SHARED", Path(__file__).resolve().parents[3] / "shared"))
SHARED_ORACLE_DIR = SHARED_DIR / "oracle"
SHARED_V1_DIR = SHARED_ORACLE_DIR / "v1"
REAL_MODELS_DIR = SHARED_DIR / "realmodels"


class _NpzWithSidecar:
    """A ``*.npz`` of arrays with its ``.json`` sidecar (``meta``), read lazily, named by its file."""

    npz_path: Path
    meta: dict

    @property
    def name(self) -> str:
        return self.npz_path.stem

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.npz_path) as data:
            return {key: data[key] for key in data.files}


@dataclass(frozen=True)
class OracleRun(_NpzWithSidecar):
    npz_path: Path
    model_path: Path
    dtype: str
    meta: dict

    @property
    def layout(self) -> str:
        """"pretrained" or "head" for johnson generators; the family name for the v1-era runs."""
        if "family" in self.meta:
            return self.meta["family"]
        return "pretrained" if "pretrained" in self.name else "head"

    @property
    def seed(self) -> int | None:
        """The ``torch.manualSeed`` called right before the forward (v1 runs), if recorded."""
        return self.meta.get("seed")

    @property
    def batchnorm(self) -> str | None:
        """How the run's batch norms normalised ("train" or "evaluate"), if the model has any."""
        return self.meta.get("bn_mode")

    @property
    def noise(self) -> dict[str, np.ndarray]:
        """What every noise module drew in this run, by Lua path (empty for noise-free models)."""
        return {key[len("noise/"):]: value for key, value in self.arrays.items() if key.startswith("noise/")}

    @property
    def traces_left_out(self) -> tuple[str, ...]:
        """Traced paths whose outputs the run did not store (too large), as listed in its sidecar."""
        return tuple(self.meta.get("traces_left_out", ()))

    @property
    def input(self) -> np.ndarray:
        return self.arrays["input"]

    @property
    def output(self) -> np.ndarray:
        return self.arrays["output"]

    @property
    def trace(self) -> dict[str, np.ndarray]:
        return {key[len("trace/"):]: value for key, value in self.arrays.items() if key.startswith("trace/")}

    def __repr__(self) -> str:  # used in pytest ids
        return self.name


@dataclass(frozen=True)
class SingleModuleCase(_NpzWithSidecar):
    npz_path: Path
    meta: dict

    @property
    def torch_class(self) -> str:
        return self.meta["torch_class"]

    @property
    def hparams(self) -> dict:
        return self.meta["hparams"]

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]


def runs_in(directory: Path) -> list[OracleRun]:
    """Every forward run in ``directory`` whose model file can be found (empty when the folder is absent).

    The model is the sidecar's ``model_file`` beside the run, else its ``model`` path relative to the
    run's folder (the v1 runs point at ../../realmodels), else the full-width naming convention."""
    if not directory.is_dir():
        return []
    runs = []
    for npz in sorted(directory.glob("*.npz")):
        sidecar = npz.with_suffix(".json")
        if not sidecar.exists():
            continue
        meta = json.loads(sidecar.read_text())
        if "dtype" not in meta:
            continue
        model = _model_path(npz, meta, directory)
        if model is not None:
            runs.append(OracleRun(npz, model, meta["dtype"], meta))
    return runs


def _model_path(npz: Path, meta: dict, directory: Path) -> Path | None:
    candidates = []
    if meta.get("model_file"):
        candidates.append(directory / meta["model_file"])
    if meta.get("model"):
        candidates.append((directory / meta["model"]).resolve())
    shared = _shared_model_file(npz.stem, meta.get("dtype"), directory)
    if shared is not None:
        candidates.append(directory / shared)
    return next((path for path in candidates if path.is_file()), None)


def _shared_model_file(stem: str, dtype: str | None, directory: Path) -> str | None:
    """The full-width sidecars name no model file: '<model>_f32_64x64' ran '<model>_float.t7' (README)."""
    suffix = {"float32": ("_f32_", "_float.t7"), "float64": ("_f64_", "_double.t7")}.get(dtype or "")
    if suffix is None or suffix[0] not in stem:
        return None
    name = stem.split(suffix[0])[0] + suffix[1]
    return name if (directory / name).exists() else None


def single_module_cases_in(directories: list[Path]) -> list[SingleModuleCase]:
    """Single-module Torch7 cases in ``directories`` (a name found twice is taken from the first folder)."""
    cases: dict[str, SingleModuleCase] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        for npz in sorted(directory.glob("*.npz")):
            if npz.stem not in cases and npz.with_suffix(".json").exists():
                cases[npz.stem] = SingleModuleCase(npz, json.loads(npz.with_suffix(".json").read_text()))
    return sorted(cases.values(), key=lambda case: case.name)
