"""The report card as one self-contained HTML page: summary table, then per case its pictures and depth chart."""

from __future__ import annotations

import base64
from html import escape

import numpy as np

from harness.drift.chart import Series, depth_chart
from harness.drift.html_view import STYLE
from harness.verify.card import Card, CaseResult
from harness.verify.views import _first, _num, _times, render_markdown, verdict_line


def render_html(card: Card) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>texture-nets verify {escape(card.backend)}</title><style>{STYLE}</style></head><body>",
             f"<h1>Report card: {escape(card.backend)}</h1>",
             f'<div class="verdict {"ok" if card.passed else "bad"}">{escape(verdict_line(card))}</div>',
             _summary(card)]
    for result in card.cases:
        parts.append(_case(result))
    untested = [(s.name, s.reason) for s in card.skipped]
    if untested:
        parts.append("<h2>Not tested</h2><ul>" + "".join(f"<li>{escape(n)}: {escape(r)}</li>" for n, r in untested)
                     + "</ul>")
    parts.append("<h2>As Markdown</h2><details><summary>the same card as Markdown</summary><pre>"
                 f"{escape(render_markdown(card))}</pre></details></body></html>")
    return "\n".join(parts)


def _summary(card: Card) -> str:
    rows = ['<table class="grid"><tr><th>case</th><th>kind</th><th>verdict</th><th>output rel</th><th>tolerance</th>'
            "<th>× Torch7's own rounding</th><th>first divergence</th></tr>"]
    for r in card.cases:
        css = {"drift": "fail", "not tested": "undetermined"}.get(r.status, "")
        rows.append(f'<tr class="{css}"><td class="l">{escape(r.case.name)}</td><td class="l">{r.case.kind}</td>'
                    f'<td class="l">{escape(r.status)}</td><td>{_num(r.output.get("max_rel"))}</td>'
                    f'<td>{_num(r.output.get("tolerance_rtol"))}</td><td>{_times(r)}</td>'
                    f'<td class="l">{escape(_first(r))}</td></tr>')
    rows.append("</table>")
    return "\n".join(rows)


def _case(result: CaseResult) -> str:
    parts = [f"<h2>{escape(result.case.name)}: {escape(result.status)}</h2>",
             f"<p>{escape(result.case.description)}; input {'×'.join(map(str, result.case.x.shape))}, "
             f"{result.case.dtype}</p>"]
    if result.status == "not tested":
        parts.append(f"<p class='note'>{escape(result.reason)}</p>")
        return "\n".join(parts)
    rows = list(result.rows)
    chart = depth_chart([r.lua_path for r in rows], [r.max_rel for r in rows], [r.tolerance_rtol for r in rows],
                        Series(f"{result.rounding_source.split(' (')[0]} rounding", [r.rounding_rel for r in rows],
                               "#2e8b57"),
                        failed=[r.status not in ("pass", "undetermined", "not compared") for r in rows],
                        title=f"{result.case.name}: error by Lua path")
    parts.append(f'<div class="scroll">{chart}</div>')
    parts.append(f"<p class='hint'>Reference line: {escape(result.rounding_source)}.</p>")
    adapter = {row.lua_path: row.adapter for row in rows if row.adapter}
    if adapter:
        parts.append("<p class='note'>Supplied by the adapter, not the port (no verdict here is about them): "
                     + escape("; ".join(f"{p}: {what}" for p, what in sorted(adapter.items()))) + "</p>")
    parts.append(_pictures(result))
    return "\n".join(parts)


def _pictures(result: CaseResult) -> str:
    from contract.families import FAMILIES, JOHNSON
    from fileio.images import deprocess
    from harness.drift.pictures import png_bytes

    report = result.report
    family = FAMILIES.get(report.model.get("family", ""), JOHNSON)
    figures = []
    for label, output in ((report.baseline["label"], report.arrays.get("baseline_output")),
                          (report.backends[0].spec.label, report.backends[0].arrays.get("output"))):
        if output is None:
            continue
        rgb = deprocess(np.nan_to_num(np.asarray(output)[:1], nan=-1e3, posinf=-1e3, neginf=-1e3), family)
        data = base64.b64encode(png_bytes(rgb)).decode("ascii")
        figures.append(f'<figure><img alt="{escape(label)}" src="data:image/png;base64,{data}"><figcaption>'
                       f"{escape(label)}</figcaption></figure>")
    return "".join(figures)
