"""``texture-nets make-model``: write a seeded texture_nets generator as a Torch7 binary .t7 file."""

from __future__ import annotations

import argparse

from fileio.errors import UserError

ORDER = 80


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from fixtures.make_model import add_arguments

    parser = subparsers.add_parser(
        "make-model",
        help="write a seeded generator (pretrained or head layout, any widths) as a Torch7 .t7 file",
        description="Build a texture_nets generator with seeded nn-default weights (instance-norm affine "
        "parameters non-trivial) in either layout and write it as a Torch7 binary file that Lua Torch7 "
        "and torchfile can load. Same seed, same bytes.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fixtures.make_model import make_model, parse_widths

    try:
        widths = parse_widths(args.widths)
        path = make_model(args.out, args.layout, widths, args.seed, double=args.double,
                          as_distributed=args.as_distributed, eps=args.eps)
    except ValueError as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"cannot write {args.out}: {error.strerror or error}") from None
    print(f"wrote {path} ({args.layout} layout, widths {','.join(map(str, widths))}, seed {args.seed})")
    return 0
