"""Shapes through a Torch7 module tree, without computing anything: what each module will output.

The shape walk answers three questions before a forward pass is run:

* which sizes a model accepts (a pyramid net's ``nn.Concat`` needs its branches to agree), and
  the nearest ones that work when a size does not;
* what every noise module will draw (its shape: harness.core.noise);
* how much memory a run will need (harness.core.memory).

Shapes follow Torch7's formulas (docs/real-models.md, docs/torch7-semantics.md); a module class
the walk does not know raises :class:`ShapeError` naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from contract.families import CONVOLUTIONS
from t7file import T7Module, describe_path

Shape = tuple[int, ...]  # N x C x H x W
Value = Shape | list  # a tensor's shape, or a Lua table (list) of them after a ConcatTable

_SAME_SHAPE = frozenset({
    "nn.ReLU", "cudnn.ReLU", "nn.LeakyReLU", "nn.Identity", "nn.TVLoss", "nn.InstanceNormalization",
    "nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization", "nn.NoiseFill",
})
_PADDINGS = frozenset({"nn.SpatialReplicationPadding", "nn.SpatialZeroPadding", "nn.SpatialReflectionPadding",
                       "nn.SpatialCircularPadding"})
_FULL_CONVOLUTIONS = frozenset({"nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution"})


class ShapeError(ValueError):
    """An input size the model cannot take (one line, naming the module)."""


@dataclass
class ShapeWalk:
    """The result of a walk: every module's output shape by Lua path (tensors only), each module's
    input shape, and the Concats that Torch7 would silently reshape (equal element counts)."""

    outputs: dict[str, Shape] = field(default_factory=dict)
    inputs: dict[str, Shape] = field(default_factory=dict)
    reshaped_concats: list[str] = field(default_factory=list)
    output: Shape = ()


def walk_shapes(root: T7Module, input_shape: Shape) -> ShapeWalk:
    """Shapes of every module for an input of ``input_shape`` (N x C x H x W). Raises ShapeError."""
    result = ShapeWalk()
    out = _shape(root, tuple(int(d) for d in input_shape), result)
    if not isinstance(out, tuple):
        raise ShapeError("the model outputs a table, not a tensor")
    result.output = out
    return result


def output_shape(root: T7Module, input_shape: Shape) -> Shape:
    return walk_shapes(root, input_shape).output


def _shape(module: T7Module, x: Value, result: ShapeWalk) -> Value:
    cls = module.torch_class
    if isinstance(x, tuple):
        result.inputs[module.lua_path] = x
    if cls == "nn.Sequential":
        for child in module.children:
            x = _shape(child, x, result)
        out = x
    elif cls == "nn.ConcatTable":
        out = [_shape(child, x, result) for child in module.children]
    elif cls == "nn.CAddTable":
        out = _cadd(module, x)
    elif cls in ("nn.Concat", "nn.DepthConcat"):
        out = _concat(module, [_shape(child, x, result) for child in module.children], result)
    else:
        out = _leaf(module, _tensor(module, x))
    if isinstance(out, tuple):
        if min(out) < 1:
            raise ShapeError(f"{cls} at {describe_path(module.lua_path)} would output {_dims(out)}: the input is too "
                             "small for this model")
        result.outputs[module.lua_path] = out
    return out


def _tensor(module: T7Module, x: Value) -> Shape:
    if not isinstance(x, tuple):
        raise ShapeError(f"{module.torch_class} at {describe_path(module.lua_path)} receives a table, not a tensor")
    if len(x) != 4:
        raise ShapeError(f"{module.torch_class} at {describe_path(module.lua_path)} expects N x C x H x W, got "
                         f"{_dims(x)}")
    return x


def _leaf(module: T7Module, x: Shape) -> Shape:
    n, c, h, w = x
    cls = module.torch_class
    if cls in _SAME_SHAPE:
        return x
    if cls == "nn.GenNoise":
        # online-neural-doodle's GenNoise makes N x num_planes x H x W; texture_nets' fills its input.
        return (n, module.integer("num_planes"), h, w) if "num_planes" in module.fields else x
    if cls in _PADDINGS:
        left, right = module.integer("pad_l", 0), module.integer("pad_r", 0)
        top, bottom = module.integer("pad_t", 0), module.integer("pad_b", 0)
        return (n, c, h + top + bottom, w + left + right)
    if cls in CONVOLUTIONS:
        _planes(module, c, "nInputPlane")
        legacy = module.integer("padding", 0)
        return (n, module.integer("nOutputPlane"),
                _window(h, module.integer("kH"), module.integer("dH", 1), module.integer("padH", legacy)),
                _window(w, module.integer("kW"), module.integer("dW", 1), module.integer("padW", legacy)))
    if cls in _FULL_CONVOLUTIONS:
        _planes(module, c, "nInputPlane")
        return (n, module.integer("nOutputPlane"),
                (h - 1) * module.integer("dH", 1) - 2 * module.integer("padH", 0) + module.integer("kH")
                + module.integer("adjH", 0),
                (w - 1) * module.integer("dW", 1) - 2 * module.integer("padW", 0) + module.integer("kW")
                + module.integer("adjW", 0))
    if cls == "nn.SpatialAveragePooling":
        ceil = bool(module.fields.get("ceil_mode", False))
        return (n, c, _window(h, module.integer("kH"), module.integer("dH", 1), module.integer("padH", 0), ceil),
                _window(w, module.integer("kW"), module.integer("dW", 1), module.integer("padW", 0), ceil))
    if cls == "nn.SpatialUpSamplingNearest":
        scale = module.integer("scale_factor")
        return (n, c, h * scale, w * scale)
    raise ShapeError(f"{cls} at {describe_path(module.lua_path)}: no shape rule for this class")


def _window(size: int, kernel: int, stride: int, pad: int, ceil: bool = False) -> int:
    span = size + 2 * pad - kernel
    if span < 0:
        return 0
    return (math.ceil(span / stride) if ceil else span // stride) + 1


def _planes(module: T7Module, channels: int, field_name: str) -> None:
    expected = module.integer(field_name)
    if channels != expected:
        raise ShapeError(f"{module.torch_class} at {describe_path(module.lua_path)} expects {expected} input planes, "
                         f"gets {channels}")


def _cadd(module: T7Module, x: Value) -> Shape:
    if not isinstance(x, list) or not x:
        raise ShapeError(f"nn.CAddTable at {describe_path(module.lua_path)} needs a table of tensors")
    first = x[0]
    for other in x[1:]:
        if other != first:
            raise ShapeError(f"nn.CAddTable at {describe_path(module.lua_path)} adds {_dims(first)} and {_dims(other)}")
    return first


def _concat(module: T7Module, branches: list[Value], result: ShapeWalk) -> Shape:
    """nn.Concat(2): the first branch's shape with the channels summed; each branch is copied into its
    slice with ``copy``, which checks the element count only (Torch7's Concat never crops)."""
    if not branches:
        raise ShapeError(f"{module.torch_class} at {describe_path(module.lua_path)} has no branches")
    shapes = [_tensor(module, branch) for branch in branches]
    dimension = module.integer("dimension", 2)
    if dimension != 2:
        raise ShapeError(f"{module.torch_class} at {describe_path(module.lua_path)} concatenates along dimension "
                         f"{dimension}; only 2 (channels) is supported")
    n, _, h, w = shapes[0]
    for index, (bn, _, bh, bw) in enumerate(shapes[1:], start=2):
        if bn != n or bh * bw != h * w:
            raise ShapeError(
                f"nn.Concat at {describe_path(module.lua_path)}: branch {index} gives {bh}x{bw}, branch 1 gives {h}x{w}"
                " (Torch7: sizes do not match)")
        if (bh, bw) != (h, w) and module.lua_path not in result.reshaped_concats:
            result.reshaped_concats.append(module.lua_path)
    return (n, sum(shape[1] for shape in shapes), h, w)


def _dims(shape: Value) -> str:
    return "x".join(str(d) for d in shape) if isinstance(shape, tuple) else "a table"


# -- sizes ----------------------------------------------------------------------------------------------------------


def accepts(root: T7Module, height: int, width: int, channels: int, batch: int = 1) -> bool:
    """Whether the model runs on batch x channels x height x width with every Concat's sizes matching."""
    try:
        walk = walk_shapes(root, (batch, channels, height, width))
    except ShapeError:
        return False
    return not walk.reshaped_concats


def nearest_sizes(root: T7Module, height: int, width: int, channels: int, *, search: int = 256,
                  count: int = 2) -> list[tuple[int, int]]:
    """Up to ``count`` (height, width) pairs nearest to the request that the model accepts.

    Height and width are independent in these networks (every module treats them alike), so each
    is searched with the other held at a size that works."""
    def nearest(target: int, works) -> list[int]:
        found: list[int] = []
        for distance in range(search + 1):  # nearest first, the smaller size first on a tie
            for size in dict.fromkeys((target - distance, target + distance)):
                if size >= 1 and works(size):
                    found.append(size)
                    if len(found) == count:
                        return found
        return found

    # A square size that works anchors the search of each dimension.
    anchor = next((s for s in range(1, 4 * search) if accepts(root, s, s, channels)), None)
    if anchor is None:
        return []
    heights = nearest(height, lambda h: accepts(root, h, anchor, channels))
    widths = nearest(width, lambda w: accepts(root, anchor, w, channels))
    pairs = sorted({(h, w) for h in heights for w in widths if accepts(root, h, w, channels)},
                   key=lambda hw: (abs(hw[0] - height) + abs(hw[1] - width), hw))
    return pairs[:count]
