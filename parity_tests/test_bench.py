"""``texture-nets bench`` and harness/bench/benchmark.py: FLOP counting, the report's structure, target evaluation.

No timing is asserted (the machine is shared and noisy); what is checked is what the numbers are
made of: the convolution FLOPs from the module tree (FACTS §6: 15.6/62.5/250 GFLOP for the
full-width generator), one complete tiny run through the CLI (narrow model, 24², every row and
file present and self-consistent), a failing backend becoming a row instead of a crash, and the
issue-7 target logic on a made-up report.
"""

from __future__ import annotations

import json

import pytest

import t7file
from fixtures import DEFAULT_MODEL
from fixtures.make_model import build_generator
from harness.bench.benchmark import conv_flops, evaluate_targets, parse_run, render_markdown
from t7file.writer import dumps_t7
from texture_nets.cli import main as cli_main


def made_tree(layout: str, widths: tuple[int, int, int]) -> t7file.T7Module:
    return t7file.load_module_tree(dumps_t7(build_generator(layout, widths, 1)))


def closed_form_flops(size: int, c1: int = 32, c2: int = 64, c3: int = 128) -> int:
    """FACTS §1 layer by layer, 2 FLOPs per multiply-add, for an even size divisible by 4."""
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
    assert [round(value / 1e9, 1) for value in flops.values()] == [15.6, 62.5, 250.0]  # FACTS §6
    assert conv_flops(root, 256, 256, batch=2) == 2 * flops[256]


def test_conv_flops_of_a_narrow_model_on_odd_sizes():
    # Pretrained layout, 37x29: the stride-2 convolutions give floor((H-1)/2)+1 (FACTS §2) = 19x15, then 10x8;
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
                       "--rss-sizes", "32", "--sgemm-size", "128", "--json", str(out_json), "--markdown", str(out_md),
                       "--quiet"])
    assert status == 0
    report = json.loads(out_json.read_text())
    assert report["schema"] == "texture-nets-bench/1"
    assert report["command"].startswith("texture-nets bench --backends reference-float32,reference-float64 ")
    expected_flops = conv_flops(t7file.load_module_tree(DEFAULT_MODEL), 24, 24)
    assert report["model"]["conv_flops"]["24"] == expected_flops
    assert report["sgemm_peak"]["gflops"] == max(report["sgemm_peak"]["before"]["gflops"],
                                                 report["sgemm_peak"]["after"]["gflops"]) > 0

    rows = {(r["backend"], r["dtype"], r["size"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {("reference", d, s, m) for d in ("float32", "float64") for s, m in ((24, "time"), (32, "rss"))}
    for dtype in ("float32", "float64"):
        timed = rows["reference", dtype, 24, "time"]
        assert timed["status"] == "ok", timed
        assert len(timed["times_s"]) == 2 and len(timed["warmup_s"]) == 1
        assert timed["min_s"] <= timed["p25_s"] <= timed["median_s"] <= timed["p75_s"] <= timed["max_s"]
        assert timed["gflops"] == pytest.approx(expected_flops / timed["median_s"] / 1e9)
        assert timed["percent_of_peak"] == pytest.approx(100 * timed["gflops"] / report["sgemm_peak"]["gflops"])
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
    assert report["command"] in markdown


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
        "best backend >= 70% of sgemm peak at 512²": True,
        "torch float32 >= 50% of sgemm peak at 512²": True,
        "tf float32 >= 50% of sgemm peak at 512²": False,
        "reference float32 within 1.5x of the best backend at 512²": True,
        "reference float64 within 2.5x of float32 at 512²": False,  # 3.6 / 1.4 = 2.57
        "tf float32 peak RSS < 4 GiB at 2048²": False,
        "torch float32 peak RSS < 4 GiB at 2048²": True,
    }
