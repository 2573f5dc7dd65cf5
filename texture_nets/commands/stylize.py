"""``texture-nets stylize``: an image in, a stylized image out, with the model family's own conventions."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 30


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from fixtures import DEFAULT_MODEL
    from texture_nets.model_choice import add_model_arguments, add_noise_arguments

    parser = subparsers.add_parser(
        "stylize",
        help="stylize an image file (image -> the model's input -> generator -> deprocess -> image)",
        description="Stylize an image as the model's own script does (docs/real-models.md): load it as RGB in [0,1] "
        "(optionally resized like test.lua's image.scale), make the family's input from it (the image itself; twice "
        "as 6 channels for a v1 style net; BGR for the torch-opencv-demos nets; for the doodle net --input is a "
        "colour mask, mapped to the model's palette), run the generator with the family's batch-norm mode and its "
        "noise, and deprocess the VGG-space output the family's way (/255, or /256 for the v1 nets). "
        f"The default model is the bundled fixture {DEFAULT_MODEL.name} (narrow, random weights: the picture shows "
        "the plumbing works, not a style); try --model starry.",
    )
    parser.add_argument("--input", required=True, type=Path, metavar="IMG")
    parser.add_argument("--output", required=True, type=Path, metavar="IMG",
                        help="output image; the format follows the extension (.png, .jpg, ...)")
    add_model_arguments(parser, default=str(DEFAULT_MODEL))
    parser.add_argument("--backend", default="reference", help="backend name (default: reference)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="resize to N×N pixels first, like texture_nets test.lua (image.scale(img, N, N))")
    add_noise_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contract.families import image_to_input, mask_to_input
    from fileio.errors import UserError
    from fileio.images import deprocess, image_dimensions, load_image, save_image
    from harness.core.memory import check_memory
    from harness.core.registry import get_backend
    from harness.core.runs import forward, load_runner
    from texture_nets.model_choice import check_size, choose_model, run_noise

    if args.image_size is not None and args.image_size < 1:
        raise UserError("--image-size must be a positive number of pixels")
    if args.output.exists() and args.output.resolve() == args.input.resolve():
        raise UserError(f"refusing to overwrite the input image {args.input}")
    choice = choose_model(args)
    if choice.family.kind == "texture":
        raise UserError(f"{choice.label} is a texture net ({choice.family.title}): it ignores its input image; use "
                        "`texture-nets synthesize --model ...`")
    backend = get_backend(args.backend)
    if args.dtype not in backend.dtypes:
        raise UserError(f"backend '{backend.name}' supports {', '.join(backend.dtypes)}, not {args.dtype}")
    if args.image_size is not None:
        height = width = args.image_size
    else:
        width, height = image_dimensions(args.input)
    check_size(choice, height, width)
    check_memory(choice.root, [backend.name], args.dtype, (1, choice.planes, height, width), image=True,
                 what=f"--image-size {args.image_size}" if args.image_size else f"{args.input} ({width}x{height})",
                 size_option="--image-size")
    image = load_image(args.input, args.image_size)
    if choice.family.kind == "doodle":
        palette = getattr(choice.entry, "palette", None)
        x, _ = mask_to_input(image, choice.planes, palette)
    else:
        x = image_to_input(image, choice.family, choice.planes)
    noise = run_noise(args, choice, x.shape, args.dtype)
    runner = load_runner(backend, choice.model, args.dtype, root=choice.root, batchnorm=choice.batchnorm)
    output, _ = forward(runner, x.astype(args.dtype), noise=noise)
    picture = deprocess(output[0], choice.family)  # refuses NaN/Inf with one line
    save_image(picture, args.output, source=args.input)
    print(f"{backend.name} {args.dtype}, {choice.label} ({choice.family.name}): {args.input} "
          f"({x.shape[3]}x{x.shape[2]}) -> {args.output} ({picture.shape[1]}x{picture.shape[0]})")
    return 0
