#!/usr/bin/env python3
"""How close each backend is to the original Lua Torch7: the README's agreement table, measured.

    .venv/bin/python scripts/agreement_table.py [--backend NAME ...]

For every Torch7 run this checkout can see (the committed narrow runs; with ../shared the full-width
johnson runs and the real v1-era models' runs), each backend is run on the run's own input, noise and
batch-norm mode; the figure is max |backend - Torch7| / max |Torch7| over the output and every traced
path the run stored, worst over the runs of each family. Torch7's own float32 rounding on the same runs
(Torch7 float32 against the float64 reference) is printed beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.core.registry import BUILTIN, get_backend
from harness.core.runs import forward, load_runner
from parity_tests.ground_truth import fixture_runs, shared_runs, v1_runs
from t7file import load_module_tree


def rel(actual: np.ndarray, expected: np.ndarray) -> float:
    scale = float(np.max(np.abs(expected)))
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected))) / scale if scale else 0.0


def family_of(run) -> str:
    return "johnson" if run.meta.get("family") is None else "real models (v1 era)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", default=[])
    args = parser.parse_args()
    names = args.backend or [name for name, entry in BUILTIN.items() if entry.installed and entry.faithful]
    runs = fixture_runs() + shared_runs() + v1_runs()
    table: dict[tuple[str, str, str], float] = {}
    for name in names:
        backend = get_backend(name)
        for run in runs:
            if run.dtype not in backend.dtypes:
                continue
            root = load_module_tree(run.model_path)
            try:
                runner = load_runner(backend, run.model_path, run.dtype, root=root, batchnorm=run.batchnorm)
                output, trace = forward(runner, run.input.astype(run.dtype), trace=True,
                                        noise={k: v.astype(run.dtype) for k, v in run.noise.items()})
            except Exception as error:  # a backend that cannot run a case: reported, not hidden
                print(f"{name} {run.name}: {type(error).__name__}: {error}", file=sys.stderr)
                continue
            worst = max([rel(output, run.output)] + [rel(trace[p], e) for p, e in run.trace.items() if p in trace])
            key = (name, run.dtype, family_of(run))
            table[key] = max(table.get(key, 0.0), worst)
            print(f"{name:10} {run.name:42} {worst:.2g}", file=sys.stderr)
    print("| backend | family | float32 | float64 |\n|---|---|---|---|")
    for name in names:
        for family in ("johnson", "real models (v1 era)"):
            cells = [table.get((name, dtype, family)) for dtype in ("float32", "float64")]
            print(f"| {name} | {family} | " + " | ".join("—" if c is None else f"{c:.2g}" for c in cells) + " |")


if __name__ == "__main__":
    main()
