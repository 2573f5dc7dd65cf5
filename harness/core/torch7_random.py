"""Bit-exact NumPy replica of Lua Torch7's CPU random generator.

Mirrors the default generator of torch/torch7 (commit 814ea4a; the code is unchanged since the
2016 era the texture_nets models come from) as used by ``torch.manualSeed(seed)`` followed by
``tensor:uniform(a, b)`` / ``tensor:normal(mean, std)`` on a FloatTensor or DoubleTensor.

What Torch7 does, and what this module reproduces (file/function names are Torch7's):

* ``lib/TH/THRandom.c: THRandom_manualSeed`` seeds a standard MT19937 with Matsumoto and
  Nishimura's ``init_genrand`` (state[0] = seed & 0xffffffff, state[j] = 1812433253 *
  (state[j-1] ^ (state[j-1] >> 30)) + j), and resets the Box-Muller cache. The Lua binding
  (``random.lua``, cwrap type ``long``) passes the seed as a C ``long``, so only its low 32 bits
  count. NumPy's legacy ``RandomState(seed)`` seeding is the same ``init_genrand``.
* ``THRandom_random`` is the reference ``genrand_int32`` (twist + tempering); NumPy's MT19937
  bit generator produces the very same 32-bit stream (``random_raw``).
* ``__uniform__`` = ``genrand_int32() * (1.0/4294967296.0)``: one 32-bit draw per value, a
  double in [0, 1) with 32 random bits (NOT NumPy's 53-bit ``random_sample``).
  ``THRandom_uniform(a, b)`` = ``__uniform__() * (b - a) + a`` in double.
* ``THRandom_normal(mean, std)``: Box-Muller with a one-value cache. A fresh call draws
  x = __uniform__(), y = __uniform__(), rho = sqrt(-2 * log(1 - y)) and returns
  rho * cos(2*pi*x) * std + mean; the next call draws nothing and returns
  rho * sin(2*pi*x) * std + mean with the cached x, rho. So: two uniforms per pair of normals,
  cos first, the cache survives across tensors (an odd-sized fill leaves a pending sin value),
  and ``manualSeed`` clears it. std must be > 0 (``THArgCheck``).
* ``lib/TH/generic/THTensorRandom.c: THTensor_(uniform)/THTensor_(normal)`` evaluate the above in
  double for every element and store ``(real)value``: for a FloatTensor that is a
  round-to-nearest double -> float cast (no separate float path). Elements are visited by
  ``TH_TENSOR_APPLY`` (``lib/TH/THTensorApply.h``) in logical row-major order (last index
  fastest) whatever the strides, so an in-place fill of a non-contiguous view (e.g.
  ``x:narrow(2, 4, 3):uniform()`` on N x 6 x H x W) draws exactly ``numel(view)`` values, in
  (n, c, h, w) order of the view; nothing is skipped.
* One global generator: successive fills continue the same stream.

Caveat (transcendentals): Torch7 calls the C library's ``log``, ``cos``, ``sin``. NumPy's own
``np.log`` (SIMD) differs from glibc's ``log`` in the last bit for ~0.4% of inputs, so
``normal`` evaluates log/cos/sin through Python's ``math`` module, which calls the platform C
libm, i.e. the same functions Torch7 called (bit-exact where the glibc versions agree).
``fast_math=True`` uses NumPy's ufuncs instead (about 5x faster; float64 normals may then
differ by 1 ulp from Torch7; float32 results virtually never do).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Torch7Generator", "init_genrand_key"]

Shape = int | Sequence[int]

_MT_N = 624
_TWO_POW_32_INV = 1.0 / 4294967296.0  # __uniform__'s scale factor (exact power of two)
_TWO_PI = 2.0 * math.pi  # 2.*M_PI in THRandom_normal; M_PI and math.pi are the same double
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def init_genrand_key(seed: int) -> np.ndarray:
    """MT19937 state vector after Torch7's ``THRandom_manualSeed(seed)`` (= ``init_genrand``).

    Only the low 32 bits of ``seed`` are used, as in Torch7 (two's complement for negative
    seeds, which the Lua binding passes as a C ``long``).
    """
    key = np.empty(_MT_N, dtype=np.uint32)
    s = operator.index(seed) & 0xFFFFFFFF
    key[0] = s
    for j in range(1, _MT_N):
        s = (1812433253 * (s ^ (s >> 30)) + j) & 0xFFFFFFFF
        key[j] = s
    return key


def _shape_tuple(shape: Shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(operator.index(d) for d in shape)


def _real_dtype(dtype: npt.DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"Torch7 uniform/normal exist for FloatTensor/DoubleTensor only, got {dt}")
    return dt


def _c_libm(func: Callable[[float], float], values: np.ndarray) -> np.ndarray:
    """Apply a ``math`` function (a thin wrapper of the C libm) element-wise."""
    return np.fromiter(map(func, values.tolist()), dtype=np.float64, count=values.size)


class Torch7Generator:
    """Torch7's default CPU generator (``torch._gen``) after ``torch.manualSeed(seed)``.

    State (the Mersenne Twister position and the Box-Muller cache) carries over from call to
    call exactly like Torch7's global generator, so draws made in module execution order
    reproduce a whole forward pass.

    >>> g = Torch7Generator(109)
    >>> noise = g.uniform((1, 3, 4, 4), np.float32)   # x:narrow(2,4,3):uniform() on 1x6x4x4
    """

    def __init__(self, seed: int, *, fast_math: bool = False) -> None:
        self.fast_math = fast_math
        self._bitgen = np.random.MT19937()
        self.manual_seed(seed)

    # -- THRandom_manualSeed -------------------------------------------------------------
    def manual_seed(self, seed: int) -> None:
        """``torch.manualSeed(seed)``: re-seed and clear the Box-Muller cache."""
        self._initial_seed = operator.index(seed)
        # pos = 624 means "twist before the next output", i.e. Torch7's left = 1 after seeding.
        self._bitgen.state = {
            "bit_generator": "MT19937",
            "state": {"key": init_genrand_key(seed), "pos": _MT_N},
        }
        self._normal_valid = False  # normal_is_valid
        self._normal_x = 0.0  # normal_x
        self._normal_rho = 0.0  # normal_rho

    def initial_seed(self) -> int:
        return self._initial_seed

    # -- THRandom_random / __uniform__ ---------------------------------------------------
    def random_raw(self, n: int) -> np.ndarray:
        """Next ``n`` outputs of ``THRandom_random`` (genrand_int32), as uint64 in [0, 2**32)."""
        return self._bitgen.random_raw(int(n))

    def discard(self, n: int) -> None:
        """Advance the stream by ``n`` 32-bit draws, as a ``tensor:uniform()`` of ``n`` elements
        whose values are thrown away would (the Box-Muller cache is not touched)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self.random_raw(int(n))  # MT19937 has no cheap jump-by-n; draw and drop

    def _uniform01(self, n: int) -> np.ndarray:
        # __uniform__: (double)genrand_int32() * (1.0/4294967296.0); both steps exact.
        return self.random_raw(n).astype(np.float64) * _TWO_POW_32_INV

    # -- THTensor_(uniform) --------------------------------------------------------------
    def uniform(
        self, shape: Shape, dtype: npt.DTypeLike = np.float64, low: float = 0.0, high: float = 1.0
    ) -> np.ndarray:
        """New array as Torch7's ``tensor:uniform(low, high)`` fills a contiguous tensor.

        Value = ``(real)(__uniform__() * (high - low) + low)`` computed in double. For float32
        the cast rounds to nearest, so a draw >= 1 - 2**-25 becomes exactly 1.0f (Torch7's
        FloatTensor uniform can return ``high``).
        """
        shp = _shape_tuple(shape)
        dt = _real_dtype(dtype)
        n = math.prod(shp)
        u = self._uniform01(n)
        a, b = float(low), float(high)
        vals = u * (b - a) + a  # THRandom_uniform, double arithmetic, no FMA
        return vals.astype(dt).reshape(shp)

    # -- THTensor_(normal) ---------------------------------------------------------------
    def _normals(self, n: int, mean: float, std: float) -> np.ndarray:
        """``n`` successive THRandom_normal results, in double, updating the cache."""
        out = np.empty(n, dtype=np.float64)
        if n == 0:
            return out
        i = 0
        if self._normal_valid:
            # Pending second value of the last pair: sin branch, no draw.
            out[0] = self._normal_rho * math.sin(_TWO_PI * self._normal_x) * std + mean
            self._normal_valid = False
            i = 1
        m = n - i
        if m == 0:
            return out
        pairs = (m + 1) // 2
        u = self._uniform01(2 * pairs)
        x = u[0::2]  # normal_x
        y = u[1::2]  # normal_y
        theta = _TWO_PI * x
        arg = -2.0 * (np.log(1.0 - y) if self.fast_math else _c_libm(math.log, 1.0 - y))
        rho = np.sqrt(arg)  # sqrt is correctly rounded everywhere
        if self.fast_math:
            c, s = np.cos(theta), np.sin(theta)
        else:
            c = _c_libm(math.cos, theta)
            s = _c_libm(math.sin, theta[: m // 2])  # the last pair's sin may stay cached
        # rho*cos(2*pi*x)*stdv+mean, evaluated left to right in double.
        out[i::2] = rho * c * std + mean
        out[i + 1 :: 2] = rho[: m // 2] * s[: m // 2] * std + mean
        if m % 2:
            self._normal_valid = True
            self._normal_x = float(x[-1])
            self._normal_rho = float(rho[-1])
        return out

    def normal(
        self, shape: Shape, dtype: npt.DTypeLike = np.float64, mean: float = 0.0, std: float = 1.0
    ) -> np.ndarray:
        """New array as Torch7's ``tensor:normal(mean, std)`` fills a contiguous tensor.

        Box-Muller of ``THRandom_normal`` (cos first, sin from the cache), evaluated in double,
        then ``(real)`` cast. An odd element count leaves the sin value cached for the next call.
        """
        if not std > 0:
            raise ValueError("standard deviation must be strictly positive")
        shp = _shape_tuple(shape)
        dt = _real_dtype(dtype)
        vals = self._normals(math.prod(shp), float(mean), float(std))
        return vals.astype(dt).reshape(shp)

    # -- in-place fills of (possibly non-contiguous) views -------------------------------
    def uniform_(self, out: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """In-place ``out:uniform(low, high)``; ``out`` may be any strided view (e.g. a narrow).

        TH_TENSOR_APPLY visits the view in logical row-major order, which is exactly how NumPy
        assigns a C-ordered array into a strided view.
        """
        out[...] = self.uniform(out.shape, out.dtype, low, high)
        return out

    def normal_(self, out: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
        """In-place ``out:normal(mean, std)`` on any strided view (row-major draw order)."""
        out[...] = self.normal(out.shape, out.dtype, mean, std)
        return out
