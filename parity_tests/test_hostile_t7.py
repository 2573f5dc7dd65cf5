"""Hostile and malformed .t7 files: one clear T7Error line, never a traceback, hang or huge allocation.

Every file here is crafted in memory with ``parity_tests.t7_craft`` (or cut from the
committed real Torch7 fixture). For each bad input the library raises a
T7FormatError/T7ModelError whose message is one line, and ``texture-nets inspect``
exits 2 with exactly one line on stderr, within a time bound.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import t7file
from fixtures import DEFAULT_MODEL
from parity_tests import t7_craft as c
from t7file import T7Error, T7FormatError, T7ModelError, UnsupportedModuleError, load_module_tree, read_object
from texture_nets.cli import main as cli_main

REAL = DEFAULT_MODEL.read_bytes()
# Generous bound for one hostile case on a loaded 2-core machine; each takes milliseconds alone.
SECONDS_PER_CASE = 5.0


def _nested_tables(depth: int) -> bytes:
    """depth tables each holding the next under key 1 (written by hand: the emitter recurses)."""
    out = bytearray()
    for index in range(1, depth + 1):
        out += np.array([c.TABLE, index, 1, c.NUMBER], "<i4").tobytes() + np.float64(1).tobytes()
    out += np.array([c.NIL], "<i4").tobytes()
    return bytes(out)


def _dag(levels: int) -> c.Obj:
    """Sequential{child, child} nested `levels` deep, the same child object twice: 2**levels leaves."""
    node = c.module("nn.ReLU")
    for _ in range(levels):
        node = c.module("nn.Sequential", modules=[node, node])
    return node


def _stride0_bomb(count: int) -> c.Obj:
    """`count` tensors that each view one float as 2**24 elements (stride 0): 64 MiB each in memory."""
    storage = c.Storage("torch.FloatStorage", np.ones(1, np.float32))
    views = {f"t{i}": c.Tensor("torch.FloatTensor", [1 << 24], [0], 1, storage) for i in range(count)}
    return c.module("nn.Sequential", modules=[], **views)


def _conv_with(**overrides) -> bytes:
    weight = c.Tensor("torch.FloatTensor", [2, 3], storage=c.Storage("torch.FloatStorage", np.ones(6, np.float32)))
    for key, value in overrides.items():
        setattr(weight, key, value)
    return c.dumps(c.module("nn.Sequential", modules=[c.module("nn.SpatialConvolution", weight=weight)]))


# name -> (file bytes, expected error class, fragment of the message)
FORMAT_CASES: dict[str, tuple[bytes, type[T7Error], str]] = {
    "empty": (b"", T7FormatError, "empty"),
    "truncated-1-byte": (REAL[:1], T7FormatError, "truncated"),
    "truncated-header": (REAL[:11], T7FormatError, "truncated"),
    "truncated-half": (REAL[: len(REAL) // 2], T7FormatError, "truncated"),
    "truncated-last-byte": (REAL[:-1], T7FormatError, "truncated"),
    "text": (b"hello, this is not a model\n" * 3, T7FormatError, "text file"),
    "html-error-page": (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n",
                        T7FormatError, "HTML"),
    "html-lowercase-leading-space": (b"  \n<html><body>Access denied</body></html>", T7FormatError, "HTML"),
    "json": (b'{"model": "nope"}', T7FormatError, "JSON"),
    "zip-pytorch": (b"PK\x03\x04" + b"\0" * 60, T7FormatError, "ZIP"),
    "pickle": (b"\x80\x04\x95" + b"\0" * 20, T7FormatError, "pickle"),
    "gzip": (b"\x1f\x8b\x08\x00" + b"\0" * 20, T7FormatError, "gzip"),
    "png-image": (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, T7FormatError, "PNG"),
    "random-binary": (bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), T7FormatError, ""),
    "unknown-type-id": (np.array([7 + 90], "<i4").tobytes() + b"\0" * 16, T7FormatError, "type id"),
    "unknown-type-id-inside": (c.dumps(c.module("nn.ReLU", x=c.Raw(np.array([42], "<i4").tobytes()))),
                               T7FormatError, "unknown object type id 42"),
    "negative-string-length": (np.array([c.STRING, -5], "<i4").tobytes(), T7FormatError, "negative"),
    "huge-string-length": (np.array([c.STRING, 2**31 - 1], "<i4").tobytes() + b"abc", T7FormatError, "truncated"),
    "huge-table-size": (np.array([c.TABLE, 1, 2**31 - 1], "<i4").tobytes() + b"\0" * 64, T7FormatError, "claims"),
    "negative-table-size": (np.array([c.TABLE, 1, -1], "<i4").tobytes(), T7FormatError, "claims"),
    "deep-nesting": (_nested_tables(5000), T7FormatError, "nested deeper"),
    "tensor-ndim-huge": (_conv_with(ndim=1 << 30), T7FormatError, "dimensions"),
    "tensor-ndim-negative": (_conv_with(ndim=-3), T7FormatError, "dimensions"),
    "tensor-negative-size": (_conv_with(sizes=[-2, -3], strides=[3, 1]), T7FormatError, "invalid size"),
    "tensor-huge-size": (_conv_with(sizes=[1 << 62, 3]), T7FormatError, "invalid size"),
    "tensor-huge-size-empty": (_conv_with(sizes=[0, 1 << 62]), T7FormatError, "invalid size"),
    "tensor-negative-stride": (_conv_with(strides=[-3, 1]), T7FormatError, "invalid geometry"),
    "tensor-huge-stride": (_conv_with(strides=[1 << 61, 1]), T7FormatError, "reaches element"),
    "tensor-offset-past-end": (_conv_with(offset=100), T7FormatError, "reaches element"),
    "tensor-offset-zero": (_conv_with(offset=0), T7FormatError, "invalid geometry"),
    "tensor-view-past-storage": (_conv_with(sizes=[4, 3]), T7FormatError, "reaches element"),
    "tensor-without-storage": (_conv_with(storage=None), T7FormatError, "no storage"),
    "tensor-storage-wrong-type": (
        _conv_with(storage=c.Storage("torch.DoubleStorage", np.ones(6))), T7FormatError, "points at"),
    "tensor-storage-is-a-table": (_conv_with(storage={"a": 1}), T7FormatError, "no storage"),
    "storage-huge-declared-size": (
        _conv_with(storage=c.Storage("torch.FloatStorage", np.ones(6, np.float32), size=1 << 60)),
        T7FormatError, "does not fit"),
    "storage-negative-size": (
        _conv_with(storage=c.Storage("torch.FloatStorage", np.ones(6, np.float32), size=-1)),
        T7FormatError, "does not fit"),
    "tensor-is-its-own-storage": (_conv_with(storage=c.Ref(c.TORCH, 6)), T7FormatError, "no storage"),
    "half-tensor": (c.dumps(c.tiny_model(c.module("nn.Linear", weight=c.Tensor(
        "torch.HalfTensor", [2], storage=c.Storage("torch.HalfStorage", np.ones(2, np.float16)))))),
        T7FormatError, "half precision"),
    "cuda-half-storage": (c.dumps(c.Storage("torch.CudaHalfStorage", np.ones(2, np.float16))),
                          T7FormatError, "half precision"),
    "unknown-tensor-type": (c.dumps(c.Tensor("torch.QuantizedTensor", [1])), T7FormatError, "tensor type"),
    "stride0-expansion-bomb": (c.dumps(_stride0_bomb(64)), T7FormatError, "expand far beyond"),
    "class-name-with-newline": (c.dumps(c.Obj(b"nn.Evil\nSecond line")), T7FormatError, "invalid class name"),
    "class-name-binary": (c.dumps(c.Obj(bytes(range(1, 40)))), T7FormatError, "invalid class name"),
    "class-name-empty": (c.dumps(c.Obj(b"")), T7FormatError, "invalid class name"),
    "class-name-huge": (c.dumps(c.Obj(b"nn." + b"A" * 100_000)), T7FormatError, "invalid class name"),
    "bad-version": (c.dumps(c.Obj("nn.Sequential", version=b"V nan")), T7FormatError, "version"),
    # fields = { [{2}] = 3 }: a Lua list used as a table key (unhashable once it is a Python list)
    "table-as-key": (c.dumps(c.Obj("nn.Sequential", c.Raw(
        np.array([c.TABLE, 2, 1, c.TABLE, 3, 1], "<i4").tobytes() + c.dumps(1) + c.dumps(2) + c.dumps(3)))),
        T7FormatError, "as a key"),
    "function-negative-size": (c.dumps(c.module("nn.ReLU", f=c.Function(b"\x1bLJ", declared_size=-1))),
                               T7FormatError, "negative"),
    "function-huge-size": (c.dumps(c.module("nn.ReLU", f=c.Function(b"\x1bLJ", declared_size=2**31 - 1))),
                           T7FormatError, "truncated"),
}

MODEL_CASES: dict[str, tuple[bytes, type[T7Error], str]] = {
    "root-is-a-number": (c.dumps(3.5), T7ModelError, "number"),
    "root-is-a-checkpoint-table": (c.dumps({"model": c.tiny_model(), "opt": {}}), T7ModelError, "keys model, opt"),
    "modules-self-cycle": (None, T7FormatError, "contains itself"),
    "shared-subtree-explosion": (c.dumps(_dag(40)), T7ModelError, "more than 20,000 modules"),
    "modules-not-a-list": (c.dumps(c.module("nn.Sequential", modules="nope")), T7ModelError, "not a list"),
    "modules-holds-a-tensor": (c.dumps(c.module("nn.Sequential", modules=[c.tensor(np.ones(2, np.float32))])),
                               T7ModelError, "modules[1] is a torch.FloatTensor"),
    "lua-function-field": (c.dumps(c.tiny_model(c.module("nn.Mystery", updateOutput=c.Function(b"\x1bLJ\x01")))),
                           T7ModelError, "Lua function"),
}


def _self_cycle() -> bytes:
    seq = c.module("nn.Sequential")
    seq.fields["modules"] = [c.module("nn.ReLU"), seq]
    return c.dumps(seq)


MODEL_CASES["modules-self-cycle"] = (_self_cycle(), T7FormatError, "contains itself")
ALL_CASES = {**FORMAT_CASES, **MODEL_CASES}


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_hostile_file_gives_one_clear_error(name):
    data, error_class, fragment = ALL_CASES[name]
    start = time.perf_counter()
    with pytest.raises(error_class) as info:
        load_module_tree(data)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert message and "\n" not in message, f"{name}: message is not one line: {message!r}"
    assert fragment in message, f"{name}: expected {fragment!r} in {message!r}"
    assert elapsed < SECONDS_PER_CASE, f"{name}: took {elapsed:.2f} s"


@pytest.mark.parametrize("name", ["empty", "html-error-page", "truncated-half", "tensor-view-past-storage",
                                  "deep-nesting", "lua-function-field", "shared-subtree-explosion",
                                  "class-name-with-newline", "root-is-a-checkpoint-table"])
def test_inspect_exits_2_with_one_line(name, tmp_path, capsys):
    path = tmp_path / f"{name}.t7"
    path.write_bytes(ALL_CASES[name][0])
    assert cli_main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("texture-nets: error: "), captured.err
    assert captured.out == ""


def test_inspect_cli_process_on_html_page(tmp_path):
    """The real console entry point: exit status 2, one stderr line, no traceback, quickly."""
    path = tmp_path / "model.t7"
    path.write_bytes(FORMAT_CASES["html-error-page"][0])
    result = subprocess.run([sys.executable, "-m", "texture_nets", "inspect", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "HTML" in result.stderr


def test_missing_path_and_directory(tmp_path, capsys):
    with pytest.raises(T7FormatError, match="no such file"):
        read_object(tmp_path / "absent.t7")
    with pytest.raises(T7FormatError, match="is a directory"):
        read_object(tmp_path)
    assert cli_main(["inspect", str(tmp_path / "absent.t7")]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_stride0_bomb_memory_is_bounded():
    """64 views of 64 MiB each would need 4 GiB; the reader stops at its budget (64 MiB + 4 x file)."""
    data = FORMAT_CASES["stride0-expansion-bomb"][0]
    tracemalloc.start()
    try:
        with pytest.raises(T7FormatError):
            read_object(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_legitimate_stride0_and_shared_storage_views_load():
    """Torch files do hold views: expandAs (stride 0), narrow (offset), getParameters' shared storage."""
    storage = c.Storage("torch.FloatStorage", np.arange(10, dtype=np.float32))
    fields = {
        "expanded": c.Tensor("torch.FloatTensor", [3, 4], [0, 1], 1, storage),
        "narrowed": c.Tensor("torch.FloatTensor", [2, 2], [4, 1], 3, storage),
        "transposed": c.Tensor("torch.FloatTensor", [2, 3], [1, 2], 1, storage),
        "one_wide_odd_stride": c.Tensor("torch.FloatTensor", [1, 5], [999_999_999_999, 1], 6, storage),
        "empty": c.Tensor("torch.FloatTensor", [0], storage=None),
    }
    root = load_module_tree(c.dumps(c.module("nn.Sequential", modules=[], **fields)))
    f = root.fields
    np.testing.assert_array_equal(f["expanded"], np.tile(np.arange(4, dtype=np.float32), (3, 1)))
    np.testing.assert_array_equal(f["narrowed"], [[2, 3], [6, 7]])
    np.testing.assert_array_equal(f["transposed"], [[0, 2, 4], [1, 3, 5]])
    np.testing.assert_array_equal(f["one_wide_odd_stride"], [[5, 6, 7, 8, 9]])
    assert f["empty"].shape == (0,)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in f.values() if isinstance(a, np.ndarray))


