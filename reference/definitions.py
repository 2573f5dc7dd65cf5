"""The specification: the plain definition of every op the reference runs, and a forward pass made of them.

Each function states what one Torch7 module computes, in a few lines of float64 NumPy, with no
blocking, threading, algorithm choice or in-place trick (the way jax's ``lax_reference`` is
written). The fast judge (``reference.convolution``, ``normalization``, ``padding``, ``pooling``,
``activation``, ``pyramid``) is pinned to these by parity_tests/test_reference_fast_paths.py with
every fast path forced, and :func:`forward` runs a whole module tree from them alone, which
parity_tests/test_definitions.py compares with the fast network at every traced path.

The semantics are Torch7's (docs/real-models.md for the v1-era modules; THNN's sources for the
rest): shapes, argument orders, padding and cropping rules, the batch-norm modes and the v1 nets'
aliased batch-norm parameters. What is deliberately absent is Torch7's float32 order of
operations: a definition is exact arithmetic up to float64 rounding, and every input is taken as
float64. Tensors are N x C x H x W; (H, W) pairs everywhere (Torch's constructors take W first).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from contract.families import batchnorm_mode, noise_modules
from t7file import T7ModelError, T7Module, trace_paths


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _taps(x: np.ndarray, i: int, j: int, count: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """x[..., i + y*sh, j + z*sw] for y < count[0], z < count[1]: the pixels one kernel tap sees."""
    return x[..., i:i + (count[0] - 1) * stride[0] + 1:stride[0], j:j + (count[1] - 1) * stride[1] + 1:stride[1]]


# -- convolutions ----------------------------------------------------------------------------------------------------


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int] = (1, 1),
           padding: tuple[int, int] = (0, 0)) -> np.ndarray:
    """nn.SpatialConvolution, weight (nOut, nIn, kH, kW): cross-correlation after zero padding,
    ``out[n, o, y, z] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * xpad[n, c, y*sh + i, z*sw + j]``,
    ``out = floor((H + 2p - k) / s) + 1``."""
    x, weight = _f64(x), _f64(weight)
    (s_h, s_w), (p_h, p_w) = stride, padding
    x = np.pad(x, ((0, 0), (0, 0), (p_h, p_h), (p_w, p_w)))
    k_h, k_w = weight.shape[2:]
    count = ((x.shape[2] - k_h) // s_h + 1, (x.shape[3] - k_w) // s_w + 1)
    out = np.zeros((x.shape[0], weight.shape[0], *count))
    for i in range(k_h):
        for j in range(k_w):
            out += np.einsum("nchw,oc->nohw", _taps(x, i, j, count, stride), weight[:, :, i, j], optimize=True)
    return out if bias is None else out + _f64(bias)[None, :, None, None]


def full_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int] = (1, 1),
                padding: tuple[int, int] = (0, 0), adjustment: tuple[int, int] = (0, 0)) -> np.ndarray:
    """nn.SpatialFullConvolution, weight (nIn, nOut, kH, kW), no kernel flip: every input pixel scatters
    ``x[n, c, y, z] * weight[c, o, i, j]`` onto (y*sh + i, z*sw + j) of an uncropped canvas, which is then
    cropped to ``out = (H - 1)*s - 2p + k + adj`` from (p, p); the adj rows/columns are at the bottom/right."""
    x, weight = _f64(x), _f64(weight)
    (s_h, s_w), (p_h, p_w), (a_h, a_w) = stride, padding, adjustment
    batch, _, height, width = x.shape
    k_h, k_w = weight.shape[2:]
    canvas = np.zeros((batch, weight.shape[1], (height - 1) * s_h + k_h + a_h, (width - 1) * s_w + k_w + a_w))
    for i in range(k_h):
        for j in range(k_w):
            _taps(canvas, i, j, (height, width), stride)[...] += np.einsum("nchw,co->nohw", x, weight[:, :, i, j],
                                                                            optimize=True)
    out_h, out_w = (height - 1) * s_h - 2 * p_h + k_h + a_h, (width - 1) * s_w - 2 * p_w + k_w + a_w
    out = canvas[:, :, p_h:p_h + out_h, p_w:p_w + out_w]
    return out if bias is None else out + _f64(bias)[None, :, None, None]


# -- paddings --------------------------------------------------------------------------------------------------------


def replication_pad(x: np.ndarray, left: int, right: int, top: int, bottom: int) -> np.ndarray:
    """nn.SpatialReplicationPadding: output pixel (i, j) is input pixel (clamp(i - t, 0, H-1), clamp(j - l, 0, W-1));
    the output is (H + t + b) x (W + l + r), so negative pads crop."""
    x = _f64(x)
    height, width = x.shape[-2:]
    rows = np.clip(np.arange(height + top + bottom) - top, 0, height - 1)
    cols = np.clip(np.arange(width + left + right) - left, 0, width - 1)
    return x[..., rows[:, None], cols[None, :]]


def circular_pad(x: np.ndarray, left: int, right: int, top: int, bottom: int) -> np.ndarray:
    """texture_nets' nn.SpatialCircularPadding (supplementary/utils.lua), as an index rule: with P the input placed
    in a zero (H + t + b) x (W + l + r) canvas at (t, l) (negative pads crop), output (i, j) = P[r(i), c(j)],
    r(0) = h - 2, r(h - 1) = 1, otherwise r(i) = i (and c likewise): Lua's row 1 := row h-1, row h := row 2, then
    column 1 := column w-1, column w := column 2 (docs/real-models.md)."""
    x = _f64(x)
    height, width = x.shape[-2:]
    rows, cols = np.arange(height + top + bottom), np.arange(width + left + right)
    rows[0], rows[-1] = rows.size - 2, 1
    cols[0], cols[-1] = cols.size - 2, 1
    source_rows, source_cols = rows - top, cols - left
    inside = ((source_rows >= 0) & (source_rows < height))[:, None] & ((source_cols >= 0) & (source_cols < width))
    gathered = x[..., np.clip(source_rows, 0, height - 1)[:, None], np.clip(source_cols, 0, width - 1)[None, :]]
    return np.where(inside, gathered, 0.0)


# -- normalisations --------------------------------------------------------------------------------------------------


def _normalise(x: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float, weight: np.ndarray | None,
               bias: np.ndarray | None, channel_axis: int) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * weight + bias, with THNN's 0 when var and eps are both 0."""
    with np.errstate(divide="ignore"):
        invstd = np.where((var == 0) & (eps == 0), 0.0, 1.0 / np.sqrt(var + eps))
    y = (x - mean) * invstd
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    if weight is not None:
        y = y * _f64(weight).reshape(shape)
    if bias is not None:
        y = y + _f64(bias).reshape(shape)
    return y


