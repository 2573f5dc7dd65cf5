"""The drift report as one self-contained HTML page: the thing to attach to a bug report.

No network: the style is inline, the pictures are ``data:image/png;base64`` URIs, there is no
script. A view of :class:`harness.drift.analysis.DriftReport` and the pictures of harness.drift.pictures.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from html import escape

from harness.drift.analysis import BackendDrift, Divergence, DriftReport, LayerResult
from harness.drift.analysis import verdict as overall_verdict
from harness.drift.chart import Series, backend_chart
from harness.drift.pictures import Picture
from harness.drift.text_view import format_number, format_shape

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1d1f;
       max-width: 1220px; }
h1 { font-size: 22px; margin: 0 0 6px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.verdict { padding: 10px 14px; border-radius: 6px; font-weight: 600; margin: 10px 0 14px; }
.ok { background: #e3f4e6; color: #17612a; } .bad { background: #fbe4e4; color: #8b1a1a; }
.meta td { padding: 1px 10px 1px 0; vertical-align: top; } .meta td:first-child { color: #666; }
table.grid { border-collapse: collapse; font: 12px/1.35 ui-monospace, "DejaVu Sans Mono", monospace; }
table.grid th, table.grid td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
table.grid th { background: #f4f4f6; } table.grid td.l { text-align: left; }
table.grid td.wrap { white-space: normal; min-width: 360px; }
tr.fail td { background: #fdeaea; } tr.undetermined td { background: #fff6dc; } tr.error td { background: #f3e3fa; }
.finding { border-left: 4px solid #c0392b; background: #fff7f6; padding: 8px 12px; margin: 8px 0; }
.finding.absorbed { border-color: #999; background: #f7f7f7; }
.hint { color: #555; font-size: 13px; } .note { background: #fff6dc; padding: 8px 12px; border-radius: 4px; }
figure { display: inline-block; margin: 6px 14px 10px 0; vertical-align: top; }
figure img { image-rendering: pixelated; border: 1px solid #ccc; }
figcaption { font-size: 12px; color: #444; max-width: 520px; }
details { margin: 6px 0; } summary { cursor: pointer; color: #1a4f8b; }
code { background: #f4f4f6; padding: 0 3px; border-radius: 3px; }
.scroll { overflow-x: auto; max-width: 100%; } pre { white-space: pre-wrap; word-break: break-all; }
"""


def render_html(report: DriftReport, pictures: list[Picture] | None = None, *,
                expected_to_drift: Collection[str] = ()) -> str:
    """The page. ``expected_to_drift``: backend names whose drift is a finding, not a failure (the demo passes
    harness.drift.analysis.expected_to_drift_backends); the verdict is harness.drift.analysis.verdict's, the
    same line the terminal prints."""
    pictures = pictures or []
    expected = frozenset(expected_to_drift)
    outcome = overall_verdict(report, expected)
    verdict = outcome.text[:1].upper() + outcome.text[1:] + "."
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>texture-nets drift: {escape(', '.join(b.spec.label for b in report.backends))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>texture-nets drift report</h1>",
        f'<div class="verdict {"ok" if outcome.passed else "bad"}">{escape(verdict)}</div>',
        _meta(report),
    ]
    parts += [f'<p class="note">{escape(note)}</p>' for note in report.notes]
    parts.append(_overview(report, expected))
    for backend in report.backends:
        parts.append(_backend(report, backend, [p for p in pictures if p.backend == backend.spec.label]))
    parts.append("<h2>Environment</h2><details><summary>everything recorded</summary><pre>"
                 f"{escape(json.dumps(report.environment, indent=1, default=str))}</pre></details>")
    parts.append(f'<p class="hint">schema texture-nets-drift {escape(report.schema_version)}, created '
                 f"{escape(report.created)}. Field meanings: docs/drift.md.</p></body></html>")
    return "\n".join(parts) + "\n"


def _meta(report: DriftReport) -> str:
    env = report.environment
    frameworks = ", ".join(f"{name} {info.get('version') or info.get('tensorflow', '')}"
                           for name, info in env.get("frameworks", {}).items()) or "none loaded"
    rows = [
        ("model", f"{report.model['source']} ({report.model['layout']} layout, {report.model['modules']} modules)"),
        ("input", f"{report.input['source']}, {_dims(report.input['shape'])}, rounded to {report.input['rounded_to']}"),
        ("baseline", report.baseline["label"]),
        ("machine", f"{env.get('cpu')}, {env.get('usable_cpus')} usable CPUs, device {env.get('device')}"),
        ("libraries", f"numpy {env.get('numpy')} ({(env.get('blas') or {}).get('name', '?')}), {frameworks}"),
        ("TF_ENABLE_ONEDNN_OPTS", str(env.get("TF_ENABLE_ONEDNN_OPTS"))),
    ]
    cells = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{cells}</table>'


