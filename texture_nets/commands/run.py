"""``texture-nets run``: one forward pass of a backend on an .npy input, optionally with a trace."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fileio.errors import UserError

ORDER = 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the generator on an N×3×H×W .npy array and save the raw output (and a per-layer trace)",
        description="Run one backend's generator on X (an .npy array N×3×H×W or 3×H×W, RGB in [0,1], Torch "
        "layout) and save its raw output Y (VGG space: BGR, 0-255 scale, mean subtracted; not deprocessed). "
        "With --trace, also save every traced module's output in an .npz keyed by dotted Lua path ('6', "
        "'13.1.2.4').",
    )
    parser.add_argument("--backend", default="reference",
                        help="backend name (reference, torch, tf, tf-seed, tflite, an entry point, or "
                        "module:factory); default: reference")
    parser.add_argument("--model", required=True, help="model: a .t7 file (or an exported artefact the backend reads)")
    parser.add_argument("--input", required=True, type=Path, metavar="X.npy")
    parser.add_argument("--output", required=True, type=Path, metavar="Y.npy")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--trace", type=Path, metavar="T.npz", help="also save each module's output, keyed by Lua path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fileio.atomic import atomic_write, check_destination
    from harness.core.registry import get_backend

    for destination in (args.output, args.trace):
        if destination is not None:
            if _same_file(destination, args.input):
                raise UserError(f"refusing to overwrite the input {args.input} with {destination}")
            check_destination(destination)  # fail before the (slow) forward pass
    x = load_input_array(args.input)
    backend = get_backend(args.backend)
    if args.dtype not in backend.dtypes:
        raise UserError(f"backend '{backend.name}' supports {', '.join(backend.dtypes)}, not {args.dtype}")
    runner = backend.load(args.model, args.dtype)
    output, trace = runner.forward(x.astype(args.dtype), trace=args.trace is not None)
    nonfinite = int(output.size - np.count_nonzero(np.isfinite(output)))
    atomic_write(args.output, lambda temp: _write_with(np.save, temp, output))
    if args.trace is not None:
        atomic_write(args.trace, lambda temp: _write_with(np.savez, temp, **trace))
    print(f"{backend.name} {args.dtype}: {tuple(x.shape)} -> {tuple(output.shape)} written to {args.output}"
          + (f", trace of {len(trace)} modules to {args.trace}" if args.trace is not None else ""))
    if nonfinite:
        print(f"warning: the output holds {nonfinite} NaN/Inf values", file=sys.stderr)
        return 1
    return 0


def load_input_array(path: Path) -> np.ndarray:
    """Read X.npy: N×3×H×W (or 3×H×W) finite floats; returns a 4-D array."""
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"{path}: not a readable .npy array ({error})") from None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        raise UserError(f"{path}: expected a numeric array, found dtype {getattr(x, 'dtype', type(x))}")
    if x.ndim == 3:
        x = x[np.newaxis]
    if x.ndim != 4 or x.shape[1] != 3 or min(x.shape) < 1:
        raise UserError(f"{path}: expected shape N×3×H×W or 3×H×W, found {x.shape}")
    if not np.isfinite(x).all():
        raise UserError(f"{path}: the input holds NaN or Inf values")
    if x.min() < 0 or x.max() > 1:
        print(f"warning: {path}: values span [{x.min():.3g}, {x.max():.3g}]; texture_nets expects RGB in [0,1]",
              file=sys.stderr)
    return x


def _write_with(save, path: Path, *args, **kwargs) -> None:
    # Through an open file: given a path, np.save/np.savez append ".npy"/".npz" to the temporary name.
    with open(path, "wb") as handle:
        save(handle, *args, **kwargs)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
