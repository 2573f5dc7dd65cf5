"""Bounds-checked reading of Torch7 serialisations (binary and ASCII).

The object graph is read here with the semantics of torch7 ``File.lua``
(``readObject``) and the output types of torchfile 0.1.0 (``TorchObject`` with
bytes ``_typename``, ``hashable_uniq_dict`` for tables, 0-based lists for Lua
arrays, ``LuaFunction`` for functions), but nothing from torchfile's own
reading code is used: it reads ``f.read(-1)`` for negative lengths, allocates
``np.fromfile(count=size)`` for whatever size a file claims, builds
``as_strided`` views with no bounds checks, compares numpy arrays with ``==``
in its list heuristic and recurses without limit (docs/torch7-semantics.md (torchfile)).

Checks made here, all before any allocation:
  * every primitive read must be satisfied by the bytes left in the file;
  * string, long-array, table and storage sizes must fit in the bytes left;
  * a tensor's sizes, strides and 1-based storage offset must address only
    elements inside its storage; the elements materialised by all tensors
    together are capped relative to the file size (stride-0 views could
    otherwise expand a few bytes into gigabytes);
  * class names must be short printable ASCII; unknown Tensor/Storage types
    (Half, ...) are refused by name;
  * nesting depth is capped, so a deeply nested file cannot exhaust the stack;
  * table keys must be hashable (a Lua table used as a key is refused).

Every problem raises :class:`T7FormatError` with a one-line message naming the
byte position. The binary format (torch7 File.lua / generic/Tensor.c) is
little-endian with a C ``long`` of 8 bytes on every platform Torch7 files come
from, except Windows builds, which wrote 4-byte longs; :func:`read_object`
tries 8 and then 4.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torchfile

from t7file.errors import T7FormatError

# Type ids of torch7 File.lua.
TYPE_NIL, TYPE_NUMBER, TYPE_STRING, TYPE_TABLE, TYPE_TORCH, TYPE_BOOLEAN = 0, 1, 2, 3, 4, 5
TYPE_FUNCTION, LEGACY_TYPE_RECUR_FUNCTION, TYPE_RECUR_FUNCTION = 6, 7, 8
_REFERENCE_TYPES = (TYPE_TABLE, TYPE_TORCH, TYPE_FUNCTION, LEGACY_TYPE_RECUR_FUNCTION, TYPE_RECUR_FUNCTION)

MAX_NESTING = 200
MAX_TENSOR_DIMS = 16
MAX_CLASS_NAME = 200
# Largest single dimension accepted even for empty tensors (numpy cannot hold more).
MAX_DIM_SIZE = 1 << 40
# Bytes that all tensors of one file may materialise together: a multiple of
# the file size (legitimate files hold each storage once and tensors are views
# into it; overlapping views are rare) plus a fixed allowance for small files.
MATERIALISE_FACTOR = 4
MATERIALISE_ALLOWANCE = 64 << 20

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
_HALF_TYPES = ("torch.Half", "torch.CudaHalf")
_INT = struct.Struct("<i")


@dataclass(frozen=True)
class T7Tensor:
    """A tensor as read from the file: a private contiguous copy plus its Torch class.

    ``storage`` is the flat storage the tensor is a view of (read-only, shared by every tensor of
    the file that views it; None for an empty tensor) and ``offset`` the tensor's first element in
    it, 0-based (the file stores Torch's 1-based ``storageOffset``). Files written after
    ``getParameters()`` keep every parameter in one storage; some computations read past a
    tensor's end into it (texture_nets v1's batch norms, docs/real-models.md).
    """

    torch_type: str  # e.g. "torch.FloatTensor"
    array: np.ndarray
    storage: np.ndarray | None = field(default=None, repr=False, compare=False)
    offset: int = 0


@dataclass(frozen=True)
class T7Storage:
    """A storage as read from the file (1-D array)."""

    torch_type: str
    array: np.ndarray


def _element_type(class_name: str, kind: str) -> np.dtype | None:
    """dtype for 'torch.FloatTensor'-style names (kind is 'Tensor' or 'Storage'), else None.

    Any other ``torch.*Tensor`` / ``torch.*Storage`` is refused by name: reading
    it as a plain object would misparse its binary body.
    """
    if not class_name.endswith(kind):
        return None
    prefix = class_name[: -len(kind)]
    if prefix in _HALF_TYPES:
        raise T7FormatError(f"{class_name} is not supported (half precision); "
                            "convert the model with :float() in Torch7")
    dtype = _ELEMENT_TYPES.get(prefix)
    if dtype is None and prefix.startswith("torch."):
        raise T7FormatError(f"{class_name} is not a tensor type this reader knows")
    return dtype


def _printable_class_name(raw: bytes, at: int) -> str:
    """Torch class names are short identifiers with dots ('nn.SpatialConvolution'); refuse anything else."""
    if not raw or len(raw) > MAX_CLASS_NAME or not raw.isascii() or b" " in raw \
            or not raw.decode("ascii").isprintable():
        shown = raw[:40].decode("latin-1").encode("unicode_escape").decode("ascii")
        raise T7FormatError(f"invalid class name '{shown}'{'...' if len(raw) > 40 else ''} ({len(raw)} bytes) "
                            f"at byte {at}")
    return raw.decode("ascii")


class CheckedBinaryReader(torchfile.T7Reader):
    """A torch7 ``File.readObject`` for binary files with every read bounds-checked."""

    # Fewest bytes a table entry (key + value) can take: two type ids.
    _MIN_ENTRY_BYTES = 8

    def __init__(self, data: bytes, long_size: int = 8):
        super().__init__(io.BytesIO(data), use_list_heuristic=True, use_int_heuristic=True)
        self._size = len(data)
        self._long_format = {8: "<q", 4: "<i"}[long_size]
        self._long_size = long_size
        self._depth = 0
        self._materialised = 0
        self._max_materialised = MATERIALISE_FACTOR * self._size + MATERIALISE_ALLOWANCE

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
        raw = self.f.read(4)
        if len(raw) != 4:
            self.f.seek(-len(raw), io.SEEK_CUR)
            self._take(4, "int")  # raises with the position
        return _INT.unpack(raw)[0]

    def read_long(self) -> int:
        return struct.unpack(self._long_format, self._take(self._long_size, "long"))[0]

    def read_long_array(self, n: int) -> list[int]:
        if n < 0 or n * self._long_size > self.remaining():
            raise T7FormatError(f"file truncated or corrupt: long array of {n} elements does not fit in the "
                                f"{self.remaining()} bytes left at byte {self.position()}")
        return list(struct.unpack(f"<{n}{self._long_format[1]}", self._take(n * self._long_size, "long array")))

    def read_double(self) -> float:
        return self._read("d")[0]

    def read_string(self, disable_utf8: bool = False) -> bytes:
        return self._take(self.read_int(), "string")

    def read_raw_bytes(self, count: int, what: str) -> bytes:
        """``writeChar`` of a CharStorage: raw bytes (Lua bytecode of a function)."""
        return self._take(count, what)

    def read_elements(self, dtype: np.dtype, count: int) -> np.ndarray:
        if count < 0 or count * dtype.itemsize > self.remaining():
            raise T7FormatError(
                f"file truncated or corrupt: storage of {count} elements ({dtype}) does not fit in the "
                f"{self.remaining()} bytes left at byte {self.position()}"
            )
        raw = self._take(count * dtype.itemsize, "storage")
        # frombuffer is a read-only view of the bytes just read; one copy makes it private and writable.
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True)

    # -- objects (torch7 File.lua readObject) -------------------------------
    def read_obj(self) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise T7FormatError(f"objects nested deeper than {MAX_NESTING} levels at byte {self.position()}")
            at = self.position()
            type_id = self.read_int()
            if type_id == TYPE_NIL:
                return None
            if type_id == TYPE_NUMBER:
                value = self.read_double()
                # torchfile's int heuristic: Lua has one number type, integral values become int.
                return int(value) if value.is_integer() else value
            if type_id == TYPE_BOOLEAN:
                return self.read_int() == 1
            if type_id == TYPE_STRING:
                return self.read_string()
            if type_id not in _REFERENCE_TYPES:
                raise T7FormatError(f"unknown object type id {type_id} at byte {at}")
            index = self.read_int()
            if index in self.objects:  # an object already read (shared or cyclic reference)
                return self.objects[index]
            if type_id == TYPE_TORCH:
                return self._read_torch_object(index)
            if type_id == TYPE_TABLE:
                return self._read_table(index)
            return self._read_function(index)
        finally:
            self._depth -= 1

    def _read_torch_object(self, index: int) -> Any:
        at = self.position()
        version = self.read_string()
        version_number = 0
        if version.startswith(b"V "):
            try:
                version_number = int(version[2:].decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise T7FormatError(f"invalid class version {version[:20]!r} at byte {at}") from None
            class_at = self.position()
            class_name = _printable_class_name(self.read_string(), class_at)
        else:  # written before torch7 had class versions: the string is the class name
            class_name = _printable_class_name(version, at)
        tensor_dtype = _element_type(class_name, "Tensor")
        storage_dtype = _element_type(class_name, "Storage")
        if tensor_dtype is not None:
            self.objects[index] = None  # a tensor cannot contain itself
            obj: Any = self._read_tensor(class_name, tensor_dtype)
        elif storage_dtype is not None:
            self.objects[index] = None
            obj = T7Storage(class_name, self.read_elements(storage_dtype, self.read_long()))
        elif class_name in ("tds.Vec", "tds.Hash"):
            obj = self._read_tds(index, class_name)
        else:
            # Registered before its fields are read, so fields may refer back to it (Lua allows cycles).
            obj = torchfile.TorchObject(class_name.encode("ascii"), version_number=version_number)
            self.objects[index] = obj
            obj._obj = self.read_obj()
            return obj
        self.objects[index] = obj
        return obj

    def _count(self, what: str, bytes_per_item: int) -> int:
        at = self.position()
        count = self.read_int()
        if count < 0 or count * bytes_per_item > self.remaining():
            raise T7FormatError(f"file truncated or corrupt: {what} at byte {at} claims {count} entries, "
                                f"more than the {self.remaining()} bytes left can hold")
        return count

    def _read_table(self, index: int) -> Any:
        at = self.position()
        size = self._count("table", self._MIN_ENTRY_BYTES)
        table = torchfile.hashable_uniq_dict()
        self.objects[index] = table  # registered first: a table may contain itself
        for _ in range(size):
            key = self.read_obj()
            value = self.read_obj()
            try:
                table[key] = value
            except TypeError:
                raise T7FormatError(f"table at byte {at} uses a {type(key).__name__} as a key, "
                                    "which this reader does not support") from None
        # torchfile's list heuristic: keys exactly 1..n become a 0-based list.
        n = len(table)
        if n and all(type(k) is int for k in table) and min(table) == 1 and max(table) == n:
            result: list[Any] = []
            # A table that contains itself now contains the list (torchfile does the same).
            result.extend(result if table[i] is table else table[i] for i in range(1, n + 1))
            self.objects[index] = result
            return result
        return table

    def _read_function(self, index: int) -> Any:
        """A Lua function: its bytecode and upvalues are read (never run) as torchfile's LuaFunction."""
        self.objects[index] = None
        size = self.read_int()
        dumped = self.read_raw_bytes(size, "function bytecode")
        upvalues = self.read_obj()
        function = torchfile.LuaFunction(size, dumped, upvalues)
        self.objects[index] = function
        return function

    def _read_tds(self, index: int, class_name: str) -> Any:
        """tds.Vec / tds.Hash, as torchfile reads them: a count, one ignored object, then the items."""
        per_item = 4 if class_name == "tds.Vec" else 8
        size = self._count(class_name, per_item)
        self.read_obj()
        if class_name == "tds.Vec":
            vec = []
            self.objects[index] = vec
            vec.extend(self.read_obj() for _ in range(size))
            return vec
        table = torchfile.hashable_uniq_dict()
        self.objects[index] = table
        for _ in range(size):
            key = self.read_obj()
            try:
                table[key] = self.read_obj()
            except TypeError:
                raise T7FormatError(f"{class_name} uses a {type(key).__name__} as a key") from None
        return table

    def _read_tensor(self, class_name: str, dtype: np.dtype) -> T7Tensor:
        """generic/Tensor.c read: nDimension, sizes, strides, 1-based storageOffset, then the storage object."""
        at = self.position()
        ndim = self.read_int()
        if not 0 <= ndim <= MAX_TENSOR_DIMS:
            raise T7FormatError(f"{class_name} at byte {at} claims {ndim} dimensions")
        sizes = self.read_long_array(ndim)
        strides = self.read_long_array(ndim)
        offset = self.read_long() - 1  # Torch storage offsets are 1-based
        storage = self.read_obj()
        if any(not 0 <= s <= MAX_DIM_SIZE for s in sizes):
            raise T7FormatError(f"{class_name} at byte {at} has invalid size {sizes}")
        if ndim == 0 or 0 in sizes:
            return T7Tensor(class_name, np.zeros(sizes if ndim else [0], dtype=dtype))
        if not isinstance(storage, T7Storage):
            raise T7FormatError(f"{class_name} at byte {at} of size {sizes} has no storage")
        if storage.array.dtype != dtype:
            raise T7FormatError(f"{class_name} at byte {at} points at a {storage.torch_type}")
        # A size-1 dimension never moves along its stride: ignore it (it can be anything in Torch).
        strides = [0 if size == 1 else stride for size, stride in zip(sizes, strides, strict=True)]
        if any(s < 0 for s in strides) or offset < 0:
            raise T7FormatError(
                f"{class_name} at byte {at} has invalid geometry: size {sizes}, stride {strides}, offset {offset + 1}"
            )
        last = offset + sum((size - 1) * stride for size, stride in zip(sizes, strides, strict=True))
        if last >= storage.array.size:
            raise T7FormatError(
                f"{class_name} at byte {at} (size {sizes}, stride {strides}, offset {offset + 1}) "
                f"reaches element {last + 1} of a storage of {storage.array.size}"
            )
        nbytes = int(np.prod(sizes, dtype=object)) * dtype.itemsize
        self._materialised += nbytes
        if self._materialised > self._max_materialised:
            raise T7FormatError(
                f"{class_name} at byte {at} (size {sizes}) brings the tensors of this {self._size}-byte file to "
                f"{self._materialised} bytes: overlapping views expand far beyond the data the file holds"
            )
        view = np.lib.stride_tricks.as_strided(
            storage.array[offset:], shape=sizes, strides=[s * dtype.itemsize for s in strides], writeable=False
        )
        return T7Tensor(class_name, np.array(view, dtype=dtype, order="C", copy=True), _read_only(storage.array),
                        offset)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class CheckedAsciiReader(CheckedBinaryReader):
    """Reader for ``torch.save(..., 'ascii')`` files, which torchfile cannot read.

    The ASCII format (torch7 DiskFile in ascii mode) writes each number or
    number array as whitespace-separated decimal text followed by a newline,
    and each string (and a function's bytecode) as its length, a newline, the
    raw bytes and a newline.
    """

    # Fewest bytes a table entry can take: "0\n0\n".
    _MIN_ENTRY_BYTES = 4

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
        if end - pos > 64:
            raise T7FormatError(f"expected a number, found {end - pos} characters of text at byte {pos}")
        self.f.seek(end)
        return data[pos:end]

    def _number(self) -> float:
        token = self._token()
        try:
            return float(token)
        except ValueError:
            at = self.f.tell() - len(token)
            raise T7FormatError(f"expected a number, found {token[:20]!r} at byte {at}") from None

    def _integer(self, what: str) -> int:
        token = self._token()
        try:
            return int(token)  # %d / %ld: exact, also beyond 2**53
        except ValueError:
            pass
        try:
            value = float(token)
        except ValueError:
            raise T7FormatError(f"expected an integer {what}, found {token[:20]!r} at byte {self.f.tell()}") from None
        if not value.is_integer():
            raise T7FormatError(f"expected an integer {what}, found {token[:20]!r} at byte {self.f.tell()}")
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
        return self.read_raw_bytes(self.read_int(), "string")

    def read_raw_bytes(self, count: int, what: str) -> bytes:
        self._take(1, f"{what} separator")  # the newline after the length
        return self._take(count, what)

    def read_elements(self, dtype: np.dtype, count: int) -> np.ndarray:
        # Each element takes at least two characters ("0 "), which bounds count.
        if count < 0 or 2 * count > self.remaining() + 1:
            raise T7FormatError(
                f"file truncated or corrupt: storage of {count} elements does not fit in the "
                f"{self.remaining()} bytes left at byte {self.position()}"
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
            if dtype.kind == "f":
                values = np.array(tokens).astype(np.float64)
            else:
                values = np.array([int(t) for t in tokens], dtype=object)
                info = np.iinfo(dtype)
                if values.min() < info.min or values.max() > info.max:
                    raise T7FormatError(f"storage at byte {start} holds values outside {dtype}")
        except (ValueError, OverflowError):
            raise T7FormatError(f"storage at byte {start} holds a non-numeric element") from None
        with np.errstate(over="ignore"):  # 1e300 in a FloatStorage is inf, as C's strtod+cast gives in Torch
            return values.astype(dtype)


def is_ascii_t7(head: bytes) -> bool:
    """ASCII files start with a small decimal type id and a newline ("4\\n")."""
    return len(head) >= 2 and head[:1].isdigit() and head[1:2] in (b"\n", b"\r")


def read_object(source: str | Path | bytes | BinaryIO) -> Any:
    """Read the single object stored in a Torch7 file (path, bytes or binary file object).

    Returns torchfile's object graph (``TorchObject``, dicts with bytes keys,
    lists, ``LuaFunction``) with tensors as :class:`T7Tensor` and storages as
    :class:`T7Storage`. Raises :class:`T7FormatError` for anything malformed.
    """
    data = _read_bytes(source)
    if not data:
        raise T7FormatError("file is empty")
    data_kind = _foreign_format(data)
    if data_kind:
        raise T7FormatError(f"not a Torch7 file: it looks like {data_kind}")
    if is_ascii_t7(data[:2]):
        return _read_with(CheckedAsciiReader(data))
    try:
        return _read_with(CheckedBinaryReader(data, long_size=8))
    except T7FormatError as first_error:
        # Windows Torch7 wrote 4-byte longs. A damaged 8-byte file can sometimes parse with 4-byte
        # longs by accident, so that reading counts only if it consumes the file exactly, as
        # torch.save's single object does.
        reader = CheckedBinaryReader(data, long_size=4)
        try:
            obj = _read_with(reader)
        except T7FormatError:
            raise first_error from None
        if reader.remaining() != 0:
            raise first_error from None
        return obj


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
        except MemoryError:
            raise T7FormatError(f"{path}: too large to read into memory") from None
        except OSError as error:
            raise T7FormatError(f"{path}: cannot read ({error.strerror or error})") from None
    return source.read()


# Magic numbers of files commonly mistaken for (or saved as) a .t7 model.
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (a PyTorch .pt/.pth file?)"),
    (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"\x89HDF", "an HDF5 file (a Keras .h5 model?)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x08\x01\x12", "a protobuf (an ONNX/Caffe model?)"),
)


