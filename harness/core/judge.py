"""The per-path judge: one verdict for one Lua path of one backend, shared by the suite and drift.

A verdict is one of

* ``pass``: within the tolerance model's budget;
* ``fail``: out of tolerance, a shape mismatch, or NaN/Inf;
* ``undetermined``: an ill-conditioned layer whose value the dtype does not determine (a flat plane
  entering a normalisation); shape and finiteness passed, so it does not fail;
* ``not compared``: the backend has no value for this path (an artefact that fused a pass-through
  module away, a runtime that exposes only some layers). It neither passes nor fails: reports list
  what was not compared, and the verdict rests on the paths that were;
* ``error``: the backend raised while computing it (a failure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.core.compare import Comparison, Tolerance, compare

PASSING = frozenset({"pass", "undetermined", "not compared"})


@dataclass(frozen=True)
class PathVerdict:
    """How one backend did at one Lua path. ``comparison`` is None for "not compared" and "error"."""

    lua_path: str
    status: str
    comparison: Comparison | None
    determined: bool = True
    note: str | None = None

    @property
    def passed(self) -> bool:
        return self.status in PASSING

    @property
    def compared(self) -> bool:
        return self.comparison is not None

    def __bool__(self) -> bool:
        return self.passed


def judge_path(lua_path: str, actual: np.ndarray | None, expected: np.ndarray, tolerance: Tolerance,
               determined: bool = True, *, actual_name: str, expected_name: str, where: str | None = None,
               missing_note: str | None = None) -> PathVerdict:
    """Compare ``actual`` with ``expected`` under ``tolerance``; ``actual`` None means the backend has no
    value there. An undetermined layer (``determined`` False) is checked for shape and finiteness only."""
    if actual is None:
        return PathVerdict(lua_path, "not compared", None, determined,
                           missing_note or f"no value for Lua path {lua_path} in the backend's trace")
    loose = tolerance if determined else Tolerance(math.inf, why=tolerance.why)
    comparison = compare(np.asarray(actual), expected, loose, actual_name=actual_name, expected_name=expected_name,
                         where=where or lua_path)
    if not determined and comparison.passed:
        # Shape and finiteness held; report the statistics against the model's bound all the same.
        strict = compare(np.asarray(actual), expected, tolerance, actual_name=actual_name,
                         expected_name=expected_name, where=where or lua_path)
        return PathVerdict(lua_path, "pass" if strict.passed else "undetermined", strict, determined)
    return PathVerdict(lua_path, "pass" if comparison.passed else "fail", comparison, determined)


def error_verdict(lua_path: str, error: BaseException) -> PathVerdict:
    text = " ".join(str(error).split())
    return PathVerdict(lua_path, "error", None, True, f"{type(error).__name__}: {text[:300]}")