def test_windows_4_byte_longs_load_equal():
    """Windows Torch7 builds wrote C longs of 4 bytes; the reader retries with 4 and gets the same tree."""
    model = c.tiny_model()
    eight, four = load_module_tree(c.dumps(model)), load_module_tree(c.dumps(model, long_size=4))
    assert len(c.dumps(model, long_size=4)) < len(c.dumps(model))
    for a, b in zip(eight.walk(), four.walk(), strict=True):
        assert a.torch_class == b.torch_class and a.lua_path == b.lua_path
        for name in a.parameter_arrays():
            np.testing.assert_array_equal(a.array(name), b.array(name))


def test_table_cycles_and_shared_tables_load_without_hanging():
    shared = {"k": 1}
    cyclic: dict = {"name": "x"}
    cyclic["self"] = cyclic
    root = load_module_tree(c.dumps(c.tiny_model(c.module("nn.Identity", a=shared, b=shared, loop=cyclic))))
    fields = root.find("3").fields
    assert fields["a"] is fields["b"]
    assert fields["loop"]["self"] is fields["loop"]


def test_moderate_nesting_and_sharing_still_load():
    """Limits are far above real models: 12 levels of a shared pair is 4096 leaves, 40 nested Sequentials."""
    root = load_module_tree(c.dumps(_dag(12)))
    assert sum(1 for _ in root.walk()) == 2**13 - 1
    deep = c.module("nn.ReLU")
    for _ in range(40):
        deep = c.module("nn.Sequential", modules=[deep])
    root = load_module_tree(c.dumps(deep))
    assert max(len(m.lua_path.split(".")) for m in root.walk()) == 40


