"""TensorFlow ops that reproduce Torch7's layers exactly, in the published port's idiom. NHWC throughout.

* Replication padding: TF has no "edge" mode, but a 1-pixel SYMMETRIC pad
  repeats the border pixel, so n stacked 1-pixel SYMMETRIC pads replicate the
  edge n times (the seed's trick; exact). One SYMMETRIC pad of width n>1 is not
  replication padding, and REFLECT never is (docs/torch7-semantics.md).
* InstanceNormalization: ``tf.nn.moments`` over H, W (biased variance, per
  sample and channel) + ``tf.nn.batch_normalization`` — texture_nets' IN
  (docs/torch7-semantics.md), correct for any batch size because the moments are per sample.
* SpatialConvolution: explicit zero padding (``tf.pad`` CONSTANT) then a VALID
  cross-correlation, so ``out = floor((H + 2p - k)/s) + 1`` like Torch.
* SpatialFullConvolution: VALID ``conv2d_transpose`` (the full scatter-add, size
  ``(H-1)*s + k``) cropped to ``full[p : p + out]`` with
  ``out = (H-1)*s - 2p + k + adj`` — Torch's definition; the ``adj`` extra rows
  are at the bottom/right.

The v1-era modules (docs/real-models.md):

* SpatialBatchNormalization: Torch7's own order, ``((x - mean) * invstd) * gamma + beta``,
  with train-mode statistics per channel over N, H, W summed in float64 (Torch7's accreal).
* LeakyReLU: ``tf.where(x > 0, x, x * negval)`` with ``negval`` in the run's dtype.
* SpatialAveragePooling: ``tf.nn.avg_pool2d`` VALID (no padding in these files).
* SpatialUpSamplingNearest: ``tf.repeat`` along H and W (pure data movement).
* SpatialCircularPadding: zero pad, then supplementary/utils.lua's row and column copies.
* Concat(2): ``tf.concat`` on channels after a reshape of each branch to the first one's
  N x H x W, which is Torch's row-major ``copy`` when the spatial shapes differ.
"""

from __future__ import annotations

import tensorflow as tf


def replication_pad(x_nhwc: tf.Tensor, left: int, right: int, top: int, bottom: int) -> tf.Tensor:
    """nn.SpatialReplicationPadding(left, right, top, bottom) on NHWC as stacked 1-pixel SYMMETRIC pads.

    Negative pads crop (as in Torch, where the crop is applied to the input
    before the edge is replicated on the other side).
    """
    # Crop first: Torch indexes the cropped input, and the replicated edge is the cropped one's.
    h0, h1 = max(0, -top), max(0, -bottom)
    w0, w1 = max(0, -left), max(0, -right)
    if h0 or h1 or w0 or w1:
        shape = tf.shape(x_nhwc)
        x_nhwc = x_nhwc[:, h0:shape[1] - h1, w0:shape[2] - w1, :]
    top, bottom, left, right = max(0, top), max(0, bottom), max(0, left), max(0, right)
    while top or bottom or left or right:
        step = [[0, 0], [min(top, 1), min(bottom, 1)], [min(left, 1), min(right, 1)], [0, 0]]
        x_nhwc = tf.pad(x_nhwc, step, mode="SYMMETRIC")
        top, bottom, left, right = top - step[1][0], bottom - step[1][1], left - step[2][0], right - step[2][1]
    return x_nhwc


def instance_norm(x_nhwc: tf.Tensor, scale: tf.Tensor | None, offset: tf.Tensor | None, eps: float,
                  double_statistics: bool = True) -> tf.Tensor:
    """texture_nets' InstanceNormalization: per (sample, channel) mean and biased variance over H, W.

    Torch7's BatchNormalization (which texture_nets' IN runs per instance) accumulates the sums
    in double even for FloatTensors, then normalises in float. Float32 moments add an error
    growing like sqrt(H*W) (measured 3.3e-4 of the output scale on a 256x256 photo, against
    4e-6 with double sums), so by default the statistics of a float32 input are taken in
    float64 and cast back. ``double_statistics=False`` keeps them in float32: TensorFlow Lite
    has no float64 reductions, and the seed's port computed them in float32.
    """
    if double_statistics and x_nhwc.dtype == tf.float32:
        mean, variance = tf.nn.moments(tf.cast(x_nhwc, tf.float64), axes=[1, 2], keepdims=True)
        mean, variance = tf.cast(mean, tf.float32), tf.cast(variance, tf.float32)
    else:
        mean, variance = tf.nn.moments(x_nhwc, axes=[1, 2], keepdims=True)
    return tf.nn.batch_normalization(x_nhwc, mean, variance, offset, scale, eps)


def conv2d(x_nhwc: tf.Tensor, kernel_hwio: tf.Tensor, bias: tf.Tensor | None, stride_hw: tuple[int, int],
           pad_hw: tuple[int, int]) -> tf.Tensor:
    """nn.SpatialConvolution: symmetric zero padding (when Torch has it), VALID cross-correlation, bias."""
    pad_h, pad_w = pad_hw
    if pad_h or pad_w:
        x_nhwc = tf.pad(x_nhwc, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="CONSTANT")
    y = tf.nn.conv2d(x_nhwc, kernel_hwio, strides=[1, stride_hw[0], stride_hw[1], 1], padding="VALID")
    return y if bias is None else tf.nn.bias_add(y, bias)


