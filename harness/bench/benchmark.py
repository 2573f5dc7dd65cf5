"""The benchmark: wall time, GFLOP/s, share of the machine's real peak and peak memory, per model, backend and size.

    results = run_bench(BenchConfig(models=[BenchModel("generator", path)], runs=default_runs(), sizes=(256, 512)))

What is measured, and why this way (docs/benchmarks.md):

* **Time**: ``repeats`` forward passes on one seeded input after ``warmup`` passes (graph
  building, tracing, allocator and BLAS buffer set-up happen there), each timed with
  ``perf_counter``; the median is the figure, min/max and the quartiles are the spread. The input
  follows the model's family (contract/families.py: the picture for the johnson nets, the picture
  twice for the v1 style nets, zeros for the v1 texture nets), from a seeded random picture; models
  that draw noise get the noise Torch7 draws after ``torch.manualSeed(0)`` (harness.core.noise),
  and models with batch norms their family's mode (harness.core.runs).
* **GFLOP/s** from the convolution FLOPs of the model's own module tree (:func:`conv_flops`, on
  harness.core.shapes' walk: ``2·nOut·nIn·kH·kW·Hout·Wout`` per convolution, the same over input
  positions for a transposed one; everything else is free). 15.6/62.5/250 GFLOP at
  256²/512²/1024² for the full-width generator.
* **% of peak**: the best large sgemm among the installed libraries (NumPy, PyTorch, TensorFlow),
  each measured in a subprocess with the kernel it picks itself (harness.bench.peak: variables that
  force a kernel, such as ``OPENBLAS_CORETYPE``, removed there and reported beside), before and
  after the backends; the better of the two is the peak. **% of physical**: the CPU's own limit,
  cores × clock × FMA lanes × FMA pipes × 2 (harness.bench.machine), each factor with its source.
* **Load**: a cell measured while the machine was busy with other work (1-minute load average
  above the usable cores before it, or other processes using more than a quarter of the cores
  during it, from /proc/stat) is flagged ``loaded`` and gets no share of the peak: a ratio to a
  peak measured at another moment would mean nothing.
* **Peak memory**: every (model, backend, dtype, size) runs in a fresh subprocess and reports its
  own ``ru_maxrss``, so one framework's arenas never count against another, nor a small size's
  against a large one. ``rss_after_load`` tells the model and framework from the forward pass.
* **Threads and CPU use**: the thread pools each library reports and ``cpu_per_wall`` = process
  CPU seconds per wall second over the timed runs (2.0 = both cores busy).

Heavy frameworks are imported only in the workers (``python -m harness.bench.benchmark --worker``).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract.families import CONVOLUTIONS, batchnorm_mode, detect_family, image_to_input, input_planes
from harness.bench.machine import physical_limit
from harness.bench.peak import LIBRARIES, installed_libraries, measure_peak
from harness.core.shapes import ShapeError, walk_shapes
from t7file import T7Module, load_module_tree

SCHEMA = "texture-nets-bench/2"  # 2: several models, the peak over libraries, the physical limit, loaded cells
DEFAULT_SIZES = (256, 512, 1024)
FULL_WIDTHS = (32, 64, 128)
MODEL_SEED = 1
MODEL_LAYOUT = "pretrained"
INPUT_SEED = 0
NOISE_SEED = 0
GIB = 2**30
FRAMEWORK_BACKENDS_EXCLUDED = frozenset({"reference"})  # "every framework backend" in the performance targets
# Other processes using more than this share of the usable cores during a cell make it "loaded".
OTHER_WORK_LIMIT = 0.25

# The performance targets (docs/benchmarks.md; ratios within one run on this machine kind).
TARGET_SIZE = 512
TARGET_BEST_PEAK = 0.70
TARGET_FRAMEWORK_PEAK = 0.50
TARGET_REFERENCE_VS_BEST = 1.5
TARGET_FLOAT64_VS_FLOAT32 = 2.5
TARGET_RSS_SIZE = 2048
TARGET_RSS_BYTES = 4 * GIB

_FULL_CONVOLUTIONS = frozenset({"nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution"})


# -- FLOPs from the module tree ----------------------------------------------------------------------------------
def conv_flops(root: T7Module, height: int, width: int, batch: int = 1) -> int:
    """Multiply-add FLOPs (2 per MAC) of every convolution in ``root`` for a batch×planes×height×width input.

    Shapes come from harness.core.shapes (Torch7's size rules through Sequential, ConcatTable,
    CAddTable, Concat, paddings, poolings and upsamplings); layers other than convolutions count
    zero. A transposed convolution does ``nIn·nOut·kH·kW`` MACs per *input* position (THNN: one
    GEMM over the input, then col2im).
    """
    walk = walk_shapes(root, (batch, input_planes(root), height, width))
    total = 0
    for module in root.walk():
        cls = module.torch_class
        if cls not in CONVOLUTIONS and cls not in _FULL_CONVOLUTIONS:
            continue
        n, c_in, h_in, w_in = walk.inputs[module.lua_path]
        _, c_out, h_out, w_out = walk.outputs[module.lua_path]
        positions = h_out * w_out if cls in CONVOLUTIONS else h_in * w_in
        total += 2 * c_out * c_in * module.integer("kH") * module.integer("kW") * positions * n
    return total


# -- environment helpers -------------------------------------------------------------------------------------------
def loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, ValueError):
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        # guest time is already counted in user time
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return None


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def openblas_info() -> dict[str, Any]:
    """OpenBLAS's thread count, configuration and core type, read from the library NumPy has loaded."""
    library = _loaded_library("openblas")
    if library is None:
        return {}
    info: dict[str, Any] = {"library": Path(library).name}
    try:
        handle = ctypes.CDLL(library)
    except OSError:
        return info
    for key, names, restype in (
        ("threads", ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"),
         ctypes.c_int),
        ("config", ("scipy_openblas_get_config64_", "openblas_get_config64_", "openblas_get_config"), ctypes.c_char_p),
        ("core", ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"),
         ctypes.c_char_p),
    ):
        for name in names:
            function = getattr(handle, name, None)
            if function is not None:
                function.restype = restype
                value = function()
                info[key] = value.decode() if isinstance(value, bytes) else value
                break
    return info


