"""Input arrays from .npy files: numeric data only, never pickles.

``np.load(path, allow_pickle=True)`` would run whatever code a pickled .npy carries; texture-nets
never does that, and its errors never suggest it. A pickled (object) array is refused with a line
that says how to save plain numbers instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fileio.errors import UserError


def warn_on_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_array(path: str | Path, planes: int | None = 3, *,
               warn: Callable[[str], None] | None = None) -> np.ndarray:
    """Read X.npy for a forward pass: N x planes x H x W (or planes x H x W) finite numbers; returns a 4-D array.

    ``planes``: the channels the model's forward takes (3 for the johnson generators and texture nets, 6 for
    the v1 style nets); None accepts any. With ``warn`` (e.g. :func:`warn_on_stderr`), values outside [0, 1]
    are reported through it (texture_nets feeds RGB in [0, 1]). Raises UserError with one line for missing,
    unreadable, pickled, non-numeric, badly shaped or non-finite arrays.
    """
    path = Path(path)
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: it is a directory, not an .npy file") from None
    except ValueError as error:
        if "allow_pickle" in str(error) or "pickle" in str(error).lower():
            raise UserError(f"{path}: the array holds Python objects (a pickled .npy), which texture-nets never "
                            "loads because unpickling can run code; save plain numbers instead: "
                            "np.save(path, np.asarray(x, dtype=np.float32))") from None
        raise UserError(f"{path}: not a readable .npy array ({error})") from None
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: not a readable .npy array ({getattr(error, 'strerror', None) or error})") from None
    if not isinstance(x, np.ndarray):  # an .npz archive
        names = ", ".join(getattr(x, "files", [])[:5])
        raise UserError(f"{path}: an .npz archive ({names}), not one .npy array; save the input with np.save")
    if x.dtype.kind not in "fiu":
        raise UserError(f"{path}: expected a numeric array, found dtype {x.dtype}")
    if x.ndim == 3:
        x = x[np.newaxis]
    wanted = "C" if planes is None else str(planes)
    if x.ndim != 4 or (planes is not None and x.shape[1] != planes) or min(x.shape) < 1:
        raise UserError(f"{path}: expected shape N×{wanted}×H×W or {wanted}×H×W (what this model's forward takes), "
                        f"found {'×'.join(map(str, x.shape))}")
    if not np.isfinite(x).all():
        raise UserError(f"{path}: the input holds NaN or Inf values")
    if warn is not None and (x.min() < 0 or x.max() > 1):
        warn(f"{path}: values span [{x.min():.3g}, {x.max():.3g}]; texture_nets expects RGB in [0,1]")
    return x


def array_shape(path: str | Path) -> tuple[int, ...]:
    """The shape stored in an .npy file's header, without reading the data (for a memory check before
    :func:`load_array`). Raises UserError like load_array for files that are not .npy arrays."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, _ = read_header(handle)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: it is a directory, not an .npy file") from None
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"{path}: not a readable .npy array ({error})") from None
    return tuple(int(d) for d in shape)
