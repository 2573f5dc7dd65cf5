"""``texture-nets convert FILE.t7 --to TARGET OUT``: export a Torch7 generator to another framework's format.

Targets live in :data:`EXPORTERS`, one line each: name -> (``"module:function"``,
help). The function is imported only when its target is asked for and is called
as ``function(model_path, out_path, dtype) -> str``: it writes the artefact at
``out_path``, reloads it with its own runtime, checks it against the in-memory
model, and returns a one-line account of that check (printed). It raises a
``t7file.T7Error`` for a bad model and ``ValueError`` for an unsupported dtype.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
from pathlib import Path

from fileio.errors import UserError

ORDER = 40

EXPORTERS: dict[str, tuple[str, str]] = {
    "torchscript": ("torch_impl.export:export_torchscript", "TorchScript by torch.jit.trace (.pt; libtorch loads it)"),
    "torch-export": ("torch_impl.export:export_torch_export", "torch.export ExportedProgram (.pt2; H, W >= 5)"),
    "onnx": ("torch_impl.export:export_onnx", "ONNX opset 17, dynamic batch/height/width (.onnx; float32)"),
    "tf-savedmodel": ("tf_impl.export:convert_savedmodel", "TF SavedModel directory; --backend tf --model DIR runs it"),
    "tf-checkpoint": ("tf_impl.export:convert_checkpoint", "TF checkpoint directory (architecture.json + weights)"),
    "tflite": ("tf_impl.export:convert_tflite", "TF Lite flatbuffer (.tflite; float32); --backend tflite runs it"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    targets = "; ".join(f"{name}: {help_text}" for name, (_, help_text) in EXPORTERS.items())
    parser = subparsers.add_parser(
        "convert",
        help="export a .t7 generator to TorchScript, torch.export, ONNX, ...",
        description="Rebuild a Torch7 texture_nets generator and export it. The artefact is reloaded and checked "
        f"against the in-memory model before it replaces OUT. Targets: {targets}.",
    )
    parser.add_argument("model", metavar="FILE.t7", help="Torch7 model file")
    parser.add_argument("--to", dest="target", required=True, choices=list(EXPORTERS), help="output format")
    parser.add_argument("out", metavar="OUT", type=Path, help="where to write the artefact")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="precision of the exported weights and graph (default float32)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module_name, _, function_name = EXPORTERS[args.target][0].partition(":")
    try:
        module = importlib.import_module(module_name)
        exporter = getattr(module, function_name)
    except ImportError as error:
        raise UserError(f"--to {args.target} needs a package that is not installed: {error}") from None
    out: Path = args.out
    if out.is_dir():
        raise UserError(f"{out} is a directory; give a file name for the {args.target} artefact")
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: directory {out.parent} does not exist")
    # Write beside the target and rename: a failed export or check never leaves a half-written OUT.
    # The suffix stays last (torch.export.save insists on ".pt2").
    partial = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")
    # An exporter module may define ExportCheckError: the reloaded artefact did not reproduce the model.
    check_error = getattr(module, "ExportCheckError", ())
    try:
        summary = exporter(args.model, partial, args.dtype)
        os.replace(partial, out)
    except check_error as error:
        raise UserError(f"--to {args.target}: the exported artefact failed its parity check, not written: "
                        f"{error}") from None
    except ValueError as error:
        raise UserError(f"--to {args.target}: {error}") from None
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        _remove(partial)
    print(f"wrote {out} ({args.target}, {args.dtype}); {summary}")
    return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
