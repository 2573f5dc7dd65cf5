"""The backend protocol and registry: how the harness runs an implementation.

A backend is anything with these attributes (a class or a module-level object):

    name: str                      # "reference", "torch", "tf", ... or a plug-in's own
    dtypes: tuple[str, ...]        # subset of ("float32", "float64")
    def load(self, model: str | Path, dtype: str) -> Runner

and a Runner has

    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]
        # x: N x 3 x H x W in [0, 1], Torch layout, of the runner's dtype.
        # Returns the raw generator output (N x 3 x H' x W', VGG space) and, when
        # trace is true, each traced module's output keyed by its dotted Lua path
        # (t7file.trace_paths), all as numpy arrays in Torch's N x C x H x W layout.
    def run_module(self, lua_path: str, x: np.ndarray) -> np.ndarray   # optional
        # Run the single module at lua_path on x (for drift's isolated view).
        # A residual block path ("13") runs the whole block.

Backends are found by name: the built-ins below, then entry points in the group
``texture_nets.backends``, or a ``module:attribute`` spec whose attribute is a
backend object or a zero-argument factory returning one.
"""

from __future__ import annotations

import contextlib
import importlib
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

DTYPES = ("float32", "float64")
ENTRY_POINT_GROUP = "texture_nets.backends"

# name -> "module:factory" for the backends this project ships. Heavy frameworks
# are imported only when a backend is asked for.
BUILTIN_BACKENDS: dict[str, str] = {
    "reference": "reference.backend:ReferenceBackend",
    "torch": "torch_impl.backend:TorchBackend",
    "tf": "tf_impl.backend:TFBackend",
    "tf-seed": "tf_impl.seed_backend:TFSeedBackend",
    "tflite": "tf_impl.tflite_backend:TFLiteBackend",
}


@runtime_checkable
class Runner(Protocol):
    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    dtypes: tuple[str, ...]

    def load(self, model: str | Path, dtype: str) -> Runner: ...


class BackendError(Exception):
    """A backend could not be found, imported or constructed (one-line message)."""


def available_backend_names() -> list[str]:
    names = list(BUILTIN_BACKENDS)
    # A broken installed distribution must not break listing.
    with contextlib.suppress(Exception):
        names += [ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in names]
    return names


def get_backend(spec: str) -> Backend:
    """Resolve a backend by built-in name, entry-point name or 'module:factory'."""
    target = BUILTIN_BACKENDS.get(spec)
    if target is None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == spec:
                target = ep.value
                break
    if target is None:
        if ":" not in spec:
            raise BackendError(
                f"unknown backend '{spec}'; known: {', '.join(available_backend_names())}, "
                "or give a plug-in as module:factory"
            )
        target = spec
    return _instantiate(spec, target)


def _instantiate(spec: str, target: str) -> Backend:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BackendError(f"backend '{spec}' needs a package that is not installed: {error}") from None
    try:
        factory: Any = getattr(module, attribute)
    except AttributeError:
        raise BackendError(f"backend '{spec}': module {module_name} has no attribute {attribute!r}") from None
    backend = factory() if callable(factory) and not _is_backend(factory) else factory
    if not _is_backend(backend):
        raise BackendError(
            f"backend '{spec}' ({target}) does not follow the protocol: it needs name, dtypes and load(model, dtype)"
        )
    return backend


def _is_backend(obj: Any) -> bool:
    return (
        not isinstance(obj, type)
        and isinstance(getattr(obj, "name", None), str)
        and isinstance(getattr(obj, "dtypes", None), tuple)
        and callable(getattr(obj, "load", None))
    )
