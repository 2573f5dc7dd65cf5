"""The module tree of a Torch7 network, in plain Python terms.

A :class:`T7Module` is one ``nn.*`` object of the file: its class name, its dotted
Lua 1-based path ("" for the root, "6", "13.1.2.4"), its fields with str keys and
numpy arrays for tensors, and its children (the ``modules`` list). These paths
are the common vocabulary of every implementation, trace and report.

The tree carries raw data only, in Torch's own layouts: each implementation
decides how to interpret it (and must not share that code with another one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torchfile

from t7file.errors import T7FormatError, T7ModelError
from t7file.reader import T7Storage, T7Tensor, read_object

# Containers whose outputs are not recorded in a trace: a ConcatTable and a
# CAddTable produce/consume tables, and Identity only repeats its input. The
# branch Sequential inside a ConcatTable is skipped too: its output is its last
# child's. This matches the keys of the Torch7 oracle runs.
UNTRACED_CLASSES = frozenset({"nn.ConcatTable", "nn.CAddTable", "nn.Identity"})

# A module object may appear in several ``modules`` lists (Torch allows sharing);
# each appearance becomes its own T7Module. A hostile file can nest such sharing
# to expand a few bytes into billions of modules, so the tree is capped.
MAX_MODULES = 20_000

_MISSING = object()


@dataclass(frozen=True)
class TensorStorage:
    """Where a tensor field lives in the file: its flat storage (read-only) and its 0-based offset there."""

    flat: np.ndarray
    offset: int


@dataclass(frozen=True, eq=False)
class T7Module:
    torch_class: str
    lua_path: str
    fields: Mapping[str, Any] = field(repr=False)
    children: tuple[T7Module, ...] = ()
    storages: Mapping[str, TensorStorage] = field(default_factory=dict, repr=False)

    # -- field access with errors that name the module ----------------------
    def array(self, name: str) -> np.ndarray:
        """A required tensor field (Torch layout, private copy)."""
        value = self.fields.get(name)
        if not isinstance(value, np.ndarray):
            raise T7ModelError(f"missing tensor field '{name}'", torch_class=self.torch_class, lua_path=self.lua_path)
        return value

    def optional_array(self, name: str) -> np.ndarray | None:
        value = self.fields.get(name)
        if value is None or (isinstance(value, np.ndarray) and value.size == 0):
            return None
        if not isinstance(value, np.ndarray):
            raise T7ModelError(f"field '{name}' is not a tensor", torch_class=self.torch_class, lua_path=self.lua_path)
        return value

    def number(self, name: str, default: Any = _MISSING) -> float:
        value = self.fields.get(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise T7ModelError(f"missing number field '{name}'", torch_class=self.torch_class,
                                   lua_path=self.lua_path)
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise T7ModelError(f"field '{name}' is not a finite number: {value!r}", torch_class=self.torch_class,
                               lua_path=self.lua_path)
        return value

    def integer(self, name: str, default: Any = _MISSING) -> int:
        value = self.number(name, default)
        if value is default and default is not _MISSING:
            return default
        if float(value) != int(value):
            raise T7ModelError(f"field '{name}' is not an integer: {value!r}", torch_class=self.torch_class,
                               lua_path=self.lua_path)
        return int(value)

    def storage(self, name: str) -> TensorStorage:
        """The flat storage behind tensor field ``name`` and the field's 0-based offset in it.

        For computations that read past a tensor's end into the parameters that follow it in the
        file's storage (texture_nets v1 batch norms declared with fewer features than channels)."""
        found = self.storages.get(name)
        if found is None:
            raise T7ModelError(f"tensor field '{name}' has no storage in the file", torch_class=self.torch_class,
                               lua_path=self.lua_path)
        return found

    def flag(self, name: str, default: bool) -> bool:
        value = self.fields.get(name)
        return default if value is None else bool(value)

    # -- traversal --------------------------------------------------------
    def walk(self) -> Iterator[T7Module]:
        """Pre-order traversal: self, then each child's subtree."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, lua_path: str) -> T7Module:
        for module in self.walk():
            if module.lua_path == lua_path:
                return module
        raise KeyError(lua_path)

    @property
    def short_class(self) -> str:
        return self.torch_class.rsplit(".", 1)[-1]

    def parameter_arrays(self) -> dict[str, np.ndarray]:
        """Learned parameters (weight, bias) of this module alone."""
        return {name: self.fields[name] for name in ("weight", "bias")
                if isinstance(self.fields.get(name), np.ndarray) and self.fields[name].size}


def trace_paths(root: T7Module) -> list[str]:
    """Lua paths whose outputs a trace records, in execution order.

    Every module except the root, ConcatTable/CAddTable/Identity, and the
    branch Sequential directly inside a ConcatTable (its output is its last
    child's). These are exactly the keys of the Torch7 oracle traces.
    """
    paths: list[str] = []

    def visit(module: T7Module, parent_class: str | None) -> None:
        for child in module.children:
            skip = child.torch_class in UNTRACED_CLASSES or (
                parent_class is not None and module.torch_class == "nn.ConcatTable"
            )
            visit(child, module.torch_class)
            if not skip:
                paths.append(child.lua_path)

    visit(root, None)
    return paths


def load_module_tree(source: str | Path | bytes | BinaryIO) -> T7Module:
    """Read a .t7 file and return its root module. Raises T7Error subclasses only."""
    obj = read_object(source)
    try:
        return module_tree_from_object(obj)
    except RecursionError:  # the reader caps nesting well below the limit; this keeps a surprise to one line
        raise T7FormatError("objects nested too deeply to convert") from None


def module_tree_from_object(obj: Any) -> T7Module:
    if not isinstance(obj, torchfile.TorchObject):
        hint = ""
        if isinstance(obj, dict) and obj:
            keys = sorted(_key(k) for k in obj)
            hint = f" with keys {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''} (a checkpoint?)"
        raise T7ModelError(f"the file holds a {_kind(obj)}{hint}, not a Torch7 nn module")
    return _to_module(obj, "", set(), {}, [0])


class _LuaFunctionFound(Exception):
    """Raised by _plain when a value holds a Lua function; _to_module names the field."""


def _to_module(obj: torchfile.TorchObject, lua_path: str, active: set[int], memo: dict[int, Any],
               count: list[int]) -> T7Module:
    class_name = obj._typename.decode("latin-1") if isinstance(obj._typename, bytes) else str(obj._typename)
    count[0] += 1
    if count[0] > MAX_MODULES:
        raise T7ModelError(f"the module tree has more than {MAX_MODULES:,} modules (shared sub-networks expanded); "
                           "refusing to build it", torch_class=class_name, lua_path=lua_path)
    raw = obj._obj
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise T7ModelError("object fields are not a table", torch_class=class_name, lua_path=lua_path)
    if id(obj) in active:
        raise T7FormatError(f"{class_name} at Lua path {lua_path} contains itself (reference cycle)")
    active.add(id(obj))
    try:
        fields: dict[str, Any] = {}
        storages: dict[str, TensorStorage] = {}
        children: list[T7Module] = []
        for key, value in raw.items():
            name = key.decode("latin-1") if isinstance(key, bytes) else str(key)
            if name == "modules":
                children = _children(value, class_name, lua_path, active, memo, count)
                continue
            if isinstance(value, T7Tensor) and value.storage is not None:
                storages[name] = TensorStorage(value.storage, value.offset)
            try:
                fields[name] = _plain(value, memo)
            except _LuaFunctionFound:
                # A function field overrides behaviour with code this tool will never run.
                raise T7ModelError(f"field '{name}' holds a Lua function (compiled code); this tool does not run "
                                   "code from model files", torch_class=class_name, lua_path=lua_path) from None
        return T7Module(class_name, lua_path, fields, tuple(children), storages)
    finally:
        active.discard(id(obj))


def _children(value: Any, class_name: str, lua_path: str, active: set[int], memo: dict[int, Any],
              count: list[int]) -> list[T7Module]:
    if isinstance(value, dict) and not value:
        return []
    if not isinstance(value, list):
        raise T7ModelError("'modules' is not a list of modules", torch_class=class_name, lua_path=lua_path)
    children = []
    for index, child in enumerate(value, start=1):
        child_path = f"{lua_path}.{index}" if lua_path else str(index)
        if not isinstance(child, torchfile.TorchObject):
            raise T7ModelError(f"modules[{index}] is a {_kind(child)}, not a module", torch_class=class_name,
                               lua_path=lua_path)
        children.append(_to_module(child, child_path, active, memo, count))
    return children


def _plain(value: Any, memo: dict[int, Any]) -> Any:
    """Convert torchfile values to plain Python: str keys, numpy arrays, nested dict/list.

    Shared and cyclic tables are converted once (``memo``), so a hostile file
    cannot make the conversion exponential or endless.
    """
    if isinstance(value, T7Tensor | T7Storage):
        return value.array
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, torchfile.LuaFunction):
        raise _LuaFunctionFound
    if not isinstance(value, torchfile.TorchObject | dict | list):
        return value
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, list):
        result: Any = []
        memo[id(value)] = result
        result.extend(_plain(v, memo) for v in value)
        return result
    result = {}
    memo[id(value)] = result
    if isinstance(value, torchfile.TorchObject):
        result["__class__"] = _class_name(value)
        value = value._obj if isinstance(value._obj, dict) else {}
    for k, v in value.items():
        result[_key(k)] = _plain(v, memo)
    return result


def _key(key: Any) -> str:
    return key.decode("latin-1") if isinstance(key, bytes) else str(key)


def _class_name(obj: torchfile.TorchObject) -> str:
    name = obj._typename
    return name.decode("latin-1") if isinstance(name, bytes) else str(name)


def _kind(obj: Any) -> str:
    if isinstance(obj, torchfile.TorchObject):
        return _class_name(obj)
    if isinstance(obj, T7Tensor | T7Storage):
        return obj.torch_type
    if isinstance(obj, torchfile.LuaFunction):
        return "Lua function"
    return {dict: "Lua table", torchfile.hashable_uniq_dict: "Lua table", list: "Lua list", str: "string",
            bytes: "string", bool: "boolean",
            int: "number", float: "number", type(None): "nil"}.get(type(obj), type(obj).__name__)
