"""TensorFlow ops that reproduce Torch7's layers exactly, in the published port's idiom. NHWC throughout.

* Replication padding: TF has no "edge" mode, but a 1-pixel SYMMETRIC pad
  repeats the border pixel, so n stacked 1-pixel SYMMETRIC pads replicate the
  edge n times (the seed's trick; exact). One SYMMETRIC pad of width n>1 is not
  replication padding, and REFLECT never is (FACTS §3).
* InstanceNormalization: ``tf.nn.moments`` over H, W (biased variance, per
  sample and channel) + ``tf.nn.batch_normalization`` — texture_nets' IN
  (FACTS §2), correct for any batch size because the moments are per sample.
* SpatialConvolution: explicit zero padding (``tf.pad`` CONSTANT) then a VALID
  cross-correlation, so ``out = floor((H + 2p - k)/s) + 1`` like Torch.
* SpatialFullConvolution: VALID ``conv2d_transpose`` (the full scatter-add, size
  ``(H-1)*s + k``) cropped to ``full[p : p + out]`` with
  ``out = (H-1)*s - 2p + k + adj`` — Torch's definition; the ``adj`` extra rows
  are at the bottom/right.
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
