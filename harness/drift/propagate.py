"""Carry one layer's deviation to the output through the baseline, to tell absorbed from harmful.

A divergence found in the isolated view is local: it says nothing about what the rest of the
network does with it. ``continue_from(root, path, value, ...)`` replaces the output of the
module at ``path`` by ``value`` and finishes the forward pass with the *baseline's* modules
(``run_leaf``: the baseline runner's ``run_module``), so the only deviation in the result is
the one injected. A dropped bias before an InstanceNormalization comes out as the baseline's
output again (absorbed by the norm's mean subtraction); one at the last convolution does not.

Containers are interpreted here, as Torch7 defines them (nn.Sequential chains, nn.ConcatTable
feeds its input to every member and returns the list, nn.CAddTable sums it, nn.Identity
repeats it, nn.Concat feeds every branch and joins their outputs along the channels in the first
branch's shape, docs/real-models.md); only leaf modules are run by the baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from t7file import T7Module, trace_paths

RunLeaf = Callable[[str, np.ndarray], np.ndarray]
OnTraced = Callable[[str, np.ndarray], None]
CONCATS = frozenset({"nn.Concat", "nn.DepthConcat"})
CONTAINERS = frozenset({"nn.Sequential", "nn.ConcatTable", "nn.CAddTable", "nn.Identity", *CONCATS})


def input_sources(root: T7Module) -> dict[str, str | None]:
    """For every traced path, the traced path whose output is its input (None: the network input)."""
    traced = set(trace_paths(root))
    sources: dict[str, str | None] = {}

    def visit(module: T7Module, source: str | None) -> str | None:
        """Returns the traced path holding this module's output value (its own path when traced)."""
        cls = module.torch_class
        if cls == "nn.Sequential":
            current = source
            for child in module.children:
                current = visit(child, current)
            result = current
        elif cls == "nn.ConcatTable":
            for child in module.children:
                visit(child, source)
            result = None  # a table: only a CAddTable consumes it, and a traced block records the sum
        elif cls in CONCATS:
            for child in module.children:
                visit(child, source)
            result = source  # the joined output is the Concat's own (traced) value
        elif cls == "nn.Identity":
            result = source
        else:
            result = source
        if module.lua_path in traced:
            sources[module.lua_path] = source
            return module.lua_path
        return result

    visit(root, None)
    return {path: sources[path] for path in trace_paths(root)}


def evaluate(module: T7Module, x, run_leaf: RunLeaf, on_traced: OnTraced | None, traced: set[str]):
    """Run ``module`` (any container) on ``x`` with the baseline's leaves; report traced values."""
    cls = module.torch_class
    if cls == "nn.Sequential":
        value = x
        for child in module.children:
            value = evaluate(child, value, run_leaf, on_traced, traced)
    elif cls == "nn.ConcatTable":
        value = [evaluate(child, x, run_leaf, on_traced, traced) for child in module.children]
    elif cls == "nn.CAddTable":
        value = _add(x)
    elif cls == "nn.Identity":
        value = x
    elif cls in CONCATS:
        value = _join([evaluate(child, x, run_leaf, on_traced, traced) for child in module.children])
    else:
        value = run_leaf(module.lua_path, x)
    if on_traced is not None and module.lua_path in traced:
        on_traced(module.lua_path, value)
    return value


def continue_from(root: T7Module, path: str, value: np.ndarray, module_inputs: dict[str, np.ndarray],
                  run_leaf: RunLeaf, on_traced: OnTraced | None = None) -> np.ndarray:
    """The network output when the module at ``path`` outputs ``value`` and everything else is the baseline.

    ``module_inputs``: every module's baseline input by Lua path (harness.core.tolerance.module_inputs),
    needed for the other members of a ConcatTable the path sits in.
    """
    traced = set(trace_paths(root))
    chain = _ancestors(root, path)  # [root, ..., parent of path, module at path]
    current = value
    for depth in range(len(chain) - 1, 0, -1):
        parent, child = chain[depth - 1], chain[depth]
        index = next(i for i, c in enumerate(parent.children) if c is child)
        if parent.torch_class == "nn.Sequential":
            for sibling in parent.children[index + 1:]:
                current = evaluate(sibling, current, run_leaf, on_traced, traced)
        elif parent.torch_class == "nn.ConcatTable":
            members = []
            for i, member in enumerate(parent.children):
                members.append(current if i == index else
                               evaluate(member, module_inputs[parent.lua_path], run_leaf, on_traced, traced))
            current = members
        elif parent.torch_class in CONCATS:
            current = _join([current if i == index else
                             evaluate(member, module_inputs[parent.lua_path], run_leaf, on_traced, traced)
                             for i, member in enumerate(parent.children)])
        else:
            raise ValueError(f"cannot continue through {parent.torch_class} at {parent.lua_path!r}")
        if on_traced is not None and parent.lua_path in traced:
            on_traced(parent.lua_path, current)
    if not isinstance(current, np.ndarray):
        raise ValueError("the network outputs a table, not a tensor")
    return current


def _ancestors(root: T7Module, path: str) -> list[T7Module]:
    chain = [root]
    module = root
    while module.lua_path != path:
        for child in module.children:
            if path == child.lua_path or path.startswith(child.lua_path + "."):
                module = child
                break
        else:
            raise KeyError(path)
        chain.append(module)
    return chain


def _join(branches: list[np.ndarray]) -> np.ndarray:
    """nn.Concat(2): the first branch's shape with the channels summed; each branch copied into its slice
    in row-major order (Torch's copy checks the element count only)."""
    n, _, h, w = branches[0].shape
    parts = []
    for branch in branches:
        if branch.shape[0] != n or branch.shape[2] * branch.shape[3] != h * w:
            raise ValueError(f"nn.Concat: a branch gives {branch.shape}, the first {branches[0].shape} "
                             "(sizes do not match)")
        parts.append(np.asarray(branch).reshape(n, branch.shape[1], h, w))
    return np.concatenate(parts, axis=1)


def _add(values) -> np.ndarray:
    if not isinstance(values, list) or not values:
        raise ValueError("nn.CAddTable needs a non-empty table of tensors")
    total = values[0]
    for term in values[1:]:
        total = total + term  # a shape mismatch raises here, with numpy's message
    return total
