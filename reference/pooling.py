"""nn.SpatialAveragePooling and nn.SpatialUpSamplingNearest in NumPy (the v1 pyramid's scales)."""

from __future__ import annotations

import numpy as np


def average_pool(x: np.ndarray, k_h: int, k_w: int, d_h: int, d_w: int) -> np.ndarray:
    """Torch7 ``nn.SpatialAveragePooling(kW, kH, dW, dH)`` without padding, floor mode, on (..., H, W).

    Output ``floor((H - kH) / dH) + 1``. THNN SpatialAveragePooling.c sums each window in the
    element type (``real sum``), sequentially over ky then kx, then divides by kH*kW: here one
    strided slice per tap, added in that order, so float32 rounds exactly as Torch7 does. The
    work is one pass over the input whatever the kernel (k*k slices of 1/(dH*dW) of it).
    """
    height, width = x.shape[-2:]
    out_h, out_w = (height - k_h) // d_h + 1, (width - k_w) // d_w + 1
    if height < k_h or width < k_w:
        raise ValueError(f"a {k_h}x{k_w} average pooling does not fit a {height}x{width} input")
    total = np.zeros((*x.shape[:-2], out_h, out_w), dtype=x.dtype)
    for i in range(k_h):
        for j in range(k_w):
            total += x[..., i:i + (out_h - 1) * d_h + 1:d_h, j:j + (out_w - 1) * d_w + 1:d_w]
    total /= x.dtype.type(k_h * k_w)
    return total


def upsample_nearest(x: np.ndarray, scale: int) -> np.ndarray:
    """Torch7 ``nn.SpatialUpSamplingNearest(scale)`` on (..., H, W): every pixel repeated scale x scale.

    Always a new, writable array: the ops after it may work in place (a reshape of the broadcast
    would stay a read-only view when the input is 1x1, the deepest scale of a 32² pyramid).
    """
    shape = x.shape
    out = np.empty((*shape[:-2], shape[-2], scale, shape[-1], scale), dtype=x.dtype)
    out[...] = x[..., :, None, :, None]
    return out.reshape(*shape[:-2], shape[-2] * scale, shape[-1] * scale)
