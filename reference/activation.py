"""nn.ReLU (nn.Threshold) and nn.LeakyReLU in NumPy."""

from __future__ import annotations

import numpy as np


def threshold(x: np.ndarray, th: float = 0.0, value: float = 0.0, *, in_place: bool = False) -> np.ndarray:
    """Torch7 ``nn.Threshold(th, v)`` (``nn.ReLU`` is th = v = 0): ``y = x > th ? x : v``.

    Written as the comparison Torch makes (THNN Threshold.c), so NaN maps to ``v``
    like in Torch rather than propagating as ``np.maximum`` would. ``in_place``
    mirrors ``ReLU(true)`` and is only used on arrays the network owns.
    """
    out = x if in_place else None
    if th == value:
        # fmax returns the non-NaN operand, so this is exactly "x > th ? x : th", NaN -> th included.
        return np.fmax(x, np.asarray(th, dtype=x.dtype), out=out)
    replace = ~(x > th)
    out = x if in_place else x.copy()
    np.copyto(out, np.asarray(value, dtype=x.dtype), where=replace)
    return out


def leaky_relu(x: np.ndarray, negval: float, *, in_place: bool = False) -> np.ndarray:
    """Torch7 ``nn.LeakyReLU(negval)``: ``y = x > 0 ? x : x * negval`` (THNN LeakyReLU.c).

    ``negval`` is a ``real``: rounded to the tensor's type before the product (0.01f in float32).
    NaN fails the comparison and stays NaN (NaN * negval). ``inplace`` in the file changes only
    what Torch's buffers hold afterwards; ``in_place`` here reuses an array the network owns.
    """
    negative = ~(x > 0)
    out = x if in_place else x.copy()
    np.multiply(out, np.asarray(negval, dtype=x.dtype), out=out, where=negative)
    return out
