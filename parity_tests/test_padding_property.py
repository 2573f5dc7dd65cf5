"""The seed's padding trick, proved: k stacked 1-pixel SYMMETRIC pads == replication padding of k.

tf_texture_net emulates nn.SpatialReplicationPadding(k, k, k, k) with k successive
``tf.pad(x, 1, "SYMMETRIC")`` (docs/torch7-semantics.md): a 1-pixel symmetric pad repeats the edge pixel, and
repeating it k times is edge replication, for every k >= 0 and every plane >= 1x1 (SYMMETRIC
never needs more than one pixel of the current plane). The negatives keep the property honest:
one SYMMETRIC pad of width k > 1 mirrors interior pixels, and REFLECT never repeats the edge, so
both differ from replication as soon as the padded axis has >= 2 pixels.

The small space (k <= 6, H, W <= 5) is enumerated exhaustively; hypothesis covers larger shapes.

The same for texture_nets' nn.SpatialCircularPadding (docs/real-models.md): the literal
supplementary/utils.lua rule (:func:`circular_rule`, written here statement by statement) is a torus wrap
(``numpy.pad(mode="wrap")``) for pad 1 on every plane, is not an identity for pad 0 once a side has 3
pixels (it overwrites the border), and is not a wrap for pads of 2 or more (it copies padding zeros).
The backends are held to this rule in test_real_model_primitives.py.
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

K_MAX, SIDE_MAX = 6, 5
SMALL_SPACE = list(itertools.product(range(K_MAX + 1), range(1, SIDE_MAX + 1), range(1, SIDE_MAX + 1)))
has_tf = importlib.util.find_spec("tensorflow") is not None


def _plane(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Distinct values everywhere, so any mirrored interior pixel shows."""
    return np.random.default_rng(seed).permutation(h * w).reshape(h, w).astype(np.float64) + 1.0


def replication(x: np.ndarray, k: int) -> np.ndarray:
    return np.pad(x, k, mode="edge")


def stacked_symmetric_np(x: np.ndarray, k: int) -> np.ndarray:
    for _ in range(k):
        x = np.pad(x, 1, mode="symmetric")
    return x


def stacked_symmetric_tf(x: np.ndarray, k: int) -> np.ndarray:
    import tensorflow as tf

    # NHWC like the seed: pad H and W only.
    t = tf.constant(x[None, :, :, None])
    for _ in range(k):
        t = tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    return t.numpy()[0, :, :, 0]


def _assert_replication(actual: np.ndarray, x: np.ndarray, k: int, side: str) -> None:
    expected = replication(x, k)
    assert actual.shape == expected.shape, f"{side}: shape {actual.shape} != replication {expected.shape} (k={k})"
    diff = np.argwhere(actual != expected)
    assert diff.size == 0, (f"{side}: k={k} stacked 1-pixel SYMMETRIC pads differ from replication padding on a "
                            f"{x.shape[0]}x{x.shape[1]} plane at {diff[:3].tolist()}")


def test_stacked_symmetric_is_replication_numpy_exhaustive():
    for k, h, w in SMALL_SPACE:
        x = _plane(h, w)
        _assert_replication(stacked_symmetric_np(x, k), x, k, "numpy")


@pytest.mark.skipif(not has_tf, reason="tensorflow not installed")
def test_stacked_symmetric_is_replication_tf_exhaustive():
    for k, h, w in SMALL_SPACE:
        x = _plane(h, w)
        _assert_replication(stacked_symmetric_tf(x, k), x, k, "tf.pad")


