"""Will this run fit in memory? An estimate before any work, and one line when it will not.

    check_memory(root, ["reference"], "float32", (1, 3, 20000, 20000), what="--image-size 20000")
    # UserError: --image-size 20000 needs about 95 GiB (reference float32, 1x3x20000x20000) but this machine has
    #            21.9 GiB available (MemAvailable); the largest that fits is about 9500x9500 (--image-size 9500)

The estimate is the peak resident memory of the whole process: a fixed part (the interpreter, the
framework, the model) plus, per backend, a measured number of bytes of peak memory per byte of
activations. "Activations" is the sum, over every module of the model, of its output's size in the
run's dtype for this input (harness.core.shapes.walk_shapes: no forward pass is run). A traced run
keeps every module's output, so its factor is larger. Both numbers come from the measurement below:
each backend, dtype and trace mode run once at two sizes in a fresh process (``python -m
scripts/measure_memory.py``), peak RSS read from ``ru_maxrss``, and the line through the two
points gives the fixed part (intercept) and the factor (slope). A safety margin of MARGIN covers
other machines' allocators and thread counts.

What the machine has: ``MemAvailable`` from /proc/meminfo, capped by a cgroup's memory limit when one
is set (v2 ``memory.max``, v1 ``memory.limit_in_bytes``, minus what the group already uses, not
counting reclaimable page cache), plus what this process already holds (it is part of the peak).

Commands call :func:`check_memory` with the input shape before they read or allocate the input.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fileio.errors import UserError
from harness.core.shapes import ShapeError, walk_shapes
from t7file import T7Module

GIB = 2**30
ITEMSIZE = {"float32": 4, "float64": 8}
# Peak RSS = FIXED + FACTOR x activation bytes, per (backend, dtype, traced). Measured on this project's
# 2-core AMD EPYC VM (Linux, numpy 2.4.6 + OpenBLAS, torch 2.13.0, tensorflow-cpu 2.21.0, onnxruntime
# 1.32.0), bundled narrow pretrained model, 1x3xSxS random input, S = 512 and 1024, one fresh process each
# (python -m scripts/measure_memory.py, whose output lines are pasted below as they came). Each entry:
# (backend, dtype, traced): (fixed MiB, factor), with the two peaks and activation sizes it was fitted to.
# The untraced factors (0.15-0.36; TF Lite 1.07, torch float64 2.26) say how much of the activations a run
# holds at once; traced runs keep them all (0.88-1.08; TF Lite 2.66). Measured 2026-12-01 with the command's
# malloc policy (harness/core/malloc.py), after the torch and TF Lite changes of docs/benchmarks.md.
MEASURED: dict[tuple[str, str, bool], tuple[float, float]] = {
    ('reference', 'float32', False): (40, 0.35),  # RSS 80 / 200 MiB, activations 113.4 / 452.9 MiB
    ('reference', 'float32', True): (43, 1.06),  # RSS 164 / 525 MiB, activations 113.4 / 452.9 MiB
    ('reference', 'float64', False): (43, 0.35),  # RSS 124 / 364 MiB, activations 226.9 / 905.8 MiB
    ('reference', 'float64', True): (48, 1.08),  # RSS 292 / 1023 MiB, activations 226.9 / 905.8 MiB
    ('torch', 'float32', False): (255, 0.15),  # RSS 272 / 323 MiB, activations 113.4 / 452.9 MiB
    ('torch', 'float32', True): (243, 0.88),  # RSS 343 / 640 MiB, activations 113.4 / 452.9 MiB
    ('torch', 'float64', False): (235, 2.26),  # RSS 747 / 2279 MiB, activations 226.9 / 905.8 MiB
    ('torch', 'float64', True): (235, 2.26),  # RSS 747 / 2279 MiB, activations 226.9 / 905.8 MiB
    ('tf', 'float32', False): (533, 0.25),  # RSS 562 / 647 MiB, activations 113.4 / 452.9 MiB
    ('tf', 'float32', True): (536, 0.96),  # RSS 645 / 970 MiB, activations 113.4 / 452.9 MiB
    ('tf', 'float64', False): (545, 0.27),  # RSS 606 / 788 MiB, activations 226.9 / 905.8 MiB
    ('tf', 'float64', True): (537, 0.93),  # RSS 747 / 1377 MiB, activations 226.9 / 905.8 MiB
    ('tf-seed', 'float32', False): (529, 0.25),  # RSS 556 / 640 MiB, activations 113.4 / 452.9 MiB
    ('tf-seed', 'float32', True): (530, 0.95),  # RSS 638 / 959 MiB, activations 113.4 / 452.9 MiB
    ('tflite', 'float32', False): (632, 1.07),  # RSS 754 / 1118 MiB, activations 113.4 / 452.9 MiB
    ('tflite', 'float32', True): (624, 2.66),  # RSS 926 / 1830 MiB, activations 113.4 / 452.9 MiB
    ('onnx', 'float32', False): (305, 0.36),  # RSS 346 / 469 MiB, activations 113.4 / 452.9 MiB
    ('onnx', 'float32', True): (309, 1.07),  # RSS 430 / 792 MiB, activations 113.4 / 452.9 MiB
}
# Backends not measured (plug-ins, module:factory specs): the most demanding measured factor, so an
# unknown port is never estimated to need less than a known one.
MARGIN = 1.25
CGROUP_UNLIMITED = 2**60
# Reading a picture for a forward pass (fileio.images.load_image: decode, torch/image's float32 scale, the float64
# array, the cast to the run's dtype) and writing the result: bytes per pixel of the picture fed to the model.
# Measured: `texture-nets stylize --image-size N` (reference float32) peaks at 734 MiB at N = 2048 and 2799 MiB at
# N = 4096, 172 bytes per added pixel, of which the forward pass above accounts for 0.32 x 452 = 145.
IMAGE_BYTES_PER_PIXEL = 28
# A drift run also holds the float64 baseline's trace, every module's input and the tolerance budgets while each
# backend runs traced: bytes per byte of float64 activations. Measured: `texture-nets drift --backends
# reference-float32 --image-size N` peaks at 370 MiB (N = 512) and 1328 MiB (N = 1024); less the traced
# reference float32 run (MEASURED), 0.89 x the float64 activations at both sizes.
BASELINE_FACTOR = 0.89


@dataclass(frozen=True)
class Estimate:
    """What a run needs: ``bytes`` (peak RSS), and how it was arrived at (``detail``, one clause)."""

    bytes: int
    detail: str


def activation_bytes(root: T7Module, input_shape: Sequence[int], dtype: str) -> int:
    """Bytes of every module's output (and the input) for one forward pass of ``input_shape``."""
    walk = walk_shapes(root, tuple(int(d) for d in input_shape))
    elements = math.prod(input_shape) + sum(math.prod(shape) for shape in walk.outputs.values())
    return elements * ITEMSIZE[dtype]


