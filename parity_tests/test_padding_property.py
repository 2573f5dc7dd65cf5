"""The seed's padding trick, proved: k stacked 1-pixel SYMMETRIC pads == replication padding of k.

tf_texture_net emulates nn.SpatialReplicationPadding(k, k, k, k) with k successive
``tf.pad(x, 1, "SYMMETRIC")`` (FACTS §3): a 1-pixel symmetric pad repeats the edge pixel, and
repeating it k times is edge replication, for every k >= 0 and every plane >= 1x1 (SYMMETRIC
never needs more than one pixel of the current plane). The negatives keep the property honest:
one SYMMETRIC pad of width k > 1 mirrors interior pixels, and REFLECT never repeats the edge, so
both differ from replication as soon as the padded axis has >= 2 pixels.

The small space (k <= 6, H, W <= 5) is enumerated exhaustively; hypothesis covers larger shapes.
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