def test_nesting_just_under_the_cap_converts():
    """~99 torch objects nested through fields (2 reader levels each) and ~190 nested lists load fine."""
    inner: object = 1.0
    for _ in range(95):
        inner = c.Obj("nn.Wrapper", {"x": inner})
    nested: object = 0
    for _ in range(190):
        nested = [nested]
    root = load_module_tree(c.dumps(c.module("nn.Sequential", modules=[], deep=inner, lists=nested)))
    value, depth = root.fields["lists"], 0
    while isinstance(value, list):
        value, depth = value[0], depth + 1
    assert depth == 190


def test_unknown_module_class_is_named_with_its_path():
    """The tree keeps unknown classes (inspect prints them); running one names class and Lua path."""
    root = load_module_tree(c.dumps(c.tiny_model(c.module("nn.Mystery", alpha=0.5))))
    mystery = root.find("3")
    assert mystery.torch_class == "nn.Mystery"
    error = UnsupportedModuleError(mystery.torch_class, mystery.lua_path, ["nn.ReLU", "nn.SpatialConvolution"])
    assert str(error).startswith("nn.Mystery at Lua path 3: unsupported module class")
    assert "\n" not in str(error)


def test_unknown_module_class_refused_by_the_reference_backend():
    try:
        from harness.core.registry import get_backend

        backend = get_backend("reference")
    except Exception:
        pytest.skip("reference backend not available yet")
    root = load_module_tree(c.dumps(c.tiny_model(c.module("nn.Mystery"))))
    with pytest.raises(UnsupportedModuleError) as info:
        backend.load(root, "float32")
    assert info.value.torch_class == "nn.Mystery" and info.value.lua_path == "3"
    assert "\n" not in str(info.value)


