"""Build and run a texture_nets generator from its Torch7 module tree, in NumPy.

The builder walks a :class:`t7file.T7Module` tree generically: any nesting of
``nn.Sequential``, ``nn.ConcatTable`` / ``nn.CAddTable`` residual blocks, any
widths, both the 2016 "pretrained" and the current "head" layout. Each module
becomes one small op that knows its Lua path; containers pass Torch's values
along (a tensor, or a Lua table = list of tensors for ConcatTable/CAddTable).
Weights are read in Torch's own layouts and cast to the run dtype once, like
Torch's ``:float()`` / ``:double()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract import BackendError
from reference.activation import threshold
from reference.convolution import conv2d, full_conv2d
from reference.normalization import instance_norm
from reference.padding import replication_pad
from t7file import T7ModelError, T7Module, UnsupportedModuleError, load_module_tree, trace_paths

DTYPES = ("float32", "float64")

# A value flowing between modules: a tensor, or a Lua table of tensors.
Value = np.ndarray | list[np.ndarray]


class _Run:
    """State of one forward pass: where traced outputs go (None when not tracing)."""

    def __init__(self, trace: dict[str, np.ndarray] | None):
        self.trace = trace


@dataclass
class Op:
    """One Torch7 module. ``apply`` returns (value, owned): ``owned`` says the network may write into it."""

    lua_path: str
    torch_class: str
    traced: bool = field(default=False, init=False)

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        raise NotImplementedError

    def tensor(self, x: Value) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise T7ModelError("expects a tensor input but receives a table (is a CAddTable missing?)",
                               torch_class=self.torch_class, lua_path=self.lua_path)
        return x

    def walk(self):
        yield self


# -- containers ---------------------------------------------------------------
@dataclass
class Sequential(Op):
    children: tuple[Op, ...] = ()

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        for child in self.children:
            x, owned = child.apply(x, run, owned)
            if run.trace is not None and child.traced:
                run.trace[child.lua_path] = x
                owned = False  # a recorded output must never be overwritten later (ReLU is in place)
        return x, owned

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class ConcatTable(Op):
    """Applies every member to the same input; returns the Lua table of their outputs."""

    children: tuple[Op, ...] = ()

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        # Members share the input, so none of them may write into it.
        return [child.apply(x, run, False)[0] for child in self.children], False

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class CAddTable(Op):
    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        if not isinstance(x, list) or not x:
            raise T7ModelError("expects a non-empty table input (the output of a ConcatTable)",
                               torch_class=self.torch_class, lua_path=self.lua_path)
        # nn.CAddTable: output = copy(input[1]), then add input[2], input[3], ... in order.
        total = x[0] + x[1] if len(x) > 1 else x[0].copy()
        for term in x[2:]:
            total += term
        return total, True


@dataclass
class PassThrough(Op):
    """nn.Identity, and nn.TVLoss whose forward returns its input (texture_nets src/utils.lua)."""

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        return x, owned


# -- layers ---------------------------------------------------------------------
@dataclass
class ReplicationPad(Op):
    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        return replication_pad(self.tensor(x), self.left, self.right, self.top, self.bottom), True


@dataclass
class Convolution(Op):
    weight: np.ndarray = None  # Torch layout (nOut, nIn, kH, kW)
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)  # (H, W) pairs here; Torch's constructor takes W first
    padding: tuple[int, int] = (0, 0)

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        x = _planes(self, x, self.weight.shape[1])
        return conv2d(x, self.weight, self.bias, self.stride, self.padding), True


@dataclass
class FullConvolution(Op):
    weight: np.ndarray = None  # Torch layout (nIn, nOut, kH, kW)
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    adjustment: tuple[int, int] = (0, 0)

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        x = _planes(self, x, self.weight.shape[0])
        return full_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.adjustment), True


def _planes(op: Op, x: Value, n_in: int) -> np.ndarray:
    """The input as a (N,) C x H x W tensor with the plane count the module was built for."""
    x = op.tensor(x)
    if x.ndim not in (3, 4) or x.shape[-3] != n_in:
        raise ValueError(f"{op.torch_class} at Lua path {op.lua_path} expects {n_in} input planes, "
                         f"got an input of shape {x.shape}")
    return x


@dataclass
class InstanceNormalization(Op):
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    eps: float = 1e-5

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        x = self.tensor(x)
        channels = None if self.weight is None else self.weight.shape[0]
        if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
            raise ValueError(f"{self.torch_class} at Lua path {self.lua_path} expects N x {channels or 'C'} x H x W, "
                             f"got an input of shape {x.shape}")
        return instance_norm(x, self.weight, self.bias, self.eps, in_place=owned), True


@dataclass
class Threshold(Op):
    threshold: float = 0.0
    value: float = 0.0

    def apply(self, x: Value, run: _Run, owned: bool) -> tuple[Value, bool]:
        return threshold(self.tensor(x), self.threshold, self.value, in_place=owned), True


# -- building from the module tree -------------------------------------------------
def _int(module: T7Module, name: str, default: int | None = None) -> int:
    return module.integer(name) if default is None else module.integer(name, default)


def _params(module: T7Module, shape: tuple[int, ...], dtype: np.dtype, name: str = "weight") -> np.ndarray:
    """A parameter tensor in the run dtype, checked against the shape the hyper-parameters imply."""
    array = module.array(name)
    if array.size != int(np.prod(shape)):
        raise T7ModelError(f"'{name}' has shape {array.shape}, expected {shape} from the hyper-parameters",
                           torch_class=module.torch_class, lua_path=module.lua_path)
    # nn.SpatialConvolutionMM in old files stores a 2-D (nOut, nIn*kH*kW) weight: same numbers.
    return np.ascontiguousarray(array.reshape(shape), dtype=dtype)


def _bias(module: T7Module, size: int, dtype: np.dtype) -> np.ndarray | None:
    if module.optional_array("bias") is None:  # :noBias(), or affine=false
        return None
    return _params(module, (size,), dtype, "bias")


def _convolution(module: T7Module, dtype: np.dtype, children: tuple[Op, ...]) -> Op:
    if _int(module, "groups", 1) != 1:
        raise T7ModelError("grouped convolutions are not supported", torch_class=module.torch_class,
                           lua_path=module.lua_path)
    n_in, n_out = _int(module, "nInputPlane"), _int(module, "nOutputPlane")
    k_w, k_h = _int(module, "kW"), _int(module, "kH")
    legacy_pad = _int(module, "padding", 0)  # nn before padW/padH had one symmetric 'padding'
    return Convolution(module.lua_path, module.torch_class,
                       weight=_params(module, (n_out, n_in, k_h, k_w), dtype),
                       bias=_bias(module, n_out, dtype),
                       stride=(_int(module, "dH", 1), _int(module, "dW", 1)),
                       padding=(_int(module, "padH", legacy_pad), _int(module, "padW", legacy_pad)))


def _full_convolution(module: T7Module, dtype: np.dtype, children: tuple[Op, ...]) -> Op:
    n_in, n_out = _int(module, "nInputPlane"), _int(module, "nOutputPlane")
    k_w, k_h = _int(module, "kW"), _int(module, "kH")
    return FullConvolution(module.lua_path, module.torch_class,
                           weight=_params(module, (n_in, n_out, k_h, k_w), dtype),
                           bias=_bias(module, n_out, dtype),
                           stride=(_int(module, "dH", 1), _int(module, "dW", 1)),
                           padding=(_int(module, "padH", 0), _int(module, "padW", 0)),
                           adjustment=(_int(module, "adjH", 0), _int(module, "adjW", 0)))


def _instance_norm(module: T7Module, dtype: np.dtype, children: tuple[Op, ...]) -> Op:
    # Only the module's own affine parameters and eps matter: its inner 'bn', running
    # statistics, 'train' and 'momentum' never change the output (FACTS §2).
    weight = bias = None
    if module.flag("affine", True):
        channels = module.optional_array("weight")
        if channels is not None:
            weight = _params(module, (channels.size,), dtype)
            bias = _bias(module, channels.size, dtype)
    return InstanceNormalization(module.lua_path, module.torch_class, weight=weight, bias=bias,
                                 eps=float(module.number("eps", 1e-5)))


def _replication_pad(module: T7Module, dtype: np.dtype, children: tuple[Op, ...]) -> Op:
    return ReplicationPad(module.lua_path, module.torch_class, left=_int(module, "pad_l", 0),
                          right=_int(module, "pad_r", 0), top=_int(module, "pad_t", 0),
                          bottom=_int(module, "pad_b", 0))


def _threshold(module: T7Module, dtype: np.dtype, children: tuple[Op, ...]) -> Op:
    return Threshold(module.lua_path, module.torch_class, threshold=float(module.number("threshold", 0.0)),
                     value=float(module.number("val", 0.0)))


def _container(kind: type[Op]) -> Callable[[T7Module, np.dtype, tuple[Op, ...]], Op]:
    def build(module: T7Module, dtype: np.dtype, children: tuple[Op, ...]) -> Op:
        return kind(module.lua_path, module.torch_class, children=children)
    return build


def _leaf(kind: type[Op]) -> Callable[[T7Module, np.dtype, tuple[Op, ...]], Op]:
    def build(module: T7Module, dtype: np.dtype, children: tuple[Op, ...]) -> Op:
        return kind(module.lua_path, module.torch_class)
    return build


_BUILDERS: dict[str, Callable[[T7Module, np.dtype, tuple[Op, ...]], Op]] = {
    "nn.Sequential": _container(Sequential),
    "nn.ConcatTable": _container(ConcatTable),
    "nn.CAddTable": _leaf(CAddTable),
    "nn.Identity": _leaf(PassThrough),
    "nn.TVLoss": _leaf(PassThrough),
    "nn.SpatialReplicationPadding": _replication_pad,
    "nn.SpatialConvolution": _convolution,
    "nn.SpatialConvolutionMM": _convolution,
    "cudnn.SpatialConvolution": _convolution,
    "nn.SpatialFullConvolution": _full_convolution,
    "cudnn.SpatialFullConvolution": _full_convolution,
    "nn.InstanceNormalization": _instance_norm,
    "nn.ReLU": _threshold,
    "cudnn.ReLU": _threshold,
}
SUPPORTED_CLASSES: tuple[str, ...] = tuple(sorted(_BUILDERS))
_CONTAINERS = frozenset({"nn.Sequential", "nn.ConcatTable"})


def _build(module: T7Module, dtype: np.dtype) -> Op:
    builder = _BUILDERS.get(module.torch_class)
    if builder is None:
        raise UnsupportedModuleError(module.torch_class, module.lua_path, SUPPORTED_CLASSES)
    if module.children and module.torch_class not in _CONTAINERS:
        raise T7ModelError("a non-container module has child modules", torch_class=module.torch_class,
                           lua_path=module.lua_path)
    return builder(module, dtype, tuple(_build(child, dtype) for child in module.children))


# -- the network -------------------------------------------------------------------
class Network:
    """A generator ready to run: ``forward(x, trace)`` and ``run_module(lua_path, x)`` (the backend runner)."""

    def __init__(self, root: T7Module, dtype: str):
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; the reference runs {', '.join(DTYPES)}")
        self.dtype = np.dtype(dtype)
        self.root_module = root
        self.root = _build(root, self.dtype)
        self.trace_keys: tuple[str, ...] = tuple(trace_paths(root))
        traced = set(self.trace_keys)
        self._ops: dict[str, Op] = {}
        for op in self.root.walk():
            op.traced = op.lua_path in traced
            self._ops[op.lua_path] = op

    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the generator on N x 3 x H x W; with ``trace``, every traced module's output by Lua path."""
        x = self._input(x)
        if x.ndim != 4:
            raise ValueError(f"the generator expects an N x C x H x W input, got shape {x.shape}")
        run = _Run({} if trace else None)
        out, _ = self.root.apply(x, run, False)
        return self._output(self.root, out), (run.trace if trace else {})

    def run_module(self, lua_path: str, x: np.ndarray) -> np.ndarray:
        """Run the one module at ``lua_path`` (a residual block's path runs the whole block) on ``x``."""
        op = self._ops.get(lua_path)
        if op is None:
            raise BackendError(f"no module at Lua path {lua_path!r}")
        out, _ = op.apply(self._input(x), _Run(None), False)
        return self._output(op, out)

    def _input(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=self.dtype)

    @staticmethod
    def _output(op: Op, out: Any) -> np.ndarray:
        if not isinstance(out, np.ndarray):
            raise T7ModelError("outputs a table, not a tensor", torch_class=op.torch_class, lua_path=op.lua_path)
        return out


def build_network(root: T7Module, dtype: str = "float32") -> Network:
    return Network(root, dtype)


def load_network(model: str | Path | T7Module, dtype: str = "float32") -> Network:
    """A Network from a .t7 path or an in-memory T7Module root (weights cast to ``dtype``)."""
    root = model if isinstance(model, T7Module) else load_module_tree(model)
    return Network(root, dtype)
