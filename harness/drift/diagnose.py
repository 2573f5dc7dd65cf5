"""Why a layer diverges: symptoms read off the difference, and the usual cause for each Torch7 class.

``diagnose(module, actual, expected, layer_input, noise)`` looks at one divergent layer (a
backend's output vs the baseline's, both fed the same input) and names what the difference
looks like: a shape change that a known padding/size mistake explains, a per-channel constant
(equal to minus the module's bias: the bias was dropped), a whole-pixel shift of the output
window, the instance norm of nn commit 919eeca, non-finite values. ``CLASS_HINTS`` holds one
line per class with its known porting traps (docs/torch7-semantics.md, docs/real-models.md), shown
next to every divergence.

``noise`` is the layer's tolerance bound (the rounding error allowed): a pattern "fits" when
what it leaves unexplained is within a few times that bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from t7file import T7Module

# A pattern explains a difference when the rest is within this many tolerance bounds: a
# classification threshold for the message, not a pass/fail tolerance.
FIT_FACTOR = 4.0

CLASS_HINTS: dict[str, str] = {
    "nn.SpatialConvolution": (
        "Torch7 SpatialConvolution is a cross-correlation with weight (nOut, nIn, kH, kW) and built-in symmetric "
        "zero padding (padW, padH): out = floor((H + 2p - k)/s) + 1, constructor order W before H. Usual causes: "
        "running it VALID (padding lost), a bare np.transpose of the kernel (swaps kH and kW), a dropped bias "
        "(a per-channel constant: absorbed by a following InstanceNormalization, harmful at the last conv)."),
    "nn.SpatialFullConvolution": (
        "Torch7 SpatialFullConvolution: weight (nIn, nOut, kH, kW), scatter-add without kernel flip, "
        "out = (H-1)s - 2p + k + adj, Torch keeps full[p : p+out] with the adj row/column at the bottom/right. "
        "Usual causes: a VALID conv2d_transpose with a forced output_shape keeps full[0:out] (one-pixel shift); "
        "PyTorch ConvTranspose2d(padding=p, output_padding=adj) is the same definition; dropped bias."),
    "nn.InstanceNormalization": (
        "texture_nets InstanceNormalization: per (sample, channel) mean over HxW and biased variance, eps=1e-5 "
        "inside the sqrt, the module's own weight/bias; running statistics are never used (Torch7 sums the "
        "statistics in double). Usual causes: float32 statistics (mean and variance summed in float32, e.g. "
        "tf.nn.moments on a float32 tensor: an error growing like sqrt(H*W), about 3e-4 of the output's scale on "
        "a 256x256 photo; docs/tolerances.md), nn commit 919eeca (batch-size-1 BatchNorm uses running stats: "
        "x/sqrt(1+eps)*w+b), unbiased variance, eps outside the sqrt; a near-constant input plane is "
        "ill-conditioned (noise x ~1/sqrt(eps))."),
    "nn.SpatialReplicationPadding": (
        "SpatialReplicationPadding(left, right, top, bottom) equals np.pad(mode='edge'), also for pads larger "
        "than the input; negative pads crop. Usual causes: argument order, one SYMMETRIC pad of width > 1 "
        "(not replication; stacked 1-pixel SYMMETRIC pads are), REFLECT (never replication)."),
    "nn.ReLU": (
        "ReLU(true) is in place in Torch7 (nn.Threshold(0, 0)): a trace read after a later module ran shows the "
        "later value. A ReLU rarely diverges by itself: look at its input."),
    "nn.TVLoss": "TVLoss is the identity in forward (the total-variation term acts on gradients only).",
    "nn.Sequential": (
        "A residual block: ConcatTable{Identity, branch} + CAddTable, no ReLU after the add. Look at the "
        "block's inner paths for the local deviation."),
}
DEFAULT_HINT = "No Torch7 trap is recorded for this class; compare the module with its definition in torch/nn."


def class_hint(torch_class: str) -> str:
    return CLASS_HINTS.get(torch_class, DEFAULT_HINT)


@dataclass(frozen=True)
class Symptom:
    """One recognised pattern: a machine-readable ``kind`` and a sentence for the reader."""

    kind: str  # "shape", "nonfinite", "bias-dropped", "channel-offset", "shift", "running-stats", "values"
    text: str


def diagnose(module: T7Module, actual: np.ndarray, expected: np.ndarray, layer_input: np.ndarray | None,
             noise: float) -> list[Symptom]:
    """Symptoms of a divergent layer, most specific first; always at least one."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return [_shape_symptom(module, actual.shape, expected.shape, layer_input)]
    nonfinite = int(actual.size - np.count_nonzero(np.isfinite(actual)))
    if nonfinite:
        return [Symptom("nonfinite", f"{nonfinite} NaN/Inf values where the baseline has finite ones")]
    noise = max(noise, np.finfo(np.float32).eps * _scale(expected))
    symptoms: list[Symptom] = []
    if actual.ndim == 4:
        offset = _channel_offset(actual - expected, noise)
        if offset is not None:
            symptoms.append(_offset_symptom(module, offset, noise))
        else:
            shift = _shift(actual, expected, noise)
            if shift is not None:
                (dy, dx), offset = shift
                text = (f"the output window is shifted by {dy} row(s) and {dx} column(s): "
                        f"actual[y+{dy}, x+{dx}] = baseline[y, x]")
                symptoms.append(Symptom("shift", text))
                if offset is not None and np.max(np.abs(offset)) > noise:
                    symptoms.append(_offset_symptom(module, offset, noise))
        if (module.torch_class == "nn.InstanceNormalization" and layer_input is not None
                and _matches_running_stats(module, actual, layer_input, noise)):
            symptoms.append(Symptom("running-stats", "equals x/sqrt(1+eps)*w+b: BatchNorm with running "
                                    "statistics (nn commit 919eeca), not texture_nets' instance norm"))
    if not symptoms:
        rel = float(np.max(np.abs(actual - expected))) / max(_scale(expected), 1e-300)
        symptoms.append(Symptom("values", f"values differ beyond rounding (max rel {rel:.3g}) with no simple pattern"))
    return symptoms


