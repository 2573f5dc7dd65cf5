"""Drift analysis and its views.

    from harness.drift import run_drift
    report = run_drift("model.t7", x, ["torch", "tf-seed"])

``analysis`` computes a :class:`DriftReport` (data); ``text_view``, ``json_view``,
``html_view`` and ``pictures`` render it as text, JSON, HTML and PNG bytes. The views never write
files: the command line does that.
"""

from harness.drift.analysis import BackendDrift, Divergence, DriftReport, LayerResult, RunSpec, run_drift

__all__ = ["BackendDrift", "Divergence", "DriftReport", "LayerResult", "RunSpec", "run_drift"]
