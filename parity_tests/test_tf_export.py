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

TF Lite conversion takes 7-20 s and the SavedModel export ~5-12 s on 2 busy cores, so those tests are marked
slow; the checkpoint tests are not.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from harness.core.compare import Tolerance, assert_close  # noqa: E402
from parity_tests.ground_truth import fixture_runs  # noqa: E402
from t7file import trace_paths  # noqa: E402
from texture_nets.cli import main as cli_main  # noqa: E402
from tf_impl.backend import TFBackend  # noqa: E402
from tf_impl.savedmodel import (  # noqa: E402
    SavedModelRunner,
    export_checkpoint,
    export_savedmodel,
)
from tf_impl.tflite_backend import TFLiteBackend  # noqa: E402
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
    from contract import BackendError

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
    from contract import BackendError

    assert TFLiteBackend.dtypes == ("float32",)
    with pytest.raises(BackendError):
        TFLiteBackend().load(tflite_file, "float64")
