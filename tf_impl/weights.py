"""Torch7 module tree -> TF-layout layer specs (NumPy only; no TensorFlow import).

This is tf_impl's own walk of :class:`t7file.T7Module` (it shares no layout code
with reference/ or torch_impl/). Each module becomes a :class:`LayerSpec` whose
``params`` are already in TensorFlow's layouts. The transposes, written down:

* ``nn.SpatialConvolution`` weight ``(nOut, nIn, kH, kW)`` -> ``tf.nn.conv2d``
  filter HWIO ``(kH, kW, nIn, nOut)``: ``w.transpose(2, 3, 1, 0)``.
  (A bare ``np.transpose(w)`` gives ``(kW, kH, nIn, nOut)``: kH and kW swapped,
  the bug of an early version of the published port, docs/torch7-semantics.md.)
  ``nn.SpatialConvolutionMM`` stores ``(nOut, nIn*kH*kW)``: reshaped first.
  ``cudnn.SpatialConvolution`` is the same module (its leftovers ``iSize``,
  ``*_offset``, ``scaleT`` change nothing; ``groups`` must be 1: docs/real-models.md).
* ``nn.SpatialFullConvolution`` weight ``(nIn, nOut, kH, kW)`` -> ``tf.nn.conv2d_transpose``
  filter ``(kH, kW, nOut, nIn)`` (TF names it [height, width, output_channels,
  in_channels]): ``w.transpose(2, 3, 1, 0)`` as well — the same permutation,
  because Torch's full-conv layout already has nIn first. No kernel flip: both
  are the plain scatter-add (gradient of a cross-correlation).
* ``nn.InstanceNormalization`` weight/bias ``(C,)`` -> scale/offset ``(C,)``,
  broadcast over NHWC's last axis; absent when ``affine=false`` (then 1 and 0).
  Running statistics, ``bn``, ``train``, ``momentum`` are ignored: texture_nets'
  IN always normalises with the current sample's statistics.
* ``nn.SpatialBatchNormalization`` (docs/real-models.md): the mode (``train``:
  the batch's statistics; ``evaluate``: the running ones) is fixed here, because
  the file cannot say it. Train mode keeps scale/offset, **C** of them for an
  input of C channels: a module declared with fewer features than its input has
  channels reads on into the flat parameter storage (``T7Module.storage``), as
  cunn's kernel did when the v1 nets were trained. Evaluate mode keeps the
  running mean and ``invstd = 1/sqrt(running_var + eps)``, computed here in
  float64 and then cast like Torch7's ``(real)(1 / sqrt((double) var + eps))``.

The walk follows the channel count from the model's input planes
(:func:`contract.families.input_planes`) to size those aliased batch norms and to
check every convolution's ``nInputPlane``. Noise modules (``nn.GenNoise``) take
their layout from :func:`contract.families.noise_modules`.

The architecture part of a spec (everything but the arrays) round-trips through
JSON (:func:`architecture_to_json` / :func:`architecture_from_json`) so that a TF
checkpoint can be restored into a code-built graph without the ``.t7``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract.families import CONVOLUTIONS, NoiseModule, input_planes, noise_modules
from contract.protocol import BATCHNORM_MODES
from t7file import T7ModelError, T7Module, UnsupportedModuleError, load_module_tree

# torch_class -> spec kind. nn.TVLoss returns its input in forward; nn.NoiseFill with no noise channels copies it.
KIND_OF_CLASS: dict[str, str] = {
    "nn.Sequential": "sequential",
    "nn.ConcatTable": "concat",
    "nn.Concat": "channel_concat",
    "nn.CAddTable": "cadd",
    "nn.Identity": "identity",
    "nn.TVLoss": "identity",
    "nn.NoiseFill": "identity",
    "nn.ReLU": "relu",
    "cudnn.ReLU": "relu",
    "nn.LeakyReLU": "leakyrelu",
    "nn.SpatialReplicationPadding": "reppad",
    "nn.SpatialCircularPadding": "circpad",
    "nn.SpatialConvolution": "conv",
    "nn.SpatialConvolutionMM": "conv",
    "cudnn.SpatialConvolution": "conv",
    "nn.SpatialFullConvolution": "fullconv",
    "nn.InstanceNormalization": "instnorm",
    "nn.SpatialBatchNormalization": "batchnorm",
    "cudnn.SpatialBatchNormalization": "batchnorm",
    "nn.SpatialAveragePooling": "avgpool",
    "nn.SpatialUpSamplingNearest": "upsample",
    "nn.GenNoise": "gennoise",
}
SUPPORTED_CLASSES: tuple[str, ...] = tuple(KIND_OF_CLASS)
LAYER_KINDS = frozenset(KIND_OF_CLASS.values())

# What a walk carries between modules: the channel count (None when it cannot be known, e.g. a lone
# module without a convolution to tell the input planes), or a list of them after a ConcatTable.
Channels = int | None | list


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


def spec_from_module(module: T7Module, dtype: str | np.dtype = "float32", *, batchnorm: str = "train") -> LayerSpec:
    """Walk the Torch module tree; return the spec tree, params cast to ``dtype`` (like Torch's :float()/:double()).

    ``batchnorm`` ("train" or "evaluate") is how every batch norm normalises (docs/real-models.md).
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, not {batchnorm!r}")
    has_conv = any(m.torch_class in CONVOLUTIONS for m in module.walk())
    walker = _Walker(np.dtype(dtype), batchnorm, {m.lua_path: m for m in noise_modules(module)})
    spec, _ = walker.build(module, input_planes(module) if has_conv else None)
    return spec


def spec_input_planes(spec: LayerSpec) -> int | None:
    """Channels of the model's input, read off a spec tree: the first convolution's input planes, the rule
    of :func:`contract.families.input_planes`. Without a convolution, the first batch norm's channels;
    None (any count) when nothing fixes them, e.g. a lone padding module."""
    for layer in spec.walk():
        if layer.kind == "conv":
            return int(layer.hparams["nInputPlane"])
    for layer in spec.walk():
        if layer.kind == "batchnorm":
            return int(layer.hparams["channels"])
    return None


def noise_layout(spec: LayerSpec) -> dict[str, int]:
    """Lua path -> planes of the array each noise module takes, in execution order."""
    return {layer.lua_path: int(layer.hparams["planes"]) for layer in spec.walk() if layer.kind == "gennoise"}


def batchnorm_modes(spec: LayerSpec) -> set[str]:
    """The modes the spec's batch norms were built for (empty when it has none)."""
    return {layer.hparams["mode"] for layer in spec.walk() if layer.kind == "batchnorm"}


class _Walker:
    """Builds specs depth-first, carrying the channel count a module receives."""

    def __init__(self, dtype: np.dtype, batchnorm: str, noise: dict[str, NoiseModule]):
        self.dtype = dtype
        self.batchnorm = batchnorm
        self.noise = noise

    def build(self, module: T7Module, channels: Channels) -> tuple[LayerSpec, Channels]:
        kind = KIND_OF_CLASS.get(module.torch_class)
        if kind is None:
            raise UnsupportedModuleError(module.torch_class, module.lua_path, SUPPORTED_CLASSES)
        if module.children and kind not in ("sequential", "concat", "channel_concat"):
            raise T7ModelError("a leaf module has children", torch_class=module.torch_class, lua_path=module.lua_path)
        children: list[LayerSpec] = []
        if kind == "sequential":
            out = channels
            for child in module.children:
                spec, out = self.build(child, out)
                children.append(spec)
        elif kind in ("concat", "channel_concat"):
            outs = []
            for child in module.children:
                spec, branch = self.build(child, channels)
                children.append(spec)
                outs.append(branch)
            out = outs if kind == "concat" else _summed(outs)
        else:
            out = channels
        hparams, params, out = _LAYER_READERS.get(kind, _no_params)(self, module, out)
        return LayerSpec(kind, module.lua_path, module.torch_class, hparams, params, tuple(children)), out


def _summed(channels: list) -> int | None:
    return None if any(c is None or isinstance(c, list) for c in channels) else sum(channels)


def _no_params(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    return {}, {}, channels


def _error(module: T7Module, message: str) -> T7ModelError:
    return T7ModelError(message, torch_class=module.torch_class, lua_path=module.lua_path)


def _channel_concat(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    # nn.Concat(dimension): only the channel dimension of N x C x H x W (2, 1-based) occurs in these nets.
    dimension = module.integer("dimension", 2)
    if dimension != 2:
        raise _error(module, f"nn.Concat along dimension {dimension} is not supported (only 2, the channels)")
    if not module.children:
        raise _error(module, "nn.Concat without branches")
    return {"dimension": dimension}, {}, channels


def _cadd(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    if isinstance(channels, list) and channels:
        return {}, {}, channels[0]
    return {}, {}, None


def _identity(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    if module.torch_class == "nn.NoiseFill":
        # torch-opencv-demos / online-neural-doodle NoiseFill: num_noise_channels = 0 in every public
        # file, which copies the input (docs/real-models.md). Noise channels would be drawn here.
        planes = module.integer("num_noise_channels", 0)
        if planes:
            raise _error(module, f"nn.NoiseFill with num_noise_channels={planes} adds noise planes; this port runs "
                                 "only num_noise_channels=0 (a copy of the input), as in every public file")
        # online-neural-doodle's variant can also add noise to the mask; 0 times in its public file.
        times = module.integer("num_mask_noise_times", 0)
        if times:
            raise _error(module, f"nn.NoiseFill with num_mask_noise_times={times} adds noise to the mask; this port "
                                 "runs only 0, as in the public file")
    return {}, {}, channels


def _leakyrelu(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    return {"negval": float(module.number("negval", 0.01))}, {}, channels


def _reppad(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    # nn.SpatialReplicationPadding(pad_l, pad_r, pad_t, pad_b): left, right, top, bottom.
    return {name: module.integer(name) for name in ("pad_l", "pad_r", "pad_t", "pad_b")}, {}, channels


def _circpad(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    # supplementary/utils.lua's nn.SpatialCircularPadding(pad_l, pad_r, pad_t, pad_b).
    return {name: module.integer(name) for name in ("pad_l", "pad_r", "pad_t", "pad_b")}, {}, channels


def _avgpool(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    hp = {name: module.integer(name) for name in ("kW", "kH", "dW", "dH")}
    if module.integer("padW", 0) or module.integer("padH", 0) or module.flag("ceil_mode", False):
        raise _error(module, "padded or ceil_mode average pooling is not supported (no public file uses it)")
    if not module.flag("divide", True):
        raise _error(module, "average pooling with divide=false (a sum) is not supported")
    if min(hp.values()) < 1:
        raise _error(module, f"kernel and stride must be positive, got {hp}")
    return hp, {}, channels


def _upsample(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    scale = module.integer("scale_factor")
    if scale < 1:
        raise _error(module, f"scale_factor must be a positive integer, got {scale}")
    return {"scale_factor": scale}, {}, channels


def _gennoise(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    noise = walker.noise.get(module.lua_path)
    if noise is None:  # only a GenNoise that contract.families does not list could get here
        raise _error(module, "a noise module the model family does not describe")
    if noise.kind == "planes":
        return {"mode": "planes", "planes": noise.planes, "first_channel": 0}, {}, noise.planes
    if channels is not None and not isinstance(channels, list) and noise.first_channel + noise.planes > channels:
        raise _error(module, f"fills channels {noise.first_channel + 1}-{noise.first_channel + noise.planes} of an "
                             f"input with {channels}")
    return {"mode": "fill", "planes": noise.planes, "first_channel": noise.first_channel}, {}, channels


def _conv(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    hp = {name: module.integer(name) for name in ("kW", "kH", "dW", "dH")}
    hp["padW"] = module.integer("padW", 0)
    hp["padH"] = module.integer("padH", 0)
    groups = module.integer("groups", 1)
    if groups != 1:
        raise _error(module, f"grouped convolution (groups={groups}) is not supported")
    weight = module.array("weight")
    n_out = module.integer("nOutputPlane", weight.shape[0])
    n_in = module.integer("nInputPlane", -1)
    if weight.ndim == 2:  # SpatialConvolutionMM-era files store (nOut, nIn*kH*kW)
        if weight.size % max(1, n_out * hp["kH"] * hp["kW"]):
            raise _error(module, f"2-D weight {weight.shape} does not fit {n_out} x nIn x {hp['kH']} x {hp['kW']}")
        weight = weight.reshape(n_out, -1, hp["kH"], hp["kW"])
    _check_shape(module, weight, (n_out, n_in if n_in > 0 else weight.shape[1], hp["kH"], hp["kW"]))
    hp["nInputPlane"] = int(weight.shape[1])
    if isinstance(channels, int) and channels != weight.shape[1]:
        raise _error(module, f"takes {weight.shape[1]} input planes, but its input has {channels} channels")
    return hp, _kernel_and_bias(walker, module, weight, n_out), int(n_out)  # kernel (kH, kW, nIn, nOut)


def _fullconv(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    hp = {name: module.integer(name) for name in ("kW", "kH", "dW", "dH")}
    for name in ("padW", "padH", "adjW", "adjH"):
        hp[name] = module.integer(name, 0)
    weight = module.array("weight")
    n_in, n_out = weight.shape[0], weight.shape[1]
    _check_shape(module, weight, (module.integer("nInputPlane", n_in), module.integer("nOutputPlane", n_out),
                                  hp["kH"], hp["kW"]))
    return hp, _kernel_and_bias(walker, module, weight, n_out), int(n_out)  # kernel (kH, kW, nOut, nIn)


def _kernel_and_bias(walker: _Walker, module: T7Module, weight: np.ndarray, n_out: int) -> dict:
    """A Torch7 4-D kernel (a, b, kH, kW) as TF's (kH, kW, b, a), plus the module's bias if it has one."""
    params = {"kernel": np.ascontiguousarray(weight.transpose(2, 3, 1, 0).astype(walker.dtype))}
    bias = module.optional_array("bias")
    if bias is not None:
        params["bias"] = _vector(module, bias, n_out, walker.dtype)
    return params


def _instnorm(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    hp = {"eps": float(module.number("eps", 1e-5))}
    params = {}
    n = module.integer("nOutput", -1)
    for torch_name, tf_name in (("weight", "scale"), ("bias", "offset")):
        array = module.optional_array(torch_name)
        if array is not None:
            params[tf_name] = _vector(module, array, n if n > 0 else array.size, walker.dtype)
    return hp, params, channels


def _batchnorm(walker: _Walker, module: T7Module, channels: Channels) -> tuple[dict, dict, Channels]:
    """nn.SpatialBatchNormalization in the walker's mode (docs/real-models.md, "The aliasing trap")."""
    eps = float(module.number("eps", 1e-5))
    weight, bias = module.optional_array("weight"), module.optional_array("bias")
    running_mean = module.optional_array("running_mean")
    features = next((a.size for a in (weight, running_mean, bias) if a is not None), None)
    if features is None:
        raise _error(module, "batch norm without weight, bias or running_mean: its feature count is unknown")
    planes = channels if isinstance(channels, int) else features
    hp = {"eps": eps, "mode": walker.batchnorm, "features": int(features), "channels": int(planes)}
    params: dict[str, np.ndarray] = {}
    if walker.batchnorm == "evaluate":
        # Running statistics exist for `features` channels only: Torch7 cannot run other inputs.
        if planes != features:
            raise _error(module, f"running statistics for {features} features, but its input has {planes} channels "
                                 "(only train mode reads past the declared features, as cunn's kernel did)")
        running_var = module.optional_array("running_var")
        if running_mean is None or running_var is None:
            present = ", ".join(sorted(k for k in module.fields if k.startswith("running"))) or "neither"
            raise _error(module, f"evaluate mode needs running_mean and running_var (this file has {present})")
        params["mean"] = _vector(module, running_mean, features, walker.dtype)
        # (real)(1 / sqrt((double) running_var + eps)): float64 here, rounded once to the run's dtype.
        var = _vector(module, running_var, features, np.dtype(np.float64))
        params["invstd"] = (1.0 / np.sqrt(var + eps)).astype(walker.dtype)
        for tf_name, array in (("scale", weight), ("offset", bias)):
            if array is not None:
                params[tf_name] = _vector(module, array, features, walker.dtype)
        return hp, params, channels
    if planes < features:
        raise _error(module, f"declares {features} features, but its input has only {planes} channels")
    for torch_name, tf_name, array in (("weight", "scale", weight), ("bias", "offset", bias)):
        if array is None:
            continue
        if planes == features:
            params[tf_name] = _vector(module, array, features, walker.dtype)
        else:
            params[tf_name] = _aliased(module, torch_name, planes, walker.dtype)
    return hp, params, channels


def _aliased(module: T7Module, name: str, planes: int, dtype: np.dtype) -> np.ndarray:
    """``planes`` values of the flat storage from tensor ``name``'s own offset on (docs/real-models.md:
    gamma[c] = flat[weight_offset + c], beta[c] = flat[bias_offset + c], 0-based offsets)."""
    storage = module.storage(name)
    end = storage.offset + planes
    if end > storage.flat.size:
        raise _error(module, f"its {planes}-channel input makes train mode read {name}[0..{planes - 1}], past the end "
                             f"of the flat parameter storage ({storage.flat.size} values, {name} at offset "
                             f"{storage.offset})")
    return np.ascontiguousarray(np.asarray(storage.flat[storage.offset:end]).astype(dtype))


def _vector(module: T7Module, array: np.ndarray, size: int, dtype: np.dtype) -> np.ndarray:
    if array.size != size:
        raise T7ModelError(f"parameter has {array.size} values, expected {size}", torch_class=module.torch_class,
                           lua_path=module.lua_path)
    return np.ascontiguousarray(array.reshape(size).astype(dtype))


def _check_shape(module: T7Module, weight: np.ndarray, expected: tuple[int, ...]) -> None:
    if weight.shape != tuple(expected):
        raise T7ModelError(f"weight shape {weight.shape} does not match the hyper-parameters {tuple(expected)}",
                           torch_class=module.torch_class, lua_path=module.lua_path)


_LAYER_READERS = {
    "channel_concat": _channel_concat, "cadd": _cadd, "identity": _identity, "leakyrelu": _leakyrelu,
    "reppad": _reppad, "circpad": _circpad, "avgpool": _avgpool, "upsample": _upsample, "gennoise": _gennoise,
    "conv": _conv, "fullconv": _fullconv, "instnorm": _instnorm, "batchnorm": _batchnorm,
}


# -- architecture as JSON (for checkpoints and exported models) ---------------
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
    if kind not in LAYER_KINDS:
        raise T7ModelError(f"unknown layer kind {kind!r} in a saved architecture", lua_path=data.get("lua_path"))
    params = {name: np.zeros(shape, dtype=dtype) for name, shape in data["param_shapes"].items()}
    children = tuple(architecture_from_json(child, dtype) for child in data["children"])
    return LayerSpec(kind, data["lua_path"], data["torch_class"], dict(data["hparams"]), params, children)
