"""Mutation sensitivity: every known porting bug in parity_tests/mutations.py is caught, early, by the expected check.

Each mutant is the NumPy reference with one bug patched into its own code path (or into fileio.images). A
``port`` mutant is judged as a backend by the battery of parity.run_battery; a ``shared`` one (the judge's own
fast paths, deprocess) is active for the whole battery, judge included. The battery runs the suite's own
checks in the suite's order (parity_tests/conftest.py): the judge with its fast paths forced against
reference/definitions.py, deprocess's known answers, the fixed one-module cases (johnson modules, then the
v1-era ones: circular pads, pooling, upsampling, LeakyReLU, batch norms with and without aliasing, Concat,
both GenNoise classes), each in float32 then float64, isolated then accumulated; then whole models
isolated, then end to end. The first failing check is the killer, and each is asserted: a mutant caught
"somewhere" by luck would hide a blind spot, and one caught only end to end would not name its layer.

Every killer below is a fixed one-module case or a known answer, so with the suite ordered as it is the
first failure of ``pytest parity_tests -x`` against each mutant names the bug's layer within the first minute;
measured with the plugin of parity_tests/mutations.py (``PARITY_MUTANT=NAME pytest parity_tests -x -p
parity_tests.mutations``), the table in the commit that added the v1 mutants.
"""

from __future__ import annotations

import importlib.util

import pytest

from parity_tests.mutations import CATALOGUE, SCOPES, MutantBackend, mutation
from parity_tests.parity import (
    STAGES,
    battery,
    case_tree_and_input,
    check_trace,
    deprocess_results,
    first_failure,
    judge_trace,
    run_battery,
)
from t7file import trace_paths

pytestmark = pytest.mark.tier("meta")

CONV = "primitive conv kH=2 kW=3 dW=2 padW=1 float32 isolated @ 1 (nn.SpatialConvolution)"
FULL_CONV = "primitive full conv k3 s2 p1 adjW=1 adjH=0 float32 isolated @ 1 (nn.SpatialFullConvolution)"
IN = "primitive instance norm eps 1e-3, batch 2, offset channel float32 isolated @ 1 (nn.InstanceNormalization)"
PAD = "primitive asymmetric replication pad (1,3,0,2) float32 isolated @ 1 (nn.SpatialReplicationPadding)"
BLOCK = "primitive residual block width 3 float32 isolated @ 1 (nn.Sequential)"
BN_OFFSET = ("primitive batch norm train, batch 2, offset channel float32 isolated @ 2 "
             "(nn.SpatialBatchNormalization)")
BN_ALIASED = ("primitive batch norm train, batch 2, 3 features on 5 channels (aliased) float32 isolated @ 2 "
              "(nn.SpatialBatchNormalization)")
