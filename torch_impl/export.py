"""Export the PyTorch rebuild (TorchScript, torch.export, ONNX), reload it, and check it.

Each ``export_*`` function has the signature the ``texture-nets convert`` table
expects, ``(model, out, dtype) -> str``: it writes the artefact at ``out``,
loads it back with the matching runtime, runs it and the in-memory model on a
seeded input of a different batch and an odd size than the export example (so
the dynamic batch/height/width axes are exercised), and returns a one-line
account of that check. A failed check raises :class:`ExportCheckError`.

The generator is fully convolutional: every artefact accepts any N×3×H×W.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from t7file import T7Module
from torch_impl.build import TORCH_DTYPES, load_torch_model

# Export traces with this example; checks run on CHECK_SHAPE (other batch, odd H and W).
EXAMPLE_SHAPE = (2, 3, 32, 32)
CHECK_SHAPE = (1, 3, 37, 29)
CHECK_SEED = 20160310
ONNX_OPSET = 17
# Relative to the output's max |value|. TorchScript and torch.export run the
# same ATen kernels (measured 0 on the first call; TorchScript's profiling
# executor re-optimises later calls: up to 3.0e-7); ONNX Runtime has its own
# convolution kernels: measured up to 3.4e-6 (narrow pretrained, 3x3x20x44)
# and 2.6e-6 (full-width head) in float32.
CHECK_RTOL = {"torchscript": 1e-6, "torch-export": 1e-6, "onnx": 1e-5}


class ExportCheckError(RuntimeError):
    """A reloaded artefact does not reproduce the in-memory model."""


# -- TorchScript --------------------------------------------------------------


def export_torchscript(model: str | Path | T7Module, out: str | Path, dtype: str = "float32") -> str:
    """TorchScript via torch.jit.trace: loadable with torch.jit.load and from C++ libtorch.

    Tracing records shape-generic ATen ops (convolution, replication pad,
    instance_norm), so the artefact takes any batch and size. torch.jit is
    deprecated in PyTorch 2.13 but still the format libtorch loads.
    """
    module = load_torch_model(model, dtype)
    with quiet_export_warnings(), torch.no_grad():
        traced = torch.jit.trace(module, _example(dtype), check_trace=False)
        torch.jit.save(traced, str(out))
    return _check("torchscript", module, load_torchscript(out), dtype)


def load_torchscript(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    with quiet_export_warnings():
        scripted = torch.jit.load(str(path), map_location="cpu")
    scripted.eval()
    return _numpy_callable(scripted)


# -- torch.export ---------------------------------------------------------------


def export_torch_export(model: str | Path | T7Module, out: str | Path, dtype: str = "float32") -> str:
    """An ExportedProgram (``.pt2``, torch.export.save) with dynamic batch, height and width.

    torch.export specialises sizes 0/1 and adds guards, so the artefact needs
    H, W >= 5 (smaller inputs make a stride-2 feature map 1 pixel wide).
    """
    module = load_torch_model(model, dtype)
    dynamic = torch.export.Dim.DYNAMIC
    with quiet_export_warnings():
        program = torch.export.export(module, (_example(dtype),),
                                      dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},), strict=False)
        torch.export.save(program, str(out))
    return _check("torch-export", module, load_torch_export(out), dtype)


def load_torch_export(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    with quiet_export_warnings():
        program = torch.export.load(str(path))
    return _numpy_callable(program.module())


# -- ONNX -------------------------------------------------------------------------


def export_onnx(model: str | Path | T7Module, out: str | Path, dtype: str = "float32") -> str:
    """ONNX (opset 17) with dynamic batch/height/width axes named ``input`` -> ``output``.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``): the default
    dynamo exporter needs the ``onnxscript`` package. Instance normalisation is
    exported as written in torch_impl.modules.InstanceNorm (per-plane statistics
    with double ReduceSum, no running statistics anywhere); replication padding
    becomes Pad with mode "edge". float32 only: ONNX Runtime's CPU provider has
    no float64 Conv.
    """
    if dtype != "float32":
        raise ValueError("ONNX export is float32 only (ONNX Runtime's CPU provider has no float64 Conv kernel)")
    module = load_torch_model(model, dtype)
    axes = {0: "batch", 2: "height", 3: "width"}
    with quiet_export_warnings(), torch.no_grad():
        torch.onnx.export(module, (_example(dtype),), str(out), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": axes})
    try:
        runner = load_onnx(out)
    except ImportError:
        return "written; not checked (onnxruntime is not installed)"
    return _check("onnx", module, runner, dtype)


def load_onnx(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX Runtime CPU session as a numpy -> numpy function (ImportError without onnxruntime)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(x)})[0]

    return run


# -- shared helpers -----------------------------------------------------------------


def check_input(dtype: str, shape: tuple[int, ...] = CHECK_SHAPE) -> np.ndarray:
    """The seeded RGB-in-[0,1] input every export check uses."""
    return np.random.default_rng(CHECK_SEED).random(shape).astype(dtype)


def _check(target: str, module: nn.Module, reloaded: Callable[[np.ndarray], np.ndarray], dtype: str) -> str:
    x = check_input(dtype)
    expected = _numpy_callable(module)(x)
    actual = reloaded(x)
    if actual.shape != expected.shape:
        raise ExportCheckError(f"{target}: reloaded output shape {actual.shape} != in-memory {expected.shape}")
    max_abs = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    scale = float(np.max(np.abs(expected)))
    rel = max_abs / scale if scale else max_abs
    summary = (f"reloaded and checked against the in-memory model on {'x'.join(map(str, x.shape))} {dtype}: "
               f"max |diff| {max_abs:.3g} (rel {rel:.3g}, limit {CHECK_RTOL[target]:g})")
    if not np.isfinite(actual).all() or rel > CHECK_RTOL[target]:
        raise ExportCheckError(f"{target}: {summary}")
    return summary


def _numpy_callable(module: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x))).detach().cpu().numpy()

    return run


def _example(dtype: str) -> torch.Tensor:
    # Batch 2, not 1: torch.export would otherwise specialise the batch axis to 1.
    return torch.from_numpy(check_input(dtype, EXAMPLE_SHAPE)).to(TORCH_DTYPES[dtype])


class quiet_export_warnings(warnings.catch_warnings):
    """Silence the exporters' known, expected warnings (torch.jit deprecation, the ONNX
    exporter's 'instance_norm is set to train=True', which is exactly the semantics wanted)."""

    def __enter__(self):
        result = super().__enter__()
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*instance_norm.*train=True.*")
        warnings.filterwarnings("ignore", message=r".*Constant folding.*")
        warnings.filterwarnings("ignore", message=r".*jit.*deprecated.*")
        return result
