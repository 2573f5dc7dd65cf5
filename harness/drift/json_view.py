"""The drift report as JSON, and its schema (harness/drift/schema.json, versioned: docs/drift.md).

Strict JSON: non-finite numbers become null (a NaN statistic means "not computable", e.g. a
shape mismatch), never the non-standard NaN/Infinity tokens.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from harness.drift.analysis import DriftReport

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.json"


def report_dict(report: DriftReport, pictures: dict[str, str] | None = None) -> dict[str, Any]:
    data = report.to_dict()
    if pictures:
        data["pictures"] = dict(pictures)
    return data


def dumps(report: DriftReport, pictures: dict[str, str] | None = None) -> str:
    return json.dumps(report_dict(report, pictures), indent=1, allow_nan=False) + "\n"


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(data: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when ``data`` does not follow the schema (needs jsonschema)."""
    import jsonschema

    jsonschema.Draft202012Validator(schema()).validate(data)
