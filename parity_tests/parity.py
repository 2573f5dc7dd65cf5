"""The one comparison helper of the suite: a backend's trace against the float64 reference, path by path.

Every end-to-end, layer-by-layer, property and mutation check goes through :func:`check_trace`:
the judge (NumPy reference, float64) runs the input, :mod:`harness.core.tolerance` turns its trace into
a per-path budget, the backend runs the same float32-representable input in the view asked for
("accumulated": end to end; "isolated": each module fed the judge's own input for it, so a local
deviation shows even after an upstream one), and :func:`harness.core.compare.compare` judges each path
with names that say which side is which. Tests are one line: ``assert_parity(...)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from fixtures import DEFAULT_IMAGE, DEFAULT_MODEL, ORACLE_NARROW_DIR
from harness.core.compare import Comparison, Tolerance, compare
from harness.core.judge import PathVerdict, judge_path
from harness.core.runs import cast_noise, forward, run_module
from harness.core.tolerance import instance_norm_statistics, layer_budgets, module_inputs, output_budget
from parity_tests.strategies import conv_module, full_conv_module, replication_pad_module, single_module_root
from t7file import T7Module, load_module_tree, trace_paths

JUDGE_NAME = "reference float64"
VIEWS = ("accumulated", "isolated")

# The two layouts of FACTS §1, as narrow (4/8/16) real-Torch7 files.
MODELS: dict[str, Path] = {
    "pretrained": DEFAULT_MODEL,
    "head": ORACLE_NARROW_DIR / "narrow_head_seed77.t7",
}


def _uniform(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


@cache
def photo(block: int = 4) -> np.ndarray:
    """fixtures.DEFAULT_IMAGE as 1 x 3 x H x W RGB in [0, 1] (like image.load(path, 3)), box-averaged by ``block``.

    256x256 -> 64x64 by default: still a natural image (smooth regions, edges, texture), at a size
    whose float64 trace costs well under a second.
    """
    from PIL import Image

    with Image.open(DEFAULT_IMAGE) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    height, width = (rgb.shape[0] // block) * block, (rgb.shape[1] // block) * block
    rgb = rgb[:height, :width].reshape(height // block, block, width // block, block, 3).mean(axis=(1, 3))
    return rgb.transpose(2, 0, 1)[None]


# Named inputs (N x 3 x H x W in [0, 1]). All are rounded to float32 first, so a float32 backend
# and the float64 judge see the same numbers.
INPUTS = {
    "random 32x32": lambda: _uniform(1, (1, 3, 32, 32)),
    "odd 37x29": lambda: _uniform(2, (1, 3, 37, 29)),
    "batch 2 24x20": lambda: _uniform(3, (2, 3, 24, 20)),
    "constant 0.6": lambda: np.full((1, 3, 24, 24), 0.6),
    "photo 64x64": photo,
}


@cache
def model_tree(layout: str) -> T7Module:
    return load_module_tree(MODELS[layout])


@cache
def input_array(name: str) -> np.ndarray:
    x = INPUTS[name]().astype(np.float32).astype(np.float64)
    x.setflags(write=False)
    return x


@dataclass(frozen=True)
class CheckId:
    """Which check: enough to say what killed a mutant."""

    case: str
    dtype: str
    view: str
    lua_path: str

    def __str__(self) -> str:
        return f"{self.case} {self.dtype} {self.view} @ {self.lua_path}"


@dataclass(frozen=True)
class PathResult:
    """One judged path of one check (harness.core.judge's verdict). A path the backend did not trace is
    "not compared" for drift; the suite's own backends must trace every path, so here it fails."""

    check: CheckId
    verdict: PathVerdict

    @property
    def comparison(self) -> Comparison:
        comparison = self.verdict.comparison
        if comparison is None:  # not compared / error: a failing comparison that says why
            return compare(np.full((0,), np.nan), np.zeros(1), Tolerance(0.0), actual_name="(no value)",
                           expected_name=JUDGE_NAME, where=f"{self.check}: {self.verdict.note}")
        return comparison

    @property
    def determined(self) -> bool:
        return self.verdict.determined

    def __bool__(self) -> bool:
        return self.verdict.status in ("pass", "undetermined")


def judge_trace(judge_runner, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return judge_runner.forward(np.asarray(x, dtype=np.float64), trace=True)


def check_trace(runner, root: T7Module, x: np.ndarray, reference_trace: dict[str, np.ndarray], *, dtype: str,
                view: str, case: str, backend_name: str, statistics: str = "float64",
                noise: dict[str, np.ndarray] | None = None) -> list[PathResult]:
    """Compare ``runner`` (a loaded backend) with the judge's trace at every traced Lua path, in order.

    ``statistics``: the backend's ``instance_norm_statistics`` (harness.core.tolerance.instance_norm_statistics);
    the default is Torch7's double sums, the strict model. ``noise``: what the model's noise modules
    draw (the judge's trace was made with the same arrays). Each path is judged by
    harness.core.judge, as drift judges it.
    """
    budgets = layer_budgets(root, x, reference_trace, dtype, view=view, statistics=statistics)
    paths = trace_paths(root)
    noise = cast_noise(noise, dtype)
    if view == "accumulated":
        output, trace = forward(runner, x.astype(dtype), trace=True, noise=noise)
    else:
        if not hasattr(runner, "run_module"):
            raise NotImplementedError(f"backend '{backend_name}' has no run_module: no isolated view")
        inputs = module_inputs(root, x, reference_trace)
        # Copies: a backend may run an in-place ReLU on the very array it is given (the judge's trace).
        trace = {path: run_module(runner, path, np.array(inputs[path], dtype=dtype), noise=noise) for path in paths}
    return judge_arrays(root, budgets, reference_trace, trace, output if view == "accumulated" else None,
                        view=view, case=case, name=f"{backend_name} {dtype}")


def judge_arrays(root: T7Module, budgets, reference_trace: dict[str, np.ndarray], trace: dict[str, np.ndarray],
                 output: np.ndarray | None, *, view: str, case: str, name: str) -> list[PathResult]:
    """Judge already computed arrays (a trace, and the output when given) path by path, in execution order."""
    dtype = next(iter(budgets.values())).dtype if budgets else "float64"
    results = []
    for path in trace_paths(root):
        budget = budgets[path]
        verdict = judge_path(path, trace.get(path), reference_trace[path], budget.tolerance(), budget.determined,
                             actual_name=name, expected_name=JUDGE_NAME,
                             where=f"{case}, {view}, Lua path {path} ({budget.torch_class})")
        results.append(PathResult(CheckId(case, dtype, view, path), verdict))
    if output is not None:  # the generator's output as forward returns it to a user
        budget = output_budget(root, budgets)
        verdict = judge_path("output", output, reference_trace[budget.lua_path], budget.tolerance(),
                             budget.determined, actual_name=name, expected_name=JUDGE_NAME,
                             where=f"{case}, generator output (forward)")
        results.append(PathResult(CheckId(case, dtype, view, "output"), verdict))
    return results


def failure_report(results: list[PathResult]) -> str:
    failed = [result for result in results if not result]
    first = failed[0]
    why = first.comparison
    lines = [f"{len(failed)} of {len(results)} Lua paths out of tolerance; first: {first.check}",
             why.message(),
             f"  failing paths: {', '.join(result.check.lua_path for result in failed[:20])}"
             + (" ..." if len(failed) > 20 else ""),
             "  next: `texture-nets drift` on this input shows the isolated view and the first divergence"]
    return "\n".join(lines)


def assert_parity(results: list[PathResult]) -> None:
    if not all(results):
        raise AssertionError(failure_report(results))


def first_failure(results: list[PathResult]) -> PathResult | None:
    return next((result for result in results if not result), None)


# -- fixed single-module cases: what the layouts' symmetric pads and square kernels cannot show ------------------


def _primitive_asymmetric_pad() -> tuple[T7Module, np.ndarray]:
    return single_module_root(replication_pad_module("1", 1, 3, 0, 2)), _uniform(11, (1, 2, 4, 5))


def _primitive_non_square_conv() -> tuple[T7Module, np.ndarray]:
    rng = np.random.default_rng(12)
    weight, bias = rng.uniform(-0.4, 0.4, (3, 2, 2, 3)), rng.uniform(-0.4, 0.4, 3)  # kH=2, kW=3
    return (single_module_root(conv_module("1", weight, bias, dW=2, dH=1, padW=1, padH=0)),
            rng.standard_normal((1, 2, 6, 7)))


def _primitive_full_conv_adj() -> tuple[T7Module, np.ndarray]:
    rng = np.random.default_rng(13)
    weight, bias = rng.uniform(-0.4, 0.4, (2, 3, 3, 3)), rng.uniform(-0.4, 0.4, 3)
    return (single_module_root(full_conv_module("1", weight, bias, dW=2, dH=2, padW=1, padH=1, adjW=1, adjH=0)),
            rng.standard_normal((1, 2, 4, 5)))


PRIMITIVES = {
    "asymmetric replication pad (1,3,0,2)": _primitive_asymmetric_pad,
    "conv kH=2 kW=3 dW=2 padW=1": _primitive_non_square_conv,
    "full conv k3 s2 p1 adjW=1 adjH=0": _primitive_full_conv_adj,
}


@cache
def primitive_case(name: str) -> tuple[T7Module, np.ndarray]:
    root, x = PRIMITIVES[name]()
    return root, x.astype(np.float32).astype(np.float64)


# The mutation battery: the checks of test_end_to_end, in order, cheapest and most telling first.
BATTERY_CASES: tuple[tuple[str, str], ...] = (
    ("pretrained", "random 32x32"),
    ("head", "random 32x32"),
    *(("primitive", name) for name in PRIMITIVES),
    ("pretrained", "batch 2 24x20"),
    ("head", "odd 37x29"),
)
DTYPES = ("float32", "float64")


def case_tree_and_input(kind: str, name: str) -> tuple[T7Module, np.ndarray, str]:
    """(root, x, case label) for a layout + named input, or a fixed primitive."""
    if kind == "primitive":
        root, x = primitive_case(name)
        return root, x, f"primitive {name}"
    return model_tree(kind), input_array(name), f"{kind} {name}"


def run_battery(backend, judge, cases=BATTERY_CASES) -> PathResult | None:
    """The first failing check of ``backend`` over the battery (None when all pass)."""
    for kind, name in cases:
        root, x, case = case_tree_and_input(kind, name)
        _, reference_trace = judge_trace(judge.load(root, "float64"), x)
        for dtype in DTYPES:
            runner = backend.load(root, dtype)
            for view in VIEWS:
                failure = first_failure(check_trace(runner, root, x, reference_trace, dtype=dtype, view=view,
                                                    case=case, backend_name=backend.name,
                                                    statistics=instance_norm_statistics(backend)))
                if failure is not None:
                    return failure
    # A port's image output goes through fileio.images.deprocess; a mutant backend patches it
    # only inside its own context, so the known answers run there.
    with getattr(backend, "context", contextlib.nullcontext)():
        return first_failure(deprocess_results())


# -- deprocess: the I/O contract (FACTS §2), by known answers --------------------------------------------------

# texture_nets src/utils.lua: the VGG mean pixel, in the output's channel order (B, G, R). Written here
# from FACTS §2, independently of fileio.images, so a wrong constant there shows.
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def _vgg_space_of(rgb8: np.ndarray) -> np.ndarray:
    """The generator output that deprocesses to ``rgb8`` (H x W x 3 bytes): mid-bin values, BGR, mean removed."""
    bgr = (rgb8.astype(np.float64) + 0.5)[..., ::-1]
    return (bgr - VGG_MEAN_BGR).transpose(2, 0, 1)


# An image using every byte value in R and G (B constant), subsampled: 16 x 37 pixels.
_BYTES = np.stack([*np.meshgrid(np.arange(256), np.arange(256)[::-1], indexing="xy"),
                   np.full((256, 256), 77)], axis=-1)[::16, ::7]
DEPROCESS_CASES = {
    # pure red: R = 255 - 123.68 after the mean, B and G at minus their means
    "pure red pixel": (np.array([[[-103.939]], [[-116.779]], [[255.0 - 123.68]]]), np.array([[[255, 0, 0]]])),
    "black pixel (the mean itself)": (-VGG_MEAN_BGR.reshape(3, 1, 1), np.array([[[0, 0, 0]]])),
    "clamped pixel": (np.array([[[1e4]], [[-1e4]], [[0.0]]]), np.array([[[123, 0, 255]]])),
    "every byte, each channel different": (_vgg_space_of(_BYTES), _BYTES),
}


def deprocess_results() -> list[PathResult]:
    """fileio.images.deprocess on outputs whose images are known exactly (looked up at call time)."""
    from fileio import images

    results = []
    for name, (output, expected) in DEPROCESS_CASES.items():
        image = np.asarray(images.deprocess(output))
        comparison = compare(image.astype(np.float64), expected.astype(np.float64),
                             Tolerance(0.0, why="known answer, docs/torch7-semantics.md (I/O contract)"),
                             actual_name="fileio.images.deprocess", expected_name="known image",
                             where=f"deprocess: {name}")
        verdict = PathVerdict(name, "pass" if comparison.passed else "fail", comparison)
        results.append(PathResult(CheckId("deprocess", "uint8", "image", name), verdict))
    return results