def conv2d_transpose(x_nhwc: tf.Tensor, kernel_hwoi: tf.Tensor, bias: tf.Tensor | None, stride_hw: tuple[int, int],
                     pad_hw: tuple[int, int], adj_hw: tuple[int, int]) -> tf.Tensor:
    """nn.SpatialFullConvolution: full scatter-add, crop ``full[p : p + out]``, bias.

    When adj > p the kept window runs past the full result; Torch fills those
    rows with the bias only, which a VALID transpose reproduces by asking for up
    to ``s - 1`` extra (zero) rows — the most it accepts, and Torch requires adj < s.
    """
    (s_h, s_w), (p_h, p_w), (a_h, a_w) = stride_hw, pad_hw, adj_hw
    k_h, k_w = kernel_hwoi.shape[0], kernel_hwoi.shape[1]
    shape = tf.shape(x_nhwc)
    n, h, w = shape[0], shape[1], shape[2]
    full_h = (h - 1) * s_h + k_h + max(0, a_h - p_h)
    full_w = (w - 1) * s_w + k_w + max(0, a_w - p_w)
    out_h = (h - 1) * s_h - 2 * p_h + k_h + a_h
    out_w = (w - 1) * s_w - 2 * p_w + k_w + a_w
    full = tf.nn.conv2d_transpose(x_nhwc, kernel_hwoi, tf.stack([n, full_h, full_w, tf.shape(kernel_hwoi)[2]]),
                                  strides=[1, s_h, s_w, 1], padding="VALID")
    y = full[:, p_h:p_h + out_h, p_w:p_w + out_w, :]
    return y if bias is None else tf.nn.bias_add(y, bias)


def batch_norm(x_nhwc: tf.Tensor, scale: tf.Tensor | None, offset: tf.Tensor | None, eps: float,
               double_statistics: bool = True) -> tf.Tensor:
    """nn.SpatialBatchNormalization in train mode: the statistics of this very batch, per channel over N, H, W.

    Torch7's arithmetic (THNN BatchNormalization.c, docs/real-models.md): ``sum`` in accreal
    (double); ``mean = (real) sum / count``; ``ss`` = double sum of the squares of ``x - mean``
    (computed in the element type); ``invstd = (real)(1 / sqrt(ss / count + eps))`` (biased
    variance); ``y = ((x - mean) * invstd) * gamma + beta``. The order matters in float32: the v1
    nets have channels whose mean is a thousand times their spread, where ``x * invstd`` followed
    by a shift (``tf.nn.batch_normalization``) would cancel catastrophically. A batch whose plane
    is constant (a 1x1 level of a batch of one) gives ``x - mean = 0`` and therefore ``beta``.
    ``double_statistics=False`` sums in the input's dtype (TensorFlow Lite has no float64), the
    mean as a shifted sum (see below).
    """
    dtype = x_nhwc.dtype
    sum_dtype = tf.float64 if double_statistics else dtype
    # N*H*W from the element count and the static channel count: three ops instead of a shape product.
    channels = x_nhwc.shape[-1] if x_nhwc.shape[-1] is not None else tf.shape(x_nhwc)[-1]
    count = tf.size(x_nhwc) // channels
    if double_statistics:
        total = tf.reduce_sum(tf.cast(x_nhwc, sum_dtype), axis=[0, 1, 2])
        mean = tf.cast(total, dtype) / tf.cast(count, dtype)
    else:
        # float32 sums (TF Lite) of a channel whose mean is a thousand times its spread lose the mean
        # to rounding; summing the differences from one of its values (shifted data) keeps them small.
        # Measured on the v1 starry net: worst path 1.0e-4 -> 5.7e-5 (the tf float32 graph: 5.8e-5).
        shift = x_nhwc[:1, :1, :1, :]
        mean = shift + tf.reduce_sum(x_nhwc - shift, axis=[0, 1, 2], keepdims=True) / tf.cast(count, dtype)
    centred = x_nhwc - mean
    squares = tf.reduce_sum(tf.cast(centred * centred, sum_dtype), axis=[0, 1, 2])
    invstd = tf.cast(1.0 / tf.sqrt(squares / tf.cast(count, sum_dtype) + eps), dtype)
    return normalize(centred, invstd, scale, offset)


def normalize(centred: tf.Tensor, invstd: tf.Tensor, scale: tf.Tensor | None, offset: tf.Tensor | None) -> tf.Tensor:
    """``((x - mean) * invstd) * gamma + beta`` from ``x - mean``, in Torch7's order (no affine: gamma 1, beta 0)."""
    y = centred * invstd
    if scale is not None:
        y = y * scale
    if offset is not None:
        y = y + offset
    return y


