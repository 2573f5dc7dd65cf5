"""The model maker (fixtures.make_model, ``texture-nets make-model``) against real Torch7 files.

At widths 4,8,16 a made model has the same module tree as the real-Torch7 narrow models, module by
module: class, hyper-parameters and parameter shapes as listed in the oracle JSONs, and beyond that
the same Torch class versions, the same field names, the same non-tensor field values and the same
tensor shapes and types (measured: no difference at all, head layout vs narrow_head_seed77.t7 and
pretrained ``--as-distributed`` vs narrow_pretrained_seed78.t7). Only the weight values differ.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torchfile

import t7file
from fixtures import ORACLE_NARROW_DIR
from fixtures.make_model import build_generator, make_model
from parity_tests.ground_truth import SHARED_ORACLE_DIR
from t7file.writer import dumps_t7
from texture_nets.cli import main as cli_main

NARROW = (4, 8, 16)
ORACLE_MODELS = {"head": "narrow_head_seed77", "pretrained": "narrow_pretrained_seed78"}
LAYOUTS = tuple(ORACLE_MODELS)


def made_tree(layout: str, widths=NARROW, seed: int = 1, **options) -> t7file.T7Module:
    return t7file.load_module_tree(dumps_t7(build_generator(layout, widths, seed, **options)))


def listing(root: t7file.T7Module, hparam_names: dict[str, list[str]]) -> list[dict]:
    """Each module as the oracle JSON describes it: path, class, hyper-parameters, parameter shapes."""
    rows = []
    for module in root.walk():
        hparams = {name: module.fields[name] for name in hparam_names.get(module.lua_path, [])}
        params = {name: list(module.fields[name].shape) for name in ("weight", "bias", "running_mean", "running_var")
                  if isinstance(module.fields.get(name), np.ndarray) and module.fields[name].size}
        rows.append({"lua_path": module.lua_path, "torch_class": module.torch_class, "hparams": hparams,
                     "params": params})
    return rows


def skeleton(value):
    """A torchfile object graph with tensors replaced by (dtype, shape): everything but the values."""
    if isinstance(value, torchfile.TorchObject):
        return ("object", value._typename, value._version_number, skeleton(value._obj))
    if isinstance(value, dict):
        return {key: skeleton(item) for key, item in value.items()}
    if isinstance(value, list):
        return [skeleton(item) for item in value]
    if isinstance(value, np.ndarray):
        return ("tensor", value.dtype.str, value.shape)
    return value


# -- structure against the real Torch7 narrow models ---------------------------------------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("layout", LAYOUTS)
def test_structure_matches_oracle_description(layout):
    description = json.loads((ORACLE_NARROW_DIR / f"{ORACLE_MODELS[layout]}.json").read_text())["modules"]
    hparam_names = {row["lua_path"]: list(row["hparams"]) for row in description}
    made = listing(made_tree(layout), hparam_names)
    assert [row["lua_path"] for row in made] == [row["lua_path"] for row in description]
    for mine, real in zip(made, description, strict=True):
        assert mine == real, f"Lua path {real['lua_path'] or 'root'}: made {mine} | real Torch7 {real}"


@pytest.mark.oracle
@pytest.mark.parametrize(("layout", "as_distributed"), [("head", False), ("pretrained", True)])
def test_every_field_matches_real_torch7_file(layout, as_distributed, tmp_path):
    """Same classes, versions, field names, scalar values, tensor types and shapes as a real torch.save file."""
    path = tmp_path / "made.t7"
    make_model(path, layout, NARROW, seed=5, as_distributed=as_distributed)
    made = skeleton(torchfile.load(str(path)))
    real = skeleton(torchfile.load(str(ORACLE_NARROW_DIR / f"{ORACLE_MODELS[layout]}.t7")))
    _assert_same_skeleton(made, real, "root")


def _assert_same_skeleton(made, real, where: str) -> None:
    assert type(made) is type(real), f"{where}: made {made!r} | real Torch7 {real!r}"
    if isinstance(real, dict):
        assert set(made) == set(real), f"{where}: fields only in made {set(made) - set(real)}, " \
                                       f"only in real Torch7 {set(real) - set(made)}"
        for key in real:
            _assert_same_skeleton(made[key], real[key], f"{where}.{key.decode() if isinstance(key, bytes) else key}")
    elif isinstance(real, list | tuple):
        assert len(made) == len(real), f"{where}: made {len(made)} entries | real Torch7 {len(real)}"
        for index, (a, b) in enumerate(zip(made, real, strict=True)):
            _assert_same_skeleton(a, b, f"{where}[{index + 1}]")
    else:
        assert made == real, f"{where}: made {made!r} | real Torch7 {real!r}"


@pytest.mark.oracle
@pytest.mark.skipif(not (SHARED_ORACLE_DIR / "johnson_head_seed1234_float.t7").exists(),
                    reason="../shared/oracle is absent")
def test_full_width_head_matches_real_torch7_model():
    real = t7file.load_module_tree(SHARED_ORACLE_DIR / "johnson_head_seed1234_float.t7")
    made = made_tree("head", (32, 64, 128))
    for mine, theirs in zip(made.walk(), real.walk(), strict=True):
        assert (mine.lua_path, mine.torch_class) == (theirs.lua_path, theirs.torch_class)
        assert {k: v.shape for k, v in mine.parameter_arrays().items()} == \
               {k: v.shape for k, v in theirs.parameter_arrays().items()}, mine.lua_path


# -- weights -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_weights_follow_nn_default_init_and_affine_instance_norm(layout):
    root = made_tree(layout, (6, 10, 12), seed=11)
    seen = set()
    for module in root.walk():
        f = module.fields
        if module.torch_class in ("nn.SpatialConvolution", "nn.SpatialFullConvolution"):
            bound = 1 / math.sqrt(f["nInputPlane"] * f["kH"] * f["kW"])
            for name in ("weight", "bias"):
                values = f[name]
                assert values.dtype == np.float32
                assert np.abs(values).max() <= bound, f"{module.lua_path}.{name} outside ±{bound}"
            # Dozens of draws at least: all of them in the inner half of the range would mean a wrong bound.
            assert np.abs(f["weight"]).max() > 0.5 * bound, f"{module.lua_path}.weight suspiciously small"
            seen.add(module.torch_class)
        if module.torch_class == "nn.InstanceNormalization":
            weight, bias = f["weight"], f["bias"]
            assert ((weight >= 0.5) & (weight <= 1.5)).all() and not np.all(weight == 1), module.lua_path
            assert ((bias >= -0.5) & (bias <= 0.5)).all() and not np.all(bias == 0), module.lua_path
            assert f["affine"] is True and f["eps"] == 1e-5 and f["momentum"] == 0
            seen.add(module.torch_class)
    assert seen == {"nn.SpatialConvolution", "nn.SpatialFullConvolution", "nn.InstanceNormalization"}


def _parameters(root: t7file.T7Module) -> dict[str, np.ndarray]:
    return {f"{m.lua_path}.{name}": array for m in root.walk() for name, array in m.parameter_arrays().items()}


def test_same_seed_same_bytes_different_seed_different_weights():
    first = dumps_t7(build_generator("pretrained", NARROW, 3))
    assert dumps_t7(build_generator("pretrained", NARROW, 3)) == first
    other = _parameters(made_tree("pretrained", seed=4))
    for key, array in _parameters(t7file.load_module_tree(first)).items():
        assert not np.array_equal(array, other[key]), f"{key} is the same for seeds 3 and 4"


def test_double_option():
    root = made_tree("head", double=True)
    assert root.fields["_type"] == "torch.DoubleTensor"
    assert {a.dtype for a in _parameters(root).values()} == {np.dtype(np.float64)}
    # Same draws as the float model, just not rounded to float32.
    single = _parameters(made_tree("head"))
    for key, array in _parameters(root).items():
        assert np.array_equal(array.astype(np.float32), single[key]), key


def test_as_distributed_quirks(tmp_path):
    path = make_model(tmp_path / "distributed.t7", "pretrained", NARROW, 9, as_distributed=True)
    root = t7file.load_module_tree(path)
    plain = _parameters(made_tree("pretrained", seed=9))
    # The same weights as without the quirks ...
    assert _parameters(root).keys() == plain.keys()
    for key, array in _parameters(root).items():
        assert np.array_equal(array, plain[key]), key
    # ... each IN with an inner bn holding copies, and garbage gradients with NaN and Inf in them.
    norms = [m for m in root.walk() if m.torch_class == "nn.InstanceNormalization"]
    assert norms and all(m.fields["prev_batch_size"] == 1 for m in norms)
    for m in norms:
        bn = m.fields["bn"]
        assert bn["__class__"] == "nn.SpatialBatchNormalization" and bn["train"] is True
        assert np.array_equal(bn["weight"], m.fields["weight"]) and np.array_equal(bn["bias"], m.fields["bias"])
    learnable = [m for m in root.walk() if "weight" in m.fields]
    gradients = np.concatenate([m.fields[g].ravel() for m in learnable for g in ("gradWeight", "gradBias")])
    assert np.isnan(gradients).any() and np.isinf(gradients).any()
    # Parameters are views into one flat storage in getParameters() order; gradients into another.
    raw = torchfile.load(str(path))
    modules = list(_torchfile_modules(raw))
    weights = [m._obj[name] for m in modules if b"weight" in m._obj for name in (b"weight", b"bias")]
    grads = [m._obj[name] for m in modules if b"weight" in m._obj for name in (b"gradWeight", b"gradBias")]
    assert len(weights) == 2 * len(learnable)
    for arrays, what in ((weights, "parameters"), (grads, "gradients")):
        owners = {id(_owner(a)) for a in arrays}
        assert len(owners) == 1, f"{what} live in {len(owners)} storages, not one"
        storage = _owner(arrays[0])
        offsets = [(a.__array_interface__["data"][0] - storage.__array_interface__["data"][0]) // a.itemsize
                   for a in arrays]
        sizes = [a.size for a in arrays]
        assert offsets == list(np.cumsum([0, *sizes[:-1]])) and storage.size == sum(sizes), what
    assert _owner(weights[0]) is not _owner(grads[0])


def _torchfile_modules(obj):
    yield obj
    for child in obj._obj.get(b"modules", []):
        yield from _torchfile_modules(child)


def _owner(array: np.ndarray) -> np.ndarray:
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


# -- the command line --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_cli_make_model_then_inspect(layout, tmp_path, capsys):
    out = tmp_path / f"{layout}.t7"
    assert cli_main(["make-model", "--layout", layout, "--widths", "4,8,16", "--seed", "7", "--out", str(out)]) == 0
    assert out.read_bytes() == dumps_t7(build_generator(layout, NARROW, 7))
    capsys.readouterr()
    assert cli_main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"layout: {layout}" in text
    assert "nn.SpatialFullConvolution(16 -> 8, 3x3, 2,2, 1,1, 1,1)" in text
    stride2 = "(6) nn.SpatialConvolution(4 -> 8, 3x3, 2,2, 1,1)" if layout == "pretrained" else \
        "(6) nn.SpatialConvolution(4 -> 8, 3x3, 2,2, 0,0)"
    assert stride2 in text


def test_cli_default_is_the_full_size_model(tmp_path, capsys):
    out = tmp_path / "full.t7"
    assert cli_main(["make-model", "--out", str(out)]) == 0
    capsys.readouterr()
    cli_main(["inspect", str(out)])
    assert "total: 1,672,323 parameters in 80 modules; layout: pretrained" in capsys.readouterr().out


@pytest.mark.parametrize(("arguments", "message"), [
    (["--widths", "4,8"], "--widths must be three comma-separated positive integers, got '4,8'"),
    (["--widths", "4,x,16"], "--widths must be three comma-separated positive integers"),
    (["--widths", "4,0,16"], "--widths must be three comma-separated positive integers"),
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
], ids=["two-widths", "not-a-number", "zero", "negative-seed"])
def test_cli_bad_arguments(arguments, message, tmp_path, capsys):
    assert cli_main(["make-model", "--out", str(tmp_path / "x.t7"), *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_cli_unwritable_out(tmp_path, capsys):
    assert cli_main(["make-model", "--out", str(tmp_path / "missing" / "x.t7")]) == 2
    error = capsys.readouterr().err
    assert "cannot write" in error and "No such file or directory" in error and error.count("\n") == 1
