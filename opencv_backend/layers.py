"""The smallest custom layers that let OpenCV's importer run texture_nets-era files: supplied by the adapter.

OpenCV 4.14's Torch importer turns every class it does not know into a layer whose *type* is the
class name without its ``nn.`` prefix; the net fails at its first forward ("Can't create layer") unless
a layer of that type is registered with ``cv2.dnn_registerLayer``. These are the ones the eleven
public texture_nets-era files and the johnson generators need (TVLoss, SpatialReplicationPadding,
LeakyReLU, SpatialCircularPadding, GenNoise, NoiseFill). Each is a few lines of NumPy mirroring the
Torch7 module (docs/real-models.md, docs/torch7-semantics.md); none does arithmetic beyond a copy, a
pad or LeakyReLU's one product, so each is exact (parity_tests/test_opencv_plugin.py checks it).
Whatever they compute is the adapter's, not OpenCV's: the runner lists their Lua paths in
``adapter_paths`` so that no verdict about OpenCV rests on them.

OpenCV hands a custom layer ``params`` (the module's scalar fields, plus ``torch_index``: the
module's reference index in the .t7 file) and ``blobs`` (its tensor fields), calls
``getMemoryShapes(input_shapes)`` and then ``forward(inputs)`` with float32 N x C x H x W arrays.

Registration is process-global and registering a type twice aborts the process (a C++ exception
thrown across the binding: "Layer ... already was registered"), so :func:`register` is idempotent
and keeps its record on the ``cv2`` module itself (it survives a reload of this module).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Torch class -> what the adapter computes for it (reported beside every path it serves).
ADAPTER_CLASSES: dict[str, str] = {
    "nn.TVLoss": "identity (TVLoss's forward returns its input); OpenCV has no TVLoss layer",
    "nn.SpatialReplicationPadding": "edge padding (numpy.pad mode='edge', negative pads crop); OpenCV's importer "
                                    "has no SpatialReplicationPadding",
    "nn.LeakyReLU": "x > 0 ? x : x * float32(negval); OpenCV 4.14's Torch importer has no LeakyReLU",
    "nn.SpatialCircularPadding": "texture_nets supplementary/utils.lua circular padding (torus wrap for pad 1, "
                                 "border overwrite for pad 0); OpenCV has no such layer",
    "nn.GenNoise": "the harness's injected noise (texture_nets: written into its channels in place; doodle: a new "
                   "tensor); OpenCV has no GenNoise",
    "nn.NoiseFill": "copy of its input (num_noise_channels = 0); OpenCV has no NoiseFill",
}
LAYER_TYPES = tuple(name.split(".", 1)[1] for name in ADAPTER_CLASSES)
_REGISTRY_ATTRIBUTE = "_texture_nets_parity_layers"
_LOCK = threading.Lock()


@dataclass(frozen=True)
class NoiseSlot:
    """What one GenNoise draws in the current forward: ``kind`` "fill" (in place, channels
    ``first`` .. ``first + planes - 1``) or "planes" (a new tensor), and the values (float32)."""

    kind: str
    first: int
    planes: int
    values: np.ndarray


class _NoiseState:
    def __init__(self) -> None:
        self.slots: dict[int, NoiseSlot] = {}
        self.error: str | None = None


# torch_index -> slot, set by the runner for one net.forward while it holds FORWARD_LOCK (OpenCV may
# call a custom layer from a thread of its own, so the state is process-wide, not thread-local).
STATE = _NoiseState()
FORWARD_LOCK = threading.RLock()


def _int(params: Mapping, name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if value is None:
        raise ValueError(f"missing field {name!r}")
    return int(float(value))


class _Layer:
    def __init__(self, params, blobs):
        self.params = dict(params)

    def getMemoryShapes(self, inputs):  # OpenCV calls it by this name
        return [inputs[0]]


class TVLoss(_Layer):
    """nn.TVLoss (texture_nets): forward returns its input."""

    def forward(self, inputs):
        return [inputs[0]]


class NoiseFill(_Layer):
    """nn.NoiseFill with num_noise_channels = 0 (every public file): a copy of its input."""

    def forward(self, inputs):
        return [np.array(inputs[0], copy=True)]


class LeakyReLU(_Layer):
    """nn.LeakyReLU: x > 0 ? x : x * negval, negval as a float (THNN's real)."""

    def forward(self, inputs):
        x = inputs[0]
        negval = np.float32(float(self.params.get("negval", 0.01)))
        return [np.where(x > 0, x, x * negval).astype(np.float32)]


def _pads(params: Mapping) -> tuple[int, int, int, int]:
    return tuple(_int(params, key, 0) for key in ("pad_l", "pad_r", "pad_t", "pad_b"))  # type: ignore[return-value]


class _Padding(_Layer):
    """nn.Spatial*Padding(l, r, t, b): l + r more columns and t + b more rows (a negative pad crops); the
    subclass's ``pad`` fills them."""

    def getMemoryShapes(self, inputs):
        left, right, top, bottom = _pads(self.params)
        shape = list(inputs[0])
        return [[*shape[:-2], shape[-2] + top + bottom, shape[-1] + left + right]]

    def forward(self, inputs):
        return [self.pad(inputs[0], *_pads(self.params))]

    def pad(self, x: np.ndarray, left: int, right: int, top: int, bottom: int) -> np.ndarray:
        raise NotImplementedError


class SpatialReplicationPadding(_Padding):
    """nn.SpatialReplicationPadding(l, r, t, b): output row i is input row clamp(i - t) (edge mode); negative
    pads crop."""

    def pad(self, x, left, right, top, bottom):
        height, width = x.shape[-2:]
        rows = np.clip(np.arange(height + top + bottom) - top, 0, height - 1)
        cols = np.clip(np.arange(width + left + right) - left, 0, width - 1)
        return np.ascontiguousarray(x[..., rows[:, None], cols[None, :]])


class SpatialCircularPadding(_Padding):
    """nn.SpatialCircularPadding as texture_nets supplementary/utils.lua defines it (docs/real-models.md):
    zero output, input copied into the interior (negative pads crop), then (1-based) row 1 := row h-1,
    row h := row 2, column 1 := column w-1, column w := column 2 (columns over the full height)."""

    def pad(self, x, left, right, top, bottom):
        height, width = x.shape[-2:]
        out_h, out_w = height + top + bottom, width + left + right
        y = np.zeros((*x.shape[:-2], out_h, out_w), dtype=np.float32)
        y[..., max(top, 0):out_h - max(bottom, 0), max(left, 0):out_w - max(right, 0)] = \
            x[..., max(-top, 0):height - max(-bottom, 0), max(-left, 0):width - max(-right, 0)]
        y[..., 0, :] = y[..., out_h - 2, :]
        y[..., out_h - 1, :] = y[..., 1, :]
        y[..., :, 0] = y[..., :, out_w - 2]
        y[..., :, out_w - 1] = y[..., :, 1]
        return y


class GenNoise(_Layer):
    """Both classes named nn.GenNoise, with the harness's noise injected (docs/real-models.md):
    texture_nets' (no fields) overwrites channels of its input in place; online-neural-doodle's
    (``num_planes``) returns a new N x num_planes x H x W tensor."""

    def __init__(self, params, blobs):
        super().__init__(params, blobs)
        self.index = _int(self.params, "torch_index")
        self.planes = _int(self.params, "num_planes") if "num_planes" in self.params else None

    def getMemoryShapes(self, inputs):
        shape = list(inputs[0])
        if self.planes is not None:
            shape[1] = self.planes
        return [shape]

    def forward(self, inputs):
        x = inputs[0]
        slot = STATE.slots.get(self.index)
        if slot is None:
            STATE.error = f"no noise injected for the GenNoise with .t7 reference index {self.index}"
            raise RuntimeError(STATE.error)
        n, _, h, w = x.shape
        expected = (n, slot.planes, h, w)
        if slot.values.shape != expected:
            STATE.error = (f"noise of shape {'x'.join(map(str, slot.values.shape))} given where this input needs "
                           f"{'x'.join(map(str, expected))}")
            raise RuntimeError(STATE.error)
        if slot.kind == "planes":
            return [np.ascontiguousarray(slot.values, dtype=np.float32)]
        y = np.array(x, dtype=np.float32, copy=True)
        y[:, slot.first:slot.first + slot.planes] = slot.values
        return [y]


LAYERS = (TVLoss, SpatialReplicationPadding, LeakyReLU, SpatialCircularPadding, GenNoise, NoiseFill)


def register() -> None:
    """Register every adapter layer once per process (a second registration would abort it)."""
    import cv2

    with _LOCK:
        done: set[str] = getattr(cv2, _REGISTRY_ATTRIBUTE, None) or set()
        for layer in LAYERS:
            if layer.__name__ not in done:
                cv2.dnn_registerLayer(layer.__name__, layer)
                done.add(layer.__name__)
        setattr(cv2, _REGISTRY_ATTRIBUTE, done)
