"""torch_impl's speed paths give the numbers of its plain paths.

* the blocked normalisations (torch_impl/normalization.py) against the whole-tensor arithmetic, bit for bit,
  in both layouts, with blocks down to one value so that every channel spans several blocks;
* the in-place activations and normalisations of untraced eager forwards (torch_impl/inplace.py) against
  forwards where nothing runs in place, bit for bit, on the committed models and on a tree built to catch an
  in-place op that overwrites a value someone else still reads (a residual block's Identity branch, the
  caller's input);
* graph capture (torch.jit.trace) takes the plain path, so an exported graph takes any size;
* float32 runners hold channels-last convolution weights (the layout oneDNN is fastest with), float64 not.

The oracle tests (test_oracle.py, test_torch_oracle.py) judge the speed paths against Torch7 itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from parity_tests.ground_truth import fixture_runs  # noqa: E402
from t7file import T7Module, load_module_tree  # noqa: E402
from torch_impl import inplace, normalization  # noqa: E402
from torch_impl.artefact import quiet_export_warnings  # noqa: E402
from torch_impl.backend import TorchBackend  # noqa: E402
from torch_impl.noise import random_noise  # noqa: E402
from torch_impl.structure import size_multiple  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The narrow johnson generators of the committed oracle runs and the committed v1 style and texture nets.
FIXTURE_MODELS = sorted({run.model_path for run in fixture_runs()}
                        | set((Path(__file__).resolve().parents[1] / "fixtures" / "models").glob("*.t7")))
CL = torch.channels_last


def _planes(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Values with an offset (so the mean's rounding matters) and one constant plane (variance 0)."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(3.0, 2.0, shape)).to(dtype)
    x[0, 0] = 1.25
    return x


@pytest.fixture(params=[None, 7, 1], ids=["default-block", "block-7", "block-1"])
def block(request, monkeypatch) -> None:
    if request.param is not None:
        monkeypatch.setattr(normalization, "BLOCK_ELEMENTS", request.param)


@pytest.mark.parametrize("shape", [(1, 5, 37), (2, 3, 64), (3, 4, 1), (1, 1, 300)])
def test_blocked_normalisation_is_the_plain_one(shape, block) -> None:
    dtype = torch.float32
    x = _planes(shape, dtype)
    gamma = torch.linspace(0.5, 1.5, shape[1], dtype=dtype)
    beta = torch.linspace(-1.0, 1.0, shape[1], dtype=dtype)
    plain = normalization.normalize_plain(x, gamma, beta, 1e-5)
    assert torch.equal(normalization.normalize_blocked(x, gamma, beta, 1e-5), plain)
    assert torch.equal(normalization.normalize_blocked(x.clone(), gamma, beta, 1e-5, out=x), plain)  # in place
    assert torch.equal(x, plain)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 6, 9, 7), (2, 3, 8, 8), (3, 2, 1, 1)])
def test_channels_last_norms_are_the_plain_ones(shape, dtype, block) -> None:
    """Float32, channels last, each channel's double sums run block after block (another order of double
    additions): identical after the rounding to float32 on every case here. Float64 takes the plain path in
    every layout (it would show another order in its last bits)."""
    x = _planes(shape, dtype)
    gamma = torch.linspace(0.5, 1.5, shape[1], dtype=dtype)
    beta = torch.linspace(-1.0, 1.0, shape[1], dtype=dtype)
    n, c, h, w = shape
    plain_in = normalization.normalize_plain(x.reshape(1, n * c, h * w), gamma.repeat(n), beta.repeat(n), 1e-5)
    plain_bn = normalization.normalize_plain(x.reshape(n, c, h * w), gamma, beta, 1e-5)
    for layout in (torch.contiguous_format, CL):
        y = x.contiguous(memory_format=layout)
        assert torch.equal(normalization.instance_norm_2d(y, gamma, beta, 1e-5), plain_in.view(shape))
        assert torch.equal(normalization.batch_norm_2d(y, gamma, beta, 1e-5), plain_bn.view(shape))
        overwritten = y.clone(memory_format=torch.preserve_format)
        result = normalization.instance_norm_2d(overwritten, gamma, beta, 1e-5, out=overwritten)
        assert result.data_ptr() == overwritten.data_ptr() and torch.equal(overwritten, plain_in.view(shape))


def test_graph_capture_takes_the_plain_path() -> None:
    """A traced graph of the blocked path would hold slices of the example's size; the plain path's graph
    takes any size (exported artefacts rely on it)."""
    gamma, beta = torch.ones(3), torch.zeros(3)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return normalization.instance_norm_2d(x, gamma, beta, 1e-5)

    with quiet_export_warnings():
        traced = torch.jit.trace(norm, _planes((1, 3, 8, 8), torch.float32), check_trace=False)
    other = _planes((2, 3, 5, 7), torch.float32, seed=1)
    assert torch.equal(traced(other), norm(other))
    assert not normalization.capturing_graph()


def _untraced_plain(runner, x: np.ndarray, noise: dict) -> np.ndarray:
    """The runner's model with nothing in place: gradients on make inplace.buffers_reusable() false."""
    tensors = {path: torch.from_numpy(np.ascontiguousarray(value)) for path, value in noise.items()}
    with torch.enable_grad():
        assert not inplace.buffers_reusable()
        model = runner.model
        output = model(torch.from_numpy(x), tensors) if runner.noise_paths else model(torch.from_numpy(x))
    return output.detach().numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", FIXTURE_MODELS, ids=lambda path: path.stem)