# -- shapes ----------------------------------------------------------------------------------------------------


def _shape_symptom(module: T7Module, actual: tuple, expected: tuple, layer_input: np.ndarray | None) -> Symptom:
    text = f"shape {_dims(actual)} where the baseline has {_dims(expected)}"
    explanation = None
    if layer_input is not None and np.ndim(layer_input) == 4 and len(actual) == 4:
        explanation = _explain_shape(module, tuple(np.shape(layer_input)), actual)
    return Symptom("shape", f"{text}: {explanation}" if explanation else text)


def _explain_shape(module: T7Module, in_shape: tuple, actual: tuple) -> str | None:
    """Which plausible mistake produces ``actual`` from ``in_shape`` (None if none does)."""
    h, w = in_shape[2], in_shape[3]
    try:
        k_w, k_h = module.integer("kW"), module.integer("kH")
        d_w, d_h = module.integer("dW", 1), module.integer("dH", 1)
        p_w, p_h = module.integer("padW", 0), module.integer("padH", 0)
    except Exception:
        return None
    if module.torch_class == "nn.SpatialConvolution":
        def size(n: int, k: int, s: int, p: int) -> int:
            return (n + 2 * p - k) // s + 1

        if (p_h or p_w) and actual[2:] == (size(h, k_h, d_h, 0), size(w, k_w, d_w, 0)):
            return (f"matches the convolution without its zero padding (padW={p_w}, padH={p_h} dropped: "
                    "a VALID convolution)")
        if actual[2:] == (size(h, k_w, d_w, p_w), size(w, k_h, d_h, p_h)) and (k_w, d_w, p_w) != (k_h, d_h, p_h):
            return "matches W and H hyper-parameters swapped (Torch7's constructor order is kW, kH, dW, dH, padW, padH)"
    if module.torch_class == "nn.SpatialFullConvolution":
        a_w, a_h = module.integer("adjW", 0), module.integer("adjH", 0)

        def full(n: int, k: int, s: int, p: int, a: int) -> int:
            return (n - 1) * s - 2 * p + k + a

        if (a_h or a_w) and actual[2:] == (full(h, k_h, d_h, p_h, 0), full(w, k_w, d_w, p_w, 0)):
            return f"matches the transposed convolution without its adj (adjW={a_w}, adjH={a_h}) row/column"
        if actual[2:] == (full(h, k_h, d_h, 0, 0), full(w, k_w, d_w, 0, 0)):
            return "matches the full (uncropped) transposed convolution: the padding crop is missing"
    return None


