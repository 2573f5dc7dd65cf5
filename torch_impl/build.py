"""Build a torch.nn.Module from a Torch7 module tree, by walking it generically.

Every node becomes one PyTorch module registered under its Lua index, so the
built model's ``named_modules()`` names are the dotted Lua paths ("6",
"13.1.2.4"). Nothing depends on indices or widths: any nesting of Sequential,
ConcatTable{Identity, branch} + CAddTable residual blocks, Concat pyramids, any
channel counts: the johnson generators (2016 "pretrained" and johnson.lua "head"
layouts) and the v1-era nets of docs/real-models.md (texture_nets v1 style and
texture nets, torch-opencv-demos, online-neural-doodle).

Weights are read in Torch's own layouts and cast to the requested dtype, like
Torch's ``:float()`` / ``:double()``. What a file does not record comes from
``contract.families``: the batch-norm mode (a load argument, the family's
convention by default) and what each nn.GenNoise draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract.families import NoiseModule, batchnorm_mode, noise_modules
from t7file import T7ModelError, T7Module, UnsupportedModuleError, load_module_tree, trace_paths
from torch_impl.batchnorm import MODES, build_batch_norm
from torch_impl.modules import CAddTable, ConcatTable, InstanceNorm, LuaSequential, ReplicationPad, TVLoss
from torch_impl.noise import GenNoiseFill, GenNoisePlanes
from torch_impl.pyramid import AveragePool, CircularPad, Concat, UpsampleNearest
from torch_impl.structure import input_channels

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class BuildContext:
    """What a builder may need beyond its own module: the dtype, the batch-norm mode, the channels
    each module receives (by Lua path, None where unknown) and the noise modules (by Lua path)."""

    dtype: torch.dtype
    batchnorm: str = "train"
    channels: dict[str, int | None] = field(default_factory=dict)
    noise: dict[str, NoiseModule] = field(default_factory=dict)


def load_torch_model(model: str | Path | T7Module, dtype: str = "float32", *,
                     batchnorm: str | None = None, channels_last: bool = True) -> nn.Module:
    """A ready-to-use PyTorch generator from a .t7 path or an in-memory module tree.

    The result is in eval mode with gradients off; ``model.get_submodule("13.1.2.4")``
    is the module at that Lua path. ``batchnorm``: "train" (batch statistics) or "evaluate"
    (running statistics); None takes the model family's convention (contract.families).
    A Sequential root also knows its ``noise_paths`` (the order exported graphs take noise
    tensors in) and ``trace_paths``. ``channels_last``: float32 convolution weights in channels-last
    memory (faster; values do not depend on layout, but oneDNN's convolutions sum in another order
    in each layout, so a plain-layout model differs from this one by float32 rounding); float64 models
    always keep the plain layout.
    """
    root = model if isinstance(model, T7Module) else load_module_tree(model)
    mode = batchnorm if batchnorm is not None else batchnorm_mode(root)
    if mode not in MODES:
        raise ValueError(f"batchnorm must be one of {', '.join(MODES)}, not {mode!r}")
    context = BuildContext(_torch_dtype(dtype), mode, input_channels(root),
                           {spec.lua_path: spec for spec in noise_modules(root)})
    module = build_module(root, context)
    if channels_last and context.dtype == torch.float32:
        # oneDNN's float32 convolutions run 1.1-3x faster on channels-last (N x H x W x C) tensors, and a
        # convolution with channels-last weights returns a channels-last output whatever its input's layout:
        # so the activations stay channels last from the first convolution on (ReLU, the sums, the pads and
        # the normalisations keep the layout; values are independent of it). Float64 stays plain: PyTorch's
        # float64 convolutions are not oneDNN's and ran slower channels last. Exported graphs keep the
        # layout, so an artefact runs the same kernels as the model it was exported from.
        module.to(memory_format=torch.channels_last)
    if isinstance(module, LuaSequential):
        module.noise_paths = tuple(context.noise)
        module.trace_paths = tuple(trace_paths(root))
    module.eval()
    module.requires_grad_(False)
    return module


def build_module(t7: T7Module, context: BuildContext | torch.dtype) -> nn.Module:
    """Convert one Torch7 module (and its subtree). Unknown classes raise UnsupportedModuleError.

    ``context`` may be a bare dtype for trees without batch norms and noise (train-mode batch
    norms, channels unknown)."""
    if isinstance(context, torch.dtype):
        context = BuildContext(context)
    builder = BUILDERS.get(t7.torch_class)
    if builder is None:
        raise UnsupportedModuleError(t7.torch_class, t7.lua_path, list(BUILDERS))
    return builder(t7, context)


# -- one builder per Torch7 class ------------------------------------------

Builder = Callable[[T7Module, BuildContext], nn.Module]


def _sequential(t7: T7Module, context: BuildContext) -> nn.Module:
    return LuaSequential([build_module(child, context) for child in t7.children])


def _concat_table(t7: T7Module, context: BuildContext) -> nn.Module:
    return ConcatTable([build_module(child, context) for child in t7.children])


def _concat(t7: T7Module, context: BuildContext) -> nn.Module:
    dimension = t7.integer("dimension", 2)
    if not 1 <= dimension <= 4:
        raise T7ModelError(f"dimension {dimension} is not one of the 4 axes of N x C x H x W",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    return Concat([build_module(child, context) for child in t7.children], dimension - 1, t7.lua_path)


def _leaf(factory: Callable[[], nn.Module]) -> Builder:
    def build(t7: T7Module, context: BuildContext) -> nn.Module:
        return factory()

    return build


def _relu(t7: T7Module, context: BuildContext) -> nn.Module:
    # nn.ReLU is nn.Threshold(0, 0): y = x if x > threshold else val. Never in
    # place here (Torch's ReLU(true) is), so traced outputs are not overwritten.
    threshold = t7.number("threshold", 0)
    value = t7.number("val", 0)
    if threshold == 0 and value == 0:
        return nn.ReLU()
    return nn.Threshold(threshold, value)


def _leaky_relu(t7: T7Module, context: BuildContext) -> nn.Module:
    # x > 0 ? x : x * negval, negval rounded to the element type (THNN LeakyReLU). Never in place here
    # (Torch7's inplace=true only changes what the previous module's buffer holds afterwards).
    return nn.LeakyReLU(t7.number("negval", 1 / 100))


def _replication_padding(t7: T7Module, context: BuildContext) -> nn.Module:
    return ReplicationPad(t7.integer("pad_l"), t7.integer("pad_r"), t7.integer("pad_t"), t7.integer("pad_b"))


def _circular_padding(t7: T7Module, context: BuildContext) -> nn.Module:
    left = t7.integer("pad_l")
    return CircularPad(left, t7.integer("pad_r", left), t7.integer("pad_t", left), t7.integer("pad_b", left),
                       t7.lua_path)


def _average_pooling(t7: T7Module, context: BuildContext) -> nn.Module:
    k_w, k_h = t7.integer("kW"), t7.integer("kH")
    d_w, d_h = t7.integer("dW", k_w), t7.integer("dH", k_h)
    if t7.integer("padW", 0) or t7.integer("padH", 0) or t7.flag("ceil_mode", False):
        # No public file pads or uses ceil mode; their window counts differ at the edges.
        raise T7ModelError("padding and ceil_mode are not supported (every v1-era file has pad 0, floor mode)",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    if min(k_w, k_h, d_w, d_h) < 1:
        raise T7ModelError(f"kernel {k_w}x{k_h} and stride {d_w}x{d_h} must be positive",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    return AveragePool(k_w, k_h, d_w, d_h, t7.lua_path)


def _upsampling_nearest(t7: T7Module, context: BuildContext) -> nn.Module:
    scale = t7.integer("scale_factor")
    if scale < 1:
        raise T7ModelError(f"scale_factor {scale} must be a positive integer", torch_class=t7.torch_class,
                           lua_path=t7.lua_path)
    return UpsampleNearest(scale)


def _batch_norm(t7: T7Module, context: BuildContext) -> nn.Module:
    return build_batch_norm(t7, context.dtype, context.batchnorm, context.channels.get(t7.lua_path))


def _gen_noise(t7: T7Module, context: BuildContext) -> nn.Module:
    spec = context.noise.get(t7.lua_path)
    if spec is None:
        # Built outside a whole tree (no family to read the kind from): decide from the class's own fields.
        if "num_planes" in t7.fields:
            return GenNoisePlanes(t7.lua_path, t7.integer("num_planes"))
        channels = context.channels.get(t7.lua_path)
        if channels is None:
            raise T7ModelError("texture_nets' GenNoise fills its input's channels, and this tree does not say how "
                               "many it receives", torch_class=t7.torch_class, lua_path=t7.lua_path)
        return GenNoiseFill(t7.lua_path, 0, channels)
    if spec.kind == "planes":
        return GenNoisePlanes(spec.lua_path, spec.planes)
    return GenNoiseFill(spec.lua_path, spec.first_channel, spec.planes)


def _noise_fill(t7: T7Module, context: BuildContext) -> nn.Module:
    # torch-opencv-demos / online-neural-doodle NoiseFill: with no noise channels (every public file)
    # it copies its input. Adding noise would need a drawing rule no file exercises: refuse.
    for name in ("num_noise_channels", "num_mask_noise_times"):
        if t7.integer(name, 0) > 0:
            raise T7ModelError(f"{name} = {t7.integer(name)}: only NoiseFill without noise (0, a copy of its "
                               "input) is supported", torch_class=t7.torch_class, lua_path=t7.lua_path)
    return nn.Identity()


def _convolution(t7: T7Module, context: BuildContext) -> nn.Module:
    # Torch7 SpatialConvolution(nIn, nOut, kW, kH, dW, dH, padW, padH): W comes
    # before H everywhere; PyTorch wants (H, W) pairs. Weight (nOut, nIn, kH, kW)
    # is already PyTorch's layout; old SpatialConvolutionMM files store it as
    # (nOut, nIn*kH*kW), which is the same memory. cudnn.SpatialConvolution's
    # leftovers (groups 1, *_offset, iSize) change nothing (docs/real-models.md).
    if t7.integer("groups", 1) != 1:
        raise T7ModelError(f"groups = {t7.integer('groups')}: only ungrouped convolutions are supported",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    dtype = context.dtype
    n_in, n_out = t7.integer("nInputPlane"), t7.integer("nOutputPlane")
    k_w, k_h = t7.integer("kW"), t7.integer("kH")
    weight = _reshaped(t7, "weight", (n_out, n_in, k_h, k_w))
    bias = t7.optional_array("bias")
    conv = nn.Conv2d(n_in, n_out, kernel_size=(k_h, k_w), stride=(t7.integer("dH", 1), t7.integer("dW", 1)),
                     padding=(t7.integer("padH", 0), t7.integer("padW", 0)), bias=bias is not None,
                     dtype=dtype)
    _assign(conv, weight, bias, t7, dtype)
    return conv


def _full_convolution(t7: T7Module, context: BuildContext) -> nn.Module:
    # SpatialFullConvolution: weight (nIn, nOut, kH, kW), scatter-add without a
    # kernel flip, out = (H-1)*s - 2p + k + adj with the adj row/column at the
    # bottom/right: ConvTranspose2d(padding=p, output_padding=adj), same layout.
    n_in, n_out = t7.integer("nInputPlane"), t7.integer("nOutputPlane")
    k_w, k_h = t7.integer("kW"), t7.integer("kH")
    stride = (t7.integer("dH", 1), t7.integer("dW", 1))
    adj = (t7.integer("adjH", 0), t7.integer("adjW", 0))
    if adj[0] >= stride[0] or adj[1] >= stride[1]:
        # Torch7 refuses this too ("adj must be smaller than stride").
        raise T7ModelError(f"adjW/adjH {adj[::-1]} must be smaller than dW/dH {stride[::-1]}",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    dtype = context.dtype
    weight = _reshaped(t7, "weight", (n_in, n_out, k_h, k_w))
    bias = t7.optional_array("bias")
    deconv = nn.ConvTranspose2d(n_in, n_out, kernel_size=(k_h, k_w), stride=stride,
                                padding=(t7.integer("padH", 0), t7.integer("padW", 0)), output_padding=adj,
                                bias=bias is not None, dtype=dtype)
    _assign(deconv, weight, bias, t7, dtype)
    return deconv


def _instance_norm(t7: T7Module, context: BuildContext) -> nn.Module:
    # The module's own weight/bias (absent when affine=false: 1 and 0) and eps;
    # bn, running_mean/var, train and momentum are ignored (docs/torch7-semantics.md).
    dtype = context.dtype
    weight, bias = t7.optional_array("weight"), t7.optional_array("bias")
    channels = t7.integer("nOutput", -1)
    if channels < 0:
        if weight is None:
            raise T7ModelError("missing nOutput and weight", torch_class=t7.torch_class, lua_path=t7.lua_path)
        channels = weight.size
    w = torch.ones(channels, dtype=dtype) if weight is None else _tensor(weight.reshape(-1), dtype)
    b = torch.zeros(channels, dtype=dtype) if bias is None else _tensor(bias.reshape(-1), dtype)
    if w.numel() != channels or b.numel() != channels:
        raise T7ModelError(f"weight/bias sizes {w.numel()}/{b.numel()} do not match nOutput {channels}",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    return InstanceNorm(w, b, t7.number("eps", 1e-5))


BUILDERS: dict[str, Builder] = {
    "nn.Sequential": _sequential,
    "nn.ConcatTable": _concat_table,
    "nn.Concat": _concat,
    "nn.CAddTable": _leaf(CAddTable),
    "nn.Identity": _leaf(nn.Identity),
    "nn.TVLoss": _leaf(TVLoss),
    "nn.ReLU": _relu,
    "cudnn.ReLU": _relu,
    "nn.LeakyReLU": _leaky_relu,
    "nn.SpatialReplicationPadding": _replication_padding,
    "nn.SpatialCircularPadding": _circular_padding,
    "nn.SpatialConvolution": _convolution,
    "nn.SpatialConvolutionMM": _convolution,
    "cudnn.SpatialConvolution": _convolution,
    "nn.SpatialFullConvolution": _full_convolution,
    "nn.SpatialAveragePooling": _average_pooling,
    "nn.SpatialUpSamplingNearest": _upsampling_nearest,
    "nn.InstanceNormalization": _instance_norm,
    "nn.SpatialBatchNormalization": _batch_norm,
    "cudnn.SpatialBatchNormalization": _batch_norm,
    "nn.GenNoise": _gen_noise,
    "nn.NoiseFill": _noise_fill,
}
SUPPORTED_CLASSES = tuple(sorted(BUILDERS))


# -- helpers -----------------------------------------------------------------


def _torch_dtype(dtype: str) -> torch.dtype:
    try:
        return TORCH_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)}, not {dtype!r}") from None


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    # A private contiguous copy: the tree's arrays may be views of one shared storage.
    return torch.from_numpy(np.array(array, dtype=np.float64 if dtype == torch.float64 else np.float32, order="C"))


def _reshaped(t7: T7Module, name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = t7.array(name)
    if array.size != int(np.prod(shape)):
        raise T7ModelError(f"{name} has shape {array.shape}, expected {shape}", torch_class=t7.torch_class,
                           lua_path=t7.lua_path)
    return array.reshape(shape)


def _assign(layer: nn.Module, weight: np.ndarray, bias: np.ndarray | None, t7: T7Module, dtype: torch.dtype) -> None:
    with torch.no_grad():
        layer.weight.copy_(_tensor(weight, dtype))
        if bias is not None:
            if bias.size != layer.weight.shape[0 if isinstance(layer, nn.Conv2d) else 1]:
                raise T7ModelError(f"bias has {bias.size} values for {layer.weight.shape} weights",
                                   torch_class=t7.torch_class, lua_path=t7.lua_path)
            layer.bias.copy_(_tensor(bias.reshape(-1), dtype))
