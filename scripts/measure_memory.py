#!/usr/bin/env python3
"""Measure the memory model of harness/core/memory.py: peak RSS of each backend at two sizes, one fresh process each.

    .venv/bin/python scripts/measure_memory.py          # prints the MEASURED table lines

Each line is (fixed MiB, factor): the line through the two (activation MiB, peak RSS MiB) points. Paste the
output into harness/core/memory.py's MEASURED with the machine it came from.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.core.memory import activation_bytes


def probe(backend: str, dtype: str, size: int, traced: bool) -> int:
    """Peak RSS (bytes) of this process after loading ``backend`` and one forward pass at 1x3xSIZExSIZE."""
    import numpy as np

    from fixtures import DEFAULT_MODEL
    from harness.core.malloc import keep_freed_memory
    from harness.core.registry import get_backend

    keep_freed_memory()  # as the texture-nets command runs (harness/core/malloc.py)
    runner = get_backend(backend).load(str(DEFAULT_MODEL), dtype)
    x = np.random.default_rng(0).random((1, 3, size, size)).astype(dtype)
    runner.forward(x, trace=traced)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(cases: Sequence[tuple[str, str, bool]], sizes: tuple[int, int] = (512, 1024)) -> list[str]:
    """Run :func:`probe` in a fresh interpreter per case and size; one table line per case."""
    from fixtures import DEFAULT_MODEL
    from t7file import load_module_tree

    root = load_module_tree(DEFAULT_MODEL)
    lines = []
    for backend, dtype, traced in cases:
        rss = []
        for size in sizes:
            code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
                    f"from measure_memory import probe; print(probe({backend!r}, {dtype!r}, {size}, {traced}))")
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            rss.append(int(done.stdout.strip().splitlines()[-1]) / 2**20)
        act = [activation_bytes(root, (1, 3, s, s), dtype) / 2**20 for s in sizes]
        factor = (rss[1] - rss[0]) / (act[1] - act[0])
        fixed = rss[0] - factor * act[0]
        lines.append(f"    ({backend!r}, {dtype!r}, {traced}): ({fixed:.0f}, {factor:.2f}),  "
                     f"# RSS {rss[0]:.0f} / {rss[1]:.0f} MiB, activations {act[0]:.1f} / {act[1]:.1f} MiB")
        print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    measure([(b, d, t) for b, dtypes in (("reference", ("float32", "float64")), ("torch", ("float32", "float64")),
                                          ("tf", ("float32", "float64")), ("tf-seed", ("float32",)),
                                          ("tflite", ("float32",)), ("onnx", ("float32",)))
             for d in dtypes for t in (False, True)])
