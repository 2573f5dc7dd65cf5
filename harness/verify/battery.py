"""The fixed battery ``texture-nets verify`` runs a port through.

Two kinds of case:

* **Torch7 cases**: a forward run of the original Lua Torch7 (the committed narrow runs; with
  ../shared, the full-width johnson runs and the real v1-era models' runs), replayed with its own
  input, batch-norm mode and noise. The port is compared with Torch7 itself at the output, and
  Torch7 float32's own rounding is measured against the float64 reference on the same input.
* **reference cases**: what Torch7 runs do not cover: the real photo, odd and non-square sizes,
  batch 2 (which couples the samples of a batch-statistics net), the real models of every family at
  other sizes. The float64 reference judges them; the float32 reference stands in for Torch7's
  float32 rounding.

Both layouts, odd sizes, batch 2 and a real photo are always in; the real models join when the
files are on this machine (``zoo``; no download during a verification).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.core.oracle import OracleRun, runs_in

# Parsed module trees kept per process: a battery reads the same few files once per case and several times
# within one (the full battery parsed them 88 times, 12.5 s of 72; docs/benchmarks.md).
TREE_CACHE_SIZE = 8


@dataclass(frozen=True)
class Case:
    """One verification case: a model, the exact input of its forward, and how its noise is made."""

    name: str
    model: Path
    x: np.ndarray = field(repr=False)
    dtype: str = "float32"
    seed: int = 0
    noise: dict[str, np.ndarray] | None = field(default=None, repr=False)
    batchnorm: str | None = None
    truth: OracleRun | None = field(default=None, repr=False)
    family: str = ""
    description: str = ""

    @property
    def kind(self) -> str:
        return "Torch7" if self.truth is not None else "reference"


@dataclass(frozen=True)
class Skipped:
    """A case of the battery that could not be set up on this machine (a model file is missing)."""

    name: str
    reason: str


def module_tree(path: str | Path):
    """``t7file.load_module_tree(path)``, parsed once per file version (path, size and modification time).

    The tree is shared: callers read it and never change it (as every user of a T7Module does)."""
    try:
        resolved = Path(path).resolve()
        stat = resolved.stat()
    except OSError:  # not cached: the reader says what is wrong, as it always did
        from t7file import load_module_tree

        return load_module_tree(path)
    return _parsed_tree(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=TREE_CACHE_SIZE)
def _parsed_tree(path: str, size: int, mtime_ns: int):
    from t7file import load_module_tree

    return load_module_tree(path)


def torch7_cases(folders: list[Path]) -> list[Case]:
    """Every Torch7 forward run in ``folders`` (missing folders are skipped)."""
    cases = []
    for folder in folders:
        for run in runs_in(folder):
            shape = "x".join(str(d) for d in run.input.shape)
            cases.append(Case(f"{run.name}", run.model_path, run.input, run.dtype, noise=run.noise or None,
                              batchnorm=run.batchnorm, truth=run, family=run.meta.get("family", run.layout),
                              description=f"Torch7 run, {run.layout}, input {shape}, {run.dtype}"))
    return cases


def reference_cases(photo: np.ndarray, default_model: Path, head_model: Path) -> tuple[list[Case], list[Skipped]]:
    """The cases Torch7 runs do not cover, judged by the float64 reference. ``photo``: 1 x 3 x H x W RGB."""
    from contract.families import image_to_input
    from fileio.errors import UserError
    from zoo import resolve_model

    def crop(h: int, w: int) -> np.ndarray:
        return np.ascontiguousarray(photo[:, :, :h, :w])

    pair = np.concatenate([crop(64, 96), crop(64, 96)[:, :, ::-1, ::-1]], axis=0)  # batch 2, two different images
    cases = [
        Case("johnson pretrained, photo 128x128", default_model, crop(128, 128), family="johnson",
             description="narrow 2016 layout on the bundled photo"),
        Case("johnson head, photo 61x83 (odd)", head_model, crop(61, 83), family="johnson",
             description="narrow head layout, odd non-square size"),
        Case("johnson pretrained, batch 2 64x96", default_model, pair, family="johnson",
             description="two different images in one batch"),
    ]
    skipped = []
    real = [("starry", "photo 64x96", lambda family: image_to_input(crop(64, 96), family)),
            ("starry", "batch 2 64x96", lambda family: image_to_input(pair, family)),
            ("mosaic", "photo 96x64", lambda family: image_to_input(crop(96, 64), family)),
            ("pebble", "batch 2 64x96, seed 1", lambda family: np.zeros((2, 3, 64, 96))),
            ("bricks", "96x64", lambda family: np.zeros((1, 3, 96, 64))),
            ("demos-starry", "photo 64x96", lambda family: image_to_input(crop(64, 96), family)),
            ("doodle-starry-night", "4-colour mask 64x64", None)]
    for name, what, make in real:
        try:
            path = resolve_model(name, download=False)
        except UserError as error:
            skipped.append(Skipped(f"{name}, {what}", f"model file not on this machine ({error})"))
            continue
        from contract.families import detect_family

        family = detect_family(module_tree(path))
        x = doodle_mask_input(path, 64, 64) if make is None else make(family)
        cases.append(Case(f"{name}, {what}", path, x, seed=1 if "seed 1" in what else 0, family=family.name,
                          description=f"real model ({family.title})"))
    return cases, skipped


def doodle_mask_input(model: Path, height: int, width: int) -> np.ndarray:
    """A doodle net's input: a mask of its palette's colours in four quarters, mapped as apply.py does."""
    from contract.families import mask_to_input
    from zoo import entry_named

    entry = entry_named(model.name)
    palette = entry.palette if entry is not None and entry.palette else ((0, 0, 255), (255, 0, 0), (0, 255, 0),
                                                                            (255, 255, 255))
    x, _ = mask_to_input(_quarter_mask(palette, height, width), len(palette), np.asarray(palette, dtype=float))
    return x


def _quarter_mask(palette, height: int, width: int) -> np.ndarray:
    colours = np.asarray(palette, dtype=np.float64) / 255.0
    mask = np.empty((1, 3, height, width))
    for index, (top, left) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        h0, w0 = top * height // 2, left * width // 2
        mask[0, :, h0:h0 + height // 2, w0:w0 + width // 2] = colours[index][:, None, None]
    return mask
