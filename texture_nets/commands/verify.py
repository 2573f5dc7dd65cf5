"""``texture-nets verify BACKEND``: the one command a port's author runs; a report card against Torch7."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ORDER = 45


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="run a port (any backend or plug-in) through a fixed battery and write its report card",
        description="Run BACKEND (a built-in, an entry-point plug-in such as onnx or opencv, or "
        "module:factory) through a "
        "fixed battery: the Torch7 ground-truth runs (both johnson layouts, odd sizes, batch 2; with "
        "../shared, the full-width runs and the real v1-era models' runs) and reference-judged cases for what "
        "they do not cover (a real photo, odd and non-square sizes, batch 2, the real models of every family "
        "that are on this machine). Each case is a drift analysis against the float64 reference; the card "
        "gives per case and per Lua path agree or drift, the distance relative to float32 Torch7's own "
        "rounding, the first divergence with its diagnosis, and what could not be tested and why. Writes "
        "card.md, card.json and card.html (with pictures and a depth chart per case) to --out. Exit status 0 "
        "when no case drifts, 1 otherwise, 2 on bad usage.",
    )
    parser.add_argument("backend", metavar="BACKEND", help="the port to verify (backend name or module:factory)")
    parser.add_argument("--model", action="append", default=[], metavar="M",
                        help="verify on this model only (a .t7 file or a known model's name; repeatable), "
                        "instead of the battery's models")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for card.md, card.json, card.html (default: out/verify/BACKEND)")
    parser.add_argument("--quick", action="store_true", help="the committed Torch7 runs only (seconds)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fileio.atomic import atomic_write_bytes
    from fileio.errors import UserError
    from fixtures import DEFAULT_IMAGE, DEFAULT_MODEL, ORACLE_NARROW_DIR
    from harness.core.oracle import SHARED_ORACLE_DIR, SHARED_V1_DIR
    from harness.core.registry import get_backend
    from harness.drift.pictures import safe_name
    from harness.verify.battery import reference_cases, torch7_cases
    from harness.verify.card import verify
    from harness.verify.html_view import render_html
    from harness.verify.views import dumps, render_markdown, render_text

    get_backend(args.backend)  # unknown or uninstalled: one line before any work
    out = args.out or Path("out/verify") / safe_name(args.backend)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {out}: {error.strerror or error}") from None
    started = time.perf_counter()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"verify [{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    if args.model:
        cases, skipped = _model_cases(args.model), []
    else:
        folders = [ORACLE_NARROW_DIR] if args.quick else [ORACLE_NARROW_DIR, SHARED_ORACLE_DIR, SHARED_V1_DIR]
        cases = torch7_cases(folders)
        skipped = []
        if not args.quick:
            from fileio.images import load_image

            photo = load_image(DEFAULT_IMAGE, 128)
            more, skipped = reference_cases(photo, DEFAULT_MODEL, ORACLE_NARROW_DIR / "narrow_head_seed77.t7")
            cases += more
    say(f"{len(cases)} cases for {args.backend}" + (f", {len(skipped)} not available here" if skipped else ""))
    card = verify(args.backend, cases, skipped, progress=say)
    atomic_write_bytes(out / "card.json", dumps(card).encode("utf-8"))
    atomic_write_bytes(out / "card.md", render_markdown(card).encode("utf-8"))
    atomic_write_bytes(out / "card.html", render_html(card).encode("utf-8"))
    sys.stdout.write(render_text(card))
    print(f"report card: {out / 'card.html'} (Markdown {out / 'card.md'}, JSON {out / 'card.json'})")
    return 0 if card.passed else 1


def _model_cases(specs: list[str]) -> list:
    """One photo case per model given with --model (texture nets: zeros and seed 0), at 64x64."""
    import numpy as np

    from contract.families import detect_family, image_to_input
    from fileio.images import load_image
    from fixtures import DEFAULT_IMAGE
    from harness.verify.battery import Case, doodle_mask_input
    from t7file import load_module_tree
    from zoo import resolve_model

    photo = load_image(DEFAULT_IMAGE, 64)
    cases = []
    for spec in specs:
        path = resolve_model(spec)
        family = detect_family(load_module_tree(path))
        if family.kind == "doodle":
            x = doodle_mask_input(path, 64, 64)
        elif family.kind == "texture":
            x = np.zeros((1, 3, 64, 64))
        else:
            x = image_to_input(photo, family)
        cases.append(Case(f"{spec}, 64x64", path, x, family=family.name, description=family.title))
    return cases
