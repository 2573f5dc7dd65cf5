"""Entry point of ``texture-nets``: builds the argument parser from texture_nets/commands/.

Each module in texture_nets/commands defines ``add_parser(subparsers)``, which
registers one sub-command and sets ``func`` (taking the parsed namespace and
returning an exit code). Expected failures (bad files, unknown backends,
unwritable outputs) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import texture_nets.commands as commands_package

PROG = "texture-nets"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run, compare and diagnose ports of Ulyanov's texture_nets generator against Torch7 semantics.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    modules = [importlib.import_module(f"{commands_package.__name__}.{info.name}")
               for info in pkgutil.iter_modules(commands_package.__path__)]
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.add_parser(subparsers)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    from contract import BackendError
    from fileio.errors import UserError
    from t7file import T7Error

    return (T7Error, BackendError, UserError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except expected_errors() as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
