"""The ``texture-nets`` command line end to end: --help, inspect, run, stylize, demo.

Commands run in-process through ``texture_nets.cli.main`` (fast) except where the exit path
itself is under test. ``run`` is checked against the real Torch7 oracle runs: the committed
narrow ones (both layouts, odd size, batch 2) and, when ../shared is present, the full-width
67×53 run whose output is 68×56.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fixtures import DEFAULT_IMAGE, DEFAULT_MODEL, ORACLE_NARROW_DIR
from harness.core.compare import Tolerance, assert_close
from parity_tests.ground_truth import fixture_runs, shared_runs
from texture_nets.cli import build_parser, main

# Reference float32 vs the Torch7 float32 runs: worst measured 3.9e-6 of the output scale
# (narrow pretrained, batch 2; parity_tests/test_reference_oracle.py); float64: 2.9e-15.
RUN_TOLERANCE = {"float32": Tolerance(rtol=2e-5, why="reference f32 vs Torch7 f32: worst 3.9e-6 measured"),
                 "float64": Tolerance(rtol=1e-9, why="float64 contract; measured 2.9e-15")}


def test_every_command_has_working_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the registered sub-commands
    assert {"inspect", "run", "stylize", "make-model", "demo", "drift", "convert"} <= set(commands)
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"] if name is None else [name, "--help"])
        assert exit_info.value.code == 0, name
    assert "usage: texture-nets" in capsys.readouterr().out


# Lines `inspect` must print for the two real-Torch7 layouts (docs/real-models.md: the pretrained stride-2 convs
# carry zero padding 1; the head layout pads by replication first and convolves with padding 0).
INSPECT_EXPECTED = {
    "narrow_pretrained_seed78.t7": [
        "(1) nn.TVLoss", "(6) nn.SpatialConvolution(4 -> 8, 3x3, 2,2, 1,1)",
        "(12.1.2.2) nn.SpatialConvolution(16 -> 16, 3x3, 1,1, 0,0)",
        "(17) nn.SpatialFullConvolution(16 -> 8, 3x3, 2,2, 1,1, 1,1)",
        "(24) nn.SpatialConvolution(4 -> 3, 3x3, 1,1, 0,0)", "with inner bn", "layout: pretrained",
    ],
    "narrow_head_seed77.t7": [
        "(1) nn.SpatialReplicationPadding(l=4, r=4, t=4, b=4)", "(5) nn.SpatialReplicationPadding(l=1, r=1, t=1, b=1)",
        "(6) nn.SpatialConvolution(4 -> 8, 3x3, 2,2, 0,0)", "(13.1.2.2) nn.SpatialConvolution(16 -> 16, 3x3, 1,1, 0,0)",
        "(18) nn.SpatialFullConvolution(16 -> 8, 3x3, 2,2, 1,1, 1,1)", "(26) nn.TVLoss", "layout: head",
    ],
}


@pytest.mark.parametrize("model", sorted(INSPECT_EXPECTED))
def test_inspect_shows_both_oracle_layouts(capsys, model):
    assert main(["inspect", str(ORACLE_NARROW_DIR / model)]) == 0
    out = capsys.readouterr().out
    for line in INSPECT_EXPECTED[model]:
        assert line in out, f"inspect {model}: missing {line!r}"
    assert "[weight 4x3x9x9, bias 4; 976 params, float32]" in out
    assert "total: 27,603 parameters" in out  # both narrow models: same parameter count


def test_inspect_malformed_file_is_one_line_and_status_2(tmp_path):
    bad = tmp_path / "page.t7"
    bad.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    result = subprocess.run([sys.executable, "-m", "texture_nets", "inspect", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "HTML" in result.stderr


def _oracle_run_cases():
    runs = fixture_runs() + [run for run in shared_runs() if "67x53" in run.name and run.dtype == "float32"]
    return [pytest.param(run, id=run.name, marks=[pytest.mark.oracle]) for run in runs]


@pytest.mark.parametrize("run", _oracle_run_cases())
def test_run_reference_reproduces_oracle(tmp_path, capsys, run):
    x_path, y_path, trace_path = tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "t.npz"
    np.save(x_path, run.input)
    status = main(["run", "--backend", "reference", "--model", str(run.model_path), "--input", str(x_path),
                   "--output", str(y_path), "--dtype", run.dtype, "--trace", str(trace_path)])
    assert status == 0
    output = np.load(y_path)
    assert output.dtype == np.dtype(run.dtype)
    assert_close(output, run.output, RUN_TOLERANCE[run.dtype], actual_name=f"run --backend reference {run.dtype}",
                 expected_name="Torch7", where=f"{run.name} output")
    with np.load(trace_path) as trace:
        for path, expected in run.trace.items():
            assert_close(trace[path], expected, RUN_TOLERANCE[run.dtype], actual_name="run --trace",
                         expected_name="Torch7", where=f"{run.name} Lua path {path}")


def test_run_rejects_bad_input_without_writing(tmp_path, capsys):
    x_path, y_path = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x_path, np.full((1, 3, 8, 8), np.nan, dtype=np.float32))
    assert main(["run", "--model", str(DEFAULT_MODEL), "--input", str(x_path), "--output", str(y_path)]) == 2
    assert "NaN" in capsys.readouterr().err
    assert not y_path.exists()
    np.save(x_path, np.zeros((1, 4, 8, 8), dtype=np.float32))
    assert main(["run", "--model", str(DEFAULT_MODEL), "--input", str(x_path), "--output", str(y_path)]) == 2
    assert "N×3×H×W" in capsys.readouterr().err
    assert main(["run", "--model", str(DEFAULT_MODEL), "--input", str(x_path), "--output", str(x_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_run_unknown_backend_is_one_line(tmp_path, capsys):
    x_path = tmp_path / "x.npy"
    np.save(x_path, np.zeros((1, 3, 8, 8), dtype=np.float32))
    status = main(["run", "--backend", "no-such-backend", "--model", str(DEFAULT_MODEL), "--input", str(x_path),
                   "--output", str(tmp_path / "y.npy")])
    assert status == 2
    assert "unknown backend 'no-such-backend'" in capsys.readouterr().err


def test_stylize_writes_an_image_of_the_input_size(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "styled.png"
    assert main(["stylize", "--input", str(DEFAULT_IMAGE), "--output", str(out), "--image-size", "40"]) == 0
    with Image.open(out) as image:
        assert image.size == (40, 40) and image.mode == "RGB"
    assert main(["stylize", "--input", str(out), "--output", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_demo_runs_every_installed_backend(tmp_path, capsys):
    from texture_nets.commands.demo import installed_backends

    status = main(["demo", "--out", str(tmp_path / "demo"), "--image-size", "32"])
    out = capsys.readouterr().out
    assert status == 0, out
    for backend in installed_backends():
        assert f"== {backend.replace('-float32', '')} float32:" in out
    assert "OK: this project's" in out
    for model in ("starry", "pebble", "johnson"):  # real models first, the random-weight generator last
        assert (tmp_path / "demo" / model / "report.html").stat().st_size > 1000
        assert (tmp_path / "demo" / model / "report.json").exists()
    page = (tmp_path / "demo" / "index.html").read_text()
    assert page.count("<figure>") >= 3 * 2 and "not applicable" in page  # tf-seed on the v1 nets
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 1000


def test_malloc_policy_is_the_applications_and_yields_to_the_users(monkeypatch):
    """harness/core/malloc.py: the command keeps freed pages for the next forward (glibc only), unless the user
    opted out or tuned malloc already; the backends never touch malloc themselves."""
    import platform

    from harness.core import malloc

    for name, value in (("TEXTURE_NETS_MALLOC", "default"), ("MALLOC_ARENA_MAX", "2"),
                        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")):
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            assert malloc._apply() is False, name
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert malloc.keep_freed_memory() is True and malloc.keep_freed_memory() is True  # once, then remembered
    backends = subprocess.run([sys.executable, "-c", "import torch_impl.backend, tf_impl.backend, sys; "
                               "print('harness.core.malloc' in sys.modules)"], capture_output=True, text=True)
    assert backends.stdout.strip() == "False", backends.stderr
