"""The two nn.GenNoise classes, fed with injected noise, and helpers that make noise for checks.

Noise is an input like the image (contract/protocol.py, docs/real-models.md "Noise,
reproducibly"): the runner hands each GenNoise the array it draws in this forward, keyed by its Lua
path, and the module only places it. Both classes take the noise table as their second argument
(torch_impl.modules: ``takes_noise``), so traced and exported graphs take the noise as inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from contract import BackendError
from torch_impl.modules import NoiseTable


class GenNoiseFill(nn.Module):
    """texture_nets' GenNoise: fills channels ``[first_channel, first_channel + planes)`` of its input
    with the drawn U[0,1) values and returns that tensor (in place in Torch7, so the module's output is
    its input with those channels replaced): channels 4-6 for the style nets (stylization.ipynb), all
    of a texture net's input (supplementary/utils.lua). The noise is N x planes x h x w."""

    takes_noise = True

    def __init__(self, lua_path: str, first_channel: int, planes: int):
        super().__init__()
        self.lua_path, self.first_channel, self.planes = lua_path, first_channel, planes

    def forward(self, x: torch.Tensor, noise: NoiseTable | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        end = self.first_channel + self.planes
        if end > c:
            raise BackendError(f"nn.GenNoise at Lua path {self.lua_path} fills channels {self.first_channel + 1}-{end} "
                               f"but its input has {c}")
        drawn = _drawn(noise, self.lua_path, (n, self.planes, h, w))
        # Always three parts, even when two are empty: the pooled input stays in the graph, so an
        # exported graph keeps computing (and can trace) the module that feeds this one.
        return torch.cat([x[:, :self.first_channel], drawn, x[:, end:]], dim=1)

    def extra_repr(self) -> str:
        return f"fills channels {self.first_channel + 1}-{self.first_channel + self.planes} (1-based)"


class GenNoisePlanes(nn.Module):
    """online-neural-doodle's GenNoise: a new N x num_planes x H x W tensor of N(0,1) noise times
    ``mult`` (the injected array is that product); its input's values are ignored."""

    takes_noise = True

    def __init__(self, lua_path: str, planes: int):
        super().__init__()
        self.lua_path, self.planes = lua_path, planes

    def forward(self, x: torch.Tensor, noise: NoiseTable | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        return _drawn(noise, self.lua_path, (n, self.planes, h, w))

    def extra_repr(self) -> str:
        return f"num_planes={self.planes}"


def _drawn(noise: NoiseTable | None, lua_path: str, shape: tuple[int, ...]) -> torch.Tensor:
    drawn = None if noise is None else noise.get(lua_path)
    if drawn is None:
        raise BackendError(f"no noise given for nn.GenNoise at Lua path {lua_path} (it draws an array of shape "
                           f"{_size(shape)} for this input)")
    if tuple(drawn.shape) != tuple(shape):
        raise BackendError(f"noise for nn.GenNoise at Lua path {lua_path} has shape {_size(drawn.shape)}, but "
                           f"this input makes it draw {_size(shape)}")
    return drawn


def _size(shape) -> str:
    return "x".join(str(int(size)) for size in shape)


# -- noise for checks and examples ---------------------------------------------------------------------------------


def noise_modules_of(model: nn.Module) -> dict[str, nn.Module]:
    """Lua path -> GenNoise module of a built model, in execution (pre-order) order."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, GenNoiseFill | GenNoisePlanes)}


def probe_noise_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The shape each noise module draws for input ``x``, found by running the model once with
    zero noise supplied by pre-hooks just before each noise module runs."""
    modules = noise_modules_of(model)
    if not modules:
        return {}
    table: NoiseTable = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def supply(path: str, module: nn.Module):
        def hook(_module: nn.Module, args: tuple) -> None:
            n, _, h, w = args[0].shape
            shapes[path] = (n, module.planes, h, w)
            table[path] = torch.zeros(shapes[path], dtype=args[0].dtype)

        return hook

    handles = [module.register_forward_pre_hook(supply(path, module)) for path, module in modules.items()]
    try:
        with torch.inference_mode():
            model(x, table)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def random_noise(model: nn.Module, x: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
    """Seeded noise of the right shapes for ``x`` (U[0,1) for texture_nets' GenNoise, N(0,1) for the
    doodle's), in x's dtype. Not Torch7's generator: for export checks and tests, where any values do."""
    rng = np.random.default_rng(seed)
    modules = noise_modules_of(model)
    dtype = np.float64 if x.dtype == torch.float64 else np.float32
    drawn = {}
    for path, shape in probe_noise_shapes(model, x).items():
        values = rng.random(shape) if isinstance(modules[path], GenNoiseFill) else rng.standard_normal(shape)
        drawn[path] = values.astype(dtype)
    return drawn
