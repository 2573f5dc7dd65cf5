"""``texture-nets drift``: where and why backends drift from the baseline, per Lua path, in two views."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ORDER = 25


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from fixtures import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "drift",
        help="diagnose output drift: per-layer errors, first divergence, absorbed vs reaching the output",
        description="Run every backend with a per-layer trace and compare it with the baseline (default: the NumPy "
        "reference in float64) at every Lua path, in two views: accumulated (end to end) and isolated (each layer "
        "fed the baseline's own input, so every local deviation shows). Names the first divergence with its module "
        "class, hyper-parameters and usual cause, and tells deviations a later layer absorbs from those that reach "
        "the output. Exit status: 0 when every backend is within tolerance, 1 when one is not, 2 on bad input.",
        epilog="Backends: built-in names (reference, torch, tf, tf-seed, tflite), entry points of the "
        "'texture_nets.backends' group (e.g. onnx), or module:factory; append -float32/-float64 to pick a dtype per "
        "backend (reference-float32). Example: texture-nets drift --input photo.png --backends torch,tf,tf-seed "
        "--html drift.html. Report fields: docs/drift.md.",
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL),
                        help="model given to every backend: a .t7 file or an artefact the backends read "
                        "(default: the bundled fixture)")
    parser.add_argument("--t7", type=Path, metavar="MODEL.t7",
                        help="the Torch7 file that names the layers and feeds the baseline, when --model is an "
                        "exported artefact")
    parser.add_argument("--input", required=True, type=Path, metavar="IMG|X.npy",
                        help="an image (RGB in [0,1] after loading, like test.lua) or an N×3×H×W .npy array")
    parser.add_argument("--image-size", type=int, metavar="N", help="resize an image input to N×N like test.lua")
    parser.add_argument("--backends", required=True, metavar="B1,B2,...",
                        help="comma-separated backends to diagnose, e.g. torch,tf,tf-seed")
    parser.add_argument("--baseline", default="reference-float64",
                        help="the backend everything is compared with (default: reference-float64)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the diagnosed backends unless a name ends in -float32/-float64")
    parser.add_argument("--json", type=Path, metavar="OUT.json",
                        help="write the report as JSON (schema: docs/drift.md)")
    parser.add_argument("--pictures", type=Path, metavar="DIR",
                        help="write |difference| heatmaps and input|baseline|backend|difference strips as PNGs")
    parser.add_argument("--html", type=Path, metavar="OUT.html",
                        help="write one self-contained HTML page (tables, findings, pictures inline)")
    parser.add_argument("--summary", action="store_true", help="print the findings only, not the per-layer tables")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fileio.atomic import check_destination
    from fileio.errors import UserError
    from harness.drift import run_drift
    from harness.drift.text_view import render_text
    from t7file import T7Error, load_module_tree
    from texture_nets.report_files import write_drift_report

    for destination in (args.json, args.html):
        if destination is not None:
            check_destination(destination)
    if args.pictures is not None and args.pictures.exists() and not args.pictures.is_dir():
        raise UserError(f"--pictures {args.pictures}: not a directory")
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if not backends:
        raise UserError("--backends is empty; give e.g. torch,tf,tf-seed")

    started = time.perf_counter()
    progress = None if args.quiet else _progress(started)
    tree_source = args.t7 or Path(args.model)
    try:
        tree = load_module_tree(tree_source)
    except T7Error as error:
        if args.t7 is None and Path(args.model).suffix.lower() != ".t7":
            raise UserError(f"{args.model}: {error}; when --model is an exported artefact, give --t7 with the "
                            ".t7 file it was made from") from None
        raise
    x = _load_input(args.input, args.image_size)
    report = run_drift(args.model, x, backends, baseline=args.baseline, dtype=args.dtype, tree=tree,
                       input_source=str(args.input), progress=progress)

    written = write_drift_report(report, json_path=args.json, html_path=args.html, pictures_dir=args.pictures)
    sys.stdout.write(render_text(report, tables=not args.summary))
    for label, path in (("JSON", args.json), ("HTML", args.html), ("pictures", args.pictures)):
        if path is not None:
            print(f"{label}: {path}" + (f" ({len(written)} PNG files)" if label == "pictures" else ""))
    if progress is not None:
        progress("done")
    return 0 if report.passed else 1


def _load_input(path: Path, image_size: int | None):
    from fileio.errors import UserError

    if path.suffix.lower() == ".npy":
        if image_size is not None:
            raise UserError("--image-size applies to image inputs, not .npy arrays")
        from texture_nets.commands.run import load_input_array

        return load_input_array(path)
    from fileio.images import load_image

    return load_image(path, image_size)


def _progress(started: float):
    def say(message: str) -> None:
        print(f"drift [{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    return say
