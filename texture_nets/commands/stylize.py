"""``texture-nets stylize``: the seed's usage — an image in, a stylized image out."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 30


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from fixtures import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "stylize",
        help="stylize an image file (image -> [0,1] RGB -> generator -> deprocess -> image)",
        description="Stylize an image like texture_nets' test.lua: load it as RGB in [0,1], run the generator, "
        "deprocess the VGG-space output (add the BGR means, flip to RGB, /255, clamp) and save it. "
        f"The default model is the bundled fixture {DEFAULT_MODEL.name} (narrow, random weights: "
        "the picture shows the plumbing works, not a style).",
    )
    parser.add_argument("--input", required=True, type=Path, metavar="IMG")
    parser.add_argument("--output", required=True, type=Path, metavar="IMG",
                        help="output image; the format follows the extension (.png, .jpg, ...)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model file (default: the bundled fixture)")
    parser.add_argument("--backend", default="reference", help="backend name (default: reference)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="resize to N×N pixels first, like texture_nets test.lua (image.scale(img, N, N))")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fileio.errors import UserError
    from fileio.images import deprocess, load_image, save_image
    from harness.core.registry import get_backend

    if args.image_size is not None and args.image_size < 1:
        raise UserError("--image-size must be a positive number of pixels")
    if args.output.exists() and args.output.resolve() == args.input.resolve():
        raise UserError(f"refusing to overwrite the input image {args.input}")
    backend = get_backend(args.backend)
    if args.dtype not in backend.dtypes:
        raise UserError(f"backend '{backend.name}' supports {', '.join(backend.dtypes)}, not {args.dtype}")
    x = load_image(args.input, args.image_size)
    runner = backend.load(args.model, args.dtype)
    output, _ = runner.forward(x.astype(args.dtype))
    image = deprocess(output[0])
    save_image(image, args.output, source=args.input)
    print(f"{backend.name} {args.dtype}: {args.input} ({x.shape[3]}x{x.shape[2]}) -> {args.output} "
          f"({image.shape[1]}x{image.shape[0]})")
    return 0