def _state(backend: BackendDrift, expected: frozenset[str]) -> str:
    if not backend.applicable:
        return "not applicable"
    if backend.passed:
        return "agrees"
    return "drifts (expected)" if backend.spec.backend in expected or backend.name in expected else "DRIFTS"


def _overview(report: DriftReport, expected: frozenset[str] = frozenset()) -> str:
    head = ("<tr><th>backend</th><th>verdict</th><th>output max rel</th><th>tolerance rtol</th>"
            "<th>biggest finding</th><th>first divergence</th><th>local divergences</th><th>not compared</th></tr>")
    rows = []
    for b in report.backends:
        c = b.output.comparison
        state = _state(b, expected)
        rows.append(
            f'<tr class="{"fail" if state == "DRIFTS" else ""}"><td class="l">{escape(b.spec.label)}</td>'
            f'<td class="l">{escape(state)}</td>'
            f"<td>{_num(None if c is None else c.max_rel)}</td>"
            f"<td>{_num(None if c is None else c.tolerance_rtol)}</td>"
            f'<td class="l">{_path(b.lead)}</td><td class="l">{_path(b.first_divergence)}</td>'
            f'<td>{len(b.divergences)}</td><td class="l">{escape(", ".join(b.not_compared)) or "—"}</td></tr>')
    return f'<h2>Summary</h2><div class="scroll"><table class="grid">{head}{"".join(rows)}</table></div>'


def _backend(report: DriftReport, backend: BackendDrift, pictures: list[Picture]) -> str:
    parts = [f"<h2>{escape(backend.spec.label)} vs {escape(report.baseline['label'])}</h2>"]
    if not backend.applicable:
        parts.append(f'<p class="note">Not applicable to this model: {escape(backend.not_applicable or "")}</p>')
        return "\n".join(parts)
    if backend.isolated is None:
        parts.append(f'<p class="note">{escape(backend.isolated_note)}</p>')
    if backend.not_compared:
        compared = len({r.lua_path for r in backend.accumulated if r.status != "not compared"})
        items = "".join(f"<li>{escape(reason if path in reason else f'Lua path {path}: {reason}')}</li>"
                        for path, reason in backend.not_compared.items())
        parts.append(f'<div class="note">Not compared ({len(backend.not_compared)} path(s); the verdict rests on '
                     f"the {compared} compared):<ul>{items}</ul></div>")
    if backend.adapter_paths:
        items = "".join(f"<li>Lua path {escape(path)}: {escape(what)}</li>"
                        for path, what in sorted(backend.adapter_paths.items()))
        parts.append(f'<div class="note">Supplied by the adapter, not the port (no verdict here is about them):'
                     f"<ul>{items}</ul></div>")
    first, reaching, lead = backend.first_divergence, backend.first_divergence_reaching_output, backend.lead
    if first is None:
        parts.append("<p>No local divergence: every layer agrees in "
                     f"{'both views' if backend.isolated is not None else 'the accumulated view'}.</p>")
    else:
        parts.append("<h3>Biggest finding (the largest effect on the output: fix this first)</h3>" + _finding(lead))
        if first is not lead:
            parts.append("<h3>First divergence</h3>" + _finding(first))
        if reaching is not None and reaching is not first and reaching is not lead:
            parts.append("<h3>First divergence that reaches the output</h3>" + _finding(reaching))
        elif reaching is None:
            parts.append("<p>No divergence reaches the output: every one is absorbed downstream.</p>")
    parts.append("<h3>Error through the network (accumulated view)</h3>"
                 f'<div class="scroll">{backend_chart(report, backend, _rounding_line(report, backend))}</div>')
    if pictures:
        parts.append("<h3>Pictures</h3>")
        parts += [_figure(p) for p in pictures]
    if first is not None:
        parts.append(_divergence_table(backend))
    for view, results in (("accumulated", [*backend.accumulated, backend.output]), ("isolated", backend.isolated)):
        if results is not None:
            failing = sum(1 for r in results if not r.passed)
            parts.append(f"<details{' open' if failing and view == 'isolated' else ''}><summary>{view} view, "
                         f"{len(results)} comparisons, {failing} out of tolerance</summary>"
                         f"{_layer_table(report, results)}</details>")
    return "\n".join(parts)


def _finding(d: Divergence) -> str:
    hp = ", ".join(f"{k}={v}" for k, v in d.hparams.items())
    symptoms = "".join(f"<li>{escape(s.text)}</li>" for s in d.symptoms)
    effect = escape(d.propagation_note or d.classification)
    return (f'<div class="finding{" absorbed" if d.reaches_output is False else ""}">'
            f"<b>Lua path {escape(d.lua_path)}</b> — <code>{escape(d.torch_class)}</code> "
            f"<span class=\"hint\">({escape(hp)})</span><br>"
            f"<b>{escape(d.classification)}</b>: {effect}<ul>{symptoms}</ul>"
            f'<div class="hint">Usual causes: {escape(d.hint)}</div></div>')


