"""Output folders that do not outlive a failed run.

    with output_folder(args.out) as out:        # created if missing
        ...                                     # an exception or Ctrl-C here: a folder this call created
                                                # and left empty is removed again

A command that writes several files into one folder (``demo``) creates it first; when the run then
fails or is interrupted before anything is written, the user would find an empty folder that looks
like a result. Only folders this call created are removed, and only when empty: nothing a user made,
and nothing already written, is ever deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from fileio.errors import UserError


@contextlib.contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """Create ``path`` (and missing parents) for the duration of the block; on failure remove the folders this
    call created if they are still empty. Raises UserError when the folder cannot be created."""
    path = Path(path)
    created: list[Path] = []  # deepest last
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            created.append(folder)
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            raise UserError(f"cannot create the folder {path}: {candidate} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the folder {path}: {error.strerror or error}") from None
    try:
        yield path
    except BaseException:
        remove_if_empty(created)
        raise


def remove_if_empty(folders: list[Path]) -> None:
    """Remove each folder that is empty, deepest first (a parent empties once its child is gone)."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):  # not empty, or already gone: leave it
            folder.rmdir()
