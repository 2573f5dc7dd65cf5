"""THNN BatchNormalization's training-mode arithmetic, shared by nn.InstanceNormalization and
nn.SpatialBatchNormalization (docs/torch7-semantics.md, docs/real-models.md).

For every channel c of an N x C x L view (L = H*W), over its N*L values:

* ``mean = (real) sum / count``, the sum accumulated in double (``accreal``) and rounded first;
* ``invstd = (real) (1 / sqrt(ss / count + eps))``, ``ss`` the double sum of the element-type squares of
  the element-type differences ``x - mean``;
* ``y = ((x - mean) * invstd) * gamma + beta``, each step rounded to the element type.

An instance norm is this on the 1 x (N*C) x L view (Torch7 runs BatchNorm on 1 x N*C x H x W).

Two ways to compute the same numbers:

* :func:`normalize_plain`: whole-tensor ops. ``torch.sum(x, dtype=float64)`` writes a float64 copy of the
  whole activation before summing, and each step is a full pass with a fresh full-size temporary: at 512²
  with 32 channels that is 192 MiB of fresh memory per norm, and every fresh page costs a page fault.
* :func:`normalize_blocked`: the same ops on blocks of whole channels of about ``BLOCK_ELEMENTS`` values,
  one block at a time while it is in the cache, through one float64 scratch block: the only full-size
  allocation is the output. With one sample a channel's sums are the same ATen reductions over the same
  values as in the plain path (a block never splits a channel); with several, ATen may add a channel's
  values in another order.
* :func:`normalize_rows`: the channels-last layout (torch_impl.build keeps float32 activations in it for
  oneDNN's convolutions), where a channel's values are a column of an R x C matrix: blocks of rows, each
  channel's double sum accumulated block after block.

Both are used for float32 only, where another order of the same double additions cannot show: the mean and
invstd are rounded to float32, and they come out as the plain path's unless a double sum lands within a few
double ulps of a float32 rounding boundary (bit-identical on every case of parity_tests/
test_torch_speed_paths.py, with blocks down to one value, and on the committed and v1 models). Float64 keeps
the plain path, whose sums other orders would change in the last bits.

:func:`normalize` picks the path in eager runs; while a graph is being captured (torch.jit.trace,
torch.export, the TorchScript-based ONNX exporter) it is always the plain one: a Python loop over blocks
would be unrolled there into size-specific slices, and exported artefacts take any size.
"""

from __future__ import annotations

import torch

# 4 MiB of float32 per block (8 MiB in the float64 scratch: in the 32 MiB L3). Whole forwards at 512² on 2 threads
# (full-width generator, v1 pebble net): 128 Ki-1 Mi values per block within 3 % of each other on a quiet machine,
# 32-64 Ki up to 1.5x slower, 4 Mi 10 % slower. Every op is a parallel region whose two threads must both run: with
# another process busy on one of the 2 cores the generator took 8.9 s (median) with 256 Ki blocks, 4.3 s with 1 Mi,
# 2.7 s with 4 Mi (the whole-tensor code before: 4.3 s in a similar run). 1 Mi keeps the quiet speed, halves that.
BLOCK_ELEMENTS = 1 << 20


