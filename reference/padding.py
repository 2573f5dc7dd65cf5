"""nn.SpatialReplicationPadding and texture_nets' nn.SpatialCircularPadding in NumPy."""

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


def circular_pad(x: np.ndarray, left: int, right: int, top: int, bottom: int) -> np.ndarray:
    """texture_nets' ``nn.SpatialCircularPadding(l, r, t, b)`` (supplementary/utils.lua) on N x C x H x W.

    The literal rule, the only version that runs the v1 nets (docs/real-models.md): a zeroed
    (N, C, H + t + b, W + l + r) output, the input copied into its interior (negative pads crop
    the input), then, 1-based, row 1 := row h-1, row h := row 2, then column 1 := column w-1,
    column w := column 2 over the full height. Pad 1 on every side is a torus wrap; pad 0 is **not**
    an identity (it overwrites the input's 1-pixel border); pads of 2 or more copy padding zeros.
    """
    height, width = x.shape[-2] + top + bottom, x.shape[-1] + left + right
    if height < 2 or width < 2:
        # Torch7: 'input is too small' below 1; at 1, narrow(3, h - 1, 1) fails (index 0).
        raise ValueError(f"circular padding ({left},{right},{top},{bottom}) of a {x.shape[-2]}x{x.shape[-1]} input "
                         f"gives {height}x{width}; the rule needs at least 2x2")
    core = x[..., max(0, -top):x.shape[-2] - max(0, -bottom), max(0, -left):x.shape[-1] - max(0, -right)]
    out = np.zeros((*x.shape[:-2], height, width), dtype=x.dtype)
    top, left = max(0, top), max(0, left)
    out[..., top:top + core.shape[-2], left:left + core.shape[-1]] = core
    # Rows first, then whole columns (so the corners come from the already copied rows), in Lua's order.
    out[..., 0, :] = out[..., height - 2, :]
    out[..., height - 1, :] = out[..., 1, :]
    out[..., :, 0] = out[..., :, width - 2]
    out[..., :, width - 1] = out[..., :, 1]
    return out
