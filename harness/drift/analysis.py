"""Drift diagnosis: where a backend leaves the baseline, and whether that reaches the output.

    report = run_drift("model.t7", x, ["torch", "tf-seed"])      # baseline: reference float64
    report.passed, report.backends[1].first_divergence_reaching_output   # False, "6"

For every backend and every traced Lua path the analysis records a
:class:`harness.core.compare.Comparison` in two views:

* **accumulated**: the backend runs end to end; each layer sees the backend's own upstream
  values, so one upstream deviation makes everything after it differ;
* **isolated**: each layer is run alone (``runner.run_module``) on the baseline's input for
  that layer, so every local deviation shows, even after an upstream one.

Tolerances come from harness.core.tolerance (a rounding-error model per layer, with ill-conditioned
instance norms recognised); a layer whose value is not determined in the run dtype (flat
inputs) is checked for shape and finiteness only and marked ``undetermined``.

Each isolated failure is a :class:`Divergence`: its module class and hyper-parameters, the
symptoms read off the difference (harness.drift.diagnose), the usual cause for the class, and its
effect downstream: the deviation alone is carried to the output through the baseline
(harness.drift.propagate) and is **absorbed** (e.g. a dropped bias before an instance norm; the
first traced path where values agree again is named) or **reaches the output**. The *first
divergence* is the first layer, in execution order, whose input agrees and whose output does
not — in the isolated view every input agrees, so it is the first isolated failure. The *lead*
finding is the one with the biggest effect on the output (:func:`rank_divergences`): the report,
its summary and its "next:" advice lead with it, while the tables keep execution order.

A path the backend's trace has no value for (an artefact that fused a pass-through module away) is
"not compared" in both views, with the reason; the verdict rests on the paths that were compared.
A backend that cannot serve the model at all (its ``load`` refuses it: a port written for another
layout, a module class it does not run) is "not applicable", with its reason: it neither passes nor
fails, and the other backends' results stand.

Memory: one trace at a time. The baseline's trace is kept; each backend's trace is compared
layer by layer and dropped before the next backend runs, and the isolated view runs one
module at a time.

The result is data (:meth:`DriftReport.to_dict`, schema in harness/drift/schema.json); the
text, JSON, HTML and picture outputs are views of it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract import DTYPES, BackendError
from contract.families import batchnorm_mode, detect_family, input_planes
from contract.protocol import backend_framework, backend_supported_classes
from harness.core.compare import Comparison, Tolerance, compare
from harness.core.environment import collect_environment
from harness.core.judge import PASSING, judge_path
from harness.core.noise import NoiseError, noise_for_run
from harness.core.registry import RunSpec, get_backend, parse_run_spec
from harness.core.runs import cast_noise, forward, has_batch_norm, judge_float32_rounding, load_runner
from harness.core.shapes import ShapeError
from harness.core.tolerance import (
    G_ORDINARY,
    ROUNDING_CEILING,
    SMOOTH_ROUGHNESS,
    LayerBudget,
    ceiling_applies,
    input_roughness,
    instance_norm_statistics,
    iter_conditioned,
    layer_budgets,
    module_inputs,
)
from harness.drift.diagnose import Symptom, class_hint, diagnose
from harness.drift.propagate import continue_from, input_sources
from t7file import T7Module, UnsupportedModuleError, load_module_tree, trace_paths

SCHEMA_VERSION = "2.1"  # 2.1: backend "status"/"not_applicable", "ranked" and "lead_divergence"
DEFAULT_BASELINE = "reference-float64"
OUTPUT = "output"
PROGRESS_SECONDS = 5.0
# Effects on the output within this factor of the biggest are the same size of problem; among them the
# upstream one leads, since fixing it changes what every layer after it sees.
SAME_SIZE_FACTOR = 10.0
# Classes that are the identity in forward: an exported graph has no node, hence no traced value, for them.
PASS_THROUGH_CLASSES = frozenset({"nn.TVLoss", "nn.Identity", "nn.Dropout"})
# Scalar fields that describe state, not the computation, left out of hyper-parameters.
NOT_HYPERPARAMETERS = frozenset({"_type", "train", "prev_batch_size", "momentum"})
CONSTRUCTOR_ORDER = ("nInputPlane", "nOutputPlane", "kW", "kH", "dW", "dH", "padW", "padH", "adjW", "adjH",
                     "pad_l", "pad_r", "pad_t", "pad_b", "nOutput", "eps", "affine", "threshold", "val", "inplace")

Progress = Callable[[str], None]


# -- the data --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerInfo:
    """One traced module: what it is and what the baseline computed there.

    Fields: lua_path; torch_class; hparams (its scalar fields: kW, padW, eps, ...); input_from
    (the traced path feeding it, None for the network input); shape and scale (max |value|) of
    the baseline's output; conditioning (instance norms: harness.core.tolerance's g; above
    harness.core.tolerance.G_ORDINARY the plane is ill-conditioned, e.g. a flat input).
    """

    lua_path: str
    torch_class: str
    hparams: dict[str, Any]
    input_from: str | None
    shape: tuple[int, ...]
    scale: float
    conditioning: float | None


@dataclass(frozen=True)
class LayerResult:
    """One layer of one backend in one view.

    status: "pass"; "fail" (out of tolerance, shape mismatch or NaN/Inf); "undetermined" (an
    ill-conditioned layer whose value the dtype does not determine: shape and finiteness passed);
    "error" (the backend raised: ``error`` says what); "not compared" (no value in the backend's trace:
    an artefact that fused a pass-through module away; neither passes nor fails, and reports say so).
    The verdicts come from harness.core.judge, shared with the test suite.
    comparison: the statistics (None for error/missing). determined: False for ill-conditioned layers.
    """

    lua_path: str
    view: str
    status: str
    comparison: Comparison | None
    determined: bool = True
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.status in PASSING

    def to_dict(self) -> dict:
        return {"lua_path": self.lua_path, "view": self.view, "status": self.status, "determined": self.determined,
                "error": self.error, "comparison": None if self.comparison is None else self.comparison.to_dict()}


@dataclass(frozen=True)
class Divergence:
    """A layer whose input agrees with the baseline and whose output does not.

    Fields: lua_path, torch_class, hparams; view ("isolated", or "accumulated" when the backend
    cannot run single modules); max_rel / needed_rtol / shapes from its comparison; symptoms
    (kind + sentence, harness.drift.diagnose); hint (the usual causes for the class: harness.drift.diagnose);
    reaches_output (True/False; None when it could not be propagated); absorbed_by (the first
    traced path downstream where the values agree again); output_max_rel (max |difference| at
    the output, relative to the output's scale, with this deviation alone); propagation_note.
    """

    lua_path: str
    torch_class: str
    hparams: dict[str, Any]
    view: str
    max_rel: float
    needed_rtol: float
    shape_actual: tuple[int, ...]
    shape_expected: tuple[int, ...]
    symptoms: tuple[Symptom, ...]
    hint: str
    reaches_output: bool | None
    absorbed_by: str | None
    output_max_rel: float | None
    propagation_note: str = ""

    @property
    def classification(self) -> str:
        return {True: "reaches output", False: "absorbed", None: "unknown"}[self.reaches_output]

    @property
    def effect(self) -> float | None:
        """How far this deviation alone moves the output, relative to the output's scale (what ranks findings).

        A deviation that changes the output's shape, or breaks the rest of the network, has no such number;
        it counts as 1 (the output's own scale: no value of the output can be trusted). None when it could
        not be propagated.
        """
        if self.output_max_rel is not None and math.isfinite(self.output_max_rel):
            return self.output_max_rel
        return 1.0 if self.reaches_output else None

    @property
    def effect_text(self) -> str:
        if self.output_max_rel is not None and math.isfinite(self.output_max_rel):
            return f"alone, it moves the output by {self.output_max_rel:.3g} of its scale"
        return self.propagation_note or self.classification

    def to_dict(self) -> dict:
        return {
            "lua_path": self.lua_path, "torch_class": self.torch_class, "hparams": self.hparams, "view": self.view,
            "max_rel": _finite_or_none(self.max_rel), "needed_rtol": _finite_or_none(self.needed_rtol),
            "shape_actual": list(self.shape_actual), "shape_expected": list(self.shape_expected),
            "symptoms": [{"kind": s.kind, "text": s.text} for s in self.symptoms], "hint": self.hint,
            "classification": self.classification, "reaches_output": self.reaches_output,
            "absorbed_by": self.absorbed_by, "output_max_rel": _finite_or_none(self.output_max_rel),
            "propagation_note": self.propagation_note,
        }


def rank_divergences(divergences: Sequence[Divergence]) -> list[Divergence]:
    """The divergences, biggest effect on the output first (``Divergence.effect``).

    Those that reach the output come first, then those whose effect is unknown, then the absorbed
    ones. Within each, effects within SAME_SIZE_FACTOR of the biggest remaining one are the same size
    of problem and keep execution order (the upstream one first: fixing it changes what the layers
    after it see); then the next size down. So a dropped zero padding that moves the output by 1.15
    of its scale leads a transposed-convolution shift at 1.47 further down, and both lead float32
    instance-norm statistics at 3e-4.
    """
    ranked: list[Divergence] = []
    for reaches in (True, None, False):
        remaining = [d for d in divergences if d.reaches_output is reaches]
        while remaining:
            effects = [d.effect for d in remaining if d.effect is not None]
            top = max(effects, default=0.0)
            if top > 0:
                group = [d for d in remaining if d.effect is not None and d.effect >= top / SAME_SIZE_FACTOR]
            else:
                group = list(remaining)
            ranked += group
            remaining = [d for d in remaining if not any(d is g for g in group)]
    return ranked


@dataclass
class BackendDrift:
    """Everything found for one backend. ``arrays`` (not serialised) feeds the pictures:
    "output" (the backend's output) and "diff/<path>" (|difference| maps of divergent layers).

    ``not_applicable``: why the backend cannot serve this model (its load refused it), or None; such
    a backend has no results, neither passes nor fails, and DriftReport.passed ignores it.
    """

    spec: RunSpec
    name: str
    accumulated: list[LayerResult]
    output: LayerResult
    isolated: list[LayerResult] | None
    isolated_note: str
    divergences: list[Divergence]
    onsets: list[str]
    seconds: dict[str, float]
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    not_applicable: str | None = None
    # Lua path -> what the plug-in's own code did there (a custom layer supplying a class the port lacks): no
    # verdict about the port rests on these paths (contract/protocol.py, ``adapter_paths``).
    adapter_paths: dict[str, str] = field(default_factory=dict)

    @property
    def applicable(self) -> bool:
        return self.not_applicable is None

    @property
    def passed(self) -> bool:
        if not self.applicable:
            return False
        views = self.accumulated + (self.isolated or [])
        return self.output.passed and all(result.passed for result in views)

    @property
    def status(self) -> str:
        """"not applicable", "pass" or "fail"."""
        if not self.applicable:
            return "not applicable"
        return "pass" if self.passed else "fail"

    @property
    def ranked(self) -> list[Divergence]:
        """The divergences, biggest effect on the output first (:func:`rank_divergences`)."""
        return rank_divergences(self.divergences)

    @property
    def lead(self) -> Divergence | None:
        """The finding to fix first: the biggest effect on the output."""
        ranked = self.ranked
        return ranked[0] if ranked else None

    @property
    def not_compared(self) -> dict[str, str]:
        """Lua path -> why it was not compared (no value in the backend's trace), in execution order."""
        reasons: dict[str, str] = {}
        for result in self.accumulated + (self.isolated or []):
            if result.status == "not compared" and result.lua_path not in reasons:
                reasons[result.lua_path] = result.error or "no value in the backend's trace"
        return reasons

    @property
    def first_divergence(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    @property
    def first_divergence_reaching_output(self) -> Divergence | None:
        return next((d for d in self.divergences if d.reaches_output), None)

    @property
    def absorbed(self) -> list[Divergence]:
        return [d for d in self.divergences if d.reaches_output is False]

    def to_dict(self) -> dict:
        first, reaching, lead = self.first_divergence, self.first_divergence_reaching_output, self.lead
        return {
            "spec": self.spec.text, "backend": self.name, "dtype": self.spec.dtype, "label": self.spec.label,
            "passed": self.passed, "status": self.status, "not_applicable": self.not_applicable,
            "output": self.output.to_dict(),
            "first_divergence": None if first is None else first.lua_path,
            "first_divergence_reaching_output": None if reaching is None else reaching.lua_path,
            "lead_divergence": None if lead is None else lead.lua_path,
            "ranked": [d.lua_path for d in self.ranked],
            "not_compared": self.not_compared,
            "divergences": [d.to_dict() for d in self.divergences],
            "accumulated_onsets": self.onsets,
            "accumulated": [r.to_dict() for r in self.accumulated],
            "isolated": None if self.isolated is None else [r.to_dict() for r in self.isolated],
            "isolated_note": self.isolated_note,
            "adapter_paths": dict(self.adapter_paths),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


@dataclass
class DriftReport:
    """The whole analysis. ``passed`` is the exit status's basis: every backend within tolerance
    in both views. ``arrays`` (not serialised): "input", "baseline_output"."""

    model: dict[str, Any]
    input: dict[str, Any]
    baseline: dict[str, Any]
    layers: list[LayerInfo]
    backends: list[BackendDrift]
    notes: list[str]
    environment: dict[str, Any]
    created: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    schema_version: str = SCHEMA_VERSION
    # The baseline's float64 trace by Lua path, kept only when run_drift was asked to (``keep_baseline``): a
    # caller that needs the same exact values (verify's rounding reference) takes them instead of running the
    # baseline again. Not serialised; set it to None when done (at 512² it is 1.3 GiB).
    baseline_trace: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        """Every applicable backend within tolerance (and at least one was applicable)."""
        applicable = [backend for backend in self.backends if backend.applicable]
        return bool(applicable) and all(backend.passed for backend in applicable)

    def layer(self, lua_path: str) -> LayerInfo:
        return next(info for info in self.layers if info.lua_path == lua_path)

    def backend(self, label_or_spec: str) -> BackendDrift:
        for backend in self.backends:
            if label_or_spec in (backend.spec.text, backend.spec.label, backend.name):
                return backend
        raise KeyError(label_or_spec)

    def to_dict(self) -> dict:
        return {
            "schema": "texture-nets-drift", "schema_version": self.schema_version, "created": self.created,
            "passed": self.passed, "model": self.model, "input": self.input, "baseline": self.baseline,
            "environment": self.environment, "notes": self.notes,
            "layers": [{"lua_path": i.lua_path, "torch_class": i.torch_class, "hparams": i.hparams,
                        "input_from": i.input_from, "shape": list(i.shape), "scale": _finite_or_none(i.scale),
                        "conditioning": _finite_or_none(i.conditioning)} for i in self.layers],
            "backends": [b.to_dict() for b in self.backends],
        }


@dataclass(frozen=True)
class Verdict:
    """The one-line verdict every view prints (terminal, HTML): ``passed`` decides the exit status."""

    passed: bool
    text: str


def verdict(report: DriftReport, expected_to_drift: Collection[str] = ()) -> Verdict:
    """The verdict on ``report`` when the backends named in ``expected_to_drift`` (backend names, e.g. "tf-seed")
    are findings rather than failures: a reproduction of a flawed port drifts by design.

    The drift command judges every backend (``expected_to_drift`` empty); the demo passes
    :func:`expected_to_drift_backends`, so its terminal line and its HTML page say the same thing.
    """
    expected = frozenset(expected_to_drift)
    applicable = [b for b in report.backends if b.applicable]
    judged = [b for b in applicable if b.name not in expected and b.spec.backend not in expected]
    findings = [b for b in applicable if b not in judged]
    failing = [b.spec.label for b in judged if not b.passed]
    parts = []
    if failing:
        passed = False
        parts.append(f"DRIFT: {', '.join(failing)} {'leaves' if len(failing) == 1 else 'leave'} the tolerance")
    elif judged:
        passed = True
        parts.append(f"{judged[0].spec.label} agrees with the baseline within tolerance" if len(judged) == 1
                     else f"all {len(judged)} backends agree with the baseline within tolerance")
    elif findings:
        passed = True
        parts.append("no backend is judged")
    else:
        passed = False
        parts.append("no backend could run this model")
    drifting = [b.spec.label for b in findings if not b.passed]
    agreeing = [b.spec.label for b in findings if b.passed]
    if drifting:
        parts.append(f"{', '.join(drifting)} {'drifts' if len(drifting) == 1 else 'drift'} as expected "
                     "(not faithful to Torch7 by design)")
    if agreeing:
        parts.append(f"{', '.join(agreeing)} (expected to drift) agree{'s' if len(agreeing) == 1 else ''}")
    skipped = [b.spec.label for b in report.backends if not b.applicable]
    if skipped:
        parts.append(f"not applicable to this model: {', '.join(skipped)}")
    return Verdict(passed, "; ".join(parts))


def expected_to_drift_backends(report: DriftReport) -> frozenset[str]:
    """The backends of ``report`` expected to drift, from the registry: those that do not claim Torch7's
    semantics (``is_faithful``: tf-seed) and plug-ins running a port written by others (``is_external``)."""
    from harness.core import registry

    is_external = getattr(registry, "is_external", lambda name: False)
    names = {b.spec.backend for b in report.backends}
    return frozenset(name for name in names if not registry.is_faithful(name) or is_external(name))


# -- the analysis ----------------------------------------------------------------------------------------------


def run_drift(model: str | Path | T7Module, x: np.ndarray, backends: Sequence[str], *,
              baseline: str = DEFAULT_BASELINE, dtype: str = "float32", tree: T7Module | None = None,
              input_source: str = "array", progress: Progress | None = None,
              noise: dict[str, np.ndarray] | None = None, seed: int | None = None,
              batchnorm: str | None = None, keep_baseline: bool = False) -> DriftReport:
    """Compare every backend in ``backends`` with ``baseline`` on input ``x``: the tensor the model's
    forward receives (N x C x H x W; contract.families.image_to_input makes it from a picture).

    ``model`` is handed to every backend's ``load``; ``tree`` is the Torch7 module tree that
    names the layers (default: ``model`` read as a .t7), needed when ``model`` is another
    artefact. Models that draw noise get ``noise`` (checked against the model) or the noise
    Torch7's generator draws after ``torch.manualSeed(seed)``: the same arrays for every backend.
    ``batchnorm`` is the batch-norm mode (default: the family's). ``keep_baseline``: keep the baseline's
    trace in the report (``DriftReport.baseline_trace``; its output is always in ``arrays``). Raises
    BackendError for unknown backends or unsupported dtypes.
    """
    say = progress or (lambda message: None)
    root = tree if tree is not None else (model if isinstance(model, T7Module) else load_module_tree(model))
    if dtype not in DTYPES:
        raise BackendError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    base_spec = parse_run_spec(baseline, "float64")
    specs = [parse_run_spec(text, dtype) for text in backends if text.strip()]
    if not specs:
        raise BackendError("no backend to compare; give --backends torch,tf,...")
    resolved = {spec.text: _resolve(spec) for spec in [base_spec, *specs]}

    x = np.asarray(x, dtype=np.float64)
    planes = input_planes(root)
    if x.ndim != 4 or x.shape[1] != planes:
        raise BackendError(f"the input must be N x {planes} x H x W for this model, got shape {x.shape}")
    # Every run sees the same numbers: round once to the least precise dtype of the run.
    run_dtypes = {spec.dtype for spec in [base_spec, *specs]}
    rounded_to = "float32" if "float32" in run_dtypes else "float64"
    x = x.astype(rounded_to).astype(np.float64)
    noise_given = noise is not None
    try:
        noise = {path: array.astype(np.float64) for path, array in
                 noise_for_run(root, x.shape, seed=seed, noise=noise, dtype=rounded_to).items()}
    except (NoiseError, ShapeError) as error:
        raise BackendError(str(error)) from None
    batchnorm = batchnorm or batchnorm_mode(root)

    say(f"baseline {base_spec.label}: running with a trace")
    started = time.perf_counter()
    # The baseline reads the module tree: --model may be an artefact only the diagnosed backends read.
    base_runner = load_runner(resolved[base_spec.text], root, base_spec.dtype, batchnorm=batchnorm)
    base_output, base_trace = forward(base_runner, x.astype(base_spec.dtype), trace=True,
                                      noise=cast_noise(noise, base_spec.dtype))
    paths = trace_paths(root)
    missing = [p for p in paths if p not in base_trace]
    if missing:
        raise BackendError(f"the baseline {base_spec.label} traced no output for Lua paths {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}; it cannot be the baseline")
    base_trace = {p: np.asarray(base_trace[p], dtype=np.float64) for p in paths}
    base_output = np.asarray(base_output, dtype=np.float64)
    inputs = module_inputs(root, x, base_trace)
    sources = input_sources(root)
    say(f"baseline done in {time.perf_counter() - started:.2f} s; computing tolerances")

    # Budgets per (dtype, how the backend sums instance-norm statistics): harness/core/tolerance.py.
    keys = {spec.text: (spec.dtype, instance_norm_statistics(resolved[spec.text])) for spec in [base_spec, *specs]}
    rounding = None
    if any(ceiling_applies(dtype, "accumulated", statistics) for dtype, statistics in keys.values()):
        # the rounding ceiling's basis: the judge's own float32 runs, in two summation orders
        say("the reference's own float32 runs (the tolerance's rounding ceiling)")
        rounding = judge_float32_rounding(get_backend("reference"), root, x, base_trace, noise=noise,
                                          batchnorm=batchnorm)
    # A float64 baseline's own budget is added to float32 backends' ones, which are ~1e8 times larger: its statistics
    # take their worst-case growth rather than the measured one (a sort of every plane, ~2 s at 512²). Where a
    # diagnosed backend runs in float64 too, its budget and the baseline's are alike, and both are measured.
    bound_only = {keys[base_spec.text]} - {keys[spec.text] for spec in specs} if all(
        spec.dtype == "float32" for spec in specs) and base_spec.dtype == "float64" else set()
    budgets = {key: {view: layer_budgets(root, x, base_trace, key[0], view=view, statistics=key[1],
                                         judge_rounding=rounding, measure_growth=key not in bound_only)
                     for view in ("accumulated", "isolated")} for key in set(keys.values())}
    output_path = _output_path(root, paths)
    layers = [_layer_info(root.find(p), sources[p], base_trace[p], budgets[keys[base_spec.text]]["accumulated"][p])
              for p in paths]
    context = _Context(root, paths, base_spec, base_trace, base_output, inputs, sources, budgets, output_path,
                       getattr(base_runner, "run_module", None), say, keys, noise, batchnorm)

    # TensorFlow keeps ~1.1 GiB of runtime and allocator after its phase (docs/benchmarks.md): its backends run
    # last, so that memory never sits under another backend's trace. The report keeps the order asked for.
    order = sorted(range(len(specs)), key=lambda i: (backend_framework(resolved[specs[i].text]) == "tensorflow", i))
    results: list = [None] * len(specs)
    for step, index in enumerate(order, start=1):
        spec = specs[index]
        say(f"[{step}/{len(specs)}] {spec.label}")
        results[index] = _drift_one(context, spec, resolved[spec.text], model, x)

    environment = collect_environment({spec.text: resolved[spec.text] for spec in [base_spec, *specs]})
    return DriftReport(
        model={**_model_info(model, root), "batchnorm": batchnorm if has_batch_norm(root) else None},
        input={"source": input_source, "shape": list(x.shape), "rounded_to": rounded_to,
               "min": float(x.min()), "max": float(x.max()),
               "noise": _noise_info(noise, seed, injected=noise_given)},
        baseline={"spec": base_spec.text, "backend": base_spec.backend, "dtype": base_spec.dtype,
                  "label": base_spec.label, "output_shape": list(base_output.shape)},
        layers=layers, backends=results, notes=_input_notes(x) + _notes(budgets, [keys[spec.text] for spec in specs]),
        environment=environment, created=datetime.now(UTC).isoformat(timespec="seconds"),
        arrays={"input": x, "baseline_output": base_output}, baseline_trace=base_trace if keep_baseline else None,
    )


@dataclass
class _Context:
    root: T7Module
    paths: list[str]
    base_spec: RunSpec
    base_trace: dict[str, np.ndarray]
    base_output: np.ndarray
    inputs: dict[str, np.ndarray]
    sources: dict[str, str | None]
    budgets: dict[tuple[str, str], dict[str, dict[str, LayerBudget]]]
    output_path: str
    base_run_module: Callable[[str, np.ndarray], np.ndarray] | None
    say: Progress
    budget_keys: dict[str, tuple[str, str]]  # spec.text -> (dtype, instance_norm_statistics)
    noise: dict[str, np.ndarray]  # float64 copies of the one draw every run gets, by Lua path
    batchnorm: str

    def noise_for(self, dtype: str) -> dict[str, np.ndarray]:
        return cast_noise(self.noise, dtype)

    def tolerance(self, spec: RunSpec, view: str, path: str) -> tuple[Tolerance, bool]:
        """The backend's budget plus the baseline's own (both sides carry rounding), and 'determined'."""
        mine = self.budgets[self.budget_keys[spec.text]][view][path]
        theirs = self.budgets[self.budget_keys[self.base_spec.text]][view][path]
        a, b = mine.tolerance(), theirs.tolerance()
        why = a.why if self.base_spec.dtype == "float64" else f"{a.why}; plus the baseline's own {b.why}"
        return Tolerance(a.rtol + b.rtol, a.atol + b.atol, why), mine.determined and theirs.determined


def _resolve(spec: RunSpec):
    backend = get_backend(spec.backend)
    if spec.dtype not in backend.dtypes:
        raise BackendError(f"backend '{spec.backend}' supports {', '.join(backend.dtypes)}, not {spec.dtype}")
    return backend


def _drift_one(ctx: _Context, spec: RunSpec, backend, model, x: np.ndarray) -> BackendDrift:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    reason = _unsupported_classes(ctx.root, backend)
    runner = None
    if reason is None:
        try:
            runner = load_runner(backend, model, spec.dtype, root=ctx.root, batchnorm=ctx.batchnorm)
        except (BackendError, UnsupportedModuleError) as error:
            # The backend refuses this model (a port written for another layout, a class it does not run):
            # not applicable. The other backends' results stand.
            reason = " ".join(str(error).split())
    seconds["load"] = time.perf_counter() - started
    if runner is None:
        ctx.say(f"  {spec.label}: not applicable to this model: {reason}")
        return _not_applicable(spec, backend, reason or "", seconds)
    arrays: dict[str, np.ndarray] = {}

    # Accumulated view: one end-to-end run, compared layer by layer, then dropped.
    started = time.perf_counter()
    try:
        output, trace = forward(runner, x.astype(spec.dtype), trace=True, noise=ctx.noise_for(spec.dtype))
    except Exception as error:
        message = _one_line(error)
        accumulated = [LayerResult(p, "accumulated", "error", None, error=message) for p in ctx.paths]
        output_result = LayerResult(OUTPUT, "accumulated", "error", None, error=message)
        trace, output = {}, None
    else:
        accumulated = [_judge(ctx, spec, "accumulated", p, trace.get(p), _missing_reason(ctx, p))
                       for p in ctx.paths]
        output_result = _judge(ctx, spec, "accumulated", OUTPUT, output)
        arrays["output"] = np.asarray(output)
    # Paths the backend's trace has no value for are not compared in the isolated view either: the artefact
    # has no module of its own there to run.
    missing = {r.lua_path for r in accumulated if r.status == "not compared"}
    seconds["forward"] = time.perf_counter() - started
    passed_at = {r.lua_path: r.passed for r in accumulated}
    onsets = [r.lua_path for r in accumulated if not r.passed
              and (ctx.sources[r.lua_path] is None or passed_at[ctx.sources[r.lua_path]])]

    divergences: list[Divergence] = []
    run_module = getattr(runner, "run_module", None)
    isolated: list[LayerResult] | None = None
    if callable(run_module):
        del trace
        isolated, divergences, seconds["isolated"] = _isolated_view(ctx, spec, run_module, arrays, missing)
        note = ""
    else:
        note = f"backend '{spec.backend}' has no run_module(lua_path, x): isolated view unavailable"
        started = time.perf_counter()
        # Without single-module runs only the onsets of the accumulated view are local deviations.
        for path in onsets:
            if path in trace:
                divergences.append(_divergence(ctx, spec, "accumulated", path, trace[path], arrays))
        seconds["diagnosis"] = time.perf_counter() - started
        del trace
    ctx.say(f"  {spec.label}: {'agrees' if output_result.passed else 'DIFFERS'} at the output; "
            f"{len(divergences)} local divergence(s)")
    adapter = {str(path): str(what) for path, what in (getattr(runner, "adapter_paths", None) or {}).items()}
    return BackendDrift(spec, backend.name, accumulated, output_result, isolated, note, divergences, onsets,
                        seconds, arrays, adapter_paths=adapter)


def _not_applicable(spec: RunSpec, backend, reason: str, seconds: dict[str, float]) -> BackendDrift:
    output = LayerResult(OUTPUT, "accumulated", "not compared", None, error=f"not applicable: {reason}")
    return BackendDrift(spec, backend.name, [], output, None, f"not applicable: {reason}", [], [], seconds,
                        not_applicable=reason)


def _unsupported_classes(root: T7Module, backend) -> str | None:
    """Why ``backend`` cannot run ``root`` by its own declaration (``supported_classes``), or None."""
    supported = backend_supported_classes(backend)
    if supported is None:
        return None
    containers = {"nn.Sequential", "nn.ConcatTable", "nn.CAddTable", "nn.Identity"}
    missing: dict[str, str] = {}
    for module in root.walk():
        if module is not root and module.torch_class not in supported and module.torch_class not in containers:
            missing.setdefault(module.torch_class, module.lua_path)
    if not missing:
        return None
    listed = ", ".join(f"{cls} (Lua path {path})" for cls, path in list(missing.items())[:3])
    return f"backend '{backend.name}' does not run {listed}{' ...' if len(missing) > 3 else ''}"


def _missing_reason(ctx: _Context, path: str) -> str:
    """Why a path can be absent from a backend's trace, for the "not compared" verdict."""
    cls = ctx.root.find(path).torch_class
    if cls in PASS_THROUGH_CLASSES:
        return (f"{cls} at Lua path {path} is the identity in forward; the backend's trace has no value of its own "
                "there (an exported graph has no node for it)")
    return f"{cls} at Lua path {path}: no value in the backend's trace (the runtime does not expose this layer)"


def _isolated_view(ctx: _Context, spec: RunSpec, run_module, arrays: dict, missing: set[str] = frozenset()):
    started = time.perf_counter()
    results, divergences = [], []
    last_report = started
    for count, path in enumerate(ctx.paths, start=1):
        if path in missing:
            results.append(_judge(ctx, spec, "isolated", path, None, _missing_reason(ctx, path)))
            continue
        try:
            value = run_one_module(run_module, path, ctx.inputs[path].astype(spec.dtype),
                                   ctx.noise_for(spec.dtype))
        except Exception as error:
            results.append(LayerResult(path, "isolated", "error", None, error=_one_line(error)))
            continue
        result = _judge(ctx, spec, "isolated", path, value)
        results.append(result)
        if not result.passed:
            divergences.append(_divergence(ctx, spec, "isolated", path, value, arrays))
        if time.perf_counter() - last_report > PROGRESS_SECONDS:  # long runs only: big inputs, slow backends
            last_report = time.perf_counter()
            ctx.say(f"  {spec.label} isolated view: {count}/{len(ctx.paths)} layers")
    return results, divergences, time.perf_counter() - started


def _judge(ctx: _Context, spec: RunSpec, view: str, path: str, value, missing_note: str | None = None
           ) -> LayerResult:
    budget_path = ctx.output_path if path == OUTPUT else path
    expected = ctx.base_output if path == OUTPUT else ctx.base_trace[path]
    tolerance, determined = ctx.tolerance(spec, view, budget_path)
    judged = judge_path(path, value, expected, tolerance, determined, actual_name=spec.label,
                        expected_name=ctx.base_spec.label, missing_note=missing_note)
    return LayerResult(path, view, judged.status, judged.comparison, determined=judged.determined,
                       error=judged.note)


def _divergence(ctx: _Context, spec: RunSpec, view: str, path: str, value: np.ndarray, arrays: dict) -> Divergence:
    module = ctx.root.find(path)
    expected = ctx.base_trace[path]
    tolerance, _ = ctx.tolerance(spec, view, path)
    comparison = compare(np.asarray(value), expected, tolerance)
    noise = tolerance.bound(comparison.scale if math.isfinite(comparison.scale) else 0.0)
    symptoms = diagnose(module, value, expected, ctx.inputs.get(path), noise)
    arrays[f"diff/{path}"] = difference_map(np.asarray(value, dtype=np.float64), expected)
    reaches, absorbed_by, output_rel, note = _propagate(ctx, spec, path, np.asarray(value, dtype=np.float64))
    return Divergence(path, module.torch_class, _hparams(module), view, comparison.max_rel, comparison.needed_rtol,
                      comparison.shape_actual, comparison.shape_expected, tuple(symptoms),
                      class_hint(module.torch_class), reaches, absorbed_by, output_rel, note)


def _propagate(ctx: _Context, spec: RunSpec, path: str, value: np.ndarray):
    """(reaches_output, absorbed_by, output max rel, note) for this deviation alone."""
    if ctx.base_run_module is None:
        return None, None, None, f"the baseline {ctx.base_spec.label} cannot run single modules"
    agreed: list[str] = []

    def check(traced_path: str, traced_value) -> None:
        if not agreed and isinstance(traced_value, np.ndarray):
            tolerance, _ = ctx.tolerance(spec, "accumulated", traced_path)
            if compare(traced_value, ctx.base_trace[traced_path], tolerance).passed:
                agreed.append(traced_path)

    def run_leaf(lua_path: str, x: np.ndarray) -> np.ndarray:
        return np.asarray(run_one_module(ctx.base_run_module, lua_path, x.astype(ctx.base_spec.dtype),
                                         ctx.noise_for(ctx.base_spec.dtype)), dtype=np.float64)

    try:
        output = continue_from(ctx.root, path, value, ctx.inputs, run_leaf, check)
    except Exception as error:
        return True, None, None, f"the deviation breaks the rest of the network: {_one_line(error)}"
    tolerance, _ = ctx.tolerance(spec, "accumulated", ctx.output_path)
    at_output = compare(output, ctx.base_output, tolerance)
    if at_output.shape_actual != at_output.shape_expected:
        return True, None, None, f"the output's shape becomes {at_output.shape_actual}"
    absorbed_by = agreed[0] if agreed else None
    if at_output.passed:
        where = absorbed_by or "the output"
        cls = ctx.root.find(where).torch_class if where != "the output" else ""
        note = f"absorbed by {where} ({cls})" if cls else "absorbed by the output"
        return False, absorbed_by, at_output.max_rel, note
    return True, None, at_output.max_rel, f"alone, it moves the output by {at_output.max_rel:.3g} of its scale"


def difference_map(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """|actual - expected| as an H×W map: max over channels, for the sample holding the worst element.

    Shapes that differ are compared on their common top-left region.
    """
    if actual.ndim != 4 or expected.ndim != 4:
        return np.zeros((1, 1))
    n = min(actual.shape[0], expected.shape[0])
    c = min(actual.shape[1], expected.shape[1])
    h = min(actual.shape[2], expected.shape[2])
    w = min(actual.shape[3], expected.shape[3])
    diff = np.abs(actual[:n, :c, :h, :w] - expected[:n, :c, :h, :w])
    diff = np.where(np.isfinite(diff), diff, np.inf)
    per_sample = diff.reshape(n, -1).max(axis=1) if diff.size else np.zeros(1)
    return diff[int(np.argmax(per_sample))].max(axis=0)


# -- helpers ---------------------------------------------------------------------------------------------------


def _hparams(module: T7Module) -> dict[str, Any]:
    """The module's scalar fields, constructor arguments first in Torch7's order (W before H)."""
    scalars = {key: value for key, value in module.fields.items()
               if key not in NOT_HYPERPARAMETERS and isinstance(value, bool | int | float | str) and not
               (isinstance(value, float) and not math.isfinite(value))}
    first = [key for key in CONSTRUCTOR_ORDER if key in scalars]
    return {key: scalars[key] for key in first + sorted(set(scalars) - set(first))}


def _layer_info(module: T7Module, source: str | None, value: np.ndarray, budget: LayerBudget) -> LayerInfo:
    return LayerInfo(module.lua_path, module.torch_class, _hparams(module), source, tuple(value.shape),
                     float(np.max(np.abs(value))) if value.size else 0.0, budget.conditioning)


def _output_path(root: T7Module, paths: list[str]) -> str:
    top = {child.lua_path for child in root.children}
    return next((p for p in reversed(paths) if p in top), paths[-1])


def _model_info(model, root: T7Module) -> dict[str, Any]:
    classes = [child.torch_class for child in root.children]
    if classes and classes[0] == "nn.TVLoss":
        layout = "pretrained"
    elif classes and classes[-1] == "nn.TVLoss":
        layout = "head"
    else:
        layout = "unknown"
    return {"source": "in-memory module tree" if isinstance(model, T7Module) else str(model), "layout": layout,
            "family": detect_family(root).name, "modules": sum(1 for _ in root.walk()) - 1}


def _input_notes(x: np.ndarray) -> list[str]:
    """What the tolerances assume of the input, when it is not an ordinary picture (a smooth, upscaled one)."""
    roughness = input_roughness(x)
    if roughness >= SMOOTH_ROUGHNESS:
        return []
    return [f"the input is a smooth picture (roughness {roughness:.3g}, below {SMOOTH_ROUGHNESS:g}: an upscaled one): "
            "its rounding errors stay alike across neighbouring pixels, so the tolerances let the normalisations pass "
            "them on as after a flat image (g^1.5 instead of g^0.3; docs/tolerances.md, \"Smooth pictures\")."]


def _notes(budgets, keys: list[tuple[str, str]]) -> list[str]:
    """Explanations that apply to the whole run (ill-conditioned normalisations: flat inputs, near-constant
    channels of the v1-era nets' batch norms)."""
    notes = []
    for key in sorted(set(keys)):
        dtype = key[0] if key[1] == "float64" else f"{key[0]} (normalisation statistics in {key[1]})"
        conditioned = list(iter_conditioned(budgets[key]["accumulated"]))
        if conditioned:
            worst = max(conditioned, key=lambda b: b.conditioning or 0.0)
            undetermined = [b.lua_path for b in budgets[key]["accumulated"].values() if not b.determined]
            kinds = sorted({_NORMALISATION_NAMES.get(b.torch_class, "normalisation") for b in conditioned})
            note = (f"{dtype}: {len(conditioned)} normalisation(s) ({', '.join(kinds)}) see near-constant planes "
                    f"(worst: path {worst.lua_path}, conditioning {worst.conditioning:.3g}; ordinary inputs stay "
                    f"under {G_ORDINARY:g}): rounding noise entering them is amplified by up to |gamma|/sqrt(eps) "
                    "(316x for gamma 1, eps 1e-5), so tolerances there and downstream are widened by exactly that "
                    "amplification (docs/tolerances.md, instance norm and flat inputs).")
            if undetermined:
                note += (f" {len(undetermined)} layer(s) are not determined by their input in {dtype} "
                         f"(first: {undetermined[0]}): only shape and finiteness are checked there.")
            notes.append(note)
        capped = [b for b in budgets[key]["accumulated"].values() if b.ceiling is not None]
        if capped:
            notes.append(f"{dtype}: {len(capped)} of {len(budgets[key]['accumulated'])} accumulated tolerances are "
                         f"held to the rounding ceiling, {ROUNDING_CEILING:.3g}x the reference's own float32 error "
                         "at that path on this input (the larger of its two summation orders), tighter than the "
                         "model's walk there (docs/tolerances.md, \"The rounding ceiling\").")
    return notes


_NORMALISATION_NAMES = {"nn.InstanceNormalization": "instance norm", "nn.SpatialBatchNormalization": "batch norm",
                        "cudnn.SpatialBatchNormalization": "batch norm"}


def run_one_module(run_module, lua_path: str, x: np.ndarray, noise: dict[str, np.ndarray]) -> np.ndarray:
    """``run_module(lua_path, x)``, with ``noise=`` when the model draws noise (contract/protocol.py)."""
    return run_module(lua_path, x, noise=noise) if noise else run_module(lua_path, x)


def _noise_info(noise: dict[str, np.ndarray], seed: int | None, injected: bool) -> dict[str, Any] | None:
    if not noise:
        return None
    source = "injected" if injected else f"drawn by Torch7's CPU generator after torch.manualSeed({seed or 0})"
    return {"source": source, "modules": {path: list(array.shape) for path, array in noise.items()}}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
