"""Mutation sensitivity: every known porting bug in parity_tests/mutations.py must be caught, by the expected check.

Each mutant is the NumPy reference with one bug patched into its own code path (or into
fileio.images.deprocess); it is judged by the battery of parity.run_battery, which is the
end-to-end suite's helper and tolerance model on a fixed order of cases (pretrained and head
layouts, three single-module cases the layouts cannot show: an asymmetric pad, a non-square
strided conv, a transposed conv with adjW != adjH; then batch 2 and odd sizes), float32 before
float64, accumulated before isolated, Lua paths in execution order, then the generator output, then
deprocess's known answers. The first failing check is the killer, and each is asserted: a mutant
caught "somewhere" by luck would hide a blind spot.
"""

from __future__ import annotations

import importlib.util

import pytest

from parity_tests.mutations import CATALOGUE, MutantBackend, mutation
from parity_tests.parity import (
    case_tree_and_input,
    check_trace,
    deprocess_results,
    first_failure,
    judge_trace,
    run_battery,
)
from t7file import trace_paths

PRE = "pretrained random 32x32"
ASYMMETRIC_PAD = "primitive asymmetric replication pad (1,3,0,2)"
EXPECTED_KILLER = {
    "seed: stride-2 conv without zero padding": f"{PRE} float32 accumulated @ 6",
    "seed: transposed conv one-pixel shift": f"{PRE} float32 accumulated @ 17",
    "seed: biases dropped": f"{PRE} float32 accumulated @ 3",
    "conv kernel kH/kW swapped": f"{PRE} float32 accumulated @ 3",
    "full conv kernel kH/kW swapped": f"{PRE} float32 accumulated @ 17",
    "conv kernel flipped": f"{PRE} float32 accumulated @ 3",
    "full conv kernel flipped": f"{PRE} float32 accumulated @ 17",
    "IN running statistics (torch/nn 919eeca)": f"{PRE} float32 accumulated @ 4",
    "IN unbiased variance": f"{PRE} float32 accumulated @ 4",
    "IN eps outside the sqrt": f"{PRE} float32 accumulated @ 4",
    "replication pad as one wide SYMMETRIC pad": f"{PRE} float32 accumulated @ 2",
    "replication pad as REFLECT": f"{PRE} float32 accumulated @ 2",
    # every pad in both layouts is symmetric: only the asymmetric single-module case can tell
    "replication pad order (l,r,t,b) confused": f"{ASYMMETRIC_PAD} float32 accumulated @ 1",
    "full conv adj on top/left": f"{PRE} float32 accumulated @ 17",
    "residual add dropped": f"{PRE} float32 accumulated @ 12",
    "ReLU after the residual add": f"{PRE} float32 accumulated @ 12",
    "deprocess BGR/RGB swapped": "deprocess uint8 image @ pure red pixel",
    "deprocess mean not added": "deprocess uint8 image @ pure red pixel",
    "float64 silently computed in float32": f"{PRE} float64 accumulated @ 3",
}


def test_catalogue_and_expectations_match():
    assert set(EXPECTED_KILLER) == {m.name for m in CATALOGUE}


def test_unmutated_reference_passes_the_whole_battery(judge):
    """The control: without a bug nothing fails, so every kill below is the bug's doing."""
    failure = run_battery(judge, judge)
    assert failure is None, failure.comparison.message()


@pytest.mark.parametrize("name", [m.name for m in CATALOGUE])
def test_mutant_is_killed_by_the_expected_check(judge, name):
    bug = mutation(name)
    if any(target.startswith("fileio.images") for target in bug.targets) and \
            importlib.util.find_spec("fileio.images") is None:
        pytest.skip("texture_nets/images.py (deprocess) is not there to mutate")
    failure = run_battery(MutantBackend(bug), judge)
    assert failure is not None, f"mutant survived the whole battery: {bug.bug}"
    assert str(failure.check) == EXPECTED_KILLER[name], (
        f"{name}: killed by {failure.check}, expected {EXPECTED_KILLER[name]}\n{failure.comparison.message()}")


def test_seed_dropped_biases_are_absorbed_by_every_in_and_caught_at_the_last_conv(judge):
    """FACTS §3 (3): harmless before an IN, wrong at the last convolution (path 24), and so at the output."""
    root, x, case = case_tree_and_input("pretrained", "random 32x32")
    _, reference_trace = judge_trace(judge.load(root, "float64"), x)
    runner = MutantBackend(mutation("seed: biases dropped")).load(root, "float32")
    verdict = {r.check.lua_path: bool(r) for r in check_trace(runner, root, x, reference_trace, dtype="float32",
                                                              view="accumulated", case=case, backend_name="mutant")}
    instance_norms = [m.lua_path for m in root.walk() if m.torch_class == "nn.InstanceNormalization"]
    assert all(verdict[path] for path in instance_norms), [p for p in instance_norms if not verdict[p]]
    assert not verdict["24"] and not verdict["output"]
    assert trace_paths(root)[-1] == "24"


def test_deprocess_known_answers_pass_unmutated():
    if importlib.util.find_spec("fileio.images") is None:
        pytest.skip("texture_nets/images.py (deprocess) not written yet")
    failure = first_failure(deprocess_results())
    assert failure is None, failure.comparison.message()
