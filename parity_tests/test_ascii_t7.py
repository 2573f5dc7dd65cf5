"""ASCII .t7 (``torch.save(path, obj, 'ascii')``): loads equal to the binary file, every tensor bit-exact.

torchfile cannot read this format (docs/torch7-semantics.md (torchfile)); t7file.reader.CheckedAsciiReader does.
The committed pair narrow_pretrained_seed78.t7 / _ascii.t7 was written by real Torch7
from the same model; Torch7 prints FloatStorage elements with 9 significant digits
("%.9g"), enough to round-trip float32 exactly, so equality here is bit-for-bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fixtures import ORACLE_NARROW_DIR
from parity_tests import t7_craft as c
from t7file import T7FormatError, load_module_tree, read_object

BINARY = ORACLE_NARROW_DIR / "narrow_pretrained_seed78.t7"
ASCII = ORACLE_NARROW_DIR / "narrow_pretrained_seed78_ascii.t7"


def assert_same(a, b, where: str) -> int:
    """Recursively compare two converted field values; returns the number of arrays compared."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{where}: array vs {type(b).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        # Compare the bits: NaN garbage and signed zeros must survive too.
        assert a.tobytes() == b.tobytes(), f"{where}: values differ"
        return 1
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        return sum(assert_same(a[k], b[k], f"{where}.{k}") for k in a)
    if isinstance(a, list):
        assert len(a) == len(b), f"{where}: lengths {len(a)} vs {len(b)}"
        return sum(assert_same(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))
    if isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
        return 0
    assert a == b, f"{where}: {a!r} vs {b!r}"
    return 0


def test_ascii_oracle_file_loads_equal_to_binary():
    binary, ascii_ = load_module_tree(BINARY), load_module_tree(ASCII)
    modules_b, modules_a = list(binary.walk()), list(ascii_.walk())
    assert len(modules_a) == len(modules_b) == 80
    arrays = 0
    for mb, ma in zip(modules_b, modules_a, strict=True):
        assert (ma.torch_class, ma.lua_path) == (mb.torch_class, mb.lua_path)
        arrays += assert_same(dict(mb.fields), dict(ma.fields), f"{mb.torch_class} at {mb.lua_path or 'root'}")
    # Every tensor of the file took part: weights, biases, gradients, IN's bn and running stats, buffers.
    assert arrays == 490, arrays


def test_ascii_and_binary_object_graphs_have_the_same_shape():
    """Below the module tree too: the raw object graphs match (same classes, same keys)."""
    b, a = read_object(BINARY), read_object(ASCII)
    assert a._typename == b._typename and a._obj.keys() == b._obj.keys()


@pytest.mark.parametrize("long_size", [8])
def test_crafted_ascii_equals_binary(long_size):
    model = c.tiny_model(c.module("nn.Mystery", name="x y\nz", flag=True, ratio=0.1, big=2**40,
                                  table={"a": [1, 2, 3]}, data=c.tensor(np.array([np.nan, -0.0, 1e-40], np.float32)),
                                  ids=c.tensor(np.array([-(2**62), 2**62], np.int64))))
    binary = load_module_tree(c.dumps(model, long_size=long_size))
    ascii_ = load_module_tree(c.dumps(model, ascii=True))
    for mb, ma in zip(binary.walk(), ascii_.walk(), strict=True):
        assert_same(dict(mb.fields), dict(ma.fields), mb.lua_path)
    assert ascii_.find("3").fields["name"] == "x y\nz"  # string bytes are raw, newlines included


def _ascii(text: str) -> bytes:
    return text.encode()


ASCII_HOSTILE = {
    "only-type-id": (b"4\n", "truncated"),
    "truncated-real-file": (ASCII.read_bytes()[:5000], "truncated"),
    "garbage-token": (b"4\n1\nbanana\n", "expected an integer"),
    "float-type-id": (b"4\n1.5\n", "expected an integer"),
    "unknown-type-id": (b"9\n1\n", "unknown object type id 9"),
    "huge-table-index-and-size": (b"3\n99999999999999999999999\n99999999999999999999\n", "claims"),
    "negative-string-length": (b"4\n1\n-3\nV 1\n", "negative"),
    "huge-string-length": (b"4\n1\n2000000000\nV 1\n", "truncated"),
    "huge-table-size": (b"3\n1\n2000000000\n1\n", "claims"),
    "very-long-token": (b"3\n1\n" + b"9" * 10_000 + b"\n", "characters of text"),
    "storage-count-too-large": (_ascii("4\n1\n3\nV 1\n18\ntorch.FloatStorage\n1000000\n1 2 3\n"), "does not fit"),
    "storage-non-numeric": (_ascii("4\n1\n3\nV 1\n18\ntorch.FloatStorage\n3\n1 two 3\n"), "non-numeric"),
    "byte-storage-out-of-range": (_ascii("4\n1\n3\nV 1\n17\ntorch.ByteStorage\n2\n1 300\n"), "outside uint8"),
    "tensor-view-past-storage": (_ascii("4\n1\n3\nV 1\n17\ntorch.FloatTensor\n1\n5\n1\n1\n"
                                        "4\n2\n3\nV 1\n18\ntorch.FloatStorage\n2\n1 2\n"), "reaches element"),
    "nan-dimension-count": (_ascii("4\n1\n3\nV 1\n17\ntorch.FloatTensor\nnan\n"), "expected an integer"),
}


@pytest.mark.parametrize("name", sorted(ASCII_HOSTILE))
def test_hostile_ascii_gives_one_clear_error(name):
    data, fragment = ASCII_HOSTILE[name]
    with pytest.raises(T7FormatError) as info:
        read_object(data)
    message = str(info.value)
    assert "\n" not in message and fragment in message, message


def test_ascii_storage_values_parse_special_floats():
    data = _ascii("4\n1\n3\nV 1\n19\ntorch.DoubleStorage\n5\nnan -nan inf -inf 1e-320\n")
    values = read_object(data).array
    assert np.isnan(values[:2]).all() and values[2] == np.inf and values[3] == -np.inf and values[4] == 1e-320
