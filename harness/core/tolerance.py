"""The tolerance model: how far a float32 (or float64) run may be from the float64 reference, per layer.

A tolerance is a claim about rounding error, so it is computed, not chosen. For each traced Lua
path the model bounds the absolute error ``E`` by walking the module tree in execution order with
the float64 reference trace in hand (its scales and its instance-norm statistics):

* every arithmetic layer adds its own rounding error, relative to its output scale ``S``:
  ``C * u * sqrt(K) * S`` for a (full) convolution with reduction length ``K`` (terms per output
  element: nIn*kH*kW, or nIn*ceil(kH/dH)*ceil(kW/dW) for a transposed one), and
  ``C * u * hypot(2 * g * S, S)`` for an instance norm with conditioning ``g`` (below): the
  normalisation ``(x - mean) * invstd * w + b`` rounds values up to ``|x - mean| * gain <= 2 g S``
  and the output ``S``; plus, in quadrature, ``C * u_stats * sqrt(n) * g * S`` for the plane
  statistics, sums of n = H*W terms in an accumulator of unit roundoff ``u_stats``: double in
  Torch7 (THNN's ``accreal``, even for FloatTensors: negligible in float32, the run's own ``u`` in
  float64), float32 for a backend whose ``instance_norm_statistics`` is ``"float32"`` (TF Lite has
  no float64 reductions), where it dominates on large planes;
* relative error is carried through a layer unchanged (the instance norms renormalise, so the
  generator neither grows nor damps it on ordinary inputs), except that an instance norm whose
  conditioning exceeds what ordinary inputs produce (``g > G_ORDINARY``) multiplies the incoming
  relative error by ``g`` (an absolute input error moves its output by up to ``gain`` times
  itself); the excess ``A = max(1, g / G_ORDINARY)`` is reported as its amplification;
* copies (padding, ReLU, Identity, TVLoss) keep the absolute error; a residual add sums the
  absolute errors of its two terms; independent errors of one layer combine in quadrature.

``u`` is the unit roundoff of the run dtype (2^-24, 2^-53). The conditioning of an instance norm
is computed from its float64 input ``x`` and output ``y``:

    g = max over (sample, channel) planes of  max|x| * |w_c| / sqrt(var_plane + eps)  /  max|y|

i.e. how much an error of one unit of the input's scale moves the output, in units of the
output's scale. A near-constant plane (FACTS §2 "Flat inputs": a constant image makes the plane
entering the first IN exactly flat) has var ~ 0 and g ~ max|x| |w| / (sqrt(eps) max|y|), hundreds
of times the ordinary value: the model widens the tolerance of that layer and of what follows by
exactly that amplification, instead of loosening every layer of every input. When the bound
reaches ``UNDETERMINED_RTOL`` of the layer's scale the value is not determined by its input in
that dtype (head layout on a constant image: every IN of the chain sees a flat plane and float32
noise is amplified ~316x per IN until it saturates); such a layer is checked for shape and
finiteness only, and the budget says why.

``C_ROUNDING``, ``C_FLOAT32_STATISTICS`` and ``G_ORDINARY`` come from scripts/measure_tolerances.py
(output pasted in docs/tolerances.md): ``G_ORDINARY`` is the largest conditioning seen on ordinary
inputs (random images, the photo, odd sizes, batches; narrow and full-width models of both layouts)
and each C is the largest measured error over the model's error with C = 1, on those ordinary
inputs, over the backends of that statistics kind (float64: reference, torch, tf in float32 and
float64; float32: tflite), times a safety margin of SAFETY.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from harness.core.compare import Tolerance
from t7file import T7Module, trace_paths

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
# How a backend accumulates the instance-norm plane statistics (its ``instance_norm_statistics``
# attribute): "float64" is Torch7's (THNN sums in accreal = double, also for FloatTensors) and the
# default for a backend that does not say; "float32" for one that cannot (TF Lite).
IN_STATISTICS = ("float64", "float32")

# Measured by scripts/measure_tolerances.py (docs/tolerances.md): the worst ordinary-input ratio
# measured / model(C=1) was 1.720 for the backends summing IN statistics in double like Torch7
# (torch and tf float32, full-width head, odd 37x29, accumulated, path 5) and 2.245 for TF Lite's
# float32 sums (narrow pretrained, 256x256 photo, path 12.1.2.7); SAFETY covers what was not
# measured (other BLAS builds, thread counts, larger images).
SAFETY = 3.0
C_ROUNDING = 1.75 * SAFETY
C_FLOAT32_STATISTICS = 2.3 * SAFETY
# Largest IN conditioning seen on ordinary inputs was 3.67 (full-width head layout, photo, path 3):
# an IN above G_ORDINARY sees an ill-conditioned (near-flat) plane and its excess is carried downstream.
G_ORDINARY = 4.0
UNDETERMINED_RTOL = 0.5

COPY_CLASSES = frozenset({"nn.SpatialReplicationPadding", "nn.ReLU", "cudnn.ReLU", "nn.Identity", "nn.TVLoss"})
CONV_CLASSES = frozenset({"nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution"})
FULL_CONV_CLASSES = frozenset({"nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution"})
IN_CLASS = "nn.InstanceNormalization"


@dataclass(frozen=True)
class LayerBudget:
    """The allowed error at one Lua path, and the quantities it was computed from.

    Fields:
      lua_path / torch_class: the module
      dtype / view: run dtype; "accumulated" (end-to-end run) or "isolated" (fed the reference's input)
      scale: max |float64 reference output| at this path
      statistics: how the backend sums instance-norm statistics ("float64" Torch7's, or "float32")
      c_rounding: the C the bound was computed with
      reduction: K of a (full) convolution, n = H*W of an instance norm, else 0
      conditioning: g of an instance norm, else None
      amplification: product of the excess IN amplifications up to here (1 on ordinary inputs)
      error_bound: E, the absolute error allowed
      rtol: E / scale, the relative tolerance handed to harness.core.compare
      determined: False when rtol >= UNDETERMINED_RTOL (only shape and finiteness are checked)
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

    def tolerance(self) -> Tolerance:
        atol = self.error_bound if self.scale == 0 else 0.0
        conditioning = "" if self.conditioning is None else f", IN conditioning g={self.conditioning:.3g}"
        why = (f"tolerance model ({self.view}, {self.dtype}, IN statistics in {self.statistics}): "
               f"E={self.error_bound:.3g} = C*u*... with C={self.c_rounding:.3g}, K={self.reduction}{conditioning}, "
               f"amplification {self.amplification:.3g} "
               "(harness/core/tolerance.py, measured in docs/tolerances.md)")
        if not self.determined:
            why += f"; ill-conditioned: rtol >= {UNDETERMINED_RTOL}, value not determined in {self.dtype}"
        return Tolerance(rtol=self.rtol, atol=atol, why=why)


# -- the tree as data flow -------------------------------------------------------------------------------------


def module_inputs(root: T7Module, x: np.ndarray, trace: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The input of every module (by Lua path), reconstructed from a trace of the same run.

    Needed for the isolated view (feed each layer the judge's own input) and for IN conditioning.
    Untraced values are rebuilt from their definitions: Identity repeats, ConcatTable lists its
    members' outputs, a branch Sequential outputs its last child's, CAddTable sums.
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
    elif module.torch_class in ("nn.Concat", "nn.DepthConcat"):
        # Every branch gets the same input; the Concat's own output is traced.
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


def in_gain(module: T7Module, x: np.ndarray) -> float:
    """max over planes of |w_c| / sqrt(var_plane + eps): how much an absolute input error moves the output."""
    x = np.asarray(x, dtype=np.float64)
    var = x.reshape(x.shape[0], x.shape[1], -1).var(axis=2)
    eps = float(module.number("eps", 1e-5))
    weight = module.optional_array("weight") if module.flag("affine", True) else None
    w = np.ones(x.shape[1]) if weight is None else np.abs(weight.astype(np.float64))
    return float(np.max(w[None, :] / np.sqrt(var + eps)))


def in_conditioning(module: T7Module, x: np.ndarray, y: np.ndarray) -> float:
    """g of an instance norm from its float64 input and output (see the module docstring); inf if y is all 0."""
    scale_out = _scale(y)
    gain = _scale(x) * in_gain(module, x)
    return gain / scale_out if scale_out > 0 else (math.inf if gain > 0 else 1.0)


def reduction_length(module: T7Module) -> int:
    """Products summed per output element (the K of the rounding model)."""
    kH, kW = module.integer("kH"), module.integer("kW")
    n_in = module.integer("nInputPlane")
    if module.torch_class in FULL_CONV_CLASSES:
        dH, dW = module.integer("dH", 1), module.integer("dW", 1)
        return n_in * math.ceil(kH / dH) * math.ceil(kW / dW)
    return n_in * kH * kW


# -- budgets ---------------------------------------------------------------------------------------------------


_SCALES: dict[int, tuple[weakref.ref, float]] = {}


def _scale(array) -> float:
    """max |array|, memoised per array object: the walkers ask for the same trace arrays many times."""
    key = id(array)
    cached = _SCALES.get(key)
    if cached is not None and cached[0]() is array:
        return cached[1]
    value = float(max(np.max(array), -np.min(array))) if np.size(array) else 0.0
    with contextlib.suppress(TypeError):  # not weak-referenceable (a scalar, a list): just not memoised
        _SCALES[key] = (weakref.ref(array, lambda _ref, key=key: _SCALES.pop(key, None)), value)
    return value


class _Walker:
    """Carries (absolute error bound, amplification) through the tree in execution order."""

    def __init__(self, trace: dict[str, np.ndarray], inputs: dict[str, np.ndarray], dtype: str, view: str,
                 c_rounding: float, g_ordinary: float, statistics: str = "float64"):
        self.trace, self.inputs, self.dtype, self.view = trace, inputs, dtype, view
        self.statistics = statistics
        self.u = UNIT_ROUNDOFF[dtype]
        self.c, self.g_ordinary = c_rounding, g_ordinary
        self.budgets: dict[str, LayerBudget] = {}
        self.traced = set(trace)

    def local(self, module: T7Module, error_in: float, amplification: float) -> tuple[float, float, int, float | None]:
        """One module run on an input carrying ``error_in``: (error_out, amplification, K, g)."""
        cls = module.torch_class
        x, y = self.inputs[module.lua_path], self.trace[module.lua_path]
        s_in, s_out = _scale(x), _scale(y)
        rel_in = error_in / s_in if s_in > 0 else 0.0
        if cls in CONV_CLASSES or cls in FULL_CONV_CLASSES:
            k = reduction_length(module)
            return math.hypot(rel_in * s_out, self.c * self.u * math.sqrt(k) * s_out), amplification, k, None
        if cls == IN_CLASS:
            # In absolute terms, so that an all-zero output (constant planes, no affine) is handled:
            # carried error: on ordinary planes (g <= G) the relative error is kept, E_in * S_out/S_in
            # (measured); on an ill-conditioned one an absolute input error moves the output by up to
            # gain times itself, E_in * gain; plus the normalisation's own rounding: a few roundings
            # of values up to |x - mean| * gain <= 2 * S_in * gain, and of the output (scale S_out);
            # plus the plane statistics' rounding, sums of n = H*W terms growing like sqrt(n) in the
            # unit roundoff of the accumulator: double in Torch7 (negligible in a float32 run, the
            # run's own u in a float64 one), float32 for TF Lite (measured: docs/tolerances.md).
            gain = in_gain(module, x)
            g = in_conditioning(module, x, y)
            n = int(np.prod(np.shape(x)[2:]))
            excess = max(1.0, g / self.g_ordinary)
            # The full gain, not gain/G, beyond G: E_in*gain/G fell short by 1.7x on near-constant planes
            # once the float32-statistics sqrt(n) term no longer hid it (docs/tolerances.md).
            carried = error_in * max(s_out / s_in if s_in > 0 else 0.0, gain if g > self.g_ordinary else 0.0)
            own = math.hypot(self.c * self.u * math.hypot(2.0 * s_in * gain, s_out),
                             self.c * UNIT_ROUNDOFF[self.statistics] * math.sqrt(n) * s_in * gain)
            return math.hypot(carried, own), amplification * excess, n, g
        if cls in COPY_CLASSES:
            return error_in, amplification, 0, None
        # Anything else (a plug-in's class): its own rounding, one unit per output.
        return math.hypot(error_in, self.c * self.u * s_out), amplification, 0, None

    def record(self, module: T7Module, error: float, amplification: float, k: int, g: float | None) -> None:
        scale = _scale(self.trace[module.lua_path])
        rtol = error / scale if scale > 0 else 0.0
        self.budgets[module.lua_path] = LayerBudget(
            module.lua_path, module.torch_class, self.dtype, self.view, self.statistics, self.c, scale, k, g,
            amplification, error,
            rtol, rtol < UNDETERMINED_RTOL)

    def accumulated(self, module: T7Module, error: float, amplification: float) -> tuple[float, float]:
        """Walk ``module`` (any container) with the error carried by its input; returns its output's."""
        cls = module.torch_class
        if _is_residual_block(module):
            concat = module.children[0]
            terms = [self.accumulated(member, error, amplification) for member in concat.children]
            error = sum(term[0] for term in terms)
            amplification = max(term[1] for term in terms)
        elif cls == "nn.Sequential":
            for child in module.children:
                error, amplification = self.accumulated(child, error, amplification)
        elif cls in ("nn.Concat", "nn.DepthConcat"):
            # Branches side by side: each output element carries its own branch's error.
            terms = [self.accumulated(branch, error, amplification) for branch in module.children]
            error = max(term[0] for term in terms)
            amplification = max(term[1] for term in terms)
        elif cls == "nn.Identity":
            pass
        else:
            error, amplification, k, g = self.local(module, error, amplification)
            if module.lua_path in self.traced:
                self.record(module, error, amplification, k, g)
            return error, amplification
        if module.lua_path in self.traced:
            self.record(module, error, amplification, 0, None)
        return error, amplification

    def isolated(self, root: T7Module) -> None:
        """Each traced module fed the reference's own input, rounded to the run dtype."""
        for module in root.walk():
            if module.lua_path not in self.traced:
                continue
            error_in = self.u * _scale(self.inputs[module.lua_path])
            if module.torch_class in ("nn.Sequential", "nn.Concat", "nn.DepthConcat"):  # a container runs whole
                sub = _Walker(self.trace, self.inputs, self.dtype, self.view, self.c, self.g_ordinary, self.statistics)
                sub.traced = set()
                error, amplification = sub.accumulated(module, error_in, 1.0)
                self.record(module, error, amplification, 0, None)
            else:
                error, amplification, k, g = self.local(module, error_in, 1.0)
                self.record(module, error, amplification, k, g)


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
    """The measured C for a backend summing instance-norm statistics in ``statistics``."""
    return C_FLOAT32_STATISTICS if statistics == "float32" else C_ROUNDING


def layer_budgets(root: T7Module, x: np.ndarray, reference_trace: dict[str, np.ndarray], dtype: str, *,
                  view: str = "accumulated", c_rounding: float | None = None,
                  g_ordinary: float | None = None, statistics: str = "float64") -> dict[str, LayerBudget]:
    """The allowed error at every traced Lua path, from the float64 reference's trace of input ``x``.

    ``view="accumulated"``: the backend ran end to end on ``x`` (exactly representable in
    ``dtype``). ``view="isolated"``: each layer was fed the reference's own input for it.
    ``statistics``: how the backend sums instance-norm statistics (:func:`instance_norm_statistics`);
    the default, Torch7's double sums, is the strict model. ``c_rounding`` / ``g_ordinary`` override
    the measured constants (the measurement script evaluates the model with C = 1).
    """
    if view not in ("accumulated", "isolated"):
        raise ValueError(f"view must be 'accumulated' or 'isolated', not {view!r}")
    if statistics not in IN_STATISTICS:
        raise ValueError(f"statistics must be one of {', '.join(IN_STATISTICS)}, not {statistics!r}")
    trace = dict(reference_trace)
    inputs = module_inputs(root, np.asarray(x, dtype=np.float64), trace)
    walker = _Walker(trace, inputs, dtype, view, rounding_constant(statistics) if c_rounding is None else c_rounding,
                     G_ORDINARY if g_ordinary is None else g_ordinary, statistics)
    if view == "accumulated":
        walker.accumulated(root, 0.0, 1.0)
    else:
        walker.isolated(root)
    return {path: walker.budgets[path] for path in trace_paths(root)}


def output_budget(root: T7Module, budgets: dict[str, LayerBudget]) -> LayerBudget:
    """The budget of the generator's output: that of the last traced module of the root."""
    return budgets[_last_traced(root)]


def _last_traced(root: T7Module) -> str:
    paths = trace_paths(root)
    top_level = [child.lua_path for child in root.children if child.lua_path in set(paths)]
    return top_level[-1] if top_level else paths[-1]


def iter_conditioned(budgets: dict[str, LayerBudget]) -> Iterator[LayerBudget]:
    """The instance norms whose conditioning exceeds the ordinary range (what a report should explain)."""
    for budget in budgets.values():
        if budget.conditioning is not None and budget.conditioning > G_ORDINARY:
            yield budget
