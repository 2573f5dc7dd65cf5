"""texture_nets' nn.InstanceNormalization and nn.SpatialBatchNormalization in NumPy."""

from __future__ import annotations

import numpy as np

from reference import parallel
from reference.parallel import parallel_ranges


def instance_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float, *,
                  in_place: bool = False) -> np.ndarray:
    """texture_nets ``InstanceNormalization``: batch norm in training mode over a 1 x (N*C) x H x W view.

    So each (sample, channel) plane is normalised by its own mean and biased
    variance, ``y = (x - mean) / sqrt(var + eps) * w + b``; running statistics are
    never used (docs/torch7-semantics.md). The arithmetic mirrors THNN BatchNormalization.c: sums
    accumulated in double (``accreal``), ``mean = (real) sum / n`` and the centred
    squares in the tensor's own type, ``invstd = (real)(1 / sqrt(sum/n + eps))``
    in double, and ``((x - mean) * invstd) * w + b`` in the tensor's type. One
    liberty in float32: the centred squares are summed as doubles (einsum), not
    rounded to float first — at most half an ulp per square, far below any
    tolerance, for one pass less over the largest activations.
    ``in_place`` reuses ``x`` (an array the caller owns) for the output.
    """
    if x.ndim != 4:
        raise ValueError(f"instance normalization expects N x C x H x W, got shape {x.shape}")
    batch, channels, height, width = x.shape
    count = height * width
    dtype = x.dtype.type
    planes = x.reshape(batch * channels, count)
    # Ours to overwrite when the caller owns x, or when the reshape had to copy.
    out = planes if in_place or not np.may_share_memory(planes, x) else np.empty_like(planes)
    # One (weight, bias) per plane; planes are (sample, channel) pairs in that order.
    scale = None if weight is None else np.tile(weight.astype(dtype, copy=False), batch)
    shift = None if bias is None else np.tile(bias.astype(dtype, copy=False), batch)

    def normalise(start: int, stop: int) -> None:
        _normalise_planes(planes[start:stop], out[start:stop], None if scale is None else scale[start:stop],
                          None if shift is None else shift[start:stop], eps)

    # Planes are independent: chunks of them on several cores give bit-identical results.
    parallel_ranges(batch * channels, count, normalise)
    return out.reshape(batch, channels, height, width)


def _normalise_planes(planes: np.ndarray, out: np.ndarray, scale: np.ndarray | None, shift: np.ndarray | None,
                      eps: float) -> None:
    """THNN's arithmetic (see :func:`instance_norm`) on a (planes, pixels) block; ``out`` may be ``planes``."""
    count = planes.shape[1]
    dtype = planes.dtype.type
    sums = _sum_planes(planes)
    mean = (sums.astype(dtype) / dtype(count)).astype(dtype)
    centred = np.subtract(planes, mean[:, None], out=out)
    if planes.dtype == np.float64:
        square_sums = _sum_planes(centred, square=True)
    else:
        square_sums = np.einsum("ncp,ncp->nc", centred[None], centred[None], dtype=np.float64)[0]
    with np.errstate(divide="ignore"):
        invstd = 1.0 / np.sqrt(square_sums / count + eps)
    if eps == 0.0:
        invstd[square_sums == 0] = 0.0  # THNN: "if (sum == 0 && eps == 0.0) invstd = 0"
    centred *= invstd.astype(dtype)[:, None]
    if scale is not None:
        centred *= scale[:, None]
    if shift is not None:
        centred += shift[:, None]


def _sum_planes(planes: np.ndarray, *, square: bool = False, centre: np.ndarray | None = None) -> np.ndarray:
    """Per-plane sums in double, for float64 in Torch's order (TH_TENSOR_APPLY: one left-to-right pass).

    NumPy's pairwise summation rounds differently; on a constant float64 plane that
    decides whether ``x - mean`` is exactly 0, and Torch7's output there is ``b``
    plus ~1e-13 (oracle case instnorm_c5_constchan_float64), not ``b``. For float32
    input the double sum's rounding (~1e-16 relative) vanishes when the mean is
    rounded to float, so NumPy's faster pairwise sum is used there.
    ``square`` sums the squares of the values, ``centre`` (one value per plane) the squares of
    the values minus it: float64 only, each value computed as ``np.square(planes - centre)`` would.
    """
    if planes.dtype == np.float64:
        return _sequential_sums(planes, square or centre is not None, centre)
    return planes.sum(axis=-1, dtype=np.float64)


