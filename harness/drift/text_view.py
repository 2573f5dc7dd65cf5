"""The drift report as plain text for a terminal: verdicts and findings first, then the per-layer tables.

A view of :class:`harness.drift.analysis.DriftReport`; it computes nothing new. Each failing backend
ends with what to look at next.
"""

from __future__ import annotations

import math

from harness.drift.analysis import CONSTRUCTOR_ORDER, BackendDrift, Divergence, DriftReport, LayerResult

COLUMNS = ("path", "class", "shape", "max abs", "mean abs", "p99", "max rel", "worst index", "NaN/Inf",
           "need rtol", "rtol", "verdict")


def render_text(report: DriftReport, *, tables: bool = True, verdict: bool = True) -> str:
    """The report as text: header, notes, one summary per backend, optional per-layer tables, verdict line."""
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
        outcome = ("all backends agree with the baseline" if report.passed
                   else "DRIFT: some backends leave the tolerance")
        lines.append(f"{outcome} (exit status {0 if report.passed else 1})")
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
    first, reaching = backend.first_divergence, backend.first_divergence_reaching_output
    if first is None:
        failing = [r.lua_path for r in backend.accumulated + (backend.isolated or []) if not r.passed]
        if failing:
            lines.append(f"   no local divergence isolated; failing paths: {', '.join(dict.fromkeys(failing))}")
        return lines
    lines.append(f"   first divergence: {_describe(first)}")
    if reaching is not None and reaching is not first:
        lines.append(f"   first divergence reaching the output: {_describe(reaching)}")
    elif reaching is None:
        lines.append("   no divergence reaches the output")
    lines.append(f"   {len(backend.divergences)} local divergence(s) ({backend.divergences[0].view} view):")
    for divergence in backend.divergences:
        symptoms = "; ".join(s.text for s in divergence.symptoms)
        lines.append(f"   - {divergence.lua_path} {divergence.torch_class} {_hp(divergence.hparams)}: "
                     f"{divergence.classification}"
                     f"{' — ' + divergence.propagation_note if divergence.propagation_note else ''}")
        lines.append(f"       {symptoms}")
    hinted = dict.fromkeys(d.torch_class for d in backend.divergences if d.reaches_output)
    for torch_class in hinted:
        hint = next(d.hint for d in backend.divergences if d.torch_class == torch_class)
        lines.append(f"   hint ({torch_class}): {hint}")
    if reaching is not None:
        lines.append(f"   next: fix Lua path {reaching.lua_path} first, then re-run drift; "
                     "--html/--pictures show where in the image it differs")
    return lines


def _describe(divergence: Divergence) -> str:
    return (f"Lua path {divergence.lua_path} ({divergence.torch_class} {_hp(divergence.hparams)}), "
            f"{divergence.classification}: {divergence.symptoms[0].text}")


def _tables(report: DriftReport, backend: BackendDrift) -> list[str]:
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
