"""The noise a model draws, made reproducible: drawn once, by Torch7's own generator, and fed to every backend.

texture_nets-era generators draw noise inside ``forward`` (``nn.GenNoise``). Two backends that
each drew their own could never be compared, so the harness draws it once and hands the same
arrays to every runner (``forward(x, noise=...)``, contract/protocol.py):

* :func:`draw_noise` draws, for each noise module in execution order, the array it would draw on an
  input of a given shape, with a NumPy replica of Torch7's CPU generator after
  ``torch.manualSeed(seed)`` (harness.core.torch7_random: bit-exact mt19937, ``uniform`` and
  ``normal`` as THRandom.c computes them). ``--seed N`` therefore gives the noise Lua Torch7 draws
  on the CPU after ``torch.manualSeed(N)`` for models whose modules draw in execution order only.
  (The Torch7 ground-truth runs of the v1 nets drew extra values inside their emulation of the
  GPU batch norm, so their noise is injected from the runs' files, never re-drawn.)
* :func:`load_noise` / :func:`check_noise` read and validate injected noise (``--noise NOISE.npz``,
  one array per noise module keyed by its Lua path, as the ``noise/<path>`` entries of the oracle files).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from contract.families import NoiseModule, noise_modules
from harness.core.shapes import walk_shapes
from harness.core.torch7_random import Torch7Generator
from t7file import T7Module


class NoiseError(ValueError):
    """Injected noise that does not fit the model (one line)."""


def noise_shapes(root: T7Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Lua path -> the shape of the array each noise module draws, for this input shape."""
    walk = walk_shapes(root, input_shape)
    shapes = {}
    for module in noise_modules(root):
        n, _, h, w = walk.inputs[module.lua_path]
        shapes[module.lua_path] = (n, module.planes, h, w)
    return shapes


def draw_noise(root: T7Module, input_shape: tuple[int, ...], seed: int,
               dtype: str = "float32") -> dict[str, np.ndarray]:
    """Every noise module's draw for an input of ``input_shape``, as Torch7 draws it after ``torch.manualSeed(seed)``.

    ``dtype`` is the tensor type the draws are stored in (Torch7 computes each value in double and
    casts it): draw float32 noise for a comparison that involves a float32 run, so that every
    backend, float64 ones included, sees exactly the same values.
    """
    generator = Torch7Generator(seed)
    shapes = noise_shapes(root, input_shape)
    drawn = {}
    for module in noise_modules(root):
        drawn[module.lua_path] = _draw(generator, module, shapes[module.lua_path], np.dtype(dtype))
    return drawn


def _draw(generator: Torch7Generator, module: NoiseModule, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if module.distribution == "uniform":
        return generator.uniform(shape, dtype)  # GenNoise (texture_nets): x:narrow(...):uniform()
    values = generator.normal(shape, dtype)  # GenNoise (doodle): torch.Tensor(sz):normal(0, 1) * mult
    return values if module.mult == 1.0 else values * np.asarray(module.mult, dtype=dtype)


def check_noise(root: T7Module, input_shape: tuple[int, ...], noise: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate injected noise against the model and the input: every noise module present with the
    right shape, finite values, nothing for paths that draw none. Returns float64 copies."""
    expected = noise_shapes(root, input_shape)
    unknown = sorted(set(noise) - set(expected))
    if unknown:
        raise NoiseError(f"noise given for Lua path(s) {', '.join(unknown)}, which draw no noise in this model"
                         + (f" (noise modules: {', '.join(expected)})" if expected else " (it has no noise modules)"))
    missing = [path for path in expected if path not in noise]
    if missing:
        raise NoiseError(f"no noise given for the noise module(s) at Lua path(s) {', '.join(missing)}")
    checked = {}
    for path, shape in expected.items():
        array = np.asarray(noise[path])
        if array.dtype.kind not in "fiu":
            raise NoiseError(f"noise for Lua path {path} is not numeric ({array.dtype})")
        if tuple(array.shape) != shape:
            raise NoiseError(f"noise for Lua path {path} has shape {'x'.join(map(str, array.shape))}; this input needs "
                             f"{'x'.join(map(str, shape))}")
        if not np.isfinite(array).all():
            raise NoiseError(f"noise for Lua path {path} holds NaN or Inf values")
        checked[path] = np.array(array, dtype=np.float64)
    return checked


def load_noise(path: str | Path) -> dict[str, np.ndarray]:
    """Read NOISE.npz: one array per noise module, keyed by Lua path (a ``noise/`` prefix is accepted,
    so an oracle run's own file can be given). No pickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise NoiseError(f"{path}: no such file") from None
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise NoiseError(f"{path}: holds Python objects (pickled arrays), which texture-nets never loads because "
                             "unpickling can run code; save plain numbers with np.savez") from None
        raise NoiseError(f"{path}: not a readable .npz archive ({error})") from None
    except (OSError, EOFError) as error:
        raise NoiseError(f"{path}: not a readable .npz archive ({error})") from None
    prefixed = {key[len("noise/"):]: value for key, value in arrays.items() if key.startswith("noise/")}
    return prefixed or {key: value for key, value in arrays.items() if not key.startswith(("trace/", "input",
                                                                                            "output", "image"))}


def noise_for_run(root: T7Module, input_shape: tuple[int, ...], *, seed: int | None = None,
                  noise: Mapping[str, np.ndarray] | None = None, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The noise of one run: the injected arrays (checked) when given, else drawn with ``seed`` (default 0).
    Empty for models without noise modules."""
    if not noise_modules(root):
        if noise:
            check_noise(root, input_shape, noise)  # raises: this model draws no noise
        return {}
    if noise is not None:
        checked = check_noise(root, input_shape, noise)
        return {path: array.astype(dtype) for path, array in checked.items()}
    return draw_noise(root, input_shape, 0 if seed is None else seed, dtype)