def test_lua_function_outside_modules_is_read_not_run():
    """read_object returns functions as torchfile.LuaFunction (bytecode kept as bytes, never executed)."""
    obj = read_object(c.dumps({"f": c.Function(b"\x1bLJ\x02code", upvalues={"x": 1})}))
    function = obj[b"f"]
    assert function.dumped == b"\x1bLJ\x02code" and function.upvalues[b"x"] == 1


def test_nan_weights_load_and_inspect_warns(tmp_path, capsys):
    weight = np.ones((2, 3, 3, 3), np.float32)
    weight[0, 0, 0, :2] = [np.nan, np.inf]
    conv = c.module("nn.SpatialConvolution", nInputPlane=3, nOutputPlane=2, kW=3, kH=3,
                    weight=c.tensor(weight), bias=c.tensor(np.zeros(2, np.float32)),
                    gradWeight=c.tensor(np.full((2, 3, 3, 3), np.nan, np.float32)))
    path = tmp_path / "nan.t7"
    path.write_bytes(c.dumps(c.module("nn.Sequential", modules=[conv])))
    root = load_module_tree(path)
    assert np.isnan(root.find("1").array("weight")).sum() == 1
    assert cli_main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "weight has 2 NaN/Inf values" in out
    assert "gradWeight" not in out.split("warning")[-1]  # garbage gradients are ignored


def test_errors_are_t7error_subclasses():
    assert issubclass(t7file.T7FormatError, T7Error) and issubclass(t7file.T7ModelError, T7Error)
