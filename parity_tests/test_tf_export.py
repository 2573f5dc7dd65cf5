"""Independence from the .t7 (SavedModel, TF checkpoint) and TF Lite, through ``texture-nets convert``.

Measured (tensorflow-cpu 2.21.0, narrow pretrained model, the committed oracle inputs):

| path                                            | vs the .t7 path (max abs), every trace key + output |
|-------------------------------------------------|-----------------------------------------------------|
| SavedModel, float32 and float64                 | 0 (bit-identical)                                   |
| checkpoint restored into the code-built graph   | 0 (bit-identical), both dtypes                      |

Both store the weights as float64 and cast for float32, exactly like Torch's ``:float()`` (round to nearest),
so the float32 graph sees the very same numbers as the one built from the float32 .t7.

TF Lite (float32, XNNPACK delegate), max |diff| / max |oracle| against the Torch7 oracle:

| oracle run                              | output   | worst trace key       | worst vs the tf backend |
|-----------------------------------------|----------|-----------------------|-------------------------|
| narrow_pretrained_seed78_f32_32x32      | 4.50e-06 | 6.82e-06 (14.1.2.7)   | 6.33e-06                |
| narrow_pretrained_seed78_f32_37x29      | 3.91e-06 | 3.91e-06 (24)         | 3.25e-06                |
| narrow_pretrained_seed78_f32_2x24x20    | 5.48e-06 | 5.76e-06 (16.1.2.7)   | 5.17e-06                |
| narrow_head_seed77_f32_32x32            | 2.04e-06 | 2.45e-06 (16.1.2.7)   | 2.32e-06                |
| narrow_head_seed77_f32_37x29            | 3.51e-06 | 3.51e-06 (25)         | 2.86e-06                |
| full-width head (../shared) f32 64x64   | 4.24e-06 | 5.93e-06 (17.1.2.7)   | 6.43e-06                |
| full-width head (../shared) f32 67x53   | 5.05e-06 | 6.17e-06 (17.1.2.7)   | 4.74e-06                |

The v1-era files (docs/real-models.md) export with their noise modules as inputs (``noise_<path>``) and their
batch-norm mode built in (recorded in the SavedModel/checkpoint metadata and the .tflite metadata entry): SavedModel
and checkpoint equal the .t7 graph bit for bit (starry, pebble, doodle; batch 2, 32x64; both dtypes). TF Lite sums
batch-norm statistics in float32 (the mean as a shifted sum); against the v1 Torch7 oracle, max|diff| / max(1,
max|oracle|), worst over the output and every stored path:

| oracle run                        | TF Lite float32          | tf float32 (for comparison) |
|-----------------------------------|--------------------------|-----------------------------|
| v1_starry_a_64x64 (float32)       | 5.7e-05 (8.2)            | 5.8e-05                     |
| v1_starry_c_64x64 (float64)       | 4.9e-05 (8.2)            | 4.3e-05                     |
| v1_pebble_a_64x64 (float32)       | 3.4e-05 (11)             | 3.2e-05                     |
| v1_pebble_c_64x64 (float64)       | 1.8e-05 (11)             | 2.0e-05                     |
| doodle_starry_night_a_64x64 (f32) | 2.1e-05 (output)         | 1.9e-05                     |
| demos_starry_a_64x64 (float32)    | 7.2e-06 (1.1...1.6.1)    | 3.7e-06                     |

TF Lite conversion takes 7-20 s and the SavedModel export ~5-12 s on 2 busy cores (v1 files: 15-40 s and 7-24 s),
so those tests are marked slow; the johnson checkpoint tests are not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from contract import BackendError  # noqa: E402
from contract.families import input_planes  # noqa: E402
from harness.core.compare import Tolerance, assert_close  # noqa: E402
from harness.core.noise import draw_noise  # noqa: E402
from parity_tests.ground_truth import REAL_MODELS_DIR, fixture_runs, v1_runs  # noqa: E402
from t7file import trace_paths  # noqa: E402
from texture_nets.cli import main as cli_main  # noqa: E402
from tf_impl.backend import TFBackend  # noqa: E402
from tf_impl.savedmodel import (  # noqa: E402
    SavedModelRunner,
    export_checkpoint,
    export_savedmodel,
)
from tf_impl.tflite_backend import TFLiteBackend, export_tflite  # noqa: E402
from tf_impl.weights import LayerSpec, load_root  # noqa: E402

EXACT = Tolerance(0.0, why="measured bit-identical: same graph, same float32 weights (float64 store cast back)")
TFLITE = Tolerance(1.5e-5, why="measured max rel 6.82e-6 (TF Lite vs Torch7 oracle, every f32 run and trace key)")
PRETRAINED_RUNS = [run for run in fixture_runs() if run.layout == "pretrained"]
MODEL = PRETRAINED_RUNS[0].model_path


def _export_without_the_t7(tmp_path_factory, export, name: str):
    """Export from a copy of the .t7 that is deleted afterwards: nothing can read the .t7 through the artefact."""
    tmp = tmp_path_factory.mktemp(name)
    copy = tmp / MODEL.name
    shutil.copyfile(MODEL, copy)
    export(copy, tmp / name)
    copy.unlink()
    return tmp / name


@pytest.fixture(scope="module")
def savedmodel_dir(tmp_path_factory):
    # The exporter is called directly: ``convert --to tf-savedmodel`` adds a reload check that costs a
    # second graph build; the convert wiring is exercised by the TF Lite tests.
    return _export_without_the_t7(tmp_path_factory, export_savedmodel, "savedmodel")


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return _export_without_the_t7(tmp_path_factory, export_checkpoint, "checkpoint")


@pytest.fixture(scope="module")
def t7_runners():
    return {dtype: TFBackend().load(MODEL, dtype) for dtype in ("float32", "float64")}


def _same(actual_runner, expected_runner, x: np.ndarray, label: str) -> None:
    output, trace = actual_runner.forward(x, trace=True)
    expected_output, expected_trace = expected_runner.forward(x, trace=True)
    assert list(trace) == list(expected_trace) == trace_paths(load_root(MODEL))
    for path in expected_trace:
        assert_close(trace[path], expected_trace[path], EXACT, actual_name=label, expected_name="tf from .t7",
                     where=f"Lua path {path}")
    assert_close(output, expected_output, EXACT, actual_name=label, expected_name="tf from .t7", where="output")


@pytest.mark.slow  # exporting traces four functions, twice (tf.saved_model.save retraces): ~10 s
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_savedmodel_equals_t7_path(savedmodel_dir, t7_runners, dtype: str) -> None:
    runner = TFBackend().load(savedmodel_dir, dtype)
    assert isinstance(runner, SavedModelRunner)  # graph and weights from the SavedModel, not from our code
    for run in PRETRAINED_RUNS:
        _same(runner, t7_runners[dtype], run.input.astype(dtype), f"SavedModel {dtype} ({run.name} input)")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_checkpoint_equals_t7_path(checkpoint_dir, t7_runners, dtype: str) -> None:
    runner = TFBackend().load(checkpoint_dir, dtype)  # --model DIR works for checkpoints too
    assert isinstance(runner.generator.spec, LayerSpec)  # the code-built graph, weights restored into it
    for run in PRETRAINED_RUNS:
        _same(runner, t7_runners[dtype], run.input.astype(dtype), f"checkpoint {dtype} ({run.name} input)")


def test_convert_rejects_float64_tflite(tmp_path, capsys) -> None:
    assert cli_main(["convert", str(MODEL), "--to", "tflite", str(tmp_path / "m.tflite"), "--dtype", "float64"]) == 2
    assert "float32" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_non_model_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BackendError, match="neither a SavedModel"):
        TFBackend().load(tmp_path, "float32")


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite") / "narrow_pretrained.tflite"
    assert cli_main(["convert", str(MODEL), "--to", "tflite", str(out)]) == 0
    return out


@pytest.mark.slow
@pytest.mark.oracle
@pytest.mark.parametrize("run", [run for run in PRETRAINED_RUNS if run.dtype == "float32"], ids=repr)
def test_tflite_drift_vs_oracle(tflite_file, run) -> None:
    runner = TFLiteBackend().load(tflite_file, "float32")
    output, trace = runner.forward(run.input, trace=True)
    assert list(trace) == trace_paths(load_root(MODEL))
    for path, expected in run.trace.items():
        assert_close(trace[path], expected, TFLITE, actual_name="tflite float32", expected_name="Torch7 oracle",
                     where=f"{run.name} Lua path {path}")
    assert_close(output, run.output, TFLITE, actual_name="tflite float32", expected_name="Torch7 oracle",
                 where=f"{run.name} output")
    plain, _ = runner.forward(run.input)  # the output-only signature computes the same graph
    assert_close(plain, output, EXACT, actual_name="tflite output signature", expected_name="tflite trace signature",
                 where=f"{run.name} output")


@pytest.mark.slow
def test_tflite_is_float32_only(tflite_file) -> None:
    assert TFLiteBackend.dtypes == ("float32",)
    with pytest.raises(BackendError):
        TFLiteBackend().load(tflite_file, "float64")


# -- the real v1-era files (docs/real-models.md): noise inputs and the batch-norm mode travel with the artefact -----
# One file per family that draws noise: a style net (6 planes, train-mode BNs reading past their features), a texture
# net (zeros + noise, 6 levels), the doodle (evaluate mode, N(0,1) planes). Exports take 10-40 s each: marked slow.
V1_FILES = {"v1-style": "texture_nets_v1__starry_style.t7", "v1-texture": "texture_nets_v1__pebble.png_model.t7",
            "doodle": "online-neural-doodle__starry_night.t7"}
V1_SHAPE = (2, 32, 64)  # batch 2 (train-mode BNs couple the samples), non-square, the smallest the pyramids allow
# TF Lite float32 against the Torch7 oracle (64x64 runs), max|diff| / max(1, max|oracle|), XNNPACK, float32 batch-norm
# statistics (mean as a shifted sum): measured worst over the output and every stored path.
TFLITE_V1 = {
    "v1-style": Tolerance(1.5e-4, why="measured 5.7e-5 (v1_starry_a, path 8.2; Torch7's own float32 is 4.9e-5 from "
                                      "exact there, docs/real-models.md)"),
    "v1-texture": Tolerance(7e-5, why="measured 3.4e-5 (v1_pebble_a, path 11; Torch7's own: 2.0e-5)"),
    "doodle": Tolerance(5e-5, why="measured 2.1e-5 at the output (doodle_starry_night_a; Torch7's own: 1.0e-5)"),
}


def _v1_param(family: str):
    path = REAL_MODELS_DIR / V1_FILES[family]
    return pytest.param(family, id=family, marks=() if path.is_file() else pytest.mark.skip("no ../shared/realmodels"))


@pytest.fixture(scope="module")
def v1_exports(tmp_path_factory):
    """(family, artefact) -> its path: "savedmodel", "checkpoint" or "model.tflite", each exported once per module
    and only when a test asks for it (the graph test needs no TF Lite file: its conversion is 5-15 s)."""
    folders: dict[str, Path] = {}
    made: set[Path] = set()
    exporters = {"savedmodel": export_savedmodel, "checkpoint": export_checkpoint, "model.tflite": export_tflite}

    def get(family: str, artefact: str) -> Path:
        if family not in folders:
            folders[family] = tmp_path_factory.mktemp(family)
        path = folders[family] / artefact
        if path not in made:
            exporters[artefact](REAL_MODELS_DIR / V1_FILES[family], path)
            made.add(path)
        return path

    return get


def _v1_inputs(family: str, dtype: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    root = load_root(REAL_MODELS_DIR / V1_FILES[family])
    n, h, w = V1_SHAPE
    x = np.random.default_rng(1).random((n, input_planes(root), h, w)).astype(dtype)
    return x, draw_noise(root, x.shape, seed=5, dtype=dtype)


@pytest.mark.slow
@pytest.mark.parametrize("family", [_v1_param(family) for family in V1_FILES])
def test_v1_exports_equal_the_t7_graph(v1_exports, family: str) -> None:
    model = REAL_MODELS_DIR / V1_FILES[family]
    expected_paths = trace_paths(load_root(model))
    for dtype in ("float32", "float64"):
        x, noise = _v1_inputs(family, dtype)
        expected, expected_trace = TFBackend().load(model, dtype).forward(x, trace=True, noise=noise)
        assert expected.shape == (V1_SHAPE[0], 3, *V1_SHAPE[1:])
        kinds = ("savedmodel", "checkpoint") if dtype == "float32" else ("savedmodel",)
        for kind in kinds:
            runner = TFBackend().load(v1_exports(family, kind), dtype)
            if kind == "savedmodel":
                assert isinstance(runner, SavedModelRunner)
            output, trace = runner.forward(x, trace=True, noise=noise)
            assert list(trace) == expected_paths
            for path in expected_paths:
                assert_close(trace[path], expected_trace[path], EXACT, actual_name=f"{kind} {dtype}",
                             expected_name="tf from .t7", where=f"{family} Lua path {path}")
            assert_close(output, expected, EXACT, actual_name=f"{kind} {dtype}", expected_name="tf from .t7",
                         where=f"{family} output")
            with pytest.raises(BackendError, match="no noise given for the noise module"):
                runner.forward(x)


@pytest.mark.slow
@pytest.mark.oracle
@pytest.mark.parametrize("family", [_v1_param(family) for family in V1_FILES])
def test_v1_tflite_against_the_oracle(v1_exports, family: str) -> None:
    runs = [run for run in v1_runs() if run.dtype == "float32" and run.model_path.name == V1_FILES[family]]
    if not runs:
        pytest.skip("no ../shared/oracle/v1 run of this file")
    runner = TFLiteBackend().load(v1_exports(family, "model.tflite"), "float32")
    assert runner.batchnorm == ("evaluate" if family == "doodle" else "train")
    for run in runs:
        output, trace = runner.forward(run.input, trace=True, noise=run.noise)
        assert list(trace) == trace_paths(load_root(run.model_path))
        bound = TFLITE_V1[family]
        for path, expected in [*run.trace.items(), ("output", run.output)]:
            actual = output if path == "output" else trace[path]
            # max|diff| <= bound * max(1, max|oracle|): SEMANTICS.md's measure, as an absolute tolerance
            tolerance = Tolerance(0.0, bound.rtol * max(1.0, float(np.max(np.abs(expected)))), why=bound.why)
            assert_close(actual, expected, tolerance, actual_name="tflite float32", expected_name="Torch7 oracle",
                         where=f"{run.name} {'output' if path == 'output' else f'Lua path {path}'}")
    other = "train" if family == "doodle" else "evaluate"
    with pytest.raises(BackendError, match=f"converted with its batch norms in .* mode.*for {other} mode"):
        TFLiteBackend().load(v1_exports(family, "model.tflite"), "float32", batchnorm=other)


@pytest.mark.slow
def test_v1_exports_carry_the_batchnorm_mode(tmp_path) -> None:
    """The doodle in train mode (not its family's evaluate): the checkpoint keeps the mode it was exported with."""
    model = REAL_MODELS_DIR / V1_FILES["doodle"]
    if not model.is_file():
        pytest.skip("no ../shared/realmodels")
    export_checkpoint(model, tmp_path / "train", batchnorm="train")
    x, noise = _v1_inputs("doodle", "float32")
    restored, _ = TFBackend().load(tmp_path / "train", "float32").forward(x, noise=noise)
    train, _ = TFBackend().load(model, "float32", batchnorm="train").forward(x, noise=noise)
    evaluate, _ = TFBackend().load(model, "float32").forward(x, noise=noise)
    assert np.array_equal(restored, train) and not np.allclose(restored, evaluate, rtol=1e-3)
    with pytest.raises(BackendError, match="exported with its batch norms in train mode"):
        TFBackend().load(tmp_path / "train", "float32", batchnorm="evaluate")
