"""The ``tf-seed`` backend: the published tf_texture_net port reproduced faithfully, flaws included.

See :mod:`tf_impl.seed` for the three deviations from Torch7 it reproduces on
purpose. Its outputs are *expected* to differ from the Torch7 oracle; the trace
uses the same Lua paths as every other backend so the harness shows where.
"""

from __future__ import annotations

from pathlib import Path

from contract import BackendError
from contract.families import detect_family
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
    # The seed's instance norms take tf.nn.moments of the float32 activations (tf_impl/seed.py), not double sums.
    instance_norm_statistics = "float32"

    def environment(self) -> dict:
        return tf_environment()

    def load(self, model: str | Path | T7Module, dtype: str, *, batchnorm: str | None = None) -> TFRunner:
        """Only johnson generators: the published port was written for them and nothing else (``batchnorm``
        is accepted for the protocol's sake; a model with batch norms is refused before it matters)."""
        from tf_impl.network import Generator
        from tf_impl.seed import SeedOps, check_seed_layout

        check_dtype(dtype)
        root = load_root(model)
        family = detect_family(root)
        if family.name != "johnson":
            raise BackendError(f"tf-seed reproduces the published port of the johnson generator; it does not apply "
                               f"to {family.name} models")
        spec = spec_from_module(root, dtype)
        check_seed_layout(spec)
        generator = Generator(spec, trace_paths(root), variable_dtype=dtype, compute_dtypes=(dtype,), ops=SeedOps(),
                              name="tf_seed_generator")
        return TFRunner(generator, dtype)
