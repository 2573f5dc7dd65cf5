"""Hypothesis strategies for the property tests: one texture_nets primitive per case, small shapes.

Each strategy yields a :class:`PrimitiveCase`: an in-memory Torch7 module tree (root
``nn.Sequential`` with the primitive as its only child, Lua path "1", fields named and laid out as
torch/nn stores them) plus an input array. Hyper-parameters are drawn, arrays are generated from a
drawn seed (shrinking floats one by one says nothing about a convolution), and the case's repr
names every drawn value, so a falsifying example reads like a constructor call.

Arrays are float32-representable float64: a float32 backend and the float64 judge see exactly the
same input and weights (the .t7 files are FloatTensor), so only arithmetic differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from t7file import T7Module

# -- module builders (torch/nn field names and layouts, FACTS §2) -------------------------------------------------


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def conv_module(path: str, weight: np.ndarray, bias: np.ndarray | None, *, dW: int = 1, dH: int = 1,
                padW: int = 0, padH: int = 0) -> T7Module:
    """nn.SpatialConvolution(nIn, nOut, kW, kH, dW, dH, padW, padH); weight (nOut, nIn, kH, kW)."""
    n_out, n_in, kH, kW = weight.shape
    fields = dict(nInputPlane=n_in, nOutputPlane=n_out, kW=kW, kH=kH, dW=dW, dH=dH, padW=padW, padH=padH,
                  weight=_f32(weight), gradWeight=np.zeros_like(_f32(weight)))
    if bias is not None:
        fields.update(bias=_f32(bias), gradBias=np.zeros_like(_f32(bias)))
    return T7Module("nn.SpatialConvolution", path, fields)


def full_conv_module(path: str, weight: np.ndarray, bias: np.ndarray | None, *, dW: int, dH: int, padW: int,
                     padH: int, adjW: int, adjH: int) -> T7Module:
    """nn.SpatialFullConvolution(nIn, nOut, kW, kH, dW, dH, padW, padH, adjW, adjH); weight (nIn, nOut, kH, kW)."""
    n_in, n_out, kH, kW = weight.shape
    fields = dict(nInputPlane=n_in, nOutputPlane=n_out, kW=kW, kH=kH, dW=dW, dH=dH, padW=padW, padH=padH,
                  adjW=adjW, adjH=adjH, weight=_f32(weight), gradWeight=np.zeros_like(_f32(weight)))
    if bias is not None:
        fields.update(bias=_f32(bias), gradBias=np.zeros_like(_f32(bias)))
    return T7Module("nn.SpatialFullConvolution", path, fields)


def replication_pad_module(path: str, left: int, right: int, top: int, bottom: int) -> T7Module:
    """nn.SpatialReplicationPadding(l, r, t, b): argument order left, right, top, bottom."""
    return T7Module("nn.SpatialReplicationPadding", path, dict(pad_l=left, pad_r=right, pad_t=top, pad_b=bottom))


def instance_norm_module(path: str, weight: np.ndarray | None, bias: np.ndarray | None, *, n_output: int,
                         eps: float = 1e-5, stale_running_stats: bool = True) -> T7Module:
    """texture_nets' nn.InstanceNormalization(nOutput, eps); affine when weight/bias are given.

    With ``stale_running_stats`` the module also carries running statistics and the inner ``bn``
    fields of a file saved after a forward (FACTS §1), set to values that would change the output
    if a backend used them (torch/nn 919eeca's behaviour).
    """
    affine = weight is not None
    fields: dict = dict(nOutput=n_output, eps=eps, affine=affine, momentum=0.0)
    if affine:
        fields.update(weight=_f32(weight), bias=_f32(bias))
    if stale_running_stats:
        running_mean = np.full(n_output, 0.5, np.float32)
        running_var = np.full(n_output, 3.0, np.float32)
        fields.update(running_mean=running_mean, running_var=running_var, prev_batch_size=1)
        fields["bn"] = {"__class__": "nn.SpatialBatchNormalization", "eps": eps, "train": True, "affine": False,
                        "momentum": 0.0, "running_mean": running_mean, "running_var": running_var}
    return T7Module("nn.InstanceNormalization", path, fields)


def relu_module(path: str) -> T7Module:
    return T7Module("nn.ReLU", path, dict(inplace=True, threshold=0, val=0))


def sequential(path: str, children: list[T7Module]) -> T7Module:
    return T7Module("nn.Sequential", path, {}, tuple(children))


def residual_block(path: str, width: int, rng: np.random.Generator, *, kernel: int = 3) -> T7Module:
    """texture_nets' residual block: Sequential{ConcatTable{Identity, branch}, CAddTable}, no ReLU after the add.

    branch = RepPad(p), Conv(width, k), IN, ReLU, RepPad(p), Conv(width, k), IN with p = k // 2.
    """
    p = kernel // 2
    branch_path = f"{path}.1.2"
    branch = sequential(branch_path, [
        replication_pad_module(f"{branch_path}.1", p, p, p, p),
        conv_module(f"{branch_path}.2", *_conv_params(rng, width, width, kernel, kernel)),
        instance_norm_module(f"{branch_path}.3", *_in_params(rng, width), n_output=width),
        relu_module(f"{branch_path}.4"),
        replication_pad_module(f"{branch_path}.5", p, p, p, p),
        conv_module(f"{branch_path}.6", *_conv_params(rng, width, width, kernel, kernel)),
        instance_norm_module(f"{branch_path}.7", *_in_params(rng, width), n_output=width),
    ])
    concat = T7Module("nn.ConcatTable", f"{path}.1", {}, (T7Module("nn.Identity", f"{path}.1.1", {}), branch))
    return sequential(path, [concat, T7Module("nn.CAddTable", f"{path}.2", {})])


def single_module_root(child: T7Module) -> T7Module:
    """Root nn.Sequential holding one module at Lua path "1" (the child must have been built with path "1")."""
    assert child.lua_path == "1", child.lua_path
    return sequential("", [child])


def _conv_params(rng: np.random.Generator, n_in: int, n_out: int, kH: int, kW: int) -> tuple[np.ndarray, np.ndarray]:
    """nn's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias (biases non-zero)."""
    bound = 1.0 / np.sqrt(n_in * kH * kW)
    return rng.uniform(-bound, bound, (n_out, n_in, kH, kW)), rng.uniform(-bound, bound, n_out)


def _in_params(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """IN affine parameters as in the oracle models: weight ~ U(0.5, 1.5), bias ~ U(-0.5, 0.5)."""
    return rng.uniform(0.5, 1.5, n), rng.uniform(-0.5, 0.5, n)


# -- cases -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrimitiveCase:
    """One drawn primitive: its tree, its input, and the drawn values that made them (for the repr)."""

    primitive: str
    root: T7Module = field(repr=False)
    x: np.ndarray = field(repr=False)
    params: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        drawn = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.primitive}({drawn}; x {'x'.join(map(str, self.x.shape))})"

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints for a falsifying example
        printer.text(repr(self))

    @property
    def module(self) -> T7Module:
        return self.root.children[0]


def _input(rng: np.random.Generator, shape: tuple[int, ...], *, offset: float = 0.0, amplitude: float = 1.0,
           relu: bool = False) -> np.ndarray:
    x = offset + amplitude * rng.standard_normal(shape)
    if relu:  # activations after a ReLU, as most generator layers see them
        x = np.maximum(x, 0.0)
    return x.astype(np.float32).astype(np.float64)


seeds = st.integers(0, 2**32 - 1)
channels = st.integers(1, 5)
batch_sizes = st.integers(1, 3)


@st.composite
def conv_cases(draw) -> PrimitiveCase:
    """nn.SpatialConvolution: non-square kernels, strides and pads, channel counts, biases."""
    n_in, n_out = draw(channels), draw(channels)
    kH, kW = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dH, dW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padH, padW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    # Input at least the kernel (after padding) so the output is non-empty.
    H = draw(st.integers(max(1, kH - 2 * padH), max(1, kH - 2 * padH) + 6))
    W = draw(st.integers(max(1, kW - 2 * padW), max(1, kW - 2 * padW) + 6))
    N, seed = draw(batch_sizes), draw(seeds)
    rng = np.random.default_rng(seed)
    weight, bias = _conv_params(rng, n_in, n_out, kH, kW)
    root = single_module_root(conv_module("1", weight, bias, dW=dW, dH=dH, padW=padW, padH=padH))
    params = dict(nIn=n_in, nOut=n_out, kW=kW, kH=kH, dW=dW, dH=dH, padW=padW, padH=padH, seed=seed)
    return PrimitiveCase("SpatialConvolution", root, _input(rng, (N, n_in, H, W)), params)


@st.composite
def full_conv_cases(draw) -> PrimitiveCase:
    """nn.SpatialFullConvolution: stride, pad, adj < stride (torch/nn's constraint), non-square."""
    n_in, n_out = draw(channels), draw(channels)
    kH, kW = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dH, dW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padH, padW = draw(st.integers(0, (kH - 1) // 2)), draw(st.integers(0, (kW - 1) // 2))
    adjH, adjW = draw(st.integers(0, dH - 1)), draw(st.integers(0, dW - 1))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    N, seed = draw(batch_sizes), draw(seeds)
    rng = np.random.default_rng(seed)
    # torch/nn's reset: U(-1/sqrt(nIn*kH*kW), +) for the (nIn, nOut, kH, kW) weight and the nOut biases.
    bound = 1.0 / np.sqrt(n_in * kH * kW)
    weight, bias = rng.uniform(-bound, bound, (n_in, n_out, kH, kW)), rng.uniform(-bound, bound, n_out)
    root = single_module_root(full_conv_module("1", weight, bias, dW=dW, dH=dH, padW=padW, padH=padH,
                                               adjW=adjW, adjH=adjH))
    params = dict(nIn=n_in, nOut=n_out, kW=kW, kH=kH, dW=dW, dH=dH, padW=padW, padH=padH, adjW=adjW, adjH=adjH,
                  seed=seed)
    return PrimitiveCase("SpatialFullConvolution", root, _input(rng, (N, n_in, H, W)), params)


@st.composite
def replication_pad_cases(draw) -> PrimitiveCase:
    """nn.SpatialReplicationPadding(l, r, t, b): asymmetric, larger than the input, negative (crop)."""
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    # Negative pads crop; keep at least one row/column: l + r > -W and t + b > -H.
    left, right = draw(st.integers(-(W - 1), 8)), draw(st.integers(-(W - 1), 8))
    top, bottom = draw(st.integers(-(H - 1), 8)), draw(st.integers(-(H - 1), 8))
    if left + right <= -W:
        right = -W - left + 1
    if top + bottom <= -H:
        bottom = -H - top + 1
    N, C, seed = draw(batch_sizes), draw(channels), draw(seeds)
    rng = np.random.default_rng(seed)
    root = single_module_root(replication_pad_module("1", left, right, top, bottom))
    params = dict(pad_l=left, pad_r=right, pad_t=top, pad_b=bottom, seed=seed)
    return PrimitiveCase("SpatialReplicationPadding", root, _input(rng, (N, C, H, W)), params)


# Plane offset / amplitude pairs: ordinary, large offsets, near-constant, exactly constant planes.
IN_REGIMES = {
    "ordinary": (0.0, 1.0),
    "large offset": (100.0, 1.0),
    "near-constant": (0.5, 1e-3),
    "large offset, near-constant": (-50.0, 1e-2),
    "constant": (0.7, 0.0),
}


@st.composite
def instance_norm_cases(draw) -> PrimitiveCase:
    """texture_nets' nn.InstanceNormalization: batch sizes, near-constant planes, large offsets, affine or not."""
    C = draw(channels)
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    N = draw(st.integers(1, 4))
    regime = draw(st.sampled_from(sorted(IN_REGIMES)))
    affine = draw(st.booleans())
    eps = draw(st.sampled_from([1e-5, 1e-3]))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    offset, amplitude = IN_REGIMES[regime]
    weight, bias = _in_params(rng, C) if affine else (None, None)
    root = single_module_root(instance_norm_module("1", weight, bias, n_output=C, eps=eps))
    x = _input(rng, (N, C, H, W), offset=offset, amplitude=amplitude)
    params = dict(C=C, N=N, regime=repr(regime), affine=affine, eps=eps, seed=seed)
    return PrimitiveCase("InstanceNormalization", root, x, params)


@st.composite
def residual_block_cases(draw) -> PrimitiveCase:
    """A texture_nets residual block (ConcatTable{Identity, branch} + CAddTable) of any width."""
    width = draw(st.integers(1, 4))
    kernel = draw(st.sampled_from([1, 3]))
    H, W = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    N, seed = draw(batch_sizes), draw(seeds)
    rng = np.random.default_rng(seed)
    root = single_module_root(residual_block("1", width, rng, kernel=kernel))
    params = dict(width=width, kernel=kernel, seed=seed)
    return PrimitiveCase("residual block", root, _input(rng, (N, width, H, W), relu=True), params)


PRIMITIVE_STRATEGIES = {
    "conv": conv_cases,
    "full_conv": full_conv_cases,
    "replication_pad": replication_pad_cases,
    "instance_norm": instance_norm_cases,
    "residual_block": residual_block_cases,
}
