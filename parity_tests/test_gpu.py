"""GPU path: the torch and tf backends on CUDA with TF32 off, judged like on the CPU; then what TF32 does.

    pytest -m gpu parity_tests          # on a machine with a CUDA device

TF32 (Ampere and later) rounds matmul/convolution inputs to a 10-bit mantissa, about 5e-4 relative:
three orders of magnitude above float32's rounding, so with TF32 on no float32 tolerance of
harness/core/tolerance.py can hold. The float32 checks therefore run with TF32 disabled
(torch.backends.{cuda.matmul,cudnn}.allow_tf32 = False; tf.config.experimental
.enable_tensor_float_32_execution(False)); then TF32 is enabled and its drift is reported
(record_property "tf32_output_rel_error", printed with -s), not asserted. Without CUDA every test
here skips.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from harness.core.tolerance import layer_budgets
from parity_tests.parity import MODELS, assert_parity, input_array, judge_trace, model_tree

# No NVIDIA device node: skip before importing torch or tensorflow (seconds each) just to learn that.
HAS_NVIDIA_DEVICE = any(Path("/dev").glob("nvidia[0-9]*"))
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAS_NVIDIA_DEVICE, reason="no NVIDIA device (/dev/nvidia*)")]
CASES = [("pretrained", "random 32x32"), ("head", "photo 64x64"), ("pretrained", "batch 2 24x20")]


def _torch_cuda():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    return torch


def _tf_gpu():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow not installed")
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU visible to tensorflow (tensorflow-cpu?)")
    return tf


def _torch_run_on_cuda(torch, runner, root, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The torch backend's built model (submodules named by Lua path) run on CUDA, traced with forward hooks."""
    from t7file import trace_paths

    model = runner.model.to("cuda")
    recorded: dict[str, np.ndarray] = {}
    hooks = [model.get_submodule(path).register_forward_hook(
        lambda module, inputs, output, path=path: recorded.__setitem__(path, output.detach().cpu().numpy().copy()))
        for path in trace_paths(root)]
    try:
        with torch.inference_mode():
            output = model(torch.from_numpy(np.ascontiguousarray(x)).to("cuda")).cpu().numpy()
    finally:
        for hook in hooks:
            hook.remove()
        runner.model.to("cpu")
    return output, recorded


def _results(root, x, reference_trace, trace, output, dtype, case, name):
    """Like parity.check_trace's accumulated view, on arrays already computed on the device."""
    from parity_tests.parity import judge_arrays

    budgets = layer_budgets(root, x, reference_trace, dtype)
    return judge_arrays(root, budgets, reference_trace, trace, output, view="accumulated", case=case, name=name)


def _rel(a: np.ndarray, e: np.ndarray) -> float:
    return float(np.max(np.abs(a - e)) / np.max(np.abs(e)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout,input_name", CASES)
def test_torch_on_cuda_without_tf32(judge, layout, input_name, dtype, record_property):
    torch = _torch_cuda()
    from harness.core.registry import get_backend

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    root, x = model_tree(layout), input_array(input_name)
    _, reference_trace = judge_trace(judge.load(MODELS[layout], "float64"), x)
    runner = get_backend("torch").load(MODELS[layout], dtype)
    output, trace = _torch_run_on_cuda(torch, runner, root, x.astype(dtype))
    assert_parity(_results(root, x, reference_trace, trace, output, dtype, f"{layout} {input_name}",
                           f"torch cuda {dtype}"))
    if dtype == "float32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        try:
            tf32_output, _ = _torch_run_on_cuda(torch, runner, root, x.astype(dtype))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        last = model_tree(layout).children[-1].lua_path
        rel_off, rel_on = _rel(output, reference_trace[last]), _rel(tf32_output, reference_trace[last])
        record_property("tf32_output_rel_error", rel_on)
        print(f"\ntorch cuda {layout} {input_name}: output rel. error TF32 off {rel_off:.2e}, TF32 on {rel_on:.2e}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout,input_name", CASES)
def test_tf_on_gpu_without_tf32(judge, layout, input_name, dtype, record_property):
    tf = _tf_gpu()
    from harness.core.registry import get_backend

    tf.config.experimental.enable_tensor_float_32_execution(False)
    root, x = model_tree(layout), input_array(input_name)
    _, reference_trace = judge_trace(judge.load(MODELS[layout], "float64"), x)
    runner = get_backend("tf").load(MODELS[layout], dtype)
    with tf.device("/GPU:0"):
        output, trace = runner.forward(x.astype(dtype), trace=True)
    assert_parity(_results(root, x, reference_trace, trace, output, dtype, f"{layout} {input_name}",
                           f"tf gpu {dtype}"))
    if dtype == "float32":
        tf.config.experimental.enable_tensor_float_32_execution(True)
        try:
            with tf.device("/GPU:0"):
                tf32_output, _ = get_backend("tf").load(MODELS[layout], dtype).forward(x.astype(dtype))
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(False)
        last = model_tree(layout).children[-1].lua_path
        rel_off, rel_on = _rel(output, reference_trace[last]), _rel(tf32_output, reference_trace[last])
        record_property("tf32_output_rel_error", rel_on)
        print(f"\ntf gpu {layout} {input_name}: output rel. error TF32 off {rel_off:.2e}, TF32 on {rel_on:.2e}")
