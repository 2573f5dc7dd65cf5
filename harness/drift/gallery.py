"""The demo's front page: every backend's picture side by side, and one parity table, for several drift reports.

A view like the others (text or bytes out, no files written): :func:`render_gallery` returns the HTML
page, :func:`contact_sheet` one PNG with a row of pictures per section (what the README shows).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape

import numpy as np

from harness.drift.analysis import BackendDrift, DriftReport
from harness.drift.html_view import STYLE
from harness.drift.pictures import png_bytes, strip_rgb
from harness.drift.text_view import format_number


@dataclass(frozen=True)
class Section:
    """One model of the demo: its drift report, where the full report lives, and which backends the
    verdict covers (``judged``: this project's faithful implementations; the others are findings)."""

    title: str
    model: str
    report: DriftReport
    link: str
    judged: frozenset[str]


def panels(section: Section) -> list[tuple[str, np.ndarray]]:
    """(caption, H x W x 3 uint8) for the input picture, the baseline's output and each backend's."""
    from contract.families import FAMILIES, JOHNSON, input_picture
    from fileio.images import deprocess

    report = section.report
    family = FAMILIES.get(report.model.get("family", ""), JOHNSON)
    shown = []
    if family.kind != "texture":  # a texture net's input is zeros: nothing to show
        picture = input_picture(report.arrays["input"][:1], family)[0]
        shown.append(("input", np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)))
    shown.append((report.baseline["label"], _picture(report.arrays["baseline_output"][0], family, deprocess)))
    for backend in report.backends:
        output = backend.arrays.get("output")
        if output is not None:
            shown.append((backend.spec.label, _picture(np.asarray(output)[0], family, deprocess)))
    return shown


def _picture(output: np.ndarray, family, deprocess) -> np.ndarray:
    return deprocess(np.nan_to_num(output, nan=-1e3, posinf=-1e3, neginf=-1e3)[None], family)


def verdict(section: Section, backend: BackendDrift) -> str:
    status = getattr(backend, "status", None)
    if status == "not applicable":
        return "not applicable"
    if backend.passed:
        return "agrees"
    return "DRIFTS" if backend.spec.backend in section.judged else "drifts (finding)"


def render_gallery(sections: list[Section], *, title: str, summary: str, passed: bool) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             f'<div class="verdict {"ok" if passed else "bad"}">{escape(summary)}</div>',
             _table(sections)]
    for section in sections:
        parts.append(f"<h2>{escape(section.title)}</h2><p>{escape(section.model)} — "
                     f'<a href="{escape(section.link)}">full drift report</a></p>')
        for caption, rgb in panels(section):
            data = base64.b64encode(png_bytes(rgb)).decode("ascii")
            parts.append(f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}" '
                         f'width="{rgb.shape[1]}" height="{rgb.shape[0]}"><figcaption>{escape(caption)}'
                         "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(sections: list[Section]) -> str:
    rows = ['<table class="grid"><tr><th>model</th><th>backend</th><th>verdict</th><th>output max rel</th>'
            "<th>tolerance rtol</th><th>first divergence</th></tr>"]
    for section in sections:
        for backend in section.report.backends:
            comparison = backend.output.comparison
            first = backend.first_divergence
            rows.append(
                f'<tr><td class="l">{escape(section.title)}</td><td class="l">{escape(backend.spec.label)}</td>'
                f'<td class="l">{escape(verdict(section, backend))}</td>'
                f"<td>{format_number(comparison.max_rel if comparison else None)}</td>"
                f"<td>{format_number(comparison.tolerance_rtol if comparison else None)}</td>"
                f'<td class="l">{escape(first.lua_path + " " + first.torch_class) if first else "—"}</td></tr>')
    rows.append("</table>")
    return "\n".join(rows)


def contact_sheet(sections: list[Section]) -> bytes:
    """One PNG: a row per section (input, baseline, every backend), for the README."""
    shown = [panels(section) for section in sections]
    columns = max(len(row) for row in shown)
    # Rows line up by backend: a texture net has no input picture, so its row starts one column later.
    blank = np.full_like(shown[0][0][1], 255)
    rows = [strip_rgb([blank] * (columns - len(row)) + [rgb for _, rgb in row]) for row in shown]
    width = max(row.shape[1] for row in rows)
    gap = 8
    sheet = np.full((sum(row.shape[0] for row in rows) + gap * (len(rows) - 1), width, 3), 255, dtype=np.uint8)
    top = 0
    for row in rows:
        sheet[top:top + row.shape[0], :row.shape[1]] = row
        top += row.shape[0] + gap
    return png_bytes(sheet)
