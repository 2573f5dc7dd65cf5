"""The command line on real trained models: stylize, synthesize, run with noise, drift, and their one-line errors.

The bundled v1 Starry Night and pebble nets (fixtures/models) make these run without ../shared; the
Torch7 run of starry replays bit for bit through `run --noise` when ../shared is present.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fixtures import DEFAULT_IMAGE
from parity_tests.ground_truth import v1_runs
from texture_nets.cli import main

pytestmark = pytest.mark.tier("cli")


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_stylize_with_the_v1_starry_net(tmp_path):
    out = tmp_path / "starry.png"
    assert main(["stylize", "--model", "starry", "--input", str(DEFAULT_IMAGE), "--output", str(out),
                 "--image-size", "64"]) == 0
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 20  # a picture, not a flat grey


def test_synthesize_a_batch_of_textures_with_the_pebble_net(tmp_path):
    out = tmp_path / "pebble.png"
    assert main(["synthesize", "--model", "pebble", "--size", "64x96", "--count", "2", "--seed", "3",
                 "--output", str(out)]) == 0
    first, second = (np.asarray(Image.open(tmp_path / f"pebble_{i}.png")) for i in (1, 2))
    assert first.shape == (64, 96, 3) and not np.array_equal(first, second)  # different noise per sample


def test_the_family_decides_what_each_command_accepts(tmp_path, capsys):
    assert main(["stylize", "--model", "pebble", "--input", str(DEFAULT_IMAGE), "--output",
                 str(tmp_path / "x.png"), "--image-size", "64"]) == 2
    line = _one_line(capsys)
    assert "texture net" in line and "texture-nets synthesize" in line
    assert main(["synthesize", "--model", "starry", "--size", "64x64", "--output", str(tmp_path / "y.png")]) == 2
    assert "not a texture net" in _one_line(capsys)


def test_a_size_the_pyramid_cannot_take_names_the_nearest_that_work(tmp_path, capsys):
    assert main(["stylize", "--model", "starry", "--input", str(DEFAULT_IMAGE), "--output",
                 str(tmp_path / "x.png"), "--image-size", "70"]) == 2
    line = _one_line(capsys)
    assert "cannot take 70x70" in line and "64x64" in line and "multiples of 16" in line
    assert not (tmp_path / "x.png").exists()


def test_run_takes_the_exact_forward_input_and_traces_the_noise(tmp_path):
    x = np.concatenate([np.full((1, 3, 32, 32), 0.5)] * 2, axis=1)  # the v1 style net's 6 channels
    np.save(tmp_path / "x.npy", x)
    args = ["run", "--model", "starry", "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
            "--trace", str(tmp_path / "t.npz"), "--seed", "7"]
    assert main(args) == 0
    with np.load(tmp_path / "t.npz") as trace:
        assert "1.1.1.1.1.1.1.1.2" in trace.files  # the coarsest GenNoise's output
        noise_channels = trace["1.1.1.1.1.1.1.1.2"][:, 3:]
    assert noise_channels.min() >= 0 and noise_channels.max() < 1 and noise_channels.std() > 0.1
    first = np.load(tmp_path / "y.npy")
    assert main(args) == 0 and np.array_equal(np.load(tmp_path / "y.npy"), first)  # same seed, same noise


def test_run_refuses_the_wrong_channel_count_in_one_line(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 32)))
    assert main(["run", "--model", "starry", "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "y.npy")]) == 2
    assert "N×6×H×W" in _one_line(capsys)


def test_pickled_noise_is_refused_without_unsafe_advice(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 32, 32)))
    np.savez(tmp_path / "noise.npz", bad=np.array([{"a": 1}], dtype=object))
    assert main(["run", "--model", "starry", "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "y.npy"), "--noise", str(tmp_path / "noise.npz")]) == 2
    line = _one_line(capsys)
    assert "pickled" in line and "allow_pickle" not in line


@pytest.mark.oracle
def test_run_with_the_torch7_runs_noise_reproduces_it(tmp_path):
    run = next((r for r in v1_runs() if r.name == "v1_starry_c_64x64_f64"), None)
    if run is None:
        pytest.skip("no ../shared/oracle/v1")
    np.save(tmp_path / "x.npy", run.input)
    np.savez(tmp_path / "noise.npz", **{f"noise/{path}": array for path, array in run.noise.items()})
    assert main(["run", "--model", str(run.model_path), "--input", str(tmp_path / "x.npy"), "--output",
                 str(tmp_path / "y.npy"), "--dtype", "float64", "--noise", str(tmp_path / "noise.npz")]) == 0
    output = np.load(tmp_path / "y.npy")
    assert np.max(np.abs(output - run.output)) <= 1e-9 * max(1.0, float(np.max(np.abs(run.output))))


def test_drift_on_a_real_model(tmp_path, capsys):
    assert main(["drift", "--model", "starry", "--input", str(DEFAULT_IMAGE), "--image-size", "64",
                 "--backends", "reference-float32", "--quiet", "--summary", "--json", str(tmp_path / "d.json")]) == 0
    import json

    report = json.loads((tmp_path / "d.json").read_text())
    assert report["model"]["family"] == "v1-style" and report["model"]["batchnorm"] == "train"
    assert report["input"]["noise"]["source"].startswith("drawn by Torch7's CPU generator")
