"""The graph converted for TF Lite only: Torch7's layers in ops whose output shapes TF Lite knows at prepare time.

The ``tf`` backend keeps the seed's idiom (:mod:`tf_impl.layers`). Three of those ops cost TF Lite
dearly (docs/benchmarks.md, "TF Lite at 2048²"; full-width generator, one forward, peak RSS):

* ``tf.nn.conv2d_transpose`` needs its output shape as a tensor computed from the input's at run
  time; the converted TRANSPOSE_CONV then has a *dynamic* output, and TF Lite allocates every tensor
  downstream of it outside its arena plan, none reused (10 GiB at 2048²), and XNNPACK does not take
  it (its output shape is not a constant). Here nn.SpatialFullConvolution is a stride-1 ``conv2d`` with
  ``sH·sW·nOut`` output channels (one sub-kernel and the bias per output phase) followed by
  ``tf.nn.depth_to_space`` and, where Torch7's size is not a multiple of the stride, a crop by
  constants: every shape follows the input's when the interpreter prepares.
* Stacked 1-pixel SYMMETRIC pads become MIRROR_PADs, which XNNPACK does not take, splitting the graph
  into 14 partitions. Here nn.SpatialReplicationPadding is slices of the edge rows/columns and
  concatenations (of at most four inputs each: a 9-input one ran outside XNNPACK).
* XNNPACK keeps ``kH·kW`` pointers per output pixel for a convolution, for the interpreter's life: 2.6 GiB
  for the first 9x9 layer at 2048², 0.3 GiB for the last 3x3 one. Here such a layer on few planes
  correlates the concatenated column shifts of its input with a ``kH x 1`` kernel (:func:`unfolds_columns`),
  and one to at most 3 planes sums the shifted outputs of a 1x1 convolution per tap (:func:`splits_taps`).

All are Torch7's definitions exactly (docs/torch7-semantics.md): the same products, summed in another
order, and pads that copy values. Measured on the full-width generator (2 cores, load ~2-3): peak RSS at
2048² 10 176 -> 3 667 MiB, at 1024² 3 050 -> 1 452 MiB; the whole ``output`` graph one XNNPACK partition.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_impl.network import FaithfulOps
from tf_impl.weights import LayerSpec


def phase_layout(k: int, s: int, p: int, adj: int) -> tuple[int, int, int, int, int]:
    """One axis of the lowered SpatialFullConvolution: ``(first, taps, pad_before, pad_after, crop_after)``.

    Torch7 scatters input row ``i`` times kernel row ``κ`` onto row ``i·s + κ`` of the full result and
    keeps rows ``p .. p + out - 1`` (``out = (H - 1)·s - 2p + k + adj``; rows past the full result
    hold the bias only). Output row ``o = u·s + ρ`` (``0 ≤ ρ < s``) is therefore
    ``Σ_d x[u + d] · K[ρ + p - d·s]`` over the ``d`` whose kernel row exists: a stride-1 correlation
    over ``u`` whose ``s`` output phases ``ρ`` ``depth_to_space`` interleaves. ``d`` runs from
    ``first = ceil((p - k + 1) / s)`` over ``taps`` rows; the ``U = ceil(out / s)`` blocks need the input
    padded by ``pad_before = -first`` and ``pad_after`` zero rows (negative: cropped), and the
    interleaved result loses its last ``crop_after = U·s - out`` rows. None depends on H.
    """
    first = -((k - 1 - p) // s)  # ceil((p - k + 1) / s)
    last = (s - 1 + p) // s
    taps = last - first + 1
    blocks_over_input = -((2 * p - k - adj) // s) - 1  # U - H = ceil((k + adj - 2p) / s) - 1
    pad_after = blocks_over_input + last
    crop_after = s * (blocks_over_input + 1) + 2 * p - k - adj
    return first, taps, -first, pad_after, crop_after


def _phase_rows(k: int, s: int, p: int) -> np.ndarray:
    """``[taps, s]`` kernel rows ``ρ + p - (first + t)·s`` of tap ``t`` and phase ``ρ``; ``k`` (a zero row) where
    that row does not exist."""
    first, taps, *_ = phase_layout(k, s, p, 0)
    rows = np.arange(s)[None, :] + p - (first + np.arange(taps)[:, None]) * s
    return np.where((rows >= 0) & (rows < k), rows, k)


def phase_kernel(kernel_hwoi: tf.Tensor, stride_hw: tuple[int, int], pad_hw: tuple[int, int]) -> tf.Tensor:
    """The SpatialFullConvolution kernel ``[kH, kW, nOut, nIn]`` as the lowered correlation's
    ``[tapsH, tapsW, nIn, sH·sW·nOut]`` (output channel ``(ρH·sW + ρW)·nOut + o``, depth_to_space's order).

    Built from the variable by a pad, gathers and reshapes, which TF Lite's converter folds into the
    CONV_2D's constant filter.
    """
    (s_h, s_w), (p_h, p_w) = stride_hw, pad_hw
    k_h, k_w, n_out, n_in = kernel_hwoi.shape
    rows, cols = _phase_rows(k_h, s_h, p_h), _phase_rows(k_w, s_w, p_w)
    padded = tf.pad(kernel_hwoi, [[0, 1], [0, 1], [0, 0], [0, 0]])  # row kH and column kW: zeros
    taps = tf.gather(tf.gather(padded, rows, axis=0), cols, axis=2)  # [tapsH, sH, tapsW, sW, nOut, nIn]
    return tf.reshape(tf.transpose(taps, [0, 2, 5, 1, 3, 4]), [rows.shape[0], cols.shape[0], n_in, s_h * s_w * n_out])


def _pad_or_crop(x_nhwc: tf.Tensor, axis: int, before: int, after: int) -> tf.Tensor:
    """Zero rows added (positive) or removed (negative) at both ends of ``axis``, by constants."""
    start, stop = max(0, -before), (after if after < 0 else None)
    if start or stop is not None:
        index = [slice(None)] * 4
        index[axis] = slice(start, stop)
        x_nhwc = x_nhwc[tuple(index)]
    if before > 0 or after > 0:
        pads = [[0, 0]] * 4
        pads[axis] = [max(0, before), max(0, after)]
        x_nhwc = tf.pad(x_nhwc, pads, mode="CONSTANT")
    return x_nhwc


def conv2d_transpose(x_nhwc: tf.Tensor, kernel_hwoi: tf.Tensor, bias: tf.Tensor | None, stride_hw: tuple[int, int],
                     pad_hw: tuple[int, int], adj_hw: tuple[int, int]) -> tf.Tensor:
    """nn.SpatialFullConvolution (``out = (H - 1)·s - 2p + k + adj``, weight ``[kH, kW, nOut, nIn]`` here) as
    a stride-1 correlation with the bias of every phase + depth_to_space + a crop by constants
    (:func:`phase_layout`). The bias is the correlation's own, added to the same products as Torch7's
    (before them rather than after), so the converter fuses it into the CONV_2D."""
    (s_h, s_w), (p_h, p_w), (a_h, a_w) = stride_hw, pad_hw, adj_hw
    k_h, k_w, n_out, _ = kernel_hwoi.shape
    _, _, pb_h, pa_h, ca_h = phase_layout(k_h, s_h, p_h, a_h)
    _, _, pb_w, pa_w, ca_w = phase_layout(k_w, s_w, p_w, a_w)
    x_nhwc = _pad_or_crop(_pad_or_crop(x_nhwc, 1, pb_h, pa_h), 2, pb_w, pa_w)
    phases = tf.nn.conv2d(x_nhwc, phase_kernel(kernel_hwoi, (s_h, s_w), (p_h, p_w)), strides=1, padding="VALID")
    if bias is not None:
        phases = tf.nn.bias_add(phases, tf.tile(bias, [s_h * s_w]))
    if s_h == s_w:
        y = tf.nn.depth_to_space(phases, s_h) if s_h > 1 else phases
    else:  # depth_to_space takes one block size: interleave rows and columns by reshapes
        shape = tf.shape(phases)
        n, h, w = shape[0], shape[1], shape[2]
        y = tf.reshape(phases, [n, h, w, s_h, s_w, n_out])
        y = tf.reshape(tf.transpose(y, [0, 1, 3, 2, 4, 5]), [n, h * s_h, w * s_w, n_out])
    if ca_h or ca_w:
        y = y[:, :(-ca_h or None), :(-ca_w or None), :]
    return y


def unfolds_columns(k_hw: tuple[int, int], n_in: int) -> bool:
    """Whether :func:`conv2d` unfolds the kernel's columns into channels: when the unfolded input
    (``kW·nIn`` floats a pixel) costs at most half the indirection pointers it saves.

    XNNPACK's convolution keeps ``kH·kW`` pointers (8 bytes each) per output pixel; unfolded, ``kH``.
    Measured (one CONV_2D, 1024², XNNPACK): the 9x9 convolution on 3 planes takes 777 MiB over its
    input, 640 MiB of them pointers (the same layer without XNNPACK: 138 MiB).
    """
    k_h, k_w = k_hw
    return k_w > 1 and 4 * k_w * n_in <= 4 * (k_w - 1) * k_h


def splits_taps(k_hw: tuple[int, int], stride_hw: tuple[int, int], n_out: int) -> bool:
    """Whether :func:`conv2d` computes every kernel tap's contribution by one 1x1 convolution (a GEMM, which keeps
    no pointers) and sums the shifted taps: for a stride-1 kernel wider than 1x1 with at most 3 output planes
    (the generators' last layer, whose ``kH·kW·nOut`` planes of taps are then few).

    Measured (full-width generator, 2048², one forward): peak RSS 3 920 -> 3 644 MiB; the last 3x3 layer's
    pointers (302 MiB, kept for the interpreter's life) become 27 planes of taps that live only in that layer.
    """
    return stride_hw == (1, 1) and k_hw[0] * k_hw[1] > 1 and n_out <= 3


def conv2d(x_nhwc: tf.Tensor, kernel_hwio: tf.Tensor, bias: tf.Tensor | None, stride_hw: tuple[int, int],
           pad_hw: tuple[int, int]) -> tf.Tensor:
    """nn.SpatialConvolution (symmetric zero padding, cross-correlation, ``out = floor((H + 2p - k) / s) + 1``).

    When :func:`splits_taps`, ``z = x ⋆ K`` reshaped to ``[1, 1, nIn, kH·kW·nOut]`` (plane ``(kh·kW + kw)·nOut +
    o``) and ``y = Σ z[kh:, kw:, tap (kh, kw)] + bias``. When :func:`unfolds_columns`, the ``kW`` column shifts of
    the padded input are concatenated on channels (channel ``kw·nIn + c``) and correlated with the ``kH x 1``
    kernel ``[kH, 1, kW·nIn, nOut]``. Both sum the same products as Torch7, in another order.
    """
    (s_h, s_w), (pad_h, pad_w) = stride_hw, pad_hw
    k_h, k_w, n_in, n_out = kernel_hwio.shape
    if pad_h or pad_w:
        x_nhwc = tf.pad(x_nhwc, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="CONSTANT")
    if splits_taps((k_h, k_w), (s_h, s_w), n_out):
        taps = tf.reshape(tf.transpose(kernel_hwio, [2, 0, 1, 3]), [1, 1, n_in, k_h * k_w * n_out])
        z = tf.nn.conv2d(x_nhwc, taps, strides=1, padding="VALID")
        y = None
        for kh in range(k_h):
            for kw in range(k_w):
                # output pixel (i, j) takes tap (kh, kw) at input pixel (i + kh, j + kw): the same crop for every tap
                plane = (kh * k_w + kw) * n_out
                term = z[:, kh:(kh - k_h + 1) or None, kw:(kw - k_w + 1) or None, plane:plane + n_out]
                y = term if y is None else y + term
        return y if bias is None else y + bias
    if unfolds_columns((k_h, k_w), n_in):
        # Column kw of output column j reads input column j·s + kw: the slice from kw, stopping kW - 1 - kw
        # columns before the end, with stride s, has floor((W - kW) / s) + 1 columns for every kw.
        shifts = [x_nhwc[:, :, kw:(kw - k_w + 1) or None:s_w, :] for kw in range(k_w)]
        x_nhwc = _concat_by_fours(shifts, axis=3)
        kernel_hwio = tf.reshape(kernel_hwio, [k_h, 1, k_w * n_in, n_out])
        s_w = 1
    y = tf.nn.conv2d(x_nhwc, kernel_hwio, strides=[1, s_h, s_w, 1], padding="VALID")
    return y if bias is None else tf.nn.bias_add(y, bias)


def replication_pad(x_nhwc: tf.Tensor, left: int, right: int, top: int, bottom: int) -> tf.Tensor:
    """nn.SpatialReplicationPadding(left, right, top, bottom): the edge row repeated ``top``/``bottom`` times
    and then the edge column (corners included) ``left``/``right`` times, by slices and concatenations.

    Negative pads crop first, as in Torch (the replicated edge is the cropped input's); equals
    ``numpy.pad(mode="edge")`` for any pad width (docs/torch7-semantics.md).
    """
    x_nhwc = _pad_or_crop(_pad_or_crop(x_nhwc, 1, min(0, top), min(0, bottom)), 2, min(0, left), min(0, right))
    for axis, before, after in ((1, top, bottom), (2, left, right)):
        if before <= 0 and after <= 0:
            continue
        index_first, index_last = [slice(None)] * 4, [slice(None)] * 4
        index_first[axis], index_last[axis] = slice(0, 1), slice(-1, None)
        first, last = x_nhwc[tuple(index_first)], x_nhwc[tuple(index_last)]
        parts = ([_repeat(first, before, axis)] if before > 0 else []) + [x_nhwc] + (
            [_repeat(last, after, axis)] if after > 0 else [])
        x_nhwc = tf.concat(parts, axis=axis)
    return x_nhwc


def _repeat(edge: tf.Tensor, times: int, axis: int) -> tf.Tensor:
    """``times`` copies of ``edge`` along ``axis``."""
    return _concat_by_fours([edge] * times, axis)


def _concat_by_fours(parts: list[tf.Tensor], axis: int) -> tf.Tensor:
    """``tf.concat(parts, axis)`` as concatenations of at most four inputs (XNNPACK refuses a CONCATENATION
    of more: measured, a 9-input one for a 4-pixel pad ran outside the delegate, splitting the graph)."""
    while len(parts) > 1:
        parts = [tf.concat(parts[i:i + 4], axis=axis) if len(parts[i:i + 4]) > 1 else parts[i]
                 for i in range(0, len(parts), 4)]
    return parts[0]


class LoweredOps(FaithfulOps):
    """:class:`FaithfulOps` with float32 statistics (TF Lite has no float64 sums), the lowered
    SpatialFullConvolution, the rewritten SpatialConvolution and replication padding by slices and concatenations."""

    name = "tflite"

    def __init__(self):
        super().__init__(double_statistics=False)

    def conv(self, spec: LayerSpec, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None, state: dict) -> tf.Tensor:
        hp = spec.hparams
        return conv2d(x, kernel, bias, (hp["dH"], hp["dW"]), (hp["padH"], hp["padW"]))

    def fullconv(self, spec: LayerSpec, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None,
                 state: dict) -> tf.Tensor:
        hp = spec.hparams
        return conv2d_transpose(x, kernel, bias, (hp["dH"], hp["dW"]), (hp["padH"], hp["padW"]),
                                (hp["adjH"], hp["adjW"]))

    def reppad(self, spec: LayerSpec, x: tf.Tensor, state: dict) -> tf.Tensor:
        hp = spec.hparams
        return replication_pad(x, hp["pad_l"], hp["pad_r"], hp["pad_t"], hp["pad_b"])
