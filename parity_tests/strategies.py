"""Hypothesis strategies for the property tests: one texture_nets primitive per case, small shapes.

Each strategy yields a :class:`PrimitiveCase`: a Torch7 module tree (root ``nn.Sequential`` made by
:func:`parity_tests.parity.module_root`, the primitive at Lua path "1", fields named and laid out as
torch/nn stores them) plus an input array, and for the v1-era modules the noise its GenNoise draws and
the batch-norm mode it runs in. Hyper-parameters are drawn with labels, arrays are generated from a
drawn seed (shrinking floats one by one says nothing about a convolution), and the case's repr names
every drawn value, so a falsifying example reads like a constructor call.

Arrays are float32-representable float64: a float32 backend and the float64 judge see exactly the
same input and weights (the .t7 files are FloatTensor), so only arithmetic differs.

The v1-era modules (docs/real-models.md, "Modules") are written as real Torch7 files and read back
(``module_root(..., as_file=True)``), because one of their semantics lives in the file's layout: the
batch norms' gamma/beta read past their declared features into the one flat parameter storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from parity_tests.parity import Primitive, f32, module_root
from t7file import T7Module
from t7file.tree import TensorStorage

# -- module builders (torch/nn field names and layouts, docs/torch7-semantics.md, docs/real-models.md) ------------


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
    fields of a file saved after a forward, set to values that would change the output
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
    """Kept for callers outside the property tests: :func:`parity_tests.parity.module_root` is the one helper."""
    return module_root(child)


def _conv_params(rng: np.random.Generator, n_in: int, n_out: int, kH: int, kW: int) -> tuple[np.ndarray, np.ndarray]:
    """nn's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias (biases non-zero)."""
    bound = 1.0 / np.sqrt(n_in * kH * kW)
    return rng.uniform(-bound, bound, (n_out, n_in, kH, kW)), rng.uniform(-bound, bound, n_out)


