"""A faithful reproduction of a FLAWED port: the published tf_texture_net (the seed), deviations included.

This exists so that users can watch the harness find the seed's drift, layer by
layer. Do not use it to stylize. It walks the same module tree and records the
same Lua paths as the faithful ``tf`` backend; where the seed did what Torch
does (stacked 1-pixel SYMMETRIC replication pads, moments-based IN, ReLU,
residual adds) it uses the very same ops (:mod:`tf_impl.layers`). Its three
deviations from Torch7 (docs/torch7-semantics.md, "The published TensorFlow port"), reproduced on purpose:

1. **Stride-2 convolutions run VALID, without Torch's zero padding.** The seed
   ran every ``nn.SpatialConvolution`` as ``tf.nn.conv2d(..., padding='VALID')``
   and ignored ``padW/padH``; in the pretrained layout only the stride-2 convs
   (Lua paths 6 and 9) have padding, so they give ``floor((H-3)/2)+1`` rows
   instead of ``floor((H-1)/2)+1`` and see the image shifted by one pixel.
2. **Transposed convolutions: VALID with ``output_shape`` forced to the shape of
   the input of the matching stride-2 conv** (a stack: the last strided conv is
   undone first). TF then keeps ``full[0:O]`` of the scatter-add, where Torch
   keeps ``full[p : p + out]`` — a one-pixel shift at paths 17 and 20 (and
   different shapes wherever the strided convs already changed them).
3. **All convolution biases are dropped.** Harmless before an IN (its mean
   subtraction cancels a per-channel constant), wrong for the last conv (24),
   whose bias goes straight to the output.

The seed's IN uses its own constant ``epsilon = 1e-5`` (equal to the modules'
eps). An earlier version of the seed also transposed kernels with a bare
``np.transpose(w)`` (kH and kW swapped); the published version does not, and
neither does this reproduction (the kernels come from :mod:`tf_impl.weights`).

The seed handled the 2016 pretrained layout only; on the head layout (strided
convs preceded by a replication pad, no built-in padding) its forced output
shapes cannot be satisfied, so :func:`check_seed_layout` refuses such models.
"""

from __future__ import annotations

import tensorflow as tf

from contract import BackendError
from tf_impl import layers
from tf_impl.network import FaithfulOps
from tf_impl.weights import LayerSpec

SEED_EPSILON = 1e-5  # hard-coded in the seed's instance_norm


class SeedOps(FaithfulOps):
    """The seed's layer arithmetic. ``state['before_strided']`` is the stack of shapes of strided-conv inputs."""

    name = "tf-seed"

    def conv(self, spec: LayerSpec, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None, state: dict) -> tf.Tensor:
        hp = spec.hparams
        if hp["dH"] > 1 or hp["dW"] > 1:
            state.setdefault("before_strided", []).append(tf.shape(x))
        # Deviations 1 and 3: VALID whatever Torch's padW/padH, no bias.
        return tf.nn.conv2d(x, kernel, strides=[1, hp["dH"], hp["dW"], 1], padding="VALID")

    def fullconv(self, spec: LayerSpec, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None,
                 state: dict) -> tf.Tensor:
        hp = spec.hparams
        stack = state.get("before_strided") or []
        n_out = tf.shape(kernel)[2]
        if stack:
            # Deviation 2: the seed's conv_transpose(x, w, output_shape=<shape before the strided conv>).
            before = stack.pop()
            output_shape = tf.stack([before[0], before[1], before[2], n_out])
            return tf.nn.conv2d_transpose(x, kernel, output_shape, strides=[1, hp["dH"], hp["dW"], 1],
                                          padding="VALID")
        # Run in isolation (no strided conv upstream): the seed's rule applied to Torch's shapes,
        # output_shape = s*H, i.e. full[0 : s*H] of the scatter-add.
        shape = tf.shape(x)
        k_h, k_w = kernel.shape[0], kernel.shape[1]
        full_shape = tf.stack([shape[0], (shape[1] - 1) * hp["dH"] + k_h, (shape[2] - 1) * hp["dW"] + k_w, n_out])
        full = tf.nn.conv2d_transpose(x, kernel, full_shape, strides=[1, hp["dH"], hp["dW"], 1], padding="VALID")
        return full[:, :hp["dH"] * shape[1], :hp["dW"] * shape[2], :]

    def instnorm(self, spec: LayerSpec, x: tf.Tensor, scale: tf.Tensor | None, offset: tf.Tensor | None,
                 state: dict) -> tf.Tensor:
        # The seed's moments run in the input's dtype (float32), unlike Torch7's double sums.
        return layers.instance_norm(x, scale, offset, SEED_EPSILON, double_statistics=False)


def check_seed_layout(spec: LayerSpec) -> None:
    """Refuse models the seed could not run: strided convs need Torch's built-in padding (pretrained layout)."""
    strided = [layer for layer in spec.walk() if layer.kind == "conv" and max(layer.hparams["dH"],
                                                                              layer.hparams["dW"]) > 1]
    unpadded = [layer.lua_path for layer in strided if not (layer.hparams["padH"] or layer.hparams["padW"])]
    transposes = sum(1 for layer in spec.walk() if layer.kind == "fullconv")
    if unpadded or transposes > len(strided):
        raise BackendError(
            "tf-seed reproduces the published TF port, written for the 2016 pretrained layout (stride-2 convs "
            "with built-in zero padding, one per transposed conv); this model has "
            + (f"unpadded strided convs at Lua paths {', '.join(unpadded)}" if unpadded
               else f"{transposes} transposed convs for {len(strided)} strided convs")
        )
