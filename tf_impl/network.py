"""The generator as a ``tf.Module``: variables named by Lua path, forward built by walking the spec tree.

NHWC inside. The module owns one variable per Torch parameter (key
``"<lua path>/<name>"``, e.g. ``"12.1.2.2/kernel"``), so ``tf.train.Checkpoint``
and ``tf.saved_model.save`` capture it directly. Forward functions are
``tf.function``s with the input signature ``(x, noise)``: ``x`` is
``[None, None, None, C]`` with C the model's input planes (3 for the johnson and v1
texture nets, 6 for the v1 style nets, 4 for the doodle), and ``noise`` a dict, keyed
by Lua path, of one ``[None, None, None, planes]`` tensor per noise module (empty for
models that draw none; docs/real-models.md "Noise, reproducibly"). One trace per dtype
serves every batch size and image size. The batch-norm mode is part of the graph,
fixed when the spec was built.

The per-layer arithmetic of the convolutions and normalisations is delegated to an
*ops* object so that the seed's flawed port (:mod:`tf_impl.seed`) can reuse the same
walk and Lua paths while changing only what the seed changed.
"""

from __future__ import annotations

import tensorflow as tf

from tf_impl import layers
from tf_impl.weights import LayerSpec, noise_layout, spec_input_planes


def noise_input_name(lua_path: str) -> str:
    """The name a noise input carries in signatures (SavedModel, TF Lite): ``noise_1_1_2`` for ``1.1.2``."""
    return "noise_" + lua_path.replace(".", "_")


class FaithfulOps:
    """Torch7's semantics, exactly (see :mod:`tf_impl.layers`). ``state`` is a per-forward scratch dict.

    ``double_statistics``: instance- and batch-norm sums in float64 like Torch7 (False for
    TensorFlow Lite, which has no float64 reductions).
    """

    name = "tf"

    def __init__(self, double_statistics: bool = True):
        self.double_statistics = double_statistics

    def conv(self, spec: LayerSpec, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None, state: dict) -> tf.Tensor:
        hp = spec.hparams
        return layers.conv2d(x, kernel, bias, (hp["dH"], hp["dW"]), (hp["padH"], hp["padW"]))

    def fullconv(self, spec: LayerSpec, x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None,
                 state: dict) -> tf.Tensor:
        hp = spec.hparams
        return layers.conv2d_transpose(x, kernel, bias, (hp["dH"], hp["dW"]), (hp["padH"], hp["padW"]),
                                       (hp["adjH"], hp["adjW"]))

    def reppad(self, spec: LayerSpec, x: tf.Tensor, state: dict) -> tf.Tensor:
        hp = spec.hparams
        return layers.replication_pad(x, hp["pad_l"], hp["pad_r"], hp["pad_t"], hp["pad_b"])

    def instnorm(self, spec: LayerSpec, x: tf.Tensor, scale: tf.Tensor | None, offset: tf.Tensor | None,
                 state: dict) -> tf.Tensor:
        return layers.instance_norm(x, scale, offset, spec.hparams["eps"], self.double_statistics)

    def batchnorm(self, spec: LayerSpec, x: tf.Tensor, params: dict[str, tf.Tensor | None], state: dict) -> tf.Tensor:
        if spec.hparams["mode"] == "train":
            return layers.batch_norm(x, params["scale"], params["offset"], spec.hparams["eps"], self.double_statistics)
        # evaluate: running mean, invstd precomputed as Torch7 rounds it (tf_impl.weights).
        return layers.normalize(x - params["mean"], params["invstd"], params["scale"], params["offset"])