# -- per-channel constants (biases) ---------------------------------------------------------------------------


def _channel_offset(diff: np.ndarray, noise: float) -> np.ndarray | None:
    """The per-(sample, channel) constant that explains ``diff``, or None."""
    planes = diff.reshape(diff.shape[0], diff.shape[1], -1)
    means = planes.mean(axis=2)
    rest = float(np.max(np.abs(planes - means[:, :, None]))) if planes.size else 0.0
    if rest <= FIT_FACTOR * noise and float(np.max(np.abs(means))) > FIT_FACTOR * noise:
        return means
    return None


def _offset_symptom(module: T7Module, offset: np.ndarray, noise: float) -> Symptom:
    per_channel = offset.mean(axis=0)
    bias = module.optional_array("bias")
    if bias is not None and bias.size == per_channel.size:
        b = bias.astype(np.float64).reshape(-1)
        if np.max(np.abs(per_channel + b)) <= FIT_FACTOR * noise:
            return Symptom("bias-dropped", f"a per-channel constant equal to minus the module's bias "
                           f"(max |bias| {np.max(np.abs(b)):.3g}): the bias was dropped")
        if np.max(np.abs(per_channel - b)) <= FIT_FACTOR * noise:
            return Symptom("channel-offset", "a per-channel constant equal to the module's bias: the bias was "
                           "added twice")
    return Symptom("channel-offset", f"a per-channel constant offset (max {np.max(np.abs(per_channel)):.3g}): "
                   "a bias or shift term is missing or wrong")


# -- shifted output windows -------------------------------------------------------------------------------------


def _shift(actual: np.ndarray, expected: np.ndarray, noise: float, reach: int = 2):
    """((dy, dx), per-plane offset or None) when actual[y+dy, x+dx] == expected[y, x] on the overlap."""
    h, w = expected.shape[2], expected.shape[3]
    best = None
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy, dx) == (0, 0) or abs(dy) >= h or abs(dx) >= w:
                continue
            a = actual[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            e = expected[:, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            if a.size == 0:
                continue
            diff = (a - e).reshape(a.shape[0], a.shape[1], -1)
            means = diff.mean(axis=2)
            rest = float(np.max(np.abs(diff - means[:, :, None])))
            if rest <= FIT_FACTOR * noise and (best is None or rest < best[0]):
                best = (rest, (dy, dx), means)
    if best is None:
        return None
    return best[1], best[2]


# -- instance norm with running statistics ---------------------------------------------------------------------


def _matches_running_stats(module: T7Module, actual: np.ndarray, x: np.ndarray, noise: float) -> bool:
    x = np.asarray(x, dtype=np.float64)
    if x.shape != actual.shape:
        return False
    channels = x.shape[1]
    eps = float(module.number("eps", 1e-5))
    weight, bias = module.optional_array("weight"), module.optional_array("bias")
    w = np.ones(channels) if weight is None else weight.astype(np.float64).reshape(-1)
    b = np.zeros(channels) if bias is None else bias.astype(np.float64).reshape(-1)
    if w.size != channels or b.size != channels:
        return False
    predicted = x / math.sqrt(1.0 + eps) * w[None, :, None, None] + b[None, :, None, None]
    return float(np.max(np.abs(predicted - actual))) <= FIT_FACTOR * noise


def _scale(array: np.ndarray) -> float:
    finite = array[np.isfinite(array)]
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def _dims(shape: tuple) -> str:
    return "x".join(str(n) for n in shape)
