"""Bounds-checked reading of Torch7 serialisations (binary and ASCII).

torchfile 0.1.0 does the object-graph walk (tables, torch objects, reference
memoisation, Lua-list heuristics); this module subclasses its ``T7Reader`` to make
every primitive read checked and to read tensors and storages itself, because
torchfile builds ``as_strided`` views with no bounds checks and allocates
``np.fromfile(count=size)`` for whatever size a file claims (FACTS §4).

Checks made here, all before any allocation:
  * every primitive read must be satisfied by the bytes left in the file;
  * string, long-array and storage sizes must fit in the bytes left;
  * a tensor's sizes, strides and 1-based storage offset must address only
    elements inside its storage, and its element count is capped relative to
    the file size (stride-0 tensors could otherwise expand without limit);
  * nesting depth is capped, so a deeply nested file cannot exhaust the stack.

The binary format (torch7 File.lua / generic/Tensor.c) is little-endian with a
C ``long`` of 8 bytes on every platform Torch7 files come from, except Windows
builds, which wrote 4-byte longs; :func:`read_object` tries 8 and then 4.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torchfile

from t7file.errors import T7FormatError

# Type ids of torch7 File.lua.
TYPE_NIL, TYPE_NUMBER, TYPE_STRING, TYPE_TABLE, TYPE_TORCH, TYPE_BOOLEAN = 0, 1, 2, 3, 4, 5

MAX_NESTING = 200
MAX_TENSOR_DIMS = 16

# Storage/Tensor class names -> element dtype. Cuda types are stored on disk as
# their host equivalents (a cudnn-trained model saved without :float()).
_ELEMENT_TYPES: dict[str, np.dtype] = {
    prefix + name: np.dtype(dtype)
    for prefix in ("torch.", "torch.Cuda")
    for name, dtype in (
        ("Byte", np.uint8),
        ("Char", np.int8),
        ("Short", np.int16),
        ("Int", np.int32),
        ("Long", np.int64),
        ("Float", np.float32),
        ("Double", np.float64),
    )
}
_ELEMENT_TYPES["torch.Cuda"] = np.dtype(np.float32)  # torch.CudaTensor is float
_UNSUPPORTED_ELEMENT_TYPES = ("torch.Half", "torch.CudaHalf")


@dataclass(frozen=True)
class T7Tensor:
    """A tensor as read from the file: a private contiguous copy plus its Torch class."""

    torch_type: str  # e.g. "torch.FloatTensor"
    array: np.ndarray


@dataclass(frozen=True)
class T7Storage:
    """A storage as read from the file (1-D array)."""

    torch_type: str
    array: np.ndarray


def _element_type(class_name: str, kind: str) -> np.dtype | None:
    """dtype for 'torch.FloatTensor'-style names (kind is 'Tensor' or 'Storage'), else None."""
    if not class_name.endswith(kind):
        return None
    prefix = class_name[: -len(kind)]
    if prefix in _UNSUPPORTED_ELEMENT_TYPES:
        raise T7FormatError(f"{class_name} is not supported (half precision); convert the model with :float() in Torch7")
    return _ELEMENT_TYPES.get(prefix)


class CheckedBinaryReader(torchfile.T7Reader):
    """torchfile's reader with every read bounds-checked and tensors read safely."""

    def __init__(self, data: bytes, long_size: int = 8):
        super().__init__(io.BytesIO(data), use_list_heuristic=True, use_int_heuristic=True)
        self._size = len(data)
        self._long_format = {8: "<q", 4: "<i"}[long_size]
        self._long_size = long_size
        self._depth = 0
        # Cap on the elements a single tensor may materialise: generous for
        # legitimate broadcasts, small enough that a hostile file cannot ask
        # for gigabytes from a few bytes.
        self._max_tensor_elements = max(16 * self._size, 1 << 20)

    # -- primitives -------------------------------------------------------
    def position(self) -> int:
        return self.f.tell()

    def remaining(self) -> int:
        return self._size - self.f.tell()

    def _take(self, n: int, what: str) -> bytes:
        if n < 0:
            raise T7FormatError(f"negative {what} length {n} at byte {self.position()}")
        if n > self.remaining():
            raise T7FormatError(
                f"file truncated or corrupt: {what} needs {n} bytes at byte {self.position()}, "
                f"only {self.remaining()} left"
            )
        return self.f.read(n)

    def _read(self, fmt: str) -> tuple[Any, ...]:
        fmt = "<" + fmt.lstrip("<>=!@")
        return struct.unpack(fmt, self._take(struct.calcsize(fmt), "number"))

    def read_int(self) -> int:
        return self._read("i")[0]

    def read_long(self) -> int:
        return struct.unpack(self._long_format, self._take(self._long_size, "long"))[0]

    def read_long_array(self, n: int) -> list[int]:
        if n < 0 or n * self._long_size > self.remaining():
            raise T7FormatError(f"long array of {n} elements does not fit in the file at byte {self.position()}")
        return list(struct.unpack(f"<{n}{self._long_format[1]}", self._take(n * self._long_size, "long array")))

    def read_double(self) -> float:
        return self._read("d")[0]

    def read_string(self, disable_utf8: bool = False) -> bytes:
        return self._take(self.read_int(), "string")

    def read_elements(self, dtype: np.dtype, count: int) -> np.ndarray:
        if count < 0 or count * dtype.itemsize > self.remaining():
            raise T7FormatError(
                f"storage of {count} elements ({dtype}) does not fit in the file at byte {self.position()}"
            )
        raw = self._take(count * dtype.itemsize, "storage")
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True)

    # -- objects ----------------------------------------------------------
    def read_obj(self) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise T7FormatError(f"objects nested deeper than {MAX_NESTING} levels")
            start = self.position()
            intercepted = self._read_tensor_or_storage()
            if intercepted is not _NOT_MINE:
                return intercepted
            self.f.seek(start)
            return super().read_obj()
        finally:
            self._depth -= 1

    def _read_tensor_or_storage(self) -> Any:
        """Read a torch object if it is a Tensor/Storage; otherwise return _NOT_MINE."""
        if self.read_int() != TYPE_TORCH:
            return _NOT_MINE
        index = self.read_int()
        if index in self.objects:
            return self.objects[index]
        version = self.read_string()
        class_bytes = self.read_string() if version.startswith(b"V ") else version
        class_name = class_bytes.decode("latin-1")
        tensor_dtype = _element_type(class_name, "Tensor")
        storage_dtype = _element_type(class_name, "Storage")
        if tensor_dtype is not None:
            self.objects[index] = None  # a tensor cannot contain itself
            obj: Any = self._read_tensor(class_name, tensor_dtype)
        elif storage_dtype is not None:
            obj = T7Storage(class_name, self.read_elements(storage_dtype, self.read_long()))
        else:
            return _NOT_MINE
        self.objects[index] = obj
        return obj

    def _read_tensor(self, class_name: str, dtype: np.dtype) -> T7Tensor:
        at = self.position()
        ndim = self.read_int()
        if not 0 <= ndim <= MAX_TENSOR_DIMS:
            raise T7FormatError(f"{class_name} at byte {at} claims {ndim} dimensions")
        sizes = self.read_long_array(ndim)
        strides = self.read_long_array(ndim)
        offset = self.read_long() - 1  # Torch storage offsets are 1-based
        storage = self.read_obj()
        if ndim == 0 or 0 in sizes:
            if any(s < 0 for s in sizes):
                raise T7FormatError(f"{class_name} at byte {at} has negative size {sizes}")
            return T7Tensor(class_name, np.zeros([max(s, 0) for s in sizes] if ndim else [0], dtype=dtype))
        if not isinstance(storage, T7Storage):
            raise T7FormatError(f"{class_name} at byte {at} of size {sizes} has no storage")
        if storage.array.dtype != dtype:
            raise T7FormatError(f"{class_name} at byte {at} points at a {storage.torch_type}")
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides) or offset < 0:
            raise T7FormatError(
                f"{class_name} at byte {at} has invalid geometry: size {sizes}, stride {strides}, offset {offset + 1}"
            )
        numel = int(np.prod(sizes, dtype=object))
        if numel > self._max_tensor_elements:
            raise T7FormatError(f"{class_name} at byte {at} claims {numel} elements, far more than the file holds")
        last = offset + sum((size - 1) * stride for size, stride in zip(sizes, strides, strict=True))
        if last >= storage.array.size:
            raise T7FormatError(
                f"{class_name} at byte {at} (size {sizes}, stride {strides}, offset {offset + 1}) "
                f"reaches element {last + 1} of a storage of {storage.array.size}"
            )
        base = storage.array[offset:]
        view = np.lib.stride_tricks.as_strided(
            base, shape=sizes, strides=[s * dtype.itemsize for s in strides], writeable=False
        )
        return T7Tensor(class_name, np.ascontiguousarray(view).copy())