EXPECTED_KILLER = {
    "seed: stride-2 conv without zero padding": CONV,
    "seed: transposed conv one-pixel shift": FULL_CONV,
    "seed: biases dropped": CONV,
    "conv kernel kH/kW swapped": CONV,
    "full conv kernel kH/kW swapped": FULL_CONV,
    "conv kernel flipped": CONV,
    "full conv kernel flipped": FULL_CONV,
    "IN running statistics (torch/nn 919eeca)": IN,
    "IN unbiased variance": IN,
    "IN eps outside the sqrt": IN,
    "replication pad as one wide SYMMETRIC pad": PAD,
    "replication pad as REFLECT": PAD,
    # every pad in both layouts is symmetric: only the asymmetric single-module case can tell
    "replication pad order (l,r,t,b) confused": PAD,
    "full conv adj on top/left": FULL_CONV,
    "residual add dropped": BLOCK,
    "ReLU after the residual add": BLOCK,
    "deprocess BGR/RGB swapped": "deprocess uint8 image @ pure red pixel (deprocess johnson)",
    "deprocess mean not added": "deprocess uint8 image @ pure red pixel (deprocess johnson)",
    "float64 silently computed in float32": CONV.replace("float32", "float64"),
    # the judge's fast paths: invisible on small inputs unless forced
    "judge: im2col row blocks off by one":
        "judge: conv kH=2 kW=3 dW=2 padW=1 float32 forced fast paths @ 1 (nn.SpatialConvolution)",
    "judge: col2im blocks drop a tap row":
        "judge: full conv k3 s2 p1 adjW=1 adjH=0 float32 forced fast paths @ 1 (nn.SpatialFullConvolution)",
    "judge: thread split drops chunk ends":
        "judge: instance norm eps 1e-3, batch 2, offset channel float32 forced fast paths @ 1 "
        "(nn.InstanceNormalization)",
    # precision shortcuts: the offset channels (IN: 100; BN: the v1 nets' 1000 with a spread of 3) expose them
    "IN statistics in float32 (one pass)": IN,
    "BN statistics in float32 (one pass)": BN_OFFSET,
    # a framework default in place of the file's value
    "BN eps: Keras default 1e-3": BN_OFFSET,
    "IN eps of the module ignored": IN,
    "LeakyReLU negval ignored (0.2)": "primitive leaky relu negval 0.01 float32 isolated @ 1 (nn.LeakyReLU)",
    # the v1 traps
    "BN aliasing dropped (extra channels 1/0)": BN_ALIASED,
    "BN aliasing: declared features repeated": BN_ALIASED,
    "BN aliasing: storage offset ignored": BN_ALIASED,
    "BN in the wrong mode": BN_OFFSET,
    "circular pad 0 as identity":
        "primitive circular pad 0 (border overwritten) float32 isolated @ 1 (nn.SpatialCircularPadding)",
    "noise into channels 1-3": "primitive gen noise, style net (channels 4-6) float32 isolated @ 1 (nn.GenNoise)",
    "deprocess v1 by 255": "deprocess uint8 image @ v1 style: grey 128 divided by 256 (deprocess v1-style)",
}
# The stages of the battery that run in the first tiers of the suite (judge, primitive-fixed).
EARLY_STAGES = ("judge judged", "deprocess", "primitives")


def test_catalogue_and_expectations_match():
    assert set(EXPECTED_KILLER) == {m.name for m in CATALOGUE}
    assert {m.scope for m in CATALOGUE} <= set(SCOPES)
    assert all(killer.split(" ")[0] in ("primitive", "judge:", "deprocess") for killer in EXPECTED_KILLER.values()), (
        "every mutant must be killed by a fixed one-module case or a known answer, which run first")


def test_battery_runs_in_the_suites_order(judge):
    """The battery's stages come in the order of the suite's tiers, so its first failure is pytest -x's."""
    stages = [stage for stage, _ in battery(judge, judge)]
    first_seen = list(dict.fromkeys(stages))
    assert first_seen == list(STAGES), first_seen
    assert stages == sorted(stages, key=STAGES.index), "stages interleave"


def test_unmutated_reference_passes_the_whole_battery(judge):
    """The control: without a bug nothing fails, so every kill below is the bug's doing."""
    failure = run_battery(judge, judge)
    assert failure is None, failure.comparison.message()


def _killer(name: str, judge):
    bug = mutation(name)
    if any(target.startswith("fileio.images") for target in bug.targets) and \
            importlib.util.find_spec("fileio.images") is None:
        pytest.skip("fileio/images.py (deprocess) is not there to mutate")
    if bug.scope == "shared":  # in code every backend and the judge share: active for the whole battery
        with bug.active():
            return bug, run_battery(judge, judge)
    return bug, run_battery(MutantBackend(bug), judge)


@pytest.mark.parametrize("name", [m.name for m in CATALOGUE])
def test_mutant_is_killed_by_the_expected_check(judge, name):
    bug, failure = _killer(name, judge)
    assert failure is not None, f"mutant survived the whole battery: {bug.bug}"
    assert str(failure.check) == EXPECTED_KILLER[name], (
        f"{name}: killed by {failure.check}, expected {EXPECTED_KILLER[name]}\n{failure.comparison.message()}")


def test_seed_dropped_biases_are_absorbed_by_every_in_and_caught_at_the_last_conv(judge):
    """The seed's third deviation: harmless before an IN, wrong at the last convolution (path 24), and so at the
    output."""
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
        pytest.skip("fileio/images.py (deprocess) not written yet")
    failure = first_failure(deprocess_results())
    assert failure is None, failure.comparison.message()