class Generator(tf.Module):
    """texture_nets' generator (any layout the spec walk accepts) with per-dtype forward functions.

    ``variable_dtype`` is the storage precision; each entry of ``compute_dtypes``
    gets ``output_<dtype>(x, noise)`` and ``trace_<dtype>(x, noise)`` tf.functions, casting the
    variables when the two differ (a float64 store casts to float32 exactly like
    Torch's ``:float()``, round to nearest).
    """

    def __init__(self, spec: LayerSpec, trace_paths: list[str], variable_dtype: str = "float32",
                 compute_dtypes: tuple[str, ...] = ("float32",), ops: FaithfulOps | None = None,
                 name: str = "texture_nets_generator"):
        super().__init__(name=name)
        self._spec = spec
        self._ops = ops or FaithfulOps()
        self.trace_path_list = list(trace_paths)
        self._traced = frozenset(trace_paths)
        self.input_planes = spec_input_planes(spec)
        self.noise_planes = noise_layout(spec)
        self.params = {
            f"{layer.lua_path}/{param_name}": tf.Variable(array.astype(variable_dtype), trainable=False,
                                                          name=f"{layer.lua_path}_{param_name}")
            for layer in spec.walk() for param_name, array in layer.params.items()
        }
        for dtype in compute_dtypes:
            output_fn, trace_fn = self._make_functions(tf.as_dtype(dtype))
            setattr(self, f"output_{dtype}", output_fn)
            setattr(self, f"trace_{dtype}", trace_fn)

    @property
    def spec(self) -> LayerSpec:
        return self._spec

    def input_signature(self, dtype: tf.DType) -> list:
        """``[x, {lua path: noise}]`` with dynamic batch and spatial sizes."""
        noise = {path: tf.TensorSpec([None, None, None, planes], dtype, name=noise_input_name(path))
                 for path, planes in self.noise_planes.items()}
        return [tf.TensorSpec([None, None, None, self.input_planes], dtype, name="x"), noise]

    def _make_functions(self, dtype: tf.DType):
        signature = self.input_signature(dtype)

        @tf.function(input_signature=signature, autograph=False)
        def output(x, noise):
            return self.run(self._spec, x, dtype, noise=noise)

        @tf.function(input_signature=signature, autograph=False)
        def trace(x, noise):
            collected: dict[str, tf.Tensor] = {}
            collected["output"] = self.run(self._spec, x, dtype, collected, noise=noise)
            return collected

        return output, trace

    def function(self, dtype: str, trace: bool):
        """The tf.function computing the output (or the output and the trace) in ``dtype``."""
        return getattr(self, f"{'trace' if trace else 'output'}_{dtype}")

    # -- the walk -----------------------------------------------------------
    def _param(self, layer: LayerSpec, name: str, dtype: tf.DType) -> tf.Tensor | None:
        variable = self.params.get(f"{layer.lua_path}/{name}")
        if variable is None:
            return None
        return variable if variable.dtype == dtype else tf.cast(variable, dtype)

    def run(self, layer: LayerSpec, x, dtype: tf.DType, trace: dict | None = None, state: dict | None = None,
            noise: dict | None = None):
        """Run ``layer`` (and its subtree) on ``x``: a tensor, or a list of tensors after a ConcatTable.

        ``noise`` maps the Lua path of each noise module in the subtree to its NHWC array.
        """
        state = {} if state is None else state
        kind, hp = layer.kind, layer.hparams
        if kind == "sequential":
            for child in layer.children:
                x = self.run(child, x, dtype, trace, state, noise)
        elif kind == "concat":
            x = [self.run(child, x, dtype, trace, state, noise) for child in layer.children]
        elif kind == "channel_concat":
            branches = [self.run(child, x, dtype, trace, state, noise) for child in layer.children]
            x = layers.channel_concat(branches, name=f"concat_{layer.lua_path.replace('.', '_')}")
        elif kind == "cadd":
            # nn.CAddTable: output = input[1], then += input[2], ... in order.
            total = x[0]
            for term in x[1:]:
                total = total + term
            x = total
        elif kind == "identity":
            x = tf.identity(x)
        elif kind == "relu":
            x = tf.nn.relu(x)
        elif kind == "leakyrelu":
            x = layers.leaky_relu(x, hp["negval"])
        elif kind == "reppad":
            x = self._ops.reppad(layer, x, state)
        elif kind == "circpad":
            x = layers.circular_pad(x, hp["pad_l"], hp["pad_r"], hp["pad_t"], hp["pad_b"])
        elif kind == "avgpool":
            x = layers.average_pool(x, (hp["kH"], hp["kW"]), (hp["dH"], hp["dW"]))
        elif kind == "upsample":
            x = layers.upsample_nearest(x, hp["scale_factor"])
        elif kind == "gennoise":
            drawn = tf.cast(noise[layer.lua_path], dtype)
            x = drawn if hp["mode"] == "planes" else layers.fill_noise(x, drawn, hp["first_channel"], hp["planes"])
        elif kind == "conv":
            x = self._ops.conv(layer, x, self._param(layer, "kernel", dtype), self._param(layer, "bias", dtype), state)
        elif kind == "fullconv":
            x = self._ops.fullconv(layer, x, self._param(layer, "kernel", dtype), self._param(layer, "bias", dtype),
                                   state)
        elif kind == "instnorm":
            x = self._ops.instnorm(layer, x, self._param(layer, "scale", dtype), self._param(layer, "offset", dtype),
                                   state)
        elif kind == "batchnorm":
            params = {name: self._param(layer, name, dtype) for name in ("scale", "offset", "mean", "invstd")}
            x = self._ops.batchnorm(layer, x, params, state)
        else:  # weights.py only produces the kinds above
            raise AssertionError(kind)
        if trace is not None and layer.lua_path in self._traced:
            trace[layer.lua_path] = x
        return x
