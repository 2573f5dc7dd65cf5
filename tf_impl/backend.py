"""The ``tf`` backend: the faithful TF2 port, loaded from a .t7, an in-memory T7Module or a SavedModel directory."""

from __future__ import annotations

from pathlib import Path

from t7file import T7Module
from tf_impl.runner import DTYPES, TFRunner, build_generator, check_dtype, tf_environment
from tf_impl.weights import SUPPORTED_CLASSES, load_root


class TFBackend:
    """Faithful TF2 port: stacked SYMMETRIC replication pads, moments-based IN, padded convs, cropped transposes,
    and the v1-era modules (batch norms in either mode, circular pads, pyramids, injected noise)."""

    name = "tf"
    dtypes = DTYPES
    framework = "tensorflow"
    supported_classes = frozenset(SUPPORTED_CLASSES)

    def environment(self) -> dict:
        return tf_environment()

    def load(self, model: str | Path | T7Module, dtype: str, *, batchnorm: str | None = None):
        """``batchnorm``: "train" (batch statistics) or "evaluate" (running ones); None = the model family's
        convention (contract.families.batchnorm_mode). Fixed for the runner's life: it is part of the graph."""
        check_dtype(dtype)
        if not isinstance(model, T7Module) and Path(model).is_dir():
            from tf_impl.savedmodel import load_savedmodel_runner

            return load_savedmodel_runner(model, dtype, batchnorm=batchnorm)
        return TFRunner(build_generator(load_root(model), dtype, batchnorm=batchnorm), dtype)
