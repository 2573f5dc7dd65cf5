"""Regenerate the tables of docs/ports/opencv.md: how faithful OpenCV's cv2.dnn.readNetFromTorch is to Torch7.

    .venv/bin/python scripts/opencv_finding.py            # every section, markdown on stdout (~2-4 min, 2 cores)
    .venv/bin/python scripts/opencv_finding.py card d3    # only some sections

Needs the ``opencv`` extra and, for most cases, ../shared/oracle (the Torch7 ground truth). Every number
compares float32 arrays with a float64 one: rel = max|a - b| / max(1, max|b|).

Sections: env (versions), card (per Torch7 run: output, Torch7's own float32 level, first local
divergence, tolerance-model verdict), drift (harness.drift.run_drift on the committed narrow models),
d1d2 (NumPy model of OpenCV's MVN + BatchNorm, bit for bit), d2 (the cancellation at v1 starry 1.2.7),
d3 (train-mode batch norm per sample), d4 (Winograd F(6,3)), d5 (the v1 files as distributed), flat
(constant images).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.core.runs import forward, judge_float32_rounding, load_runner
from harness.core.tolerance import layer_budgets, module_inputs, output_budget
from parity_tests.ground_truth import fixture_runs, shared_runs, v1_runs
from t7file import T7Module, load_module_tree, trace_paths

F32 = np.float32
# A path diverges locally when OpenCV, fed the judge's own input, is this many times further from the judge
# than a faithful float32 computation (the reference in float32) on the same input.
DIVERGENCE_FACTOR = 10.0


def rel(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return float("nan")
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def backends():
    from opencv_backend import OpenCVBackend, patched
    from reference.backend import ReferenceBackend

    return OpenCVBackend(), patched(), ReferenceBackend()


def is_v1(run) -> bool:
    return run.name.startswith("v1_")


def judge(ref, root: T7Module, run, dtype="float64"):
    runner = load_runner(ref, root, dtype, batchnorm=run.batchnorm)
    noise = {p: a.astype(dtype) for p, a in run.noise.items()}
    return runner, forward(runner, run.input.astype(dtype), trace=True, noise=noise)


def fed_by_the_judge(backend, ref, run, batchnorm: str | None = None):
    """The run's tree, ``backend``'s float32 runner of it, the float64 judge's trace, and every module's input in
    that trace (what the isolated view feeds each module)."""
    root = load_module_tree(run.model_path)
    runner = load_runner(backend, run.model_path, "float32", root=root, batchnorm=batchnorm)
    _, (_, trace64) = judge(ref, root, run)
    return root, runner, trace64, module_inputs(root, run.input.astype(np.float64), trace64)


# -- sections --------------------------------------------------------------------------------------------------


def section_env() -> None:
    import cv2

    from opencv_backend import OpenCVBackend

    env = OpenCVBackend().environment()
    print("## Versions\n")
    print("| item | value |\n|---|---|")
    for key, value in env.items():
        print(f"| {key} | {value} |")
    print(f"| numpy | {np.__version__} |\n| python | {sys.version.split()[0]} |")
    print(f"| cv2 build | {cv2.getVersionString()} |\n")


def section_card() -> None:
    opencv, patched_backend, ref = backends()
    print("## Report card (every Torch7 run; OpenCV float32 inside, the float64 runs included)\n")
    print(f"first divergence: first traced path (execution order) where OpenCV, fed the float64 judge's own input, "
          f"is > {DIVERGENCE_FACTOR:g}x further from the judge than the reference run in float32 on the same input "
          "(a faithful float32 computation). Torch7 own = |Torch7 float32 output - float64 judge| (same input, "
          "same noise).\n")
    print("| run | backend | output vs Torch7 | Torch7's own f32 level | ratio | tolerance model at the output "
          "| first divergence (class, OpenCV rel / faithful f32 rel) | local divergences (classes) | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in fixture_runs() + shared_runs() + v1_runs():
        started = time.perf_counter()
        root = load_module_tree(run.model_path)
        backend = patched_backend if is_v1(run) else opencv
        runner = load_runner(backend, run.model_path, "float32", root=root, batchnorm=run.batchnorm)
        noise32 = {p: a.astype(F32) for p, a in run.noise.items()}
        output, _ = forward(runner, run.input.astype(F32), noise=noise32)
        out_rel = rel(output, run.output)
        _, (out64, trace64) = judge(ref, root, run)
        if run.dtype == "float32":
            own = rel(run.output, out64)
            rounding = judge_float32_rounding(ref, root, run.input, trace64, noise=run.noise, batchnorm=run.batchnorm)
            budget = output_budget(root, layer_budgets(root, run.input, trace64, "float32", judge_rounding=rounding))
            verdict = (f"{'passes' if out_rel <= budget.rtol else 'FAILS'} (allowed {budget.rtol:.2g})"
                       if budget.determined else "not determined by the model")
        else:
            own, verdict = float("nan"), "float64 run: OpenCV computes in float32"
        first, classes = first_divergence(runner, ref, root, run, trace64)
        ratio = out_rel / own if own == own and own > 0 else float("nan")
        print(f"| {run.name} | {backend.name} | {out_rel:.3g} | {own:.2g} | {ratio:.3g} | {verdict} | {first} | "
              f"{classes} | {time.perf_counter() - started:.0f} |", flush=True)
    print()


def first_divergence(runner, ref, root: T7Module, run, trace64) -> tuple[str, str]:
    x = run.input.astype(np.float64)
    inputs = module_inputs(root, x, trace64)
    faithful = load_runner(ref, root, "float32", batchnorm=run.batchnorm)
    noise = {p: a.astype(F32) for p, a in run.noise.items()}
    first, seen = "none", {}
    for path in trace_paths(root):
        module = root.find(path)
        if module.children:  # containers: their leaves are judged one by one
            continue
        given = np.array(inputs[path], dtype=F32)
        local_noise = {p: a for p, a in noise.items() if p == path}
        mine = runner.run_module(path, given, noise=local_noise or None)
        yardstick = faithful.run_module(path, given.copy(), noise=local_noise or None)
        a, b = rel(mine, trace64[path]), rel(yardstick, trace64[path])
        if a > DIVERGENCE_FACTOR * max(b, 2.0**-24):
            cls = module.torch_class.split(".")[-1]
            seen[cls] = max(seen.get(cls, 0.0), a)
            if first == "none":
                first = f"{path} ({cls}, {a:.2g} / {b:.2g})"
    return first, ", ".join(f"{c} up to {v:.2g}" for c, v in seen.items()) or "none"


def section_drift() -> None:
    from fixtures import DEFAULT_MODEL, ORACLE_NARROW_DIR
    from harness.drift import run_drift

    print("## harness.drift.run_drift (baseline reference float64), committed narrow models, random 1x3x32x32\n")
    print("| model | output | first divergence | first reaching the output | absorbed | failing paths "
          "accumulated / isolated |")
    print("|---|---|---|---|---|---|")
    x = np.random.default_rng(1).random((1, 3, 32, 32))
    for model in (DEFAULT_MODEL, ORACLE_NARROW_DIR / "narrow_head_seed77.t7"):
        report = run_drift(model, x, ["opencv"])
        drift = report.backends[0]
        failing_acc = sum(not r.passed for r in drift.accumulated)
        failing_iso = sum(not r.passed for r in drift.isolated or [])
        first = drift.first_divergence
        reach = drift.first_divergence_reaching_output
        out = drift.output.comparison
        print(f"| {Path(model).name} | {'agrees' if drift.output.passed else 'drifts'} ({out.max_rel:.2g}, allowed "
              f"{out.tolerance_rtol:.2g}) | {first and f'{first.lua_path} {first.torch_class}'} | "
              f"{reach and reach.lua_path} | {', '.join(d.lua_path for d in drift.absorbed) or '-'} | "
              f"{failing_acc} / {failing_iso} of {len(drift.accumulated)} |")
    print()


def fastnorm_channel(v, scale, shift, eps=1e-9):
    """OpenCV 4.14 fastNormChannel (MVN with the following BatchNorm's scale/shift absorbed), per (n, c) plane:
    float32 sequential s = sum x, s2 = sum x*x; mean = s/n; var = max(0, s2/n - mean^2); y = scale/sqrt(var+eps)
    * (x - mean) + shift."""
    v = np.asarray(v, F32)
    out = np.empty_like(v)
    for n in range(v.shape[0]):
        for c in range(v.shape[1]):
            xs = v[n, c].ravel()
            s, s2 = np.cumsum(xs, dtype=F32)[-1], np.cumsum(xs * xs, dtype=F32)[-1]
            inv_n = F32(1.0 / xs.size)
            mean = F32(s * inv_n)
            var = max(F32(0), F32(F32(s2 * inv_n) - F32(mean * mean)))
            sc = F32(F32(scale[c]) * (F32(1) / np.sqrt(F32(var + F32(eps)))))
            out[n, c] = sc * (v[n, c] - mean) + F32(shift[c])
    return out


def opencv_norm(x, gamma, beta, eps=1e-5):
    """Torch's IN / train-mode BN as OpenCV's importer builds it (MVN, then BatchNorm(mean 0, var 1)), fused."""
    scale = (np.asarray(gamma, F32) / np.sqrt(F32(1) + F32(eps))).astype(F32)
    return fastnorm_channel(x, scale, beta)


def torch_norm(x, gamma, beta, eps=1e-5, axes=(2, 3)):
    """Torch7's IN (axes (2, 3)) / train-mode BN (axes (0, 2, 3)) in float64: eps inside the sqrt, two-pass."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(gamma, np.float64)[None, :, None, None] \
        + np.asarray(beta, np.float64)[None, :, None, None]


def norm_params(runner, root: T7Module, path: str) -> tuple[np.ndarray, np.ndarray, float]:
    module = root.find(path)
    override = runner._overrides.get(path, {})
    gamma = override.get("weight", module.optional_array("weight"))
    beta = override.get("bias", module.optional_array("bias"))
    return gamma, beta, float(module.number("eps", 1e-5))


NORMS = ("nn.InstanceNormalization", "nn.SpatialBatchNormalization")


def section_d1d2() -> None:
    opencv, patched_backend, _ = backends()
    print("## D1 + D2: NumPy model of OpenCV's IN / train-mode BN, on OpenCV's own input\n")
    print("Each normalisation run alone by OpenCV (run_module, fused: one fastNormChannel call) on the input OpenCV "
          "itself computed for it (its unfused trace), against fastnorm_channel(x, gamma/sqrt(1+eps), beta) "
          "(MVN eps 1e-9, float32 single-pass statistics).\n")
    print("| run | normalisations | bit-exact | worst rel (NumPy vs OpenCV) | D1 alone at the first one "
          "(predicted / OpenCV vs Torch formula) |")
    print("|---|---|---|---|---|")
    wanted = ("narrow_head_seed77_f32_32x32", "narrow_pretrained_seed78_f32_2x24x20", "johnson_head_seed1234_f32_64x64",
              "v1_starry_a_64x64_f32", "v1_pebble_a_64x64_f32")
    for run in [r for r in fixture_runs() + shared_runs() + v1_runs() if r.name in wanted]:
        root = load_module_tree(run.model_path)
        backend = patched_backend if is_v1(run) else opencv
        runner = load_runner(backend, run.model_path, "float32", root=root, batchnorm=run.batchnorm)
        noise = {p: a.astype(F32) for p, a in run.noise.items()}
        _, trace = forward(runner, run.input.astype(F32), trace=True, noise=noise)
        inputs = module_inputs(root, run.input.astype(F32), trace)
        paths = [p for p in trace_paths(root) if root.find(p).torch_class in NORMS]
        exact, worst, first = 0, 0.0, ""
        for path in paths:
            x = np.array(inputs[path], dtype=F32)
            gamma, beta, eps = norm_params(runner, root, path)
            mine = runner.run_module(path, x)
            model = opencv_norm(x, gamma, beta, eps)
            exact += int(np.array_equal(mine, model))
            worst = max(worst, rel(model, mine))
            if not first:
                torch = torch_norm(x, gamma, beta, eps)
                var = x.astype(np.float64).var((2, 3))
                misplaced = torch_norm(x, gamma, beta, 0.0) / np.sqrt(1 + eps) \
                    - np.asarray(beta)[None, :, None, None] * (1 / np.sqrt(1 + eps) - 1)
                first = (f"{path}: plane variance {var.min():.2g}..{var.max():.2g}; eps moved out of the sqrt: "
                         f"{rel(misplaced, torch):.2g}; OpenCV {rel(mine, torch):.2g}")
        print(f"| {run.name} | {len(paths)} | {exact} | {worst:.2g} | {first} |", flush=True)
    print()


def section_d2() -> None:
    _, patched_backend, ref = backends()
    run = next((r for r in v1_runs() if r.name == "v1_starry_a_64x64_f32"), None)
    if run is None:
        print("## D2: needs ../shared/oracle/v1\n")
        return
    _, runner, trace64, inputs = fed_by_the_judge(patched_backend, ref, run, batchnorm="train")
    path = "1.2.7"
    x = inputs[path]
    x32 = np.array(x, dtype=F32)
    print(f"## D2: single-pass float32 variance, v1 starry {path} (SpatialBatchNormalization, train mode), "
          "fed the judge's input\n")
    print("| channel | mean | exact variance | OpenCV's variance (float32 s2/n - mean^2) | 1/std ratio |")
    print("|---|---|---|---|---|")
    for c in range(x.shape[1]):
        plane = x32[0, c].ravel()
        s, s2 = np.cumsum(plane, dtype=F32)[-1], np.cumsum(plane * plane, dtype=F32)[-1]
        inv_n = F32(1.0 / plane.size)
        mean = F32(s * inv_n)
        var32 = max(F32(0), F32(F32(s2 * inv_n) - F32(mean * mean)))
        exact = float(plane.astype(np.float64).var())
        ratio = np.sqrt((exact + 1e-5) / (float(var32) + 1e-9))
        if ratio > 1.5 or ratio < 0.67:
            print(f"| {c} | {float(mean):.6g} | {exact:.4g} | {float(var32):.4g} | {ratio:.3g} |")
    mine = runner.run_module(path, x32)
    noise = {p: a.astype(F32) for p, a in run.noise.items()}
    output, trace = runner.forward(run.input.astype(F32), trace=True, noise=noise)
    print(f"\nOpenCV alone at {path} on the judge's input: rel {rel(mine, trace64[path]):.3g}. End to end (OpenCV's "
          f"own input, unfused trace) vs Torch7: {path} {rel(trace[path], run.trace[path]):.3g}, the LeakyReLU "
          f"after it (1.2.8) {rel(trace['1.2.8'], run.trace['1.2.8']):.3g}, the next module (1.2.9) "
          f"{rel(trace['1.2.9'], run.trace['1.2.9']):.3g}, output {rel(output, run.output):.3g}\n")


def section_d3() -> None:
    import tempfile

    import cv2

    from opencv_backend.layers import register
    from t7file import write_t7
    from t7file.writer import TorchObject

    register()
    rng = np.random.default_rng(1)
    channels = 4
    gamma, beta = rng.uniform(0.5, 1.5, channels).astype(F32), rng.uniform(-0.5, 0.5, channels).astype(F32)
    bn = TorchObject("nn.SpatialBatchNormalization", {
        "weight": gamma, "bias": beta, "running_mean": np.zeros(channels, F32), "running_var": np.ones(channels, F32),
        "eps": 1e-5, "momentum": 0.1, "train": True, "affine": True, "nDim": 4}, 2)
    x = np.concatenate([rng.standard_normal((1, channels, 8, 8)) * 2 + 1,
                        rng.standard_normal((1, channels, 8, 8)) * 0.5 - 3]).astype(F32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bn.t7"
        write_t7(path, TorchObject("nn.Sequential", {"modules": [bn]}))
        net = cv2.dnn.readNetFromTorch(str(path), True, False)
        net.setInput(x)
        y = net.forward()
        names = list(net.getLayerNames())
    coupled = torch_norm(x, gamma, beta, axes=(0, 2, 3))
    per_sample = np.concatenate([torch_norm(x[i:i + 1], gamma, beta, axes=(0, 2, 3)) for i in range(2)])
    print("## D3: train-mode SpatialBatchNormalization(4), batch 2 (samples with different statistics), "
          "readNetFromTorch(evaluate=False)\n")
    print(f"layers: {names}; vs Torch7 (statistics over N x H x W): {rel(y, coupled):.3g}; vs per-sample statistics: "
          f"{rel(y, per_sample):.2g}; bit-exact to the NumPy model: {np.array_equal(y, opencv_norm(x, gamma, beta))}\n")


# OpenCV's conv_winograd_f63.cpp transforms (B^T, A^T) and the matching Lavin G (points 0, +-1, +-2, +-1/2).
WINO_BT = np.array([[1, 0, -5.25, 0, 5.25, 0, -1, 0], [0, 1, 1, -4.25, -4.25, 1, 1, 0],
                    [0, -1, 1, 4.25, -4.25, -1, 1, 0], [0, .5, .25, -2.5, -1.25, 2, 1, 0],
                    [0, -.5, .25, 2.5, -1.25, -2, 1, 0], [0, 2, 4, -2.5, -5, .5, 1, 0],
                    [0, -2, 4, 2.5, -5, -.5, 1, 0], [0, -1, 0, 5.25, 0, -5.25, 0, 1]])
WINO_G = np.array([[1, 0, 0], [-2 / 9, -2 / 9, -2 / 9], [-2 / 9, 2 / 9, -2 / 9], [1 / 90, 1 / 45, 2 / 45],
                   [1 / 90, -1 / 45, 2 / 45], [32 / 45, 16 / 45, 8 / 45], [32 / 45, -16 / 45, 8 / 45], [0, 0, 1]])
WINO_AT = np.array([[1, 1, 1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, .5, -.5, 0], [0, 1, 1, 4, 4, .25, .25, 0],
                    [0, 1, -1, 8, -8, .125, -.125, 0], [0, 1, 1, 16, 16, 1 / 16, 1 / 16, 0],
                    [0, 1, -1, 32, -32, 1 / 32, -1 / 32, 1]])


def winograd63(x, w, b, dtype=F32):
    """Valid 3x3 stride-1 convolution by Winograd F(6x6, 3x3): 8x8 input tiles, 6x6 output tiles, sums over input
    planes in ``dtype``."""
    n, c, h, wd = x.shape
    out_h, out_w = h - 2, wd - 2
    ty, tx = -(-out_h // 6), -(-out_w // 6)
    xp = np.zeros((n, c, ty * 6 + 2, tx * 6 + 2), dtype)
    xp[:, :, :h, :wd] = x
    u = np.einsum("ij,kcjl,ml->kcim", WINO_G, w.astype(np.float64), WINO_G).astype(dtype)
    bt, at = WINO_BT.astype(dtype), WINO_AT.astype(dtype)
    out = np.zeros((n, w.shape[0], ty * 6, tx * 6), dtype)
    for s in range(n):
        for i in range(ty):
            for j in range(tx):
                v = (bt @ xp[s, :, 6 * i:6 * i + 8, 6 * j:6 * j + 8] @ bt.T).astype(dtype)
                m = np.einsum("kcab,cab->kab", u, v).astype(dtype)
                out[s, :, 6 * i:6 * i + 6, 6 * j:6 * j + 6] = at @ m @ at.T
    return out[:, :, :out_h, :out_w] + b.astype(dtype)[None, :, None, None]


def section_d4() -> None:
    import cv2

    opencv, _, ref = backends()
    run = next((r for r in shared_runs() if r.name == "johnson_head_seed1234_f32_64x64"), None)
    if run is None:
        print("## D4: needs ../shared/oracle\n")
        return
    root, runner, trace64, inputs = fed_by_the_judge(opencv, ref, run)
    print("## D4: Winograd F(6x6, 3x3) for 3x3 stride-1 convolutions (johnson head, full width, 64x64)\n")
    print("| conv | kernel, stride | OpenCV default (Winograd on) | Winograd off | faithful float32 (reference) |")
    print("|---|---|---|---|---|")
    faithful = load_runner(ref, root, "float32")
    for module in root.walk():
        if module.torch_class != "nn.SpatialConvolution":
            continue
        path = module.lua_path
        x = np.array(inputs[path], dtype=F32)
        on = runner.run_module(path, x)
        net = runner._net(("module", path, x.shape), runner._module_files[path][0], True)
        off_net = cv2.dnn.readNetFromTorch(str(runner._module_files[path][0]), True, True)
        off_net.enableWinograd(False)
        off_net.setInput(x)
        off = off_net.forward()
        del net
        print(f"| {path} | {module.integer('kH')}x{module.integer('kW')}, {module.integer('dH')} | "
              f"{rel(on, trace64[path]):.2g} | {rel(off, trace64[path]):.2g} | "
              f"{rel(faithful.run_module(path, x.copy()), trace64[path]):.2g} |")
    path = "13.1.2.2"
    module = root.find(path)
    x = np.array(inputs[path], dtype=F32)
    w, b = module.array("weight").astype(F32), module.array("bias").astype(F32)
    exact = trace64[path]
    on = runner.run_module(path, x)
    w64, w32 = winograd63(x.astype(np.float64), w, b, np.float64), winograd63(x, w, b, F32)
    d_cv, d_np = (on - exact).ravel(), (w32 - exact).ravel()
    err = np.abs(on - exact).max((0, 1))
    tile = np.zeros((6, 6))
    for i in range(err.shape[0]):
        for j in range(err.shape[1]):
            tile[i % 6, j % 6] = max(tile[i % 6, j % 6], err[i, j])
    print(f"\nNumPy F(6,3) at {path}: float64 vs exact {rel(w64, exact):.2g} (transforms right); float32 vs exact "
          f"{rel(w32, exact):.2g}; OpenCV vs exact {rel(on, exact):.2g}; OpenCV vs NumPy float32 {rel(on, w32):.2g}; "
          f"correlation of the error fields {np.corrcoef(d_cv, d_np)[0, 1]:.2f}; OpenCV's largest error by position "
          f"in the 6x6 output tile (x1e-5): corners {tile[0, 0] / 1e-5:.1f} {tile[0, 5] / 1e-5:.1f} "
          f"{tile[5, 0] / 1e-5:.1f} {tile[5, 5] / 1e-5:.1f}, centre {tile[2:4, 2:4].max() / 1e-5:.1f}\n")
    print("Does it reach the output? Output vs Torch7 with OpenCV's defaults and with Winograd off:\n")
    print("| run | default | Winograd off | Torch7's own |\n|---|---|---|---|")
    johnson = run
    for run in [r for r in v1_runs() if r.name.startswith(("demos", "doodle"))] + [johnson]:
        root = load_module_tree(run.model_path)
        runner = load_runner(opencv, run.model_path, "float32", root=root, batchnorm=run.batchnorm)
        noise = {p: a.astype(F32) for p, a in run.noise.items()}
        default = forward(runner, run.input.astype(F32), noise=noise)[0]
        off = winograd_off_output(runner, run.input.astype(F32), noise)
        _, (out64, _) = judge(ref, root, run)
        print(f"| {run.name} | {rel(default, run.output):.3g} | {rel(off, run.output):.3g} | "
              f"{rel(run.output, out64):.2g} |")
    print()


def winograd_off_output(runner, x, noise):
    """The runner's own output view with only enableWinograd(False) changed (OpenCV's default Net otherwise)."""
    import cv2

    from opencv_backend import layers

    slots = runner._slots(noise or None, runner._noise, runner._indices)
    with layers.FORWARD_LOCK:
        layers.STATE.slots = slots
        try:
            net = cv2.dnn.readNetFromTorch(str(runner.model_file), runner.is_binary, runner.evaluate)
            net.enableWinograd(False)
            net.setInput(x)
            return net.forward()
        finally:
            layers.STATE.slots = {}


def section_d5() -> None:
    import json

    import cv2

    from opencv_backend.files import aliased_batch_norms

    print("## D5: the v1 files as distributed (batch norms declared with 8 features for 16-40 channels)\n")
    print("| run | fusion on (OpenCV's default) | fusion off | adapter offsets = oracle bn_alias |")
    print("|---|---|---|---|")
    from opencv_backend.backend import forward_as_distributed

    for run in [r for r in v1_runs() if is_v1(r) and r.dtype == "float32"]:
        root = load_module_tree(run.model_path)
        results = []
        for fusion in (True, False):
            try:
                y = forward_as_distributed(run.model_path, run.input, run.noise, fusion=fusion)
                results.append(f"runs: {int(np.isnan(y).sum())} of {y.size} outputs NaN, finite rel "
                               f"{rel(np.nan_to_num(y), run.output):.2g}")
            except cv2.error as error:
                results.append("error: " + " ".join(str(error).split())[:230])
        sidecar = json.loads(Path(run.npz_path).with_suffix(".json").read_text())
        mine = sorted((bn.weight_offset + 1, bn.bias_offset + 1, bn.channels) for bn in aliased_batch_norms(root, 6 if
                      "starry" in run.name else 3))
        theirs = sorted((a["weight_offset"], a["bias_offset"], a["planes"]) for a in sidecar.get("bn_alias", []))
        print(f"| {run.name} | {results[0]} | {results[1]} | {mine == theirs} ({len(mine)} modules) |")
    print()


def section_flat() -> None:
    from fixtures import DEFAULT_MODEL, ORACLE_NARROW_DIR

    opencv, _, ref = backends()
    print("## Flat inputs (constant images), output vs the float64 reference\n")
    print("| model | input | OpenCV default | faithful float32 (reference) |\n|---|---|---|---|")
    models = [DEFAULT_MODEL, ORACLE_NARROW_DIR / "narrow_head_seed77.t7"]
    shared = [r.model_path for r in shared_runs() if r.name == "johnson_head_seed1234_f32_64x64"]
    for model in models + shared:
        root = load_module_tree(model)
        for value in (0.5, 0.0):
            x = np.full((1, 3, 64, 64), value)
            out64 = ref.load(root, "float64").forward(x)[0]
            out32 = ref.load(root, "float32").forward(x.astype(F32))[0]
            mine = opencv.load(model, "float32").forward(x.astype(F32))[0]
            print(f"| {Path(model).name} | constant {value} | {rel(mine, out64):.3g} | {rel(out32, out64):.2g} |")
    print()


SECTIONS = {"env": section_env, "card": section_card, "drift": section_drift, "d1d2": section_d1d2,
            "d2": section_d2, "d3": section_d3, "d4": section_d4, "d5": section_d5, "flat": section_flat}


def main(argv: list[str]) -> None:
    import cv2

    chosen = argv or list(SECTIONS)
    print(f"<!-- scripts/opencv_finding.py {' '.join(argv)}; cv2 threads {cv2.getNumThreads()} -->\n")
    for name in chosen:
        SECTIONS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
