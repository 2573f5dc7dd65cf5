"""``texture-nets run``: one forward pass of a backend on an .npy input, optionally with a trace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fileio.errors import UserError
from texture_nets.model_choice import add_model_arguments, add_noise_arguments

ORDER = 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the generator on an .npy array (the exact tensor forward receives) and save the raw output",
        description="Run one backend's generator on X, an .npy array holding exactly the tensor the Torch7 model's "
        "forward receives (N×C×H×W or C×H×W, Torch layout: for the johnson generators and the v1 texture nets C=3, "
        "RGB in [0,1] resp. zeros; for a v1 style net C=6, the image twice; for the doodle net C=4, a one-hot mask "
        "/ 10; docs/real-models.md), and save its raw output Y (VGG space: BGR, 0-255 scale, mean subtracted; not "
        "deprocessed). Models that draw noise get it from --noise, or drawn as Lua Torch7 does after "
        "torch.manualSeed(--seed). With --trace, also save every traced module's output (noise modules included) in "
        "an .npz keyed by dotted Lua path ('6', '13.1.2.4').",
    )
    parser.add_argument("--backend", default="reference",
                        help="backend name (reference, torch, tf, tf-seed, tflite, an entry point, or "
                        "module:factory); default: reference")
    add_model_arguments(parser)
    parser.add_argument("--input", required=True, type=Path, metavar="X.npy")
    parser.add_argument("--output", required=True, type=Path, metavar="Y.npy")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--trace", type=Path, metavar="T.npz", help="also save each module's output, keyed by Lua path")
    add_noise_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fileio.arrays import array_shape, load_array
    from fileio.atomic import atomic_write, check_destination
    from harness.core.memory import check_memory
    from harness.core.registry import get_backend
    from harness.core.runs import forward, load_runner
    from texture_nets.model_choice import choose_model, run_noise

    for destination in (args.output, args.trace):
        if destination is not None:
            if _same_file(destination, args.input):
                raise UserError(f"refusing to overwrite the input {args.input} with {destination}")
            check_destination(destination)  # fail before the (slow) forward pass
    choice = choose_model(args)
    backend = get_backend(args.backend)
    if args.dtype not in backend.dtypes:
        raise UserError(f"backend '{backend.name}' supports {', '.join(backend.dtypes)}, not {args.dtype}")
    shape = array_shape(args.input)
    shape = (1, *shape) if len(shape) == 3 else shape
    if len(shape) == 4:  # anything else gets load_array's one line
        check_memory(choice.root, [backend.name], args.dtype, shape, traced=args.trace is not None,
                     what=f"{args.input} ({'x'.join(map(str, shape))})", size_option=None)
    x = load_array(args.input, choice.planes)
    noise = run_noise(args, choice, x.shape, args.dtype)
    runner = load_runner(backend, choice.model, args.dtype, root=choice.root, batchnorm=choice.batchnorm)
    output, trace = forward(runner, x.astype(args.dtype), trace=args.trace is not None, noise=noise)
    nonfinite = int(output.size - np.count_nonzero(np.isfinite(output)))
    atomic_write(args.output, lambda temp: _write_with(np.save, temp, output))
    if args.trace is not None:
        atomic_write(args.trace, lambda temp: _write_with(np.savez, temp, **trace))
    print(f"{backend.name} {args.dtype}: {tuple(x.shape)} -> {tuple(output.shape)} written to {args.output}"
          + (f", trace of {len(trace)} modules to {args.trace}" if args.trace is not None else "")
          + (f" ({len(noise)} noise modules, {_noise_source(args)})" if noise else ""))
    if nonfinite:
        print(f"warning: the output holds {nonfinite} NaN/Inf values", file=sys.stderr)
        return 1
    return 0


def _noise_source(args: argparse.Namespace) -> str:
    return f"noise from {args.noise}" if args.noise is not None else f"noise drawn with seed {args.seed or 0}"


def _write_with(save, path: Path, *args, **kwargs) -> None:
    # Through an open file: given a path, np.save/np.savez append ".npy"/".npz" to the temporary name.
    with open(path, "wb") as handle:
        save(handle, *args, **kwargs)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
