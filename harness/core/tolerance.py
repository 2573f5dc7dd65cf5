"""The tolerance model: how far a float32 (or float64) run may be from the float64 reference, per layer.

A tolerance is a claim about rounding error, so it is computed, not chosen. For each traced Lua
path the model bounds the absolute error by walking the module tree in execution order with the
float64 reference trace in hand (its scales and its normalisation statistics). Errors are tracked
**per channel** (plane ``c`` of an N x C x H x W value): each channel carries an absolute error
``e_c`` and the scale ``r_c`` of the signal it is an error of, so ``rho_c = e_c / r_c`` is its
relative error; the bound recorded at a path is the largest ``e_c`` there. Per channel because
the real v1-era nets have batch-norm channels a thousand times worse conditioned than their
neighbours (docs/real-models.md, "Float32 conditioning"): one scalar error multiplied by the worst
channel's gain would charge every channel for the worst one.

Notation: ``u`` the unit roundoff of the run dtype (2^-24, 2^-53); ``S_c`` = max |float64 output|
of channel c; ``C`` the measured rounding constant (below); every ``hypot`` combines independent
errors in quadrature.

* **Convolution / full convolution** (reduction length K = nIn*kH*kW, or nIn*ceil(kH/dH)*ceil(kW/dW)
  taps per output of a transposed one): ``e_o = hypot(rho_mix_o * A_o, C * u * sqrt(K) * A_o)``,
  ``A_o = max(S_o, TERMS_FLOOR * sqrt(sum_c (|w_oc|_2 max|x_c|)^2))`` (a plane whose sum cancels
  rounds, and carries its input's errors, like its terms: the v1 nets' last 1x1 convolution).
  The carried part keeps the relative error (``relative kept``: measured, a conv passes on the
  relative error of its input, median 0.8-0.94, docs/tolerances.md), mixed over the input planes in
  quadrature, each weighted by how much it feeds output o: ``rho_mix_o^2 = sum_c (a_oc rho_c)^2 /
  sum_c a_oc^2`` with ``a_oc = |w_oc|_2 * r_c``. ``sqrt(K)`` is the growth of a sequential float32
  sum (Torch7's order; the worst faithful order measured: TF's grows like K^0.55, BLAS like K^0.1-0.3).
  A **1x1 convolution** after a normalisation with statistics of its own input mixes planes whose
  errors hold per-plane offsets (the statistics' rounding), which add coherently: its carried part is
  taken against each input plane's own scale and multiplied by ``MIX_1X1_GROWTH`` (measured at
  128²-512² on the v1-era nets).
  A **narrow** convolution (at most ``NARROW_PLANES`` input planes) after such a normalisation carries at
  least ``sqrt(sum_c (|sum of the taps w_oc| * e_c)^2)``: no mix over many planes averages its input errors,
  which pass through a smooth error field times the kernel's sum (drawn generators of widths 1-3). A
  convolution whose output plane is smaller than its kernel (the padding repeats values inside a window, so one
  input error enters several taps) carries at least ``sqrt(sum_c (|w_oc|_1 * e_c)^2)``, the triangle bound.
  On mostly near-constant input planes (max |x_c| over the plane's range above ``G``: a flat picture)
  the terms are all alike and their roundings add up: ``K^POOL_EXPONENT`` instead of ``sqrt(K)``
  (measured: the demos nets on a nearly flat picture, where sqrt(K) was exceeded 1.47-1.87x).
* **Average pooling** (n = kH*kW terms summed in the element type, then divided, Torch7's
  order): ``hypot(rho_c S_c, C u n^0.75 S_c)``: the terms of an image are all positive and their
  partial sums' roundings do not cancel (measured up to 0.18 u n on the photo, 2.7 u sqrt(n)).
* **Instance norm, batch norm in train mode** (statistics of this very input, over H x W per
  (sample, channel) plane, resp. over N x H x W per channel): with the gain ``gain_c =
  |gamma_c| / sqrt(var_c + eps)`` (the v1 nets' aliased gammas of channels beyond the declared
  features read as the implementations read them, from ``T7Module.storage``) and the
  conditioning ``g_c = max|x_c| * gain_c / S_c``: on an ordinary channel (``g_c <= G_ORDINARY``)
  the error is renormalised with the values, ``rho_c * S_c * g_c^NORM_TRANSFER`` is carried on;
  an ill-conditioned one (``g_c > G``: a near-flat plane, a channel whose spread is a thousandth
  of its mean) passes its error on times its gain, ``rho_c * max|x_c| * gain_c``, and its excess
  ``g / G`` is reported as amplification. Own rounding: ``C u hypot(2 g_c S_c, S_c)`` (the
  normalisation rounds values up to ``|x - mean| gain <= 2 g_c S_c``, and the output), plus
  ``C u_stats sqrt(n) g_c S_c`` for the statistics, sums of n terms in an accumulator of unit
  roundoff ``u_stats``: double in Torch7 (THNN's accreal, also for FloatTensors), float32 for a
  backend whose ``instance_norm_statistics`` is "float32" (TF Lite); ``sqrt(sum_j n_j^2)`` over the
  multiplicities of equal values instead of ``sqrt(n)`` where that term can matter (a photo's repeated
  8-bit levels round alike: statistics_growth), at least ``n^0.75`` on an ill-conditioned plane, whose
  terms are all alike. The bound recorded at the norm
  itself charges the full ``g_c`` (its measured single-layer transfer); what is passed on is
  renormalised by the next convolution, except after an instance norm of mostly flat planes (a flat
  image: the error is then one perturbation of every plane, and later norms pass on ``g_c^1.5``), and
  likewise on a smooth picture (an upscaled one: ``input_roughness`` below ``SMOOTH_ROUGHNESS``).
  A train-mode batch norm over one value per channel (a 1x1 coarsest level of a batch of one)
  outputs beta exactly.
* **Batch norm in evaluate mode** (running statistics): a fixed affine map, ``e_c * gain_c`` carried (its
  exact transfer); its own rounding as above, no statistics term. The mode is read off the reference trace
  (whichever mode reproduces it), or given (``batchnorm=``).
* **ReLU / LeakyReLU**: the absolute error is kept, except that a plane which stays below
  ``-e_c`` is scaled by ``negval`` (ReLU: 0), its scale with it (its relative error is kept); the
  relative error a convolution after it sees of the other planes is taken against ``sqrt(r_c * S_c)``,
  between the scale before and after the activation (ACTIVATION_BLEND: measured on convolutions). A
  normalisation takes every plane's error against the plane's own scale (``max |x_c|``): it maps the
  pixels of a plane by one affine map, so it passes the absolute error on times the gain (with the blended
  scale the v1-era nets' batch norms after a LeakyReLU exceeded their bounds at 512²-768²).
* **Copies** (padding of any kind, nearest upsampling, Identity, TVLoss, NoiseFill,
  nn.Concat of branches): keep each channel's error; **noise** (GenNoise) is injected, exact: the
  channels it replaces carry no error. A **residual block** (ConcatTable + CAddTable) adds the
  errors of its two terms in quadrature.

**The rounding ceiling.** The walk above is a bound for any faithful order; on nets whose errors it cannot
track tightly (the v1-era nets: coarse pyramid levels, ill-conditioned batch norms) it sits 10-2000x above
what float32 really does there. So a float32 run with Torch7's double statistics is also held to a measured
ceiling: ``ROUNDING_CEILING`` times the error of the judge's own float32 runs of the same input at that path
(``rounding_errors``; the larger of two summation orders, THNN's and one GEMM per kernel tap:
harness.core.runs.judge_float32_rounding; at least one rounding ``u * S``): a faithful port erred at most 4.78x
that at every path of 60 cases (docs/tolerances.md, "The rounding ceiling"). The budget is the smaller of the
two, so the ceiling only ever tightens it; a judge whose own float32 runs were wrong would make the ceiling
loose, never the check weaker than the walk's. It holds where it was measured: paths of ``CEILING_MIN_VALUES`` values
or more, on rough pictures (not smooth, not mostly near-constant planes, no flat-image error). Undetermined
paths, float64 runs, float32 statistics (TF Lite: no run of the judge sums like that) and the isolated view
keep the walk's bound.

``UNDETERMINED_RTOL``: when the bound reaches half the layer's scale the value is not determined
by its input in that dtype (head layout on a constant image: every IN sees a flat plane and float32
noise is amplified ~316x per IN); such a layer is checked for shape and finiteness only.

The constants come from scripts/measure_tolerances.py (output in docs/tolerances.md): fitted on
ordinary inputs of the johnson generators, validated on held-out cases (the real v1-era models at
other sizes and batches, float32 in Torch7's own summation order and in BLAS order, flat images,
drawn primitives), with the SAFETY margin stated there.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np

from harness.core.compare import Tolerance
from t7file import T7Module, trace_paths

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
# How a backend accumulates the normalisation statistics (its ``instance_norm_statistics``
# attribute): "float64" is Torch7's (THNN sums in accreal = double, also for FloatTensors) and the
# default for a backend that does not say; "float32" for one that cannot (TF Lite).
IN_STATISTICS = ("float64", "float32")
BATCHNORM_MODES = ("train", "evaluate")

# Measured by scripts/measure_tolerances.py (docs/tolerances.md). The worst ratio measured /
# model(C=1) over the fit cases (ordinary inputs of the johnson generators, narrow and full width,
# both layouts; reference, torch, tf in float32 and float64, both views) per statistics kind; SAFETY
# is the margin over it, sized on the held-out cases (v1-era models, Torch7's own float32 order,
# flat images, primitives), whose worst ratio with the fitted constants is in docs/tolerances.md.
SAFETY = 2.0
C_ROUNDING = 1.4 * SAFETY
C_FLOAT32_STATISTICS = 1.4 * SAFETY
# Largest normalisation conditioning g_c seen on ordinary inputs of the johnson generators; a plane
# above it is ill-conditioned (near-flat, or a spread far below its mean) and its gain is charged.
G_ORDINARY = 4.0
# Exponents measured on the same fit cases (docs/tolerances.md, "Composition").
NORM_TRANSFER = 0.3  # what an ordinary normalisation passes on: rho * g^0.3 (a single layer transfers ~g^0.76)
FLAT_TRANSFER = 1.5  # the same after an instance norm of mostly flat planes (measured: near-constant images)
ACTIVATION_BLEND = 0.5  # an activation's relative error is taken against r^(1-b) * S_out^b
TERMS_FLOOR = 0.5  # a convolution's scale A_o: max(S_o, 0.5 * sqrt(sum_c (|w_oc|_2 max|x_c|)^2))
POOL_EXPONENT = 0.75  # growth of a sequential sum of n same-sign terms (pooling an image; a plane's statistics)
# A 1x1 convolution mixes the channels of one pixel. After a normalisation with statistics of its own input (an
# instance norm, a train-mode batch norm) the errors hold per-plane offsets, and the mix adds them coherently: the
# quadrature mix (independent errors) underestimates what it carries. Measured on the v1-era nets' 1x1
# convolutions at 128²-512² (docs/tolerances.md, "At the sizes users run"): up to 1.29x (starry, final 1x1 conv,
# 512², Torch7's order); the carried part is multiplied by this and taken against each input plane's own scale.
# Nets with running statistics only (the demos and doodle nets) stay within the quadrature mix; the johnson
# generators have no 1x1 convolution.
MIX_1X1_GROWTH = 1.3
UNDETERMINED_RTOL = 0.5
# A convolution after a normalisation with at most this many input planes carries at least its input's errors
# times the sum of each kernel's taps (narrow layers: drawn generators of widths 1-3; the johnson and v1-era nets
# have 4 or more planes wherever statistics come before a convolution).
NARROW_PLANES = 3
# A smooth picture (an upscaled one) makes the rounding errors of neighbouring pixels alike: they stay one coherent
# perturbation of each plane, which the next convolution does not renormalise, so the normalisations pass it on
# like after a flat image (FLAT_TRANSFER). Roughness = mean |difference of neighbours| / mean |deviation from the
# plane's mean| (input_roughness). Measured on the johnson narrow pretrained net (docs/tolerances.md, "Smooth
# pictures"): with NORM_TRANSFER the faithful backends failed on pictures of roughness 0.017 (256² photo upscaled
# to 2048², up to 1.98x), 0.039 (64² to 512², 1.18x) and 0.044 (16² to 256², 1.80x), and held on 0.050-0.076
# (worst 0.82) and on every native-resolution photo (0.145-0.21) and random picture (1.33).
SMOOTH_ROUGHNESS = 0.06
# The ceiling on an accumulated float32 run with double statistics: this many times the judge's own float32 error at
# the path, the larger of its two summation orders (harness.core.runs.JUDGE_ORDERS). Measured (scripts/
# measure_tolerances.py --sections ceiling; docs/tolerances.md, "The rounding ceiling"): over the 60 cases of the
# sizes sweep at 128²-512² (the eleven real models and the four johnson fit generators, photo and random; paths of
# 256 values or more), |runner - float64| / that per path was at most 4.78 for torch, tf, onnx and Torch7's own
# order (largest: torch and tf, doodle 256² random, path 2.2.7.1.2.7.2.2); SAFETY times that. Against the first
# order alone the largest was 6.05 (torch, pixelcity 128², a coarse level where that order rounded well): one
# sample of a faithful order's rounding is a noisy scale, two are steadier. Held out: 768² (up to 2.45) and the
# Torch7 oracle's own float32 runs (up to 3.40).
ROUNDING_CEILING = SAFETY * 4.78
# ... on a path of at least this many values: the largest of a few roundings is a poor sample (the judge's few
# values may all round well). The sweep's paths held 48 values and up (ratios up to 2.9 below 1024 values); drawn
# generators of a few pixels (parity_tests/test_network_properties.py) reached 17.5x on a 6-value path.
CEILING_MIN_VALUES = 256

COPY_CLASSES = frozenset({"nn.SpatialReplicationPadding", "nn.ReLU", "cudnn.ReLU", "nn.Identity", "nn.TVLoss",
                          "nn.SpatialCircularPadding", "nn.SpatialUpSamplingNearest", "nn.NoiseFill"})
ACTIVATION_CLASSES = frozenset({"nn.ReLU", "cudnn.ReLU", "nn.LeakyReLU"})
CONV_CLASSES = frozenset({"nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution"})
FULL_CONV_CLASSES = frozenset({"nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution"})
IN_CLASS = "nn.InstanceNormalization"
BN_CLASSES = frozenset({"nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization"})
POOL_CLASSES = frozenset({"nn.SpatialAveragePooling", "cudnn.SpatialAveragePooling"})
LEAKY_RELU = "nn.LeakyReLU"
GEN_NOISE = "nn.GenNoise"
CONCAT_CLASSES = ("nn.Concat", "nn.DepthConcat")


@dataclass(frozen=True)
class LayerBudget:
    """The allowed error at one Lua path, and the quantities it was computed from.

    Fields:
      lua_path / torch_class: the module
      dtype / view: run dtype; "accumulated" (end-to-end run) or "isolated" (fed the reference's input)
      statistics: how the backend sums normalisation statistics ("float64" Torch7's, or "float32")
      c_rounding: the C the bound was computed with
      scale: max |float64 reference output| at this path
      reduction: K of a (full) convolution, n of a normalisation's statistics (H*W of an instance
        norm, N*H*W of a train-mode batch norm, 0 in evaluate mode), kH*kW of a pooling, else 0
      conditioning: g = max_c g_c of a normalisation, else None
      amplification: product of the excess amplifications of ill-conditioned normalisations up to here
        (1 on ordinary inputs of the johnson generators)
      error_bound: E, the absolute error allowed
      rtol: E / scale, the relative tolerance handed to harness.core.compare
      determined: False when rtol >= UNDETERMINED_RTOL (only shape and finiteness are checked)
      ceiling: the rounding ceiling when it set error_bound (ROUNDING_CEILING x the judge's own float32 error
        here), else None: error_bound is then the walk's
    """

    lua_path: str
    torch_class: str
    dtype: str
    view: str
    statistics: str
    c_rounding: float
    scale: float
    reduction: int
    conditioning: float | None
    amplification: float
    error_bound: float
    rtol: float
    determined: bool
    ceiling: float | None = None

    def tolerance(self) -> Tolerance:
        atol = self.error_bound if self.scale == 0 else 0.0
        conditioning = "" if self.conditioning is None else f", conditioning g={self.conditioning:.3g}"
        why = (f"tolerance model ({self.view}, {self.dtype}, normalisation statistics in {self.statistics}): "
               f"E={self.error_bound:.3g} = C*u*... with C={self.c_rounding:.3g}, K={self.reduction}{conditioning}, "
               f"amplification {self.amplification:.3g} "
               "(harness/core/tolerance.py, measured in docs/tolerances.md)")
        if self.ceiling is not None:
            why += (f"; capped by the rounding ceiling: E={self.ceiling:.3g} = {ROUNDING_CEILING:.3g} x the judge's "
                    "own float32 error at this path (the larger of its two summation orders)")
        if not self.determined:
            why += f"; ill-conditioned: rtol >= {UNDETERMINED_RTOL}, value not determined in {self.dtype}"
        return Tolerance(rtol=self.rtol, atol=atol, why=why)


# -- the tree as data flow -------------------------------------------------------------------------------------


def module_inputs(root: T7Module, x: np.ndarray, trace: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The input of every module (by Lua path), reconstructed from a trace of the same run.

    Needed for the isolated view (feed each layer the judge's own input) and for the conditioning.
    Untraced values are rebuilt from their definitions: Identity repeats, ConcatTable lists its
    members' outputs, a branch Sequential outputs its last child's, CAddTable sums; nn.Concat gives
    every branch its own input (its output is traced).
    """
    inputs: dict[str, np.ndarray] = {}
    _flow(root, x, trace, inputs)
    return inputs


def _flow(module: T7Module, x, trace: dict[str, np.ndarray], inputs: dict):
    inputs[module.lua_path] = x
    if module.torch_class == "nn.Sequential":
        value = x
        for child in module.children:
            value = _flow(child, value, trace, inputs)
    elif module.torch_class == "nn.ConcatTable":
        value = [_flow(child, x, trace, inputs) for child in module.children]
    elif module.torch_class in CONCAT_CLASSES:
        for child in module.children:
            _flow(child, x, trace, inputs)
        value = None
    elif module.torch_class == "nn.CAddTable":
        value = sum(x[1:], start=x[0])
    elif module.torch_class == "nn.Identity":
        value = x
    else:
        value = None
    # A traced module's recorded output wins (it is what the next module really received).
    return trace.get(module.lua_path, value) if module.lua_path else value


# -- normalisations ----------------------------------------------------------------------------------------------


def in_gain(module: T7Module, x: np.ndarray) -> float:
    """max over planes of |w_c| / sqrt(var_plane + eps): how much an absolute input error moves the output."""
    return float(np.max(_in_gains(module, np.asarray(x, dtype=np.float64)), initial=0.0))


def _in_gains(module: T7Module, x: np.ndarray) -> np.ndarray:
    """Per channel: the largest gain over the samples' planes."""
    var = x.reshape(x.shape[0], x.shape[1], -1).var(axis=2)
    eps = float(module.number("eps", 1e-5))
    weight = module.optional_array("weight") if module.flag("affine", True) else None
    w = np.ones(x.shape[1]) if weight is None else np.abs(np.asarray(weight, dtype=np.float64).reshape(-1))
    return np.max(w[None, :] / np.sqrt(var + eps), axis=0)


def in_conditioning(module: T7Module, x: np.ndarray, y: np.ndarray) -> float:
    """g of an instance norm from its float64 input and output: max over channels of max|x_c| gain_c / max|y_c|."""
    x = np.asarray(x, dtype=np.float64)
    return _conditioning(_channel_scales(x) * _in_gains(module, x), _channel_scales(y))


def _conditioning(spread: np.ndarray, scale_out: np.ndarray) -> float:
    return float(np.max(_per_channel_conditioning(spread, scale_out), initial=1.0))


def _per_channel_conditioning(spread: np.ndarray, scale_out: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale_out > 0, spread / scale_out, np.where(spread > 0, np.inf, 1.0))


def batch_norm_affine(module: T7Module, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(gamma, beta) per channel as the implementations read them (docs/real-models.md, "The aliasing trap").

    An input with more channels than the module's features reads gamma[c] and beta[c] past the
    declared ones from the file's flat parameter storage (``T7Module.storage``); without affine
    parameters gamma is 1 and beta 0.
    """
    weight, bias = module.optional_array("weight"), module.optional_array("bias")
    gamma = np.ones(channels) if weight is None else _storage_read(module, "weight", weight, channels)
    beta = np.zeros(channels) if bias is None else _storage_read(module, "bias", bias, channels)
    return gamma, beta


def _storage_read(module: T7Module, name: str, own: np.ndarray, channels: int) -> np.ndarray:
    own = np.asarray(own, dtype=np.float64).reshape(-1)
    if channels <= own.size:
        return own[:channels]
    try:
        storage = module.storage(name)
        values = np.asarray(storage.flat, dtype=np.float64).reshape(-1)[storage.offset:storage.offset + channels]
    except Exception:  # no storage in the file: the backends refuse such a model; bound with the largest value
        values = own
    if values.size < channels:
        values = np.concatenate([values, np.full(channels - values.size, np.max(np.abs(own), initial=0.0))])
    return values


def batch_norm_mode(module: T7Module, x: np.ndarray, y: np.ndarray) -> str:
    """Which mode turned the float64 ``x`` into ``y``: "train" (batch statistics) or "evaluate" (running ones)."""
    running_mean, running_var = module.optional_array("running_mean"), module.optional_array("running_var")
    x = np.asarray(x, dtype=np.float64)
    if running_mean is None or running_var is None or running_var.size != x.shape[1]:
        return "train"
    gamma, beta = batch_norm_affine(module, x.shape[1])
    eps = float(module.number("eps", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    misses = []
    running = (np.asarray(running_mean, np.float64).reshape(-1), np.asarray(running_var, np.float64).reshape(-1))
    for mean, var in (_channel_statistics(x), running):
        predicted = (x - mean.reshape(shape)) / np.sqrt(var + eps).reshape(shape) * gamma.reshape(shape) \
            + beta.reshape(shape)
        misses.append(float(np.max(np.abs(predicted - y))))
    return "train" if misses[0] <= misses[1] else "evaluate"


def _channel_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    per_channel = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    return per_channel.mean(axis=1), per_channel.var(axis=1)


@dataclass(frozen=True)
class _Normalisation:
    """What the rounding model needs of a normalisation run on its float64 input, per channel."""

    gain: np.ndarray  # |gamma_c| / sqrt(var_c + eps) (largest over the samples' planes for an instance norm)
    spread: np.ndarray  # max|x_c| * gain_c (evaluate: max(|x_c|, |x_c - running_mean_c|) * gain_c)
    count: int  # terms of each statistics sum (0: running statistics)
    renormalises: bool  # statistics of this very input (instance norm, batch norm in train mode)
    exact: bool  # one term per statistic: x - mean is exactly 0, the output is beta


def _normalisation(module: T7Module, x: np.ndarray, y: np.ndarray, batchnorm: str | None) -> _Normalisation:
    x = np.asarray(x, dtype=np.float64)
    channels = x.shape[1]
    s_in = _channel_scales(x)
    eps = float(module.number("eps", 1e-5))
    if module.torch_class == IN_CLASS:
        gain = _in_gains(module, x)
        return _Normalisation(gain, s_in * gain, int(np.prod(x.shape[2:])), True, False)
    mode = batchnorm or batch_norm_mode(module, x, y)
    gamma, _ = batch_norm_affine(module, channels)
    per_channel = np.moveaxis(x, 1, 0).reshape(channels, -1)
    if mode == "evaluate":
        centre = np.asarray(module.array("running_mean"), dtype=np.float64).reshape(-1)[:channels]
        var = np.asarray(module.array("running_var"), dtype=np.float64).reshape(-1)[:channels]
        gain = np.abs(gamma) / np.sqrt(var + eps)
        reach = np.maximum(s_in, np.max(np.abs(per_channel - centre[:, None]), axis=1, initial=0.0))
        return _Normalisation(gain, reach * gain, 0, False, False)
    gain = np.abs(gamma) / np.sqrt(per_channel.var(axis=1) + eps)
    count = per_channel.shape[1]
    return _Normalisation(gain, s_in * gain, count, True, count == 1)


def reduction_length(module: T7Module) -> int:
    """Products summed per output element (the K of the rounding model)."""
    kH, kW = module.integer("kH"), module.integer("kW")
    n_in = module.integer("nInputPlane")
    if module.torch_class in FULL_CONV_CLASSES:
        dH, dW = module.integer("dH", 1), module.integer("dW", 1)
        return n_in * math.ceil(kH / dH) * math.ceil(kW / dW)
    return n_in * kH * kW


_TAP_NORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TAP_SUMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TAP_L1: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tap_norms(module: T7Module) -> np.ndarray:
    """nOut x nIn: the l2 norm of the weights by which input plane c enters one element of output plane o."""
    return _per_tap_group(module, _TAP_NORMS, lambda taps: np.sqrt((taps ** 2).sum(axis=2)))


def tap_sums(module: T7Module) -> np.ndarray:
    """nOut x nIn: |sum of the weights| by which input plane c enters one element of output plane o (what a constant
    offset of plane c becomes)."""
    return _per_tap_group(module, _TAP_SUMS, lambda taps: np.abs(taps.sum(axis=2)))


def tap_l1_norms(module: T7Module) -> np.ndarray:
    """nOut x nIn: the l1 norm of the weights by which input plane c enters one element of output plane o."""
    return _per_tap_group(module, _TAP_L1, lambda taps: np.abs(taps).sum(axis=2))


def _per_tap_group(module: T7Module, memo: weakref.WeakKeyDictionary, reduce) -> np.ndarray:
    """``reduce`` (nOut x nIn x taps -> nOut x nIn) of the taps that reach one output element: the whole kernel of
    a convolution; for a transposed one, each stride phase of the kernel, the largest value over the phases."""
    found = memo.get(module)
    if found is not None:
        return found
    w = np.asarray(module.array("weight"), dtype=np.float64)
    n_in, k_h, k_w = module.integer("nInputPlane"), module.integer("kH"), module.integer("kW")
    if module.torch_class in FULL_CONV_CLASSES:
        w = w.reshape(n_in, module.integer("nOutputPlane"), k_h, k_w).transpose(1, 0, 2, 3)
        d_h, d_w = module.integer("dH", 1), module.integer("dW", 1)
        value = np.max([reduce(w[:, :, a::d_h, b::d_w].reshape(w.shape[0], n_in, -1))
                        for a in range(d_h) for b in range(d_w)], axis=0)
    else:
        value = reduce(w.reshape(-1, n_in, k_h * k_w))
    memo[module] = value
    return value


# -- scales --------------------------------------------------------------------------------------------------------


_SCALES: dict[int, tuple[weakref.ref, object]] = {}


def statistics_growth(module: T7Module, x: np.ndarray, dtype: str, u_stats: float, count: int, u: float
                      ) -> np.ndarray:
    """Per channel of a normalisation's input ``x``: how the rounding of its statistics' sums grows, in units of
    ``u_stats`` times the sum. Random roundings grow like sqrt(count), but a float32 sum of many terms strays
    further: terms that are equal round alike when added to the same partial sum (a photo's 8-bit levels: a
    plane grows like sqrt(sum_j n_j^2) over the multiplicities n_j of its distinct values), and so do runs of
    similar neighbours (a smooth feature map). So the growth is also measured: the sequential sums, in the
    accumulator's precision, of the plane's own values and of their squared deviations, against the exact
    sums. The largest of the three (and sqrt(count)) is the growth (measured need: TF Lite's float32
    statistics at 256²-512², docs/tolerances.md "At the sizes users run").

    Computed only where it can matter: when u_stats * count is below a thousandth of ``u`` (double statistics
    of any image up to ~500k pixels per plane) the term is under a thousandth of the normalisation's own
    rounding whatever the growth, and sqrt(count) is returned."""
    channels = x.shape[1]
    if count <= 1 or u_stats * count < 1e-3 * u:
        return np.full(channels, math.sqrt(max(count, 1)))
    per_sample = module.torch_class == IN_CLASS  # an instance norm sums per (sample, channel), a batch norm per channel
    accumulator = "float32" if u_stats == UNIT_ROUNDOFF["float32"] else "float64"
    return _memo(x, f"sum-growth-{dtype}-{accumulator}-{per_sample}",
                 lambda a: np.maximum(math.sqrt(count), _sum_growth(a, dtype, accumulator, per_sample)))


def _planes(x: np.ndarray, dtype: str, per_sample: bool):
    """(sample, channel) planes as rows of the run dtype's values: per sample for an instance norm, the whole
    batch per channel for a batch norm (N, H, W in row-major order)."""
    values = np.asarray(x).astype(dtype, copy=False)
    n, c = values.shape[:2]
    return values.reshape(n, c, -1) if per_sample else np.moveaxis(values, 1, 0).reshape(1, c, -1)


def _sum_growth(x: np.ndarray, dtype: str, accumulator: str, per_sample: bool) -> np.ndarray:
    """Per channel, the largest over the samples of: sqrt(sum_j n_j^2) over the multiplicities of equal values,
    and the measured error of a sequential ``accumulator`` sum of the values (in units of u * sum |x|) and of
    their squared deviations from the mean (in units of u * that sum)."""
    rows = _planes(x, dtype, per_sample)
    unit = UNIT_ROUNDOFF[accumulator]

    def plane(row: np.ndarray) -> float:
        ordered = np.sort(row)
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        lengths = np.diff(np.append(starts, ordered.size)).astype(np.float64)
        exact = row.astype(np.float64)
        deviations = (exact - exact.mean()) ** 2
        measured = [math.sqrt(float(np.sum(lengths ** 2)))]
        for terms, total in ((exact, float(np.abs(exact).sum())), (deviations, float(deviations.sum()))):
            if total > 0:
                sequential = float(np.cumsum(terms.astype(accumulator), dtype=accumulator)[-1])
                measured.append(abs(sequential - float(terms.sum())) / (unit * total))
        return max(measured)

    # One plane per task: NumPy's sorts and sums release the GIL, and each plane's value depends on it alone.
    planes = [row for sample in rows for row in sample]
    if len(planes) > 1 and rows.shape[2] >= _THREADED_PLANE:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(planes), _cpus())) as pool:
            found = list(pool.map(plane, planes))
    else:
        found = [plane(row) for row in planes]
    return np.asarray(found, dtype=np.float64).reshape(rows.shape[:2]).max(axis=0)


_THREADED_PLANE = 1 << 16  # values per plane from which _sum_growth spreads its planes over threads


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _mostly_near_constant(x: np.ndarray, g_ordinary: float) -> bool:
    """Whether most planes of ``x`` are near-constant: max |x_c| over the plane's range (max - min) above
    ``g_ordinary``, the conditioning a normalisation of that plane would have (a flat picture's planes, and what
    running-statistics batch norms and convolutions make of them)."""
    def compute(a) -> bool:
        values = np.asarray(a)
        axes = (0, 2, 3) if values.ndim == 4 else tuple(i for i in range(values.ndim) if i != 1)
        extent = values.max(axis=axes) - values.min(axis=axes)
        peak = np.abs(values).max(axis=axes)
        with np.errstate(divide="ignore", invalid="ignore"):
            near = np.where(extent > 0, peak / extent, np.where(peak > 0, np.inf, 0.0)) > g_ordinary
        return bool(np.mean(near) > 0.5)

    return _memo(x, f"near-constant-{g_ordinary}", compute)


def _memo(array, kind: str, compute):
    """A value computed from ``array``, memoised per array object: the walkers ask for the same arrays many times."""
    key = (id(array), kind)
    cached = _SCALES.get(key)
    if cached is not None and cached[0]() is array:
        return cached[1]
    value = compute(array)
    with contextlib.suppress(TypeError):  # not weak-referenceable (a scalar, a list): just not memoised
        _SCALES[key] = (weakref.ref(array, lambda _ref, key=key: _SCALES.pop(key, None)), value)
    return value


def _scale(array) -> float:
    """max |array|."""
    return _memo(array, "max", lambda a: float(max(np.max(a), -np.min(a))) if np.size(a) else 0.0)


def _channel_scales(array) -> np.ndarray:
    """max |array| per channel (axis 1) of an N x C x ... array; one value for anything flatter."""
    def compute(a):
        a = np.asarray(a)
        if a.ndim < 2 or a.size == 0:
            return np.array([_scale(a)])
        axes = tuple(i for i in range(a.ndim) if i != 1)
        return np.maximum(np.max(a, axis=axes), -np.min(a, axis=axes)).astype(np.float64)
    return _memo(array, "channels", compute)


def _channel_maxima(array) -> np.ndarray:
    """max (signed) per channel."""
    a = np.asarray(array)
    return np.max(a, axis=tuple(i for i in range(a.ndim) if i != 1)).astype(np.float64)


# -- the walk ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Error:
    """What a value carries, per channel: the absolute error ``channel`` that the next arithmetic layer
    propagates, relative to ``reference`` (the scale of the signal it is an error of); ``recorded``, the
    bound reported at this path (at least max(channel)); ``amplification``, the product of the excess
    amplifications of ill-conditioned normalisations so far."""

    channel: np.ndarray
    reference: np.ndarray
    recorded: float
    amplification: float = 1.0
    flat: bool = False  # most planes of an instance norm upstream were ill-conditioned (a flat image)

    @property
    def relative(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.reference > 0, self.channel / self.reference, 0.0)

    @staticmethod
    def of(channel: np.ndarray, reference: np.ndarray, amplification: float = 1.0,
           recorded: float | None = None, flat: bool = False) -> _Error:
        channel = np.asarray(channel, dtype=np.float64)
        top = float(np.max(channel, initial=0.0))
        return _Error(channel, np.asarray(reference, dtype=np.float64), top if recorded is None else max(recorded, top),
                      amplification, flat)


class _Walker:
    """Carries each channel's error through the tree in execution order and records the budgets."""

    def __init__(self, root: T7Module, trace: dict[str, np.ndarray], inputs: dict[str, np.ndarray], dtype: str,
                 view: str, c_rounding: float, g_ordinary: float, statistics: str, batchnorm: str | None,
                 smooth: bool = False, measure_growth: bool = True):
        self.trace, self.inputs, self.dtype, self.view = trace, inputs, dtype, view
        self.smooth = smooth  # the model's input is a smooth picture (SMOOTH_ROUGHNESS)
        self.measure_growth = measure_growth  # False: the statistics' worst-case growth, the count (layer_budgets)
        self.statistics, self.batchnorm = statistics, batchnorm
        self.u = UNIT_ROUNDOFF[dtype]
        self.c, self.g_ordinary = c_rounding, g_ordinary
        self.budgets: dict[str, LayerBudget] = {}
        self.flat_paths: set[str] = set()  # recorded with the error of a flat image (after an IN of flat planes)
        self.traced = set(trace)
        self.noise = _noise_kept_channels(root)
        self.normalisations: dict[str, _Normalisation] = {}  # by Lua path, each read once (a BN's mode off the trace)
        self.after_statistics = self._after_statistics(root)

    def normalisation(self, module: T7Module) -> _Normalisation:
        path = module.lua_path
        if path not in self.normalisations:
            self.normalisations[path] = _normalisation(module, self.inputs[path], self.trace[path], self.batchnorm)
        return self.normalisations[path]

    def _after_statistics(self, root: T7Module) -> frozenset[str]:
        """Lua paths that run after a normalisation with statistics of its own input (an instance norm, a batch
        norm in train mode), in execution order: from there on the carried errors hold per-plane offsets (the
        statistics' rounding shifts a whole plane), which add coherently where a 1x1 convolution mixes planes."""
        after, seen = set(), False
        for module in root.walk():
            if seen:
                after.add(module.lua_path)
            if module.torch_class == IN_CLASS:
                seen = True
            elif module.torch_class in BN_CLASSES and module.lua_path in self.inputs and module.lua_path in self.trace:
                seen = seen or self.normalisation(module).renormalises
        return frozenset(after)

    def local(self, module: T7Module, carried: _Error) -> tuple[_Error, int, float | None]:
        """One module run on an input carrying ``carried``: (its output's error, K or n, conditioning)."""
        cls = module.torch_class
        x, y = self.inputs[module.lua_path], self.trace[module.lua_path]
        s_out = _channel_scales(y)
        own = self.c * self.u
        amplification = carried.amplification
        if cls in CONV_CLASSES or cls in FULL_CONV_CLASSES:
            k = reduction_length(module)
            # A plane whose sum cancels rounds, and carries its input's errors, like its terms: its scale is
            # taken as at least TERMS_FLOOR of their incoherent sum.
            terms = np.sqrt(((tap_norms(module) * _channel_scales(x)[None, :]) ** 2).sum(axis=1))
            scale = np.maximum(s_out, TERMS_FLOOR * terms)
            coherent = (cls in CONV_CLASSES and module.integer("kH") * module.integer("kW") == 1
                        and module.lua_path in self.after_statistics)
            mixed = self._mixed(module, x, carried, own_scale=coherent)
            growth = MIX_1X1_GROWTH if coherent else 1.0
            # Near-constant input planes give terms that are all alike: their roundings add up like a pooling
            # window's (k^POOL_EXPONENT), not like random ones (sqrt(k)).
            summed = k ** POOL_EXPONENT if _mostly_near_constant(x, self.g_ordinary) else math.sqrt(k)
            carried_part = growth * mixed * scale
            # Two floors on the carried part, each the input errors through a norm of the taps other than l2:
            # * a narrow layer (no mix over many planes averages its carried error, which is then as coherent over
            #   a kernel's taps as the planes are smooth): the taps' sum. Measured: drawn generators with 1-3
            #   planes failed the l2 rule by up to 2.8x (docs/tolerances.md, "Narrow layers");
            # * a plane smaller than the kernel (its padding repeats values inside one window, so one input error
            #   enters several taps of an output at once): the triangle bound, the taps' l1 norm. Measured: a
            #   width-1 pyramid's 1x3 coarsest level under a 3x3 kernel and circular padding, tf 1.28x.
            floors = []
            if tap_norms(module).shape[1] <= NARROW_PLANES and module.lua_path in self.after_statistics:
                floors.append(tap_sums(module))
            if cls in CONV_CLASSES and (y.shape[-2] < module.integer("kH") or y.shape[-1] < module.integer("kW")):
                floors.append(tap_l1_norms(module))
            for taps in floors:
                errors = self._same_planes_error(carried, taps.shape[1])
                carried_part = np.maximum(carried_part, np.sqrt(((taps * errors[None, :]) ** 2).sum(axis=1)))
            if k == 1:
                # One product per output (a 1x1 kernel on one plane): nothing averages its roundings, so they add to
                # what it carries, and the product rounds at its own magnitude, which the bias can cancel down to
                # half the output's. Measured: a drawn width-1 pyramid's 1x1 1 -> 1 convolution (y = 0.285 x - 0.616,
                # |x| <= 4.3, 6x6) erred 1.06x the quadrature bound in the isolated view, the reference's own
                # float32 run and every backend alike (docs/tolerances.md, "One product per output").
                channel = carried_part + own * np.maximum(scale, terms)
            else:
                channel = np.hypot(carried_part, own * summed * scale)
            return _Error.of(channel, s_out, amplification, flat=carried.flat), k, None
        if cls in POOL_CLASSES:
            n = module.integer("kH") * module.integer("kW")
            rel = self._same_planes(carried, s_out.size)
            channel = np.hypot(rel * s_out, own * n ** POOL_EXPONENT * s_out)
            return _Error.of(channel, s_out, amplification, flat=carried.flat), n, None
        if cls == IN_CLASS or cls in BN_CLASSES:
            return self._normalised(module, x, y, carried)
        if cls in ACTIVATION_CLASSES:
            return self._activated(module, x, s_out, carried), 0, None
        if cls in COPY_CLASSES:
            if carried.channel.size != s_out.size:  # a copy that changes the planes (not in these models)
                return _Error.of(np.full(s_out.size, carried.recorded), s_out, amplification), 0, None
            return carried, 0, None
        if cls == GEN_NOISE:
            channel = np.zeros(s_out.size)
            kept = self.noise.get(module.lua_path, slice(0, 0))
            if carried.channel.size == s_out.size:
                channel[kept] = carried.channel[kept]
            return _Error.of(channel, s_out, amplification), 0, None
        # Anything else (a plug-in's class): the largest error carried on, plus one rounding of the output.
        channel = np.hypot(float(np.max(carried.channel, initial=0.0)), own * s_out)
        return _Error.of(channel, s_out, amplification), 0, None

    def _mixed(self, module: T7Module, x: np.ndarray, carried: _Error, own_scale: bool = False) -> np.ndarray:
        """Per output plane: the input planes' relative errors in quadrature, weighted by what each feeds it.

        ``own_scale``: each plane's relative error against its own scale (max |x_c|), not the scale its error
        was carried against (which an activation blends with the scale before it)."""
        norms = tap_norms(module)
        rel = carried.relative
        reference = carried.reference if carried.reference.size == norms.shape[1] else _channel_scales(x)
        if own_scale and carried.channel.size == norms.shape[1]:
            reference = _channel_scales(x)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(reference > 0, carried.channel / reference, 0.0)
        if rel.size != norms.shape[1]:
            rel = np.full(norms.shape[1], float(np.max(rel, initial=0.0)))
        shares = norms * reference[None, :]
        total = np.sqrt((shares ** 2).sum(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, np.sqrt(((shares * rel[None, :]) ** 2).sum(axis=1)) / total, 0.0)

    @staticmethod
    def _same_planes_error(carried: _Error, planes: int) -> np.ndarray:
        """Each input plane's absolute error (the largest of them for each plane, when the planes do not match)."""
        channel = carried.channel
        return channel if channel.size == planes else np.full(planes, float(np.max(channel, initial=0.0)))

    @staticmethod
    def _same_planes(carried: _Error, planes: int) -> np.ndarray:
        rel = carried.relative
        return rel if rel.size == planes else np.full(planes, float(np.max(rel, initial=0.0)))

    def _normalised(self, module: T7Module, x: np.ndarray, y: np.ndarray, carried: _Error
                    ) -> tuple[_Error, int, float | None]:
        s_out = _channel_scales(y)
        own = self.c * self.u
        norm = self.normalisation(module)
        spread = norm.spread
        g_c = _per_channel_conditioning(spread, s_out)
        g = float(np.max(g_c, initial=1.0))
        if norm.exact:
            return _Error.of(own * s_out, s_out, carried.amplification), norm.count, g
        rel = self._same_planes(carried, spread.size)
        rounding = own * np.hypot(2.0 * spread, s_out)
        if norm.renormalises:
            if carried.channel.size == spread.size:
                # A normalisation maps each pixel of a plane by the same affine map: it passes on the absolute error
                # times the gain, i.e. the relative error against the plane's own scale. An activation hands the
                # next layer its error against a blended scale (ACTIVATION_BLEND, measured on convolutions, which
                # mix planes); taken here, that blend understated the transfer (up to 1.72x per channel at 768²,
                # docs/tolerances.md "Larger sizes").
                s_in = _channel_scales(x)
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.maximum(rel, np.where(s_in > 0, carried.channel / s_in, 0.0))
            ill = g_c > self.g_ordinary
            with np.errstate(invalid="ignore"):
                lifted = np.maximum(np.where(np.isfinite(g_c), g_c, 1.0), 1.0)
                transfer = FLAT_TRANSFER if carried.flat or self.smooth else NORM_TRANSFER
                passed = np.where(ill, rel * spread, rel * s_out * lifted ** transfer)
                here = np.where(ill, passed, rel * s_out * lifted)
            # The statistics' sums: random roundings grow like sqrt(n); terms that are equal in the run dtype
            # round alike (statistics_growth); on a near-flat plane the terms are all alike and their roundings
            # add up (like an image's in a pooling window): at least n^POOL_EXPONENT.
            u_stats = UNIT_ROUNDOFF[self.statistics]
            # A sequential sum of n terms errs by at most (n - 1) u_stats sum|x| (to first order): the count bounds
            # every measured growth, the sqrt(sum n_j^2) of equal values included.
            growth = (statistics_growth(module, x, self.dtype, u_stats, norm.count, self.u) if self.measure_growth
                      else np.full(spread.size, float(max(norm.count, 1))))
            growth = np.where(ill, np.maximum(growth, float(norm.count) ** POOL_EXPONENT), growth)
            stats = own / self.u * u_stats * growth * spread
            excess = max(1.0, g / self.g_ordinary)
        else:  # running statistics: a fixed affine map, which multiplies every pixel's error by the gain
            passed = here = carried.channel * norm.gain if carried.channel.size == spread.size else rel * spread
            stats = np.zeros_like(spread)
            excess = 1.0
        channel = np.sqrt(passed ** 2 + rounding ** 2 + stats ** 2)
        recorded = float(np.max(np.sqrt(here ** 2 + rounding ** 2 + stats ** 2), initial=0.0))
        # An instance norm with mostly flat planes (a flat image): from here on the error is one amplified
        # perturbation of every plane, which the later normalisations pass on in full (measured).
        flat = carried.flat or (module.torch_class == IN_CLASS and bool(np.mean(g_c > self.g_ordinary) > 0.5))
        return _Error.of(channel, s_out, carried.amplification * excess, recorded, flat), norm.count, g

    def _activated(self, module: T7Module, x: np.ndarray, s_out: np.ndarray, carried: _Error) -> _Error:
        negval = abs(float(module.number("negval", 0.01))) if module.torch_class == LEAKY_RELU else 0.0
        channel = carried.channel
        if channel.size != s_out.size:
            return _Error.of(np.full(s_out.size, carried.recorded), s_out, carried.amplification)
        # A plane that stays negative by more than its error is scaled by negval (ReLU: 0), error included.
        negative = _channel_maxima(x) < -channel
        channel = np.where(negative, negval * channel, channel)
        if negval:
            channel = np.hypot(channel, self.c * self.u * negval * _channel_scales(x))
        # Such a plane is scaled as a whole, so its relative error is kept: its reference scales with it. (Blended
        # like the others, it understated that error 1/sqrt(negval) = 10x, and a running-statistics batch norm of
        # gain ~100 after it exceeded its bound: the demos pollock net at 512², docs/tolerances.md.)
        reference = np.where(carried.reference > 0,
                             np.where(negative, negval * carried.reference,
                                      carried.reference ** (1 - ACTIVATION_BLEND) * s_out ** ACTIVATION_BLEND), s_out)
        return _Error(channel, reference, max(carried.recorded, float(np.max(channel, initial=0.0))),
                      carried.amplification, carried.flat)

    def record(self, module: T7Module, error: _Error, k: int, g: float | None) -> None:
        scale = _scale(self.trace[module.lua_path])
        rtol = error.recorded / scale if scale > 0 else 0.0
        self.budgets[module.lua_path] = LayerBudget(
            module.lua_path, module.torch_class, self.dtype, self.view, self.statistics, self.c, scale, k, g,
            error.amplification, error.recorded, rtol, rtol < UNDETERMINED_RTOL)
        if error.flat:
            self.flat_paths.add(module.lua_path)

    def accumulated(self, module: T7Module, error: _Error) -> _Error:
        """Walk ``module`` (any container) with the error carried by its input; returns its output's."""
        cls = module.torch_class
        if _is_residual_block(module):
            terms = [self.accumulated(member, error) for member in module.children[0].children]
            output = self.trace.get(module.lua_path)
            scales = _channel_scales(output) if output is not None else np.max([t.reference for t in terms], axis=0)
            error = _Error.of(np.sqrt(np.sum([t.channel ** 2 for t in terms], axis=0)), scales,
                              max(t.amplification for t in terms), math.hypot(*(t.recorded for t in terms)),
                              any(t.flat for t in terms))
        elif cls == "nn.Sequential":
            for child in module.children:
                error = self.accumulated(child, error)
        elif cls in CONCAT_CLASSES:
            # Branches side by side: their planes, and their errors, one after the other.
            terms = [self.accumulated(branch, error) for branch in module.children]
            error = _Error(np.concatenate([t.channel for t in terms]), np.concatenate([t.reference for t in terms]),
                           max(t.recorded for t in terms), max(t.amplification for t in terms),
                           any(t.flat for t in terms))
        elif cls == "nn.Identity":
            pass
        else:
            error, k, g = self.local(module, error)
            if module.lua_path in self.traced:
                self.record(module, error, k, g)
            return error
        if module.lua_path in self.traced:
            self.record(module, error, 0, None)
        return error

    def isolated(self, root: T7Module) -> None:
        """Each traced module fed the reference's own input, rounded to the run dtype."""
        for module in root.walk():
            if module.lua_path not in self.traced:
                continue
            s_in = _channel_scales(self.inputs[module.lua_path])
            error_in = _Error.of(self.u * s_in, s_in)
            if module.torch_class in ("nn.Sequential", *CONCAT_CLASSES):  # a container runs whole
                sub = _Walker.__new__(_Walker)
                sub.__dict__.update(self.__dict__)
                sub.budgets, sub.traced = {}, set()
                self.record(module, sub.accumulated(module, error_in), 0, None)
            else:
                error, k, g = self.local(module, error_in)
                self.record(module, error, k, g)


def _noise_kept_channels(root: T7Module) -> dict[str, slice]:
    """Lua path of each noise module -> the channels of its output that keep its input's values
    (texture_nets' GenNoise in a style net keeps channels 1-3; the other noise modules replace all)."""
    from contract.families import noise_modules

    try:
        found = noise_modules(root)
    except Exception:  # a model the families cannot read: no noise modules known, GenNoise keeps nothing
        return {}
    return {noise.lua_path: slice(0, noise.first_channel) if noise.kind == "fill" else slice(0, 0) for noise in found}


def _is_residual_block(module: T7Module) -> bool:
    return (module.torch_class == "nn.Sequential" and len(module.children) == 2
            and module.children[0].torch_class == "nn.ConcatTable" and module.children[1].torch_class == "nn.CAddTable")


def instance_norm_statistics(backend) -> str:
    """The backend's ``instance_norm_statistics`` ("float64", Torch7's, when it does not declare one)."""
    statistics = getattr(backend, "instance_norm_statistics", "float64")
    if statistics not in IN_STATISTICS:
        raise ValueError(f"backend {getattr(backend, 'name', backend)!r}: instance_norm_statistics must be one of "
                         f"{', '.join(IN_STATISTICS)}, not {statistics!r}")
    return statistics


def rounding_constant(statistics: str = "float64") -> float:
    """The measured C for a backend summing normalisation statistics in ``statistics``."""
    return C_FLOAT32_STATISTICS if statistics == "float32" else C_ROUNDING


def layer_budgets(root: T7Module, x: np.ndarray, reference_trace: dict[str, np.ndarray], dtype: str, *,
                  view: str = "accumulated", c_rounding: float | None = None,
                  g_ordinary: float | None = None, statistics: str = "float64",
                  batchnorm: str | None = None,
                  judge_rounding: Mapping[str, float] | None = None,
                  measure_growth: bool = True) -> dict[str, LayerBudget]:
    """The allowed error at every traced Lua path, from the float64 reference's trace of input ``x``.

    ``view="accumulated"``: the backend ran end to end on ``x`` (exactly representable in
    ``dtype``; injected noise likewise). ``view="isolated"``: each layer was fed the reference's
    own input for it. ``statistics``: how the backend sums normalisation statistics
    (:func:`instance_norm_statistics`); the default, Torch7's double sums, is the strict model.
    ``batchnorm``: the batch norms' mode ("train" or "evaluate"); None reads it off the trace.
    ``c_rounding`` / ``g_ordinary`` override the measured constants (the measurement script
    evaluates the model with C = 1). ``judge_rounding``: the judge's own float32 error at each path on this
    input (:func:`rounding_errors`); an accumulated float32 run with double statistics is then also held to
    the rounding ceiling (ROUNDING_CEILING times it), where that is tighter than the walk's bound.
    ``measure_growth=False``: the statistics' sums take their worst-case growth (the count) instead of the measured
    one (:func:`statistics_growth`, which sorts every plane): never smaller, so the budget can only grow. For a
    budget that is only ever added to one many times larger (a float64 baseline's own, beside float32 backends).
    """
    if view not in ("accumulated", "isolated"):
        raise ValueError(f"view must be 'accumulated' or 'isolated', not {view!r}")
    if statistics not in IN_STATISTICS:
        raise ValueError(f"statistics must be one of {', '.join(IN_STATISTICS)}, not {statistics!r}")
    if batchnorm is not None and batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)} or None, not {batchnorm!r}")
    trace = dict(reference_trace)
    inputs = module_inputs(root, np.asarray(x, dtype=np.float64), trace)
    walker = _Walker(root, trace, inputs, dtype, view,
                     rounding_constant(statistics) if c_rounding is None else c_rounding,
                     G_ORDINARY if g_ordinary is None else g_ordinary, statistics, batchnorm,
                     smooth=input_roughness(x) < SMOOTH_ROUGHNESS, measure_growth=measure_growth)
    if view == "accumulated":
        s_in = _channel_scales(inputs[root.lua_path])
        walker.accumulated(root, _Error.of(np.zeros(s_in.size), s_in))
    else:
        walker.isolated(root)
    budgets = {path: walker.budgets[path] for path in trace_paths(root)}
    if (judge_rounding is not None and ceiling_applies(dtype, view, statistics) and not walker.smooth
            and not _mostly_near_constant(inputs[root.lua_path], walker.g_ordinary)):
        # Where it was measured: rough pictures (photos, random), no flat-image error. On a flat or smooth picture
        # the judge's own rounding is no typical sample: equal neighbours round alike, or exactly, in its order.
        budgets = {path: budget if path in walker.flat_paths or np.size(trace[path]) < CEILING_MIN_VALUES
                   else _capped(budget, judge_rounding.get(path)) for path, budget in budgets.items()}
    return budgets


def ceiling_applies(dtype: str, view: str, statistics: str) -> bool:
    """Whether a run of this kind is held to the rounding ceiling: accumulated, float32, Torch7's double statistics
    (callers skip the judge's float32 run otherwise)."""
    return dtype == "float32" and view == "accumulated" and statistics == "float64"


def _capped(budget: LayerBudget, judge_error: float | None) -> LayerBudget:
    """``budget`` held to the rounding ceiling (at least one rounding of the path's scale), where it is tighter."""
    if judge_error is None or not math.isfinite(judge_error) or not budget.determined:
        return budget
    ceiling = ROUNDING_CEILING * max(judge_error, UNIT_ROUNDOFF[budget.dtype] * budget.scale)
    if ceiling <= 0 or ceiling >= budget.error_bound:
        return budget
    rtol = ceiling / budget.scale if budget.scale > 0 else 0.0
    return replace(budget, error_bound=ceiling, rtol=rtol, ceiling=ceiling)


def rounding_errors(reference_trace: Mapping[str, np.ndarray], float32_trace: Mapping[str, np.ndarray]
                    ) -> dict[str, float]:
    """max |float32 - float64| at each path traced by both: the judge's own float32 rounding on this input (what
    ``layer_budgets(judge_rounding=...)`` takes). inf where the shapes differ or the float32 value is not finite."""
    errors = {}
    for path, exact in reference_trace.items():
        if path in float32_trace:
            errors[path] = _max_abs_difference(np.asarray(float32_trace[path]), np.asarray(exact))
    return errors


_CHUNK = 1 << 16  # values per pass: the float64 differences stay in the L2 cache (a 512² trace: 177 M values)


def _max_abs_difference(rounded: np.ndarray, exact: np.ndarray) -> float:
    """max |rounded - exact| in float64, chunk by chunk (no full-size temporary); inf for a shape mismatch or a
    value that is not finite."""
    if rounded.shape != exact.shape:
        return math.inf
    rounded, exact = rounded.reshape(-1), exact.reshape(-1)
    scratch = np.empty(min(_CHUNK, rounded.size), dtype=np.float64)
    largest = 0.0
    for start in range(0, rounded.size, _CHUNK):
        part = scratch[:min(_CHUNK, rounded.size - start)]
        np.subtract(rounded[start:start + part.size], exact[start:start + part.size], out=part, dtype=np.float64)
        np.abs(part, out=part)
        value = float(part.max())
        if not math.isfinite(value):  # NaN (max propagates it) or inf
            return math.inf
        largest = max(largest, value)
    return largest


def input_roughness(x: np.ndarray) -> float:
    """How much neighbouring pixels of a picture differ, against how much its planes vary: the median over the
    (sample, plane) pairs of N x C x H x W ``x`` of mean |x[i+1, j] - x[i, j]| and |x[i, j+1] - x[i, j]| over mean
    |x - plane mean|. A native-resolution photo 0.15-0.2, a random picture ~1.3, a photo upscaled 8x ~0.02. inf
    for what has no such planes (constant planes, 1-pixel ones, not 4-D: nothing is smooth there)."""
    def compute(a) -> float:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 4 or a.shape[2] < 2 or a.shape[3] < 2:
            return math.inf
        steps = 0.5 * (np.abs(np.diff(a, axis=2)).mean(axis=(2, 3)) + np.abs(np.diff(a, axis=3)).mean(axis=(2, 3)))
        spread = np.abs(a - a.mean(axis=(2, 3), keepdims=True)).mean(axis=(2, 3))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(spread > 0, steps / spread, np.inf)
        return float(np.median(ratios))

    # drift asks once per dtype, view and note: memoised per array like the scales
    return _memo(x, "roughness", compute)


def output_budget(root: T7Module, budgets: dict[str, LayerBudget]) -> LayerBudget:
    """The budget of the generator's output: that of the last traced module of the root."""
    return budgets[_last_traced(root)]


def _last_traced(root: T7Module) -> str:
    paths = trace_paths(root)
    top_level = [child.lua_path for child in root.children if child.lua_path in set(paths)]
    return top_level[-1] if top_level else paths[-1]


def iter_conditioned(budgets: dict[str, LayerBudget]) -> Iterator[LayerBudget]:
    """The normalisations whose conditioning exceeds the ordinary range (what a report should explain)."""
    for budget in budgets.values():
        if budget.conditioning is not None and budget.conditioning > G_ORDINARY:
            yield budget
