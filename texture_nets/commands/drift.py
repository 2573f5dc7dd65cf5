"""``texture-nets drift``: where and why backends drift from the baseline, per Lua path, in two views."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ORDER = 25


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from fixtures import DEFAULT_MODEL
    from texture_nets.model_choice import add_model_arguments, add_noise_arguments

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
    add_model_arguments(parser, default=str(DEFAULT_MODEL))
    parser.add_argument("--input", required=True, type=Path, metavar="IMG|X.npy",
                        help="an image, turned into the model's input by its family's convention (a colour mask for "
                        "the doodle net), or an .npy array holding exactly the tensor the model's forward receives")
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
    add_noise_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fileio.atomic import check_destination
    from fileio.errors import UserError
    from harness.core.memory import check_memory
    from harness.core.registry import parse_run_spec
    from harness.drift import run_drift
    from harness.drift.text_view import render_text
    from texture_nets.model_choice import check_size, choose_model
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
    choice = choose_model(args)
    specs = [parse_run_spec(name, args.dtype) for name in backends]
    shape = _input_shape(args.input, args.image_size, choice.planes)
    check_size(choice, shape[2], shape[3], shape[0])
    check_memory(choice.root, [spec.backend for spec in specs],
                 "float64" if any(spec.dtype == "float64" for spec in specs) else args.dtype, shape, traced=True,
                 baseline=True, image=args.input.suffix.lower() != ".npy",
                 what=f"{args.input} at {shape[3]}x{shape[2]}", size_option="--image-size")
    x = _load_input(args.input, args.image_size, choice)
    report = run_drift(choice.model, x, backends, baseline=args.baseline, dtype=args.dtype, tree=choice.root,
                       input_source=str(args.input), progress=progress, noise=_injected(args), seed=args.seed,
                       batchnorm=choice.batchnorm)

    written = write_drift_report(report, json_path=args.json, html_path=args.html, pictures_dir=args.pictures)
    sys.stdout.write(render_text(report, tables=not args.summary))
    for label, path in (("JSON", args.json), ("HTML", args.html), ("pictures", args.pictures)):
        if path is not None:
            print(f"{label}: {path}" + (f" ({len(written)} PNG files)" if label == "pictures" else ""))
    if progress is not None:
        progress("done")
    return 0 if report.passed else 1


def _input_shape(path: Path, image_size: int | None, planes: int) -> tuple[int, ...]:
    from fileio.arrays import array_shape
    from fileio.errors import UserError
    from fileio.images import image_dimensions

    if path.suffix.lower() == ".npy":
        if image_size is not None:
            raise UserError("--image-size applies to image inputs, not .npy arrays")
        shape = array_shape(path)
        return (1, *shape) if len(shape) == 3 else tuple(shape) if len(shape) == 4 else (1, planes, 1, 1)
    if image_size is not None:
        return (1, planes, image_size, image_size)
    width, height = image_dimensions(path)
    return (1, planes, height, width)


def _load_input(path: Path, image_size: int | None, choice):
    """The tensor the model's forward receives: an .npy as is, a picture by the family's convention."""
    from contract.families import image_to_input, mask_to_input
    from fileio.arrays import load_array
    from fileio.errors import UserError
    from fileio.images import load_image

    if path.suffix.lower() == ".npy":
        return load_array(path, choice.planes)
    image = load_image(path, image_size)
    if choice.family.kind == "doodle":
        return mask_to_input(image, choice.planes, getattr(choice.entry, "palette", None))[0]
    if choice.planes != 3 and choice.family.name not in ("v1-style",):
        raise UserError(f"{choice.label} takes {choice.planes} input planes; give the input as an .npy array")
    return image_to_input(image, choice.family, choice.planes)


def _injected(args: argparse.Namespace):
    from harness.core.noise import NoiseError, load_noise

    if args.noise is None:
        return None
    try:
        return load_noise(args.noise)
    except NoiseError as error:
        from fileio.errors import UserError

        raise UserError(str(error)) from None


def _progress(started: float):
    def say(message: str) -> None:
        print(f"drift [{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    return say
