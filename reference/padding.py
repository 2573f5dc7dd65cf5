"""nn.SpatialReplicationPadding in NumPy."""

from __future__ import annotations

import numpy as np


def replication_pad(x: np.ndarray, left: int, right: int, top: int, bottom: int) -> np.ndarray:
    """Torch7 ``nn.SpatialReplicationPadding(l, r, t, b)`` on a (..., H, W) array.

    Mirrors THNN SpatialReplicationPadding.c: output pixel (i, j) reads input
    pixel (clamp(i - t, 0, H-1), clamp(j - l, 0, W-1)), which is ``np.pad(mode='edge')``
    for positive pads (also pads wider than the input) and a crop for negative
    ones. Done as one crop, one block copy and four edge broadcasts instead of a
    gather, because it runs on every residual block.
    """
    height, width = x.shape[-2:]
    # Negative pads crop first (iStartX = max(0, -pad_l) in THNN).
    core = x[..., max(0, -top):height - max(0, -bottom), max(0, -left):width - max(0, -right)]
    core_h, core_w = core.shape[-2:]
    if core_h <= 0 or core_w <= 0:
        raise ValueError(f"replication padding ({left},{right},{top},{bottom}) crops a {height}x{width} input away")
    top, bottom, left, right = max(0, top), max(0, bottom), max(0, left), max(0, right)
    out = np.empty((*x.shape[:-2], core_h + top + bottom, core_w + left + right), dtype=x.dtype)
    rows = slice(top, top + core_h)
    out[..., rows, left:left + core_w] = core
    # Rows first (central columns), then whole columns, so the corners get the corner pixel.
    out[..., :top, left:left + core_w] = core[..., :1, :]
    out[..., top + core_h:, left:left + core_w] = core[..., -1:, :]
    out[..., :, :left] = out[..., :, left:left + 1]
    out[..., :, left + core_w:] = out[..., :, left + core_w - 1:left + core_w]
    return out
