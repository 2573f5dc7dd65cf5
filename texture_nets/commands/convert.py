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
import re
import shutil
from pathlib import Path

from fileio.errors import UserError

ORDER = 40

# What each target needs installed: (importable module, pip extra). Checked before anything is imported, so a
# missing framework is one line naming the extra, not a traceback from deep inside the exporter.
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "torchscript": (("torch", "torch"),),
    "torch-export": (("torch", "torch"),),
    "onnx": (("torch", "torch"), ("onnx", "onnx")),
    "tf-savedmodel": (("tensorflow", "tf"),),
    "tf-checkpoint": (("tensorflow", "tf"),),
    "tflite": (("tensorflow", "tf"),),
}
# The exporters' own accounts of their checks, read back into one wording (CHECK_WORDING).
_CHECK_PATTERNS = (
    re.compile(r"on (?P<shape>\d+(?:x\d+)+) (?P<dtype>float\d+)(?P<noise> with \d+ noise inputs)?: "
               r"max \|diff\| (?P<abs>\S+) \(rel (?P<rel>[^,)]+)(?:, limit (?P<limit>[^)]+))?\)"),
    re.compile(r"on a \((?P<shape>\d+(?:, *\d+)+)\) input: max\|diff\|=(?P<abs>\S+) \(rel (?P<rel>[^,)]+)"
               r"(?:, limit (?P<limit>[^)]+))?\)"),
)
CHECK_WORDING = ("checked: the reloaded artefact, run on a {shape} {dtype} input{noise}, is within {abs} of the "
                 "in-memory model (max |diff|; rel {rel} of the output's scale{limit})")

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
    parser.add_argument("model", metavar="FILE.t7",
                        help="Torch7 model file, or a known model's name (texture-nets models)")
    parser.add_argument("--to", dest="target", required=True, choices=list(EXPORTERS), help="output format")
    parser.add_argument("out", metavar="OUT", type=Path, help="where to write the artefact")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="precision of the exported weights and graph (default float32)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fileio.atomic import check_destination

    out: Path = args.out
    if out.is_dir():
        raise UserError(f"{out} is a directory; give a file name for the {args.target} artefact")
    check_destination(out)  # a missing or read-only folder fails here, before the (slow) export
    require_frameworks(args.target)
    from zoo import resolve_model

    model = resolve_model(args.model)
    module_name, _, function_name = EXPORTERS[args.target][0].partition(":")
    try:
        module = importlib.import_module(module_name)
        exporter = getattr(module, function_name)
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        raise UserError(f"--to {args.target} needs {missing}, which is not installed; install it with: "
                        f"pip install -e '.[{NEEDS[args.target][-1][1]}]'") from None
    # Write beside the target and rename: a failed export or check never leaves a half-written OUT.
    # The suffix stays last (torch.export.save insists on ".pt2").
    partial = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")
    # An exporter module may define ExportCheckError: the reloaded artefact did not reproduce the model.
    check_error = getattr(module, "ExportCheckError", ())
    try:
        summary = exporter(model, partial, args.dtype)
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
    print(f"wrote {out} ({args.target}, {args.dtype}); {check_summary(summary, args.dtype)}")
    return 0


def require_frameworks(target: str) -> None:
    """One line naming the pip extra when a framework ``target`` needs is not installed."""
    from harness.core.registry import framework_installed

    for module, extra in NEEDS.get(target, ()):
        if not framework_installed(module):
            raise UserError(f"--to {target} needs {module}, which is not installed; install it with: "
                            f"pip install -e '.[{extra}]' (or scripts/setup-venv for everything)")


def check_summary(summary: str, dtype: str) -> str:
    """The exporter's account of its check in the one wording every target shares (CHECK_WORDING); what it says
    besides the check (e.g. which functions a SavedModel holds) is kept in front."""
    if isinstance(summary, dict):
        fields = summary
        prefix = ""
    else:
        for pattern in _CHECK_PATTERNS:
            match = pattern.search(summary)
            if match:
                break
        else:
            return summary
        fields = match.groupdict()
        prefix = summary[:match.start()]
        prefix = re.sub(r"\s*(reloaded and checked against.*)?$", "", prefix).rstrip(" ;:,")
    shape = "x".join(part.strip() for part in re.split(r"[x,]", str(fields["shape"])))
    text = CHECK_WORDING.format(shape=shape, dtype=fields.get("dtype") or dtype, noise=fields.get("noise") or "",
                                abs=fields["abs"], rel=str(fields["rel"]).strip(),
                                limit=f", limit {fields['limit']}" if fields.get("limit") else "")
    return f"{prefix}; {text}" if prefix else text


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
