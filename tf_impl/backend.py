"""The ``tf`` backend: the faithful TF2 port, loaded from a .t7, an in-memory T7Module or a SavedModel directory."""

from __future__ import annotations

from pathlib import Path

from t7file import T7Module
from tf_impl.runner import DTYPES, TFRunner, build_generator, check_dtype, tf_environment
from tf_impl.weights import load_root


class TFBackend:
    """Faithful TF2 port: stacked SYMMETRIC replication pads, moments-based IN, padded convs, cropped transposes."""

    name = "tf"
    dtypes = DTYPES
    framework = "tensorflow"

    def environment(self) -> dict:
        return tf_environment()

    def load(self, model: str | Path | T7Module, dtype: str):
        check_dtype(dtype)
        if not isinstance(model, T7Module) and Path(model).is_dir():
            from tf_impl.savedmodel import load_savedmodel_runner

            return load_savedmodel_runner(model, dtype)
        return TFRunner(build_generator(load_root(model), dtype), dtype)