def _sequential_sums(planes: np.ndarray, square: bool, centre: np.ndarray | None) -> np.ndarray:
    """Left-to-right float64 sums of each row of ``planes`` (rows x count), of their squares, or of their squares
    after subtracting ``centre``: THNN's ``accreal sum = 0; sum += x`` over each plane, in that order.

    The rows are worked through in chunks of columns, about ``parallel.MIN_ELEMENTS_PER_THREAD`` values at a
    time, each chunk copied transposed into a small scratch array (chunk x rows) and reduced over its first
    axis: NumPy then adds row after row (``out[j] += chunk[i, j]``), which is each plane's sequential sum, with
    the planes side by side in SIMD lanes, instead of a latency-bound ``cumsum`` per plane that also writes a
    float64 copy of the whole activation. At least two columns are kept (a single one would make NumPy
    reduce along a contiguous axis, pairwise). The first chunk starts from 0 (``initial``), each later one
    from the sums so far, held in its first row: every addition happens in Torch's order on the same values.
    """
    rows, count = planes.shape
    lanes = max(2, rows)
    chunk = max(1, min(count, parallel.MIN_ELEMENTS_PER_THREAD // lanes))
    scratch = np.zeros((chunk + 1, lanes), dtype=np.float64)
    sums = np.zeros(rows, dtype=np.float64)
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        first = 0 if start == 0 else 1  # later chunks start from the sums so far, in their first row
        block = scratch[:stop - start + first]
        values = block[first:, :rows]
        if centre is not None:
            np.subtract(planes[:, start:stop].T, centre[None, :], out=values)
        else:
            values[...] = planes[:, start:stop].T
        if square:
            np.square(values, out=values)
        if first:
            block[0, :rows] = sums
            sums = np.add.reduce(block, axis=0)[:rows]
        else:
            sums = np.add.reduce(block, axis=0, initial=0.0)[:rows]
    return sums


def batch_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float, *,
               running_mean: np.ndarray | None = None, running_var: np.ndarray | None = None,
               in_place: bool = False) -> np.ndarray:
    """Torch7 ``nn.SpatialBatchNormalization`` on N x C x H x W, THNN BatchNormalization.c's arithmetic.

    Train mode (no running statistics given): per channel, the statistics of this batch over
    (n, h, w) — a double sum; ``mean = (real) sum / count``; the double sum of the ``real``
    squares of ``x - mean``; ``invstd = (real)(1 / sqrt(ss / count + eps))`` (0 when ss and eps
    are both 0). Evaluate mode: ``mean = running_mean``, ``invstd = (real)(1 / sqrt(running_var +
    eps))`` in double (``running_var`` is already a variance). Then ``((x - mean) * invstd) * w +
    b`` in the tensor's type; without weight/bias w is 1 and b 0 (docs/real-models.md).
    ``weight``/``bias`` hold one value per input channel (the caller resolves the v1 nets'
    aliased reads). ``in_place`` reuses ``x`` (an array the caller owns) for the output.
    """
    if x.ndim != 4:
        raise ValueError(f"batch normalization expects N x C x H x W, got shape {x.shape}")
    batch, channels, height, width = x.shape
    dtype = x.dtype.type
    if running_mean is None:
        # A channel's values over (n, h, w) in Torch's order: a view for one sample, else a copy.
        rows = x.reshape(channels, height * width) if batch == 1 else \
            x.transpose(1, 0, 2, 3).reshape(channels, batch * height * width)
        mean, invstd = _batch_statistics(rows, eps)
    else:
        mean = np.asarray(running_mean).astype(dtype)
        invstd = (1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)).astype(dtype)
    out = x if in_place else np.empty_like(x)

    def normalise(start: int, stop: int) -> None:
        block = out[:, start:stop]
        np.subtract(x[:, start:stop], mean[start:stop, None, None], out=block)
        block *= invstd[start:stop, None, None]
        if weight is not None:
            block *= weight[start:stop, None, None].astype(dtype, copy=False)
        if bias is not None:
            block += bias[start:stop, None, None].astype(dtype, copy=False)

    parallel_ranges(channels, batch * height * width, normalise)
    return out


def _batch_statistics(rows: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (mean, invstd) in the rows' type, THNN's train-mode arithmetic (see :func:`batch_norm`)."""
    channels, count = rows.shape
    dtype = rows.dtype.type
    mean = np.empty(channels, dtype=rows.dtype)
    invstd = np.empty(channels, dtype=rows.dtype)

    def statistics(start: int, stop: int) -> None:
        block = rows[start:stop]
        mean[start:stop] = (_sum_planes(block).astype(dtype) / dtype(count)).astype(dtype)
        if rows.dtype == np.float64:
            square_sums = _sum_planes(block, centre=mean[start:stop])
        else:
            squares = np.square(block - mean[start:stop, None])  # rounded in the rows' type, as THNN's real product
            square_sums = _sum_planes(squares)
        with np.errstate(divide="ignore"):
            values = 1.0 / np.sqrt(square_sums / count + eps)
        if eps == 0.0:
            values[square_sums == 0] = 0.0  # THNN: "if (sum == 0 && eps == 0.0) invstd = 0"
        invstd[start:stop] = values.astype(dtype)

    parallel_ranges(channels, count, statistics)
    return mean, invstd
