"""The machine's measured float32 peak: the best large sgemm among the installed libraries, each with its own kernel.

    peak = measure_peak(size=3072, repeats=5)    # {"gflops": ..., "library": "numpy", "libraries": {...}}

Why this way (docs/benchmarks.md, "What is measured"):

* A library picks its kernel from the CPU it finds (OpenBLAS's ``DYNAMIC_ARCH`` core type, MKL's
  code path, oneDNN's ISA), unless an environment variable forces one. Some machines set
  ``OPENBLAS_CORETYPE=Haswell`` (and ``OPENBLAS_L2_SIZE``) for the sake of older OpenBLAS builds;
  on an AVX-512 machine that halves NumPy's sgemm. A user's machine sets no such variable, so each
  library is measured **in a subprocess with the forcing variables removed** (:data:`FORCING_VARIABLES`),
  and the peak is the best of them. The caller's environment is never changed.
* When one of the caller's variables forces a library's kernel, that library is measured a second
  time with the environment as it is, and reported beside (``forced``): that is the rate a backend
  running in this environment gets.
* Which kernel ran is reported from inside the measuring process: threadpoolctl's view of the
  loaded BLAS/OpenMP libraries (OpenBLAS names its core type), PyTorch's BLAS and ATen CPU
  capability, TensorFlow's oneDNN switch.

``python -m harness.bench.peak LIBRARY SIZE REPEATS`` measures one library in this process and
prints the result as JSON (what :func:`measure_peak` runs in each subprocess).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

LIBRARIES = ("numpy", "torch", "tensorflow")
INPUT_SEED = 0

# Variable -> the libraries whose kernel choice it forces (or whose blocking it sets).
FORCING_VARIABLES: dict[str, tuple[str, ...]] = {
    "OPENBLAS_CORETYPE": ("numpy",),
    "OPENBLAS_L2_SIZE": ("numpy",),
    "MKL_ENABLE_INSTRUCTIONS": ("torch",),
    "MKL_DEBUG_CPU_TYPE": ("torch",),
    "ATEN_CPU_CAPABILITY": ("torch",),
    "ONEDNN_MAX_CPU_ISA": ("torch", "tensorflow"),
    "DNNL_MAX_CPU_ISA": ("torch", "tensorflow"),
    "TF_ENABLE_ONEDNN_OPTS": ("tensorflow",),
}


def installed_libraries() -> list[str]:
    """The libraries of :data:`LIBRARIES` that can be imported here (found, not imported)."""
    return [name for name in LIBRARIES if importlib.util.find_spec(name) is not None]


def forcing_variables(library: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default: this process's) that force ``library``'s kernel."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name, libraries in FORCING_VARIABLES.items()
            if library in libraries and name in environ}


def unforced_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without any of :data:`FORCING_VARIABLES`: every library picks its own kernel."""
    return {name: value for name, value in environ.items() if name not in FORCING_VARIABLES}


# -- one library, in this process -----------------------------------------------------------------------------------
def sgemm(library: str, size: int = 3072, repeats: int = 5) -> dict[str, Any]:
    """Best and median GFLOP/s of ``repeats`` ``size``² float32 products with ``library`` (after one untimed)."""
    a, b = np.random.default_rng(INPUT_SEED).random((2, size, size), dtype=np.float32)
    product = _product(library, a, b)
    product()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    return {"library": library, "size": size, "repeats": repeats, "times_s": times,
            "gflops": flops / min(times) / 1e9, "median_gflops": flops / statistics.median(times) / 1e9,
            "loadavg": _loadavg(), "kernel": kernel_info(library),
            "forcing_variables": forcing_variables(library)}


