"""nn.SpatialConvolution and nn.SpatialFullConvolution in NumPy, on BLAS.

Both mirror THNN's own algorithm (SpatialConvolutionMM.c / SpatialFullConvolution.c):
an unfold ("im2col") plus GEMM for the convolution, GEMM plus a scatter-add
("col2im") for the transposed convolution, processed in blocks of rows so the
temporaries stay small. Torch's order of operations is kept where it is cheap
(bias added after the products; col2im taps added in (kh, kw) order, except where
two row blocks meet); what differs is the BLAS's own blocking of each dot
product. Measured against Torch7 single modules: float64 <= 5e-16 relative,
float32 <= 6e-7 relative.

Fast-path settings (module attributes, read at every call; tests set them small to force every
branch on tiny inputs, parity_tests/test_reference_fast_paths.py): ``UNFOLD_BLOCK_BYTES``,
``COL2IM_BLOCK_BYTES`` and ``CONV_ALGORITHM`` ("auto", "unfold" or "output_taps"; ``conv2d``'s
``algorithm`` argument overrides it). The plain definitions they must agree with are in
:mod:`reference.definitions`.

``algorithm="taps"`` is never chosen by "auto": the same products summed in another float32 grouping (one GEMM per
kernel tap, the taps added one after another), the judge's second summation order. Its float32 error beside the
default one's is the basis of the tolerance model's rounding ceiling (harness/core/tolerance.py).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference.parallel import parallel_ranges

# Upper bound on one unfolded block, in bytes. The unfold of the first 9x9 conv
# at 512x512 would otherwise be ~260 MB; 16 MB blocks keep memory flat and the
# GEMM operand cache-friendly without measurable cost.
UNFOLD_BLOCK_BYTES = 16 * 2**20
# The same bound for the transposed convolution's per-block GEMM output.
COL2IM_BLOCK_BYTES = 16 * 2**20
# How conv2d computes: "auto" picks by shape (see conv2d), or always "unfold" / "output_taps" / "taps".
CONV_ALGORITHM = "auto"
ALGORITHMS = ("auto", "unfold", "output_taps", "taps")
# Output pixels per block of the "taps" algorithm: the block's output (nOut x pixels) stays in the cache while
# every tap adds into it.
TAPS_BLOCK_BYTES = 1 << 20


def check_algorithm(algorithm: str) -> str:
    """``algorithm`` if it is one of ALGORITHMS, else a ValueError naming them."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown convolution algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    return algorithm


def _batched(x: np.ndarray, n_in: int, what: str) -> tuple[np.ndarray, bool]:
    """``x`` as N x C x H x W, checked for ``n_in`` planes; a C x H x W input (nn takes both) becomes a batch of one,
    and the flag says to squeeze the result back."""
    squeeze = x.ndim == 3
    if squeeze:
        x = x[None]
    if x.shape[1] != n_in:
        raise ValueError(f"{what} expects {n_in} input planes, got {x.shape[1]}")
    return x, squeeze


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
           stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0), *,
           algorithm: str | None = None) -> np.ndarray:
    """Torch7 ``nn.SpatialConvolution``: cross-correlation of (N, C, H, W) with (nOut, C, kH, kW).

    ``stride`` and ``padding`` are (H, W) here (Torch's constructor takes W first).
    Zero padding is symmetric; ``out = floor((H + 2p - k) / s) + 1``. ``algorithm`` (default
    ``CONV_ALGORITHM``): "auto" takes the output-taps GEMM for stride 1 with fewer output than
    input planes and the unfold otherwise; "output_taps" needs stride 1; "taps" (any stride) sums the
    products per kernel tap, the judge's second float32 order (module docstring).
    """
    n_out, n_in, k_h, k_w = weight.shape
    x, squeeze = _batched(x, n_in, "convolution")
    pad_h, pad_w = padding
    if pad_h or pad_w:
        x = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    s_h, s_w = stride
    height, width = x.shape[2:]
    out_h, out_w = (height - k_h) // s_h + 1, (width - k_w) // s_w + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {k_h}x{k_w} kernel does not fit a {height}x{width} (padded) input")
    algorithm = check_algorithm(CONV_ALGORITHM if algorithm is None else algorithm)
    if algorithm == "auto":
        algorithm = "output_taps" if tuple(stride) == (1, 1) and n_out < n_in else "unfold"
    if algorithm == "output_taps":
        if tuple(stride) != (1, 1):
            raise ValueError("the output-taps convolution needs stride 1")
        out = _conv_by_output_taps(x, weight, out_h, out_w)
    elif algorithm == "taps":
        out = _conv_by_taps(x, weight, stride, out_h, out_w)
    else:
        out = _conv_by_unfold(x, weight, stride, out_h, out_w)
    if bias is not None:
        # THNN adds the bias through the GEMM's beta=1 term, i.e. after the products.
        out += bias[None, :, None, None]
    return out[0] if squeeze else out