def coefficients(backend: str, dtype: str, traced: bool) -> tuple[float, float]:
    """(fixed MiB, factor) for a backend; an unmeasured one gets the largest measured of each."""
    key = (backend, dtype, traced)
    if key in MEASURED:
        return MEASURED[key]
    same_mode = [value for (_, d, t), value in MEASURED.items() if t == traced and d == dtype] or list(
        MEASURED.values()) or [(1024.0, 8.0)]
    return max(fixed for fixed, _ in same_mode), max(factor for _, factor in same_mode)


def image_bytes(height: int, width: int, batch: int = 1) -> int:
    """What reading and writing pictures of this size adds to a run (IMAGE_BYTES_PER_PIXEL): pass it as
    ``extra_bytes`` when the input comes from an image file."""
    return IMAGE_BYTES_PER_PIXEL * batch * height * width


def estimate(root: T7Module, backends: Sequence[str], dtype: str, input_shape: Sequence[int], *,
             traced: bool = False, baseline: bool = False, extra_bytes: int = 0) -> Estimate:
    """Peak RSS of running each backend in ``backends`` (one at a time, in one process) on ``input_shape``.

    ``traced``: the backends keep every module's output (run --trace, drift). ``baseline``: a drift run, which
    also keeps the float64 reference's trace and every module's input while the backends run. ``extra_bytes``:
    what the command holds besides (:func:`image_bytes` for a picture input).
    """
    needs = []
    for name in dict.fromkeys(backends):
        fixed, factor = coefficients(name, dtype, traced)
        needs.append((fixed * 2**20 + factor * activation_bytes(root, input_shape, dtype), name))
    peak, heaviest = max(needs)
    if baseline:
        peak += BASELINE_FACTOR * activation_bytes(root, input_shape, "float64")
    total = int((peak + extra_bytes) * MARGIN)
    mode = "traced" if traced else "untraced"
    return Estimate(total, f"{heaviest} {dtype}, {mode}, {'x'.join(map(str, input_shape))}")


