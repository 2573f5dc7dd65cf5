"""Pictures of a drift report: |difference| heatmaps with a labelled colour scale, and side-by-side strips.

* heatmap: one block per element of the compared tensor (H x W, the maximum over channels of
  |backend - baseline| for the sample holding the worst element), scaled up to about 256 px, with a
  colour bar on the right. The scale is fixed and logarithmic, anchored at the layer's tolerance
  (the absolute error the tolerance model allows there): black at 1e-3 x tolerance and below, blues up
  to the tolerance, then red -> orange -> yellow up to 1e5 x tolerance and beyond. The same
  colour means the same multiple of the tolerance in every picture, so a 3e-6 rounding map looks
  dark blue and a 1.35 error map bright, never both "full scale". The bar's ticks are labelled
  relative to the tolerance and in absolute units; triangles mark the map's smallest and largest
  values. NaN/Inf are drawn magenta. A uniform map is drawn at its level and labelled "uniform".
  One for the output of each backend and one for each of its leading divergent layers.
* strip: input | baseline's stylized image | backend's stylized image | amplified difference,
  like the seed's example.jpg triple; panels of equal size separated by GAP pixels. Stylized
  images are deprocessed as test.lua saves them (fileio.images.deprocess); the
  difference is |backend - baseline| of the raw output, RGB, multiplied by ``gain`` so that the
  largest difference is full scale (the caption says by how much).

A view of :class:`harness.drift.analysis.DriftReport`: nothing here is computed from the models.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import numpy as np

from harness.core.compare import Comparison
from harness.drift.analysis import BackendDrift, Divergence, DriftReport, LayerResult, difference_map

GAP = 4
BACKGROUND = 128
# The fixed scale: decades of |difference| / tolerance shown below and above the tolerance.
DECADES_BELOW = 3
DECADES_ABOVE = 5  # a wrong layer sits 1e3..1e5 x its tolerance (a dropped bias, a shifted window)
# Colour anchors (position on the bar in [0, 1] -> RGB): blues below the tolerance, then red -> orange ->
# yellow. No white anywhere, so no map can look like a blank square.
_AT_TOLERANCE = DECADES_BELOW / (DECADES_BELOW + DECADES_ABOVE)
_ANCHORS = np.array([0.0, _AT_TOLERANCE / 2, _AT_TOLERANCE, _AT_TOLERANCE + 1e-9, 0.7, 1.0])
_COLOURS = np.array([[0, 0, 0], [20, 45, 110], [110, 165, 230], [190, 25, 25], [245, 135, 20], [255, 235, 50]],
                    dtype=np.float64)
_NONFINITE = np.array([255, 0, 255], dtype=np.uint8)
# A map whose values spread by less than this fraction of its largest is "uniform".
UNIFORM_SPREAD = 0.01
MAP_DISPLAY = 256  # small maps are scaled up by whole blocks to about this many pixels
BAR_WIDTH = 16
PANEL_MIN_HEIGHT = 200


@dataclass(frozen=True)
class Picture:
    """One PNG: a file-name-safe ``name``, a one-line ``caption``, its ``png`` bytes and its size.

    ``map_width`` x ``map_height``: for heatmaps, the size of the difference map in elements (the PNG is
    scaled up and carries a colour bar); for strips the PNG's own size."""

    name: str
    caption: str
    png: bytes
    width: int
    height: int
    backend: str
    kind: str  # "heatmap-output", "heatmap-layer", "strip"
    map_width: int = 0
    map_height: int = 0


