"""The .t7 files OpenCV reads: the model as given, or one the adapter writes (and says so).

OpenCV only reads files, so three cases need one written with t7file's writer (Torch7's binary
format, docs/ARCHITECTURE.md):

* an in-memory :class:`t7file.T7Module` (the property tests build single-module trees);
* the isolated view: one module wrapped in an ``nn.Sequential`` (:func:`module_file`), so that
  OpenCV's importer builds and runs its own layer(s) for exactly that module;
* the texture_nets v1 batch norms declared with fewer features than channels, rewritten so that
  OpenCV sees the values Torch7/cunn reads (:func:`aliased_batch_norms`; only on request).

The rewrite keeps every field of every module (tensors as contiguous tensors of their own storage:
OpenCV reads each tensor through its own view, so the sharing of one flat storage is not needed).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract import BackendError
from opencv_backend.naming import BATCH_NORMS, short_class
from t7file import T7Module, write_t7
from t7file.writer import TorchObject

CONVOLUTIONS = frozenset({"SpatialConvolution", "SpatialConvolutionMM", "SpatialFullConvolution"})


@dataclass(frozen=True)
class AliasedBatchNorm:
    """A batch norm declared with ``features`` < ``channels`` (texture_nets v1, docs/real-models.md): Torch7/cunn
    reads gamma[c] = flat[weight_offset + c], beta[c] = flat[bias_offset + c] for c < channels."""

    lua_path: str
    features: int
    channels: int
    weight_offset: int
    bias_offset: int
    gamma: np.ndarray
    beta: np.ndarray


def channels_in(root: T7Module, planes: int) -> dict[str, int]:
    """The channel count entering every module, for an input of ``planes`` channels."""
    found: dict[str, int] = {}

    def walk(module: T7Module, channels: int) -> int:
        found[module.lua_path] = channels
        cls = short_class(module.torch_class)
        if cls in ("Sequential", "Inception"):
            for child in module.children:
                channels = walk(child, channels)
            return channels
        if cls in ("Concat", "DepthConcat"):
            return sum(walk(child, channels) for child in module.children)
        if cls == "ConcatTable":  # its table goes to a CAddTable: the members' widths agree
            widths = [walk(child, channels) for child in module.children]
            return widths[0] if widths else channels
        if cls in CONVOLUTIONS:
            return module.integer("nOutputPlane")
        if cls == "GenNoise" and "num_planes" in module.fields:
            return module.integer("num_planes")
        return channels

    walk(root, planes)
    return found


def aliased_batch_norms(root: T7Module, planes: int) -> list[AliasedBatchNorm]:
    """Every batch norm whose weight is shorter than the channels it is applied to, with the values Torch7
    reads for all channels (out of the file's flat parameter storage)."""
    widths = channels_in(root, planes)
    found = []
    for module in root.walk():
        if short_class(module.torch_class) not in BATCH_NORMS:
            continue
        weight = module.optional_array("weight")
        channels = widths[module.lua_path]
        if weight is None or weight.size >= channels:
            continue
        values = []
        for name in ("weight", "bias"):
            storage = module.storage(name)
            if storage.offset + channels > storage.flat.size:
                raise BackendError(f"batch norm at Lua path {module.lua_path}: {weight.size} features for {channels} "
                                   f"channels, and its {name} storage ends before channel {channels}")
            values.append(np.array(storage.flat[storage.offset:storage.offset + channels]))
        found.append(AliasedBatchNorm(module.lua_path, int(weight.size), channels, module.storage("weight").offset,
                                      module.storage("bias").offset, values[0], values[1]))
    return found


def alias_overrides(aliased: list[AliasedBatchNorm]) -> dict[str, dict[str, Any]]:
    """Field replacements making each aliased batch norm explicit: C-element weight and bias holding the values
    Torch7 reads, running statistics of C elements (unused in train mode, where the rewrite applies)."""
    return {bn.lua_path: {"weight": bn.gamma, "bias": bn.beta, "nOutput": bn.channels,
                          "running_mean": np.zeros(bn.channels, bn.gamma.dtype),
                          "running_var": np.ones(bn.channels, bn.gamma.dtype)} for bn in aliased}


def to_torch_object(module: T7Module, overrides: dict[str, dict[str, Any]] | None = None) -> TorchObject:
    """A writable copy of ``module`` and its subtree (``overrides``: Lua path -> fields to replace)."""
    fields = {name: _writable(value) for name, value in module.fields.items()}
    fields = {name: value for name, value in fields.items() if value is not None}
    fields.update((overrides or {}).get(module.lua_path, {}))
    if module.children or short_class(module.torch_class) in ("Sequential", "Concat", "ConcatTable"):
        fields["modules"] = [to_torch_object(child, overrides) for child in module.children]
    version = 2 if short_class(module.torch_class) in BATCH_NORMS else 1
    return TorchObject(module.torch_class, fields, version)


def _writable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value if value.ndim else None
    if isinstance(value, dict):
        inner = {key: _writable(item) for key, item in value.items() if key != "__class__"}
        inner = {key: item for key, item in inner.items() if item is not None}
        cls = value.get("__class__")
        return TorchObject(cls, inner, 2 if short_class(str(cls)) in BATCH_NORMS else 1) if cls else inner
    if isinstance(value, list):
        items = [_writable(item) for item in value]
        return None if any(item is None for item in items) else items
    return value


class ScratchFiles:
    """A private temporary folder for the files the adapter writes (removed with the runner)."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="texture-nets-opencv-")
        self._count = 0

    def write(self, obj: TorchObject, stem: str) -> Path:
        self._count += 1
        path = Path(self._folder.name) / f"{self._count:04d}_{stem}.t7"
        write_t7(path, obj)
        return path


def module_file(module: T7Module, overrides: dict[str, dict[str, Any]] | None = None) -> TorchObject:
    """``module`` alone, as the only child of an ``nn.Sequential`` root (OpenCV's importer expects a container
    at the root; a Sequential adds no layer of its own)."""
    return TorchObject("nn.Sequential", {"modules": [to_torch_object(module, overrides)], "train": False})


def module_indices(data: bytes) -> dict[str, int]:
    """Lua path -> the module's reference index in the file: what OpenCV's importer passes a custom layer as
    ``params["torch_index"]`` (torch7 File.lua numbers every table and object it writes, 1-based)."""
    from t7file.reader import CheckedAsciiReader, CheckedBinaryReader, is_ascii_t7

    readers = [CheckedAsciiReader(data)] if is_ascii_t7(data[:2]) else [CheckedBinaryReader(data, 8),
                                                                        CheckedBinaryReader(data, 4)]
    for reader in readers:
        try:
            root = reader.read_obj()
            break
        except Exception:  # a 4-byte-long (Windows) file fails with 8: try the next reading
            continue
    else:
        raise BackendError("cannot read the .t7 file's object indices")
    index_of = {id(obj): index for index, obj in reader.objects.items() if obj is not None}
    found: dict[str, int] = {}

    def walk(obj: Any, path: str) -> None:
        if id(obj) in index_of:
            found[path] = index_of[id(obj)]
        fields = getattr(obj, "_obj", None)
        if not isinstance(fields, dict):
            return
        children = fields.get(b"modules", fields.get("modules"))
        if isinstance(children, dict):  # an empty Lua table, or one torchfile did not turn into a list
            children = [children[key] for key in sorted(children, key=str)]
        for number, child in enumerate(children or [], start=1):
            walk(child, f"{path}.{number}" if path else str(number))

    walk(root, "")
    return found
