"""A tiny Torch7 serialiser for crafting well-formed and hostile test files.

Independent of ``t7file/writer.py`` on purpose: it must be able to write what
no sane writer would (negative sizes, views past their storage, cycles, bad
type ids). It mirrors torch7 File.lua ``writeObject``: int type id, then for
numbers a double, strings an int length and the bytes, tables and torch objects
an int reference index (1-based, memoised per Python object), a torch object
"V <version>" and its class name then its fields, a Tensor int nDimension, long
sizes, long strides, long 1-based storageOffset then its Storage object (long
size + raw data). ``ascii=True`` writes the ``torch.save(..., 'ascii')`` form.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN, FUNCTION = 0, 1, 2, 3, 4, 5, 6


@dataclass(eq=False)
class Obj:
    """A torch object (nn module or any class): class name and a field table."""

    class_name: str | bytes
    fields: Any = field(default_factory=dict)
    version: bytes | None = b"V 1"


@dataclass(eq=False)
class Storage:
    class_name: str
    data: np.ndarray
    size: int | None = None  # declared element count (defaults to len(data))


@dataclass(eq=False)
class Tensor:
    class_name: str
    sizes: list[int]
    strides: list[int] | None = None  # default: contiguous
    offset: int = 1  # 1-based, as on disk
    storage: Any = None  # Storage, None (nil) or anything else to write in its place
    ndim: int | None = None  # declared nDimension (defaults to len(sizes))


@dataclass(eq=False)
class Function:
    bytecode: bytes
    upvalues: Any = None
    declared_size: int | None = None


@dataclass(eq=False)
class Raw:
    """Bytes written as they are (to inject garbage)."""

    data: bytes


@dataclass(eq=False)
class Ref:
    """A reference to an already-written (or never-written) object index."""

    type_id: int
    index: int


def tensor(array: np.ndarray, class_name: str | None = None) -> Tensor:
    """A contiguous Tensor with its own Storage holding ``array``."""
    array = np.ascontiguousarray(array)
    name = class_name or {np.float32: "torch.FloatTensor", np.float64: "torch.DoubleTensor",
                          np.int64: "torch.LongTensor"}[array.dtype.type]
    return Tensor(name, list(array.shape), storage=Storage(name.replace("Tensor", "Storage"), array.ravel()))


class Writer:
    def __init__(self, *, long_size: int = 8, ascii: bool = False):
        self.long_size = long_size
        self.ascii = ascii
        self.out = bytearray()
        self.memo: dict[int, int] = {}
        self.next_index = 1

    # -- primitives
    def int(self, value: int) -> None:
        if self.ascii:
            self.out += b"%d\n" % value
        else:
            self.out += struct.pack("<i", value)

    def longs(self, values: list[int]) -> None:
        if self.ascii:
            self.out += b" ".join(b"%d" % v for v in values) + b"\n"
        else:
            self.out += struct.pack(f"<{len(values)}{'q' if self.long_size == 8 else 'i'}", *values)

    def double(self, value: float) -> None:
        if self.ascii:
            self.out += repr(float(value)).encode() + b"\n"
        else:
            self.out += struct.pack("<d", value)

    def string(self, value: bytes) -> None:
        self.int(len(value))  # in ascii mode the length ends with its newline, then the raw bytes
        self.out += value
        if self.ascii:
            self.out += b"\n"

    def elements(self, data: np.ndarray) -> None:
        if self.ascii:
            fmt = "%.9g" if data.dtype == np.float32 else "%.17g" if data.dtype.kind == "f" else "%d"
            self.out += " ".join(fmt % v for v in data.tolist()).encode() + b"\n"
        else:
            self.out += data.astype(data.dtype.newbyteorder("<")).tobytes()

    # -- objects
    def _index(self, obj: Any) -> tuple[int, bool]:
        key = id(obj)
        if key in self.memo:
            return self.memo[key], True
        self.memo[key] = self.next_index
        self.next_index += 1
        return self.memo[key], False

    def write(self, obj: Any) -> Writer:
        if isinstance(obj, Raw):
            self.out += obj.data
        elif obj is None:
            self.int(NIL)
        elif isinstance(obj, bool):
            self.int(BOOLEAN)
            self.int(1 if obj else 0)
        elif isinstance(obj, int | float):
            self.int(NUMBER)
            self.double(obj)
        elif isinstance(obj, str | bytes):
            self.int(STRING)
            self.string(obj.encode() if isinstance(obj, str) else obj)
        elif isinstance(obj, Ref):
            self.int(obj.type_id)
            self.int(obj.index)
        elif isinstance(obj, dict | list):
            self.int(TABLE)
            index, seen = self._index(obj)
            self.int(index)
            if not seen:
                items = list(obj.items()) if isinstance(obj, dict) else list(enumerate(obj, start=1))
                self.int(len(items))
                for key, value in items:
                    self.write(key)
                    self.write(value)
        elif isinstance(obj, Function):
            self.int(FUNCTION)
            index, seen = self._index(obj)
            self.int(index)
            if not seen:
                self.int(len(obj.bytecode) if obj.declared_size is None else obj.declared_size)
                self.out += obj.bytecode
                if self.ascii:
                    self.out += b"\n"
                self.write(obj.upvalues)
        elif isinstance(obj, Obj | Tensor | Storage):
            self.int(TORCH)
            index, seen = self._index(obj)
            self.int(index)
            if seen:
                return self
            class_name = obj.class_name.encode() if isinstance(obj.class_name, str) else obj.class_name
            version = getattr(obj, "version", b"V 1")
            if version is not None:
                self.string(version)
            self.string(class_name)
            if isinstance(obj, Obj):
                self.write(obj.fields)
            elif isinstance(obj, Storage):
                self.longs([len(obj.data) if obj.size is None else obj.size])
                self.elements(obj.data)
            else:
                sizes = list(obj.sizes)
                strides = obj.strides
                if strides is None:
                    strides = [int(np.prod(sizes[i + 1:], dtype=np.int64)) for i in range(len(sizes))]
                self.int(len(sizes) if obj.ndim is None else obj.ndim)
                self.longs(sizes)
                self.longs(list(strides))
                self.longs([obj.offset])
                self.write(obj.storage)
        else:
            raise TypeError(f"cannot write {type(obj).__name__}")
        return self

    def bytes(self) -> bytes:
        return bytes(self.out)


def dumps(obj: Any, *, long_size: int = 8, ascii: bool = False) -> bytes:
    return Writer(long_size=long_size, ascii=ascii).write(obj).bytes()


def module(class_name: str, **fields: Any) -> Obj:
    """An nn module with the bookkeeping fields every nn.Module has."""
    return Obj(class_name, {"train": False, **fields})


def tiny_model(*extra: Obj) -> Obj:
    """A well-formed two-layer Sequential (conv + ReLU) plus ``extra`` modules."""
    rng = np.random.default_rng(0)
    conv = module("nn.SpatialConvolution", nInputPlane=3, nOutputPlane=2, kW=3, kH=3, dW=1, dH=1, padW=1, padH=1,
                  weight=tensor(rng.standard_normal((2, 3, 3, 3)).astype(np.float32)),
                  bias=tensor(rng.standard_normal(2).astype(np.float32)))
    return module("nn.Sequential", modules=[conv, module("nn.ReLU", inplace=True), *extra])