def scale_position(values: np.ndarray, tolerance: float) -> np.ndarray:
    """Where |difference| values sit on the fixed bar, in [0, 1]: log10(value / tolerance) over the shown decades."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        decades = np.log10(values / tolerance)
    position = (decades + DECADES_BELOW) / (DECADES_BELOW + DECADES_ABOVE)
    return np.clip(np.nan_to_num(position, nan=0.0, neginf=0.0, posinf=1.0), 0.0, 1.0)


def colours(position: np.ndarray) -> np.ndarray:
    """Positions on the bar in [0, 1] -> RGB uint8."""
    rgb = np.stack([np.interp(position, _ANCHORS, _COLOURS[:, k]) for k in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def heatmap_rgb(diff: np.ndarray, tolerance: float) -> np.ndarray:
    """H x W |difference| -> H x W x 3 uint8 on the fixed log scale anchored at ``tolerance`` (absolute units)."""
    diff = np.asarray(diff, dtype=np.float64)
    finite = np.isfinite(diff)
    rgb = colours(scale_position(np.where(finite, diff, 0.0), _anchor(tolerance, diff)))
    rgb[~finite] = _NONFINITE
    return rgb


def heatmap_picture(diff: np.ndarray, tolerance: float) -> np.ndarray:
    """The heatmap scaled up by whole blocks, with the labelled colour bar on its right (H' x W' x 3 uint8)."""
    from PIL import Image, ImageDraw, ImageFont

    diff = np.asarray(diff, dtype=np.float64)
    tolerance = _anchor(tolerance, diff)
    h, w = diff.shape
    zoom = max(1, MAP_DISPLAY // max(h, w, 1))
    block = np.repeat(np.repeat(heatmap_rgb(diff, tolerance), zoom, axis=0), zoom, axis=1)
    font = ImageFont.load_default()
    labels = [(k, _tick_label(k, tolerance)) for k in range(-DECADES_BELOW, DECADES_ABOVE + 1)]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max(probe.textbbox((0, 0), text, font=font)[2] for _, text in labels)
    top, bottom, footer = 18, 8, 16
    height = max(block.shape[0] + footer, PANEL_MIN_HEIGHT)
    bar_height = height - top - bottom
    left = block.shape[1] + 12
    width = left + BAR_WIDTH + 10 + label_width + 8
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(Image.fromarray(np.ascontiguousarray(block)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    # The bar: top = 1e3 x tolerance, bottom = 1e-3 x tolerance.
    ramp = colours(np.linspace(1.0, 0.0, bar_height))
    bar = np.repeat(ramp[:, None, :], BAR_WIDTH, axis=1)
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), (left, top))
    draw.rectangle([left - 1, top - 1, left + BAR_WIDTH, top + bar_height], outline=(90, 90, 90))
    draw.text((left - 2, 2), "|diff| vs tolerance", fill=(40, 40, 40), font=font)

    def y_of(position: float) -> int:
        return top + round((1.0 - position) * (bar_height - 1))

    for decade, text in labels:
        y = y_of((decade + DECADES_BELOW) / (DECADES_BELOW + DECADES_ABOVE))
        draw.line([left + BAR_WIDTH, y, left + BAR_WIDTH + 5, y], fill=(0, 0, 0), width=2 if decade == 0 else 1)
        draw.text((left + BAR_WIDTH + 8, y - 6), text, fill=(0, 0, 0), font=font)
    finite = diff[np.isfinite(diff)]
    if finite.size:
        low, high = (float(v) for v in scale_position(np.array([finite.min(), finite.max()]), tolerance))
        for position in dict.fromkeys((low, high)):  # triangles pointing at the bar: the map's range
            y = y_of(position)
            draw.polygon([(left - 2, y), (left - 9, y - 4), (left - 9, y + 4)], fill=(0, 0, 0))
        summary = f"max {finite.max():.2g} = {finite.max() / tolerance:.2g} x tol"
        if is_uniform(diff):
            summary += ", uniform"
        draw.text((2, block.shape[0] + 2), summary, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def is_uniform(diff: np.ndarray) -> bool:
    """About the same |difference| everywhere (a constant offset, say): nonzero, finite, spread under 1 %."""
    diff = np.asarray(diff, dtype=np.float64)
    if not np.isfinite(diff).all() or diff.size < 2:
        return False
    top = float(diff.max())
    return top > 0 and float(top - diff.min()) <= UNIFORM_SPREAD * top


def _anchor(tolerance: float, diff: np.ndarray) -> float:
    """The tolerance to anchor the scale at; without a usable one, the map's largest finite value."""
    if tolerance > 0 and math.isfinite(tolerance):
        return float(tolerance)
    finite = np.asarray(diff, dtype=np.float64)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    return float(finite.max()) if finite.size else 1.0


