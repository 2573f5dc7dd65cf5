"""Torch7 file format layer: the only code the three implementations share.

    from t7file import load_module_tree
    root = load_module_tree("model.t7")      # T7Module, raises T7Error subclasses
    for module in root.walk(): print(module.lua_path, module.torch_class)
"""

from t7file.errors import T7Error, T7FormatError, T7ModelError, UnsupportedModuleError, describe_path
from t7file.reader import T7Storage, T7Tensor, read_object
from t7file.tree import T7Module, TensorStorage, load_module_tree, module_tree_from_object, trace_paths
from t7file.writer import dumps_t7, write_t7

__all__ = [
    "T7Error",
    "T7FormatError",
    "T7ModelError",
    "T7Module",
    "T7Storage",
    "T7Tensor",
    "TensorStorage",
    "UnsupportedModuleError",
    "describe_path",
    "dumps_t7",
    "load_module_tree",
    "module_tree_from_object",
    "read_object",
    "trace_paths",
    "write_t7",
]
