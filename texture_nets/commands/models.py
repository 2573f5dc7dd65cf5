"""``texture-nets models``: the known public models, where each comes from, and whether it is on this machine."""

from __future__ import annotations

import argparse

ORDER = 12


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the known public models (usable as --model NAME) and where each is found",
        description="List the public texture_nets-era models this tool knows by name: family, source repository and "
        "path, license, and where the file is on this machine (bundled, in the cache, in a folder named by "
        "TEXTURE_NETS_MODELS, or in ../shared/realmodels). A model that is not here is downloaded on first use where "
        "the machine has internet, its sha256 checked; --fetch NAME downloads one now.",
    )
    parser.add_argument("--fetch", metavar="NAME", action="append", default=[],
                        help="download (or find) this model now; repeatable")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zoo import CATALOGUE, resolve_model, search_folders
    from zoo.locate import find_local

    for name in args.fetch:
        print(f"{name}: {resolve_model(name)}")
    if args.fetch:
        return 0
    width = max(len(name) for name in CATALOGUE)
    for entry in CATALOGUE.values():
        found = find_local(entry)
        where = str(found) if found else "not on this machine (downloaded on first use)"
        print(f"{entry.name:<{width}}  {entry.family:<10}  {entry.title}\n{'':<{width}}  source:  {entry.source}\n"
              f"{'':<{width}}  license: {entry.license}\n{'':<{width}}  file:    {where}")
    print("\nsearched, in order: the bundled copies, " + ", ".join(str(folder) for folder in search_folders()))
    return 0
