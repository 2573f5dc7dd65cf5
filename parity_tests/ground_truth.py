"""Where this checkout keeps Torch7 ground truth: the committed fixtures and, when present, ../shared.

Tests take their oracle runs from here; ``harness.core.oracle`` reads the format.
"""

from __future__ import annotations

from fixtures import ORACLE_NARROW_DIR, ORACLE_SINGLE_DIR
from harness.core.oracle import (
    REAL_MODELS_DIR,
    SHARED_DIR,
    SHARED_ORACLE_DIR,
    SHARED_V1_DIR,
    OracleRun,
    SingleModuleCase,
    runs_in,
    single_module_cases_in,
)

__all__ = ["REAL_MODELS_DIR", "SHARED_DIR", "SHARED_ORACLE_DIR", "SHARED_V1_DIR", "OracleRun", "SingleModuleCase",
           "fixture_runs", "shared_runs", "single_module_cases", "v1_runs"]


def fixture_runs() -> list[OracleRun]:
    """Runs committed in the repo (narrow models, both layouts)."""
    return runs_in(ORACLE_NARROW_DIR)


def shared_runs() -> list[OracleRun]:
    """Full-width johnson runs in ../shared/oracle, when that folder is present (else empty)."""
    return runs_in(SHARED_ORACLE_DIR)


def v1_runs() -> list[OracleRun]:
    """Runs of the real v1-era models in ../shared/oracle/v1, when present (else empty)."""
    return runs_in(SHARED_V1_DIR)


def single_module_cases(include_shared: bool = True) -> list[SingleModuleCase]:
    """Single-module Torch7 cases: the committed ones, plus the shared-only ones when present."""
    directories = [ORACLE_SINGLE_DIR] + ([SHARED_ORACLE_DIR / "single"] if include_shared else [])
    return single_module_cases_in(directories)
