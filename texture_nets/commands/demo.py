"""``texture-nets demo``: the main job on bundled real models and the bundled photo, with every installed backend.

Three sections, each a drift analysis against the float64 NumPy reference with its pictures:
1. the bundled photo stylized by texture_nets' own v1 Starry Night net (model ``starry``);
2. a texture synthesized by its v1 pebble net (``pebble``);
3. the bundled narrow johnson generator (random weights) with the published TensorFlow port's
   reproduction (tf-seed), to show what a drifting port looks like and where the harness finds it.
Both real models ship in fixtures/models (Apache-2.0); without them the demo says so and runs
section 3 only. The exit status covers this project's faithful implementations: tf-seed is expected
to drift, and a plug-in running someone else's port (opencv) is reported as a finding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ORDER = 5
STYLE_MODEL = "starry"
TEXTURE_MODEL = "pebble"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="stylize the bundled photo and synthesize a texture with real trained models, every installed backend, "
        "and show how far each is from the reference",
        description="The main job on the bundled defaults: stylize the bundled photo with texture_nets' v1 Starry "
        "Night net, synthesize a pebble texture with its v1 texture net, and run the bundled johnson generator "
        "through the published TensorFlow port's reproduction (tf-seed), each with every installed backend; "
        "compare every layer with the float64 NumPy reference, print the findings and write an HTML page with "
        "the pictures and the parity table (index.html) plus a full drift report per model. Exit status 0 "
        "when every faithful backend of this project agrees within tolerance (tf-seed is expected to drift; a "
        "port written by others, like opencv, is reported as a finding), 1 otherwise.",
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="folder for index.html, one folder per model with its report, and demo.png "
                        "(default: out/demo)")
    parser.add_argument("--image-size", type=int, default=256, metavar="N",
                        help="picture size N×N (default 256; a multiple of 32 suits every model)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="noise seed of the real models (torch.manualSeed(N) in Lua Torch7; default 0)")
    parser.set_defaults(func=run)


def installed_backends() -> list[str]:
    """The reference in float32, every installed faithful backend, then plug-ins running other people's ports,
    then the unfaithful reproductions."""
    from harness.core.registry import available_backend_names, is_external, is_faithful

    others = [name for name in available_backend_names(installed_only=True) if name != "reference"]
    faithful = [name for name in others if is_faithful(name)]
    external = [name for name in faithful if is_external(name)]
    own = [name for name in faithful if name not in external]
    return ["reference-float32", *own, *external, *[name for name in others if not is_faithful(name)]]


def judged_backends(names: list[str]) -> frozenset[str]:
    """The backends the exit status covers: this project's own faithful implementations."""
    from harness.core.registry import is_external, is_faithful, parse_run_spec

    backends = {parse_run_spec(name, "float32").backend for name in names}
    return frozenset(name for name in backends if is_faithful(name) and not is_external(name))


def run(args: argparse.Namespace) -> int:
    from fileio.errors import UserError
    from fileio.folders import output_folder

    if args.image_size < 32 or args.image_size % 32:
        raise UserError(f"--image-size {args.image_size}: the pyramid nets need a multiple of 32 (at least 32)")
    with output_folder(args.out):  # removed again if the demo fails before writing anything
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from contract.families import image_to_input
    from fileio.atomic import atomic_write_bytes
    from fileio.errors import UserError
    from fixtures import DEFAULT_IMAGE, DEFAULT_MODEL
    from harness.core.memory import check_memory
    from harness.core.registry import parse_run_spec
    from harness.drift.gallery import Section, contact_sheet, render_gallery
    from harness.drift.text_view import render_text
    from texture_nets.report_files import write_drift_report
    from zoo import resolve_model

    backends = installed_backends()
    judged = judged_backends(backends)
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"demo [{time.perf_counter() - started:5.1f} s] {message}", file=sys.stderr, flush=True)

    from fileio.images import load_image
    from t7file import load_module_tree

    photo = load_image(DEFAULT_IMAGE, args.image_size)
    plans = []
    try:
        starry, pebble = resolve_model(STYLE_MODEL, download=False), resolve_model(TEXTURE_MODEL, download=False)
    except UserError as error:
        say(f"no real model available ({error}); showing the bundled random-weight generator only")
    else:
        from contract.families import detect_family

        starry_family = detect_family(load_module_tree(starry))
        plans.append(("stylization, texture_nets v1 Starry Night", STYLE_MODEL, starry,
                      image_to_input(photo, starry_family), f"{DEFAULT_IMAGE.name} at {args.image_size}²"))
        zeros = np.zeros((1, 3, args.image_size, args.image_size))
        plans.append(("texture, texture_nets v1 pebbles", TEXTURE_MODEL, pebble, zeros,
                      f"zeros 1x3x{args.image_size}x{args.image_size} + noise, seed {args.seed}"))
    plans.append(("the published TensorFlow port (bundled johnson generator, random weights)", "johnson",
                  DEFAULT_MODEL, photo, f"{DEFAULT_IMAGE.name} at {args.image_size}²"))

    sections, texts = [], []
    expected_to_drift = frozenset(parse_run_spec(b, "float32").backend for b in backends) - judged
    for title, name, model, x, source in plans:
        say(f"{title}: {model.name}, backends {', '.join(backends)}")
        from harness.drift import run_drift

        check_memory(load_module_tree(model), [parse_run_spec(b, "float32").backend for b in backends], "float32",
                     x.shape, traced=True, baseline=True, image=True, what=f"--image-size {args.image_size}",
                     size_option="--image-size")
        report = run_drift(model, x, backends, input_source=source, seed=args.seed,
                           progress=lambda message, title=title: say(f"  {message}"))
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        write_drift_report(report, json_path=folder / "report.json", html_path=folder / "report.html",
                           pictures_dir=folder / "pictures", expected_to_drift=expected_to_drift)
        sections.append(Section(title, f"{model.name} ({report.model.get('family')})", report,
                                f"{name}/report.html", judged))
        texts.append(f"\n## {title}\n" + render_text(report, tables=False, verdict=False))

    failing = [f"{b.spec.label} on {section.title}" for section in sections for b in section.report.backends
               if b.spec.backend in judged and not b.passed]
    findings = [f"{b.spec.label} on {section.title}" for section in sections for b in section.report.backends
                if b.spec.backend not in judged and not b.passed]
    summary = (f"FAIL: {', '.join(failing)} left the tolerance" if failing else
               f"OK: this project's {len(judged)} faithful backends agree with the float64 reference on every model"
               + (f"; expected drift or findings: {', '.join(findings)}" if findings else ""))
    atomic_write_bytes(args.out / "index.html", render_gallery(
        sections, title="texture-nets demo", summary=summary, passed=not failing).encode("utf-8"))
    atomic_write_bytes(args.out / "demo.png", contact_sheet(sections))
    sys.stdout.write("".join(texts))
    print(f"\npictures and parity table: {args.out / 'index.html'} (one drift report per model in "
          f"{', '.join(str(args.out / s.link) for s in sections)})")
    print(summary, file=sys.stderr if failing else sys.stdout)
    return 1 if failing else 0
