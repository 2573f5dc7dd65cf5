"""The one comparison helper of the suite: a backend's trace against the float64 reference, path by path.

Every end-to-end, layer-by-layer, property and mutation check goes through :func:`check_trace`:
the judge (NumPy reference, float64) runs the input, :mod:`harness.core.tolerance` turns its trace into
a per-path budget, the backend runs the same float32-representable input in the view asked for
("accumulated": end to end; "isolated": each module fed the judge's own input for it, so a local
deviation shows even after an upstream one), and :func:`harness.core.compare.compare` judges each path
with names that say which side is which. Tests are one line: ``assert_matches_reference(...)`` (or
``assert_parity(check_trace(...))`` when the runner is already loaded).

Also here, so that there is one way to do each:

* :func:`module_root`: a module (or a few) wrapped in a root ``nn.Sequential`` at Lua paths "1", "2", ...,
  optionally written as a real Torch7 file and read back (shared parameter storages included);
* the fixed primitive cases (:data:`PRIMITIVES`) and the mutation battery (:func:`run_battery`), whose
  stages run in the order the suite runs the same checks (parity_tests/conftest.py orders the suite);
* :func:`failure_report`: the first failing path, its Lua path and class, and what to run next.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from fixtures import DEFAULT_IMAGE, DEFAULT_MODEL, ORACLE_NARROW_DIR
from harness.core.compare import Comparison, Tolerance, compare
from harness.core.judge import PathVerdict, error_verdict, judge_path
from harness.core.runs import cast_noise, forward, judge_float32_rounding, load_runner, run_module
from harness.core.tolerance import (
    ceiling_applies,
    instance_norm_statistics,
    layer_budgets,
    module_inputs,
    output_budget,
)
from t7file import T7Module, load_module_tree, trace_paths
from t7file.tree import TensorStorage
from t7file.writer import Storage, TensorView, TorchObject, dumps_t7

JUDGE_NAME = "reference float64"
VIEWS = ("isolated", "accumulated")  # the module alone first: it names the layer; then end to end
DTYPES = ("float32", "float64")

# The two layouts of the johnson generator (docs/torch7-semantics.md), as narrow (4/8/16) real-Torch7 files.
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


def upscaled_photo(source: int, size: int) -> np.ndarray:
    """fixtures.DEFAULT_IMAGE shrunk to source², saved as 8-bit and read back at size² the way `--image-size` reads
    a picture: a smooth input (docs/tolerances.md, "Smooth pictures"). 1 x 3 x size x size float64 in [0, 1]."""
    import tempfile

    from PIL import Image

    from fileio.images import load_image

    small = load_image(DEFAULT_IMAGE, source)[0].transpose(1, 2, 0)
    with tempfile.TemporaryDirectory(prefix="texture-nets-upscaled-") as folder:
        path = Path(folder) / f"photo_{source}.png"
        Image.fromarray((np.clip(small, 0.0, 1.0) * 255).round().astype(np.uint8)).save(path)
        return load_image(path, size)


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


def f32(array: np.ndarray) -> np.ndarray:
    """float32-representable float64: what a float32 backend and the float64 judge both see exactly."""
    return np.asarray(array, dtype=np.float32).astype(np.float64)


@cache
def input_array(name: str) -> np.ndarray:
    x = f32(INPUTS[name]())
    x.setflags(write=False)
    return x


# -- one module in a root ---------------------------------------------------------------------------------------


ModuleSpec = T7Module | tuple[str, Mapping[str, Any]]


def module_root(*modules: ModuleSpec, as_file: bool = False) -> T7Module:
    """The suite's one way to make a model of a few modules: a root ``nn.Sequential`` holding ``modules`` at Lua
    paths "1", "2", ... (each a ``T7Module``, built at any path and renamed here with its subtree, or a
    ``(torch_class, fields)`` pair).

    ``as_file``: write the tree as a Torch7 binary file (t7file.writer) and read it back
    (``load_module_tree`` on the bytes), so the backends get exactly what they would read from a ``.t7``:
    Lua numbers, tables, and tensors that are views into shared storages where the modules say so
    (``T7Module.storages``: the v1 batch norms' aliased parameters, docs/real-models.md).
    """
    if not modules:
        raise ValueError("module_root needs at least one module")
    children = tuple(_repath(_as_module(spec), str(index)) for index, spec in enumerate(modules, start=1))
    root = T7Module("nn.Sequential", "", {}, children)
    return load_module_tree(dumps_t7(to_torch_object(root))) if as_file else root


def _as_module(spec: ModuleSpec) -> T7Module:
    if isinstance(spec, T7Module):
        return spec
    torch_class, fields = spec
    return T7Module(torch_class, "", dict(fields))


def _repath(module: T7Module, path: str) -> T7Module:
    children = tuple(_repath(child, f"{path}.{index}") for index, child in enumerate(module.children, start=1))
    return T7Module(module.torch_class, path, module.fields, children, module.storages)


# Torch classes saved with version 2 (nn.BatchNormalization and its subclasses).
_VERSION_2 = frozenset({"nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization", "nn.BatchNormalization"})


def to_torch_object(root: T7Module) -> TorchObject:
    """A module tree as t7file.writer objects: fields as written by ``torch.save``, children as ``modules``,
    and every tensor that a module says lives in a storage (``T7Module.storages``) written as a view into one
    shared storage per flat array, at its offset, so the file keeps the sharing."""
    storages: dict[int, Storage] = {}

    def tensor(module: T7Module, name: str, array: np.ndarray) -> Any:
        found: TensorStorage | None = module.storages.get(name)
        if found is None or array.size == 0 or (found.offset == 0 and found.flat.size == array.size):
            return np.ascontiguousarray(array)
        flat = np.ascontiguousarray(found.flat).reshape(-1)
        if id(found.flat) not in storages:
            storages[id(found.flat)] = Storage(flat.astype(array.dtype, copy=False))
        return TensorView.contiguous(storages[id(found.flat)], array.shape, found.offset)

    def value(module: T7Module, name: str, item: Any) -> Any:
        if isinstance(item, np.ndarray):
            return tensor(module, name, item)
        if isinstance(item, Mapping):
            fields = {key: value(module, f"{name}.{key}", v) for key, v in item.items() if key != "__class__"}
            return TorchObject(item["__class__"], fields) if "__class__" in item else fields
        if isinstance(item, list | tuple):
            return [value(module, name, v) for v in item]
        return item

    def convert(module: T7Module) -> TorchObject:
        fields = {name: value(module, name, item) for name, item in module.fields.items()}
        if module.children or module.torch_class in ("nn.Sequential", "nn.Concat", "nn.ConcatTable"):
            fields["modules"] = [convert(child) for child in module.children]
        return TorchObject(module.torch_class, fields, 2 if module.torch_class in _VERSION_2 else 1)

    return convert(root)


# -- checks -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckId:
    """Which check: enough to say what killed a mutant, and where."""

    case: str
    dtype: str
    view: str
    lua_path: str
    torch_class: str = ""

    def __str__(self) -> str:
        where = f"{self.lua_path} ({self.torch_class})" if self.torch_class else self.lua_path
        return f"{self.case} {self.dtype} {self.view} @ {where}"


@dataclass(frozen=True)
class PathResult:
    """One judged path of one check (harness.core.judge's verdict). A path the backend did not trace is
    "not compared" for drift; the suite's own backends must trace every path, so here it fails."""

    check: CheckId
    verdict: PathVerdict
    rerun: str = field(default="", compare=False)  # what to run for this check alone (a pytest node id)

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


def judge_trace(judge_runner, x: np.ndarray, noise: Mapping[str, np.ndarray] | None = None
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The judge's float64 output and trace of ``x`` (with the run's noise, when the model draws any)."""
    return forward(judge_runner, np.asarray(x, dtype=np.float64), trace=True, noise=cast_noise(noise, "float64"))


def _layer_budgets(root: T7Module, x: np.ndarray, reference_trace: dict[str, np.ndarray], dtype: str, *, view: str,
                   statistics: str, batchnorm: str | None, judge_rounding: Mapping[str, float] | None = None):
    """harness.core.tolerance.layer_budgets, told the batch-norm mode the run used (None: the family's)."""
    return layer_budgets(root, x, reference_trace, dtype, view=view, statistics=statistics, batchnorm=batchnorm,
                         judge_rounding=judge_rounding)


def check_trace(runner, root: T7Module, x: np.ndarray, reference_trace: dict[str, np.ndarray], *, dtype: str,
                view: str, case: str, backend_name: str, statistics: str = "float64",
                noise: dict[str, np.ndarray] | None = None, batchnorm: str | None = None,
                judge=None) -> list[PathResult]:
    """Compare ``runner`` (a loaded backend) with the judge's trace at every traced Lua path, in order.

    ``statistics``: the backend's ``instance_norm_statistics`` (harness.core.tolerance.instance_norm_statistics);
    the default is Torch7's double sums, the strict model. ``noise``: what the model's noise modules
    draw (the judge's trace was made with the same arrays). ``batchnorm``: the mode the runner and the judge
    were loaded in. ``judge``: the judge backend (default the reference), whose own float32 run of ``x`` sets the
    rounding ceiling of an accumulated float32 run. Each path is judged by harness.core.judge, as drift judges it.
    """
    rounding = None
    if ceiling_applies(dtype, view, statistics):
        rounding = judge_float32_rounding(judge or judge_backend(), root, x, reference_trace, noise=noise,
                                          batchnorm=batchnorm)
    budgets = _layer_budgets(root, x, reference_trace, dtype, view=view, statistics=statistics, batchnorm=batchnorm,
                             judge_rounding=rounding)
    paths = trace_paths(root)
    noise = cast_noise(noise, dtype)
    errors: dict[str, BaseException] = {}
    output = None
    if view == "accumulated":
        try:
            output, trace = forward(runner, x.astype(dtype), trace=True, noise=noise)
        except Exception as error:  # a backend that raises fails at the first path, with its message
            trace, errors = {}, {paths[0]: error}
    else:
        if not hasattr(runner, "run_module"):
            raise NotImplementedError(f"backend '{backend_name}' has no run_module: no isolated view")
        inputs = module_inputs(root, x, reference_trace)
        trace = {}
        for path in paths:
            try:
                # A copy: a backend may run an in-place ReLU on the very array it is given (the judge's trace).
                trace[path] = run_module(runner, path, np.array(inputs[path], dtype=dtype),
                                         noise=_under(root, path, noise))
            except Exception as error:  # this module raised: an error verdict that names it, the others still run
                errors[path] = error
    return judge_arrays(root, budgets, reference_trace, trace, output if view == "accumulated" else None,
                        view=view, case=case, name=f"{backend_name} {dtype}", errors=errors)


def _under(root: T7Module, lua_path: str, noise: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The noise of the noise modules inside the module at ``lua_path`` (what run_module of it draws)."""
    if not noise:
        return noise
    inside = {module.lua_path for module in root.find(lua_path).walk()}
    return {path: array for path, array in noise.items() if path in inside}


def _rerun() -> str:
    """The pytest node id of the running test (pytest sets PYTEST_CURRENT_TEST), for 'rerun just this'."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    return current.rsplit(" (", 1)[0]


def judge_arrays(root: T7Module, budgets, reference_trace: dict[str, np.ndarray], trace: dict[str, np.ndarray],
                 output: np.ndarray | None, *, view: str, case: str, name: str,
                 errors: Mapping[str, BaseException] | None = None) -> list[PathResult]:
    """Judge already computed arrays (a trace, and the output when given) path by path, in execution order;
    ``errors``: what the backend raised instead of computing a path (an error verdict there)."""
    dtype = next(iter(budgets.values())).dtype if budgets else "float64"
    rerun = _rerun()
    results = []
    for path in trace_paths(root):
        budget = budgets[path]
        if errors and path in errors:
            verdict = error_verdict(path, errors[path])
            results.append(PathResult(CheckId(case, dtype, view, path, budget.torch_class), verdict, rerun))
            continue
        verdict = judge_path(path, trace.get(path), reference_trace[path], budget.tolerance(), budget.determined,
                             actual_name=name, expected_name=JUDGE_NAME,
                             where=f"{case}, {view}, Lua path {path} ({budget.torch_class})")
        results.append(PathResult(CheckId(case, dtype, view, path, budget.torch_class), verdict, rerun))
    if output is not None:  # the generator's output as forward returns it to a user
        budget = output_budget(root, budgets)
        verdict = judge_path("output", output, reference_trace[budget.lua_path], budget.tolerance(),
                             budget.determined, actual_name=name, expected_name=JUDGE_NAME,
                             where=f"{case}, generator output (forward)")
        results.append(PathResult(CheckId(case, dtype, view, "output", budget.torch_class), verdict, rerun))
    return results


# Where each module class's Torch7 semantics are written down (what a failing layer is to be compared with).
_V1_CLASSES = frozenset({"nn.SpatialCircularPadding", "nn.SpatialAveragePooling", "nn.SpatialUpSamplingNearest",
                         "nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization", "nn.Concat",
                         "nn.LeakyReLU", "nn.GenNoise", "nn.NoiseFill"})


def semantics_doc(torch_class: str) -> str:
    return "docs/real-models.md, \"Modules\"" if torch_class in _V1_CLASSES else "docs/torch7-semantics.md"


def next_step(result: PathResult) -> str:
    """What to run after this failure, given where it happened."""
    check = result.check
    cls = check.torch_class or "this module"
    if check.view == "isolated" or check.case.startswith("primitive"):
        return (f"{cls} at Lua path {check.lua_path} is wrong on its own (fed the judge's own input): compare the "
                f"backend's {cls} with {semantics_doc(cls)}; the property tests for {cls.rsplit('.', 1)[-1]} "
                "(parity_tests/test_properties.py, test_real_model_primitives.py) shrink it to a minimal case")
    if check.view == "accumulated":
        return (f"the first divergence end to end is Lua path {check.lua_path} ({cls}); the isolated view of the same "
                "case (the same test with view 'isolated') says whether that module itself is wrong or only "
                "receives a drifted input; `texture-nets drift --backends NAME` on this input shows every layer")
    if check.view == "forced fast paths":
        return (f"the judge's own fast path for {cls} disagrees with reference/definitions.py: every parity verdict "
                "on large inputs is suspect; parity_tests/test_reference_fast_paths.py narrows it down")
    return "compare with the known answer above (docs/real-models.md for the family's conventions)"


def failure_report(results: list[PathResult]) -> str:
    """The first failing path (Lua path and class), how bad, every failing path, and what to run next."""
    failed = [result for result in results if not result]
    first = failed[0]
    lines = [f"FIRST FAILURE: {first.check.torch_class or '?'} at Lua path {first.check.lua_path} ({first.check.case}, "
             f"{first.check.dtype}, {first.check.view}); {len(failed)} of {len(results)} checked paths out of "
             "tolerance",
             "  " + first.comparison.message(),
             f"  failing paths: {', '.join(result.check.lua_path for result in failed[:20])}"
             + (" ..." if len(failed) > 20 else ""),
             f"  next: {next_step(first)}"]
    if first.rerun:
        lines.append(f"  rerun just this: pytest '{first.rerun}'")
    return "\n".join(lines)


def assert_parity(results: list[PathResult]) -> None:
    if not all(results):
        raise AssertionError(failure_report(results))


def first_failure(results: list[PathResult]) -> PathResult | None:
    return next((result for result in results if not result), None)


# -- one line per property: load, run the judge, judge every path ------------------------------------------------


@cache
def judge_backend():
    """The float64 NumPy reference (the judge), from the registry."""
    from harness.core.registry import get_backend

    return get_backend("reference")


def reference_trace(root: T7Module, x: np.ndarray, *, noise: Mapping[str, np.ndarray] | None = None,
                    batchnorm: str | None = None, judge=None) -> dict[str, np.ndarray]:
    """The judge's float64 trace of ``x`` through ``root`` (with the run's noise and batch-norm mode)."""
    runner = load_runner(judge or judge_backend(), root, "float64", batchnorm=batchnorm)
    return judge_trace(runner, x, noise)[1]


def matches_reference(backend, root: T7Module, x: np.ndarray, *, dtype: str, view: str,
                      noise: Mapping[str, np.ndarray] | None = None, batchnorm: str | None = None,
                      case: str | None = None, judge=None,
                      trace: dict[str, np.ndarray] | None = None) -> list[PathResult]:
    """``backend`` (loaded from ``root`` in ``dtype`` and ``batchnorm`` mode) against the float64 judge at every
    traced path, in ``view``; ``trace``: the judge's trace when already computed."""
    if trace is None:
        trace = reference_trace(root, x, noise=noise, batchnorm=batchnorm, judge=judge)
    runner = load_runner(backend, root, dtype, batchnorm=batchnorm)
    return check_trace(runner, root, x, trace, dtype=dtype, view=view, case=case or "case",
                       backend_name=backend.name, statistics=instance_norm_statistics(backend),
                       noise=dict(noise) if noise else None, batchnorm=batchnorm, judge=judge)


def assert_matches_reference(backend, root: T7Module, x: np.ndarray, *, dtype: str, view: str,
                             noise: Mapping[str, np.ndarray] | None = None, batchnorm: str | None = None,
                             case: str | None = None, judge=None) -> None:
    """The property tests' one line: every traced path of ``backend`` within the tolerance model of the judge."""
    assert_parity(matches_reference(backend, root, x, dtype=dtype, view=view, noise=noise, batchnorm=batchnorm,
                                    case=case, judge=judge))


# -- fixed primitive cases: what the layouts' symmetric pads and square kernels cannot show, and the v1 modules --


@dataclass(frozen=True)
class Primitive:
    """A fixed case: a small tree, its input, the noise it draws, the batch-norm mode it runs in."""

    root: T7Module
    x: np.ndarray
    noise: dict[str, np.ndarray] | None = None
    batchnorm: str | None = None


def _primitive_asymmetric_pad() -> Primitive:
    from parity_tests.strategies import replication_pad_module

    return Primitive(module_root(replication_pad_module("1", 1, 3, 0, 2)), _uniform(11, (1, 2, 4, 5)))


def _primitive_non_square_conv() -> Primitive:
    from parity_tests.strategies import conv_module

    rng = np.random.default_rng(12)
    weight, bias = rng.uniform(-0.4, 0.4, (3, 2, 2, 3)), rng.uniform(-0.4, 0.4, 3)  # kH=2, kW=3
    return Primitive(module_root(conv_module("1", weight, bias, dW=2, dH=1, padW=1, padH=0)),
                     rng.standard_normal((1, 2, 6, 7)))


def _primitive_full_conv_adj() -> Primitive:
    from parity_tests.strategies import full_conv_module

    rng = np.random.default_rng(13)
    weight, bias = rng.uniform(-0.4, 0.4, (2, 3, 3, 3)), rng.uniform(-0.4, 0.4, 3)
    return Primitive(module_root(full_conv_module("1", weight, bias, dW=2, dH=2, padW=1, padH=1, adjW=1, adjH=0)),
                     rng.standard_normal((1, 2, 4, 5)))


def _primitive_instance_norm() -> Primitive:
    """eps 1e-3 (a module eps read as 1e-5 shows), batch 2, one channel offset by 100 (float32 sums show)."""
    from parity_tests.strategies import instance_norm_module

    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 6, 5))
    x[:, 1] += 100.0
    return Primitive(module_root(instance_norm_module("1", rng.uniform(0.5, 1.5, 3), rng.uniform(-0.5, 0.5, 3),
                                                      n_output=3, eps=1e-3)), x)


def _primitive_residual_block() -> Primitive:
    from parity_tests.strategies import residual_block

    rng = np.random.default_rng(15)
    return Primitive(module_root(residual_block("1", 3, rng)), np.maximum(rng.standard_normal((1, 3, 5, 6)), 0))


def _v1_primitives() -> dict[str, Callable[[], Primitive]]:
    from parity_tests.strategies import V1_FIXED_CASES

    return V1_FIXED_CASES


JOHNSON_PRIMITIVES: dict[str, Callable[[], Primitive]] = {
    "asymmetric replication pad (1,3,0,2)": _primitive_asymmetric_pad,
    "conv kH=2 kW=3 dW=2 padW=1": _primitive_non_square_conv,
    "full conv k3 s2 p1 adjW=1 adjH=0": _primitive_full_conv_adj,
    "instance norm eps 1e-3, batch 2, offset channel": _primitive_instance_norm,
    "residual block width 3": _primitive_residual_block,
}


@cache
def primitive_names() -> tuple[str, ...]:
    """Every fixed primitive case, johnson modules first, then the v1-era modules (docs/real-models.md)."""
    return (*JOHNSON_PRIMITIVES, *_v1_primitives())


@cache
def primitive_case(name: str) -> Primitive:
    build = JOHNSON_PRIMITIVES.get(name) or _v1_primitives()[name]
    case = build()
    noise = {path: f32(array) for path, array in case.noise.items()} if case.noise else None
    return Primitive(case.root, f32(case.x), noise, case.batchnorm)


def case_tree_and_input(kind: str, name: str) -> tuple[T7Module, np.ndarray, str]:
    """(root, x, case label) for a layout + named input, or a fixed primitive (kind "primitive")."""
    if kind == "primitive":
        case = primitive_case(name)
        return case.root, case.x, f"primitive {name}"
    return model_tree(kind), input_array(name), f"{kind} {name}"


def check_primitive(backend, name: str, dtype: str, view: str, judge=None) -> list[PathResult]:
    """One fixed primitive case: ``backend`` in ``dtype`` and ``view`` against the judge."""
    case = primitive_case(name)
    return matches_reference(backend, case.root, case.x, dtype=dtype, view=view, noise=case.noise,
                             batchnorm=case.batchnorm, case=f"primitive {name}", judge=judge)


# -- the judge judged: the reference's fast paths forced, against reference/definitions.py -------------------


# The fixed cases whose modules have a fast path in the reference (blocked im2col/col2im, threads).
FAST_PATH_CASES = ("conv kH=2 kW=3 dW=2 padW=1", "full conv k3 s2 p1 adjW=1 adjH=0",
                   "instance norm eps 1e-3, batch 2, offset channel", "batch norm train, batch 2, offset channel",
                   "batch norm evaluate")


@contextlib.contextmanager
def judge_fast_paths_forced(threads: int = 3, block_bytes: int = 1) -> Iterator[None]:
    """Every fast path of the reference on tiny inputs: one-row unfold/col2im/taps blocks and ``threads`` threads
    however small the job (the settings reference/convolution.py and reference/parallel.py document)."""
    from reference import convolution, parallel

    saved = (convolution.UNFOLD_BLOCK_BYTES, convolution.COL2IM_BLOCK_BYTES, convolution.TAPS_BLOCK_BYTES,
             parallel.THREADS, parallel.MIN_ELEMENTS_PER_THREAD)
    try:
        convolution.UNFOLD_BLOCK_BYTES = convolution.COL2IM_BLOCK_BYTES = convolution.TAPS_BLOCK_BYTES = block_bytes
        parallel.THREADS, parallel.MIN_ELEMENTS_PER_THREAD = threads, 1
        yield
    finally:
        (convolution.UNFOLD_BLOCK_BYTES, convolution.COL2IM_BLOCK_BYTES, convolution.TAPS_BLOCK_BYTES,
         parallel.THREADS, parallel.MIN_ELEMENTS_PER_THREAD) = saved


def check_judge_fast_paths(name: str, dtype: str, judge=None) -> list[PathResult]:
    """The judge itself, every fast path forced, against the plain definitions (reference/definitions.py, float64
    loops with no blocking or threads), judged by the tolerance model of a ``dtype`` run."""
    from reference import definitions

    case = primitive_case(name)
    _, spec_trace = definitions.forward(case.root, case.x, noise=case.noise, batchnorm=case.batchnorm)
    judge = judge or judge_backend()
    with judge_fast_paths_forced():
        runner = load_runner(judge, case.root, dtype, batchnorm=case.batchnorm)
        output, trace = forward(runner, case.x.astype(dtype), trace=True, noise=cast_noise(case.noise, dtype))
    budgets = _layer_budgets(case.root, case.x, spec_trace, dtype, view="accumulated", statistics="float64",
                             batchnorm=case.batchnorm)
    results = judge_arrays(case.root, budgets, spec_trace, trace, output, view="forced fast paths",
                           case=f"judge: {name}", name=f"{judge.name} {dtype} (fast paths forced)")
    return [PathResult(r.check, PathVerdict(r.verdict.lua_path, r.verdict.status, _as_spec(r.verdict.comparison),
                                            r.verdict.determined, r.verdict.note), r.rerun) for r in results]


def _as_spec(comparison: Comparison | None) -> Comparison | None:
    if comparison is None:
        return None
    from dataclasses import replace

    return replace(comparison, expected_name="reference/definitions.py (float64)")


# -- the mutation battery: the suite's early checks, in the suite's order -----------------------------------------

# Networks of the battery: layouts x inputs, isolated views before end-to-end ones (parity_tests/conftest.py
# runs test_end_to_end's isolated checks in the "layer" tier, its accumulated ones in the "network" tier).
NETWORK_CASES: tuple[tuple[str, str], ...] = (
    ("pretrained", "random 32x32"),
    ("head", "random 32x32"),
    ("pretrained", "batch 2 24x20"),
    ("head", "odd 37x29"),
)
STAGES = ("judge judged", "deprocess", "primitives", "isolated layers", "end to end")


def network_check(backend, layout: str, input_name: str, dtype: str, view: str, judge=None,
                  traces: dict | None = None) -> list[PathResult]:
    """One network case of the battery; ``traces``: the judge's traces of this battery run, by case."""
    root, x = model_tree(layout), input_array(input_name)
    traces = {} if traces is None else traces
    if (layout, input_name) not in traces:
        traces[layout, input_name] = reference_trace(root, x, judge=judge)
    return matches_reference(backend, root, x, dtype=dtype, view=view, case=f"{layout} {input_name}", judge=judge,
                             trace=traces[layout, input_name])


def battery(backend, judge) -> Iterator[tuple[str, Callable[[], list[PathResult]]]]:
    """(stage, check) pairs in the order the suite runs the same checks (parity_tests/conftest.py)."""
    for name in FAST_PATH_CASES:
        for dtype in DTYPES:
            yield "judge judged", lambda name=name, dtype=dtype: check_judge_fast_paths(name, dtype, judge)
    yield "deprocess", lambda: _in_context(backend, deprocess_results)
    for name in primitive_names():
        for dtype in DTYPES:
            for view in VIEWS:
                yield "primitives", lambda name=name, dtype=dtype, view=view: check_primitive(
                    backend, name, dtype, view, judge)
    traces: dict = {}  # the judge's network traces, for this run of the battery only (a shared mutant changes them)
    for view, stage in (("isolated", "isolated layers"), ("accumulated", "end to end")):
        for layout, input_name in NETWORK_CASES:
            for dtype in DTYPES:
                yield stage, lambda layout=layout, input_name=input_name, dtype=dtype, view=view: network_check(
                    backend, layout, input_name, dtype, view, judge, traces)


def _in_context(backend, check: Callable[[], list[PathResult]]) -> list[PathResult]:
    # A port's image output goes through fileio.images.deprocess; a mutant backend patches it only inside its own
    # context, so the known answers run there.
    with getattr(backend, "context", contextlib.nullcontext)():
        return check()


def run_battery(backend, judge) -> PathResult | None:
    """The first failing check of ``backend`` over the battery (None when all pass)."""
    for _, check in battery(backend, judge):
        failure = first_failure(check())
        if failure is not None:
            return failure
    return None


# -- deprocess: the I/O contract, by known answers ---------------------------------------------------------------

# texture_nets src/utils.lua: the VGG mean pixel, in the output's channel order (B, G, R). Written here
# from docs/real-models.md, independently of fileio.images and contract.families, so a wrong constant shows.
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def _vgg_space_of(rgb8: np.ndarray, divisor: float = 255.0) -> np.ndarray:
    """The generator output that deprocesses to ``rgb8`` (H x W x 3 bytes) with ``divisor``: mid-bin values, BGR,
    mean removed (image.save multiplies the [0, 1] picture by 255 and truncates)."""
    bgr = ((rgb8.astype(np.float64) + 0.5) * divisor / 255.0)[..., ::-1]
    return (bgr - VGG_MEAN_BGR).transpose(2, 0, 1)


# An image using every byte value in R and G (B constant), subsampled: 16 x 37 pixels.
_BYTES = np.stack([*np.meshgrid(np.arange(256), np.arange(256)[::-1], indexing="xy"),
                   np.full((256, 256), 77)], axis=-1)[::16, ::7]
# (family name, output, the image its usage script writes)
DEPROCESS_CASES = {
    # pure red: R = 255 - 123.68 after the mean, B and G at minus their means
    "pure red pixel": ("johnson", np.array([[[-103.939]], [[-116.779]], [[255.0 - 123.68]]]),
                       np.array([[[255, 0, 0]]])),
    "black pixel (the mean itself)": ("johnson", -VGG_MEAN_BGR.reshape(3, 1, 1), np.array([[[0, 0, 0]]])),
    "clamped pixel": ("johnson", np.array([[[1e4]], [[-1e4]], [[0.0]]]), np.array([[[123, 0, 255]]])),
    "every byte, each channel different": ("johnson", _vgg_space_of(_BYTES), _BYTES),
    # The v1 notebooks divide by 256, not 255 (docs/real-models.md): 128 + mean -> 0.5 -> 127 (by 255: 128).
    "v1 style: grey 128 divided by 256": ("v1-style", (128.0 - VGG_MEAN_BGR).reshape(3, 1, 1),
                                          np.array([[[127, 127, 127]]])),
    "v1 texture: every byte, divided by 256": ("v1-texture", _vgg_space_of(_BYTES, 256.0), _BYTES),
}


def deprocess_results() -> list[PathResult]:
    """fileio.images.deprocess on outputs whose images are known exactly (looked up at call time)."""
    from contract.families import family_named
    from fileio import images

    results = []
    for name, (family, output, expected) in DEPROCESS_CASES.items():
        image = np.asarray(images.deprocess(output, family_named(family)))
        comparison = compare(image.astype(np.float64), expected.astype(np.float64),
                             Tolerance(0.0, why="known answer, docs/real-models.md (deprocess by family)"),
                             actual_name="fileio.images.deprocess", expected_name="known image",
                             where=f"deprocess ({family}): {name}")
        verdict = PathVerdict(name, "pass" if comparison.passed else "fail", comparison)
        results.append(PathResult(CheckId("deprocess", "uint8", "image", name, f"deprocess {family}"), verdict,
                                  _rerun()))
    return results