def _loaded_library(fragment: str) -> str | None:
    with contextlib.suppress(OSError), open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if fragment in Path(path).name.lower() and ".so" in path:
                return path
    return None


def thread_counts(backend: Any = None) -> dict[str, Any]:
    """Thread pools of every library loaded in this process (without importing any)."""
    threads: dict[str, Any] = {"openblas": openblas_info().get("threads")}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        threads["torch_intra_op"] = torch.get_num_threads()
        threads["torch_inter_op"] = torch.get_num_interop_threads()
    if "tensorflow" in sys.modules:
        with contextlib.suppress(Exception):
            tf = sys.modules["tensorflow"]
            # 0 means TensorFlow's default: one thread per core.
            threads["tf_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
            threads["tf_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    if backend is not None and hasattr(backend, "num_threads"):
        threads["backend_num_threads"] = backend.num_threads  # None: the backend's/library's default
    return threads


# -- one measurement, in a worker process --------------------------------------------------------------------------
def parse_run(spec: str, default_dtype: str = "float32") -> tuple[str, str]:
    """``name`` or ``name-float32``/``name-float64`` (the drift command's convention) -> (name, dtype)."""
    from harness.core.registry import parse_run_spec

    run = parse_run_spec(spec, default_dtype)
    return run.backend, run.dtype


def model_input(root: T7Module, size: int, dtype: str, batch: int = 1) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(the input ``forward`` receives, the noise it draws) for a seeded random picture of ``size``², by the
    model's family (contract/families.py) and Torch7's generator after ``torch.manualSeed(0)``."""
    from harness.core.noise import noise_for_run

    picture = np.random.default_rng(INPUT_SEED).random((batch, 3, size, size))
    family = detect_family(root)
    planes = input_planes(root)
    x = image_to_input(picture, family, planes) if family.kind != "doodle" else _mask_input(picture, planes)
    x = np.ascontiguousarray(x, dtype=dtype)
    return x, noise_for_run(root, x.shape, seed=NOISE_SEED, dtype=dtype)


def _mask_input(picture: np.ndarray, planes: int) -> np.ndarray:
    from contract.families import mask_to_input

    return mask_to_input(picture, planes)[0]


def measure(backend_name: str, dtype: str, model: str, size: int, repeats: int, warmup: int,
            batch: int = 1) -> dict[str, Any]:
    """Load one backend and time its forward pass at ``size``² (call in a fresh process: it reads ru_maxrss)."""
    from harness.core.environment import collect_environment
    from harness.core.registry import get_backend
    from harness.core.runs import forward, has_batch_norm, load_runner

    result: dict[str, Any] = {"backend": backend_name, "dtype": dtype, "size": size, "batch": batch}
    backend = get_backend(backend_name)
    if dtype not in backend.dtypes:
        return {**result, "status": "unsupported", "error": f"supports {', '.join(backend.dtypes)} only"}
    root = load_module_tree(model)
    x, noise = model_input(root, size, dtype, batch)
    batchnorm = batchnorm_mode(root) if has_batch_norm(root) else None
    result["rss_before_load_bytes"] = _max_rss_bytes()
    start = time.perf_counter()
    runner = load_runner(backend, model, dtype, root=root, batchnorm=batchnorm)
    result["load_s"] = time.perf_counter() - start
    result["rss_after_load_bytes"] = _max_rss_bytes()
    warmup_times = []
    for _ in range(warmup):
        start = time.perf_counter()
        output, _ = forward(runner, x, noise=noise)
        warmup_times.append(time.perf_counter() - start)
    times = []
    cpu_start = _cpu_seconds()
    for _ in range(repeats):
        start = time.perf_counter()
        output, _ = forward(runner, x, noise=noise)
        times.append(time.perf_counter() - start)
    cpu = _cpu_seconds() - cpu_start
    output = np.asarray(output)
    result.update(
        status="ok",
        input_shape=list(x.shape),
        noise_modules=len(noise),
        batchnorm=batchnorm,
        warmup_s=warmup_times,
        times_s=times,
        cpu_per_wall=cpu / sum(times) if times and sum(times) > 0 else None,
        output_shape=list(output.shape),
        output_finite=bool(np.isfinite(output).all()),
        peak_rss_bytes=_max_rss_bytes(),
        threads=thread_counts(backend),
        environment=collect_environment({backend_name: backend}),
    )
    result["environment"]["openblas"] = openblas_info()
    # A backend's own thread settings (e.g. ONNX Runtime's intra-op pool; 0 = its default: one per core).
    for key, value in result["environment"]["backends"].get(backend_name, {}).items():
        if "thread" in key:
            result["threads"][f"{backend_name}_{key}"] = value
    return result


def _max_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker_main(spec_path: str, result_path: str) -> int:
    """``python -m harness.bench.benchmark --worker SPEC.json RESULT.json``: run :func:`measure`, write its result."""
    from harness.core.malloc import keep_freed_memory

    keep_freed_memory()  # what the texture-nets command runs with (harness/core/malloc.py)
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = measure(**spec)
    except Exception as error:  # any failure becomes a row of the table, not a crashed benchmark
        from contract import BackendError

        status = "unavailable" if isinstance(error, BackendError) and "not installed" in str(error) else "error"
        result = {"backend": spec["backend_name"], "dtype": spec["dtype"], "size": spec["size"], "status": status,
                  "error": f"{type(error).__name__}: {error}".splitlines()[0][:500]}
    Path(result_path).write_text(json.dumps(result, default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


# -- the run -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchModel:
    """One model to time: a short ``name`` for the tables, its .t7 ``path``, and what it is (``description``)."""

    name: str
    path: Path
    description: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchConfig:
    """Everything that decides a benchmark run. ``runs``: (backend, dtype) pairs, in table order; ``models``:
    the models, in table order (the first is the one the performance targets are read from)."""

    models: Sequence[BenchModel]
    runs: Sequence[tuple[str, str]]
    sizes: Sequence[int] = DEFAULT_SIZES
    repeats: int = 5
    warmup: int = 1
    rss_sizes: Sequence[int] = ()
    threads: int | None = None
    sgemm_size: int = 3072
    sgemm_repeats: int = 5
    peak_libraries: Sequence[str] | None = None  # None: every installed one of harness.bench.peak.LIBRARIES
    timeout_s: float = 1800.0
    command: str = ""


def default_runs() -> list[tuple[str, str]]:
    """The benchmark table: the reference in float32 and float64, every other installed faithful backend in float32."""
    from harness.core.registry import available_backend_names, is_faithful

    runs = [("reference", "float32"), ("reference", "float64")]
    runs += [(name, "float32") for name in available_backend_names(installed_only=True)
             if name != "reference" and is_faithful(name)]
    return runs


def worker_environment(threads: int | None) -> dict[str, str]:
    """The workers' environment: the caller's, with thread pools pinned when ``threads`` is given.

    Variables that force a library's kernel (``OPENBLAS_CORETYPE``) are kept: the backends run as
    they would in this environment; the peak is measured both ways (harness.bench.peak).
    """
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, not its arithmetic
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            env[name] = str(threads)
    return env


def run_worker(spec: dict[str, Any], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run :func:`measure` in a fresh interpreter and return its result (errors and timeouts as rows)."""
    base = {"backend": spec["backend_name"], "dtype": spec["dtype"], "size": spec["size"]}
    with tempfile.TemporaryDirectory(prefix="texture-nets-bench-") as folder:
        spec_path, result_path = Path(folder) / "spec.json", Path(folder) / "result.json"
        spec_path.write_text(json.dumps(spec))
        command = [sys.executable, "-m", "harness.bench.benchmark", "--worker", str(spec_path), str(result_path)]
        try:
            completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s,
                                       check=False)
        except subprocess.TimeoutExpired:
            return {**base, "status": "timeout", "error": f"no result within {timeout_s:.0f} s"}
        if completed.returncode != 0 or not result_path.exists():
            tail = (completed.stderr or completed.stdout or "").strip().splitlines()[-1:] or ["no output"]
            # A worker killed by the kernel (e.g. out of memory) has a negative return code.
            return {**base, "status": "error", "error": f"worker exited with status {completed.returncode}: {tail[0]}"}
        return json.loads(result_path.read_text())


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the peak, every (model, run, size), the RSS sizes, the peak again; return the report as data."""
    say = progress or (lambda message: None)
    sizes = sorted(set(config.sizes) | set(config.rss_sizes))
    models = []
    for model in config.models:
        root = load_module_tree(model.path)
        models.append({"name": model.name, "path": str(model.path), **model.description,
                       "family": detect_family(root).name, "input_planes": input_planes(root),
                       "conv_flops": {str(size): _flops_or_none(root, size) for size in sizes}})
    limit = physical_limit()
    cores = limit["cores"]["value"]
    libraries = list(config.peak_libraries) if config.peak_libraries is not None else installed_libraries()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": config.command,
        "model": models[0] if models else None,
        "models": models,
        "settings": {"sizes": list(config.sizes), "repeats": config.repeats, "warmup": config.warmup,
                     "rss_sizes": list(config.rss_sizes), "threads": config.threads, "batch": 1,
                     "input": f"the family's input for numpy.random.default_rng({INPUT_SEED}).random((1, 3, S, S)); "
                              f"noise drawn after torch.manualSeed({NOISE_SEED})",
                     "peak_libraries": libraries},
        "physical_limit": limit,
        "loadavg_start": loadavg(),
    }
    env = worker_environment(config.threads)
    say(f"peak: best {config.sgemm_size}² float32 sgemm among {', '.join(libraries)}, each with its own kernel ...")
    peak_before = _peak(config, libraries, env, cores, say)
    results: list[dict[str, Any]] = []
    jobs = [(model, name, dtype, size, config.repeats, config.warmup, "time") for model in models
            for name, dtype in config.runs for size in config.sizes]
    jobs += [(model, name, dtype, size, 1, 0, "rss") for model in models for name, dtype in config.runs
             for size in config.rss_sizes]
    for model, name, dtype, size, repeats, warmup, mode in jobs:
        say(f"{model['name']}: {name} {dtype} {size}² ({mode}: {warmup} warm-up + {repeats} timed) ...")
        spec = {"backend_name": name, "dtype": dtype, "model": model["path"], "size": size,
                "repeats": repeats, "warmup": warmup}
        load_before, busy_before, children_before = loadavg(), busy_cpu_seconds(), _children_cpu_seconds()
        started = time.perf_counter()
        result = run_worker(spec, env, config.timeout_s)
        result.update(model=model["name"], mode=mode, loadavg_before=load_before,
                      other_cores=_other_cores(busy_before, children_before, time.perf_counter() - started))
        result["loaded"] = is_loaded(load_before, result["other_cores"], cores)
        _summarise(result, model["conv_flops"][str(size)])
        say("  " + _one_line(result))
        results.append(result)
    say("peak again ...")
    peak_after = _peak(config, libraries, env, cores, say)
    measured = [p for p in (peak_before, peak_after) if p.get("gflops")]
    peak = max(measured, key=lambda p: p["gflops"], default={})
    peak_gflops = peak.get("gflops")
    if peak_gflops and limit.get("gflops") and peak_gflops > limit["gflops"]:
        # The clock read is below the one the cores ran at (turbo; a VM reports its host's nominal clock).
        limit["implied_clock_ghz"] = round(limit["clock_ghz"]["ghz"] * peak_gflops / limit["gflops"], 3)
    for result in results:
        if result.get("gflops") is None:
            continue
        if limit.get("gflops"):
            result["percent_of_physical"] = 100.0 * result["gflops"] / limit["gflops"]
        if peak_gflops and not result["loaded"] and not peak.get("loaded"):
            result["percent_of_peak"] = 100.0 * result["gflops"] / peak_gflops
    report.update(
        peak={"gflops": peak_gflops, "library": peak.get("library"), "kernel": peak.get("kernel"),
              "loaded": peak.get("loaded"), "before": peak_before, "after": peak_after},
        results=results,
        loadavg_end=loadavg(),
        parent_environment={"python": platform.python_version(), "numpy": np.__version__,
                            "openblas": openblas_info(), "cpu_count": os.cpu_count()},
    )
    report["targets"] = evaluate_targets(report)
    return report


def _flops_or_none(root: T7Module, size: int) -> int | None:
    """conv_flops, or None when the model cannot take this size or has a class the shape walk does not know
    (its cells then run, and fail or time, without GFLOP/s)."""
    try:
        return conv_flops(root, size, size)
    except ShapeError:
        return None


def _peak(config: BenchConfig, libraries: list[str], env: dict[str, str], cores: int, say) -> dict[str, Any]:
    load_before, busy_before, children_before = loadavg(), busy_cpu_seconds(), _children_cpu_seconds()
    started = time.perf_counter()
    peak = measure_peak(config.sgemm_size, config.sgemm_repeats, libraries, environ=env, progress=say)
    peak["loadavg_before"] = load_before
    peak["other_cores"] = _other_cores(busy_before, children_before, time.perf_counter() - started)
    peak["loaded"] = is_loaded(load_before, peak["other_cores"], cores)
    if peak["gflops"]:
        say(f"  peak {peak['gflops']:.1f} GFLOP/s ({peak['library']}){' LOADED' if peak['loaded'] else ''}")
    return peak


def _other_cores(busy_before: float | None, children_before: float, wall: float) -> float | None:
    """Cores' worth of CPU that processes other than the bench's workers used over the last ``wall`` seconds."""
    busy_after = busy_cpu_seconds()
    if busy_before is None or busy_after is None or wall <= 0:
        return None
    others = (busy_after - busy_before) - (_children_cpu_seconds() - children_before)
    return round(max(0.0, others) / wall, 3)


def is_loaded(load_before: list[float] | None, other_cores: float | None, cores: int) -> bool:
    """Whether a measurement shared the machine: the 1-minute load average above the usable cores before it,
    or other processes busy on more than OTHER_WORK_LIMIT of the cores during it."""
    if load_before and load_before[0] > cores:
        return True
    return other_cores is not None and other_cores > OTHER_WORK_LIMIT * cores


def _summarise(result: dict[str, Any], flops: int | None) -> None:
    result["conv_flops"] = flops
    times = result.get("times_s")
    if result.get("status") != "ok" or not times:
        return
    ordered = sorted(times)
    quartiles = np.percentile(ordered, [25, 75]).tolist() if len(ordered) > 1 else [ordered[0], ordered[0]]
    median = statistics.median(ordered)
    result.update(median_s=median, min_s=ordered[0], max_s=ordered[-1], p25_s=quartiles[0], p75_s=quartiles[1],
                  gflops=flops / median / 1e9 if flops else None)


def _one_line(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('error', '')}"
    loaded = f", LOADED (load {result['loadavg_before'][0]:.1f})" if result.get("loaded") else ""
    gflops = "n/a" if result.get("gflops") is None else f"{result['gflops']:.1f}"
    return (f"median {result['median_s']:.3f} s (min {result['min_s']:.3f}, max {result['max_s']:.3f}), "
            f"{gflops} GFLOP/s, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB, "
            f"CPU/wall {result['cpu_per_wall'] or 0:.2f}{loaded}")


# -- the performance targets ----------------------------------------------------------------------------------------
def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each performance target as {target, value, limit, met, loaded} on the first model's rows (met is None when
    the run lacks the data; a share of the peak is not evaluated on a loaded cell; a ratio of two loaded cells is
    evaluated and marked ``loaded``)."""
    first = (report.get("models") or [{}])[0].get("name")
    rows = [r for r in report["results"] if r.get("model", first) == first]
    timed = [r for r in rows if r.get("mode") == "time" and r.get("status") == "ok"]
    at_size = {(r["backend"], r["dtype"]): r for r in timed if r["size"] == TARGET_SIZE}
    targets: list[dict[str, Any]] = []

    def add(target: str, value: float | None, limit: float, higher_is_better: bool, detail: str = "",
            loaded: bool = False) -> None:
        met = None if value is None else (value >= limit if higher_is_better else value <= limit)
        targets.append({"target": target, "value": value, "limit": limit, "met": met, "detail": detail,
                        "loaded": loaded})

    def share(result: dict[str, Any] | None) -> float | None:
        percent = (result or {}).get("percent_of_peak")
        return None if percent is None else percent / 100

    best = min(at_size.values(), key=lambda r: r["median_s"], default=None)  # the fastest: same model and size
    add(f"best backend >= {TARGET_BEST_PEAK:.0%} of the peak at {TARGET_SIZE}²", share(best), TARGET_BEST_PEAK, True,
        (f"{best['backend']} {best['dtype']}" + (", loaded: no share" if best.get("loaded") else ""))
        if best else "no run at this size", bool(best and best.get("loaded")))
    for (name, dtype), result in at_size.items():
        if name not in FRAMEWORK_BACKENDS_EXCLUDED:
            add(f"{name} {dtype} >= {TARGET_FRAMEWORK_PEAK:.0%} of the peak at {TARGET_SIZE}²", share(result),
                TARGET_FRAMEWORK_PEAK, True, "loaded: no share" if result.get("loaded") else "",
                bool(result.get("loaded")))
    reference32, reference64 = at_size.get(("reference", "float32")), at_size.get(("reference", "float64"))
    add(f"reference float32 within {TARGET_REFERENCE_VS_BEST}x of the best backend at {TARGET_SIZE}²",
        reference32["median_s"] / best["median_s"] if reference32 and best else None, TARGET_REFERENCE_VS_BEST,
        False, f"best: {best['backend']} {best['dtype']}" if best else "",
        bool(reference32 and best and (reference32.get("loaded") or best.get("loaded"))))
    add(f"reference float64 within {TARGET_FLOAT64_VS_FLOAT32}x of float32 at {TARGET_SIZE}²",
        reference64["median_s"] / reference32["median_s"] if reference64 and reference32 else None,
        TARGET_FLOAT64_VS_FLOAT32, False, "",
        bool(reference64 and reference32 and (reference64.get("loaded") or reference32.get("loaded"))))
    for result in rows:
        if result.get("mode") == "rss" and result["size"] == TARGET_RSS_SIZE:
            value = result.get("peak_rss_bytes")
            add(f"{result['backend']} {result['dtype']} peak RSS < 4 GiB at {TARGET_RSS_SIZE}²",
                value / GIB if value is not None else None, TARGET_RSS_BYTES / GIB, False,
                result.get("status", "") if value is None else "")
    return targets


# -- Markdown view -------------------------------------------------------------------------------------------------
def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page: settings, the peak and the physical limit, the timing table, memory, targets."""
    env = _first_environment(report)
    several = len(report.get("models", [])) > 1
    lines = [
        "# texture-nets bench",
        "",
        f"- command: `{report['command']}`" if report.get("command") else "- command: (library call)",
        f"- created: {report['created']}; load average (1/5/15 min) at start {_load(report.get('loadavg_start'))}, "
        f"at end {_load(report.get('loadavg_end'))}",
        f"- machine: {env.get('cpu', '?')}, {env.get('usable_cpus', env.get('cpu_count', '?'))} usable CPUs; "
        f"Python {env.get('python', '?')}, NumPy {env.get('numpy', '?')}"
        + "".join(f", {name} {_version(info)}" for name, info in _frameworks(report).items()),
        *[f"- model{' ' + m['name'] if several else ''}: {_model_text(m)}" for m in report.get("models", [])],
        *_peak_lines(report),
        *_physical_lines(report.get("physical_limit") or {}),
        f"- each cell: median of {report['settings']['repeats']} forward passes after "
        f"{report['settings']['warmup']} warm-up, 1×C×S×S input (the family's), each (model, backend, size) in its "
        "own process; load = 1-minute load average just before the cell; **loaded** = the machine was busy with "
        "other work (load above the cores, or other processes on more than a quarter of them during the cell): "
        "no share of the peak",
        "",
        f"| {'model | ' if several else ''}backend | dtype | size | median s | min–max s | GFLOP/s | % peak "
        "| % physical | peak RSS MiB | CPU/wall | load | threads |",
        f"|{'---|' if several else ''}---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in report["results"]:
        if result.get("mode") == "time":
            lines.append(_row(result, several))
    memory = [r for r in report["results"] if r.get("mode") == "rss"]
    if memory:
        lines += ["", "Peak memory of one forward pass (fresh process each; ru_maxrss):", "",
                  f"| {'model | ' if several else ''}backend | dtype | size | peak RSS MiB | after load MiB | time s |",
                  f"|{'---|' if several else ''}---|---|---|---|---|---|"]
        for result in memory:
            head = f"| {result.get('model')} " if several else ""
            head += f"| {result['backend']} | {result['dtype']} | {result['size']}² |"
            if result.get("status") == "ok":
                lines.append(f"{head} {result['peak_rss_bytes'] / 2**20:.0f} | "
                             f"{result['rss_after_load_bytes'] / 2**20:.0f} | {result['median_s']:.2f} |")
            else:
                lines.append(f"{head} {result.get('status')}: {result.get('error', '')} | | |")
    if report.get("targets"):
        lines += ["", "Performance targets" + (f" ({report['models'][0]['name']})" if several else "") + ":", "",
                  "| target | value | limit | met |", "|---|---|---|---|"]
        for target in report["targets"]:
            value = "n/a" if target["value"] is None else f"{target['value']:.2f}"
            met = {True: "yes", False: "**no**", None: "not measured"}[target["met"]]
            if target.get("loaded") and target["met"] is not None:
                met += " (loaded)"
            detail = f" ({target['detail']})" if target.get("detail") else ""
            lines.append(f"| {target['target']}{detail} | {value} | {target['limit']:.2f} | {met} |")
    return "\n".join(lines) + "\n"


def _peak_lines(report: dict[str, Any]) -> list[str]:
    peak = report.get("peak") or {}
    lines = []
    for when in ("before", "after"):
        measured = peak.get(when) or {}
        parts = []
        for library, entry in (measured.get("libraries") or {}).items():
            own, forced = entry.get("own") or {}, entry.get("forced")
            text = (f"{library} {own['gflops']:.1f} ({own.get('kernel', {}).get('summary', '?')})"
                    if own.get("gflops") else f"{library}: {own.get('error', 'no result')}")
            if forced and forced.get("gflops"):
                names = ", ".join(f"{k}={v}" for k, v in forced.get("forced_by", {}).items())
                text += (f"; as run here with {names}: {forced['gflops']:.1f} "
                         f"({forced.get('kernel', {}).get('summary', '?')})")
            parts.append(text)
        loaded = (f"; **loaded** (load {_load(measured.get('loadavg_before'))}, other processes on "
                  f"{measured.get('other_cores')} cores)") if measured.get("loaded") else ""
        lines.append(f"- sgemm {when} the backends ({measured.get('size', '?')}² float32, best of "
                     f"{measured.get('repeats', '?')}, GFLOP/s, each library in its own process with the kernel it "
                     f"picks itself): {'; '.join(parts) or 'none measured'}{loaded}")
    if peak.get("gflops"):
        lines.append(f"- **peak** (the best of these): {peak['gflops']:.1f} GFLOP/s, {peak.get('library')}: "
                     f"{peak.get('kernel')}" + (" — measured under load" if peak.get("loaded") else ""))
    else:
        lines.append("- **peak**: not measured")
    return lines


def _physical_lines(limit: dict[str, Any]) -> list[str]:
    if not limit:
        return []
    if limit.get("gflops") is None:
        return [f"- physical limit: not known ({limit.get('clock_ghz', {}).get('source', 'no clock')})"]
    return [
        f"- **physical limit**: {limit['gflops']:.1f} GFLOP/s = {limit['cores']['value']} cores × "
        f"{limit['clock_ghz']['ghz']:.3g} GHz × {limit['fma_lanes']['value']} float32 FMA lanes × "
        f"{limit['fma_pipes']['value']} FMA pipe(s) × 2 ({limit.get('cpu', '?')}). Cores: {limit['cores']['source']}; "
        f"clock: {limit['clock_ghz']['source']}; lanes: {limit['fma_lanes']['source']}; pipes: "
        f"{limit['fma_pipes']['source']}"
        + (f". **The measured peak is above this limit**: the cores ran at {limit['implied_clock_ghz']:.3g} GHz or "
           "faster (turbo), so the clock read understates the limit" if limit.get("implied_clock_ghz") else ""),
    ]


def _row(result: dict[str, Any], several: bool = False) -> str:
    head = f"| {result.get('model')} " if several else ""
    head += f"| {result['backend']} | {result['dtype']} | {result['size']}² |"
    if result.get("status") != "ok":
        return f"{head} {result.get('status')}: {result.get('error', '')} | | | | | | | | |"
    threads = ", ".join(f"{k}={v}" for k, v in result.get("threads", {}).items() if v is not None)
    share = "loaded" if result.get("loaded") else _percent(result.get("percent_of_peak"))
    load = (result.get("loadavg_before") or ["n/a"])[0]
    if result.get("loaded"):
        load = f"**{load}**" + (f", others {result['other_cores']}" if result.get("other_cores") is not None else "")
    gflops = "n/a" if result.get("gflops") is None else f"{result['gflops']:.1f}"
    return (f"{head} {result['median_s']:.3f} | {result['min_s']:.3f}–{result['max_s']:.3f} | "
            f"{gflops} | {share} | {_percent(result.get('percent_of_physical'))} | "
            f"{result['peak_rss_bytes'] / 2**20:.0f} | {result['cpu_per_wall'] or 0:.2f} | {load} | {threads} |")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"


def _first_environment(report: dict[str, Any]) -> dict[str, Any]:
    for result in report["results"]:
        if "environment" in result:
            return result["environment"]
    return report.get("parent_environment", {})


def _frameworks(report: dict[str, Any]) -> dict[str, Any]:
    frameworks: dict[str, Any] = {}
    for result in report["results"]:
        frameworks.update(result.get("environment", {}).get("frameworks", {}))
    return frameworks


def _version(info: dict[str, Any]) -> str:
    return str(info.get("version") or info.get("tensorflow") or "?")


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"


def _model_text(model: dict[str, Any]) -> str:
    flops = ", ".join(f"{size}²: {'n/a' if value is None else f'{value / 1e9:.3g}'}"
                      for size, value in model["conv_flops"].items())
    skip = ("name", "path", "conv_flops")
    described = ", ".join(f"{k} {v}" for k, v in model.items() if k not in skip)
    return f"`{model['path']}`" + (f" ({described})" if described else "") + f"; conv GFLOP {flops}"


__all__ = ["LIBRARIES", "BenchConfig", "BenchModel", "conv_flops", "default_runs", "evaluate_targets", "measure",
           "model_input", "parse_run", "render_markdown", "run_bench"]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
    print("usage: python -m harness.bench.benchmark --worker SPEC.json RESULT.json (use `texture-nets bench`)",
          file=sys.stderr)
    sys.exit(2)
