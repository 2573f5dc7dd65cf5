"""Build a torch.nn.Module from a Torch7 module tree, by walking it generically.

Every node becomes one PyTorch module registered under its Lua index, so the
built model's ``named_modules()`` names are the dotted Lua paths ("6",
"13.1.2.4"). Nothing depends on indices or widths: any nesting of Sequential,
ConcatTable{Identity, branch} + CAddTable residual blocks, any channel counts,
both the 2016 "pretrained" and the johnson.lua "head" layouts.

Weights are read in Torch's own layouts and cast to the requested dtype, like
Torch's ``:float()`` / ``:double()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from t7file import T7ModelError, T7Module, UnsupportedModuleError, load_module_tree
from torch_impl.modules import CAddTable, ConcatTable, InstanceNorm, LuaSequential, ReplicationPad, TVLoss

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def load_torch_model(model: str | Path | T7Module, dtype: str = "float32") -> nn.Module:
    """A ready-to-use PyTorch generator from a .t7 path or an in-memory module tree.

    The result is in eval mode with gradients off; ``model.get_submodule("13.1.2.4")``
    is the module at that Lua path.
    """
    root = model if isinstance(model, T7Module) else load_module_tree(model)
    torch_dtype = _torch_dtype(dtype)
    module = build_module(root, torch_dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def build_module(t7: T7Module, dtype: torch.dtype) -> nn.Module:
    """Convert one Torch7 module (and its subtree). Unknown classes raise UnsupportedModuleError."""
    builder = BUILDERS.get(t7.torch_class)
    if builder is None:
        raise UnsupportedModuleError(t7.torch_class, t7.lua_path, list(BUILDERS))
    return builder(t7, dtype)


# -- one builder per Torch7 class ------------------------------------------


def _sequential(t7: T7Module, dtype: torch.dtype) -> nn.Module:
    return LuaSequential([build_module(child, dtype) for child in t7.children])


def _concat_table(t7: T7Module, dtype: torch.dtype) -> nn.Module:
    return ConcatTable([build_module(child, dtype) for child in t7.children])


def _leaf(factory: Callable[[], nn.Module]) -> Callable[[T7Module, torch.dtype], nn.Module]:
    def build(t7: T7Module, dtype: torch.dtype) -> nn.Module:
        return factory()

    return build


def _relu(t7: T7Module, dtype: torch.dtype) -> nn.Module:
    # nn.ReLU is nn.Threshold(0, 0): y = x if x > threshold else val. Never in
    # place here (Torch's ReLU(true) is), so traced outputs are not overwritten.
    threshold = t7.number("threshold", 0)
    value = t7.number("val", 0)
    if threshold == 0 and value == 0:
        return nn.ReLU()
    return nn.Threshold(threshold, value)


def _replication_padding(t7: T7Module, dtype: torch.dtype) -> nn.Module:
    return ReplicationPad(t7.integer("pad_l"), t7.integer("pad_r"), t7.integer("pad_t"), t7.integer("pad_b"))


def _convolution(t7: T7Module, dtype: torch.dtype) -> nn.Module:
    # Torch7 SpatialConvolution(nIn, nOut, kW, kH, dW, dH, padW, padH): W comes
    # before H everywhere; PyTorch wants (H, W) pairs. Weight (nOut, nIn, kH, kW)
    # is already PyTorch's layout; old SpatialConvolutionMM files store it as
    # (nOut, nIn*kH*kW), which is the same memory.
    n_in, n_out = t7.integer("nInputPlane"), t7.integer("nOutputPlane")
    k_w, k_h = t7.integer("kW"), t7.integer("kH")
    weight = _reshaped(t7, "weight", (n_out, n_in, k_h, k_w))
    bias = t7.optional_array("bias")
    conv = nn.Conv2d(n_in, n_out, kernel_size=(k_h, k_w), stride=(t7.integer("dH", 1), t7.integer("dW", 1)),
                     padding=(t7.integer("padH", 0), t7.integer("padW", 0)), bias=bias is not None,
                     dtype=dtype)
    _assign(conv, weight, bias, t7, dtype)
    return conv


def _full_convolution(t7: T7Module, dtype: torch.dtype) -> nn.Module:
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
    weight = _reshaped(t7, "weight", (n_in, n_out, k_h, k_w))
    bias = t7.optional_array("bias")
    deconv = nn.ConvTranspose2d(n_in, n_out, kernel_size=(k_h, k_w), stride=stride,
                                padding=(t7.integer("padH", 0), t7.integer("padW", 0)), output_padding=adj,
                                bias=bias is not None, dtype=dtype)
    _assign(deconv, weight, bias, t7, dtype)
    return deconv


def _instance_norm(t7: T7Module, dtype: torch.dtype) -> nn.Module:
    # The module's own weight/bias (absent when affine=false: 1 and 0) and eps;
    # bn, running_mean/var, train and momentum are ignored (FACTS §2).
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


BUILDERS: dict[str, Callable[[T7Module, torch.dtype], nn.Module]] = {
    "nn.Sequential": _sequential,
    "nn.ConcatTable": _concat_table,
    "nn.CAddTable": _leaf(CAddTable),
    "nn.Identity": _leaf(nn.Identity),
    "nn.TVLoss": _leaf(TVLoss),
    "nn.ReLU": _relu,
    "nn.SpatialReplicationPadding": _replication_padding,
    "nn.SpatialConvolution": _convolution,
    "nn.SpatialFullConvolution": _full_convolution,
    "nn.InstanceNormalization": _instance_norm,
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
