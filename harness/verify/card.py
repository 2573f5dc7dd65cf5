"""A port's report card: the battery run through drift, summarised per case and per Lua path.

    card = verify("opencv", cases, skipped)
    card.passed, card.to_dict()        # the JSON view (schema in harness/verify/schema.json)

Each case is a drift analysis against the float64 reference (harness.drift), so every verdict uses
the tolerance model and every divergence gets drift's diagnosis. On top of it the card measures how
far the port is from the exact result **relative to float32 Torch7's own rounding**: on Torch7 cases
that rounding is measured (Torch7's float32 output against the float64 reference on the same input
and noise); elsewhere the float32 reference stands in for it, and the card says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from harness.verify.battery import Case, Skipped, module_tree

SCHEMA_VERSION = "1.0"
Progress = Callable[[str], None]


@dataclass
class PathRow:
    """One traced Lua path of one case: the port's error and the rounding reference, both relative to the
    layer's scale; ``status`` is the drift verdict of the accumulated view."""

    lua_path: str
    torch_class: str
    status: str
    max_rel: float | None
    tolerance_rtol: float | None
    rounding_rel: float | None
    adapter: str | None = None


@dataclass
class CaseResult:
    case: Case
    status: str  # "agree", "drift" or "not tested"
    reason: str = ""
    report: Any = None  # harness.drift.DriftReport (not serialised)
    rows: list[PathRow] = field(default_factory=list)
    output: dict[str, float | None] = field(default_factory=dict)
    rounding_source: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        backend = self.report.backends[0] if self.report is not None else None
        data: dict[str, Any] = {
            "name": self.case.name, "kind": self.case.kind, "model": str(self.case.model), "family": self.case.family,
            "description": self.case.description, "dtype": self.case.dtype,
            "input_shape": list(self.case.x.shape), "status": self.status, "reason": self.reason or None,
            "output": {k: _finite(v) for k, v in self.output.items()}, "rounding_reference": self.rounding_source,
            "seconds": round(self.seconds, 3),
        }
        if backend is not None:
            data["first_divergence"] = _divergence(backend.first_divergence)
            ranked = sorted(backend.divergences, key=lambda d: -(d.output_max_rel or 0.0))
            data["biggest_divergence"] = _divergence(ranked[0] if ranked else None)
            data["not_compared"] = [{"lua_path": r.lua_path, "why": r.error} for r in backend.accumulated
                                    if r.status == "not compared"]
            data["isolated_view"] = backend.isolated is not None
            data["isolated_note"] = backend.isolated_note or None
        data["adapter_paths"] = {row.lua_path: row.adapter for row in self.rows if row.adapter}
        data["paths"] = [{"lua_path": r.lua_path, "torch_class": r.torch_class, "status": r.status,
                          "max_rel": _finite(r.max_rel), "tolerance_rtol": _finite(r.tolerance_rtol),
                          "rounding_rel": _finite(r.rounding_rel)} for r in self.rows]
        return data


@dataclass
class Card:
    backend: str
    cases: list[CaseResult]
    skipped: list[Skipped]
    environment: dict[str, Any]
    created: str
    seconds: float

    @property
    def passed(self) -> bool:
        return all(result.status != "drift" for result in self.cases)

    def count(self, status: str) -> int:
        return sum(1 for result in self.cases if result.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "texture-nets-verify", "schema_version": SCHEMA_VERSION, "created": self.created,
            "backend": self.backend, "passed": self.passed,
            "summary": {"cases": len(self.cases), "agree": self.count("agree"), "drift": self.count("drift"),
                        "not_tested": self.count("not tested") + len(self.skipped)},
            "cases": [result.to_dict() for result in self.cases],
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.skipped],
            "environment": self.environment, "seconds": round(self.seconds, 2),
        }


def verify(backend_name: str, cases: list[Case], skipped: list[Skipped], *,
           progress: Progress | None = None) -> Card:
    """Run every case through drift for ``backend_name``; cases the port cannot run become "not tested"."""
    from harness.core.environment import collect_environment
    from harness.core.registry import get_backend

    say = progress or (lambda message: None)
    started = time.perf_counter()
    backend = get_backend(backend_name)
    results = []
    for index, case in enumerate(cases, start=1):
        say(f"[{index}/{len(cases)}] {case.name}")
        results.append(_verify_case(backend, backend_name, case))
        say(f"  {results[-1].status}{': ' + results[-1].reason if results[-1].reason else ''}")
    return Card(backend_name, results, list(skipped), collect_environment({backend_name: backend}),
                datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter() - started)


