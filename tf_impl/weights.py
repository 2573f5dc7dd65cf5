"""Torch7 module tree -> TF-layout layer specs (NumPy only; no TensorFlow import).

This is tf_impl's own walk of :class:`t7file.T7Module` (it shares no layout code
with reference/ or torch_impl/). Each module becomes a :class:`LayerSpec` whose
``params`` are already in TensorFlow's layouts. The transposes, written down:

* ``nn.SpatialConvolution`` weight ``(nOut, nIn, kH, kW)`` -> ``tf.nn.conv2d``
  filter HWIO ``(kH, kW, nIn, nOut)``: ``w.transpose(2, 3, 1, 0)``.
  (A bare ``np.transpose(w)`` gives ``(kW, kH, nIn, nOut)``: kH and kW swapped,
  the bug of an early version of the published port, FACTS §3.)
* ``nn.SpatialFullConvolution`` weight ``(nIn, nOut, kH, kW)`` -> ``tf.nn.conv2d_transpose``
  filter ``(kH, kW, nOut, nIn)`` (TF names it [height, width, output_channels,
  in_channels]): ``w.transpose(2, 3, 1, 0)`` as well — the same permutation,
  because Torch's full-conv layout already has nIn first. No kernel flip: both
  are the plain scatter-add (gradient of a cross-correlation).
* ``nn.InstanceNormalization`` weight/bias ``(C,)`` -> scale/offset ``(C,)``,
  broadcast over NHWC's last axis; absent when ``affine=false`` (then 1 and 0).
  Running statistics, ``bn``, ``train``, ``momentum`` are ignored: texture_nets'
  IN always normalises with the current sample's statistics (FACTS §2).

The architecture part of a spec (everything but the arrays) round-trips through
JSON (:func:`architecture_to_json` / :func:`architecture_from_json`) so that a TF
checkpoint can be restored into a code-built graph without the ``.t7``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from t7file import T7ModelError, T7Module, UnsupportedModuleError, load_module_tree

# torch_class -> spec kind. nn.TVLoss returns its input in forward (FACTS §2).
KIND_OF_CLASS: dict[str, str] = {
    "nn.Sequential": "sequential",
    "nn.ConcatTable": "concat",
    "nn.CAddTable": "cadd",
    "nn.Identity": "identity",
    "nn.TVLoss": "identity",
    "nn.ReLU": "relu",
    "nn.SpatialReplicationPadding": "reppad",
    "nn.SpatialConvolution": "conv",
    "nn.SpatialFullConvolution": "fullconv",
    "nn.InstanceNormalization": "instnorm",
}
SUPPORTED_CLASSES: tuple[str, ...] = tuple(KIND_OF_CLASS)


@dataclass(frozen=True, eq=False)
class LayerSpec:
    """One Torch module, ready for TF: kind, Lua path, integer/float hyper-parameters, TF-layout arrays."""

    kind: str
    lua_path: str
    torch_class: str
    hparams: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    children: tuple[LayerSpec, ...] = ()

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, lua_path: str) -> LayerSpec:
        for spec in self.walk():
            if spec.lua_path == lua_path:
                return spec
        raise KeyError(lua_path)


def load_root(model: str | Path | T7Module) -> T7Module:
    """A .t7 path or an in-memory module tree -> the root T7Module."""
    return model if isinstance(model, T7Module) else load_module_tree(model)


def spec_from_module(module: T7Module, dtype: str | np.dtype = "float32") -> LayerSpec:
    """Walk the Torch module tree; return the spec tree, params cast to ``dtype`` (like Torch's :float()/:double())."""
    kind = KIND_OF_CLASS.get(module.torch_class)
    if kind is None:
        raise UnsupportedModuleError(module.torch_class, module.lua_path, SUPPORTED_CLASSES)
    dtype = np.dtype(dtype)
    children = tuple(spec_from_module(child, dtype) for child in module.children)
    if kind in ("sequential", "concat") or not children:
        hparams, params = _LAYER_READERS.get(kind, _no_params)(module, dtype)
        return LayerSpec(kind, module.lua_path, module.torch_class, hparams, params, children)
    raise T7ModelError("a leaf module has children", torch_class=module.torch_class, lua_path=module.lua_path)


def _no_params(module: T7Module, dtype: np.dtype) -> tuple[dict, dict]:
    return {}, {}


def _reppad(module: T7Module, dtype: np.dtype) -> tuple[dict, dict]:
    # nn.SpatialReplicationPadding(pad_l, pad_r, pad_t, pad_b): left, right, top, bottom.
    return {name: module.integer(name) for name in ("pad_l", "pad_r", "pad_t", "pad_b")}, {}


def _conv(module: T7Module, dtype: np.dtype) -> tuple[dict, dict]:
    hp = {name: module.integer(name) for name in ("kW", "kH", "dW", "dH")}
    hp["padW"] = module.integer("padW", 0)
    hp["padH"] = module.integer("padH", 0)
    weight = module.array("weight")
    n_out = module.integer("nOutputPlane", weight.shape[0])
    n_in = module.integer("nInputPlane", -1)
    if weight.ndim == 2:  # SpatialConvolutionMM-era files store (nOut, nIn*kH*kW)
        weight = weight.reshape(n_out, -1, hp["kH"], hp["kW"])
    _check_shape(module, weight, (n_out, n_in if n_in > 0 else weight.shape[1], hp["kH"], hp["kW"]))
    params = {"kernel": np.ascontiguousarray(weight.transpose(2, 3, 1, 0).astype(dtype))}  # -> (kH, kW, nIn, nOut)
    bias = module.optional_array("bias")
    if bias is not None:
        params["bias"] = _vector(module, bias, n_out, dtype)
    return hp, params


def _fullconv(module: T7Module, dtype: np.dtype) -> tuple[dict, dict]:
    hp = {name: module.integer(name) for name in ("kW", "kH", "dW", "dH")}
    for name in ("padW", "padH", "adjW", "adjH"):
        hp[name] = module.integer(name, 0)
    weight = module.array("weight")
    n_in, n_out = weight.shape[0], weight.shape[1]
    _check_shape(module, weight, (module.integer("nInputPlane", n_in), module.integer("nOutputPlane", n_out),
                                  hp["kH"], hp["kW"]))
    params = {"kernel": np.ascontiguousarray(weight.transpose(2, 3, 1, 0).astype(dtype))}  # -> (kH, kW, nOut, nIn)
    bias = module.optional_array("bias")
    if bias is not None:
        params["bias"] = _vector(module, bias, n_out, dtype)
    return hp, params


def _instnorm(module: T7Module, dtype: np.dtype) -> tuple[dict, dict]:
    hp = {"eps": float(module.number("eps", 1e-5))}
    params = {}
    n = module.integer("nOutput", -1)
    for torch_name, tf_name in (("weight", "scale"), ("bias", "offset")):
        array = module.optional_array(torch_name)
        if array is not None:
            params[tf_name] = _vector(module, array, n if n > 0 else array.size, dtype)
    return hp, params


def _vector(module: T7Module, array: np.ndarray, size: int, dtype: np.dtype) -> np.ndarray:
    if array.size != size:
        raise T7ModelError(f"parameter has {array.size} values, expected {size}", torch_class=module.torch_class,
                           lua_path=module.lua_path)
    return np.ascontiguousarray(array.reshape(size).astype(dtype))


def _check_shape(module: T7Module, weight: np.ndarray, expected: tuple[int, ...]) -> None:
    if weight.shape != tuple(expected):
        raise T7ModelError(f"weight shape {weight.shape} does not match the hyper-parameters {tuple(expected)}",
                           torch_class=module.torch_class, lua_path=module.lua_path)


_LAYER_READERS = {"reppad": _reppad, "conv": _conv, "fullconv": _fullconv, "instnorm": _instnorm}


# -- architecture as JSON (for checkpoints) ---------------------------------
def architecture_to_json(spec: LayerSpec) -> dict:
    """The spec tree without arrays: kinds, paths, hyper-parameters and parameter shapes."""
    return {
        "kind": spec.kind,
        "lua_path": spec.lua_path,
        "torch_class": spec.torch_class,
        "hparams": dict(spec.hparams),
        "param_shapes": {name: list(array.shape) for name, array in spec.params.items()},
        "children": [architecture_to_json(child) for child in spec.children],
    }


def architecture_from_json(data: dict, dtype: str | np.dtype = "float32") -> LayerSpec:
    """Rebuild a spec tree with zero-filled parameters of the recorded shapes (to be restored from a checkpoint)."""
    kind = data["kind"]
    if kind not in set(KIND_OF_CLASS.values()):
        raise T7ModelError(f"unknown layer kind {kind!r} in a saved architecture", lua_path=data.get("lua_path"))
    params = {name: np.zeros(shape, dtype=dtype) for name, shape in data["param_shapes"].items()}
    children = tuple(architecture_from_json(child, dtype) for child in data["children"])
    return LayerSpec(kind, data["lua_path"], data["torch_class"], dict(data["hparams"]), params, children)