def _in_params(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """IN affine parameters as in the oracle models: weight ~ U(0.5, 1.5), bias ~ U(-0.5, 0.5)."""
    return rng.uniform(0.5, 1.5, n), rng.uniform(-0.5, 0.5, n)


# -- the v1-era modules (docs/real-models.md, "Modules") ------------------------------------------------------------


def circular_pad_module(path: str, left: int, right: int, top: int, bottom: int) -> T7Module:
    """texture_nets' nn.SpatialCircularPadding(l, r, t, b) (supplementary/utils.lua)."""
    return T7Module("nn.SpatialCircularPadding", path, dict(pad_l=left, pad_r=right, pad_t=top, pad_b=bottom))


def average_pool_module(path: str, kH: int, kW: int, dH: int, dW: int) -> T7Module:
    """nn.SpatialAveragePooling(kW, kH, dW, dH) as the v1 files store it: no padding, floor mode, dividing."""
    return T7Module("nn.SpatialAveragePooling", path, dict(kW=kW, kH=kH, dW=dW, dH=dH, padW=0, padH=0,
                                                           ceil_mode=False, count_include_pad=True, divide=True))


def upsampling_module(path: str, scale: int) -> T7Module:
    return T7Module("nn.SpatialUpSamplingNearest", path, dict(scale_factor=scale))


def leaky_relu_module(path: str, negval: float, inplace: bool = True) -> T7Module:
    return T7Module("nn.LeakyReLU", path, dict(negval=negval, inplace=inplace))


def gen_noise_module(path: str, *, planes: int | None = None, mult: float = 1.0) -> T7Module:
    """texture_nets' nn.GenNoise (no fields: fills its input in place), or online-neural-doodle's (``planes``:
    a new N x planes x H x W tensor; the two classes share the name, docs/real-models.md)."""
    fields = {} if planes is None else dict(num_planes=planes, mult=mult)
    return T7Module("nn.GenNoise", path, fields)


def concat_module(path: str, branches: list[T7Module]) -> T7Module:
    """nn.Concat(2) over ``branches`` (each built at any path; module_root renames them)."""
    return T7Module("nn.Concat", path, dict(dimension=2), tuple(branches))


def batch_norm_module(path: str, rng: np.random.Generator, features: int, *, eps: float = 1e-5,
                      affine: bool = True) -> T7Module:
    """nn.SpatialBatchNormalization(features, eps): gamma ~ U(0.5, 1.5), beta ~ N(0, 0.5); running statistics
    mean ~ N(0, 1) and an unbiased variance ~ U(0.5, 2). :func:`flat_parameters` puts gamma and beta into the
    model's one parameter storage, as the real files have them."""
    fields: dict = dict(eps=eps, momentum=0.1, affine=affine, train=True,
                        running_mean=_f32(rng.normal(0.0, 1.0, features)),
                        running_var=_f32(rng.uniform(0.5, 2.0, features)))
    if affine:
        fields.update(weight=_f32(rng.uniform(0.5, 1.5, features)), bias=_f32(rng.normal(0.0, 0.5, features)),
                      gradWeight=np.zeros(features, np.float32), gradBias=np.zeros(features, np.float32))
    return T7Module("nn.SpatialBatchNormalization", path, fields)


def flat_parameters(modules: list[T7Module], following: np.ndarray | None = None) -> list[T7Module]:
    """``modules`` with every weight and bias a view into one flat float32 storage, in ``getParameters()`` order
    (pre-order, weight then bias), followed by ``following`` (the parameters of the modules after them).

    What the v1 files hold and ``torch.load`` keeps: a train-mode batch norm on more channels than it has
    features reads gamma[c] = flat[weight_offset + c], beta[c] = flat[bias_offset + c] on into what follows
    (docs/real-models.md, "The aliasing trap"). Write the tree with ``module_root(..., as_file=True)``.
    """
    parts: list[np.ndarray] = []
    offsets: dict[tuple[int, str], int] = {}
    for top in modules:
        for module in top.walk():
            for name in ("weight", "bias"):
                array = module.fields.get(name)
                if isinstance(array, np.ndarray) and array.size:
                    offsets[(id(module), name)] = sum(part.size for part in parts)
                    parts.append(_f32(array).reshape(-1))
    if following is not None:
        parts.append(_f32(following).reshape(-1))
    flat = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    flat.setflags(write=False)

    def rebuild(module: T7Module) -> T7Module:
        fields, storages = dict(module.fields), dict(module.storages)
        for name in ("weight", "bias"):
            offset = offsets.get((id(module), name))
            if offset is not None:
                size = fields[name].size
                fields[name] = flat[offset:offset + size].reshape(fields[name].shape).copy()
                storages[name] = TensorStorage(flat, offset)
        return T7Module(module.torch_class, module.lua_path, fields, tuple(rebuild(c) for c in module.children),
                        storages)

    return [rebuild(module) for module in modules]


# -- cases -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrimitiveCase:
    """One drawn primitive: its tree, its input, its noise and batch-norm mode, and the drawn values that made them."""

    primitive: str
    root: T7Module = field(repr=False)
    x: np.ndarray = field(repr=False)
    params: dict = field(default_factory=dict)
    noise: dict[str, np.ndarray] | None = field(default=None, repr=False)
    batchnorm: str | None = None

    def __repr__(self) -> str:
        drawn = ", ".join(f"{k}={v}" for k, v in self.params.items())
        mode = f", batchnorm={self.batchnorm}" if self.batchnorm else ""
        return f"{self.primitive}({drawn}{mode}; x {'x'.join(map(str, self.x.shape))})"

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
    return f32(x)


seeds = st.integers(0, 2**32 - 1)
channels = st.integers(1, 5)
batch_sizes = st.integers(1, 3)


@st.composite
def conv_cases(draw) -> PrimitiveCase:
    """nn.SpatialConvolution: non-square kernels, strides and pads, channel counts, biases."""
    n_in, n_out = draw(channels, label="nIn"), draw(channels, label="nOut")
    kH, kW = draw(st.integers(1, 5), label="kH"), draw(st.integers(1, 5), label="kW")
    dH, dW = draw(st.integers(1, 3), label="dH"), draw(st.integers(1, 3), label="dW")
    padH, padW = draw(st.integers(0, 2), label="padH"), draw(st.integers(0, 2), label="padW")
    # Input at least the kernel (after padding) so the output is non-empty.
    H = draw(st.integers(max(1, kH - 2 * padH), max(1, kH - 2 * padH) + 6), label="H")
    W = draw(st.integers(max(1, kW - 2 * padW), max(1, kW - 2 * padW) + 6), label="W")
    N, seed = draw(batch_sizes, label="N"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    weight, bias = _conv_params(rng, n_in, n_out, kH, kW)
    root = module_root(conv_module("1", weight, bias, dW=dW, dH=dH, padW=padW, padH=padH))
    params = dict(nIn=n_in, nOut=n_out, kW=kW, kH=kH, dW=dW, dH=dH, padW=padW, padH=padH, seed=seed)
    return PrimitiveCase("SpatialConvolution", root, _input(rng, (N, n_in, H, W)), params)


@st.composite
def full_conv_cases(draw) -> PrimitiveCase:
    """nn.SpatialFullConvolution: stride, pad, adj < stride (torch/nn's constraint), non-square."""
    n_in, n_out = draw(channels, label="nIn"), draw(channels, label="nOut")
    kH, kW = draw(st.integers(1, 5), label="kH"), draw(st.integers(1, 5), label="kW")
    dH, dW = draw(st.integers(1, 3), label="dH"), draw(st.integers(1, 3), label="dW")
    padH, padW = draw(st.integers(0, (kH - 1) // 2), label="padH"), draw(st.integers(0, (kW - 1) // 2), label="padW")
    adjH, adjW = draw(st.integers(0, dH - 1), label="adjH"), draw(st.integers(0, dW - 1), label="adjW")
    H, W = draw(st.integers(1, 6), label="H"), draw(st.integers(1, 6), label="W")
    N, seed = draw(batch_sizes, label="N"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    # torch/nn's reset: U(-1/sqrt(nIn*kH*kW), +) for the (nIn, nOut, kH, kW) weight and the nOut biases.
    bound = 1.0 / np.sqrt(n_in * kH * kW)
    weight, bias = rng.uniform(-bound, bound, (n_in, n_out, kH, kW)), rng.uniform(-bound, bound, n_out)
    root = module_root(full_conv_module("1", weight, bias, dW=dW, dH=dH, padW=padW, padH=padH, adjW=adjW, adjH=adjH))
    params = dict(nIn=n_in, nOut=n_out, kW=kW, kH=kH, dW=dW, dH=dH, padW=padW, padH=padH, adjW=adjW, adjH=adjH,
                  seed=seed)
    return PrimitiveCase("SpatialFullConvolution", root, _input(rng, (N, n_in, H, W)), params)


@st.composite
def replication_pad_cases(draw) -> PrimitiveCase:
    """nn.SpatialReplicationPadding(l, r, t, b): asymmetric, larger than the input, negative (crop)."""
    H, W = draw(st.integers(1, 6), label="H"), draw(st.integers(1, 6), label="W")
    # Negative pads crop; keep at least one row/column: l + r > -W and t + b > -H.
    left, right = draw(st.integers(-(W - 1), 8), label="pad_l"), draw(st.integers(-(W - 1), 8), label="pad_r")
    top, bottom = draw(st.integers(-(H - 1), 8), label="pad_t"), draw(st.integers(-(H - 1), 8), label="pad_b")
    if left + right <= -W:
        right = -W - left + 1
    if top + bottom <= -H:
        bottom = -H - top + 1
    N, C, seed = draw(batch_sizes, label="N"), draw(channels, label="C"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    root = module_root(replication_pad_module("1", left, right, top, bottom))
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
    C = draw(channels, label="C")
    H, W = draw(st.integers(1, 7), label="H"), draw(st.integers(1, 7), label="W")
    N = draw(st.integers(1, 4), label="N")
    regime = draw(st.sampled_from(sorted(IN_REGIMES)), label="regime")
    affine = draw(st.booleans(), label="affine")
    eps = draw(st.sampled_from([1e-5, 1e-3]), label="eps")
    seed = draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    offset, amplitude = IN_REGIMES[regime]
    weight, bias = _in_params(rng, C) if affine else (None, None)
    root = module_root(instance_norm_module("1", weight, bias, n_output=C, eps=eps))
    x = _input(rng, (N, C, H, W), offset=offset, amplitude=amplitude)
    params = dict(C=C, N=N, regime=repr(regime), affine=affine, eps=eps, seed=seed)
    return PrimitiveCase("InstanceNormalization", root, x, params)


@st.composite
def residual_block_cases(draw) -> PrimitiveCase:
    """A texture_nets residual block (ConcatTable{Identity, branch} + CAddTable) of any width."""
    width = draw(st.integers(1, 4), label="width")
    kernel = draw(st.sampled_from([1, 3]), label="kernel")
    H, W = draw(st.integers(2, 7), label="H"), draw(st.integers(2, 7), label="W")
    N, seed = draw(batch_sizes, label="N"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    root = module_root(residual_block("1", width, rng, kernel=kernel))
    params = dict(width=width, kernel=kernel, seed=seed)
    return PrimitiveCase("residual block", root, _input(rng, (N, width, H, W), relu=True), params)


PRIMITIVE_STRATEGIES = {
    "conv": conv_cases,
    "full_conv": full_conv_cases,
    "replication_pad": replication_pad_cases,
    "instance_norm": instance_norm_cases,
    "residual_block": residual_block_cases,
}


# -- the v1-era modules ----------------------------------------------------------------------------------------------

CIRCULAR_KINDS = ("pad 1 (torus wrap)", "pad 0 (border overwritten)", "other pads")


@st.composite
def circular_pad_cases(draw, kind: str | None = None) -> PrimitiveCase:
    """nn.SpatialCircularPadding: pad 1 on every side (the pyramids' convolutions: a torus wrap), pad 0 (the
    v1 nets' last module: not an identity) and other pads, asymmetric, of 2 or more (copies of padding zeros) or
    negative (crops). The utils.lua rule needs a padded plane of at least 2 x 2."""
    kind = kind or draw(st.sampled_from(CIRCULAR_KINDS), label="kind")
    if kind == CIRCULAR_KINDS[0]:
        pads = (1, 1, 1, 1)
        H, W = draw(st.integers(1, 7), label="H"), draw(st.integers(1, 7), label="W")
    elif kind == CIRCULAR_KINDS[1]:
        pads = (0, 0, 0, 0)
        H, W = draw(st.integers(2, 7), label="H"), draw(st.integers(2, 7), label="W")
    else:
        H, W = draw(st.integers(2, 7), label="H"), draw(st.integers(2, 7), label="W")
        left, right, top, bottom = (draw(st.integers(-1, 3), label=name) for name in ("pad_l", "pad_r", "pad_t",
                                                                                      "pad_b"))
        # The rule reads rows 2 and h-1 of the padded plane: at least 2 x 2 (Torch7 fails below).
        bottom, right = max(bottom, 2 - H - top), max(right, 2 - W - left)
        pads = (left, right, top, bottom)
    N, C, seed = draw(batch_sizes, label="N"), draw(channels, label="C"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    root = module_root(circular_pad_module("1", *pads), as_file=True)
    params = dict(kind=repr(kind), pad_l=pads[0], pad_r=pads[1], pad_t=pads[2], pad_b=pads[3], seed=seed)
    return PrimitiveCase("SpatialCircularPadding", root, _input(rng, (N, C, H, W)), params)


@st.composite
def average_pool_cases(draw) -> PrimitiveCase:
    """nn.SpatialAveragePooling(kW, kH, dW, dH): non-square, strides other than the kernel, sizes that do not divide
    (floor((H - kH) / dH) + 1 rows), large offsets (the element-type sums)."""
    kH, kW = draw(st.integers(1, 4), label="kH"), draw(st.integers(1, 4), label="kW")
    dH, dW = draw(st.integers(1, 4), label="dH"), draw(st.integers(1, 4), label="dW")
    H, W = draw(st.integers(kH, kH + 8), label="H"), draw(st.integers(kW, kW + 8), label="W")
    offset = draw(st.sampled_from([0.0, 100.0]), label="offset")
    N, C, seed = draw(batch_sizes, label="N"), draw(channels, label="C"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    root = module_root(average_pool_module("1", kH, kW, dH, dW), as_file=True)
    params = dict(kW=kW, kH=kH, dW=dW, dH=dH, offset=offset, seed=seed)
    return PrimitiveCase("SpatialAveragePooling", root, _input(rng, (N, C, H, W), offset=offset), params)


@st.composite
def upsampling_cases(draw) -> PrimitiveCase:
    """nn.SpatialUpSamplingNearest(s): every pixel repeated s x s."""
    scale = draw(st.integers(1, 4), label="scale")
    H, W = draw(st.integers(1, 6), label="H"), draw(st.integers(1, 6), label="W")
    N, C, seed = draw(batch_sizes, label="N"), draw(channels, label="C"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    root = module_root(upsampling_module("1", scale), as_file=True)
    return PrimitiveCase("SpatialUpSamplingNearest", root, _input(rng, (N, C, H, W)), dict(scale=scale, seed=seed))


@st.composite
def leaky_relu_cases(draw) -> PrimitiveCase:
    """nn.LeakyReLU(negval): the files' 0.01, TF's default 0.2 (a port that ignores the field shows), 0, and
    negvals that float32 cannot represent (Torch7 rounds negval to the element type)."""
    negval = draw(st.sampled_from([0.01, 0.2, 0.0, 0.3, 1e-3]), label="negval")
    inplace = draw(st.booleans(), label="inplace")
    H, W = draw(st.integers(1, 6), label="H"), draw(st.integers(1, 6), label="W")
    N, C, seed = draw(batch_sizes, label="N"), draw(channels, label="C"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    root = module_root(leaky_relu_module("1", negval, inplace), as_file=True)
    return PrimitiveCase("LeakyReLU", root, _input(rng, (N, C, H, W)), dict(negval=negval, inplace=inplace, seed=seed))


# Channel offset / amplitude regimes of a batch norm's input: ordinary, the v1 style nets' conditioning (a channel
# whose spread is ~1000x below its values, docs/real-models.md "Float32 conditioning"), near-constant, constant.
BN_REGIMES = {
    "ordinary": (0.0, 1.0),
    "v1 conditioning (mean 1000, std 3)": (1000.0, 3.0),
    "near-constant": (0.5, 1e-3),
    "constant": (0.7, 0.0),
}


@st.composite
def batch_norm_cases(draw, mode: str | None = None) -> PrimitiveCase:
    """nn.SpatialBatchNormalization after a 1x1 convolution (the channels it receives), in train mode (batch
    statistics over N x H x W: the samples of a batch coupled) or evaluate mode (running statistics). In train mode
    also with more channels than features: gamma/beta then come from the flat parameter storage, past the module's
    own values (the aliasing trap); the model is written as a real file whose parameters are views into one storage.
    The convolution's bias sets the regime of each channel (e.g. the v1 nets' mean 1000, std 3)."""
    mode = mode or draw(st.sampled_from(["train", "evaluate"]), label="batchnorm")
    features = draw(st.integers(1, 4), label="features")
    extra = draw(st.integers(0, 4), label="extra channels") if mode == "train" else 0
    affine = draw(st.booleans(), label="affine") if not extra else True
    eps = draw(st.sampled_from([1e-5, 1e-3]), label="eps")
    regime = draw(st.sampled_from(sorted(BN_REGIMES)), label="regime")
    n_in = draw(st.integers(1, 3), label="nIn")
    N = draw(st.integers(1, 3), label="N")
    H, W = draw(st.integers(1, 6), label="H"), draw(st.integers(1, 6), label="W")
    seed = draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    C = features + extra
    offset, amplitude = BN_REGIMES[regime]
    # The 1x1 convolution maps the input to the regime: weight scales the spread, bias sets the mean.
    weight = rng.uniform(-1, 1, (C, n_in, 1, 1)) * amplitude / np.sqrt(n_in)
    bias = offset + rng.uniform(-0.5, 0.5, C) * min(1.0, offset)
    modules = flat_parameters([conv_module("", weight, bias), batch_norm_module("", rng, features, eps=eps,
                                                                                 affine=affine)],
                              following=rng.normal(0.0, 0.5, 2 * extra))
    x = _input(rng, (N, n_in, H, W))
    params = dict(features=features, channels=C, affine=affine, eps=eps, regime=repr(regime), N=N, seed=seed)
    return PrimitiveCase("SpatialBatchNormalization", module_root(*modules, as_file=True), x, params, batchnorm=mode)


CONCAT_KINDS = ("same sizes", "row-major copy (element counts match)")


@st.composite
def concat_cases(draw, kind: str | None = None) -> PrimitiveCase:
    """nn.Concat(2): 2-3 branches on the same input; the output takes the first branch's N x H x W, the channels
    summed. "same sizes": 1x1 convolutions and a LeakyReLU; "row-major copy": pooling branches whose outputs are
    h x w and w x h (equal element counts): Torch7 copies the second into the first's shape in row-major order."""
    kind = kind or draw(st.sampled_from(CONCAT_KINDS), label="kind")
    C, N, seed = draw(st.integers(1, 3), label="C"), draw(batch_sizes, label="N"), draw(seeds, label="seed")
    rng = np.random.default_rng(seed)
    if kind == CONCAT_KINDS[0]:
        H, W = draw(st.integers(1, 5), label="H"), draw(st.integers(1, 5), label="W")
        widths = [draw(st.integers(1, 3), label=f"branch {i} planes") for i in range(draw(st.integers(2, 3),
                                                                                             label="branches"))]
        branches = [conv_module("", *_conv_params(rng, C, width, 1, 1)) for width in widths[:-1]]
        branches.append(leaky_relu_module("", 0.01, inplace=False))
        params = dict(kind=repr(kind), planes=[*widths[:-1], C], seed=seed)
    else:
        # A 2k x 2k input pooled (2, 1) and (1, 2): k x 2k and 2k x k, the same count in different shapes.
        k = draw(st.integers(1, 3), label="k")
        H = W = 2 * k
        branches = [average_pool_module("", 2, 1, 2, 1), average_pool_module("", 1, 2, 1, 2)]
        params = dict(kind=repr(kind), shapes=f"{k}x{2 * k}, {2 * k}x{k}", seed=seed)
    root = module_root(concat_module("", branches), as_file=True)
    return PrimitiveCase("Concat", root, _input(rng, (N, C, H, W)), params)


NOISE_KINDS = ("texture_nets, texture net (all planes)", "texture_nets, style net (channels 4-6)",
               "online-neural-doodle (new planes)")


@st.composite
def gen_noise_cases(draw, kind: str | None = None) -> PrimitiveCase:
    """Both nn.GenNoise classes with injected noise (docs/real-models.md, "Noise, reproducibly"): texture_nets' fills
    its whole input (a texture net: 3 planes) or channels 4-6 of a style net's 6 (the model's first convolution
    takes 6 planes: a 1x1 one follows here); online-neural-doodle's makes a new N x planes x H x W tensor, beside a
    convolution in a Concat as in the doodle net."""
    kind = kind or draw(st.sampled_from(NOISE_KINDS), label="kind")
    N, seed = draw(batch_sizes, label="N"), draw(seeds, label="seed")
    H, W = draw(st.integers(1, 6), label="H"), draw(st.integers(1, 6), label="W")
    rng = np.random.default_rng(seed)
    if kind == NOISE_KINDS[0]:
        root = module_root(gen_noise_module(""), as_file=True)
        x, noise = _input(rng, (N, 3, H, W)), {"1": f32(rng.random((N, 3, H, W)))}
        params = dict(kind=repr(kind), seed=seed)
    elif kind == NOISE_KINDS[1]:
        root = module_root(gen_noise_module(""), conv_module("", *_conv_params(rng, 6, 2, 1, 1)), as_file=True)
        x, noise = _input(rng, (N, 6, H, W)), {"1": f32(rng.random((N, 3, H, W)))}
        params = dict(kind=repr(kind), seed=seed)
    else:
        planes, C = draw(st.integers(1, 4), label="planes"), draw(st.integers(1, 4), label="C")
        branches = [gen_noise_module("", planes=planes), conv_module("", *_conv_params(rng, C, 2, 1, 1))]
        root = module_root(concat_module("", branches), as_file=True)
        x, noise = _input(rng, (N, C, H, W)), {"1.1": f32(rng.standard_normal((N, planes, H, W)))}
        params = dict(kind=repr(kind), planes=planes, C=C, seed=seed)
    return PrimitiveCase("GenNoise", root, x, params, noise=noise)


V1_STRATEGIES: dict[str, Callable[[], st.SearchStrategy[PrimitiveCase]]] = {
    "circular_pad": circular_pad_cases,
    "average_pool": average_pool_cases,
    "upsampling": upsampling_cases,
    "leaky_relu": leaky_relu_cases,
    "batch_norm": batch_norm_cases,
    "concat": concat_cases,
    "gen_noise": gen_noise_cases,
}


# -- fixed v1 cases (parity_tests.parity.PRIMITIVES and the mutation battery) ---------------------------------------


def _fixed(build: Callable[[np.random.Generator], tuple], seed: int) -> Callable[[], Primitive]:
    def make() -> Primitive:
        return Primitive(*build(np.random.default_rng(seed)))
    return make


def _circular(pads: tuple[int, int, int, int]):
    def build(rng):
        return module_root(circular_pad_module("1", *pads), as_file=True), rng.standard_normal((1, 2, 5, 6))
    return build


def _batch_norm(mode: str, features: int, channels: int, offset: float, amplitude: float):
    """A 1x1 convolution 2 -> ``channels`` (its bias ~ ``offset``, its spread ~ ``amplitude``, channel 1's a twentieth
    of it: the eps then matters), then a batch norm of ``features``, both in one flat parameter storage followed by
    2 x (channels - features) more values."""
    def build(rng):
        weight = rng.uniform(-1, 1, (channels, 2, 1, 1)) * amplitude
        weight[0] *= 0.05
        bias = offset + rng.uniform(-0.5, 0.5, channels)
        modules = flat_parameters([conv_module("", weight, bias), batch_norm_module("", rng, features)],
                                  following=rng.normal(0.0, 0.5, 2 * (channels - features)))
        return module_root(*modules, as_file=True), rng.standard_normal((2, 2, 4, 5)), None, mode
    return build


def _noise(kind: str):
    def build(rng):
        x, noise = rng.standard_normal((2, 6, 3, 4)), {"1": rng.random((2, 3, 3, 4))}
        if kind == "style":
            root = module_root(gen_noise_module(""), conv_module("", *_conv_params(rng, 6, 2, 1, 1)), as_file=True)
        elif kind == "texture":
            root, x = module_root(gen_noise_module(""), as_file=True), x[:, :3]
        else:
            root = module_root(concat_module("", [gen_noise_module("", planes=3),
                                                  conv_module("", *_conv_params(rng, 6, 2, 1, 1))]), as_file=True)
            noise = {"1.1": rng.standard_normal((2, 3, 3, 4))}
        return root, x, noise
    return build


def _concat_row_major(rng):
    branches = [average_pool_module("", 2, 1, 2, 1), average_pool_module("", 1, 2, 1, 2)]
    return module_root(concat_module("", branches), as_file=True), rng.standard_normal((2, 2, 4, 4))


def _concat_branches(rng):
    branches = [conv_module("", *_conv_params(rng, 3, 2, 1, 1)), leaky_relu_module("", 0.01, inplace=False),
                conv_module("", *_conv_params(rng, 3, 1, 1, 1))]
    return module_root(concat_module("", branches), as_file=True), rng.standard_normal((1, 3, 3, 5))


V1_FIXED_CASES: dict[str, Callable[[], Primitive]] = {
    "circular pad 1 (torus wrap)": _fixed(_circular((1, 1, 1, 1)), 21),
    "circular pad 0 (border overwritten)": _fixed(_circular((0, 0, 0, 0)), 22),
    "circular pad (2,0,1,3)": _fixed(_circular((2, 0, 1, 3)), 23),
    "average pooling k3x2 s2 on 7x8 (floor)": _fixed(
        lambda rng: (module_root(average_pool_module("1", 3, 2, 2, 2), as_file=True),
                     rng.standard_normal((1, 2, 7, 8))), 24),
    "upsampling nearest x2": _fixed(lambda rng: (module_root(upsampling_module("1", 2), as_file=True),
                                                 rng.standard_normal((1, 2, 3, 4))), 25),
    "leaky relu negval 0.01": _fixed(lambda rng: (module_root(leaky_relu_module("1", 0.01), as_file=True),
                                                  rng.standard_normal((1, 2, 4, 5))), 26),
    "batch norm train, batch 2, offset channel": _fixed(_batch_norm("train", 3, 3, 1000.0, 3.0), 28),
    "batch norm train, batch 2, 3 features on 5 channels (aliased)": _fixed(_batch_norm("train", 3, 5, 0.0, 1.0), 27),
    "batch norm evaluate": _fixed(_batch_norm("evaluate", 3, 3, 0.0, 1.0), 29),
    "concat of three branches": _fixed(_concat_branches, 30),
    "concat row-major copy (2x4 into 4x2)": _fixed(_concat_row_major, 31),
    "gen noise, style net (channels 4-6)": _fixed(_noise("style"), 32),
    "gen noise, texture net (all planes)": _fixed(_noise("texture"), 33),
    "gen noise, doodle (new planes)": _fixed(_noise("doodle"), 34),
}