def _verify_case(backend, backend_name: str, case: Case) -> CaseResult:
    from contract import BackendError
    from harness.drift import run_drift
    from t7file import T7Error

    started = time.perf_counter()
    if case.dtype not in backend.dtypes:
        return CaseResult(case, "not tested", f"the port runs {', '.join(backend.dtypes)}, not {case.dtype}")
    try:
        # The parsed tree is shared by the cases of one model; the baseline's trace is kept for _measure, which
        # needs the same float64 run on the same input and noise.
        report = run_drift(case.model, case.x, [f"{backend_name}-{case.dtype}"], dtype=case.dtype, noise=case.noise,
                           seed=case.seed, batchnorm=case.batchnorm, input_source=case.name,
                           tree=module_tree(case.model), keep_baseline=True)
    except (BackendError, T7Error, ValueError) as error:
        return CaseResult(case, "not tested", _one_line(error), seconds=time.perf_counter() - started)
    drift = report.backends[0]
    if not getattr(drift, "applicable", True):
        return CaseResult(case, "not tested", str(drift.not_applicable), report,
                          seconds=time.perf_counter() - started)
    if drift.output.status == "error":
        return CaseResult(case, "not tested", f"the port failed to run it: {drift.output.error}", report,
                          seconds=time.perf_counter() - started)
    result = CaseResult(case, "agree" if drift.passed else "drift", report=report)
    try:
        _measure(result, drift)
    finally:
        report.baseline_trace = None  # the card keeps every case's report: not its float64 trace
    result.seconds = time.perf_counter() - started
    return result


def _measure(result: CaseResult, drift) -> None:
    """The rounding reference per path and at the output, and the port's distance from Torch7 itself."""
    case, report = result.case, result.report
    base_output, base_trace, rounding_output, rounding_trace = _rounding_reference(case, report)
    result.rounding_source = ("float32 Torch7 (measured: its run against the float64 reference)"
                              if case.truth is not None else
                              "float32 reference (a stand-in for float32 Torch7's rounding: no Torch7 run here)")
    adapter = dict(getattr(drift, "adapter_paths", None) or {})
    for layer, row in zip(report.layers, drift.accumulated, strict=True):
        comparison = row.comparison
        expected = base_trace.get(layer.lua_path)
        rounding = rounding_trace.get(layer.lua_path)
        result.rows.append(PathRow(layer.lua_path, layer.torch_class, row.status,
                                   None if comparison is None else comparison.max_rel,
                                   None if comparison is None else comparison.tolerance_rtol,
                                   None if rounding is None or expected is None else _rel(rounding, expected),
                                   adapter.get(layer.lua_path)))
    comparison = drift.output.comparison
    mine = None if comparison is None else comparison.max_rel
    own = _rel(rounding_output, base_output)
    result.output = {"max_rel": mine, "tolerance_rtol": None if comparison is None else comparison.tolerance_rtol,
                     "rounding_rel": own, "x_rounding": None if mine is None or not own else mine / own}
    if case.truth is not None and "output" in drift.arrays:
        result.output["vs_torch7_max_rel"] = _rel(drift.arrays["output"], case.truth.output)


def _rounding_reference(case: Case, report):
    """(float64 output, float64 trace, rounding output, rounding trace) on the case's input and noise.

    The float64 run is drift's baseline (``report``, run with ``keep_baseline``): the float64 reference on the
    case's input and noise rounded to the case's dtype, in the case's batch-norm mode, which is this exact run.
    """
    from contract.families import batchnorm_mode
    from harness.core.noise import noise_for_run
    from harness.core.registry import get_backend
    from harness.core.runs import forward, load_runner

    base_output, base_trace = report.arrays["baseline_output"], report.baseline_trace
    if base_trace is None:
        raise ValueError("the drift report does not keep its baseline trace (run_drift(..., keep_baseline=True))")
    if case.truth is not None:
        return base_output, base_trace, case.truth.output, case.truth.trace
    root = module_tree(case.model)
    mode = case.batchnorm or batchnorm_mode(root)
    # The numbers every run of the case saw: the input and noise rounded to the case's dtype (as drift does).
    x = np.asarray(case.x, dtype=np.float64).astype(case.dtype).astype(np.float64)
    noise = noise_for_run(root, x.shape, seed=case.seed, noise=case.noise, dtype=case.dtype)
    float32 = load_runner(get_backend("reference"), root, "float32", batchnorm=mode)
    output, trace = forward(float32, x.astype(np.float32), trace=True,
                            noise={k: v.astype(np.float32) for k, v in noise.items()})
    return base_output, base_trace, output, trace


def _rel(actual, expected) -> float | None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return None
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return float(np.max(np.abs(actual - expected))) / scale if scale > 0 else 0.0


def _divergence(divergence) -> dict[str, Any] | None:
    if divergence is None:
        return None
    return {"lua_path": divergence.lua_path, "torch_class": divergence.torch_class, "view": divergence.view,
            "max_rel": _finite(divergence.max_rel), "reaches_output": divergence.reaches_output,
            "output_max_rel": _finite(divergence.output_max_rel),
            "symptoms": [s.text for s in divergence.symptoms], "hint": divergence.hint}


def _finite(value) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
