"""One comparison, as data: how far an array is from an expected one, and whether that passes.

The tolerance model is ``|actual - expected| <= atol + rtol * scale`` elementwise,
where ``scale`` is the expected array's max |value| (a layer's output scale: the
generator's activations range from ~1 to ~100, so a per-element relative
tolerance would be meaningless near zero crossings). NaN or Inf anywhere in the
actual values is always a failure, whatever the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Pass when max|a-e| <= atol + rtol * max|e|. Each instance should say where it was measured."""

    rtol: float
    atol: float = 0.0
    why: str = ""

    def bound(self, scale: float) -> float:
        return self.atol + self.rtol * scale


@dataclass(frozen=True)
class Comparison:
    """Result of comparing ``actual`` (one side) with ``expected`` (the other).

    Fields:
      actual_name / expected_name: who produced each side ("torch float32", "Torch7 oracle")
      where: what was compared (Lua path, "output", a primitive's case name)
      shape_actual / shape_expected: shapes; a mismatch fails and leaves the stats NaN
      max_abs / mean_abs / p99_abs: statistics of |actual - expected|, pairs with a NaN/Inf counting 0
        (p99 by nearest rank, the higher neighbour)
      scale: max |expected| (the layer's output scale)
      max_rel: max_abs / scale (0 when scale is 0 and max_abs is 0)
      worst_index: index (tuple) of the largest |difference|
      worst_actual / worst_expected: the two values there
      nonfinite_actual / nonfinite_expected: NaN/Inf counts on each side
      tolerance_rtol / tolerance_atol: the tolerance applied
      needed_rtol: the smallest rtol (at the same atol) that would have passed
      passed: the verdict; the truth value of the object
    """

    actual_name: str
    expected_name: str
    where: str
    shape_actual: tuple[int, ...]
    shape_expected: tuple[int, ...]
    max_abs: float
    mean_abs: float
    p99_abs: float
    scale: float
    max_rel: float
    worst_index: tuple[int, ...] | None
    worst_actual: float
    worst_expected: float
    nonfinite_actual: int
    nonfinite_expected: int
    tolerance_rtol: float
    tolerance_atol: float
    needed_rtol: float
    passed: bool

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}

    def message(self) -> str:
        """One paragraph for a test failure or a log line: both sides, where, how bad, what would pass."""
        head = f"{self.where}: {self.actual_name} vs {self.expected_name}"
        if self.shape_actual != self.shape_expected:
            return (f"{head}: shape mismatch: {self.actual_name}={self.shape_actual} | "
                    f"{self.expected_name}={self.shape_expected}")
        if self.nonfinite_actual or self.nonfinite_expected:
            return (f"{head}: non-finite values: {self.actual_name} has {self.nonfinite_actual} NaN/Inf, "
                    f"{self.expected_name} has {self.nonfinite_expected}")
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{head}: {verdict}: max|diff|={self.max_abs:.3g} at {self.worst_index} "
            f"({self.actual_name}={self.worst_actual:.9g}, {self.expected_name}={self.worst_expected:.9g}), "
            f"mean={self.mean_abs:.3g}, p99={self.p99_abs:.3g}, scale={self.scale:.3g}, "
            f"max rel={self.max_rel:.3g}; tolerance rtol={self.tolerance_rtol:.3g} atol={self.tolerance_atol:.3g}, "
            f"would need rtol>={self.needed_rtol:.3g}"
        )


