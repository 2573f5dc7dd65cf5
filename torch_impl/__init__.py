"""PyTorch rebuild of the texture_nets generator, read from a Torch7 .t7 file.

    from torch_impl import load_torch_model
    model = load_torch_model("model.t7", "float32")     # torch.nn.Module, eval mode
    model.get_submodule("13.1.2.4")                       # modules are named by Lua path

    model = load_torch_model("starry_style.t7", "float64", batchnorm="train")
    output = model(x, {"1.2.2": noise, ...})             # noise by Lua path (nn.GenNoise)

Independent of ``reference/`` and ``tf_impl/``: it reads raw Torch-layout arrays
from ``t7file`` and does its own layout mapping (docs/torch7-semantics.md and
docs/real-models.md are the spec).
"""

from torch_impl.build import SUPPORTED_CLASSES, build_module, load_torch_model

__all__ = ["SUPPORTED_CLASSES", "build_module", "load_torch_model"]