def available_bytes() -> tuple[int, str]:
    """(bytes this process can still grow to, where that number comes from)."""
    available, source = _meminfo_available(), "MemAvailable"
    limit = _cgroup_room()
    if limit is not None and (available is None or limit < available):
        available, source = limit, "the cgroup's memory limit"
    if available is None:
        return 0, "unknown"
    return available + _current_rss(), source


def check_memory(root: T7Module, backends: Sequence[str], dtype: str, input_shape: Sequence[int], *,
                 traced: bool = False, baseline: bool = False, image: bool = False, what: str | None = None,
                 size_option: str | None = "--image-size") -> Estimate:
    """Raise UserError with one line when the run would not fit: the need, what the machine has, and the
    largest square size that fits (as ``size_option N`` when given). Returns the estimate otherwise.

    Call it before reading or allocating the input. An input size the model cannot take is left to the
    run's own error (ShapeError is not raised here). ``image``: the input is read from a picture (adds
    :func:`image_bytes`).
    """
    have, source = available_bytes()
    n, _, h, w = (int(d) for d in input_shape)
    try:
        need = estimate(root, backends, dtype, input_shape, traced=traced, baseline=baseline,
                        extra_bytes=image_bytes(h, w, n) if image else 0)
    except ShapeError:
        return Estimate(0, "shape not accepted")
    if have <= 0 or need.bytes <= have:
        return need
    batch, planes = int(input_shape[0]), int(input_shape[1])
    fits = largest_square(root, backends, dtype, batch, planes, have, traced=traced, baseline=baseline,
                          image=image)
    label = what or f"a {'x'.join(map(str, input_shape))} input"
    if fits:
        hint = f"; the largest square size that fits is about {fits}x{fits}" + (
            f" ({size_option} {fits})" if size_option else "")
    else:
        hint = "; not even a small input fits: free some memory"
    raise UserError(f"{label} needs about {_gib(need.bytes)} of memory ({need.detail}) but this machine has "
                    f"{_gib(have)} available ({source}){hint}")


def largest_square(root: T7Module, backends: Sequence[str], dtype: str, batch: int, planes: int, have: int, *,
                   traced: bool = False, baseline: bool = False, image: bool = False) -> int | None:
    """The largest S (to 2 significant digits) whose batch x planes x S x S estimate fits in ``have`` bytes."""

    def fits(size: int) -> bool:
        try:
            return estimate(root, backends, dtype, (batch, planes, size, size), traced=traced, baseline=baseline,
                            extra_bytes=image_bytes(size, size, batch) if image else 0).bytes <= have
        except ShapeError:
            return False

    low, high = 16, 16
    if not fits(low):
        return None
    while fits(high * 2) and high < 2**20:
        high *= 2
    high *= 2
    while high - low > 1:
        middle = (low + high) // 2
        # The shape walk refuses some sizes (a pyramid's Concats): try a few neighbours before deciding.
        if any(fits(size) for size in range(middle, min(middle + 32, high))):
            low = middle
        else:
            high = middle
    while low > 16 and not fits(low):
        low -= 1
    digits = 10 ** max(0, len(str(low)) - 2)
    rounded = low // digits * digits
    return rounded if rounded >= 16 and fits(rounded) else low


# -- what the machine has --------------------------------------------------------------------------------------


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Limit minus usage (reclaimable page cache not counted as used) of this process's memory cgroup, or None."""
    for limit_file, usage_file, stat_file, cache_key in (
            (root / "memory.max", root / "memory.current", root / "memory.stat", "inactive_file"),
            (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes",
             root / "memory" / "memory.stat", "total_inactive_file")):
        try:
            text = limit_file.read_text().strip()
            if text == "max" or int(text) >= CGROUP_UNLIMITED:
                return None
            limit, usage = int(text), int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue
        cache = 0
        try:
            for line in stat_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return max(0, limit - usage + cache)
    return None


def _current_rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB" if value >= GIB else f"{value / 2**20:.0f} MiB"