def _divergence_table(backend: BackendDrift) -> str:
    rank = {id(d): index for index, d in enumerate(backend.ranked, start=1)}
    head = ("<tr><th>path</th><th>rank by effect</th><th>class</th><th>max rel</th><th>effect</th>"
            "<th>absorbed by</th><th>output max rel (alone)</th><th>symptoms</th></tr>")
    rows = "".join(
        f'<tr class="{"fail" if d.reaches_output else ""}"><td class="l">{escape(d.lua_path)}</td>'
        f"<td>{rank[id(d)]}</td>"
        f'<td class="l">{escape(d.torch_class)}</td><td>{_num(d.max_rel)}</td>'
        f'<td class="l">{escape(d.classification)}</td><td class="l">{escape(d.absorbed_by or "")}</td>'
        f'<td>{_num(d.output_max_rel)}</td><td class="l wrap">{escape("; ".join(s.text for s in d.symptoms))}</td></tr>'
        for d in backend.divergences)
    return (f"<h3>All local divergences ({escape(backend.divergences[0].view)} view), in execution order</h3>"
            f'<div class="scroll"><table class="grid">{head}{rows}</table></div>')


def _layer_table(report: DriftReport, results: list[LayerResult]) -> str:
    head = ("<tr><th>path</th><th>class</th><th>shape</th><th>max abs</th><th>mean abs</th><th>p99</th>"
            "<th>max rel</th><th>worst index</th><th>NaN/Inf</th><th>needed rtol</th><th>rtol</th>"
            "<th>verdict</th></tr>")
    rows = []
    for r in results:
        cls = "(forward)" if r.lua_path == "output" else report.layer(r.lua_path).torch_class
        c = r.comparison
        if c is None:
            cells = f'<td colspan="9" class="l">{escape(r.error or "")}</td>'
        else:
            shape = _dims(c.shape_actual) if c.shape_actual == c.shape_expected else \
                f"{_dims(c.shape_actual)} ≠ {_dims(c.shape_expected)}"
            worst = "" if c.worst_index is None else ",".join(map(str, c.worst_index))
            cells = (f'<td class="l">{shape}</td><td>{_num(c.max_abs)}</td><td>{_num(c.mean_abs)}</td>'
                     f"<td>{_num(c.p99_abs)}</td><td>{_num(c.max_rel)}</td><td>{worst}</td>"
                     f"<td>{c.nonfinite_actual}/{c.nonfinite_expected}</td><td>{_num(c.needed_rtol)}</td>"
                     f"<td>{_num(c.tolerance_rtol)}</td>")
        status = r.status if r.status != "pass" else ""
        rows.append(f'<tr class="{status}"><td class="l">{escape(r.lua_path)}</td><td class="l">{escape(cls)}</td>'
                    f'{cells}<td class="l">{escape(r.status)}</td></tr>')
    return f'<div class="scroll"><table class="grid">{head}{"".join(rows)}</table></div>'


def _rounding_line(report: DriftReport, backend: BackendDrift) -> Series | None:
    """float32 rounding to draw beside a backend's error: the reference float32 run of the same report, when there
    is one (it sums like Torch7: the stand-in for float32 Torch7's own rounding, drift runs no Torch7)."""
    stand_in = next((b for b in report.backends if b.spec.backend == "reference" and b.spec.dtype == "float32"
                     and b is not backend and b.applicable), None)
    if stand_in is None:
        return None
    by_path = {r.lua_path: r.comparison.max_rel for r in stand_in.accumulated if r.comparison is not None}
    return Series("reference float32 (stand-in for float32 Torch7's rounding)",
                  [by_path.get(r.lua_path) for r in backend.accumulated], "#2e8b57")


def _figure(picture: Picture) -> str:
    # Heatmaps come scaled up with their colour bar and its labels drawn at 1:1; small strips are scaled up for
    # the eye (pixelated, so every element stays one visible block).
    zoom = 1
    if picture.kind == "strip":
        zoom = max(1, min(4, 1100 // max(picture.width, 1)))
    data = base64.b64encode(picture.png).decode("ascii")
    return (f'<figure><img alt="{escape(picture.caption)}" width="{picture.width * zoom}" '
            f'height="{picture.height * zoom}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(picture.caption)} ({picture.width}×{picture.height} px)</figcaption></figure>")


def _path(d: Divergence | None) -> str:
    return "—" if d is None else escape(f"{d.lua_path} {d.torch_class}")


def _num(value: float | None) -> str:
    return format_number(value, missing="–", infinite="∞")


def _dims(shape) -> str:
    return format_shape(shape, separator="×")