def _tick_label(decade: int, tolerance: float) -> str:
    relative = "tolerance" if decade == 0 else f"1e{decade:+d} tol"
    return f"{relative} = {tolerance * 10.0 ** decade:.2g}"


def tolerance_of(comparison: Comparison | None, scale: float | None = None) -> float:
    """The absolute error the comparison allowed (atol + rtol x scale), NaN when there is none. ``scale``: the
    baseline's scale, for comparisons without statistics (a shape mismatch)."""
    if comparison is None:
        return math.nan
    if scale is None or not math.isfinite(scale):
        scale = comparison.scale
    if not math.isfinite(scale):
        return math.nan
    return comparison.tolerance_atol + comparison.tolerance_rtol * scale


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
        tolerance = tolerance_of(backend.output.comparison)
        pictures.append(_heatmap(f"{stem}_output_heatmap", diff, tolerance, backend, "heatmap-output",
                                 f"{backend.spec.label}: |output - baseline|, max over channels"))
    roles = [(backend.lead, "biggest finding"), (backend.first_divergence, "first divergence"),
             (backend.first_divergence_reaching_output, "first divergence reaching the output")]
    shown: dict[str, list[str]] = {}
    for divergence, role in roles:
        if divergence is not None:
            shown.setdefault(divergence.lua_path, []).append(role)
    for path, names in shown.items():
        diff = backend.arrays.get(f"diff/{path}")
        if diff is None:
            continue
        divergence = next(d for d in backend.divergences if d.lua_path == path)
        tolerance = tolerance_of(_layer_comparison(backend, divergence), report.layer(path).scale)
        pictures.append(_heatmap(
            f"{stem}_layer_{safe_name(path)}_heatmap", diff, tolerance, backend, "heatmap-layer",
            f"{backend.spec.label}: {' and '.join(names)}, Lua path {path} ({divergence.torch_class}, "
            f"{divergence.view} view): |difference|"))
    if output is not None:
        pictures.append(_strip(report, backend, np.asarray(output, dtype=np.float64), stem))
    return pictures


def _layer_comparison(backend: BackendDrift, divergence: Divergence) -> Comparison | None:
    results: list[LayerResult] = (backend.isolated if divergence.view == "isolated" else backend.accumulated) or []
    return next((r.comparison for r in results if r.lua_path == divergence.lua_path), None)


def _heatmap(name: str, diff: np.ndarray, tolerance: float, backend: BackendDrift, kind: str, what: str) -> Picture:
    rgb = heatmap_picture(diff, tolerance)
    top = _max(diff)
    anchored = tolerance > 0 and math.isfinite(tolerance)
    if anchored:
        scale = (f"log scale anchored at the tolerance {tolerance:.2g} (1e-{DECADES_BELOW} to 1e+{DECADES_ABOVE} x), "
                 f"max {top:.3g} = {top / tolerance:.3g} x tolerance")
    else:
        scale = f"log scale anchored at the map's max {top:.3g} (no tolerance for this comparison)"
    if is_uniform(diff):
        scale += f"; uniform: about {top:.3g} everywhere"
    caption = f"{what}, {scale}, VGG units"
    return Picture(name, caption, png_bytes(rgb), rgb.shape[1], rgb.shape[0], backend.spec.label, kind,
                   map_width=int(diff.shape[1]), map_height=int(diff.shape[0]))


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
    return Picture(name, caption, png_bytes(rgb), rgb.shape[1], rgb.shape[0], backend.spec.label, kind,
                   map_width=rgb.shape[1], map_height=rgb.shape[0])


def _max(array: np.ndarray) -> float:
    finite = array[np.isfinite(array)]
    return float(finite.max()) if finite.size else 0.0


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