_NOT_MINE = object()


class CheckedAsciiReader(CheckedBinaryReader):
    """Reader for ``torch.save(..., 'ascii')`` files, which torchfile cannot read.

    The ASCII format (torch7 DiskFile in ascii mode) writes each number or
    number array as whitespace-separated decimal text followed by a newline,
    and each string as its length, a newline, the raw bytes and a newline.
    """

    def __init__(self, data: bytes):
        super().__init__(data, long_size=8)
        self._data = data

    def _token(self) -> bytes:
        data, pos = self._data, self.f.tell()
        while pos < self._size and data[pos] in b" \t\r\n":
            pos += 1
        end = pos
        while end < self._size and data[end] not in b" \t\r\n":
            end += 1
        if end == pos:
            raise T7FormatError(f"file truncated: expected a number at byte {pos}")
        self.f.seek(end)
        return data[pos:end]

    def _number(self) -> float:
        token = self._token()
        try:
            return float(token)
        except ValueError:
            raise T7FormatError(f"expected a number, found {token[:20]!r} at byte {self.f.tell() - len(token)}") from None

    def _integer(self, what: str) -> int:
        value = self._number()
        if not value.is_integer():
            raise T7FormatError(f"expected an integer {what}, found {value} at byte {self.f.tell()}")
        return int(value)

    def _read(self, fmt: str) -> tuple[Any, ...]:
        code = fmt.lstrip("<>=!@")
        if code in ("i", "l", "q"):
            return (self._integer("number"),)
        return (self._number(),)

    def read_int(self) -> int:
        return self._integer("int")

    def read_long(self) -> int:
        return self._integer("long")

    def read_long_array(self, n: int) -> list[int]:
        if n < 0 or n > self.remaining():
            raise T7FormatError(f"long array of {n} elements does not fit in the file at byte {self.position()}")
        return [self._integer("long") for _ in range(n)]

    def read_double(self) -> float:
        return self._number()

    def read_string(self, disable_utf8: bool = False) -> bytes:
        size = self.read_int()
        self._take(1, "string separator")  # the newline after the length
        value = self._take(size, "string")
        return value

    def read_elements(self, dtype: np.dtype, count: int) -> np.ndarray:
        # Each element takes at least two characters ("0 "), which bounds count.
        if count < 0 or 2 * count > self.remaining() + 1:
            raise T7FormatError(
                f"storage of {count} elements does not fit in the file at byte {self.position()}"
            )
        if count == 0:
            return np.zeros(0, dtype=dtype)
        start = self.f.tell()
        # Torch7 writes a whole array on one line; fall back to token-by-token otherwise.
        line_start = start
        while line_start < self._size and self._data[line_start] in b" \t\r\n":
            line_start += 1
        line_end = self._data.find(b"\n", line_start)
        line_end = self._size if line_end < 0 else line_end
        tokens = self._data[line_start:line_end].split()
        if len(tokens) == count:
            self.f.seek(line_end)
        else:
            tokens = [self._token() for _ in range(count)]
        try:
            values = np.array(tokens).astype(np.float64 if dtype.kind == "f" else np.int64)
        except ValueError:
            raise T7FormatError(f"storage at byte {start} holds a non-numeric element") from None
        return values.astype(dtype)


