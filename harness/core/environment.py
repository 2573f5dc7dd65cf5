"""What decided the arithmetic of a run: machine, library versions, thread counts, oneDNN, device.

Every drift report records this, because the same port can drift differently on another
machine: thread counts change reduction orders, TF_ENABLE_ONEDNN_OPTS swaps TensorFlow's
kernels, and docs/torch7-semantics.md measured a 1000x spread on flat inputs between frameworks.

Lazy by design: a framework is described only when it is already imported (that is, when a
backend of the run loaded it), so recording the environment never imports TensorFlow or
PyTorch on its own. Backends may add their own entries through an optional ``environment()``
method (see docs/verifying-a-new-port.md).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from typing import Any

import numpy as np

# Variables that set thread pools or kernel choices of the libraries this project runs.
ENVIRONMENT_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TF_ENABLE_ONEDNN_OPTS",
    "CUDA_VISIBLE_DEVICES",
)


def collect_environment(backends: dict[str, Any] | None = None) -> dict[str, Any]:
    """The environment as JSON-able data. ``backends``: name -> backend object of this run."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": _usable_cpus(),
        "variables": {name: os.environ.get(name) for name in ENVIRONMENT_VARIABLES},
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "numpy": np.__version__,
        "blas": _numpy_blas(),
        "frameworks": {},
        "device": "cpu",
        "backends": {},
    }
    frameworks = env["frameworks"]
    if "torch" in sys.modules:
        frameworks["torch"] = _torch_environment()
        if frameworks["torch"].get("cuda_device"):
            env["device"] = f"cuda: {frameworks['torch']['cuda_device']}"
    if "tensorflow" in sys.modules:
        frameworks["tensorflow"] = _tensorflow_environment()
    if "onnxruntime" in sys.modules:
        frameworks["onnxruntime"] = _onnxruntime_environment()
    for name, backend in (backends or {}).items():
        describe = getattr(backend, "environment", None)
        if callable(describe):
            try:
                env["backends"][name] = describe()
            except Exception as error:  # a plug-in's description must not break the report
                env["backends"][name] = {"error": f"{type(error).__name__}: {error}"}
    return env


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _usable_cpus() -> int | None:
    getter = getattr(os, "sched_getaffinity", None)
    return len(getter(0)) if getter else None


def _numpy_blas() -> dict[str, Any]:
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return {"name": blas.get("name"), "version": blas.get("version")}
    except Exception:  # numpy < 1.25 or an unusual build: not worth failing a report over
        return {}


def _torch_environment() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__,
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda_available": bool(torch.cuda.is_available()),
    }
    if info["cuda_available"]:
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _tensorflow_environment() -> dict[str, Any]:
    # The tf backend's environment() adds oneDNN and thread pools; this is what any TF run has.
    import tensorflow as tf

    info: dict[str, Any] = {"version": tf.__version__}
    with contextlib.suppress(Exception):
        info["gpus"] = [device.name for device in tf.config.list_physical_devices("GPU")]
    return info


def _onnxruntime_environment() -> dict[str, Any]:
    import onnxruntime

    return {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}
