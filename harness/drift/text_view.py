"""The drift report as plain text for a terminal: verdicts and findings first, then the per-layer tables.

A view of :class:`harness.drift.analysis.DriftReport`; it computes nothing new. Each backend's summary
leads with its biggest finding (the largest effect on the output) and ends with what to fix next; the
per-layer tables keep execution order. Paths that were not compared are listed with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from harness.drift.analysis import CONSTRUCTOR_ORDER, BackendDrift, Divergence, DriftReport, LayerResult
from harness.drift.analysis import verdict as overall_verdict

COLUMNS = ("path", "class", "shape", "max abs", "mean abs", "p99", "max rel", "worst index", "NaN/Inf",
           "need rtol", "rtol", "verdict")


def render_text(report: DriftReport, *, tables: bool = True, verdict: bool = True,
                expected_to_drift: Collection[str] = ()) -> str:
    """The report as text: header, notes, one summary per backend, optional per-layer tables, verdict line.

    ``expected_to_drift``: backend names whose drift is a finding, not a failure (harness.drift.analysis.verdict);
    the HTML view takes the same argument, so both say the same thing.
    """
    lines = [_header(report), ""]
    lines += [f"note: {note}" for note in report.notes]
    if report.notes:
        lines.append("")
    for backend in report.backends:
        lines += _backend_summary(report, backend)
        lines.append("")
    if tables:
        for backend in report.backends:
            lines += _tables(report, backend)
    if verdict:
        outcome = overall_verdict(report, expected_to_drift)
        lines.append(f"{outcome.text} (exit status {0 if outcome.passed else 1})")
    return "\n".join(lines) + "\n"


def _header(report: DriftReport) -> str:
    env = report.environment
    frameworks = ", ".join(f"{name} {info.get('version') or info.get('tensorflow', '')}".strip()
                           for name, info in env.get("frameworks", {}).items())
    return (f"texture-nets drift: model {report.model['source']} ({report.model['layout']} layout); input "
            f"{report.input['source']} {_dims(report.input['shape'])} (rounded to {report.input['rounded_to']}); "
            f"baseline {report.baseline['label']}\n"
            f"environment: {env.get('cpu')}, {env.get('usable_cpus')} usable CPUs, device {env.get('device')}, "
            f"numpy {env.get('numpy')}{', ' + frameworks if frameworks else ''}, "
            f"TF_ENABLE_ONEDNN_OPTS={env.get('TF_ENABLE_ONEDNN_OPTS')}")


def _backend_summary(report: DriftReport, backend: BackendDrift) -> list[str]:
    if not backend.applicable:
        return [f"== {backend.spec.label}: NOT APPLICABLE to this model: {backend.not_applicable}"]
    out = backend.output
    head = f"== {backend.spec.label}: {'AGREES' if backend.passed else 'DRIFTS'}"
    if out.comparison is not None and out.comparison.shape_actual == out.comparison.shape_expected:
        head += (f" (output max rel {_num(out.comparison.max_rel)}, "
                 f"tolerance rtol {_num(out.comparison.tolerance_rtol)})")
    elif out.comparison is not None:
        head += f" (output shape {_dims(out.comparison.shape_actual)} vs {_dims(out.comparison.shape_expected)})"
    elif out.error:
        head += f" (the run failed: {out.error})"
    lines = [head]
    if backend.isolated is None:
        lines.append(f"   {backend.isolated_note}")
    lines += _not_compared_lines(backend)
    if backend.adapter_paths:
        lines.append(f"   supplied by the adapter, not the port (no verdict here is about them): "
                     f"{', '.join(sorted(backend.adapter_paths))}")
    first, reaching, lead = backend.first_divergence, backend.first_divergence_reaching_output, backend.lead
    if first is None:
        failing = [r.lua_path for r in backend.accumulated + (backend.isolated or []) if not r.passed]
        if failing:
            lines.append(f"   no local divergence isolated; failing paths: {', '.join(dict.fromkeys(failing))}")
        return lines
    lines.append(f"   biggest finding{' and first divergence' if first is lead else ''}: {_describe(lead)}")
    if first is not lead:
        lines.append(f"   first divergence: {_describe(first)}")
    if reaching is not None and reaching is not first and reaching is not lead:
        lines.append(f"   first divergence reaching the output: {_describe(reaching)}")
    elif reaching is None:
        lines.append("   no divergence reaches the output")
    ranked = backend.ranked
    lines.append(f"   {len(ranked)} local divergence(s) ({ranked[0].view} view), biggest effect on the output first:")
    for rank, divergence in enumerate(ranked, start=1):
        symptoms = "; ".join(s.text for s in divergence.symptoms)
        lines.append(f"   {rank}. {divergence.lua_path} {divergence.torch_class} {_hp(divergence.hparams)}: "
                     f"{divergence.classification}"
                     f"{' — ' + divergence.propagation_note if divergence.propagation_note else ''}")
        lines.append(f"       {symptoms}")
    hinted = dict.fromkeys(d.torch_class for d in ranked if d.reaches_output)
    for torch_class in hinted:
        hint = next(d.hint for d in ranked if d.torch_class == torch_class)
        lines.append(f"   hint ({torch_class}): {hint}")
    if lead is not None and lead.reaches_output:
        lines.append(f"   next: fix Lua path {lead.lua_path} first (the biggest effect on the output), then re-run "
                     "drift; --html/--pictures show where in the image it differs")
    return lines


def _not_compared_lines(backend: BackendDrift) -> list[str]:
    reasons = backend.not_compared
    if not reasons:
        return []
    compared = len({r.lua_path for r in backend.accumulated if r.status != "not compared"})
    lines = [f"   not compared ({len(reasons)} path(s); the verdict rests on the {compared} compared):"]
    lines += [f"   - {reason}" if path in reason else f"   - Lua path {path}: {reason}"
              for path, reason in reasons.items()]
    return lines


def _describe(divergence: Divergence) -> str:
    return (f"Lua path {divergence.lua_path} ({divergence.torch_class} {_hp(divergence.hparams)}), "
            f"{divergence.classification} ({divergence.effect_text}): {divergence.symptoms[0].text}")


def _tables(report: DriftReport, backend: BackendDrift) -> list[str]:
    if not backend.applicable:
        return []
    lines = []
    for view, results in (("accumulated", [*backend.accumulated, backend.output]), ("isolated", backend.isolated)):
        if results is None:
            continue
        lines.append(f"-- {backend.spec.label} vs {report.baseline['label']}, {view} view")
        rows = [COLUMNS] + [_row(report, result) for result in results]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        for row in rows:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        lines.append("")
    return lines


def _row(report: DriftReport, result: LayerResult) -> tuple[str, ...]:
    cls = "(forward)" if result.lua_path == "output" else report.layer(result.lua_path).torch_class.rsplit(".", 1)[-1]
    c = result.comparison
    if c is None:
        return (result.lua_path, cls, "-", "-", "-", "-", "-", "-", "-", "-", "-", f"{result.status}: {result.error}")
    if c.shape_actual != c.shape_expected:
        shape = f"{_dims(c.shape_actual)}!={_dims(c.shape_expected)}"
    else:
        shape = _dims(c.shape_actual)
    worst = "-" if c.worst_index is None else ",".join(str(i) for i in c.worst_index)
    verdict = {"pass": "ok", "fail": "FAIL", "undetermined": "undetermined"}.get(result.status, result.status)
    return (result.lua_path, cls, shape, _num(c.max_abs), _num(c.mean_abs), _num(c.p99_abs), _num(c.max_rel), worst,
            f"{c.nonfinite_actual}/{c.nonfinite_expected}", _num(c.needed_rtol), _num(c.tolerance_rtol), verdict)


def _hp(hparams: dict) -> str:
    shown = [f"{k}={v}" for k, v in hparams.items() if k in CONSTRUCTOR_ORDER and k != "nOutput"]
    return f"({', '.join(shown)})" if shown else ""


def format_number(value: float | None, missing: str = "-", infinite: str = "inf") -> str:
    """A statistic for a table cell: 3 significant digits, with markers for missing and infinite values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float) and math.isinf(value):
        return infinite
    return f"{value:.3g}"


def format_shape(shape, separator: str = "x") -> str:
    return separator.join(str(n) for n in shape)


_num = format_number
_dims = format_shape