def compare(
    actual: np.ndarray,
    expected: np.ndarray,
    tolerance: Tolerance,
    *,
    actual_name: str = "actual",
    expected_name: str = "expected",
    where: str = "",
) -> Comparison:
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    nan = float("nan")
    if actual.shape != expected.shape:
        return Comparison(actual_name, expected_name, where, tuple(actual.shape), tuple(expected.shape),
                          nan, nan, nan, nan, nan, None, nan, nan,
                          _count_nonfinite(actual), _count_nonfinite(expected),
                          tolerance.rtol, tolerance.atol, math.inf, False)
    if actual.size == 0:
        return Comparison(actual_name, expected_name, where, actual.shape, expected.shape, 0.0, 0.0, 0.0, 0.0, 0.0,
                          None, nan, nan, 0, 0, tolerance.rtol, tolerance.atol, 0.0, True)
    if actual.size >= FUSED_MIN_SIZE:
        if expected.flags.c_contiguous and not actual.flags.c_contiguous:
            # A framework's trace handed out as a view (TF's NHWC as NCHW): with a C-ordered expected side the
            # differences below are C-ordered too, so the fused pass over a C-ordered copy gives the same numbers,
            # at a third of the time (the copy is the run dtype's, a quarter of the float64 differences).
            actual = c_ordered_copy(actual)
        fused = _fused_statistics(actual, expected)
        if fused is not None:  # every difference finite: the same numbers as below, in one cache-sized pass
            max_abs, worst_flat, mean_abs, p99, scale = fused
            worst = tuple(int(i) for i in np.unravel_index(worst_flat, actual.shape))
            return _finish(actual, expected, tolerance, actual_name, expected_name, where, worst, max_abs, mean_abs,
                           p99, scale, 0, 0)
    # One float64 temporary: |a - e| (the subtraction casts chunk by chunk, no float64 copies of the inputs;
    # abs in place).
    diff = np.subtract(actual, expected, dtype=np.float64)
    np.abs(diff, out=diff)
    # argmax returns the first NaN when there is one, so the largest difference is finite exactly when all are:
    # both sides finite (a NaN or Inf on either side makes the difference non-finite). Saves an isfinite pass.
    worst_flat = int(np.argmax(diff))
    if math.isfinite(diff.flat[worst_flat]):
        nonfinite_a = nonfinite_e = 0
        expected_finite = expected
    else:
        nonfinite_a, nonfinite_e = _count_nonfinite(actual), _count_nonfinite(expected)
        finite = np.isfinite(actual) & np.isfinite(expected)
        diff[~finite] = 0.0
        expected_finite = expected[np.isfinite(expected)]
        worst_flat = int(np.argmax(diff))
    worst = tuple(int(i) for i in np.unravel_index(worst_flat, diff.shape))
    max_abs = float(diff.flat[worst_flat])
    mean_abs = float(diff.mean())
    # p99 by nearest rank (the higher neighbour).
    flat = diff.reshape(-1)
    p99 = order_statistic(flat, min(flat.size - 1, math.ceil(0.99 * (flat.size - 1))))
    scale = float(max(np.max(expected_finite), -np.min(expected_finite))) if np.size(expected_finite) else nan
    return _finish(actual, expected, tolerance, actual_name, expected_name, where, worst, max_abs, mean_abs, p99,
                   scale, nonfinite_a, nonfinite_e)


def _finish(actual: np.ndarray, expected: np.ndarray, tolerance: Tolerance, actual_name: str, expected_name: str,
            where: str, worst: tuple[int, ...], max_abs: float, mean_abs: float, p99: float, scale: float,
            nonfinite_a: int, nonfinite_e: int) -> Comparison:
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    if scale > 0:
        needed = max(0.0, (max_abs - tolerance.atol) / scale)
    else:
        needed = 0.0 if max_abs <= tolerance.atol else math.inf
    passed = (nonfinite_a == 0 and nonfinite_e == 0 and max_abs <= tolerance.bound(scale if scale > 0 else 0.0))
    return Comparison(actual_name, expected_name, where, actual.shape, expected.shape, max_abs, mean_abs, p99, scale,
                      max_rel, worst, float(actual[worst]), float(expected[worst]), nonfinite_a, nonfinite_e,
                      tolerance.rtol, tolerance.atol, needed, bool(passed))


# Arrays this large take the fused pass; leaves of this many elements (512 KiB of float64) stay in the L2 cache.
FUSED_MIN_SIZE = 1 << 17
LEAF_SIZE = 1 << 16
_PAIRWISE_BLOCK = 8  # NumPy's pairwise summation splits a range at half its length, rounded down to a multiple of 8


@dataclass(frozen=True)
class _Leaf:
    total: float  # NumPy's own sum of the leaf's differences
    worst: int  # flat index of the first largest difference
    max_abs: float
    kept: np.ndarray  # the differences at or above the p99 threshold
    e_max: float
    e_min: float


