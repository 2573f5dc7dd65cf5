"""Writing Torch7 binary serialisations (what ``torch.save(path, obj)`` produces).

Mirrors torch7 ``File.lua`` ``writeObject`` and ``generic/Tensor.c`` / ``generic/Storage.c``
``write``, little-endian with 8-byte C longs (Linux/macOS Torch7):

* every object starts with an int type id: 0 nil, 1 number, 2 string, 3 table,
  4 torch object, 5 boolean;
* a number is a double (Lua has no integers: ``5`` is written as ``5.0``); a boolean
  is an int 1/0 (``File:writeBool``); a string is an int length and its bytes;
* a table or torch object then carries an int reference index, 1-based and
  counted per file. The first time an object is met it gets the next index and
  its contents follow; every later occurrence writes the index alone (Torch keys
  this on ``torch.pointer``, so a shared storage or table is stored once);
* a table writes its number of entries, then key, value, key, value...;
* a torch object writes ``"V <version>"`` and its class name (both as
  length-prefixed bytes), then either its own ``write`` payload (tensors,
  storages) or, for ``nn`` modules, a fresh table of its fields (which takes
  the next reference index itself, as in File.lua);
* a Tensor writes int nDimension, long sizes, long strides, long storageOffset
  (1-based), then its Storage as an object (nil for a tensor without one, like
  ``torch.FloatTensor()``); a Storage writes long size and its raw elements.

The Python side of the format:

* ``None`` -> nil, ``bool`` -> boolean, ``int``/``float`` -> number, ``str``/``bytes``
  -> string, ``dict`` -> table, ``list``/``tuple`` -> Lua array (keys 1..n);
* :class:`TorchObject` (or torchfile's ``TorchObject``) -> a torch object with a
  field table (an ``nn`` module);
* ``numpy.ndarray`` -> a contiguous tensor with a storage of its own; an empty
  array -> a tensor with no dimensions and no storage;
* :class:`Storage` and :class:`TensorView` -> tensors that are views into one
  shared storage with offsets and strides (what ``getParameters`` and
  ``cudnn.convert`` leave behind); :func:`flatten` builds them;
* t7file's own :class:`~t7file.reader.T7Tensor` / :class:`~t7file.reader.T7Storage`.

The same Python object written twice is written once and then referenced,
exactly like Torch. ``dict`` entries whose value is ``None`` are left out: a Lua
table cannot hold nil.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torchfile

from t7file.reader import (
    TYPE_BOOLEAN,
    TYPE_NIL,
    TYPE_NUMBER,
    TYPE_STRING,
    TYPE_TABLE,
    TYPE_TORCH,
    T7Storage,
    T7Tensor,
)

# numpy dtype -> Torch element-type prefix ("torch.Float" + "Tensor"/"Storage").
_TORCH_PREFIX: dict[np.dtype, str] = {
    np.dtype(np.uint8): "torch.Byte",
    np.dtype(np.int8): "torch.Char",
    np.dtype(np.int16): "torch.Short",
    np.dtype(np.int32): "torch.Int",
    np.dtype(np.int64): "torch.Long",
    np.dtype(np.float32): "torch.Float",
    np.dtype(np.float64): "torch.Double",
}

# Lua numbers are doubles: integers beyond 2**53 would not survive.
_MAX_EXACT_INT = 2**53


def _torch_prefix(dtype: np.dtype) -> str:
    prefix = _TORCH_PREFIX.get(np.dtype(dtype).newbyteorder("="))
    if prefix is None:
        raise TypeError(f"no Torch7 tensor type for numpy dtype {dtype}")
    return prefix


@dataclass(eq=False)
class TorchObject:
    """A Torch class instance written as its field table: ``nn.*`` modules and the like.

    ``version`` is what Torch writes as ``"V <version>"`` (``torch.version``: 1 for
    most classes, 2 for nn.BatchNormalization and its subclasses).
    """

    class_name: str
    fields: dict[Any, Any] = field(default_factory=dict)
    version: int = 1


@dataclass(eq=False)
class Storage:
    """A Torch Storage: a 1-D array that several tensors may view (identity = this object)."""

    data: np.ndarray
    class_name: str | None = None  # e.g. "torch.CudaStorage"; default from the dtype

    def __post_init__(self) -> None:
        if self.data.ndim != 1:
            raise ValueError(f"a storage is 1-D, got shape {self.data.shape}")
        _torch_prefix(self.data.dtype)

    @property
    def torch_type(self) -> str:
        return self.class_name or _torch_prefix(self.data.dtype) + "Storage"


@dataclass(eq=False)
class TensorView:
    """A Torch Tensor as it is on disk: a view (shape, strides in elements, 0-based offset) into a storage.

    ``storage=None`` with an empty shape is Torch's tensor without storage
    (``torch.FloatTensor()``); then ``dtype`` gives its type.
    """

    storage: Storage | None
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0
    dtype: np.dtype | None = None
    class_name: str | None = None  # e.g. "torch.CudaTensor"; default from the dtype

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.strides = tuple(int(s) for s in self.strides)
        if len(self.shape) != len(self.strides):
            raise ValueError(f"shape {self.shape} and strides {self.strides} differ in length")
        if self.storage is None:
            if self.shape:
                raise ValueError("a tensor with dimensions needs a storage")
            if self.dtype is None:
                raise ValueError("a tensor without storage needs a dtype")
            return
        if self.dtype is None:
            self.dtype = self.storage.data.dtype
        elif np.dtype(self.dtype) != self.storage.data.dtype:
            raise ValueError(f"tensor dtype {self.dtype} differs from its storage's {self.storage.data.dtype}")
        if any(s < 0 for s in self.shape) or any(s < 0 for s in self.strides) or self.offset < 0:
            raise ValueError(f"invalid geometry: shape {self.shape}, strides {self.strides}, offset {self.offset}")
        if self.shape and 0 not in self.shape:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides, strict=True))
            if last >= self.storage.data.size:
                raise ValueError(
                    f"view (shape {self.shape}, strides {self.strides}, offset {self.offset}) reaches element "
                    f"{last} of a storage of {self.storage.data.size}"
                )

    @classmethod
    def contiguous(cls, storage: Storage, shape: Iterable[int], offset: int = 0) -> TensorView:
        """A C-contiguous view of ``shape`` starting at element ``offset`` (Torch's default strides)."""
        shape = tuple(int(s) for s in shape)
        return cls(storage, shape, _contiguous_strides(shape), offset)

    @property
    def torch_type(self) -> str:
        return self.class_name or _torch_prefix(np.dtype(self.dtype)) + "Tensor"

    def to_numpy(self) -> np.ndarray:
        """A private copy of the elements this view addresses."""
        if self.storage is None or not self.shape:
            return np.zeros(0, dtype=self.dtype)
        data = self.storage.data
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.shape, strides=[s * data.itemsize for s in self.strides], writeable=False
        )
        return view.copy()


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def flatten(arrays: Iterable[np.ndarray], dtype: np.dtype | str | None = None) -> tuple[Storage, list[TensorView]]:
    """Copy ``arrays`` into one storage, back to back, and return it with a view per array.

    This is the layout ``module:getParameters()`` leaves (and that survives
    ``cudnn.convert`` + ``torch.save``): every weight and bias a contiguous view
    at an increasing offset of one flat storage.
    """
    arrays = [np.asarray(a) for a in arrays]
    if dtype is None:
        dtype = np.result_type(*arrays) if arrays else np.float32
    total = sum(int(a.size) for a in arrays)
    data = np.empty(total, dtype=dtype)
    storage = Storage(data)
    views, offset = [], 0
    for array in arrays:
        data[offset:offset + array.size] = array.reshape(-1)
        views.append(TensorView.contiguous(storage, array.shape, offset))
        offset += array.size
    return storage, views