def instance_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float) -> np.ndarray:
    """texture_nets nn.InstanceNormalization: each (sample, channel) plane by its own mean and biased variance;
    running statistics never matter."""
    x = _f64(x)
    mean = x.mean(axis=(2, 3), keepdims=True)
    return _normalise(x, mean, ((x - mean) ** 2).mean(axis=(2, 3), keepdims=True), eps, weight, bias, 1)


def batch_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float, *,
               running_mean: np.ndarray | None = None, running_var: np.ndarray | None = None) -> np.ndarray:
    """nn.SpatialBatchNormalization. Train mode (no running statistics): per channel, the mean and biased variance
    of this batch over (n, h, w). Evaluate mode: running_mean and running_var (already a variance)."""
    x = _f64(x)
    if running_mean is None:
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    else:
        mean, var = _f64(running_mean).reshape(1, -1, 1, 1), _f64(running_var).reshape(1, -1, 1, 1)
    return _normalise(x, mean, var, eps, weight, bias, 1)


# -- pooling, upsampling, activations ------------------------------------------------------------------------------


def average_pool(x: np.ndarray, k_h: int, k_w: int, d_h: int, d_w: int) -> np.ndarray:
    """nn.SpatialAveragePooling without padding, floor mode: the mean of each kH x kW window at stride (dH, dW)."""
    return sliding_window_view(_f64(x), (k_h, k_w), axis=(-2, -1))[..., ::d_h, ::d_w, :, :].mean(axis=(-2, -1))