def leaky_relu(x_nhwc: tf.Tensor, negval: float) -> tf.Tensor:
    """nn.LeakyReLU: ``x > 0 ? x : x * negval``, negval in the run's dtype.

    Not ``tf.nn.leaky_relu``: its ``alpha`` is a 32-bit attribute, so in float64 it multiplies by
    ``(double) 0.01f`` (measured 2.2e-8 relative off Torch7's double ``0.01``).
    """
    return tf.where(x_nhwc > 0, x_nhwc, x_nhwc * tf.constant(negval, dtype=x_nhwc.dtype))


def average_pool(x_nhwc: tf.Tensor, k_hw: tuple[int, int], stride_hw: tuple[int, int]) -> tf.Tensor:
    """nn.SpatialAveragePooling without padding: ``floor((H - kH) / dH) + 1`` rows, each a window mean."""
    return tf.nn.avg_pool2d(x_nhwc, ksize=list(k_hw), strides=list(stride_hw), padding="VALID")


def upsample_nearest(x_nhwc: tf.Tensor, scale: int) -> tf.Tensor:
    """nn.SpatialUpSamplingNearest(scale): every pixel repeated scale x scale."""
    if scale == 1:
        return tf.identity(x_nhwc)
    return tf.repeat(tf.repeat(x_nhwc, scale, axis=1), scale, axis=2)


def circular_pad(x_nhwc: tf.Tensor, left: int, right: int, top: int, bottom: int) -> tf.Tensor:
    """texture_nets supplementary/utils.lua's nn.SpatialCircularPadding, rule for rule (docs/real-models.md).

    The output (H + top + bottom) x (W + left + right) is zeros with the input (negative pads crop)
    in its interior; then, 1-based, row 1 := row h-1 and row h := row 2, then column 1 := column
    w-1 and column w := column 2, over the full height. Pad 1 is a torus wrap; pad 0 is **not** an
    identity (it overwrites the input's border); wider pads copy padding zeros. Needs h, w >= 2.
    """
    h0, h1 = max(0, -top), max(0, -bottom)
    w0, w1 = max(0, -left), max(0, -right)
    if h0 or h1 or w0 or w1:
        shape = tf.shape(x_nhwc)
        x_nhwc = x_nhwc[:, h0:shape[1] - h1, w0:shape[2] - w1, :]
    pads = [[0, 0], [max(0, top), max(0, bottom)], [max(0, left), max(0, right)], [0, 0]]
    if any(any(pair) for pair in pads):
        x_nhwc = tf.pad(x_nhwc, pads, mode="CONSTANT")
    # Row 1 := row h-1 first, then row h := row 2 (row 2 is untouched by the first copy when h >= 3,
    # and both copies are no-ops when h = 2), so one concat reproduces the two sequential copies.
    # Negative indices keep the slices free of shape arithmetic (h-1 is -2, 1-based row h is -1).
    x_nhwc = tf.concat([x_nhwc[:, -2:-1], x_nhwc[:, 1:-1], x_nhwc[:, 1:2]], axis=1)
    return tf.concat([x_nhwc[:, :, -2:-1], x_nhwc[:, :, 1:-1], x_nhwc[:, :, 1:2]], axis=2)


def channel_concat(outputs: list[tf.Tensor], name: str = "concat") -> tf.Tensor:
    """nn.Concat(2): the branches' outputs side by side on channels, in the first branch's spatial shape.

    Torch7 copies each branch into its channel slice with ``copy``, which checks element counts
    only: a branch of another spatial shape with the same count (2x4 beside 4x2) is copied in
    row-major order, plane by plane. In NHWC that copy is a plain reshape to the first branch's
    N x H x W (each channel's H*W values keep their row-major order), and a free one when the
    shapes agree; different counts fail in the reshape, as they fail in Torch7's copy.
    """
    first = outputs[0]
    hw = tf.shape(first)[:3]
    parts = [first]
    for index, y in enumerate(outputs[1:], start=2):
        channels = y.shape[-1]
        # The target shape as a concat of a shape slice and a constant, not a stack of scalars: TF Lite's
        # converter needs the channel count static and refuses a reshape to several stacked unknowns.
        last = [channels] if channels is not None else tf.shape(y)[3:]
        copied = tf.reshape(y, tf.concat([hw, last], axis=0), name=f"{name}_branch{index}")
        copied.set_shape([None, None, None, channels])
        parts.append(copied)
    return tf.concat(parts, axis=3)


def fill_noise(x_nhwc: tf.Tensor, noise_nhwc: tf.Tensor, first_channel: int, planes: int) -> tf.Tensor:
    """texture_nets' nn.GenNoise (in place on its input): channels ``first_channel`` to
    ``first_channel + planes - 1`` (0-based) replaced by the injected noise, the others kept."""
    parts = [x_nhwc[..., :first_channel]] if first_channel else []
    parts.append(noise_nhwc)
    if x_nhwc.shape[-1] is None or x_nhwc.shape[-1] > first_channel + planes:
        parts.append(x_nhwc[..., first_channel + planes:])
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=3)
