"""The backend registry: finding a backend by name, and what each built-in one needs.

Backends are found by name: the built-ins below, then entry points in the group
``texture_nets.backends`` (how a plug-in registers itself, like ``onnx``), or a
``module:attribute`` spec whose attribute is a backend object or a zero-argument factory
returning one. The protocol they follow is :mod:`contract.protocol`.

Each built-in entry carries the framework it needs and the pip extra that installs it, so
that listing, test parametrisation and error messages never import a framework to find out.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from contract import DTYPES, BackendError
from contract.protocol import Backend, backend_framework, backend_is_external, backend_is_faithful

ENTRY_POINT_GROUP = "texture_nets.backends"


@dataclass(frozen=True)
class BackendEntry:
    """A built-in backend: where its factory lives, the module it needs, the extra that installs it,
    and whether it claims Torch7's semantics (``faithful``: False for a reproduction of a flawed port)."""

    name: str
    target: str
    framework: str
    extra: str | None
    faithful: bool = True

    @property
    def installed(self) -> bool:
        return framework_installed(self.framework)


BUILTIN: dict[str, BackendEntry] = {entry.name: entry for entry in (
    BackendEntry("reference", "reference.backend:ReferenceBackend", "numpy", None),
    BackendEntry("torch", "torch_impl.backend:TorchBackend", "torch", "torch"),
    BackendEntry("tf", "tf_impl.backend:TFBackend", "tensorflow", "tf"),
    BackendEntry("tf-seed", "tf_impl.seed_backend:TFSeedBackend", "tensorflow", "tf", faithful=False),
    BackendEntry("tflite", "tf_impl.tflite_backend:TFLiteBackend", "tensorflow", "tf"),
)}
# name -> "module:factory", kept for code that only needs the targets.
BUILTIN_BACKENDS: dict[str, str] = {name: entry.target for name, entry in BUILTIN.items()}


@dataclass(frozen=True)
class RunSpec:
    """A backend as named on the command line: ``torch``, ``reference-float32``, ``pkg.mod:factory-float64``."""

    text: str
    backend: str
    dtype: str

    @property
    def label(self) -> str:
        return f"{self.backend} {self.dtype}"


def parse_run_spec(text: str, default_dtype: str) -> RunSpec:
    text = text.strip()
    for dtype in DTYPES:
        if text.endswith("-" + dtype):
            return RunSpec(text, text[: -len(dtype) - 1], dtype)
    return RunSpec(text, text, default_dtype)


def framework_installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(name: str) -> str:
    """How to install what backend ``name`` needs, for one-line errors."""
    entry = BUILTIN.get(name)
    if entry is not None and entry.extra:
        return f"install it with: pip install -e '.[{entry.extra}]' (or scripts/setup-venv for everything)"
    for ep in _entry_points():
        if ep.name == name and ep.dist is not None:
            return f"install the extra that provides it: pip install -e '.[{name}]'"
    return "install the package that provides it"


def _entry_points() -> list[metadata.EntryPoint]:
    # A broken installed distribution must not break listing.
    with contextlib.suppress(Exception):
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    return []


def available_backend_names(installed_only: bool = False) -> list[str]:
    """Built-in names, then plug-in entry points. ``installed_only``: only those whose framework imports."""
    names = [name for name, entry in BUILTIN.items() if not installed_only or entry.installed]
    for ep in _entry_points():
        if ep.name in names:
            continue
        if installed_only:
            try:
                backend = _instantiate(ep.name, ep.value)
            except BackendError:
                continue
            if not framework_installed(backend_framework(backend)):
                continue
        names.append(ep.name)
    return names


def is_faithful(name: str) -> bool:
    """Whether the backend called ``name`` claims Torch7's semantics (without importing built-ins)."""
    entry = BUILTIN.get(name)
    if entry is not None:
        return entry.faithful
    return backend_is_faithful(get_backend(name))


def is_external(name: str) -> bool:
    """Whether the backend called ``name`` runs a port written by others (never true of a built-in)."""
    if name in BUILTIN:
        return False
    return backend_is_external(get_backend(name))


def get_backend(spec: str) -> Backend:
    """Resolve a backend by built-in name, entry-point name or 'module:factory'.

    Raises BackendError with one line: unknown names, missing frameworks (naming the extra to
    install), factories that do not return a backend.
    """
    entry = BUILTIN.get(spec)
    target = entry.target if entry is not None else None
    if entry is not None and not entry.installed:
        raise BackendError(f"backend '{spec}' needs {entry.framework}, which is not installed; {install_hint(spec)}")
    if target is None:
        for ep in _entry_points():
            if ep.name == spec:
                target = ep.value
                break
    if target is None:
        if ":" not in spec:
            installed = available_backend_names(installed_only=True)
            missing = [name for name in available_backend_names() if name not in installed]
            raise BackendError(
                f"unknown backend '{spec}'; installed: {', '.join(installed)}"
                + (f"; known but not installed: {', '.join(missing)}" if missing else "")
                + "; or give a plug-in as module:factory"
            )
        target = spec
    backend = _instantiate(spec, target)
    framework = backend_framework(backend)
    if not framework_installed(framework):
        raise BackendError(f"backend '{spec}' needs {framework}, which is not installed; {install_hint(spec)}")
    return backend


def _instantiate(spec: str, target: str) -> Backend:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise BackendError(f"backend '{spec}': a plug-in is given as module:factory, not {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        raise BackendError(f"backend '{spec}' needs a package that is not installed ({missing}); "
                           f"{install_hint(spec)}") from None
    except Exception as error:  # a plug-in module that fails while importing: one line, not its traceback
        raise BackendError(f"backend '{spec}': importing {module_name} failed: {type(error).__name__}: "
                           f"{error}") from None
    try:
        factory: Any = getattr(module, attribute)
    except AttributeError:
        raise BackendError(f"backend '{spec}': module {module_name} has no attribute {attribute!r}") from None
    backend = factory
    if not _is_backend(factory):
        if not callable(factory) or inspect.isbuiltin(factory):
            raise BackendError(f"backend '{spec}' ({target}) is a {type(factory).__name__}, not a backend or a "
                               "factory returning one")
        try:
            backend = factory()
        except Exception as error:  # os:system and friends: not a factory we can call without arguments
            raise BackendError(f"backend '{spec}' ({target}) is not a backend factory: calling it with no "
                               f"arguments failed ({type(error).__name__}: {error})") from None
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
