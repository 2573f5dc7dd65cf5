"""``texture-nets bench``: time every installed backend at several sizes; GFLOP/s, share of the peak, memory."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from fileio.errors import UserError

ORDER = 60
DEFAULT_MODEL_NAME = "default"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark the backends: median time, GFLOP/s, %% of this machine's peak and physical limit, memory",
        description="For each model, backend and size: median and spread of N forward passes after warm-up, "
        "GFLOP/s from the model's convolution FLOPs, the share of this machine's peak (the best large float32 "
        "sgemm among NumPy, PyTorch and TensorFlow, each with the kernel it picks itself, measured in the same "
        "run) and of the CPU's physical limit (cores x clock x FMA lanes x FMA pipes x 2, from /proc/cpuinfo), "
        "peak RSS (each cell in its own process), thread counts and versions. Cells measured while other work "
        "loads the machine are flagged and get no share of the peak. Without --model the full-width generator "
        "(pretrained layout, widths 32,64,128, seed 1) is written once into a cache folder. Method and this "
        "machine's table: docs/benchmarks.md.",
        epilog="Example: texture-nets bench --model default,starry,pebble --sizes 256,512,1024 --rss-sizes 2048 "
        "--json bench.json --markdown bench.md",
    )
    parser.add_argument("--backends", metavar="B1,B2,...",
                        help="backends (names, entry points or module:factory; append -float32/-float64 to pick a "
                        "dtype, e.g. reference-float64). Default: reference in float32 and float64, every other "
                        "installed backend except tf-seed in float32")
    parser.add_argument("--dtype", metavar="D1,D2",
                        help="dtype(s) for the backends named without one (float32, float64 or float32,float64; "
                        "default float32)")
    parser.add_argument("--sizes", default="256,512,1024", metavar="S1,S2,...",
                        help="square input sizes to time (default: 256,512,1024)")
    parser.add_argument("--repeats", type=int, default=5, metavar="N", help="timed runs per cell (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs first (default: 1)")
    parser.add_argument("--rss-sizes", default="", metavar="S1,...",
                        help="sizes at which to measure the peak memory of one forward pass only, e.g. 2048")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="pin OMP/OpenBLAS/MKL/TF intra-op threads in the workers (default: libraries' own)")
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME, metavar="M1,M2,...",
                        help="models to benchmark: .t7 files, known models' names (starry, pebble, ...: `texture-nets "
                        "models`; taken from this machine, never downloaded here), or 'default' for the full-width "
                        "generator (default: default). Each model's input, noise and batch-norm mode follow its "
                        "family (docs/real-models.md)")
    parser.add_argument("--sgemm-size", type=int, default=3072, metavar="N",
                        help="matrix size of the sgemm peak measurement (default: 3072)")
    parser.add_argument("--peak-libraries", metavar="L1,L2",
                        help="libraries whose sgemm makes the peak: numpy, torch, tensorflow (default: every "
                        "installed one)")
    parser.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                        help="give up on one (backend, size) after S seconds (default: 1800)")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write the full report as JSON")
    parser.add_argument("--markdown", type=Path, metavar="OUT.md", help="write the tables as Markdown")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from fileio.atomic import atomic_write, check_destination
    from harness.bench.benchmark import BenchConfig, default_runs, parse_run, render_markdown, run_bench

    for destination in (args.json, args.markdown):
        if destination is not None:
            check_destination(destination)
    sizes, rss_sizes = _sizes(args.sizes, "--sizes"), _sizes(args.rss_sizes, "--rss-sizes")
    if not sizes and not rss_sizes:
        raise UserError("nothing to do: --sizes and --rss-sizes are both empty")
    if args.repeats < 1 or args.warmup < 0:
        raise UserError("--repeats must be >= 1 and --warmup >= 0")
    runs = _runs(args.backends, args.dtype, default_runs, parse_run)
    if args.backends is not None:
        _require_installed(runs)  # an explicitly requested backend that cannot run: one line, exit 2
    models = _models(args.model)
    config = BenchConfig(models=models, runs=runs, sizes=sizes, repeats=args.repeats, warmup=args.warmup,
                         rss_sizes=rss_sizes, threads=args.threads, sgemm_size=args.sgemm_size,
                         peak_libraries=_peak_libraries(args.peak_libraries), timeout_s=args.timeout,
                         command=_command(args, runs, sizes, rss_sizes))
    report = run_bench(config, None if args.quiet else lambda message: print(message, file=sys.stderr, flush=True))
    markdown = render_markdown(report)
    if args.json is not None:
        atomic_write(args.json, lambda temp: temp.write_text(json.dumps(report, indent=1) + "\n"))
    if args.markdown is not None:
        atomic_write(args.markdown, lambda temp: temp.write_text(markdown))
    print(markdown, end="")
    return 0


def _command(args: argparse.Namespace, runs: list[tuple[str, str]], sizes: list[int], rss_sizes: list[int]) -> str:
    """The command line that reproduces this run (options spelled out, defaults included)."""
    parts = ["texture-nets", "bench", "--backends", ",".join(f"{name}-{dtype}" for name, dtype in runs),
             "--sizes", ",".join(map(str, sizes)), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    if rss_sizes:
        parts += ["--rss-sizes", ",".join(map(str, rss_sizes))]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    if args.model != DEFAULT_MODEL_NAME:
        parts += ["--model", str(args.model)]
    if args.sgemm_size != 3072:
        parts += ["--sgemm-size", str(args.sgemm_size)]
    if args.peak_libraries is not None:
        parts += ["--peak-libraries", args.peak_libraries]
    for option, value in (("--json", args.json), ("--markdown", args.markdown)):
        if value is not None:
            parts += [option, str(value)]
    return " ".join(shlex.quote(part) for part in parts)


def _require_installed(runs: list[tuple[str, str]]) -> None:
    """Resolve every requested backend before any timing: a missing framework raises BackendError naming the
    extra to install (harness.core.registry.get_backend), instead of a table row and exit status 0."""
    from harness.core.registry import get_backend

    for name in dict.fromkeys(name for name, _ in runs):
        get_backend(name)


def _sizes(text: str, option: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated integers, got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise UserError(f"{option}: sizes must be positive")
    return sizes


def _runs(backends: str | None, dtypes: str | None, default_runs, parse_run) -> list[tuple[str, str]]:
    dtype_list = [d.strip() for d in (dtypes or "float32").split(",") if d.strip()]
    if any(d not in ("float32", "float64") for d in dtype_list):
        raise UserError(f"--dtype takes float32 and/or float64, got {dtypes!r}")
    if backends is None:
        runs = default_runs()
        return runs if dtypes is None else [(name, d) for name in dict.fromkeys(n for n, _ in runs)
                                            for d in dtype_list]
    runs: list[tuple[str, str]] = []
    for spec in (s.strip() for s in backends.split(",")):
        if not spec:
            continue
        name, dtype = parse_run(spec)
        explicit = spec != name
        runs += [(name, dtype)] if explicit else [(name, d) for d in dtype_list]
    if not runs:
        raise UserError("--backends is empty")
    return list(dict.fromkeys(runs))


def _models(text: str) -> list:
    """--model's list: 'default', known models' names (local copies only) and .t7 files, in table order."""
    from harness.bench.benchmark import BenchModel
    from zoo import entry_named, resolve_model

    models = []
    for spec in dict.fromkeys(part.strip() for part in str(text).split(",") if part.strip()):
        if spec == DEFAULT_MODEL_NAME:
            path, description = _default_model()
            models.append(BenchModel("generator", path, description))
            continue
        path = Path(spec)
        if path.is_file():
            models.append(BenchModel(path.stem, path))
            continue
        if entry_named(spec) is None and (path.suffix or os.sep in spec):
            raise UserError(f"--model {spec}: no such file")
        models.append(BenchModel(spec, resolve_model(spec, download=False), {"known_model": spec}))
    if not models:
        raise UserError("--model is empty")
    return models


def _peak_libraries(text: str | None) -> list[str] | None:
    from harness.bench.peak import LIBRARIES

    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in LIBRARIES]
    if unknown or not names:
        raise UserError(f"--peak-libraries takes {', '.join(LIBRARIES)}, got {text!r}")
    return names


def _default_model() -> tuple[Path, dict]:
    """The full-width generator, written once into the cache folder."""
    from fixtures.make_model import make_model
    from harness.bench.benchmark import FULL_WIDTHS, MODEL_LAYOUT, MODEL_SEED

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "texture-nets" / "bench"
    widths = ",".join(map(str, FULL_WIDTHS))
    target = cache / f"{MODEL_LAYOUT}_{widths.replace(',', '-')}_seed{MODEL_SEED}.t7"
    description = {"layout": MODEL_LAYOUT, "widths": widths, "seed": MODEL_SEED,
                   "made_by": f"texture-nets make-model --layout {MODEL_LAYOUT} --widths {widths} "
                   f"--seed {MODEL_SEED}"}
    if not target.is_file():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            make_model(target, MODEL_LAYOUT, list(FULL_WIDTHS), MODEL_SEED)  # written atomically
        except OSError as error:
            raise UserError(f"cannot write the benchmark model to {target}: {error.strerror or error}; "
                            "give --model") from None
    return target, description
