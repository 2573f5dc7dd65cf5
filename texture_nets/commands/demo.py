"""``texture-nets demo``: the main job on the bundled model and photo, with every installed backend.

Stylizes the bundled photo with each backend whose framework is installed, compares every
layer with the float64 NumPy reference (``drift``'s analysis) and prints the summary. The
seed's flawed TensorFlow port (tf-seed) is included to show what a drifting port looks like; it
is expected to drift and does not make the demo fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ORDER = 5



def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="stylize the bundled photo with every installed backend and show how far each is from the reference",
        description="The main job on the bundled defaults: stylize the bundled photo with every installed backend "
        "(reference float32, torch, tf, tflite, onnx, and the seed's flawed port tf-seed), compare every layer with "
        "the float64 NumPy reference, print the findings and write an HTML report with pictures. Exit status 0 when "
        "every faithful backend agrees within tolerance (tf-seed is expected to drift), 1 otherwise.",
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="folder for report.html, report.json and the pictures (default: out/demo)")
    parser.add_argument("--image-size", type=int, default=128, metavar="N",
                        help="stylize the photo at N×N (default 128, a few seconds per backend)")
    parser.set_defaults(func=run)


def installed_backends() -> list[str]:
    """The reference in float32, every installed faithful backend, then the unfaithful reproductions."""
    from harness.core.registry import available_backend_names, is_faithful

    others = [name for name in available_backend_names(installed_only=True) if name != "reference"]
    return (["reference-float32"] + [name for name in others if is_faithful(name)]
            + [name for name in others if not is_faithful(name)])


def run(args: argparse.Namespace) -> int:
    from fileio.errors import UserError
    from fileio.images import load_image
    from fixtures import DEFAULT_IMAGE, DEFAULT_MODEL
    from harness.core.registry import is_faithful
    from harness.drift import run_drift
    from harness.drift.text_view import render_text
    from texture_nets.report_files import write_drift_report

    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {args.out}: {error.strerror or error}") from None
    backends = installed_backends()
    started = time.perf_counter()
    print(f"model {DEFAULT_MODEL.name} (bundled, real Torch7 file, random weights), photo {DEFAULT_IMAGE.name} at "
          f"{args.image_size}x{args.image_size}; backends: {', '.join(backends)}", file=sys.stderr)
    x = load_image(DEFAULT_IMAGE, args.image_size)
    report = run_drift(
        DEFAULT_MODEL, x, backends, input_source=str(DEFAULT_IMAGE),
        progress=lambda message: print(f"demo [{time.perf_counter() - started:5.1f} s] {message}", file=sys.stderr),
    )
    written = write_drift_report(report, json_path=args.out / "report.json", html_path=args.out / "report.html",
                                 pictures_dir=args.out / "pictures")
    sys.stdout.write(render_text(report, tables=False, verdict=False))
    faithful = [b for b in report.backends if is_faithful(b.spec.backend)]
    failing = [b.spec.label for b in faithful if not b.passed]
    print(f"\nreport: {args.out / 'report.html'} (JSON: {args.out / 'report.json'}, "
          f"{len(written)} pictures in {args.out / 'pictures'})")
    if failing:
        print(f"FAIL: {', '.join(failing)} left the tolerance; see the report above", file=sys.stderr)
        return 1
    print(f"OK: {len(faithful)} faithful backends agree with the float64 reference within tolerance"
          + ("; tf-seed (the published port) drifts as expected" if any(
              not is_faithful(b.spec.backend) for b in report.backends) else ""))
    return 0