def _conv_by_unfold(x: np.ndarray, weight: np.ndarray, stride: tuple[int, int], out_h: int, out_w: int) -> np.ndarray:
    """THNN's algorithm: unfold the input (rows ordered c, i, j like unfolded_copy), one GEMM per block."""
    n_out, n_in, k_h, k_w = weight.shape
    s_h, s_w = stride
    batch = x.shape[0]
    # windows[n, c, oh, ow, i, j] = x[n, c, oh*s_h + i, ow*s_w + j] (a view, no copy).
    windows = sliding_window_view(x, (k_h, k_w), axis=(2, 3))[:, :, ::s_h, ::s_w]
    weight_matrix = weight.reshape(n_out, n_in * k_h * k_w)
    out = np.empty((batch, n_out, out_h, out_w), dtype=x.dtype)
    rows_per_block = min(out_h, max(1, UNFOLD_BLOCK_BYTES // (n_in * k_h * k_w * out_w * x.itemsize)))
    buffer = np.empty(n_in * k_h * k_w * rows_per_block * out_w, dtype=x.dtype)  # reused by every block
    for sample in range(batch):
        for row in range(0, out_h, rows_per_block):
            stop = min(out_h, row + rows_per_block)
            columns = buffer[:n_in * k_h * k_w * (stop - row) * out_w].reshape(n_in, k_h, k_w, stop - row, out_w)
            source = windows[sample, :, row:stop].transpose(0, 3, 4, 1, 2)  # (c, i, j, oh, ow)
            _unfold(source, columns)
            block = out[sample, :, row:stop].reshape(n_out, -1)  # a view: rows of one plane are contiguous
            np.matmul(weight_matrix, columns.reshape(n_in * k_h * k_w, -1), out=block)
    return out


def _unfold(source: np.ndarray, columns: np.ndarray) -> None:
    """``columns[...] = source`` (c, i, j, oh, ow), the copy split over (c, i) pairs on the CPU cores."""
    n_in, k_h = source.shape[:2]

    def copy(start: int, stop: int) -> None:
        for c in range(start // k_h, (stop - 1) // k_h + 1):
            first, last = max(start - c * k_h, 0), min(stop - c * k_h, k_h)
            columns[c, first:last] = source[c, first:last]

    parallel_ranges(n_in * k_h, columns[0, 0].size, copy)


def _conv_by_output_taps(x: np.ndarray, weight: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Stride-1 convolution with fewer output than input planes (the generator's last layer, 32 -> 3).

    Unfolding would copy the input k*k times to feed a GEMM with only nOut rows;
    instead one GEMM computes every tap's contribution at every input pixel
    (nOut*k*k rows) and the taps are summed with shifted adds, in THNN's (i, j)
    order. Same products; only the float32 summation grouping differs.
    """
    n_out, n_in, k_h, k_w = weight.shape
    batch, _, height, width = x.shape
    per_tap = weight.transpose(0, 2, 3, 1).reshape(n_out * k_h * k_w, n_in)
    taps = np.matmul(per_tap, x.reshape(batch, n_in, height * width)).reshape(batch, n_out, k_h, k_w, height, width)
    out = taps[:, :, 0, 0, :out_h, :out_w].copy()
    for i in range(k_h):
        for j in range(k_w):
            if i or j:
                out += taps[:, :, i, j, i:i + out_h, j:j + out_w]
    return out


def _conv_by_taps(x: np.ndarray, weight: np.ndarray, stride: tuple[int, int], out_h: int, out_w: int
                  ) -> np.ndarray:
    """Any convolution as one GEMM over the input planes per kernel tap (ky, kx), the taps' products added into
    the output in (ky, kx) order: the same products as the unfold's single GEMM over every (plane, ky, kx), in
    another float32 grouping. Blocks of output rows keep the block's sums in the cache while every tap adds in."""
    n_out, n_in, k_h, k_w = weight.shape
    batch = x.shape[0]
    s_h, s_w = stride
    out = np.empty((batch, n_out, out_h, out_w), dtype=x.dtype)
    rows = max(1, min(out_h, TAPS_BLOCK_BYTES // max(1, n_out * out_w * x.itemsize)))
    taps = [np.ascontiguousarray(weight[:, :, i, j]) for i in range(k_h) for j in range(k_w)]
    for sample in range(batch):
        for row in range(0, out_h, rows):
            stop = min(out_h, row + rows)
            block = out[sample, :, row:stop].reshape(n_out, -1)  # a view: rows of one plane are contiguous
            for index, tap in enumerate(taps):
                i, j = divmod(index, k_w)
                source = x[sample, :, i + row * s_h:i + (stop - 1) * s_h + 1:s_h, j:j + (out_w - 1) * s_w + 1:s_w]
                product = np.matmul(tap, np.ascontiguousarray(source).reshape(n_in, -1))
                if index:
                    block += product
                else:
                    block[...] = product
    return out


def full_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                adjustment: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Torch7 ``nn.SpatialFullConvolution`` (transposed convolution), weight (nIn, nOut, kH, kW).

    Every input pixel scatters ``weight[c_in, :, :, :] * x`` onto the output at
    (h*s - p + i, w*s - p + j); no kernel flip. ``out = (H-1)*s - 2p + k + adj``,
    the ``adj`` extra rows/columns at the bottom/right. Arguments are (H, W) pairs.
    """
    n_in, n_out, k_h, k_w = weight.shape
    x, squeeze = _batched(x, n_in, "full convolution")
    (s_h, s_w), (p_h, p_w), (a_h, a_w) = stride, padding, adjustment
    batch, _, height, width = x.shape
    out_h = (height - 1) * s_h - 2 * p_h + k_h + a_h
    out_w = (width - 1) * s_w - 2 * p_w + k_w + a_w
    if out_h < 1 or out_w < 1:
        raise ValueError(f"full convolution output would be {out_h}x{out_w}")
    # col2im on an uncropped canvas whose origin is output pixel (-p, -p); the
    # canvas also covers the adj rows/columns, which receive no taps beyond it.
    canvas_h = max((height - 1) * s_h + k_h, p_h + out_h)
    canvas_w = max((width - 1) * s_w + k_w, p_w + out_w)
    canvas = np.zeros((batch, n_out, canvas_h, canvas_w), dtype=x.dtype)
    weight_t = weight.reshape(n_in, n_out * k_h * k_w).T  # (nOut*kH*kW, nIn), THNN's gemm('n', 't')
    span_w = (width - 1) * s_w + 1
    rows_per_block = max(1, COL2IM_BLOCK_BYTES // (n_out * k_h * k_w * width * x.itemsize))
    for sample in range(batch):
        for row in range(0, height, rows_per_block):
            stop = min(height, row + rows_per_block)
            # columns[(o, i, j), h, w] = sum_c weight[c, o, i, j] * x[c, h, w] for this block of input rows.
            columns = np.matmul(weight_t, x[sample, :, row:stop].reshape(n_in, -1))
            columns = columns.reshape(n_out, k_h, k_w, stop - row, width)
            span_h = (stop - row - 1) * s_h + 1
            _col2im(canvas[sample], columns, row * s_h, span_h, span_w, (s_h, s_w))
    out = canvas[:, :, p_h:p_h + out_h, p_w:p_w + out_w]
    # The bias comes last (THNN: a rank-1 GEMM with beta=1 after col2im); adding it
    # also makes the cropped view a contiguous array.
    out = out + bias[None, :, None, None] if bias is not None else np.ascontiguousarray(out)
    return out[0] if squeeze else out


def _col2im(canvas: np.ndarray, columns: np.ndarray, top: int, span_h: int, span_w: int,
            stride: tuple[int, int]) -> None:
    """Scatter-add ``columns`` (nOut, kH, kW, h, w) onto ``canvas`` (nOut, H, W) in THNN's (i, j) tap order.

    Output planes are independent, so they are split over the CPU cores; each pixel
    still receives its taps in the same order.
    """
    n_out, k_h, k_w = columns.shape[:3]
    s_h, s_w = stride

    def add(start: int, stop: int) -> None:
        for i in range(k_h):
            for j in range(k_w):
                canvas[start:stop, top + i:top + i + span_h:s_h, j:j + span_w:s_w] += columns[start:stop, i, j]

    parallel_ranges(n_out, columns[0].size, add)
