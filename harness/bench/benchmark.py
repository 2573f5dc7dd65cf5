"""The benchmark: wall time, GFLOP/s, share of the machine's sgemm peak and peak memory, per backend and size.

    results = run_bench(BenchConfig(model=path, runs=default_runs(), sizes=(256, 512, 1024)))

What is measured, and why this way:

* **Time**: ``repeats`` forward passes on one seeded 1×3×S×S float input after ``warmup``
  passes (graph building, tracing, allocator and BLAS buffer set-up happen there), each timed
  with ``perf_counter``; the median is the figure, min/max and the quartiles are the spread.
* **GFLOP/s** from the convolution FLOPs of the model's own module tree (:func:`conv_flops`:
  ``2·nOut·nIn·kH·kW·Hout·Wout`` per convolution, the same over input positions for a
  transposed one; everything else is free). 15.6/62.5/250 GFLOP at 256²/512²/1024² for the
  full-width generator (docs/benchmarks.md).
* **% of sgemm peak**: the best of several NumPy float32 products of large square matrices,
  measured in the same run before and after the backends (the better of the two is the peak),
  so a ratio survives a machine that is slower or busier than the one that wrote the targets.
* **Peak memory**: every (backend, dtype, size) runs in a fresh subprocess and reports its own
  ``ru_maxrss``, so one framework's arenas never count against another, nor a small size's
  against a large one. ``rss_after_load`` tells the model and framework from the forward pass.
* **Threads and CPU use**: the thread pools each library reports (OpenBLAS, PyTorch intra/inter,
  TensorFlow intra/inter, a backend's own ``environment()``) and ``cpu_per_wall`` = process CPU
  seconds per wall second over the timed runs (2.0 = both cores busy), which shows at a glance a
  backend that runs single-threaded or a machine that is oversubscribed.

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

from t7file import T7Module, load_module_tree

SCHEMA = "texture-nets-bench/1"
DEFAULT_SIZES = (256, 512, 1024)
FULL_WIDTHS = (32, 64, 128)
MODEL_SEED = 1
MODEL_LAYOUT = "pretrained"
INPUT_SEED = 0
GIB = 2**30
FRAMEWORK_BACKENDS_EXCLUDED = frozenset({"reference"})  # "every framework backend" in the performance targets

# The performance targets (docs/benchmarks.md; ratios within one run on this machine kind).
TARGET_SIZE = 512
TARGET_BEST_PEAK = 0.70
TARGET_FRAMEWORK_PEAK = 0.50
TARGET_REFERENCE_VS_BEST = 1.5
TARGET_FLOAT64_VS_FLOAT32 = 2.5
TARGET_RSS_SIZE = 2048
TARGET_RSS_BYTES = 4 * GIB

_CONVOLUTIONS = frozenset({"nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution"})
_FULL_CONVOLUTIONS = frozenset({"nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution"})
_PADDINGS = frozenset({"nn.SpatialReplicationPadding", "nn.SpatialZeroPadding", "nn.SpatialReflectionPadding"})


# -- FLOPs from the module tree ----------------------------------------------------------------------------------
Shape = tuple[int, int, int] | list  # (C, H, W), or a Lua table (list) of them after a ConcatTable


def conv_flops(root: T7Module, height: int, width: int, batch: int = 1) -> int:
    """Multiply-add FLOPs (2 per MAC) of every convolution in ``root`` for a batch×3×height×width input.

    Shapes are propagated through the tree generically (Sequential chains, ConcatTable fans out,
    CAddTable joins, paddings grow, convolutions follow Torch's size rules); layers other than
    convolutions count zero. A transposed convolution does ``nIn·nOut·kH·kW`` MACs per *input*
    position (THNN: one GEMM over the input, then col2im).
    """
    total = 0

    def visit(module: T7Module, shape: Shape) -> Shape:
        nonlocal total
        name = module.torch_class
        if name == "nn.Sequential":
            for child in module.children:
                shape = visit(child, shape)
            return shape
        if name == "nn.ConcatTable":
            return [visit(child, shape) for child in module.children]
        if isinstance(shape, list):  # CAddTable and friends: a table in, one tensor out
            return shape[0]
        channels, h, w = shape
        if name in _CONVOLUTIONS:
            k_w, k_h = module.integer("kW"), module.integer("kH")
            d_w, d_h = module.integer("dW", 1), module.integer("dH", 1)
            legacy = module.integer("padding", 0)
            p_w, p_h = module.integer("padW", legacy), module.integer("padH", legacy)
            n_out = module.integer("nOutputPlane")
            out_h, out_w = (h + 2 * p_h - k_h) // d_h + 1, (w + 2 * p_w - k_w) // d_w + 1
            total += 2 * n_out * module.integer("nInputPlane") * k_h * k_w * out_h * out_w * batch
            return (n_out, out_h, out_w)
        if name in _FULL_CONVOLUTIONS:
            k_w, k_h = module.integer("kW"), module.integer("kH")
            d_w, d_h = module.integer("dW", 1), module.integer("dH", 1)
            p_w, p_h = module.integer("padW", 0), module.integer("padH", 0)
            a_w, a_h = module.integer("adjW", 0), module.integer("adjH", 0)
            n_out = module.integer("nOutputPlane")
            total += 2 * n_out * module.integer("nInputPlane") * k_h * k_w * h * w * batch
            return (n_out, (h - 1) * d_h - 2 * p_h + k_h + a_h, (w - 1) * d_w - 2 * p_w + k_w + a_w)
        if name in _PADDINGS:
            return (channels, h + module.integer("pad_t", 0) + module.integer("pad_b", 0),
                    w + module.integer("pad_l", 0) + module.integer("pad_r", 0))
        return shape  # IN, ReLU, Identity, TVLoss: same shape, no convolution FLOPs

    visit(root, (3, height, width))
    return total


# -- the machine's sgemm peak ------------------------------------------------------------------------------------
def measure_sgemm_peak(size: int = 3072, repeats: int = 5) -> dict[str, Any]:
    """Best GFLOP/s of ``repeats`` float32 ``size``×``size`` NumPy products (after one untimed product)."""
    rng = np.random.default_rng(INPUT_SEED)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    return {"size": size, "repeats": repeats, "times_s": times, "gflops": flops / min(times) / 1e9,
            "median_gflops": flops / statistics.median(times) / 1e9, "loadavg": loadavg()}


# -- environment helpers -------------------------------------------------------------------------------------------
def loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, ValueError):
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    return None


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


def measure(backend_name: str, dtype: str, model: str, size: int, repeats: int, warmup: int,
            batch: int = 1) -> dict[str, Any]:
    """Load one backend and time its forward pass at ``size``² (call in a fresh process: it reads ru_maxrss)."""
    from harness.core.environment import collect_environment
    from harness.core.registry import get_backend

    result: dict[str, Any] = {"backend": backend_name, "dtype": dtype, "size": size, "batch": batch}
    backend = get_backend(backend_name)
    if dtype not in backend.dtypes:
        return {**result, "status": "unsupported", "error": f"supports {', '.join(backend.dtypes)} only"}
    result["rss_before_load_bytes"] = _max_rss_bytes()
    start = time.perf_counter()
    runner = backend.load(model, dtype)
    result["load_s"] = time.perf_counter() - start
    result["rss_after_load_bytes"] = _max_rss_bytes()
    x = np.random.default_rng(INPUT_SEED).random((batch, 3, size, size)).astype(dtype)
    warmup_times = []
    for _ in range(warmup):
        start = time.perf_counter()
        output, _ = runner.forward(x)
        warmup_times.append(time.perf_counter() - start)
    times = []
    cpu_start = _cpu_seconds()
    for _ in range(repeats):
        start = time.perf_counter()
        output, _ = runner.forward(x)
        times.append(time.perf_counter() - start)
    cpu = _cpu_seconds() - cpu_start
    output = np.asarray(output)
    result.update(
        status="ok",
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
@dataclass
class BenchConfig:
    """Everything that decides a benchmark run. ``runs``: (backend, dtype) pairs, in table order."""

    model: Path
    runs: Sequence[tuple[str, str]]
    sizes: Sequence[int] = DEFAULT_SIZES
    repeats: int = 5
    warmup: int = 1
    rss_sizes: Sequence[int] = ()
    threads: int | None = None
    sgemm_size: int = 3072
    sgemm_repeats: int = 5
    timeout_s: float = 1800.0
    command: str = ""
    model_description: dict[str, Any] = field(default_factory=dict)


def default_runs() -> list[tuple[str, str]]:
    """The benchmark table: the reference in float32 and float64, every other installed faithful backend in float32."""
    from harness.core.registry import available_backend_names, is_faithful

    runs = [("reference", "float32"), ("reference", "float64")]
    runs += [(name, "float32") for name in available_backend_names(installed_only=True)
             if name != "reference" and is_faithful(name)]
    return runs


def worker_environment(threads: int | None) -> dict[str, str]:
    """The workers' environment: the caller's, with thread pools pinned when ``threads`` is given."""
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
    """Measure the sgemm peak, every (run, size), the RSS sizes, the peak again; return the report as data."""
    say = progress or (lambda message: None)
    root = load_module_tree(config.model)
    sizes = sorted(set(config.sizes) | set(config.rss_sizes))
    flops = {size: conv_flops(root, size, size) for size in sizes}
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": config.command,
        "model": {"path": str(config.model), **config.model_description,
                  "conv_flops": {str(size): value for size, value in flops.items()}},
        "settings": {"sizes": list(config.sizes), "repeats": config.repeats, "warmup": config.warmup,
                     "rss_sizes": list(config.rss_sizes), "threads": config.threads, "batch": 1,
                     "input": f"numpy.random.default_rng({INPUT_SEED}).random((1, 3, S, S))"},
        "loadavg_start": loadavg(),
    }
    say(f"sgemm peak ({config.sgemm_size}² float32, best of {config.sgemm_repeats}) ...")
    peak_before = measure_sgemm_peak(config.sgemm_size, config.sgemm_repeats)
    say(f"  {peak_before['gflops']:.1f} GFLOP/s")
    env = worker_environment(config.threads)
    results: list[dict[str, Any]] = []
    jobs = [(name, dtype, size, config.repeats, config.warmup, "time") for name, dtype in config.runs
            for size in config.sizes]
    jobs += [(name, dtype, size, 1, 0, "rss") for name, dtype in config.runs for size in config.rss_sizes]
    for name, dtype, size, repeats, warmup, mode in jobs:
        say(f"{name} {dtype} {size}² ({mode}: {warmup} warm-up + {repeats} timed) ...")
        spec = {"backend_name": name, "dtype": dtype, "model": str(config.model), "size": size,
                "repeats": repeats, "warmup": warmup}
        load_before = loadavg()
        result = run_worker(spec, env, config.timeout_s)
        result["mode"] = mode
        result["loadavg_before"] = load_before
        _summarise(result, flops[size])
        say("  " + _one_line(result))
        results.append(result)
    peak_after = measure_sgemm_peak(config.sgemm_size, config.sgemm_repeats)
    say(f"sgemm peak again: {peak_after['gflops']:.1f} GFLOP/s")
    peak = max(peak_before["gflops"], peak_after["gflops"])
    for result in results:
        if result.get("gflops") is not None:
            result["percent_of_peak"] = 100.0 * result["gflops"] / peak
    report.update(
        sgemm_peak={"gflops": peak, "before": peak_before, "after": peak_after},
        results=results,
        loadavg_end=loadavg(),
        parent_environment={"python": platform.python_version(), "numpy": np.__version__,
                            "openblas": openblas_info(), "cpu_count": os.cpu_count()},
    )
    report["targets"] = evaluate_targets(report)
    return report


def _summarise(result: dict[str, Any], flops: int) -> None:
    result["conv_flops"] = flops
    times = result.get("times_s")
    if result.get("status") != "ok" or not times:
        return
    ordered = sorted(times)
    quartiles = np.percentile(ordered, [25, 75]).tolist() if len(ordered) > 1 else [ordered[0], ordered[0]]
    median = statistics.median(ordered)
    result.update(median_s=median, min_s=ordered[0], max_s=ordered[-1], p25_s=quartiles[0], p75_s=quartiles[1],
                  gflops=flops / median / 1e9)


def _one_line(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"{result.get('status')}: {result.get('error', '')}"
    return (f"median {result['median_s']:.3f} s (min {result['min_s']:.3f}, max {result['max_s']:.3f}), "
            f"{result['gflops']:.1f} GFLOP/s, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB, "
            f"CPU/wall {result['cpu_per_wall'] or 0:.2f}")


# -- the performance targets ----------------------------------------------------------------------------------------
def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each performance target as {target, value, limit, met} (met is None when the run lacks the data)."""
    timed = [r for r in report["results"] if r.get("mode") == "time" and r.get("status") == "ok"]
    at_size = {(r["backend"], r["dtype"]): r for r in timed if r["size"] == TARGET_SIZE}
    targets: list[dict[str, Any]] = []

    def add(target: str, value: float | None, limit: float, higher_is_better: bool, detail: str = "") -> None:
        met = None if value is None else (value >= limit if higher_is_better else value <= limit)
        targets.append({"target": target, "value": value, "limit": limit, "met": met, "detail": detail})

    best = max(at_size.values(), key=lambda r: r["gflops"], default=None)
    add(f"best backend >= {TARGET_BEST_PEAK:.0%} of sgemm peak at {TARGET_SIZE}²",
        best["percent_of_peak"] / 100 if best else None, TARGET_BEST_PEAK, True,
        f"{best['backend']} {best['dtype']}" if best else "no run at this size")
    for (name, dtype), result in at_size.items():
        if name not in FRAMEWORK_BACKENDS_EXCLUDED:
            add(f"{name} {dtype} >= {TARGET_FRAMEWORK_PEAK:.0%} of sgemm peak at {TARGET_SIZE}²",
                result["percent_of_peak"] / 100, TARGET_FRAMEWORK_PEAK, True)
    reference32, reference64 = at_size.get(("reference", "float32")), at_size.get(("reference", "float64"))
    add(f"reference float32 within {TARGET_REFERENCE_VS_BEST}x of the best backend at {TARGET_SIZE}²",
        reference32["median_s"] / best["median_s"] if reference32 and best else None, TARGET_REFERENCE_VS_BEST,
        False, f"best: {best['backend']} {best['dtype']}" if best else "")
    add(f"reference float64 within {TARGET_FLOAT64_VS_FLOAT32}x of float32 at {TARGET_SIZE}²",
        reference64["median_s"] / reference32["median_s"] if reference64 and reference32 else None,
        TARGET_FLOAT64_VS_FLOAT32, False)
    for result in report["results"]:
        if result.get("mode") == "rss" and result["size"] == TARGET_RSS_SIZE:
            value = result.get("peak_rss_bytes")
            add(f"{result['backend']} {result['dtype']} peak RSS < 4 GiB at {TARGET_RSS_SIZE}²",
                value / GIB if value is not None else None, TARGET_RSS_BYTES / GIB, False,
                result.get("status", "") if value is None else "")
    return targets


# -- Markdown view -------------------------------------------------------------------------------------------------
def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page: settings, the timing table, the memory table, the targets."""
    peak = report["sgemm_peak"]
    env = _first_environment(report)
    lines = [
        "# texture-nets bench",
        "",
        f"- command: `{report['command']}`" if report.get("command") else "- command: (library call)",
        f"- created: {report['created']}; load average (1/5/15 min) at start {_load(report.get('loadavg_start'))}, "
        f"at end {_load(report.get('loadavg_end'))}",
        f"- machine: {env.get('cpu', '?')}, {env.get('usable_cpus', env.get('cpu_count', '?'))} usable CPUs; "
        f"Python {env.get('python', '?')}, NumPy {env.get('numpy', '?')}"
        + "".join(f", {name} {_version(info)}" for name, info in _frameworks(report).items()),
        f"- model: {_model_text(report['model'])}",
        f"- sgemm peak (NumPy float32 {peak['before']['size']}² matmul, best of {peak['before']['repeats']}, "
        f"before/after the backends): {peak['before']['gflops']:.1f} / {peak['after']['gflops']:.1f} GFLOP/s; "
        f"the peak below is {peak['gflops']:.1f}",
        f"- each cell: median of {report['settings']['repeats']} forward passes after "
        f"{report['settings']['warmup']} warm-up, 1×3×S×S input, each (backend, size) in its own process; "
        "load = 1-minute load average just before the cell",
        "",
        "| backend | dtype | size | median s | min–max s | GFLOP/s | % sgemm peak | peak RSS MiB | CPU/wall "
        "| load | threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in report["results"]:
        if result.get("mode") != "time":
            continue
        lines.append(_row(result))
    memory = [r for r in report["results"] if r.get("mode") == "rss"]
    if memory:
        lines += ["", "Peak memory of one forward pass (fresh process each; ru_maxrss):", "",
                  "| backend | dtype | size | peak RSS MiB | after load MiB | time s |", "|---|---|---|---|---|---|"]
        for result in memory:
            if result.get("status") == "ok":
                lines.append(f"| {result['backend']} | {result['dtype']} | {result['size']}² | "
                             f"{result['peak_rss_bytes'] / 2**20:.0f} | {result['rss_after_load_bytes'] / 2**20:.0f} | "
                             f"{result['median_s']:.2f} |")
            else:
                lines.append(f"| {result['backend']} | {result['dtype']} | {result['size']}² | "
                             f"{result.get('status')}: {result.get('error', '')} | | |")
    if report.get("targets"):
        lines += ["", "Performance targets:", "", "| target | value | limit | met |", "|---|---|---|---|"]
        for target in report["targets"]:
            value = "n/a" if target["value"] is None else f"{target['value']:.2f}"
            met = {True: "yes", False: "**no**", None: "not measured"}[target["met"]]
            detail = f" ({target['detail']})" if target.get("detail") else ""
            lines.append(f"| {target['target']}{detail} | {value} | {target['limit']:.2f} | {met} |")
    return "\n".join(lines) + "\n"


def _row(result: dict[str, Any]) -> str:
    head = f"| {result['backend']} | {result['dtype']} | {result['size']}² |"
    if result.get("status") != "ok":
        return f"{head} {result.get('status')}: {result.get('error', '')} | | | | | | | |"
    threads = ", ".join(f"{k}={v}" for k, v in result.get("threads", {}).items() if v is not None)
    return (f"{head} {result['median_s']:.3f} | {result['min_s']:.3f}–{result['max_s']:.3f} | "
            f"{result['gflops']:.1f} | {result.get('percent_of_peak', float('nan')):.0f}% | "
            f"{result['peak_rss_bytes'] / 2**20:.0f} | {result['cpu_per_wall'] or 0:.2f} | "
            f"{(result.get('loadavg_before') or ['n/a'])[0]} | {threads} |")


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
    flops = ", ".join(f"{size}²: {value / 1e9:.3g}" for size, value in model["conv_flops"].items())
    described = ", ".join(f"{k} {v}" for k, v in model.items() if k not in ("path", "conv_flops"))
    return f"`{model['path']}`" + (f" ({described})" if described else "") + f"; conv GFLOP {flops}"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2], sys.argv[3]))
    print("usage: python -m harness.bench.benchmark --worker SPEC.json RESULT.json (use `texture-nets bench`)",
          file=sys.stderr)
    sys.exit(2)
