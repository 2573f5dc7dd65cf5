"""Ground-truth runs made by the original Lua Torch7, found in the repo's fixtures and in ../shared.

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

from fixtures import ORACLE_NARROW_DIR, ORACLE_SINGLE_DIR

SHARED_DIR = Path(os.environ.get("TEXTURE_NETS_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SHARED_ORACLE_DIR = SHARED_DIR / "oracle"


@dataclass(frozen=True)
class OracleRun:
    npz_path: Path
    model_path: Path
    dtype: str
    meta: dict

    @property
    def name(self) -> str:
        return self.npz_path.stem

    @property
    def layout(self) -> str:
        return "pretrained" if "pretrained" in self.name else "head"

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.npz_path) as data:
            return {key: data[key] for key in data.files}

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
class SingleModuleCase:
    npz_path: Path
    meta: dict

    @property
    def name(self) -> str:
        return self.npz_path.stem

    @property
    def torch_class(self) -> str:
        return self.meta["torch_class"]

    @property
    def hparams(self) -> dict:
        return self.meta["hparams"]

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.npz_path) as data:
            return {key: data[key] for key in data.files}


def _runs_in(directory: Path) -> list[OracleRun]:
    runs = []
    for npz in sorted(directory.glob("*.npz")):
        sidecar = npz.with_suffix(".json")
        if not sidecar.exists():
            continue
        meta = json.loads(sidecar.read_text())
        model_file = meta.get("model_file") or _shared_model_file(npz.stem, meta.get("dtype"), directory)
        if model_file is None:
            continue
        runs.append(OracleRun(npz, directory / model_file, meta["dtype"], meta))
    return runs


def _shared_model_file(stem: str, dtype: str | None, directory: Path) -> str | None:
    """The full-width sidecars name no model file: '<model>_f32_64x64' ran '<model>_float.t7' (README)."""
    suffix = {"float32": ("_f32_", "_float.t7"), "float64": ("_f64_", "_double.t7")}.get(dtype or "")
    if suffix is None or suffix[0] not in stem:
        return None
    name = stem.split(suffix[0])[0] + suffix[1]
    return name if (directory / name).exists() else None


def fixture_runs() -> list[OracleRun]:
    """Runs committed in the repo (narrow models, both layouts)."""
    return _runs_in(ORACLE_NARROW_DIR)


def shared_runs() -> list[OracleRun]:
    """Full-width runs in ../shared/oracle, when that folder is present (else empty)."""
    return _runs_in(SHARED_ORACLE_DIR) if SHARED_ORACLE_DIR.is_dir() else []


def single_module_cases(include_shared: bool = True) -> list[SingleModuleCase]:
    """Single-module Torch7 cases: the committed ones, plus the shared-only ones when present."""
    cases: dict[str, SingleModuleCase] = {}
    directories = [ORACLE_SINGLE_DIR]
    if include_shared and (SHARED_ORACLE_DIR / "single").is_dir():
        directories.append(SHARED_ORACLE_DIR / "single")
    for directory in directories:
        for npz in sorted(directory.glob("*.npz")):
            if npz.stem not in cases and npz.with_suffix(".json").exists():
                cases[npz.stem] = SingleModuleCase(npz, json.loads(npz.with_suffix(".json").read_text()))
    return sorted(cases.values(), key=lambda case: case.name)
