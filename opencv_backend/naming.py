"""Which OpenCV layer computes which Torch7 module: the names ``cv2.dnn.readNetFromTorch`` gives its layers.

OpenCV 4.x's Torch importer (modules/dnn/src/torch/torch_importer.cpp, ``TorchImporter::fill``) walks
the module tree in order and names every layer it creates ``l<k>_<type>``, ``k`` a counter it
increments per created layer. The rules, checked against ``Net.getLayerNames()`` for every model
this project runs (the runner checks them again on every load and refuses traces if they differ):

* ``nn.Sequential`` / ``nn.Inception`` create no layer; a Sequential's output is its last child's;
* ``nn.Concat``: its children first, then the counter skips one number (an internal split), then
  ``l<k>_torchMerge``, the Concat's output;
* ``nn.ConcatTable``: the counter skips one number *before* its children (no layer of its own);
* ``nn.CAddTable``: ``l<k>_torchCAddTable`` (a residual block's output);
* ``nn.InstanceNormalization``, and a batch norm saved with ``train = true`` when the net is read with
  ``evaluate = False``: two layers, ``l<k>_MVN`` then ``l<k+1>_BatchNorm`` (mean 0, variance 1, the
  module's weight, bias and eps); the module's output is the BatchNorm's (the MVN output, before the
  affine step, has no Torch7 counterpart);
* every other module: one layer, of the importer's type for known classes (``Convolution``,
  ``Deconvolution``, ``Pooling``, ``ReLU``, ``Resize``, ``Identity``, ...) and of the class name
  without its ``nn.``/``cudnn.``/``cunn.``/``fbcunn.`` prefix for classes it does not know (which
  then need a custom layer registered under that name).
"""

from __future__ import annotations

from dataclasses import dataclass

from t7file import T7Module

PREFIXES = ("nn.", "cudnn.", "cunn.", "fbcunn.")
# Torch class (no prefix) -> OpenCV layer type, for the classes the importer knows and these models use.
IMPORTER_TYPES = {
    "SpatialConvolution": "Convolution", "SpatialConvolutionMM": "Convolution",
    "SpatialFullConvolution": "Deconvolution", "SpatialAveragePooling": "Pooling", "SpatialMaxPooling": "Pooling",
    "ReLU": "ReLU", "Identity": "Identity", "SpatialUpSamplingNearest": "Resize",
}
BATCH_NORMS = frozenset({"SpatialBatchNormalization", "BatchNormalization"})


def short_class(torch_class: str) -> str:
    for prefix in PREFIXES:
        if torch_class.startswith(prefix):
            return torch_class[len(prefix):]
    return torch_class


@dataclass(frozen=True)
class LayerPlan:
    """The importer's layers for one module tree.

    names: every layer name in creation order (what ``Net.getLayerNames()`` returns);
    layers: Lua path -> the layers created for that module itself (empty for containers);
    outputs: Lua path -> the layer whose output is the module's output (absent when none is).
    """

    names: tuple[str, ...]
    layers: dict[str, tuple[str, ...]]
    outputs: dict[str, str]

    def path_of(self, layer_name: str) -> str | None:
        for path, names in self.layers.items():
            if layer_name in names:
                return path
        return None


def plan_layers(root: T7Module, evaluate: bool) -> LayerPlan:
    """Simulate the importer's naming on ``root`` read with ``readNetFromTorch(..., evaluate=evaluate)``."""
    counter = [0]
    names: list[str] = []
    layers: dict[str, tuple[str, ...]] = {}
    outputs: dict[str, str] = {}

    def new(kind: str) -> str:
        counter[0] += 1
        name = f"l{counter[0]}_{kind}"
        names.append(name)
        return name

    def walk(module: T7Module) -> str | None:
        cls = short_class(module.torch_class)
        own: list[str] = []
        out: str | None = None
        if cls in ("Sequential", "Inception"):
            for child in module.children:
                out = walk(child) or out
        elif cls == "Concat":
            for child in module.children:
                walk(child)
            counter[0] += 1  # the importer's split layer id, never created
            own.append(new("torchMerge"))
        elif cls == "ConcatTable":
            counter[0] += 1
            for child in module.children:
                walk(child)
        elif cls == "CAddTable":
            own.append(new("torchCAddTable"))
        elif cls == "InstanceNormalization" or (cls in BATCH_NORMS and module.flag("train", False)
                                                 and not evaluate):
            own.extend([new("MVN"), new("BatchNorm")])
        elif cls in BATCH_NORMS:
            own.append(new("BatchNorm"))
        else:
            own.append(new(IMPORTER_TYPES.get(cls, cls)))
        layers[module.lua_path] = tuple(own)
        if own:
            out = own[-1]
        if out is not None:
            outputs[module.lua_path] = out
        return out

    walk(root)
    return LayerPlan(tuple(names), layers, outputs)
