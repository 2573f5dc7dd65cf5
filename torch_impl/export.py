"""Export the PyTorch rebuild (TorchScript, torch.export, ONNX), reload it, and check it.

Each ``export_*`` function has the signature the ``texture-nets convert`` table
expects, ``(model, out, dtype) -> str`` (plus an optional ``batchnorm=`` mode): it
writes the artefact at ``out``, loads it back with the matching runtime, runs it and
the in-memory model on a seeded input of a different batch and size than the export
example (so the dynamic batch/height/width axes are exercised), and returns a
one-line account of that check. A failed check raises :class:`ExportCheckError`.

Every artefact takes the model's input (N x C x H x W, C its first convolution's
planes) and, when the model draws noise (nn.GenNoise, docs/real-models.md), one
noise tensor per noise module after it, in execution order (the ``noise_paths``
recorded with the artefact): graph inputs, never baked-in values. The johnson
generators take any size; the pyramid and doodle nets take multiples of their
deepest level's factor (torch_impl.structure.size_multiple).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from t7file import T7Module, load_module_tree, trace_paths
from torch_impl.artefact import METADATA_FILE, quiet_export_warnings
from torch_impl.batchnorm import BatchNorm
from torch_impl.build import load_torch_model
from torch_impl.noise import random_noise
from torch_impl.structure import fixed_input_width, size_multiple

# Export traces with this example; checks run on CHECK_SHAPE (other batch, odd H and W) for
# generators that take any size; size-constrained nets use multiples of their factor instead.
EXAMPLE_SHAPE = (2, 3, 32, 32)
CHECK_SHAPE = (1, 3, 37, 29)
CHECK_SEED = 20160310
NOISE_SEED = 20160311
ONNX_OPSET = 17
# Relative to the output's max |value|. TorchScript and torch.export run the
# same ATen kernels (measured 0 on the first call; TorchScript's profiling
# executor re-optimises later calls: up to 3.0e-7); ONNX Runtime has its own
# convolution kernels: measured up to 3.4e-6 (narrow pretrained, 3x3x20x44)
# and 2.6e-6 (full-width head) in float32, up to 4.1e-6 on the v1-era nets
# (measurements in parity_tests/test_torch_export.py).
CHECK_RTOL = {"torchscript": 1e-6, "torch-export": 1e-6, "onnx": 1e-5}
# Where float32 itself is ill-conditioned (the v1 style nets' batch norms, docs/real-models.md "Float32
# conditioning"), two float32 runtimes differ by more than CHECK_RTOL: measured ONNX Runtime vs torch float32
# up to 2.1e-4 (pleades, 2x6x128x128). There an ONNX artefact passes when it is no farther from the float64
# in-memory model than this factor times torch float32's own distance on the same input: measured ratios
# 0.4-2.4 (starry, pleades, mosaic, pebble, doodle, demos starry; 1x48x32 ... 2x128x128).
CONDITIONING_FACTOR = 4.0
# ONNX graph input names of the noise tensors: "noise/<Lua path>", like the oracle files' keys.
ONNX_NOISE_PREFIX = "noise/"
ONNX_NOISE_PATHS_KEY = "texture_nets.noise_paths"
# The Lua paths a trace records (t7file.trace_paths), so that an .onnx file describes its own trace.
ONNX_TRACE_PATHS_KEY = "texture_nets.trace_paths"


class ExportCheckError(RuntimeError):
    """A reloaded artefact does not reproduce the in-memory model."""


@dataclass(frozen=True)
class ExportPlan:
    """One model ready to export: the built module, what its artefact takes, and the shapes to use."""

    root: T7Module
    module: nn.Module
    dtype: str
    batchnorm: str | None
    planes: int | None  # the input width the artefact fixes (None: a dynamic channel axis)
    noise_paths: tuple[str, ...]
    example_shape: tuple[int, int, int, int]
    check_shape: tuple[int, int, int, int]

    def metadata(self) -> dict:
        return {"format": "texture-nets torch_impl export 1", "dtype": self.dtype, "batchnorm": self.batchnorm,
                "input_planes": self.planes, "noise_paths": list(self.noise_paths),
                "trace_paths": list(trace_paths(self.root)), "size_multiple": size_multiple(self.root)}

    def arguments(self, shape: tuple[int, ...], seed: int = CHECK_SEED) -> tuple[np.ndarray, ...]:
        """A seeded input of ``shape`` and seeded noise of the shapes it makes the model draw."""
        x = check_input(self.dtype, shape)
        if not self.noise_paths:
            return (x,)
        noise = random_noise(self.module, torch.from_numpy(x), NOISE_SEED)
        return (x, *(noise[path] for path in self.noise_paths))


def plan_export(model: str | Path | T7Module, dtype: str, batchnorm: str | None = None) -> ExportPlan:
    root = model if isinstance(model, T7Module) else load_module_tree(model)
    module = load_torch_model(root, dtype, batchnorm=batchnorm)
    mode = next((m.mode for m in module.modules() if isinstance(m, BatchNorm)), None)
    planes = fixed_input_width(root)
    width = planes or 3
    multiple = size_multiple(root)
    if multiple == 1:
        example, check = (2, width, *EXAMPLE_SHAPE[2:]), (1, width, *CHECK_SHAPE[2:])
    else:
        # The deepest level is 2 wide (not 1: torch.export specialises size 1), then 3 x 2; batch 2 then 1.
        example, check = (2, width, 2 * multiple, 2 * multiple), (1, width, 3 * multiple, 2 * multiple)
    noise_paths = tuple(getattr(module, "noise_paths", ()))
    return ExportPlan(root, module, dtype, mode, planes, noise_paths, example, check)


# -- TorchScript --------------------------------------------------------------


def export_torchscript(model: str | Path | T7Module, out: str | Path, dtype: str = "float32", *,
                       batchnorm: str | None = None) -> str:
    """TorchScript via torch.jit.trace: loadable with torch.jit.load and from C++ libtorch.

    Tracing records shape-generic ATen ops, so the artefact takes any batch and size (that the
    model itself takes). Besides ``forward(x, *noise)`` the artefact has ``forward_trace(x, *noise)``,
    returning the output and then every traced module's output (Lua paths in its metadata), which
    ``TorchBackend().load("model.pt", dtype)`` uses. torch.jit is deprecated in PyTorch 2.13 but
    still the format libtorch loads.
    """
    plan = plan_export(model, dtype, batchnorm)
    example = _tensors(plan.arguments(plan.example_shape))
    methods = {"forward": example}
    if hasattr(plan.module, "forward_trace"):
        methods["forward_trace"] = example
    with quiet_export_warnings(), torch.no_grad():
        traced = torch.jit.trace_module(plan.module, methods, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={METADATA_FILE: json.dumps(plan.metadata())})
    return _check("torchscript", plan, load_torchscript(out))


def load_torchscript(path: str | Path) -> Callable[..., np.ndarray]:
    """A TorchScript artefact as ``run(x, *noise) -> output`` on numpy arrays."""
    with quiet_export_warnings():
        scripted = torch.jit.load(str(path), map_location="cpu")
    scripted.eval()
    return _numpy_callable(scripted)


# -- torch.export ---------------------------------------------------------------


def export_torch_export(model: str | Path | T7Module, out: str | Path, dtype: str = "float32", *,
                        batchnorm: str | None = None) -> str:
    """An ExportedProgram (``.pt2``, torch.export.save) with dynamic batch, height and width.

    torch.export specialises sizes 0/1 and adds guards, so the artefact needs H, W >= 5 for the
    johnson generators (smaller inputs make a stride-2 feature map 1 pixel wide), and the sizes
    the guards of a pyramid net allow (multiples of its factor).
    """
    plan = plan_export(model, dtype, batchnorm)
    dynamic = torch.export.Dim.DYNAMIC
    axes = {0: dynamic, 2: dynamic, 3: dynamic}
    example = _tensors(plan.arguments(plan.example_shape))
    # forward(x, *noise): torch.export sees the noise tensors as one tuple argument.
    shapes = (axes, tuple(axes for _ in example[1:])) if len(example) > 1 else (axes,)
    with quiet_export_warnings():
        program = torch.export.export(plan.module, example, dynamic_shapes=shapes, strict=False)
        torch.export.save(program, str(out))
    return _check("torch-export", plan, load_torch_export(out))


def load_torch_export(path: str | Path) -> Callable[..., np.ndarray]:
    with quiet_export_warnings():
        program = torch.export.load(str(path))
    return _numpy_callable(program.module())


# -- ONNX -------------------------------------------------------------------------


def export_onnx(model: str | Path | T7Module, out: str | Path, dtype: str = "float32", *,
                batchnorm: str | None = None) -> str:
    """ONNX (opset 17) with dynamic batch/height/width axes: ``input`` (and ``noise/<Lua path>`` per
    noise module) -> ``output``.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``): the default dynamo exporter needs
    the ``onnxscript`` package. Instance and batch normalisation are exported as written in
    torch_impl (statistics with double ReduceSum; no BatchNormalization op); replication padding
    becomes Pad with mode "edge". A tree whose input width no module fixes (a lone padding module)
    gets a dynamic channel axis too. The model's metadata lists the Lua paths of the noise inputs
    (``texture_nets.noise_paths``) and of the modules a trace records (``texture_nets.trace_paths``),
    which the ``onnx`` plug-in reads. float32 only: ONNX Runtime's CPU provider has no float64 Conv.
    """
    if dtype != "float32":
        raise ValueError("ONNX export is float32 only (ONNX Runtime's CPU provider has no float64 Conv kernel)")
    plan = plan_export(model, dtype, batchnorm)
    example = _tensors(plan.arguments(plan.example_shape))
    names = ["input", *(ONNX_NOISE_PREFIX + path for path in plan.noise_paths)]
    axes = {0: "batch", 2: "height", 3: "width"} if plan.planes else {0: "batch", 1: "channels", 2: "height",
                                                                      3: "width"}
    dynamic_axes = {"input": axes, "output": axes}
    for index, name in enumerate(names[1:], start=1):
        dynamic_axes[name] = {0: "batch", 2: f"noise{index}_height", 3: f"noise{index}_width"}
    with quiet_export_warnings(), torch.no_grad():
        torch.onnx.export(plan.module, example, str(out), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=names, output_names=["output"], dynamic_axes=dynamic_axes)
    import onnx

    proto = onnx.load(str(out))
    metadata = {ONNX_TRACE_PATHS_KEY: plan.metadata()["trace_paths"]}
    if plan.noise_paths:
        metadata[ONNX_NOISE_PATHS_KEY] = list(plan.noise_paths)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(out))
    try:
        runner = load_onnx(out)
    except ImportError:
        return "written; not checked (onnxruntime is not installed)"
    return _check("onnx", plan, runner)


def load_onnx(path: str | Path) -> Callable[..., np.ndarray]:
    """An ONNX Runtime CPU session as ``run(x, *noise) -> output`` on numpy arrays (ImportError without
    onnxruntime)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]

    def run(x: np.ndarray, *noise: np.ndarray) -> np.ndarray:
        feeds = dict(zip(names, (np.ascontiguousarray(x), *map(np.ascontiguousarray, noise)), strict=True))
        return session.run(None, feeds)[0]

    return run


