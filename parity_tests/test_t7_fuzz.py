"""CI fuzz test: mutants of real Torch7 files load or raise a one-line T7Error, each within a time bound.

Deterministic (fixed seeds, fixed case counts), a few seconds in all. Seeds are
the committed real-Torch7 fixtures and, when ../shared is present, the real-world
models (the 13 MB / 26 MB full-width oracle files are left to the one-off
campaign, parity_tests/fuzz_campaign.py, whose figures are in docs/hardening.md).
"""

from __future__ import annotations

import pytest

from fixtures import ORACLE_NARROW_DIR
from parity_tests.fuzz_campaign import SHARED_DIR, mutate, run_case

FIXTURE_SEEDS = sorted(ORACLE_NARROW_DIR.glob("*.t7"))
REALMODEL_SEEDS = sorted((SHARED_DIR / "realmodels").glob("*.t7")) if (SHARED_DIR / "realmodels").is_dir() else []
CASES_PER_FIXTURE = 40
CASES_PER_REALMODEL = 3
# A mutant of a 300 KB file loads in ~0.05 s alone; 5 s leaves room for a loaded 2-core CI box.
SECONDS_PER_CASE = 5.0


def _check(path, cases):
    if path.name.endswith("_ascii.t7"):
        cases = cases // 2  # the ASCII reader tokenises in Python: slower per case
    data = path.read_bytes()
    failures = []
    for case in range(cases):
        mutator, mutant = mutate(data, seed=7, case=case, ascii_file=path.name.endswith("_ascii.t7"))
        outcome = run_case(mutant, timeout_s=2 * SECONDS_PER_CASE)
        if not outcome.acceptable or outcome.seconds > SECONDS_PER_CASE:
            failures.append(f"{path.name} case {case} ({mutator}): {outcome.kind} in {outcome.seconds:.2f} s: "
                            f"{outcome.message}")
    assert not failures, "\n".join(failures)


def test_fixture_seeds_present():
    assert len(FIXTURE_SEEDS) == 3, FIXTURE_SEEDS


@pytest.mark.parametrize("path", FIXTURE_SEEDS, ids=lambda p: p.name)
def test_fuzz_fixture_mutants(path):
    _check(path, CASES_PER_FIXTURE)


@pytest.mark.oracle
@pytest.mark.skipif(not REALMODEL_SEEDS, reason="../shared/realmodels not present")
@pytest.mark.parametrize("path", REALMODEL_SEEDS, ids=lambda p: p.name)
def test_fuzz_realmodel_mutants(path):
    _check(path, CASES_PER_REALMODEL)


def test_unmutated_seeds_load():
    """The harness itself: the seeds load, and a plainly broken file is classified as a T7FormatError."""
    for path in FIXTURE_SEEDS + REALMODEL_SEEDS:
        assert run_case(path.read_bytes()).kind == "loaded", path
    assert run_case(b"\x04\x00\x00").kind == "T7FormatError"
