"""``texture-nets bench`` and harness/bench: FLOP counting, the peak and the physical limit, the report, the targets.

No timing is asserted (the machine is shared and noisy); what is checked is what the numbers are
made of: the convolution FLOPs from the module tree (15.6/62.5/250 GFLOP for the full-width
generator, docs/benchmarks.md; the v1 nets' against the shapes the reference actually computes),
the physical limit's arithmetic on known CPUs, the peak measured without the variables that force a
kernel (and the forced figure beside it), loaded cells getting no share of the peak, one complete
tiny run through the CLI (narrow model, 24², every row and file present and self-consistent), the
real v1 models run with their family's input and noise, and the target logic on a made-up report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import t7file
from contract.families import CONVOLUTIONS
from fixtures import DEFAULT_MODEL
from fixtures.make_model import build_generator
from harness.bench.benchmark import conv_flops, evaluate_targets, is_loaded, parse_run, render_markdown
from harness.bench.machine import physical_limit
from harness.bench.peak import measure_peak, unforced_environment
from t7file.writer import dumps_t7
from texture_nets.cli import main as cli_main


def made_tree(layout: str, widths: tuple[int, int, int]) -> t7file.T7Module:
    return t7file.load_module_tree(dumps_t7(build_generator(layout, widths, 1)))


def closed_form_flops(size: int, c1: int = 32, c2: int = 64, c3: int = 128) -> int:
    """The generator layer by layer (docs/ARCHITECTURE.md), 2 FLOPs per multiply-add, for a size divisible by 4."""
    full, half, quarter = size * size, (size // 2) ** 2, (size // 4) ** 2
    return 2 * (c1 * 3 * 81 * full  # 9x9 first convolution
                + c2 * c1 * 9 * half + c3 * c2 * 9 * quarter  # the two stride-2 convolutions
                + 10 * c3 * c3 * 9 * quarter  # five residual blocks, two convolutions each
                + c3 * c2 * 9 * quarter + c2 * c1 * 9 * half  # transposed convolutions, over input positions
                + 3 * c1 * 9 * full)  # last 3x3 convolution


@pytest.mark.parametrize("layout", ["pretrained", "head"])
def test_conv_flops_of_the_full_width_generator(layout):
    root = made_tree(layout, (32, 64, 128))
    flops = {size: conv_flops(root, size, size) for size in (256, 512, 1024)}
    assert flops == {size: closed_form_flops(size) for size in flops}
    assert [round(value / 1e9, 1) for value in flops.values()] == [15.6, 62.5, 250.0]
    assert conv_flops(root, 256, 256, batch=2) == 2 * flops[256]


def test_conv_flops_of_a_narrow_model_on_odd_sizes():
    # Pretrained layout, 37x29: the stride-2 convolutions give floor((H-1)/2)+1 = 19x15, then 10x8;
    # the transposed ones double back to 20x16 and 40x32.
    root = t7file.load_module_tree(DEFAULT_MODEL)
    expected = 2 * (4 * 3 * 81 * 37 * 29 + 8 * 4 * 9 * 19 * 15 + 16 * 8 * 9 * 10 * 8 + 10 * 16 * 16 * 9 * 10 * 8
                    + 16 * 8 * 9 * 10 * 8 + 8 * 4 * 9 * 20 * 16 + 3 * 4 * 9 * 40 * 32)
    assert conv_flops(root, 37, 29) == expected


def test_parse_run_follows_the_drift_convention():
    assert parse_run("reference-float64") == ("reference", "float64")
    assert parse_run("torch") == ("torch", "float32")
    assert parse_run("my_pkg.mod:factory-float32") == ("my_pkg.mod:factory", "float32")


def test_bench_cli_writes_a_complete_report(tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    status = cli_main(["bench", "--model", str(DEFAULT_MODEL), "--backends", "reference",
                       "--dtype", "float32,float64", "--sizes", "24", "--repeats", "2", "--warmup", "1",
                       "--rss-sizes", "32", "--sgemm-size", "128", "--peak-libraries", "numpy", "--json", str(out_json),
                       "--markdown", str(out_md), "--quiet"])
    assert status == 0
    report = json.loads(out_json.read_text())
    assert report["schema"] == "texture-nets-bench/2"
    assert report["command"].startswith("texture-nets bench --backends reference-float32,reference-float64 ")
    expected_flops = conv_flops(t7file.load_module_tree(DEFAULT_MODEL), 24, 24)
    assert report["model"]["conv_flops"]["24"] == expected_flops
    assert [m["name"] for m in report["models"]] == [DEFAULT_MODEL.stem]

    # The peak: NumPy alone here, measured with its own kernel before and after; the better is the peak.
    peak = report["peak"]
    owns = [peak[when]["libraries"]["numpy"]["own"] for when in ("before", "after")]
    assert peak["gflops"] == max(own["gflops"] for own in owns) > 0 and peak["library"] == "numpy"
    assert all(own["forcing_variables"] == {} for own in owns)
    limit = report["physical_limit"]
    assert limit["formula"] == "cores × clock × FMA lanes × FMA pipes × 2"
    if limit["gflops"] is not None:
        assert limit["gflops"] == pytest.approx(limit["cores"]["value"] * limit["clock_ghz"]["ghz"] * 2
                                                * limit["fma_lanes"]["value"] * limit["fma_pipes"]["value"])

    rows = {(r["backend"], r["dtype"], r["size"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {("reference", d, s, m) for d in ("float32", "float64") for s, m in ((24, "time"), (32, "rss"))}
    for dtype in ("float32", "float64"):
        timed = rows["reference", dtype, 24, "time"]
        assert timed["status"] == "ok", timed
        assert len(timed["times_s"]) == 2 and len(timed["warmup_s"]) == 1
        assert timed["min_s"] <= timed["p25_s"] <= timed["median_s"] <= timed["p75_s"] <= timed["max_s"]
        assert timed["gflops"] == pytest.approx(expected_flops / timed["median_s"] / 1e9)
        # A cell measured while other work loaded the machine gets no share of the peak.
        assert timed["loaded"] == is_loaded(timed["loadavg_before"], timed["other_cores"], limit["cores"]["value"])
        if timed["loaded"] or peak["loaded"]:
            assert "percent_of_peak" not in timed
        else:
            assert timed["percent_of_peak"] == pytest.approx(100 * timed["gflops"] / peak["gflops"])
        assert timed["output_shape"] == [1, 3, 24, 24] and timed["output_finite"]
        assert 0 < timed["rss_before_load_bytes"] <= timed["rss_after_load_bytes"] <= timed["peak_rss_bytes"]
        assert "openblas" in timed["threads"]
        assert timed["environment"]["numpy"] and "cpu" in timed["environment"]
        memory = rows["reference", dtype, 32, "rss"]
        assert memory["status"] == "ok" and len(memory["times_s"]) == 1 and memory["peak_rss_bytes"] > 0
        # A requested backend that cannot be imported is refused up front (test_first_hour.py), not a table row.

    markdown = out_md.read_text()
    assert markdown == render_markdown(report) and markdown in capsys.readouterr().out
    assert "| reference | float32 | 24² |" in markdown and "| reference | float64 | 32² |" in markdown
    assert report["command"] in markdown and "**peak**" in markdown and "physical limit" in markdown


def test_bench_runs_the_real_v1_models_with_their_family_input_and_noise(tmp_path):
    out_json = tmp_path / "bench.json"
    assert cli_main(["bench", "--model", "starry,pebble", "--backends", "reference", "--sizes", "32",
                     "--repeats", "1", "--warmup", "0", "--sgemm-size", "64", "--peak-libraries", "numpy",
                     "--json", str(out_json), "--quiet"]) == 0
    report = json.loads(out_json.read_text())
    models = {m["name"]: m for m in report["models"]}
    assert {name: (m["family"], m["input_planes"]) for name, m in models.items()} == {
        "starry": ("v1-style", 6), "pebble": ("v1-texture", 3)}
    rows = {r["model"]: r for r in report["results"]}
    for name, noise_modules in (("starry", 5), ("pebble", 6)):
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["input_shape"] == [1, models[name]["input_planes"], 32, 32]
        assert row["noise_modules"] == noise_modules and row["batchnorm"] == "train"
        assert row["output_shape"] == [1, 3, 32, 32] and row["output_finite"]
        assert row["conv_flops"] == models[name]["conv_flops"]["32"]


@pytest.mark.parametrize("name", ["starry", "pebble"])
def test_conv_flops_of_the_v1_nets_match_the_shapes_the_reference_computes(name):
    # Independent of the shape walk: each convolution's output shape as the reference's trace has it.
    from harness.core.noise import draw_noise
    from reference.backend import ReferenceBackend
    from zoo import resolve_model

    path = resolve_model(name, download=False)
    root = t7file.load_module_tree(path)
    planes = 6 if name == "starry" else 3
    shape = (1, planes, 64, 64)
    runner = ReferenceBackend().load(root, "float64", batchnorm="train")
    _, trace = runner.forward(np.zeros(shape), trace=True, noise=draw_noise(root, shape, 0, "float64"))
    expected = 0
    for module in root.walk():
        if module.torch_class in CONVOLUTIONS:
            _, c_out, h, w = trace[module.lua_path].shape
            expected += 2 * c_out * module.integer("nInputPlane") * module.integer("kH") * module.integer("kW") * h * w
    assert conv_flops(root, 64, 64) == expected > 0


# -- the physical limit and the peak ---------------------------------------------------------------------------------
def _cpuinfo(vendor: str, family: int, flags: str, mhz: float = 2600.0, name: str = "CPU") -> str:
    return (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\n"
            f"model name\t: {name}\ncpu MHz\t\t: {mhz}\nflags\t\t: fpu sse sse2 {flags}\n\n"
            f"processor\t: 1\nvendor_id\t: {vendor}\ncpu MHz\t\t: {mhz - 100}\n\n")


@pytest.mark.parametrize(("vendor", "family", "flags", "lanes", "pipes"), [
    ("AuthenticAMD", 25, "avx avx2 fma avx512f", 16, 1),  # Zen 4: 512-bit FMAs on two 256-bit pipes
    ("GenuineIntel", 6, "avx avx2 fma avx512f", 16, 2),  # AVX-512 server core
    ("AuthenticAMD", 25, "avx avx2 fma", 8, 2),  # Zen 3
    ("GenuineIntel", 6, "avx", 8, 2),
    ("GenuineIntel", 6, "", 4, 2),
])
def test_physical_limit_multiplies_its_factors_and_names_their_sources(vendor, family, flags, lanes, pipes):
    limit = physical_limit(_cpuinfo(vendor, family, flags), cpufreq_khz=[], cores=(2, "test"))
    assert (limit["fma_lanes"]["value"], limit["fma_pipes"]["value"]) == (lanes, pipes)
    assert limit["clock_ghz"]["ghz"] == 2.6 and "cpu MHz" in limit["clock_ghz"]["source"]
    assert limit["gflops"] == pytest.approx(2 * 2.6 * lanes * pipes * 2)
    assert limit["fma_pipes"]["assumed"] and all(limit[k]["source"] for k in ("cores", "fma_lanes", "fma_pipes"))
    # cpufreq's maximum, when the kernel exposes it and it is higher, is the clock.
    boosted = physical_limit(_cpuinfo(vendor, family, flags), cpufreq_khz=[3_700_000, 3_500_000], cores=(2, "test"))
    assert boosted["clock_ghz"]["ghz"] == 3.7 and "cpuinfo_max_freq" in boosted["clock_ghz"]["source"]
    assert physical_limit("", cpufreq_khz=[], cores=(2, "test"))["gflops"] is None


def test_the_peak_is_measured_without_the_variables_that_force_a_kernel():
    environ = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "262144", "PATH": "/usr/bin:/bin"}
    assert unforced_environment(environ) == {"PATH": "/usr/bin:/bin"}
    import os

    peak = measure_peak(size=96, repeats=1, libraries=["numpy"], environ={**os.environ, **environ})
    numpy_entry = peak["libraries"]["numpy"]
    own, forced = numpy_entry["own"], numpy_entry["forced"]
    assert own["forcing_variables"] == {} and own["gflops"] > 0
    assert forced["forced_by"] == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "262144"}
    assert forced["forcing_variables"]["OPENBLAS_CORETYPE"] == "Haswell"
    # threadpoolctl reports the kernel that ran: the forced one in the forced process.
    openblas = [pool for pool in forced["kernel"]["threadpools"] if pool.get("internal_api") == "openblas"]
    assert openblas and openblas[0]["architecture"] == "Haswell"
    assert peak["gflops"] == own["gflops"] and peak["forcing_variables"]["OPENBLAS_CORETYPE"] == "Haswell"


def test_a_loaded_machine_is_recognised():
    assert is_loaded([2.5, 1.0, 1.0], 0.0, 2)  # load average above the cores
    assert is_loaded([0.5, 0.5, 0.5], 0.8, 2)  # other processes on 0.8 of 2 cores during the cell
    assert not is_loaded([1.9, 3.0, 3.0], 0.1, 2)  # the bench's own previous cell, nothing else
    assert not is_loaded(None, None, 2)


def _row(backend, dtype, median_s, percent, size=512, mode="time", rss=None):
    return {"backend": backend, "dtype": dtype, "size": size, "mode": mode, "status": "ok", "median_s": median_s,
            "gflops": 100 * percent, "percent_of_peak": percent, "peak_rss_bytes": rss}


def test_targets_are_evaluated_from_the_512_rows():
    report = {"results": [
        _row("torch", "float32", 1.0, 75.0), _row("tf", "float32", 1.5, 49.0),
        _row("reference", "float32", 1.4, 53.0), _row("reference", "float64", 3.6, 21.0),
        _row("reference", "float32", 9.0, 1.0, size=1024),  # other sizes do not count
        _row("tf", "float32", 30.0, 1.0, size=2048, mode="rss", rss=5 * 2**30),
        _row("torch", "float32", 30.0, 1.0, size=2048, mode="rss", rss=3 * 2**30),
    ]}
    met = {t["target"]: t["met"] for t in evaluate_targets(report)}
    assert met == {
        "best backend >= 70% of the peak at 512²": True,
        "torch float32 >= 50% of the peak at 512²": True,
        "tf float32 >= 50% of the peak at 512²": False,
        "reference float32 within 1.5x of the best backend at 512²": True,
        "reference float64 within 2.5x of float32 at 512²": False,  # 3.6 / 1.4 = 2.57
        "tf float32 peak RSS < 4 GiB at 2048²": False,
        "torch float32 peak RSS < 4 GiB at 2048²": True,
    }


def test_targets_skip_loaded_shares_and_other_models():
    loaded = {**_row("tf", "float32", 0.5, 80.0), "loaded": True}
    del loaded["percent_of_peak"]  # run_bench gives a loaded cell no share of the peak
    other_model = {**_row("torch", "float32", 0.1, 99.0), "model": "starry"}
    report = {"models": [{"name": "generator"}, {"name": "starry"}],
              "results": [{**_row("torch", "float32", 1.0, 40.0), "model": "generator"},
                          {**loaded, "model": "generator"}, other_model]}
    targets = {t["target"]: t for t in evaluate_targets(report)}
    best = targets["best backend >= 70% of the peak at 512²"]
    assert best["detail"].startswith("tf float32") and best["met"] is None and best["loaded"]
    assert targets["tf float32 >= 50% of the peak at 512²"]["met"] is None
    assert targets["torch float32 >= 50% of the peak at 512²"]["met"] is False  # 40 %, and starry's 99 % not counted