def _foreign_format(data: bytes) -> str | None:
    """Name the format of files that are clearly not Torch7 serialisations."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    head = data[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "an HTML/XML document (a web page saved instead of the model?)"
    if head.startswith((b"{", b"[")) and not is_ascii_t7(data[:2]):
        return "a JSON/text document"
    if not is_ascii_t7(data[:2]) and len(data) >= 4:
        first = struct.unpack("<i", data[:4])[0]
        if not 0 <= first <= TYPE_RECUR_FUNCTION:
            sample = data[:32]
            if all(32 <= b < 127 or b in b"\t\r\n" for b in sample):
                shown = sample.decode("ascii").encode("unicode_escape").decode("ascii")
                return f"a text file (starts with '{shown}')"
            return f"some other binary format (its first 4 bytes {data[:4].hex()} are not a Torch7 type id)"
    return None


def _read_with(reader: CheckedBinaryReader) -> Any:
    try:
        obj = reader.read_obj()
    except T7FormatError:
        raise
    except RecursionError:
        raise T7FormatError("objects nested too deeply") from None
    except MemoryError:
        raise T7FormatError(f"out of memory reading the object near byte {reader.position()}") from None
    except (struct.error, ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeDecodeError) as error:
        # Defensive: every path above checks its input; this keeps an unforeseen one to one line.
        raise T7FormatError(f"malformed Torch7 file near byte {reader.position()}: {error}") from None
    return obj
