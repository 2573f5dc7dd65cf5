"""The report card as terminal text, Markdown and JSON (views of harness.verify.card.Card; they write nothing)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from harness.verify.card import Card, CaseResult

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.json"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _times(result: CaseResult) -> str:
    ratio = result.output.get("x_rounding")
    return "–" if ratio is None else f"{ratio:.2g}×"


def _first(result: CaseResult) -> str:
    backend = result.report.backends[0] if result.report is not None else None
    if backend is None or backend.first_divergence is None:
        return "–"
    first = backend.first_divergence
    return f"{first.lua_path} {first.torch_class.rsplit('.', 1)[-1]}"


def verdict_line(card: Card) -> str:
    agree, drift = card.count("agree"), card.count("drift")
    untested = card.count("not tested") + len(card.skipped)
    outcome = "AGREES" if card.passed else "DRIFTS"
    return (f"verify {card.backend}: {outcome}: {agree} case(s) agree, {drift} drift, {untested} not tested "
            f"(exit status {0 if card.passed else 1})")


def render_text(card: Card) -> str:
    lines = [f"texture-nets verify {card.backend}: {len(card.cases)} cases, {card.seconds:.1f} s", ""]
    width = max((len(r.case.name) for r in card.cases), default=10)
    lines.append(f"  {'case':<{width}}  {'verdict':<10}  {'output rel':>10}  {'tolerance':>9}  "
                 f"{'x rounding':>10}  first divergence")
    for result in card.cases:
        lines.append(f"  {result.case.name:<{width}}  {result.status:<10}  {_num(result.output.get('max_rel')):>10}  "
                     f"{_num(result.output.get('tolerance_rtol')):>9}  {_times(result):>10}  {_first(result)}")
    for result in card.cases:
        if result.status == "drift":
            lines += ["", f"== {result.case.name}: drifts", *_findings(result)]
        elif result.status == "not tested":
            lines += ["", f"== {result.case.name}: not tested: {result.reason}"]
        adapter = {row.lua_path: row.adapter for row in result.rows if row.adapter}
        if adapter:
            lines.append(f"   supplied by the adapter, not the port: {', '.join(sorted(adapter))}")
    for skipped in card.skipped:
        lines.append(f"not tested: {skipped.name}: {skipped.reason}")
    lines += ["", "x rounding: the port's error at the output over Torch7's own rounding in the same dtype (measured "
              "on Torch7 cases; the float32 reference stands in for float32 Torch7 elsewhere)", verdict_line(card)]
    return "\n".join(lines) + "\n"


def _findings(result: CaseResult) -> list[str]:
    backend = result.report.backends[0]
    ranked = sorted(backend.divergences, key=lambda d: -(d.output_max_rel or 0.0))
    lines = []
    for divergence in ranked[:4]:
        effect = ("reaches the output" if divergence.reaches_output else
                  f"absorbed by {divergence.absorbed_by}" if divergence.reaches_output is False else "effect unknown")
        lines.append(f"   - {divergence.lua_path} {divergence.torch_class}: {_num(divergence.max_rel)} of the layer's "
                     f"scale, {effect}" + (f" (output moves {_num(divergence.output_max_rel)})"
                                           if divergence.output_max_rel is not None else ""))
        lines += [f"       {symptom.text}" for symptom in divergence.symptoms[:2]]
    if backend.isolated is None and backend.isolated_note:
        lines.append(f"   (no isolated view: {backend.isolated_note})")
    return lines


def render_markdown(card: Card) -> str:
    lines = [f"# Report card: `{card.backend}`", "", verdict_line(card), "",
             f"Created {card.created}; {card.seconds:.1f} s; machine: {card.environment.get('cpu')}, "
             f"numpy {card.environment.get('numpy')}" + _frameworks(card), "",
             "| case | kind | verdict | output rel. error | tolerance | × Torch7's own rounding | first divergence |",
             "|---|---|---|---|---|---|---|"]
    for r in card.cases:
        lines.append(f"| {r.case.name} | {r.case.kind} | {r.status} | {_num(r.output.get('max_rel'))} | "
                     f"{_num(r.output.get('tolerance_rtol'))} | {_times(r)} | {_first(r)} |")
    for r in card.cases:
        if r.status == "drift":
            lines += ["", f"## {r.case.name}", "", *[line.strip().replace("- ", "- ", 1) for line in _findings(r)]]
    untested = [(r.case.name, r.reason) for r in card.cases if r.status == "not tested"]
    untested += [(s.name, s.reason) for s in card.skipped]
    if untested:
        lines += ["", "## Not tested", ""] + [f"- {name}: {reason}" for name, reason in untested]
    adapter = sorted({path for r in card.cases for path in (row.lua_path for row in r.rows if row.adapter)})
    if adapter:
        lines += ["", "## Supplied by the adapter", "",
                  "These Lua paths were computed by the plug-in's own code, not by the port: no verdict above is "
                  f"about them: {', '.join(adapter)}"]
    lines += ["", "Tolerances: the project's rounding-error model (docs/tolerances.md). '× Torch7's own rounding': "
              "the port's error at the output (against the float64 reference) divided by Torch7's own error in the "
              "same dtype on the same input and noise (measured on Torch7 cases; the float32 reference stands in for "
              "float32 Torch7 elsewhere)."]
    return "\n".join(lines) + "\n"


def _frameworks(card: Card) -> str:
    frameworks = card.environment.get("frameworks", {})
    text = ", ".join(f"{name} {info.get('version', '')}".strip() for name, info in frameworks.items())
    return f", {text}" if text else ""


def dumps(card: Card) -> str:
    return json.dumps(card.to_dict(), indent=1, allow_nan=False) + "\n"


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(data: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when ``data`` does not follow the schema (needs jsonschema)."""
    import jsonschema

    jsonschema.Draft202012Validator(schema()).validate(data)
