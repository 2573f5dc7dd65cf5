"""Meta-tests of harness/tolerance.py: the model recognises flat inputs instead of loosening everything.

FACTS §2 "Flat inputs": on a constant image the plane entering the first IN has zero variance and
rounding noise is amplified by ~1/sqrt(eps). The model must (a) leave ordinary inputs at the plain
rounding bound (no amplification anywhere), (b) widen exactly the IN that sees the flat plane and
what follows it, (c) call the head layout's all-flat chain undetermined in float32, and (d) stay
tight enough in float64 to see float32 arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness import tolerance
from parity_tests.parity import MODELS, input_array, judge_trace, model_tree
from t7file import trace_paths


@pytest.fixture(scope="module")
def budgets(judge):
    cache = {}

    def get(layout: str, input_name: str, dtype: str = "float32", view: str = "accumulated"):
        key = (layout, input_name)
        if key not in cache:
            cache[key] = judge_trace(judge.load(MODELS[layout], "float64"), input_array(input_name))[1]
        return tolerance.layer_budgets(model_tree(layout), input_array(input_name), cache[key], dtype, view=view)

    return get


@pytest.mark.parametrize("layout", list(MODELS))
def test_budgets_cover_exactly_the_trace_paths(budgets, layout):
    for view in ("accumulated", "isolated"):
        assert list(budgets(layout, "random 32x32", view=view)) == trace_paths(model_tree(layout))


@pytest.mark.parametrize("input_name", ["random 32x32", "odd 37x29", "batch 2 24x20", "photo 64x64"])
@pytest.mark.parametrize("layout", list(MODELS))
def test_ordinary_inputs_get_no_amplification(budgets, layout, input_name):
    found = budgets(layout, input_name)
    assert all(b.amplification == 1.0 and b.determined for b in found.values())
    assert not list(tolerance.iter_conditioned(found))
    assert max(b.rtol for b in found.values()) < 1e-3


def test_constant_image_widens_from_the_flat_in_on(budgets):
    found = budgets("pretrained", "constant 0.6")
    flat = list(tolerance.iter_conditioned(found))
    assert flat and flat[0].lua_path == "4", [b.lua_path for b in flat]  # conv 3 of a constant is constant
    assert flat[0].conditioning > 100 * tolerance.G_ORDINARY / 4
    ordinary = budgets("pretrained", "random 32x32")
    assert found["3"].rtol == pytest.approx(ordinary["3"].rtol, rel=0.5)  # before the flat IN: plain rounding
    assert found["4"].amplification > 10 and found["4"].rtol > 10 * ordinary["4"].rtol
    # pretrained's zero-padded stride-2 conv at 6 breaks the flatness: amplification stops growing there
    assert found["24"].amplification < 100 * found["4"].amplification
    assert all(b.determined for b in found.values())


def test_head_layout_constant_image_is_undetermined_deep_in_float32_only(budgets):
    float32 = budgets("head", "constant 0.6")
    undetermined = [path for path, b in float32.items() if not b.determined]
    assert undetermined, "every IN of the head layout sees a flat plane on a constant image"
    first = trace_paths(model_tree("head")).index(undetermined[0])
    assert first > trace_paths(model_tree("head")).index("3"), "the first IN itself is still determined"


def test_float64_budget_is_tight_enough_to_see_float32_arithmetic(budgets):
    float64 = budgets("pretrained", "random 32x32", dtype="float64")
    # float32 rounding of a conv output is ~1e-7 relative; the float64 bound must sit far below it
    assert max(b.rtol for b in float64.values()) < 1e-9


def test_in_conditioning_of_flat_and_ordinary_planes():
    module = model_tree("pretrained").find("4")
    rng = np.random.default_rng(0)
    ordinary = rng.standard_normal((1, 4, 8, 8))
    y = (ordinary - ordinary.mean(axis=(2, 3), keepdims=True)) / ordinary.std(axis=(2, 3), keepdims=True)
    assert tolerance.in_conditioning(module, ordinary, y) < tolerance.G_ORDINARY
    flat = np.full((1, 4, 8, 8), 0.3)
    bias = module.array("bias").astype(np.float64)
    assert tolerance.in_conditioning(module, flat, np.broadcast_to(bias[None, :, None, None], flat.shape)) > 30
