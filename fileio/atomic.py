"""Atomic output files: write to a temporary file in the destination's folder, then ``os.replace``.

A reader of the destination sees either the old file or the complete new one,
never a partial write; a failure (full disk, a crash in the writer, Ctrl-C)
leaves the destination untouched and removes the temporary file. Unwritable
destinations raise :class:`fileio.errors.UserError` with one line.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from fileio.errors import UserError


def check_destination(path: str | Path) -> Path:
    """Refuse destinations that cannot be written, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: {_why_no_folder(parent)}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: no permission to create files in {parent}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"cannot write {path}: the existing file is read-only")
    return path


def _why_no_folder(folder: Path) -> str:
    """Why ``folder`` cannot hold files: a file stands where it (or a folder above it) should be, or it is missing."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() and not candidate.is_dir():
            return f"{candidate} is a file, not a directory"
        if candidate.is_dir():
            break
    return f"directory {folder} does not exist"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit it replaces ``path`` atomically."""
    path = check_destination(path)
    try:
        # The temporary name ends with the destination's suffix: np.save/np.savez append ".npy"/".npz"
        # to names that lack it, and Pillow picks a format from it.
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(fd)
    temp = Path(temp_name)
    try:
        yield temp
        with open(temp, "rb+") as handle:  # the data is on disk before the rename makes it visible
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def atomic_write(path: str | Path, writer_fn: Callable[[Path], object]) -> Path:
    """Call ``writer_fn(temporary_path)`` and move the result to ``path`` atomically; returns ``path``.

    The temporary path has the destination's suffix, so ``lambda f: np.save(f, array)`` works.
    """
    with atomic_path(path) as temp:
        writer_fn(temp)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda temp: temp.write_bytes(data))
