"""Small torch.nn modules for the Torch7 classes that PyTorch has no exact twin for.

Each mirrors one ``nn.*`` class of Torch7 / texture_nets; FACTS.md §2 is the spec.
Children are registered under their Lua 1-based index ("1", "2", ...), so
``model.get_submodule("13.1.2.4")`` and ``named_modules()`` speak in Lua paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LuaSequential(nn.Sequential):
    """nn.Sequential: children run in order, registered as "1", "2", ... like ``self.modules[i]``."""

    def __init__(self, children: list[nn.Module]):
        super().__init__()
        for index, child in enumerate(children, start=1):
            self.add_module(str(index), child)


class ConcatTable(nn.Module):
    """nn.ConcatTable: every child gets the same input; the output is the list of their outputs."""

    def __init__(self, children: list[nn.Module]):
        super().__init__()
        for index, child in enumerate(children, start=1):
            self.add_module(str(index), child)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [child(x) for child in self.children()]


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
    ~1e-5), and 1×1 planes work (``F.instance_norm`` refuses them).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count = x.shape[2] * x.shape[3]
        # mean = (real) sum / n: the double sum is rounded first, then divided in the input's type.
        # sum(dtype=float64) accumulates in double without materialising a float64 copy of x.
        mean = torch.sum(x, dim=(2, 3), keepdim=True, dtype=torch.float64).to(x.dtype) / count
        centered = x - mean
        # invstd = (real) (1 / sqrt(sum((x - mean)^2) / n + eps)), squares in real, sum in double.
        square_sum = torch.sum(centered * centered, dim=(2, 3), keepdim=True, dtype=torch.float64)
        invstd = (1.0 / torch.sqrt(square_sum / count + self.eps)).to(x.dtype)
        # ((x - mean) * invstd) * w + b in that order (same roundings), in place on the one full-size temporary.
        return centered.mul_(invstd).mul_(self.weight.view(1, -1, 1, 1)).add_(self.bias.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps:g}"


class TVLoss(nn.Module):
    """texture_nets' nn.TVLoss: a training-time regulariser whose forward returns its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