def _product(library: str, a: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    if library == "numpy":
        out = np.empty_like(a)
        return lambda: np.matmul(a, b, out=out)
    if library == "torch":
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tout = torch.empty_like(ta)
        return lambda: torch.mm(ta, tb, out=tout)
    if library == "tensorflow":
        import tensorflow as tf

        ta, tb = tf.constant(a), tf.constant(b)
        # Eager CPU ops run synchronously: the call returns when the product is done.
        return lambda: tf.linalg.matmul(ta, tb)
    raise ValueError(f"unknown library {library!r}; known: {', '.join(LIBRARIES)}")


def kernel_info(library: str) -> dict[str, Any]:
    """Which kernel ``library`` runs here, in words and as data (call after its first product)."""
    info: dict[str, Any] = {"threadpools": _threadpools()}
    blas = [pool for pool in info["threadpools"] if pool.get("user_api") == "blas"]
    if library == "numpy":
        pool = next((p for p in blas if "scipy_openblas" in p.get("prefix", "") or p.get("prefix") == "libopenblas"),
                    blas[0] if blas else None)
        if pool is not None:
            info["summary"] = (f"{pool.get('internal_api')} {pool.get('version')}, kernel "
                               f"{pool.get('architecture') or '?'}, {pool.get('num_threads')} threads")
        else:
            info["summary"] = "NumPy's BLAS (threadpoolctl found none)"
    elif library == "torch":
        import torch

        config = torch.__config__.show()
        blas_info = next((part.split("=", 1)[1] for part in config.replace(",", " ").split()
                          if part.startswith("BLAS_INFO=")), "?")
        mkl = next((line.strip(" -") for line in config.splitlines() if "Math Kernel Library Version" in line), None)
        info.update(blas=blas_info, mkl=mkl, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    threads=torch.get_num_threads())
        info["summary"] = (f"torch.mm via {blas_info}" + (f" ({mkl.split(' for ')[0]})" if mkl else "")
                           + f", ATen CPU capability {info['cpu_capability']}, {info['threads']} threads")
    elif library == "tensorflow":
        onednn = None
        with contextlib.suppress(Exception):
            from tensorflow.python.util import _pywrap_util_port

            onednn = bool(_pywrap_util_port.IsMklEnabled())
        info["onednn"] = onednn
        info["summary"] = ("tf.linalg.matmul via " + {True: "oneDNN", False: "Eigen", None: "? (oneDNN state unknown)"}
                           [onednn])
    return info


def _threadpools() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl is not installed (pip install threadpoolctl)"}]
    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer")
    return [{key: pool.get(key) for key in keys if pool.get(key) is not None} for pool in threadpool_info()]


def _loadavg() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [round(value, 2) for value in os.getloadavg()]
    return None


# -- every library, each in its own process -------------------------------------------------------------------------
def measure_peak(size: int = 3072, repeats: int = 5, libraries: Sequence[str] | None = None,
                 environ: Mapping[str, str] | None = None, timeout_s: float = 600.0,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The best sgemm among ``libraries`` (default: the installed ones), each with the kernel it picks itself.

    Returns {"gflops", "library", "kernel", "libraries": {name: {"own": result, "forced": result or None}},
    "forcing_variables": {...}}. A library that fails is recorded with its error and left out of the peak.
    """
    say = progress or (lambda message: None)
    environ = dict(os.environ if environ is None else environ)
    own_env = unforced_environment(environ)
    results: dict[str, dict[str, Any]] = {}
    for library in libraries if libraries is not None else installed_libraries():
        forced_by = forcing_variables(library, environ)
        entry: dict[str, Any] = {"own": _run(library, size, repeats, own_env, timeout_s), "forced": None}
        if forced_by:
            entry["forced"] = _run(library, size, repeats, environ, timeout_s)
            entry["forced"]["forced_by"] = forced_by
        results[library] = entry
        say(f"  sgemm {library}: {_text(entry)}")
    measured = {name: entry["own"] for name, entry in results.items() if entry["own"].get("gflops")}
    best = max(measured, key=lambda name: measured[name]["gflops"], default=None)
    return {
        "size": size, "repeats": repeats,
        "gflops": measured[best]["gflops"] if best else None,
        "library": best,
        "kernel": measured[best]["kernel"].get("summary") if best else None,
        "libraries": results,
        "forcing_variables": {name: environ[name] for name in FORCING_VARIABLES if name in environ},
    }


def _run(library: str, size: int, repeats: int, env: Mapping[str, str], timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "harness.bench.peak", library, str(size), str(repeats)]
    try:
        completed = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout_s,
                                   check=False)
    except subprocess.TimeoutExpired:
        return {"library": library, "error": f"no result within {timeout_s:.0f} s"}
    try:
        return json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (completed.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {"library": library, "error": f"exit status {completed.returncode}: {tail[0][:300]}"}


def _text(entry: dict[str, Any]) -> str:
    own, forced = entry["own"], entry.get("forced")
    if not own.get("gflops"):
        return own.get("error", "no result")
    text = f"{own['gflops']:.1f} GFLOP/s ({own['kernel'].get('summary', '?')})"
    if forced and forced.get("gflops"):
        names = ", ".join(f"{k}={v}" for k, v in forced.get("forced_by", {}).items())
        text += f"; forced by {names}: {forced['gflops']:.1f} ({forced['kernel'].get('summary', '?')})"
    return text


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in LIBRARIES:
        print(f"usage: python -m harness.bench.peak {{{','.join(LIBRARIES)}}} SIZE REPEATS", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = sgemm(argv[0], int(argv[1]), int(argv[2]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
