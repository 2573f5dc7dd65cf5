"""Writing a drift report's views to files: JSON, HTML, and one PNG per picture, each atomically.

The views (harness.drift.*_view, harness.drift.pictures) return text or bytes; the commands
decide where they go, through this one place.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from fileio.atomic import atomic_write_bytes
from fileio.errors import UserError


def write_pictures(pictures, directory: Path) -> dict[str, str]:
    """Write each picture as DIR/<name>.png; returns name -> path."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the pictures folder {directory}: {error.strerror or error}") from None
    written = {}
    for picture in pictures:
        path = directory / f"{picture.name}.png"
        atomic_write_bytes(path, picture.png)
        written[picture.name] = str(path)
    return written


def write_drift_report(report, *, json_path: Path | None = None, html_path: Path | None = None,
                       pictures_dir: Path | None = None, expected_to_drift: Collection[str] = ()) -> dict[str, str]:
    """Render and write the views asked for; returns the pictures written (name -> path). ``expected_to_drift``:
    backend names whose drift the HTML verdict reports as expected (harness.drift.analysis.verdict)."""
    written: dict[str, str] = {}
    pictures = None
    if pictures_dir is not None or html_path is not None:
        from harness.drift.pictures import report_pictures

        pictures = report_pictures(report)
        if pictures_dir is not None:
            written = write_pictures(pictures, pictures_dir)
    if json_path is not None:
        from harness.drift.json_view import dumps

        atomic_write_bytes(json_path, dumps(report, written).encode("utf-8"))
    if html_path is not None:
        from harness.drift.html_view import render_html

        atomic_write_bytes(html_path, render_html(report, pictures, expected_to_drift=expected_to_drift)
                           .encode("utf-8"))
    return written
