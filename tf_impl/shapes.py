"""Torch7's shapes through a spec tree, computed before TensorFlow runs anything (no TF import).

The tf.functions take any N, H, W, so a size the model cannot take would surface as an
error deep inside TensorFlow, or not at all (a Concat of equal element counts reshapes
silently, as Torch7 does). The runners walk the shapes first to refuse such inputs in one
line naming the module, and to know the shape of every noise array a forward needs.

Shapes are Torch's N x C x H x W; formulas as in :mod:`tf_impl.layers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract import BackendError
from tf_impl.weights import LayerSpec

Shape = tuple[int, int, int, int]


@dataclass
class ShapeWalk:
    """Every module's input shape (by Lua path), the noise arrays a forward needs, the output shape."""

    inputs: dict[str, Shape] = field(default_factory=dict)
    noise: dict[str, Shape] = field(default_factory=dict)
    output: Shape | None = None


def walk_shapes(spec: LayerSpec, input_shape: tuple[int, ...]) -> ShapeWalk:
    """Walk ``spec`` on an input of ``input_shape`` (N x C x H x W); raise BackendError where Torch7 would fail."""
    result = ShapeWalk()
    out = _shape(spec, tuple(int(d) for d in input_shape), result)
    result.output = out if not isinstance(out, list) else None
    return result


def _where(layer: LayerSpec) -> str:
    return f"{layer.torch_class} at Lua path {layer.lua_path or '(root)'}"


def _fmt(shape) -> str:
    return "x".join(str(d) for d in shape)


def _shape(layer: LayerSpec, shape, result: ShapeWalk):
    result.inputs[layer.lua_path] = shape
    kind, hp = layer.kind, layer.hparams
    if kind == "sequential":
        for child in layer.children:
            shape = _shape(child, shape, result)
        return shape
    if kind == "concat":
        return [_shape(child, shape, result) for child in layer.children]
    if kind == "cadd":
        first = shape[0]
        for term in shape[1:]:
            if term != first:
                raise BackendError(f"{_where(layer)}: cannot add {_fmt(term)} to {_fmt(first)}")
        return first
    if isinstance(shape, list):
        raise BackendError(f"{_where(layer)} receives a table of tensors, not a tensor")
    n, c, h, w = shape
    if kind == "channel_concat":
        branches = [_shape(child, shape, result) for child in layer.children]
        first = branches[0]
        for index, branch in enumerate(branches[1:], start=2):
            if branch[0] != first[0] or branch[2] * branch[3] != first[2] * first[3]:
                raise BackendError(f"{_where(layer)}: sizes do not match (branch {index} gives {_fmt(branch)}, "
                                   f"branch 1 {_fmt(first)}); this input size does not suit the model")
        return (first[0], sum(branch[1] for branch in branches), first[2], first[3])
    expected = _channels_taken(layer)
    if expected is not None and c != expected:
        raise BackendError(f"{_where(layer)} takes {expected} channels; its input has {c} ({_fmt(shape)})")
    if kind == "conv":
        oh = (h + 2 * hp["padH"] - hp["kH"]) // hp["dH"] + 1
        ow = (w + 2 * hp["padW"] - hp["kW"]) // hp["dW"] + 1
        out = (n, layer.params["kernel"].shape[3], oh, ow)
    elif kind == "fullconv":
        out = (n, layer.params["kernel"].shape[2], (h - 1) * hp["dH"] - 2 * hp["padH"] + hp["kH"] + hp["adjH"],
               (w - 1) * hp["dW"] - 2 * hp["padW"] + hp["kW"] + hp["adjW"])
    elif kind in ("reppad", "circpad"):
        out = (n, c, h + hp["pad_t"] + hp["pad_b"], w + hp["pad_l"] + hp["pad_r"])
        if kind == "circpad" and min(out[2:]) < 2:
            raise BackendError(f"{_where(layer)}: its padded size {_fmt(out[2:])} is under 2x2, where "
                               "supplementary/utils.lua's row and column copies fail")
    elif kind == "avgpool":
        out = (n, c, (h - hp["kH"]) // hp["dH"] + 1 if h >= hp["kH"] else 0,
               (w - hp["kW"]) // hp["dW"] + 1 if w >= hp["kW"] else 0)
    elif kind == "upsample":
        out = (n, c, h * hp["scale_factor"], w * hp["scale_factor"])
    elif kind == "gennoise":
        if hp["mode"] == "planes":
            out = (n, hp["planes"], h, w)
            result.noise[layer.lua_path] = out
        else:
            if c < hp["first_channel"] + hp["planes"]:
                raise BackendError(f"{_where(layer)} fills channels {hp['first_channel'] + 1}-"
                                   f"{hp['first_channel'] + hp['planes']}; its input has {c}")
            result.noise[layer.lua_path] = (n, hp["planes"], h, w)
            out = shape
    else:  # identity, relu, leakyrelu, instnorm, batchnorm: same shape
        out = shape
    if min(out) < 1:
        raise BackendError(f"{_where(layer)}: the input {_fmt(shape)} is too small (it would give {_fmt(out)})")
    return out


def _channels_taken(layer: LayerSpec) -> int | None:
    """The channel count a layer's parameters fix (None when any will do)."""
    if layer.kind == "conv":
        return int(layer.params["kernel"].shape[2])  # HWIO
    if layer.kind == "fullconv":
        return int(layer.params["kernel"].shape[3])  # (kH, kW, nOut, nIn)
    if layer.kind == "batchnorm" and layer.params:  # without affine parameters train mode takes any count
        return int(layer.hparams["channels"])
    return None