class _Writer:
    """One ``torch.save``: a byte buffer and the per-file reference indices."""

    def __init__(self) -> None:
        self.out = bytearray()
        # id(python object) -> (reference index, the object: kept alive so ids stay unique)
        self.refs: dict[int, tuple[int, Any]] = {}
        self.next_index = 0

    # -- primitives (little-endian, C long = 8 bytes) -----------------------
    def int(self, value: int) -> None:
        self.out += struct.pack("<i", value)

    def long(self, value: int) -> None:
        self.out += struct.pack("<q", value)

    def longs(self, values: Iterable[int]) -> None:
        values = list(values)
        self.out += struct.pack(f"<{len(values)}q", *values)

    def raw_string(self, value: bytes) -> None:
        self.int(len(value))
        self.out += value

    # -- File:writeObject -------------------------------------------------
    def object(self, obj: Any) -> None:
        if obj is None:
            self.int(TYPE_NIL)
        elif isinstance(obj, bool | np.bool_):
            self.int(TYPE_BOOLEAN)
            self.int(1 if obj else 0)
        elif isinstance(obj, int | float | np.integer | np.floating):
            self.int(TYPE_NUMBER)
            self.out += struct.pack("<d", _lua_number(obj))
        elif isinstance(obj, str | bytes | bytearray):
            self.int(TYPE_STRING)
            self.raw_string(obj.encode("utf-8") if isinstance(obj, str) else bytes(obj))
        elif isinstance(obj, Mapping | list | tuple):
            if self._reference(TYPE_TABLE, obj):
                return
            self._table(obj)
        else:
            self._torch(obj)

    def _reference(self, type_id: int, obj: Any) -> bool:
        """Write type id and reference index; True if ``obj`` was written before (index only)."""
        self.int(type_id)
        known = self.refs.get(id(obj))
        if known is not None:
            self.int(known[0])
            return True
        self.next_index += 1
        self.refs[id(obj)] = (self.next_index, obj)
        self.int(self.next_index)
        return False

    def _table(self, table: Mapping | list | tuple) -> None:
        if isinstance(table, Mapping):
            entries = [(key, value) for key, value in table.items() if value is not None]
        else:
            if any(value is None for value in table):
                raise ValueError("a Lua array cannot hold nil (None) elements")
            entries = list(enumerate(table, start=1))
        self.int(len(entries))
        for key, value in entries:
            if key is None:
                raise ValueError("a Lua table key cannot be nil (None)")
            self.object(key)
            self.object(value)

    def _torch_header(self, obj: Any, class_name: str, version: int) -> bool:
        if self._reference(TYPE_TORCH, obj):
            return True
        self.raw_string(f"V {version}".encode())
        self.raw_string(class_name.encode("latin-1"))
        return False

    def _torch(self, obj: Any) -> None:
        if isinstance(obj, TorchObject):
            if not self._torch_header(obj, obj.class_name, obj.version):
                self.object(dict(obj.fields))  # File.lua writes a fresh table of the fields
        elif isinstance(obj, torchfile.TorchObject):
            name = obj._typename.decode("latin-1") if isinstance(obj._typename, bytes) else str(obj._typename)
            if not self._torch_header(obj, name, obj._version_number or 1):
                fields = obj._obj
                self.object(dict(fields) if isinstance(fields, Mapping) else {} if fields is None else fields)
        elif isinstance(obj, TensorView):
            self._tensor(obj, obj)
        elif isinstance(obj, Storage):
            self._storage(obj, obj)
        elif isinstance(obj, np.ndarray):
            self._tensor(obj, _own_storage_view(obj))
        elif isinstance(obj, T7Tensor):
            self._tensor(obj, _own_storage_view(obj.array, obj.torch_type))
        elif isinstance(obj, T7Storage):
            self._storage(obj, Storage(obj.array, obj.torch_type))
        else:
            raise TypeError(f"cannot write a {type(obj).__name__} to a Torch7 file")

    def _tensor(self, key: Any, view: TensorView) -> None:
        """generic/Tensor.c write: nDimension, sizes, strides, 1-based offset, storage object."""
        if self._torch_header(key, view.torch_type, 1):
            return
        self.int(len(view.shape))
        self.longs(view.shape)
        self.longs(view.strides)
        self.long(view.offset + 1)
        if view.storage is None:
            self.int(TYPE_NIL)
        else:
            self._storage(view.storage, view.storage)

    def _storage(self, key: Any, storage: Storage) -> None:
        """generic/Storage.c write: long size, then the raw little-endian elements."""
        if self._torch_header(key, storage.torch_type, 1):
            return
        data = storage.data
        self.long(int(data.size))
        self.out += np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()


