"""What the module tree says before anything runs: channels into each module, and the size rule.

Two facts the builder and the exports need that no single module records:

* the channels each module receives (:func:`input_channels`), so that a batch norm declared with
  fewer features than the channels it gets can take its extra gamma/beta values from the file's
  flat parameter storage (docs/real-models.md, "The aliasing trap");
* the multiple that input sizes must be (:func:`size_multiple`): the pyramid and doodle nets
  concatenate levels that must come back to one size (docs/real-models.md, "Sizes"), so export
  examples and checks use sizes that work.

Written for torch_impl alone (independence rule): a static walk over ``t7file.T7Module`` fields.
"""

from __future__ import annotations

from t7file import T7Module

CONVOLUTIONS = frozenset({"nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution"})
CONCATS = frozenset({"nn.Concat"})


def model_input_planes(root: T7Module) -> int | None:
    """The channels ``model:forward`` receives: the first convolution's input planes, in execution
    (pre-order) order; None when the tree has no convolution (any width runs)."""
    for module in root.walk():
        if module.torch_class in CONVOLUTIONS or module.torch_class == "nn.SpatialFullConvolution":
            return module.integer("nInputPlane")
    return None


def input_channels(root: T7Module, planes: int | None = None) -> dict[str, int | None]:
    """Lua path -> channels of the tensor that module receives (None where the walk cannot tell).

    ``planes`` is the root's input width (default: :func:`model_input_planes`). Sequential threads
    the count through its children; Concat and ConcatTable give every branch the same input;
    Concat's output sums its branches' channels (nn.Concat(2)); CAddTable keeps the first tensor's.
    """
    found: dict[str, int | None] = {}
    planes = model_input_planes(root) if planes is None else planes

    def walk(module: T7Module, channels: int | None) -> int | list[int | None] | None:
        found[module.lua_path] = channels if not isinstance(channels, list) else None
        cls = module.torch_class
        if cls == "nn.Sequential":
            value: int | list[int | None] | None = channels
            for child in module.children:
                value = walk(child, value)  # type: ignore[arg-type]
            return value
        if cls in CONCATS:
            outputs = [walk(child, channels) for child in module.children]
            if module.integer("dimension", 2) == 2 and all(isinstance(c, int) for c in outputs):
                return sum(outputs)  # type: ignore[arg-type]
            return None
        if cls == "nn.ConcatTable":
            return [_single(walk(child, channels)) for child in module.children]
        if cls == "nn.CAddTable":
            return channels[0] if isinstance(channels, list) and channels else None
        if cls in CONVOLUTIONS or cls == "nn.SpatialFullConvolution":
            return module.integer("nOutputPlane")
        if cls == "nn.GenNoise" and "num_planes" in module.fields:
            return module.integer("num_planes")
        return channels

    walk(root, planes)
    return found


def size_multiple(root: T7Module) -> int:
    """The multiple that input heights and widths must be for the tree to run: the largest
    downsampling factor reached anywhere (average pooling and strided convolutions divide,
    nearest upsampling and transposed convolutions multiply back), when the tree concatenates
    levels (nn.Concat); 1 otherwise (the johnson generators take any size)."""
    if not any(module.torch_class in CONCATS for module in root.walk()):
        return 1
    largest = 1

    def walk(module: T7Module, factor: float) -> float:
        nonlocal largest
        largest = max(largest, round(factor))
        cls = module.torch_class
        if cls == "nn.Sequential":
            for child in module.children:
                factor = walk(child, factor)
            return factor
        if cls in CONCATS or cls == "nn.ConcatTable":
            outputs = [walk(child, factor) for child in module.children]
            return outputs[0] if outputs else factor
        if cls == "nn.SpatialAveragePooling" or cls in CONVOLUTIONS:
            factor *= module.integer("dH", 1)
        elif cls == "nn.SpatialUpSamplingNearest":
            factor /= module.integer("scale_factor", 1)
        elif cls == "nn.SpatialFullConvolution":
            factor /= module.integer("dH", 1)
        largest = max(largest, round(factor))
        return factor

    walk(root, 1.0)
    return largest


def _single(value: int | list[int | None] | None) -> int | None:
    return value if isinstance(value, int) else None


def fixed_input_width(root: T7Module) -> int | None:
    """The input width the tree insists on: its first convolution's planes, else the feature count of
    its first normalisation (one-module trees); None when nothing fixes it (padding, ReLU: any width)."""
    planes = model_input_planes(root)
    if planes is not None:
        return planes
    for module in root.walk():
        if module.torch_class in ("nn.InstanceNormalization", "nn.SpatialBatchNormalization",
                                  "cudnn.SpatialBatchNormalization"):
            for name in ("nOutput",):
                if isinstance(module.fields.get(name), int | float) and module.fields[name] >= 1:
                    return int(module.fields[name])
            for name in ("running_mean", "weight"):
                array = module.optional_array(name)
                if array is not None and array.size:
                    return int(array.size)
    return None
