"""Pictures of a drift report: |difference| heatmaps and side-by-side strips, as PNG bytes.

* heatmap: one pixel per element of the compared tensor (H x W, the maximum over channels of
  |backend - baseline| for the sample holding the worst element), black -> red -> yellow ->
  white on a linear scale from 0 to the map's maximum; NaN/Inf are drawn cyan. One for the
  output of each backend and one for each of its first divergent layers.
* strip: input | baseline's stylized image | backend's stylized image | amplified difference,
  like the seed's example.jpg triple; panels of equal size separated by GAP pixels. Stylized
  images are deprocessed as test.lua saves them (fileio.images.deprocess); the
  difference is |backend - baseline| of the raw output, RGB, multiplied by ``gain`` so that the
  largest difference is full scale (the caption says by how much).

A view of :class:`harness.drift.analysis.DriftReport`: nothing here is computed from the models.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from harness.drift.analysis import BackendDrift, DriftReport, difference_map

GAP = 4
BACKGROUND = 128
# Colour map anchors (value in [0, 1] -> RGB): black, dark red, orange, yellow, white.
_ANCHORS = np.array([0.0, 0.3, 0.6, 0.85, 1.0])
_COLOURS = np.array([[0, 0, 0], [150, 20, 20], [240, 110, 10], [250, 220, 40], [255, 255, 255]], dtype=np.float64)
_NONFINITE = np.array([0, 255, 255], dtype=np.uint8)


@dataclass(frozen=True)
class Picture:
    """One PNG: a file-name-safe ``name``, a one-line ``caption``, its ``png`` bytes and its size."""

    name: str
    caption: str
    png: bytes
    width: int
    height: int
    backend: str
    kind: str  # "heatmap-output", "heatmap-layer", "strip"


def heatmap_rgb(diff: np.ndarray) -> np.ndarray:
    """H x W |difference| -> H x W x 3 uint8 (see the module docstring for the colour scale)."""
    diff = np.asarray(diff, dtype=np.float64)
    finite = np.isfinite(diff)
    top = float(diff[finite].max()) if finite.any() else 0.0
    unit = np.where(finite, diff, 0.0) / top if top > 0 else np.zeros_like(diff)
    rgb = np.stack([np.interp(unit, _ANCHORS, _COLOURS[:, k]) for k in range(3)], axis=-1)
    rgb = np.round(rgb).astype(np.uint8)
    rgb[~finite] = _NONFINITE
    return rgb


def strip_rgb(panels: list[np.ndarray]) -> np.ndarray:
    """Panels (H_i x W_i x 3 uint8) side by side, each top-left in a cell of the largest size."""
    height = max(p.shape[0] for p in panels)
    width = max(p.shape[1] for p in panels)
    out = np.full((height, len(panels) * width + (len(panels) - 1) * GAP, 3), 255, dtype=np.uint8)
    for i, panel in enumerate(panels):
        left = i * (width + GAP)
        out[:, left:left + width] = BACKGROUND
        out[:panel.shape[0], left:left + panel.shape[1]] = panel
    return out


def report_pictures(report: DriftReport) -> list[Picture]:
    """Every picture of the report, in order: per backend, output heatmap, layer heatmaps, strip."""
    pictures = []
    for backend in report.backends:
        pictures += _backend_pictures(report, backend)
    return pictures


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


# -- per backend -----------------------------------------------------------------------------------------------


def _backend_pictures(report: DriftReport, backend: BackendDrift) -> list[Picture]:
    stem = safe_name(backend.spec.label)
    pictures = []
    output = backend.arrays.get("output")
    base_output = report.arrays["baseline_output"]
    if output is not None:
        diff = difference_map(np.asarray(output, dtype=np.float64), base_output)
        pictures.append(_picture(f"{stem}_output_heatmap", heatmap_rgb(diff), backend, "heatmap-output",
                                 f"{backend.spec.label}: |output - baseline|, max over channels "
                                 f"(0 to {_max(diff):.3g}, VGG units)"))
    shown = []
    for divergence in (backend.first_divergence, backend.first_divergence_reaching_output):
        if divergence is None or divergence.lua_path in shown:
            continue
        shown.append(divergence.lua_path)
        diff = backend.arrays.get(f"diff/{divergence.lua_path}")
        if diff is None:
            continue
        role = "first divergence" if divergence is backend.first_divergence else "first divergence reaching the output"
        pictures.append(_picture(
            f"{stem}_layer_{safe_name(divergence.lua_path)}_heatmap", heatmap_rgb(diff), backend, "heatmap-layer",
            f"{backend.spec.label}: {role}, Lua path {divergence.lua_path} ({divergence.torch_class}, "
            f"{divergence.view} view): |difference| 0 to {_max(diff):.3g}{_uniform(diff)}"))
    if output is not None:
        pictures.append(_strip(report, backend, np.asarray(output, dtype=np.float64), stem))
    return pictures


def _strip(report: DriftReport, backend: BackendDrift, output: np.ndarray, stem: str) -> Picture:
    x = report.arrays["input"]
    base_output = report.arrays["baseline_output"]
    comparison = backend.output.comparison
    sample = 0
    if comparison is not None and comparison.worst_index:
        sample = min(comparison.worst_index[0], x.shape[0] - 1, output.shape[0] - 1)
    from contract.families import input_picture

    family = _family(report)
    shown = input_picture(x[sample:sample + 1], family)[0]
    input_rgb = np.round(np.clip(shown, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    base_rgb = _stylized(base_output[sample], family)
    mine_rgb = _stylized(output[sample], family)
    h = min(output.shape[2], base_output.shape[2])
    w = min(output.shape[3], base_output.shape[3])
    raw = np.abs(output[sample, :, :h, :w] - base_output[sample, :, :h, :w])[::-1]  # BGR -> RGB
    raw = np.where(np.isfinite(raw), raw, np.inf)
    top = _max(raw)
    gain = 255.0 / top if top > 0 and np.isfinite(top) else 1.0
    amplified = np.clip(np.nan_to_num(raw, posinf=top if np.isfinite(top) else 255.0) * gain, 0, 255)
    diff_rgb = amplified.astype(np.uint8).transpose(1, 2, 0)
    caption = (f"input | {report.baseline['label']} | {backend.spec.label} | |difference| x {gain:.3g} "
               f"(max {top:.3g} VGG units){' — sample ' + str(sample) if x.shape[0] > 1 else ''}")
    return _picture(f"{stem}_strip", strip_rgb([input_rgb, base_rgb, mine_rgb, diff_rgb]), backend, "strip", caption)


def _stylized(output: np.ndarray, family) -> np.ndarray:
    """3 x H x W VGG-space output -> H x W x 3 uint8 as the family's script shows it; NaN/Inf drawn black."""
    from fileio.images import deprocess

    return deprocess(np.nan_to_num(output, nan=-1e3, posinf=-1e3, neginf=-1e3)[None], family)


def _family(report: DriftReport):
    from contract.families import FAMILIES, JOHNSON

    return FAMILIES.get(report.model.get("family", ""), JOHNSON)


def _picture(name: str, rgb: np.ndarray, backend: BackendDrift, kind: str, caption: str) -> Picture:
    return Picture(name, caption, png_bytes(rgb), rgb.shape[1], rgb.shape[0], backend.spec.label, kind)


def _uniform(diff: np.ndarray) -> str:
    finite = diff[np.isfinite(diff)]
    # Within one colour step of 256 the map looks flat: say so, or a white square looks like a bug.
    if finite.size and float(finite.max()) > 0 and float(finite.max() - finite.min()) <= float(finite.max()) / 256:
        return " (uniform: about the same difference everywhere, drawn white)"
    return ""


def _max(array: np.ndarray) -> float:
    finite = array[np.isfinite(array)]
    return float(finite.max()) if finite.size else 0.0


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