def is_ascii_t7(head: bytes) -> bool:
    """ASCII files start with a small decimal type id and a newline ("4\\n")."""
    return len(head) >= 2 and head[:1].isdigit() and head[1:2] in (b"\n", b"\r")


def read_object(source: str | Path | bytes | BinaryIO) -> Any:
    """Read the single object stored in a Torch7 file (path, bytes or binary file object).

    Returns torchfile's object graph (``TorchObject``, dicts with bytes keys,
    lists) with tensors as :class:`T7Tensor` and storages as :class:`T7Storage`.
    Raises :class:`T7FormatError` for anything malformed.
    """
    data = _read_bytes(source)
    if not data:
        raise T7FormatError("file is empty")
    if is_ascii_t7(data[:2]):
        return _read_with(CheckedAsciiReader(data))
    try:
        return _read_with(CheckedBinaryReader(data, long_size=8))
    except T7FormatError as first_error:
        try:
            return _read_with(CheckedBinaryReader(data, long_size=4))
        except T7FormatError:
            raise first_error from None


def _read_bytes(source: str | Path | bytes | BinaryIO) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            return path.read_bytes()
        except IsADirectoryError:
            raise T7FormatError(f"{path} is a directory, not a .t7 file") from None
        except FileNotFoundError:
            raise T7FormatError(f"{path}: no such file") from None
        except OSError as error:
            raise T7FormatError(f"{path}: cannot read ({error.strerror or error})") from None
    return source.read()


def _looks_like_text(data: bytes) -> str | None:
    head = data[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml")):
        return "an HTML/XML document (a web page saved instead of the model?)"
    if head.startswith(b"pk\x03\x04"):
        return "a ZIP archive (a PyTorch .pt/.pth file?), not a Torch7 file"
    if head.startswith(b"\x80") and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle, not a Torch7 file"
    return None


def _read_with(reader: CheckedBinaryReader) -> Any:
    data_kind = _looks_like_text(reader.f.getvalue())
    if data_kind:
        raise T7FormatError(f"not a Torch7 file: it looks like {data_kind}")
    try:
        obj = reader.read_obj()
    except T7FormatError:
        raise
    except RecursionError:
        raise T7FormatError("objects nested too deeply") from None
    except (struct.error, ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeDecodeError,
            MemoryError, torchfile.T7ReaderException, NotImplementedError) as error:
        raise T7FormatError(f"malformed Torch7 file near byte {reader.position()}: {error}") from None
    return obj