@given(k=st.integers(0, 12), h=st.integers(1, 24), w=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_stacked_symmetric_is_replication_numpy(k, h, w, seed):
    x = _plane(h, w, seed)
    _assert_replication(stacked_symmetric_np(x, k), x, k, "numpy")


@pytest.mark.skipif(not has_tf, reason="tensorflow not installed")
@given(k=st.integers(0, 9), h=st.integers(1, 16), w=st.integers(1, 16))
def test_stacked_symmetric_is_replication_tf(k, h, w):
    x = _plane(h, w)
    _assert_replication(stacked_symmetric_tf(x, k), x, k, "tf.pad")


# -- negatives: the property is not vacuous -----------------------------------------------------------------------

def _one_wide_pad_np(x: np.ndarray, k: int, mode: str, axis: int) -> np.ndarray:
    widths = [(0, 0), (0, 0)]
    widths[axis] = (k, k)
    return np.pad(x, widths, mode=mode)


def _one_wide_pad_tf(x: np.ndarray, k: int, mode: str, axis: int) -> np.ndarray:
    import tensorflow as tf

    paddings = [[0, 0], [0, 0], [0, 0], [0, 0]]
    paddings[1 + axis] = [k, k]
    return tf.pad(tf.constant(x[None, :, :, None]), paddings, mode=mode).numpy()[0, :, :, 0]


def _edge_along(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    return _one_wide_pad_np(x, k, "edge", axis)


NEGATIVE_SPACE = [
    # (mode, k, h, w, axis): the padded axis has >= 2 pixels; a single SYMMETRIC pad needs k >= 2,
    # and TF accepts SYMMETRIC up to the axis size, REFLECT below it.
    (mode, k, h, w, axis)
    for mode, k_min in (("SYMMETRIC", 2), ("REFLECT", 1))
    for k in range(k_min, K_MAX + 1)
    for h in range(1, SIDE_MAX + 1)
    for w in range(1, SIDE_MAX + 1)
    for axis in (0, 1)
    if (h, w)[axis] >= 2 and k <= (h, w)[axis] - (mode == "REFLECT")
]


@pytest.mark.parametrize("mode", ["SYMMETRIC", "REFLECT"])
def test_wide_symmetric_and_reflect_are_not_replication_numpy(mode):
    cases = [case for case in NEGATIVE_SPACE if case[0] == mode]
    assert len(cases) > 20
    for _, k, h, w, axis in cases:
        x = _plane(h, w)
        padded = _one_wide_pad_np(x, k, mode.lower(), axis)
        assert not np.array_equal(padded, _edge_along(x, k, axis)), (
            f"one {mode} pad of width {k} along axis {axis} of a {h}x{w} plane equals replication padding")


@pytest.mark.skipif(not has_tf, reason="tensorflow not installed")
@pytest.mark.parametrize("mode", ["SYMMETRIC", "REFLECT"])
def test_wide_symmetric_and_reflect_are_not_replication_tf(mode):
    for _, k, h, w, axis in (case for case in NEGATIVE_SPACE if case[0] == mode):
        x = _plane(h, w)
        padded = _one_wide_pad_tf(x, k, mode, axis)
        assert not np.array_equal(padded, _edge_along(x, k, axis)), (
            f"tf.pad {mode} of width {k} along axis {axis} of a {h}x{w} plane equals replication padding")


def test_single_pixel_planes_are_the_boundary_of_the_negatives():
    """On a 1-pixel axis every mode repeats the one pixel: the negatives really need >= 2 pixels."""
    x = _plane(1, 1)
    for mode in ("symmetric", "reflect"):
        assert np.array_equal(np.pad(x, 3, mode=mode), replication(x, 3))


# -- nn.SpatialCircularPadding: the utils.lua rule -------------------------------------------------------------


def circular_rule(x: np.ndarray, left: int, right: int, top: int, bottom: int) -> np.ndarray:
    """supplementary/utils.lua's SpatialCircularPadding on (..., H, W), statement by statement (1-based h, w of the
    output): a zeroed output, the input copied into its interior (negative pads crop), then row 1 := row h-1,
    row h := row 2, column 1 := column w-1, column w := column 2 (columns over the full height, after the rows)."""
    height, width = x.shape[-2:]
    h, w = height + top + bottom, width + left + right
    out = np.zeros((*x.shape[:-2], h, w), dtype=x.dtype)
    cropped = x[..., max(0, -top):height - max(0, -bottom), max(0, -left):width - max(0, -right)]
    out[..., max(0, top):max(0, top) + cropped.shape[-2], max(0, left):max(0, left) + cropped.shape[-1]] = cropped
    out[..., 1 - 1, :] = out[..., (h - 1) - 1, :]      # row 1 := row h-1
    out[..., h - 1, :] = out[..., 2 - 1, :]            # row h := row 2
    out[..., :, 1 - 1] = out[..., :, (w - 1) - 1]      # column 1 := column w-1
    out[..., :, w - 1] = out[..., :, 2 - 1]            # column w := column 2
    return out


def test_circular_pad_1_is_a_torus_wrap_exhaustive():
    for h, w in itertools.product(range(1, SIDE_MAX + 3), repeat=2):
        x = _plane(h, w)
        assert np.array_equal(circular_rule(x, 1, 1, 1, 1), np.pad(x, 1, mode="wrap")), f"{h}x{w}"


@given(h=st.integers(1, 24), w=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_circular_pad_1_is_a_torus_wrap(h, w, seed):
    x = _plane(h, w, seed)
    assert np.array_equal(circular_rule(x, 1, 1, 1, 1), np.pad(x, 1, mode="wrap"))


def test_circular_pad_0_overwrites_the_border_exhaustive():
    """Not an identity once a side has 3 pixels: the v1 nets' last module changes its input's border."""
    for h, w in itertools.product(range(2, SIDE_MAX + 3), repeat=2):
        x = _plane(h, w)
        out = circular_rule(x, 0, 0, 0, 0)
        assert np.array_equal(out[1:-1, 1:-1], x[1:-1, 1:-1]), f"{h}x{w}: the interior changed"
        expected_rows = x.copy()
        expected_rows[0], expected_rows[-1] = x[-2], x[1]
        expected = expected_rows.copy()
        expected[:, 0], expected[:, -1] = expected_rows[:, -2], expected_rows[:, 1]
        assert np.array_equal(out, expected), f"{h}x{w}"
        assert np.array_equal(out, x) == (h <= 2 and w <= 2), f"{h}x{w}: identity only on 2-pixel sides"


def test_circular_pads_of_2_or_more_are_not_a_wrap_exhaustive():
    """Pads of 2 or more copy padding zeros (no public file uses them): a port that wraps differs."""
    for k, h, w in itertools.product(range(2, 5), range(1, SIDE_MAX + 1), range(1, SIDE_MAX + 1)):
        x = _plane(h, w)
        out = circular_rule(x, k, k, k, k)
        assert not np.array_equal(out, np.pad(x, k, mode="wrap")), f"pad {k} on {h}x{w} is a wrap"
        assert np.count_nonzero(out == 0) > 0, f"pad {k} on {h}x{w}: no padding zeros left"