def _lua_number(value: Any) -> float:
    if isinstance(value, int | np.integer) and abs(int(value)) > _MAX_EXACT_INT:
        raise ValueError(f"integer {value} cannot be stored exactly as a Lua number (double)")
    return float(value)


def _own_storage_view(array: np.ndarray, class_name: str | None = None) -> TensorView:
    """A fresh contiguous tensor over a storage of its own; empty arrays become storage-less tensors."""
    if array.ndim == 0:
        raise TypeError("a 0-dimensional array has no Torch7 tensor equivalent; write a number or a 1-element array")
    if array.size == 0:
        return TensorView(None, (), (), 0, dtype=array.dtype, class_name=class_name)
    storage_class = class_name[: -len("Tensor")] + "Storage" if class_name else None
    storage = Storage(np.ascontiguousarray(array).reshape(-1), storage_class)
    view = TensorView.contiguous(storage, array.shape)
    view.class_name = class_name
    return view


def dumps_t7(obj: Any) -> bytes:
    """Serialise ``obj`` exactly as Torch7's binary ``torch.save`` would."""
    writer = _Writer()
    writer.object(obj)
    return bytes(writer.out)


def write_t7(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``.

    Raises ``OSError`` when the folder is missing or not writable; an existing
    file is never left half-written.
    """
    data = dumps_t7(obj)
    target = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, 0o644 & ~_umask())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def from_torchfile(obj: Any) -> Any:
    """Turn a ``torchfile.load`` object graph into writable objects that keep its storage layout.

    torchfile returns tensors as strided views into the storage arrays it read
    (one array per storage, shared by every tensor that views it), storages as
    arrays that own their data, and storage-less tensors as empty arrays. This
    recovers the storages, offsets and strides from those views, so writing the
    result reproduces the file's tensors and storage sharing. Tables keep their
    key order (torchfile keeps the file's order), and shared objects stay shared.
    """
    memo: dict[int, Any] = {}
    storages: dict[int, Storage] = {}
    keep: list[Any] = []  # keep converted inputs alive while ids are used as keys

    def storage_of(root: np.ndarray) -> Storage:
        if id(root) not in storages:
            storages[id(root)] = Storage(root)
            keep.append(root)
        return storages[id(root)]

    def convert(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            if id(value) in memo:
                return memo[id(value)]
            keep.append(value)
            root = _root_array(value)
            if root is value:
                result: Any = storage_of(value) if value.size else TensorView(None, (), (), 0, dtype=value.dtype)
            else:
                result = _view_into(value, storage_of(root))
            memo[id(value)] = result
            return result
        if isinstance(value, torchfile.TorchObject):
            if id(value) in memo:
                return memo[id(value)]
            name = value._typename.decode("latin-1") if isinstance(value._typename, bytes) else str(value._typename)
            result = TorchObject(name, {}, value._version_number or 1)
            memo[id(value)] = result
            keep.append(value)
            result.fields = convert(value._obj) if isinstance(value._obj, dict) else {}
            return result
        if isinstance(value, dict):
            if id(value) in memo:
                return memo[id(value)]
            table: dict[Any, Any] = {}
            memo[id(value)] = table
            keep.append(value)
            for key, item in value.items():
                table[convert(key)] = convert(item)
            return table
        if isinstance(value, list):
            if id(value) in memo:
                return memo[id(value)]
            items: list[Any] = []
            memo[id(value)] = items
            keep.append(value)
            items.extend(convert(item) for item in value)
            return items
        return value

    return convert(obj)


def _root_array(array: np.ndarray) -> np.ndarray:
    """The array that owns the memory ``array`` views (through numpy and as_strided bases)."""
    current: Any = array
    while isinstance(current, np.ndarray) and current.base is not None:
        base = current.base
        # as_strided wraps its source in a DummyArray whose .base is the real array.
        current = base if isinstance(base, np.ndarray) else getattr(base, "base", None)
    if not isinstance(current, np.ndarray):
        raise ValueError("cannot find the storage an array views")
    return current


def _view_into(array: np.ndarray, storage: Storage) -> TensorView:
    data = storage.data
    start = array.__array_interface__["data"][0] - data.__array_interface__["data"][0]
    if start % data.itemsize or any(s % data.itemsize for s in array.strides) or array.dtype != data.dtype:
        raise ValueError("array is not an element-aligned view of its storage")
    strides = tuple(s // data.itemsize for s in array.strides)
    return TensorView(storage, array.shape, strides, start // data.itemsize)
