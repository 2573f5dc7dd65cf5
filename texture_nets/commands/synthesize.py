"""``texture-nets synthesize``: textures from a texture net (noise in, picture out)."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 32


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from texture_nets.model_choice import add_model_arguments, add_noise_arguments

    parser = subparsers.add_parser(
        "synthesize",
        help="make textures with a texture net (e.g. --model pebble)",
        description="Make textures as texture_nets' texture.ipynb does: the input is zeros (N x 3 x H x W), every "
        "pyramid level's GenNoise fills it with U[0,1) noise drawn as Lua Torch7 does after torch.manualSeed(--seed) "
        "(or injected with --noise), the batch norms use the batch's statistics (the notebook's train mode: the "
        "--count textures of one batch are computed together and influence each other, as in the notebook), and the "
        "output is deprocessed with /256 (docs/real-models.md).",
    )
    add_model_arguments(parser)
    parser.add_argument("--size", default="256x256", metavar="HxW",
                        help="texture size, height x width (default 256x256; multiples of 32 for the v1 texture nets)")
    parser.add_argument("--count", type=int, default=1, metavar="N", help="textures in the batch (default 1)")
    parser.add_argument("--output", required=True, type=Path, metavar="IMG",
                        help="output image (.png, .jpg, ...); with --count N > 1, IMG_1.png ... IMG_N.png")
    parser.add_argument("--backend", default="reference", help="backend name (default: reference)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    add_noise_arguments(parser)
    parser.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    from fileio.errors import UserError

    parts = text.lower().replace("×", "x").split("x")
    try:
        height, width = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise UserError(f"--size {text!r}: give HxW, e.g. 256x256") from None
    if len(parts) > 2 or height < 1 or width < 1:
        raise UserError(f"--size {text!r}: give HxW with positive numbers, e.g. 256x256")
    return height, width


def output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{index}{output.suffix}") for index in range(1, count + 1)]


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fileio.atomic import check_destination
    from fileio.errors import UserError
    from fileio.images import deprocess, save_image
    from harness.core.memory import check_memory
    from harness.core.registry import get_backend
    from harness.core.runs import forward, load_runner
    from texture_nets.model_choice import check_size, choose_model, run_noise

    if args.count < 1:
        raise UserError("--count must be at least 1")
    height, width = parse_size(args.size)
    destinations = output_paths(args.output, args.count)
    for destination in destinations:
        check_destination(destination)
    choice = choose_model(args)
    if choice.family.kind != "texture":
        raise UserError(f"{choice.label} is not a texture net ({choice.family.title}); synthesize runs the v1 texture "
                        "nets (e.g. --model pebble); use `texture-nets stylize` for stylization nets")
    check_size(choice, height, width, args.count)
    backend = get_backend(args.backend)
    if args.dtype not in backend.dtypes:
        raise UserError(f"backend '{backend.name}' supports {', '.join(backend.dtypes)}, not {args.dtype}")
    check_memory(choice.root, [backend.name], args.dtype, (args.count, choice.planes, height, width), image=True,
                 what=f"--size {height}x{width} --count {args.count}")
    x = np.zeros((args.count, choice.planes, height, width), dtype=args.dtype)  # texture.ipynb: torch.zeros
    noise = run_noise(args, choice, x.shape, args.dtype)
    runner = load_runner(backend, choice.model, args.dtype, root=choice.root, batchnorm=choice.batchnorm)
    output, _ = forward(runner, x, noise=noise)
    for sample, destination in enumerate(destinations):
        save_image(deprocess(output[sample], choice.family), destination)
    source = f"noise from {args.noise}" if args.noise is not None else f"seed {args.seed or 0}"
    print(f"{backend.name} {args.dtype}, {choice.label}: {args.count} texture(s) {height}x{width} ({source}) -> "
          + ", ".join(str(path) for path in destinations))
    return 0
