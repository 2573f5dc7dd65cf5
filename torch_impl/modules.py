"""Small torch.nn modules for the Torch7 classes that PyTorch has no exact twin for.

Each mirrors one ``nn.*`` class of Torch7 / texture_nets (docs/torch7-semantics.md, docs/real-models.md).
Children are registered under their Lua 1-based index ("1", "2", ...), so
``model.get_submodule("13.1.2.4")`` and ``named_modules()`` speak in Lua paths.

Noise travels as an argument, never as module state: a module that draws noise, or a container
with one inside, has ``takes_noise = True`` and is called as ``module(x, noise)`` with ``noise``
a dict from Lua path to tensor; every other module is called as ``module(x)``. So a traced or
exported graph takes the noise as inputs (torch_impl/export.py), and runs stay stateless.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contract import BackendError
from torch_impl.inplace import buffers_reusable, owns_output, run_in_place
from torch_impl.normalization import instance_norm_2d

NoiseTable = dict[str, torch.Tensor]


def takes_noise(module: nn.Module) -> bool:
    """Whether ``module`` draws noise or contains a module that does (it is then called with the noise table)."""
    return bool(getattr(module, "takes_noise", False))


def call(module: nn.Module, x, noise: NoiseTable | None):
    """Run one child the way it wants: with the noise table when it draws noise (or holds a module that does)."""
    if takes_noise(module):
        return module(x, noise)
    return module(x)


def noise_table(noise: tuple, paths: tuple[str, ...]) -> NoiseTable | None:
    """The noise table from a forward's extra arguments: nothing, one dict by Lua path, or one tensor per
    noise module in ``paths`` order (how exported graphs take it)."""
    if not noise:
        return None
    if len(noise) == 1 and isinstance(noise[0], dict):
        return noise[0]
    if len(noise) != len(paths):
        raise BackendError(f"expected {len(paths)} noise tensors (one per noise module: Lua paths "
                           f"{', '.join(paths) or 'none'}), got {len(noise)}")
    return dict(zip(paths, noise, strict=True))


class LuaSequential(nn.Sequential):
    """nn.Sequential: children run in order, registered as "1", "2", ... like ``self.modules[i]``.

    ``forward(x, *noise)``: the noise as one dict by Lua path, or (at the root, as exported graphs
    call it) one tensor per noise module in the order of ``noise_paths``.
    """

    def __init__(self, children: list[nn.Module]):
        super().__init__()
        for index, child in enumerate(children, start=1):
            self.add_module(str(index), child)
        self.takes_noise = any(takes_noise(child) for child in children)
        self.noise_paths: tuple[str, ...] = ()  # set on the root by load_torch_model
        self.trace_paths: tuple[str, ...] = ()

    def forward(self, x, *noise):
        table = noise_table(noise, self.noise_paths)
        reusable = buffers_reusable()
        previous = None
        for child in self:
            # An activation or normalisation may overwrite the previous sibling's fresh, unobserved output
            # (torch_impl/inplace.py); never the Sequential's own input.
            result = run_in_place(child, x) if reusable and previous is not None and owns_output(previous) else None
            x = call(child, x, table) if result is None else result
            previous = child
        return x

    def forward_trace(self, x, *noise) -> tuple[torch.Tensor, ...]:
        """The output, then the output of every module at ``trace_paths`` in that order: what an exported
        TorchScript artefact keeps as a second method, so its runner can trace too."""
        recorded: dict[str, torch.Tensor] = {}
        handles = [self.get_submodule(path).register_forward_hook(_recorder(recorded, path))
                   for path in self.trace_paths]
        try:
            output = self.forward(x, *noise)
        finally:
            for handle in handles:
                handle.remove()
        return (output, *(recorded[path] for path in self.trace_paths))


def _recorder(store: dict[str, torch.Tensor], path: str):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        store[path] = output

    return hook


class ConcatTable(nn.Module):
    """nn.ConcatTable: every child gets the same input; the output is the list of their outputs."""

    def __init__(self, children: list[nn.Module]):
        super().__init__()
        for index, child in enumerate(children, start=1):
            self.add_module(str(index), child)
        self.takes_noise = any(takes_noise(child) for child in children)

    def forward(self, x: torch.Tensor, noise: NoiseTable | None = None) -> list[torch.Tensor]:
        return [call(child, x, noise) for child in self.children()]


class CAddTable(nn.Module):
    """nn.CAddTable: elementwise sum of the table's tensors, left to right (x + branch in a residual block)."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


class ReplicationPad(nn.Module):
    """nn.SpatialReplicationPadding(l, r, t, b): edge replication; negative pads crop.

    PyTorch's ReplicationPad2d takes the same (left, right, top, bottom) order and,
    like Torch7's C kernel it descends from, crops on negative pads (checked
    against the Torch7 single-module case ``reppad_7_lm1_r2_t0_bm2``).
    """

    owns_output = True  # a new tensor each call (torch_impl/inplace.py)

    def __init__(self, left: int, right: int, top: int, bottom: int):
        super().__init__()
        self.pads = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, mode="replicate")

    def extra_repr(self) -> str:
        return "l={}, r={}, t={}, b={}".format(*self.pads)


class InstanceNorm(nn.Module):
    """texture_nets' nn.InstanceNormalization: per-(sample, channel) statistics, always.

    Torch7 views N×C×H×W as 1×(N·C)×H×W and runs BatchNorm in training mode, so
    each plane is normalised by its own mean and *biased* variance,
    ``y = (x - mean) / sqrt(var + eps) * w + b``; ``evaluate()`` changes nothing
    and the file's running statistics, ``bn``, ``train`` and ``momentum`` are never
    used. Without affine parameters w = 1 and b = 0.

    Written out in THNN BatchNormalization's own arithmetic rather than with
    PyTorch's instance_norm: sums accumulate in double (``accreal``), while the
    mean, ``x - mean``, ``invstd`` and the affine step are rounded to the input's
    type. So a constant plane gives exactly ``b``, as in Torch7 (PyTorch's
    float32 kernel leaves ~1e-8 of its mean behind, which 1/sqrt(eps) turns into
    ~1e-5), and 1×1 planes work (``F.instance_norm`` refuses them). The arithmetic
    lives in torch_impl/normalization.py, shared with the batch norms.
    """

    owns_output = True  # a new tensor each call (torch_impl/inplace.py)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm_2d(x, self.weight, self.bias, self.eps)

    def forward_in_place(self, x: torch.Tensor) -> torch.Tensor:
        """The same values written over ``x`` (torch_impl/inplace.py decides when that is allowed)."""
        return instance_norm_2d(x, self.weight, self.bias, self.eps, out=x)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps:g}"


class TVLoss(nn.Module):
    """texture_nets' nn.TVLoss: a training-time regulariser whose forward returns its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
