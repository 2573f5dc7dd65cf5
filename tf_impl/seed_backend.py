"""The ``tf-seed`` backend: the published tf_texture_net port reproduced faithfully, flaws included.

See :mod:`tf_impl.seed` for the three deviations from Torch7 it reproduces on
purpose. Its outputs are *expected* to differ from the Torch7 oracle; the trace
uses the same Lua paths as every other backend so the harness shows where.
"""

from __future__ import annotations

from pathlib import Path

from t7file import T7Module, trace_paths
from tf_impl.runner import DTYPES, TFRunner, check_dtype, tf_environment
from tf_impl.weights import load_root, spec_from_module


class TFSeedBackend:
    """Reproduction of a flawed port (VALID strided convs, forced-shape VALID transposes, no biases)."""

    name = "tf-seed"
    dtypes = DTYPES
    framework = "tensorflow"
    # A reproduction of a known-flawed port: its deviations are reported and asserted, not failed.
    faithful = False

    def environment(self) -> dict:
        return tf_environment()

    def load(self, model: str | Path | T7Module, dtype: str) -> TFRunner:
        from tf_impl.network import Generator
        from tf_impl.seed import SeedOps, check_seed_layout

        check_dtype(dtype)
        root = load_root(model)
        spec = spec_from_module(root, dtype)
        check_seed_layout(spec)
        generator = Generator(spec, trace_paths(root), variable_dtype=dtype, compute_dtypes=(dtype,), ops=SeedOps(),
                              name="tf_seed_generator")
        return TFRunner(generator, dtype)