def test_in_place_forward_is_the_plain_forward(model, dtype) -> None:
    root = load_module_tree(model)
    runner = TorchBackend().load(root, dtype)
    multiple = size_multiple(root)  # the pyramid nets take multiples of their deepest level
    size = (2 * multiple, multiple) if multiple > 1 else (37, 29)
    x = np.random.default_rng(3).random((2, runner.planes or 3, *size)).astype(dtype)
    before = x.copy()
    noise = random_noise(runner.model, torch.from_numpy(x), 4)
    output, _ = runner.forward(x, noise=noise)
    traced_output, trace = runner.forward(x, trace=True, noise=noise)
    np.testing.assert_array_equal(x, before)  # the caller's array is never written
    np.testing.assert_array_equal(output, traced_output)
    np.testing.assert_array_equal(output, _untraced_plain(runner, x, noise))
    assert trace


def _conv(path: str, planes: int, seed: int) -> T7Module:
    rng = np.random.default_rng(seed)
    return T7Module("nn.SpatialConvolution", path, {
        "nInputPlane": planes, "nOutputPlane": planes, "kW": 1, "kH": 1, "dW": 1, "dH": 1, "padW": 0, "padH": 0,
        "weight": rng.normal(size=(planes, planes, 1, 1)), "bias": rng.normal(size=planes)})


def test_in_place_never_overwrites_a_shared_value() -> None:
    """conv -> {Identity, [ReLU, conv, ReLU, InstanceNorm, ReLU]} -> CAddTable -> ReLU: the branch's first ReLU
    must not run in place (its input is also the Identity's output), the later ones may."""
    branch = T7Module("nn.Sequential", "2.1.2", {}, (
        T7Module("nn.ReLU", "2.1.2.1", {}), _conv("2.1.2.2", 4, 1), T7Module("nn.ReLU", "2.1.2.3", {}),
        T7Module("nn.InstanceNormalization", "2.1.2.4", {"nOutput": 4, "eps": 1e-5}),
        T7Module("nn.ReLU", "2.1.2.5", {})))
    table = T7Module("nn.ConcatTable", "2.1", {}, (T7Module("nn.Identity", "2.1.1", {}), branch))
    block = T7Module("nn.Sequential", "2", {}, (table, T7Module("nn.CAddTable", "2.2", {})))
    root = T7Module("nn.Sequential", "", {}, (_conv("1", 4, 0), block, T7Module("nn.ReLU", "3", {})))
    for dtype in ("float32", "float64"):
        runner = TorchBackend().load(root, dtype)
        x = np.random.default_rng(2).normal(size=(1, 4, 5, 6)).astype(dtype)
        output, _ = runner.forward(x)
        np.testing.assert_array_equal(output, _untraced_plain(runner, x, {}))


def test_hooks_turn_in_place_off() -> None:
    relu, conv = torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 1)
    x = torch.randn(1, 2, 3, 3)
    assert inplace.owns_output(conv)
    assert inplace.run_in_place(relu, x.clone()) is not None
    handle = relu.register_forward_hook(lambda module, inputs, output: None)
    assert inplace.run_in_place(relu, x.clone()) is None
    handle.remove()
    handle = conv.register_forward_hook(lambda module, inputs, output: None)
    assert not inplace.owns_output(conv)
    handle.remove()
    assert not inplace.owns_output(torch.nn.Identity())


def test_float32_runners_hold_channels_last_weights() -> None:
    model = sorted(FIXTURE_MODELS)[0]
    for dtype, expected in (("float32", True), ("float64", False)):
        convolutions = [m for m in TorchBackend().load(model, dtype).model.modules()
                        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d) and m.kernel_size != (1, 1)]
        assert convolutions
        assert all(m.weight.is_contiguous(memory_format=CL) == expected for m in convolutions)
