"""The generator as a ``tf.Module``: variables named by Lua path, forward built by walking the spec tree.

NHWC inside. The module owns one variable per Torch parameter (key
``"<lua path>/<name>"``, e.g. ``"12.1.2.2/kernel"``), so ``tf.train.Checkpoint``
and ``tf.saved_model.save`` capture it directly. Forward functions are
``tf.function``s with the input signature ``[None, None, None, 3]``: one trace
per dtype serves every batch size and image size (Torch's output shapes follow
from the layer formulas in :mod:`tf_impl.layers`).

The per-layer arithmetic is delegated to an *ops* object so that the seed's
flawed port (:mod:`tf_impl.seed`) can reuse the same walk and Lua paths while
changing only what the seed changed.
"""

from __future__ import annotations

import tensorflow as tf

from tf_impl import layers
from tf_impl.weights import LayerSpec

INPUT_CHANNELS = 3


class FaithfulOps:
    """Torch7's semantics, exactly (see :mod:`tf_impl.layers`). ``state`` is a per-forward scratch dict.

    ``double_statistics``: instance-norm sums in float64 like Torch7 (False for TensorFlow Lite,
    which has no float64 reductions).
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

    def instnorm(self, spec: LayerSpec, x: tf.Tensor, scale: tf.Tensor | None, offset: tf.Tensor | None,
                 state: dict) -> tf.Tensor:
        return layers.instance_norm(x, scale, offset, spec.hparams["eps"], self.double_statistics)


class Generator(tf.Module):
    """texture_nets' generator (any layout the spec walk accepts) with per-dtype forward functions.

    ``variable_dtype`` is the storage precision; each entry of ``compute_dtypes``
    gets ``output_<dtype>(x)`` and ``trace_<dtype>(x)`` tf.functions, casting the
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

    def _make_functions(self, dtype: tf.DType):
        signature = [tf.TensorSpec([None, None, None, INPUT_CHANNELS], dtype, name="x")]

        @tf.function(input_signature=signature, autograph=False)
        def output(x):
            return self.run(self._spec, x, dtype)

        @tf.function(input_signature=signature, autograph=False)
        def trace(x):
            collected: dict[str, tf.Tensor] = {}
            collected["output"] = self.run(self._spec, x, dtype, collected)
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

    def run(self, layer: LayerSpec, x, dtype: tf.DType, trace: dict | None = None, state: dict | None = None):
        """Run ``layer`` (and its subtree) on ``x``: a tensor, or a list of tensors after a ConcatTable."""
        state = {} if state is None else state
        kind = layer.kind
        if kind == "sequential":
            for child in layer.children:
                x = self.run(child, x, dtype, trace, state)
        elif kind == "concat":
            x = [self.run(child, x, dtype, trace, state) for child in layer.children]
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
        elif kind == "reppad":
            hp = layer.hparams
            x = layers.replication_pad(x, hp["pad_l"], hp["pad_r"], hp["pad_t"], hp["pad_b"])
        elif kind == "conv":
            x = self._ops.conv(layer, x, self._param(layer, "kernel", dtype), self._param(layer, "bias", dtype), state)
        elif kind == "fullconv":
            x = self._ops.fullconv(layer, x, self._param(layer, "kernel", dtype), self._param(layer, "bias", dtype),
                                   state)
        elif kind == "instnorm":
            x = self._ops.instnorm(layer, x, self._param(layer, "scale", dtype), self._param(layer, "offset", dtype),
                                   state)
        else:  # weights.py only produces the kinds above
            raise AssertionError(kind)
        if trace is not None and layer.lua_path in self._traced:
            trace[layer.lua_path] = x
        return x