def capturing_graph() -> bool:
    """Whether this forward is being recorded into a graph (jit tracing, torch.export/dynamo) rather than run."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def channels_last(x: torch.Tensor) -> bool:
    """Whether the 4-D ``x`` is laid out N x H x W x C in memory (and not also plainly contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def blocked(x: torch.Tensor) -> bool:
    """Whether ``x`` takes a blocked path: float32 in an eager run."""
    return x.dtype == torch.float32 and not capturing_graph()


def normalize(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Normalise every channel of the N x C x L tensor ``x`` over its N*L values; ``gamma``/``beta`` hold C values.
    ``out``: where to write (``x`` itself for an in-place run), else a new tensor."""
    if not blocked(x):
        result = normalize_plain(x, gamma, beta, eps)
        return result if out is None else out.copy_(result)
    return normalize_blocked(x, gamma, beta, eps, out)


def batch_norm_2d(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Training-mode batch norm of the N x C x H x W ``x``: each channel over its N*H*W values, in x's layout.
    ``out``: ``x`` itself for an in-place run, else None."""
    n, c, h, w = x.shape
    if channels_last(x) and blocked(x):
        out = torch.empty_like(x) if out is None else out  # channels last too
        normalize_rows(_rows(x, n * h * w), gamma, beta, eps, _rows(out, n * h * w))
        return out
    return _plain_layout(x, (n, c, h * w), gamma, beta, eps, out)


def instance_norm_2d(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """Torch7's instance norm of the N x C x H x W ``x``: each of the N*C planes over its H*W values, in x's
    layout. Torch7 views the planes as the channels of one 1 x (N*C) x (H*W) batch norm. ``out``: ``x``
    itself for an in-place run, else None."""
    n, c, h, w = x.shape
    if channels_last(x) and blocked(x):
        out = torch.empty_like(x) if out is None else out
        for sample in range(n):
            normalize_rows(_rows(x[sample:sample + 1], h * w), gamma, beta, eps, _rows(out[sample:sample + 1], h * w))
        return out
    return _plain_layout(x, (1, n * c, h * w), gamma.repeat(n), beta.repeat(n), eps, out)


def _plain_layout(x: torch.Tensor, shape: tuple[int, int, int], gamma: torch.Tensor, beta: torch.Tensor,
                  eps: float, out: torch.Tensor | None) -> torch.Tensor:
    """:func:`normalize` on the N x C x L view of ``x`` in the plain layout (a channels-last view would make ATen
    add the same values in another order), as a 4-D tensor of x's shape, written into ``out`` when given."""
    flat_out = out.view(shape) if out is not None and out.is_contiguous() else None
    result = normalize(x.contiguous().view(shape), gamma, beta, eps, flat_out).view(x.shape)
    return result if out is None or flat_out is not None else out.copy_(result)


def _rows(x: torch.Tensor, count: int) -> torch.Tensor:
    """The channels-last N x C x H x W ``x`` as its (N*H*W) x C matrix: a view, no copy."""
    return x.permute(0, 2, 3, 1).view(count, x.shape[1])


def normalize_plain(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """Whole-tensor version (traceable, shape-generic)."""
    count = x.shape[0] * x.shape[2]
    # sum(dtype=float64) accumulates in double; the double sum is rounded first, then divided in the element type.
    mean = torch.sum(x, dim=(0, 2), keepdim=True, dtype=torch.float64).to(x.dtype) / count
    centered = x - mean
    square_sum = torch.sum(centered * centered, dim=(0, 2), keepdim=True, dtype=torch.float64)
    invstd = (1.0 / torch.sqrt(square_sum / count + eps)).to(x.dtype)
    # ((x - mean) * invstd) * gamma + beta in that order (same roundings), in place on the one full-size temporary.
    return centered.mul_(invstd).mul_(gamma.view(1, -1, 1)).add_(beta.view(1, -1, 1))


def normalize_blocked(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Block-by-block version of :func:`normalize_plain` (same values, far less memory traffic); ``out`` may
    be ``x`` itself (each block is read before it is written)."""
    x = x.contiguous()
    batch, channels, length = x.shape
    count = batch * length
    out = torch.empty_like(x) if out is None else out
    step = max(1, BLOCK_ELEMENTS // max(1, count))
    scratch = torch.empty(min(step, channels) * count, dtype=torch.float64, device=x.device)
    gamma, beta = gamma.view(1, -1, 1), beta.view(1, -1, 1)
    for first in range(0, channels, step):
        last = min(channels, first + step)
        block, result = x[:, first:last], out[:, first:last]
        wide = scratch[:batch * (last - first) * length].view(batch, last - first, length)
        wide.copy_(block)  # the float64 values of this block only, while they are in the cache
        mean = wide.sum(dim=(0, 2), keepdim=True).to(x.dtype) / count
        torch.sub(block, mean, out=result)
        # The product is computed in the element type (the inputs' type) and then widened into the float64
        # out: the element-type squares of THNN, summed in double.
        torch.mul(result, result, out=wide)
        invstd = (1.0 / torch.sqrt(wide.sum(dim=(0, 2), keepdim=True) / count + eps)).to(x.dtype)
        result.mul_(invstd).mul_(gamma[:, first:last]).add_(beta[:, first:last])
    return out


def normalize_rows(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
                   out: torch.Tensor) -> None:
    """Normalise every column of the contiguous R x C matrix ``x`` over its R values, into ``out`` (R x C)."""
    count, channels = x.shape
    step = max(1, BLOCK_ELEMENTS // max(1, channels))
    scratch = torch.empty(min(step, count) * channels, dtype=torch.float64, device=x.device)
    starts = range(0, count, step)
    total = torch.zeros(channels, dtype=torch.float64, device=x.device)
    for first in starts:
        block = x[first:first + step]
        wide = scratch[:block.numel()].view(block.shape)
        wide.copy_(block)
        total += wide.sum(dim=0)
    mean = total.to(x.dtype) / count
    total.zero_()
    for first in starts:
        block, result = x[first:first + step], out[first:first + step]
        torch.sub(block, mean, out=result)
        wide = scratch[:block.numel()].view(block.shape)
        torch.mul(result, result, out=wide)  # element-type squares, widened (see normalize_blocked)
        total += wide.sum(dim=0)
    invstd = (1.0 / torch.sqrt(total / count + eps)).to(x.dtype)
    for first in starts:
        out[first:first + step].mul_(invstd).mul_(gamma).add_(beta)
