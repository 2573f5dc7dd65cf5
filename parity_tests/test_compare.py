"""Meta-tests of harness/core/compare.py: the comparison helper must be able to fail, and say why.

A helper that cannot fail is a defect (STYLE: array-api-tests' meta-tests). Each test builds a
pair whose verdict is known by construction: shape mismatch, NaN/Inf on either side, one element
just outside or just inside ``atol + rtol * max|expected|``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.core.compare import Tolerance, assert_close, compare

TOL = Tolerance(rtol=1e-5, atol=1e-7, why="meta-test")
NAMES = dict(actual_name="torch float32", expected_name="reference float64", where="12.1.2.4")


@pytest.fixture
def expected() -> np.ndarray:
    return np.linspace(-3.0, 5.0, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)


def _bound(expected: np.ndarray, tolerance: Tolerance = TOL) -> float:
    return tolerance.atol + tolerance.rtol * float(np.max(np.abs(expected)))


def _perturbed(expected: np.ndarray, index: tuple[int, ...], delta: float) -> np.ndarray:
    actual = expected.copy()
    actual[index] += delta
    return actual


def test_identical_arrays_pass_with_zero_error(expected):
    result = compare(expected.copy(), expected, Tolerance(0.0), **NAMES)
    assert result and result.max_abs == 0.0 and result.needed_rtol == 0.0


def test_shape_mismatch_fails_and_names_both_shapes(expected):
    result = compare(expected[:, :, :3], expected, TOL, **NAMES)
    assert not result
    message = result.message()
    assert "shape mismatch" in message
    assert "torch float32=(2, 3, 3, 5)" in message and "reference float64=(2, 3, 4, 5)" in message
    assert "12.1.2.4" in message


def test_transposed_shape_is_a_mismatch_not_a_broadcast(expected):
    assert not compare(expected[0, 0], expected[0, 0].T, Tolerance(1.0), **NAMES)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("side", ["actual", "expected"])
def test_nonfinite_values_fail_whatever_the_tolerance(expected, bad, side):
    poisoned = _perturbed(expected, (1, 2, 3, 4), 0.0)
    poisoned[1, 2, 3, 4] = bad
    actual, reference = (poisoned, expected) if side == "actual" else (expected, poisoned)
    result = compare(actual, reference, Tolerance(rtol=1e30, atol=1e30), **NAMES)
    assert not result
    assert "non-finite" in result.message()
    counts = (result.nonfinite_actual, result.nonfinite_expected)
    assert counts == ((1, 0) if side == "actual" else (0, 1))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_just_outside_tolerance_fails(expected, sign):
    index = (1, 1, 2, 3)
    bound = _bound(expected)
    result = compare(_perturbed(expected, index, sign * bound * (1 + 1e-6)), expected, TOL, **NAMES)
    assert not result
    assert result.worst_index == index
    assert result.needed_rtol > TOL.rtol


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_just_inside_tolerance_passes(expected, sign):
    bound = _bound(expected)
    result = compare(_perturbed(expected, (0, 2, 1, 0), sign * bound * (1 - 1e-6)), expected, TOL, **NAMES)
    assert result
    assert result.needed_rtol <= TOL.rtol


def test_atol_alone_governs_an_all_zero_expected():
    zeros = np.zeros((1, 1, 2, 2))
    assert compare(zeros + 0.9e-7, zeros, TOL)
    assert not compare(zeros + 1.1e-7, zeros, TOL)


def test_failure_message_names_sides_path_worst_element_and_needed_tolerance(expected):
    index = (0, 1, 2, 3)
    actual = _perturbed(expected, index, 0.25)
    with pytest.raises(AssertionError) as raised:
        assert_close(actual, expected, TOL, **NAMES)
    message = str(raised.value)
    scale = float(np.max(np.abs(expected)))
    needed = (0.25 - TOL.atol) / scale
    assert "torch float32" in message and "reference float64" in message
    assert "12.1.2.4" in message
    assert str(index) in message
    assert f"torch float32={actual[index]:.9g}" in message and f"reference float64={expected[index]:.9g}" in message
    assert f"would need rtol>={needed:.3g}" in message
    assert "tolerance basis: meta-test" in message


def test_needed_rtol_is_the_smallest_passing_rtol(expected):
    actual = _perturbed(expected, (1, 0, 0, 0), 3e-4)
    needed = compare(actual, expected, TOL).needed_rtol
    assert compare(actual, expected, Tolerance(needed * (1 + 1e-9), TOL.atol))
    assert not compare(actual, expected, Tolerance(needed * (1 - 1e-6), TOL.atol))


def test_result_is_json_data(expected):
    result = compare(_perturbed(expected, (0, 0, 0, 0), math.nan), expected, TOL, **NAMES)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is False and data["where"] == "12.1.2.4" and data["nonfinite_actual"] == 1


@pytest.mark.parametrize("layout", ["C-ordered", "NHWC view (a framework's trace)"])
def test_large_comparisons_give_numpys_own_statistics(layout):
    """Arrays from FUSED_MIN_SIZE up take one cache-sized pass (a view is copied to C order first); every statistic
    must be NumPy's own on the C-ordered float64 differences, bit for bit, wherever the worst element sits."""
    from harness.core.compare import FUSED_MIN_SIZE

    rng = np.random.default_rng(5)
    expected = rng.standard_normal((1, 8, 64, 2 * FUSED_MIN_SIZE // (8 * 64)))
    actual = (expected + 1e-6 * rng.standard_normal(expected.shape)).astype(np.float32)
    actual[0, 5, 33, 7] += 1e-3  # the worst element, away from the first leaf
    if layout != "C-ordered":
        actual = np.ascontiguousarray(actual.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        assert not actual.flags.c_contiguous
    found = compare(actual, expected, TOL)
    diff = np.abs(np.subtract(np.ascontiguousarray(actual), expected, dtype=np.float64))
    rank = math.ceil(0.99 * (diff.size - 1))
    assert found.max_abs == diff.max() and found.worst_index == (0, 5, 33, 7)
    assert found.mean_abs == diff.mean()
    assert found.p99_abs == np.partition(diff.reshape(-1), rank)[rank]
    assert found.scale == np.max(np.abs(expected))
    assert not found.passed


@pytest.mark.parametrize("make", [
    lambda a: a.reshape(1, 128, 128, 40).transpose(0, 3, 1, 2),      # a framework's NHWC trace read as NCHW
    lambda a: a.reshape(2, 64, 128, 40).transpose(0, 3, 1, 2),       # a batch
    lambda a: a.reshape(128, 128, 40).transpose(2, 0, 1)[:, ::-1],   # negative strides
    lambda a: a.reshape(40, 128, 128)[:, 1:-1, ::2],                 # a strided slice
    lambda a: a.reshape(655360, 1)[::2],                             # one long axis
    lambda a: np.broadcast_to(a[:16384].reshape(1, 128, 128), (40, 128, 128)),  # a zero stride
], ids=["nhwc", "batch", "flipped", "sliced", "column", "broadcast"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_c_ordered_copy_equals_numpys_copy_in_every_layout(make, dtype):
    """compare's copy of a strided view works in cache-sized blocks; it must be NumPy's C-ordered copy, exactly."""
    from harness.core.compare import COPY_BLOCK_BYTES, c_ordered_copy

    view = make(np.random.default_rng(7).standard_normal(128 * 128 * 40).astype(dtype))
    assert view.nbytes > COPY_BLOCK_BYTES  # the blocked path, not NumPy's own
    copied = c_ordered_copy(view)
    assert copied.flags.c_contiguous and copied.shape == view.shape and copied.dtype == view.dtype
    assert np.array_equal(copied, np.ascontiguousarray(view))