def upsample_nearest(x: np.ndarray, scale: int) -> np.ndarray:
    """nn.SpatialUpSamplingNearest: every pixel repeated scale x scale."""
    return np.repeat(np.repeat(_f64(x), scale, axis=-2), scale, axis=-1)


def threshold(x: np.ndarray, th: float = 0.0, value: float = 0.0) -> np.ndarray:
    """nn.Threshold (nn.ReLU: th = value = 0): ``x > th ? x : value`` (NaN -> value)."""
    x = _f64(x)
    return np.where(x > th, x, value)


def leaky_relu(x: np.ndarray, negval: float) -> np.ndarray:
    """nn.LeakyReLU: ``x > 0 ? x : x * negval``."""
    x = _f64(x)
    return np.where(x > 0, x, x * negval)


# -- tables ----------------------------------------------------------------------------------------------------------


def concat(branches: list[np.ndarray], lua_path: str = "") -> np.ndarray:
    """nn.Concat(2): the first branch's N x H x W with the channels summed; branch k fills its channel slice by a
    row-major copy that only needs equal element counts ("sizes do not match" otherwise)."""
    batch, _, height, width = branches[0].shape
    slices = []
    for index, branch in enumerate(branches, start=1):
        if branch.size != batch * branch.shape[1] * height * width:
            raise T7ModelError(f"sizes do not match: branch {index} has shape {branch.shape}, branch 1 "
                               f"{branches[0].shape}", torch_class="nn.Concat", lua_path=lua_path)
        slices.append(_f64(branch).reshape(batch, branch.shape[1], height, width))
    return np.concatenate(slices, axis=1)


def cadd(table: list[np.ndarray]) -> np.ndarray:
    """nn.CAddTable: the sum of the table's tensors."""
    return sum((_f64(term) for term in table[1:]), _f64(table[0]))


def gen_noise_fill(x: np.ndarray, noise: np.ndarray, first_channel: int) -> np.ndarray:
    """texture_nets' nn.GenNoise (in place in Torch7): channels [first, first + planes) of the input := noise."""
    out = _f64(x).copy()
    out[:, first_channel:first_channel + noise.shape[1]] = noise
    return out


# -- a whole module tree ---------------------------------------------------------------------------------------------


