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
    # p99 by nearest rank (the higher neighbour), partitioning our own temporary in place.
    flat = diff.reshape(-1)
    rank = min(flat.size - 1, math.ceil(0.99 * (flat.size - 1)))
    flat.partition(rank)
    p99 = float(flat[rank])
    scale = float(max(np.max(expected_finite), -np.min(expected_finite))) if np.size(expected_finite) else nan
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    if scale > 0:
        needed = max(0.0, (max_abs - tolerance.atol) / scale)
    else:
        needed = 0.0 if max_abs <= tolerance.atol else math.inf
    passed = (nonfinite_a == 0 and nonfinite_e == 0 and max_abs <= tolerance.bound(scale if scale > 0 else 0.0))
    return Comparison(actual_name, expected_name, where, actual.shape, expected.shape, max_abs, mean_abs, p99, scale,
                      max_rel, worst, float(actual[worst]), float(expected[worst]), nonfinite_a, nonfinite_e,
                      tolerance.rtol, tolerance.atol, needed, bool(passed))


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
