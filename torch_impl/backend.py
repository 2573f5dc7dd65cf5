"""The "torch" backend of the harness: the PyTorch rebuild behind the backend protocol.

    runner = TorchBackend().load("model.t7", "float32")
    output, trace = runner.forward(x, trace=True)   # numpy in, numpy out, N×C×H×W

Traces come from forward hooks on the modules at ``t7file.trace_paths(root)``,
whose names in the built model are those same Lua paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract import BackendError
from t7file import T7Module, load_module_tree, trace_paths
from torch_impl.build import load_torch_model

# Inputs up to this many pixels (N*H*W) run on one intra-op thread when no thread
# count is given: a tiny forward gains nothing from a second thread, and on a busy
# 2-core machine two threads were measured 20-30x slower on 32x32 (2.0 s vs 0.06 s).
SINGLE_THREAD_PIXELS = 128 * 128


class TorchBackend:
    """Backend protocol object.

    ``num_threads``: intra-op threads during this backend's runs (the previous
    process-wide setting is restored after each run). Default: one thread for
    inputs up to SINGLE_THREAD_PIXELS, PyTorch's own setting above.
    """

    name = "torch"
    dtypes = ("float32", "float64")
    framework = "torch"

    def __init__(self, num_threads: int | None = None):
        self.num_threads = num_threads

    def load(self, model: str | Path | T7Module, dtype: str) -> TorchRunner:
        if dtype not in self.dtypes:
            raise BackendError(f"backend 'torch' supports {', '.join(self.dtypes)}, not {dtype!r}")
        root = model if isinstance(model, T7Module) else load_module_tree(model)
        return TorchRunner(root, dtype, self.num_threads)


class TorchRunner:
    """A built model plus the Lua paths to trace; inputs and outputs are numpy arrays."""

    def __init__(self, root: T7Module, dtype: str, num_threads: int | None = None):
        self.root = root
        self.dtype = dtype
        self.np_dtype = np.dtype(dtype)
        self.model = load_torch_model(root, dtype)
        self.trace_paths = trace_paths(root)
        self.num_threads = num_threads

    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the generator on N×3×H×W input; with ``trace``, every traced module's output by Lua path."""
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"input must be N x C x H x W, got shape {x.shape}")
        recorded: dict[str, torch.Tensor] = {}
        handles = []
        if trace:
            for path in self.trace_paths:
                handles.append(self.model.get_submodule(path).register_forward_hook(_recorder(recorded, path)))
        try:
            output = self._run(self.model, x)
        finally:
            for handle in handles:
                handle.remove()
        return output, {path: _numpy(recorded[path]) for path in self.trace_paths if path in recorded}

    def run_module(self, lua_path: str, x: np.ndarray) -> np.ndarray:
        """Run the single module at ``lua_path`` (a residual block's path runs the whole block).

        A 3-D C×H×W input is run as a batch of one and returned 3-D, as Torch7's spatial modules allow.
        """
        try:
            module = self.model.get_submodule(lua_path)
        except AttributeError:
            raise BackendError(f"no module at Lua path {lua_path!r}") from None
        x = np.asarray(x)
        if x.ndim == 3:
            return self._run(module, x[None])[0]
        return self._run(module, x)

    def _run(self, module: nn.Module, x: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=self.np_dtype))
        threads = self.num_threads
        if threads is None and x.size // max(1, x.shape[1]) <= SINGLE_THREAD_PIXELS:
            threads = 1
        with _threads(threads), torch.inference_mode():
            result = module(tensor)
        if not isinstance(result, torch.Tensor):
            raise BackendError(f"{type(module).__name__} returns a {type(result).__name__}, not a tensor")
        return _numpy(result)


def _recorder(store: dict[str, torch.Tensor], path: str):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        store[path] = output

    return hook


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    # A copy: hooks may hand out tensors that alias one another (TVLoss returns its input).
    return tensor.detach().cpu().numpy().copy()


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Use ``count`` intra-op threads for the duration only (torch's setting is process-wide)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