def forward(root: T7Module, x: np.ndarray, *, noise: Mapping[str, np.ndarray] | None = None,
            batchnorm: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run a module tree from these definitions alone: (output, trace by Lua path, the keys of
    ``t7file.trace_paths``). ``noise``: each noise module's array by Lua path; ``batchnorm``: "train" or
    "evaluate" (None: the family's convention). Parameters are read from the tree as float64, the v1 batch
    norms' aliased gamma/beta from the flat storage (docs/real-models.md)."""
    traced, trace = set(trace_paths(root)), {}
    kinds = {spec.lua_path: spec for spec in noise_modules(root)}
    mode = batchnorm or batchnorm_mode(root)
    noise = dict(noise or {})

    def run(module: T7Module, value):
        if module.torch_class == "nn.Sequential":
            for child in module.children:
                value = keep(child, run(child, value))
            return value
        if module.torch_class == "nn.Concat":
            return concat([keep(child, run(child, value)) for child in module.children], module.lua_path)
        if module.torch_class == "nn.ConcatTable":
            return [run(child, value) for child in module.children]
        return _leaf(module, value, noise, kinds, mode)

    def keep(module: T7Module, value):
        if module.lua_path in traced:
            trace[module.lua_path] = value
        return value

    output = run(root, _f64(x))
    return output, {path: trace[path] for path in trace_paths(root)}


def _leaf(module: T7Module, x, noise: dict[str, np.ndarray], kinds: dict, mode: str):
    cls, integer = module.torch_class, module.integer
    if cls == "nn.CAddTable":
        return cadd(x)
    if cls in ("nn.Identity", "nn.TVLoss", "nn.NoiseFill"):
        return x
    if cls in ("nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution"):
        shape = (integer("nOutputPlane"), integer("nInputPlane"), integer("kH"), integer("kW"))
        legacy = integer("padding", 0)
        return conv2d(x, module.array("weight").reshape(shape), module.optional_array("bias"),
                      (integer("dH", 1), integer("dW", 1)), (integer("padH", legacy), integer("padW", legacy)))
    if cls in ("nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution"):
        shape = (integer("nInputPlane"), integer("nOutputPlane"), integer("kH"), integer("kW"))
        return full_conv2d(x, module.array("weight").reshape(shape), module.optional_array("bias"),
                           (integer("dH", 1), integer("dW", 1)), (integer("padH", 0), integer("padW", 0)),
                           (integer("adjH", 0), integer("adjW", 0)))
    pads = (integer("pad_l", 0), integer("pad_r", 0), integer("pad_t", 0), integer("pad_b", 0))
    if cls == "nn.SpatialReplicationPadding":
        return replication_pad(x, *pads)
    if cls == "nn.SpatialCircularPadding":
        return circular_pad(x, *pads)
    affine = module.flag("affine", True) and module.optional_array("weight") is not None
    weight, bias = (module.optional_array("weight"), module.optional_array("bias")) if affine else (None, None)
    eps = float(module.number("eps", 1e-5))
    if cls == "nn.InstanceNormalization":
        return instance_norm(x, weight, bias, eps)
    if cls in ("nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization"):
        if mode == "evaluate":
            return batch_norm(x, weight, bias, eps, running_mean=module.array("running_mean"),
                              running_var=module.array("running_var"))
        channels = x.shape[1]
        if affine and channels > weight.size:  # cunn reads gamma[c], beta[c] on into the flat storage
            weight, bias = _flat(module, "weight", channels), bias if bias is None else _flat(module, "bias", channels)
        return batch_norm(x, None if weight is None else weight[:channels], None if bias is None else bias[:channels],
                          eps)
    if cls == "nn.SpatialAveragePooling":
        return average_pool(x, integer("kH"), integer("kW"), integer("dH"), integer("dW"))
    if cls == "nn.SpatialUpSamplingNearest":
        return upsample_nearest(x, integer("scale_factor"))
    if cls in ("nn.ReLU", "cudnn.ReLU"):
        return threshold(x, float(module.number("threshold", 0.0)), float(module.number("val", 0.0)))
    if cls == "nn.LeakyReLU":
        return leaky_relu(x, float(module.number("negval", 0.01)))
    if cls == "nn.GenNoise":
        spec = kinds[module.lua_path]
        drawn = _f64(noise[module.lua_path])
        return drawn if spec.kind == "planes" else gen_noise_fill(x, drawn, spec.first_channel)
    raise T7ModelError("no definition for this class", torch_class=cls, lua_path=module.lua_path)


def _flat(module: T7Module, name: str, count: int) -> np.ndarray:
    """``count`` values of the flat parameter storage from tensor ``name``'s offset (the v1 batch norms' reads)."""
    storage = module.storage(name)
    values = storage.flat[storage.offset:storage.offset + count]
    if values.size != count:
        raise T7ModelError(f"the flat storage holds {values.size} values from '{name}', {count} are read",
                           torch_class=module.torch_class, lua_path=module.lua_path)
    return values
