"""The "torch" backend of the harness: the PyTorch rebuild behind the backend protocol.

    runner = TorchBackend().load("model.t7", "float32")             # batchnorm=None: the family's mode
    output, trace = runner.forward(x, trace=True, noise=noise)      # numpy in, numpy out, N×C×H×W
    runner = TorchBackend().load("model.pt", "float32")             # its own TorchScript export runs too

Traces come from forward hooks on the modules at ``t7file.trace_paths(root)``, whose names in
the built model are those same Lua paths. Noise (contract/protocol.py) is a dict from the Lua
path of every nn.GenNoise to the array it draws in this forward.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract import BackendError
from contract.families import noise_modules
from t7file import T7Module, load_module_tree, trace_paths
from torch_impl.artefact import METADATA_FILE, quiet_export_warnings
from torch_impl.build import load_torch_model
from torch_impl.modules import takes_noise
from torch_impl.structure import model_input_planes

# Inputs up to this many pixels (N*H*W) run on one intra-op thread when no thread
# count is given: a tiny forward gains nothing from a second thread, and on a busy
# 2-core machine two threads were measured 20-30x slower on 32x32 (2.0 s vs 0.06 s).
SINGLE_THREAD_PIXELS = 128 * 128
TORCHSCRIPT_SUFFIXES = frozenset({".pt", ".ts", ".pth", ".jit"})


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

    def load(self, model: str | Path | T7Module, dtype: str, *, batchnorm: str | None = None) -> TorchRunner:
        """A .t7 path or module tree (rebuilt, batch norms in ``batchnorm`` mode, default the family's),
        or a TorchScript file written by torch_impl.export (.pt/.ts: run as it is)."""
        if dtype not in self.dtypes:
            raise BackendError(f"backend 'torch' supports {', '.join(self.dtypes)}, not {dtype!r}")
        if not isinstance(model, T7Module) and is_torchscript_file(model):
            return TorchScriptRunner(model, dtype, self.num_threads, batchnorm)
        root = model if isinstance(model, T7Module) else load_module_tree(model)
        return TorchRunner(root, dtype, self.num_threads, batchnorm)


def is_torchscript_file(path: str | Path) -> bool:
    """A TorchScript archive (a zip, .pt/.ts/...); .t7 files never are."""
    path = Path(path)
    if path.suffix.lower() == ".t7" or not path.is_file():
        return False
    return path.suffix.lower() in TORCHSCRIPT_SUFFIXES or zipfile.is_zipfile(path)


class _Runner:
    """What both runners share: input and noise checks, threads, numpy in and out."""

    dtype: str
    np_dtype: np.dtype
    num_threads: int | None
    planes: int | None
    noise_paths: tuple[str, ...]

    def _input(self, x: np.ndarray) -> torch.Tensor:
        x = np.asarray(x)
        if x.ndim != 4:
            raise BackendError(f"input must be N x C x H x W, got shape {x.shape}")
        if self.planes is not None and x.shape[1] != self.planes:
            raise BackendError(f"this model takes N x {self.planes} x H x W input (its first convolution's planes), "
                               f"got shape {x.shape}")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=self.np_dtype))

    def _noise(self, noise: Mapping[str, np.ndarray] | None, required: list[str]) -> dict[str, torch.Tensor]:
        """The noise as tensors of the run's dtype; BackendError naming the path for anything missing or unknown."""
        given = dict(noise or {})
        unknown = sorted(set(given) - set(self.noise_paths))
        if unknown:
            where = f"its noise modules are at {', '.join(self.noise_paths)}" if self.noise_paths else \
                "it draws no noise"
            raise BackendError(f"noise given for Lua path(s) {', '.join(unknown)}, which draw no noise in this model "
                               f"({where})")
        missing = [path for path in required if path not in given]
        if missing:
            raise BackendError(f"no noise given for the nn.GenNoise at Lua path(s) {', '.join(missing)}: this model "
                               "draws noise there; pass noise={lua_path: array} (contract/protocol.py)")
        tensors = {}
        for path in required:
            array = np.asarray(given[path])
            if array.ndim != 4:
                raise BackendError(f"noise for Lua path {path} must be N x planes x h x w, got shape {array.shape}")
            tensors[path] = torch.from_numpy(np.ascontiguousarray(array, dtype=self.np_dtype))
        return tensors

    def _threads_for(self, x: torch.Tensor):
        threads = self.num_threads
        if threads is None and x.numel() // max(1, x.shape[1]) <= SINGLE_THREAD_PIXELS:
            threads = 1
        return _threads(threads)


class TorchRunner(_Runner):
    """A built model plus the Lua paths to trace; inputs and outputs are numpy arrays."""

    def __init__(self, root: T7Module, dtype: str, num_threads: int | None = None, batchnorm: str | None = None):
        self.root = root
        self.dtype = dtype
        self.np_dtype = np.dtype(dtype)
        try:
            self.model = load_torch_model(root, dtype, batchnorm=batchnorm)
        except ValueError as error:  # an unknown batchnorm mode
            raise BackendError(str(error)) from None
        self.trace_paths = trace_paths(root)
        self.noise_paths = tuple(module.lua_path for module in noise_modules(root))
        self.planes = model_input_planes(root)
        self.num_threads = num_threads

    def forward(self, x: np.ndarray, trace: bool = False,
                noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the generator; with ``trace``, every traced module's output by Lua path."""
        tensor = self._input(x)
        table = self._noise(noise, list(self.noise_paths))
        recorded: dict[str, torch.Tensor] = {}
        handles = []
        if trace:
            for path in self.trace_paths:
                handles.append(self.model.get_submodule(path).register_forward_hook(_recorder(recorded, path)))
        try:
            output = self._run(self.model, tensor, table)
        finally:
            for handle in handles:
                handle.remove()
        return output, _trace_arrays(recorded, self.trace_paths, (tensor, *table.values()))

    def run_module(self, lua_path: str, x: np.ndarray, noise: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Run the single module at ``lua_path`` (a container's path runs the whole container).

        A 3-D C×H×W input is run as a batch of one and returned 3-D, as Torch7's spatial modules allow.
        ``noise`` needs only the noise modules inside that module (others are ignored).
        """
        try:
            module = self.model.get_submodule(lua_path) if lua_path else self.model
        except AttributeError:
            raise BackendError(f"no module at Lua path {lua_path!r}") from None
        x = np.asarray(x)
        if x.ndim not in (3, 4):
            raise BackendError(f"input must be C x H x W or N x C x H x W, got shape {x.shape}")
        batch = x[None] if x.ndim == 3 else x
        inside = [path for path in self.noise_paths if _within(path, lua_path)]
        table = self._noise(noise, inside)
        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=self.np_dtype))
        output = self._run(module, tensor, table)
        return output[0] if x.ndim == 3 else output

    def _run(self, module: nn.Module, x: torch.Tensor, noise: dict[str, torch.Tensor]) -> np.ndarray:
        with self._threads_for(x), torch.inference_mode():
            result = module(x, noise) if takes_noise(module) else module(x)
        if not isinstance(result, torch.Tensor):
            raise BackendError(f"{type(module).__name__} returns a {type(result).__name__}, not a tensor")
        return _numpy(result)


class TorchScriptRunner(_Runner):
    """A TorchScript artefact of torch_impl.export, run as it is (its dtype, its batch-norm mode).

    ``forward`` takes the noise as the artefact does (one tensor per noise module, in the order its
    metadata lists); traces come from the artefact's ``forward_trace`` method; ``run_module`` runs the
    traced submodule at a Lua path (modules without noise)."""

    def __init__(self, path: str | Path, dtype: str, num_threads: int | None = None, batchnorm: str | None = None):
        files = {METADATA_FILE: ""}
        try:
            with quiet_export_warnings():
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        except (RuntimeError, ValueError) as error:
            raise BackendError(f"{path}: not a TorchScript file torch can load "
                               f"({str(error).splitlines()[0]})") from None
        self.module.eval()
        meta = json.loads(files[METADATA_FILE] or "{}")
        if not meta:
            raise BackendError(f"{path}: a TorchScript file without texture-nets metadata (write it with "
                               "'texture-nets convert --to torchscript')")
        if meta["dtype"] != dtype:
            raise BackendError(f"{path} is a {meta['dtype']} TorchScript artefact; it cannot run in {dtype} "
                               "(export it again with --dtype)")
        if batchnorm is not None and meta.get("batchnorm") not in (None, batchnorm):
            raise BackendError(f"{path} was exported with batch norms in {meta['batchnorm']} mode, not {batchnorm}")
        self.dtype, self.np_dtype, self.num_threads = dtype, np.dtype(dtype), num_threads
        self.meta = meta
        self.planes = meta.get("input_planes")
        self.noise_paths = tuple(meta.get("noise_paths", ()))
        self.trace_paths = list(meta.get("trace_paths", ()))

    def forward(self, x: np.ndarray, trace: bool = False,
                noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        tensor = self._input(x)
        table = self._noise(noise, list(self.noise_paths))
        args = (tensor, *(table[path] for path in self.noise_paths))
        with self._threads_for(tensor), torch.inference_mode():
            if trace and self.trace_paths and hasattr(self.module, "forward_trace"):
                output, *traced = self.module.forward_trace(*args)
                return _numpy(output), {path: _numpy(value) for path, value in zip(self.trace_paths, traced,
                                                                                   strict=True)}
            return _numpy(self.module(*args)), {}

    def run_module(self, lua_path: str, x: np.ndarray, noise: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        if any(_within(path, lua_path) for path in self.noise_paths):
            raise BackendError(f"the module at Lua path {lua_path!r} draws noise; a TorchScript artefact runs such "
                               "modules only as part of the whole model")
        module = self.module
        for name in lua_path.split(".") if lua_path else ():
            # ScriptModules have no get_submodule; their children keep the Lua indices as names.
            module = getattr(module, name, None)
            if module is None:
                raise BackendError(f"no module at Lua path {lua_path!r} in the TorchScript artefact")
        x = np.asarray(x)
        batch = torch.from_numpy(np.ascontiguousarray(x[None] if x.ndim == 3 else x, dtype=self.np_dtype))
        with self._threads_for(batch), torch.inference_mode():
            try:
                result = module(batch)
            except RuntimeError as error:
                raise BackendError(f"the traced module at Lua path {lua_path!r} cannot run on its own: "
                                   f"{str(error).splitlines()[0]}") from None
        if not isinstance(result, torch.Tensor):
            raise BackendError(f"the module at Lua path {lua_path!r} returns a {type(result).__name__}, not a tensor")
        output = _numpy(result)
        return output[0] if x.ndim == 3 else output


def _within(path: str, container: str) -> bool:
    """Whether Lua path ``path`` is ``container`` or inside it ("" is the root, which holds everything)."""
    return container == "" or path == container or path.startswith(container + ".")


def _recorder(store: dict[str, torch.Tensor], path: str):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        store[path] = output

    return hook


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    # A copy: hooks may hand out tensors that alias one another (TVLoss returns its input).
    return tensor.detach().cpu().numpy().copy()


def _trace_arrays(recorded: dict[str, torch.Tensor], paths: list[str],
                  inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    """The recorded outputs as arrays, copying only those that share memory with the caller's arrays (the
    input and the noise: Identity, TVLoss and the doodle's GenNoise hand them on) or with an earlier entry.
    No module here writes into another module's output, so the rest can be handed out as they are: at 256x256
    the copies took as long as the forward itself."""
    seen = {tensor.untyped_storage().data_ptr() for tensor in inputs}
    arrays = {}
    for path in paths:
        if path not in recorded:
            continue
        tensor = recorded[path].detach()
        pointer = tensor.untyped_storage().data_ptr()
        arrays[path] = _numpy(tensor) if pointer in seen else tensor.numpy()
        seen.add(pointer)
    return arrays


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