# -- shared helpers -----------------------------------------------------------------


def check_input(dtype: str, shape: tuple[int, ...] = CHECK_SHAPE) -> np.ndarray:
    """The seeded input in [0,1) every export check uses."""
    return np.random.default_rng(CHECK_SEED).random(shape).astype(dtype)


def _check(target: str, plan: ExportPlan, reloaded: Callable[..., np.ndarray]) -> str:
    arguments = plan.arguments(plan.check_shape)
    x = arguments[0]
    expected = _numpy_callable(plan.module)(*arguments)
    try:
        actual = reloaded(*arguments)
    except Exception as error:  # the runtime refuses the check input: its dynamic axes do not work
        raise ExportCheckError(f"{target}: the reloaded artefact cannot run a {'x'.join(map(str, x.shape))} input: "
                               f"{str(error).strip().splitlines()[0][:300]}") from None
    if actual.shape != expected.shape:
        raise ExportCheckError(f"{target}: reloaded output shape {actual.shape} != in-memory {expected.shape}")
    max_abs, rel = _distance(actual, expected)
    noise = f" with {len(arguments) - 1} noise inputs" if len(arguments) > 1 else ""
    where = f"on {'x'.join(map(str, x.shape))} {plan.dtype}{noise}"
    limit = f"{CHECK_RTOL[target]:g}"
    if not np.isfinite(actual).all():
        raise ExportCheckError(f"{target}: the reloaded artefact's output {where} is not finite")
    passed = rel <= CHECK_RTOL[target]
    if not passed and target == "onnx" and plan.dtype == "float32":
        # Another float32 runtime on an ill-conditioned input: judge both against float64 instead.
        exact = _numpy_callable(load_torch_model(plan.root, "float64", batchnorm=plan.batchnorm))(
            *(array.astype(np.float64) for array in arguments))
        own, artefact = _distance(expected, exact)[1], _distance(actual, exact)[1]
        passed = artefact <= CONDITIONING_FACTOR * own
        # One clause without commas or parentheses: texture-nets convert reads the limit back.
        limit += (f"; float32 is ill-conditioned here: the artefact is rel {artefact:.3g} from float64 against "
                  f"{CONDITIONING_FACTOR:g} x torch float32's {own:.3g}")
    summary = (f"reloaded and checked against the in-memory model {where}: max |diff| {max_abs:.3g} "
               f"(rel {rel:.3g}, limit {limit})")
    if not passed:
        raise ExportCheckError(f"{target}: {summary}")
    return summary


def _distance(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max |diff|, max |diff| / max |expected|)."""
    max_abs = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected)))
    return max_abs, (max_abs / scale if scale else max_abs)


def _numpy_callable(module: Callable[..., torch.Tensor]) -> Callable[..., np.ndarray]:
    def run(x: np.ndarray, *noise: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(*_tensors((x, *noise))).detach().cpu().numpy()

    return run


def _tensors(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(array)) for array in arrays)
