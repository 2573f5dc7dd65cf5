"""``texture-nets inspect FILE.t7``: print the module tree with Lua paths, hyper-parameters and parameters."""

from __future__ import annotations

import argparse

import numpy as np

from t7file import T7Module, load_module_tree

ORDER = 10

# Scalar fields that are bookkeeping, not hyper-parameters.
_BOOKKEEPING = {"train", "_type", "output", "gradInput", "prev_batch_size", "inplace", "__class__"}
_GRADIENT_FIELDS = {"gradWeight", "gradBias"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="print a .t7 model's module tree (Lua paths, hyper-parameters, parameter shapes and counts)",
        description="Print the module tree of a Torch7 .t7 file (binary or ASCII) like Torch's print, with each "
        "module's dotted Lua path, hyper-parameters, parameter shapes and counts. A malformed file gives one "
        "line on stderr and exit status 2.",
    )
    parser.add_argument("model", metavar="FILE.t7", help="Torch7 model file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = load_module_tree(args.model)
    print(render_tree(root))
    return 0


def render_tree(root: T7Module) -> str:
    lines: list[str] = []
    total = 0
    warnings: list[str] = []

    def visit(module: T7Module, depth: int) -> None:
        nonlocal total
        path = module.lua_path or "root"
        params = module.parameter_arrays()
        count = sum(int(a.size) for a in params.values())
        total += count
        shapes = ", ".join(f"{name} {'x'.join(map(str, a.shape))}" for name, a in params.items())
        dtype = next((str(a.dtype) for a in params.values()), "")
        detail = f"  [{shapes}; {count:,} params, {dtype}]" if params else ""
        lines.append(f"{'  ' * depth}({path}) {describe(module)}{detail}")
        for name, array in params.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                bad = int(array.size - np.count_nonzero(np.isfinite(array)))
                warnings.append(f"warning: {module.torch_class} at Lua path {path}: {name} has {bad} NaN/Inf values")
        for child in module.children:
            visit(child, depth + 1)

    visit(root, 0)
    lines.append(f"total: {total:,} parameters in {sum(1 for _ in root.walk())} modules; layout: {guess_layout(root)}")
    return "\n".join(lines + warnings)


def describe(module: T7Module) -> str:
    """Torch-print-like one-liner for the classes of the generator, generic key=value otherwise."""
    f = module.fields
    cls = module.torch_class
    try:
        if cls.endswith("SpatialConvolution") or cls.endswith("SpatialFullConvolution"):
            text = (f"{cls}({f['nInputPlane']} -> {f['nOutputPlane']}, {f['kW']}x{f['kH']}"
                    f", {f.get('dW', 1)},{f.get('dH', 1)}, {f.get('padW', 0)},{f.get('padH', 0)}")
            if "adjW" in f:
                text += f", {f.get('adjW', 0)},{f.get('adjH', 0)}"
            return text + ")"
        if cls == "nn.SpatialReplicationPadding":
            return f"{cls}(l={f['pad_l']}, r={f['pad_r']}, t={f['pad_t']}, b={f['pad_b']})"
        if cls == "nn.InstanceNormalization":
            inner = " with inner bn" if isinstance(f.get("bn"), dict) else ""
            return f"{cls}({f.get('nOutput', '?')}, eps={f.get('eps', 1e-5):g}){inner}"
    except KeyError:
        pass
    scalars = [f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
               for key, value in sorted(f.items())
               if key not in _BOOKKEEPING and key not in _GRADIENT_FIELDS
               and isinstance(value, bool | int | float | str) and not key.startswith("_")]
    return f"{cls}({', '.join(scalars)})" if scalars else cls


def guess_layout(root: T7Module) -> str:
    """'pretrained' (2016, TVLoss first, stride-2 convs with zero padding), 'head' (johnson.lua today) or 'other'."""
    top = [child.torch_class for child in root.children]
    if not top:
        return "other"
    if top[0] == "nn.TVLoss" and "nn.SpatialFullConvolution" in top:
        return "pretrained (texture_nets 2016)"
    if top[-1] == "nn.TVLoss" and "nn.SpatialFullConvolution" in top:
        return "head (texture_nets models/johnson.lua)"
    return "other (not a texture_nets johnson generator)"