COPY_BLOCK_BYTES = 1 << 20  # source bytes per block of c_ordered_copy: about one core's L2 cache


def c_ordered_copy(array: np.ndarray) -> np.ndarray:
    """A C-ordered copy of a strided view, in blocks along the axes the view strides farthest over.

    NumPy copies a transposed view (NHWC read as NCHW) in the output's order: each of its C planes sweeps the
    whole source, which then comes from memory C times. Copying a few rows at a time keeps the rows' source in
    the cache while every plane takes its share: a 1 x 32 x 512 x 512 float32 view 41 -> 14 ms
    (docs/benchmarks.md). The values are copied, not computed: the result equals ``np.ascontiguousarray``."""
    array = np.asarray(array)
    if array.flags.c_contiguous or array.ndim < 2 or array.nbytes <= COPY_BLOCK_BYTES:
        return np.ascontiguousarray(array)
    out = np.empty(array.shape, dtype=array.dtype)
    _copy_in_blocks(out, array)
    return out


def _copy_in_blocks(out: np.ndarray, source: np.ndarray) -> None:
    if source.nbytes <= COPY_BLOCK_BYTES:
        out[...] = source
        return
    # the outermost axis of the source's memory (of more than one index), cut into blocks of about the budget
    axis = max((i for i in range(source.ndim) if source.shape[i] > 1), key=lambda i: abs(source.strides[i]))
    step = max(1, COPY_BLOCK_BYTES * source.shape[axis] // source.nbytes)
    index: list = [slice(None)] * source.ndim
    for start in range(0, source.shape[axis], step):
        index[axis] = slice(start, start + step)
        _copy_in_blocks(out[tuple(index)], source[tuple(index)])


def _fused_statistics(actual: np.ndarray, expected: np.ndarray) -> tuple[float, int, float, float, float] | None:
    """(max_abs, flat index of the worst, mean_abs, p99_abs, scale) of ``|actual - expected|`` without an array
    of the differences: the arrays are read once, leaf by leaf, each leaf in one cache-sized scratch array.
    (Spreading the leaves over two threads measured no faster: the GIL and the hand-offs eat the gain.)

    Every number is the one the plain pass computes, bit for bit:

    * the mean: NumPy sums a contiguous float64 array pairwise, splitting a range at half its length rounded
      down to a multiple of 8 until a block is small; the leaves here follow exactly that tree, each leaf's
      own sum is NumPy's sum of that range, and the leaf sums are added back up the same tree, so the total
      is NumPy's total (then divided by the count, as ``mean`` does);
    * the worst: the first index of the largest difference (leaves in order, a later leaf only wins when
      strictly larger);
    * the p99: the threshold comes from a strided sample of the differences computed up front, every
      difference at or above it is kept, and :func:`order_statistic`'s argument applies;
    * the scale: the largest of the leaves' max |expected|.

    None when an input is not C-contiguous (its flat order is not its memory order), or when a difference
    is not finite (the plain pass counts NaN/Inf), or when the sample's threshold was too high (rare).
    """
    if not (actual.flags.c_contiguous and expected.flags.c_contiguous):
        return None
    a, e = actual.reshape(-1), expected.reshape(-1)
    n = a.size
    rank = min(n - 1, math.ceil(0.99 * (n - 1)))
    with np.errstate(invalid="ignore", over="ignore"):
        sample = np.abs(np.subtract(a[::SAMPLE_STRIDE], e[::SAMPLE_STRIDE], dtype=np.float64))
    if not np.isfinite(sample).all():
        return None
    above = sample.size - sample.size * rank // n
    k = max(0, sample.size - 2 * above - 8 - 3 * math.isqrt(above + 1))
    threshold = np.partition(sample, k)[k]
    scratch = np.empty(min(n, LEAF_SIZE), dtype=np.float64)

    def leaf(bounds: tuple[int, int]) -> _Leaf | None:
        start, stop = bounds
        d = scratch[:stop - start]
        with np.errstate(invalid="ignore", over="ignore"):  # a NaN/Inf goes to the plain pass, which warns
            np.subtract(a[start:stop], e[start:stop], out=d, dtype=np.float64)
        np.abs(d, out=d)
        index = int(np.argmax(d))
        value = float(d[index])
        if not math.isfinite(value):
            return None
        block = e[start:stop]
        return _Leaf(np.add.reduce(d), start + index, value, d[np.flatnonzero(d >= threshold)],
                     float(np.max(block)), float(np.min(block)))

    bounds: list[tuple[int, int]] = []

    def split(start: int, count: int) -> None:
        if count <= LEAF_SIZE:
            bounds.append((start, start + count))
            return
        half = count // 2
        half -= half % _PAIRWISE_BLOCK
        split(start, half)
        split(start + half, count - half)

    split(0, n)
    leaves = []
    for leaf_bounds in bounds:
        result = leaf(leaf_bounds)
        if result is None:
            return None
        leaves.append(result)
    by_start = {b[0]: result for b, result in zip(bounds, leaves, strict=True)}

    def total(start: int, count: int) -> float:
        if count <= LEAF_SIZE:
            return by_start[start].total
        half = count // 2
        half -= half % _PAIRWISE_BLOCK
        return total(start, half) + total(start + half, count - half)

    best = leaves[0]
    for result in leaves[1:]:
        if result.max_abs > best.max_abs:
            best = result
    chosen = np.concatenate([result.kept for result in leaves])
    first = n - chosen.size  # the kept values are exactly the sorted positions first .. n - 1
    if first > rank:
        return None
    p99 = float(np.partition(chosen, rank - first)[rank - first])
    mean = float(np.float64(total(0, n)) / n)
    scale = max(max(r.e_max for r in leaves), -min(r.e_min for r in leaves))
    return best.max_abs, best.worst, mean, p99, float(scale)


# Below this many elements a full partition is as quick as the pre-selection in order_statistic.
SELECT_MIN_SIZE = 1 << 16
SAMPLE_STRIDE = 97  # a prime, so that a sample of a row-major image does not follow its rows or planes


def order_statistic(flat: np.ndarray, rank: int) -> float:
    """``np.partition(flat, rank)[rank]``: the value at position ``rank`` of ``flat`` sorted, exactly.

    For a rank near the top (the p99 of a comparison) a full partition of a large layer costs more than
    all the rest of :func:`compare`. Instead, a threshold is read off a strided sample, a little below the
    sample's own value at that rank, and only the elements at or above it are partitioned. That is
    exact: the ``m`` elements ``>= threshold`` are precisely sorted positions ``n - m .. n - 1`` (ties
    included), so when ``n - m <= rank`` the answer is the selection's value at ``rank - (n - m)``;
    otherwise (an unlucky sample) the full partition runs. Deterministic: no random sampling.
    ``flat`` is left unchanged, except by the fallback, which partitions it in place.
    """
    n = flat.size
    if n >= SELECT_MIN_SIZE and rank > 0:
        sample = flat[::SAMPLE_STRIDE]
        above = sample.size - sample.size * rank // n  # sample elements expected at or above the answer
        # Twice as many plus a margin of a few standard deviations of the sampling error.
        k = max(0, sample.size - 2 * above - 8 - 3 * math.isqrt(above + 1))
        threshold = np.partition(sample, k)[k]
        selected = flat[np.flatnonzero(flat >= threshold)]  # 4x quicker than a boolean index here
        start = n - selected.size
        if start <= rank:
            offset = rank - start
            return float(np.partition(selected, offset)[offset])
    flat.partition(rank)
    return float(flat[rank])


def assert_close(actual: np.ndarray, expected: np.ndarray, tolerance: Tolerance, **names: str) -> Comparison:
    """compare() and raise AssertionError with the full message on failure."""
    result = compare(actual, expected, tolerance, **names)
    if not result.passed:
        raise AssertionError(result.message() + (f"\n  tolerance basis: {tolerance.why}" if tolerance.why else ""))
    return result


def _count_nonfinite(array: np.ndarray) -> int:
    if array.dtype.kind not in "fc":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))
