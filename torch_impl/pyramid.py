"""Modules of the texture_nets v1-era nets (pyramid, demos, doodle): pooling, upsampling, circular
padding and nn.Concat, each as original Torch7 computes it (docs/real-models.md, "Modules").

Every module is shape-generic and written with ops that torch.jit.trace, torch.export and the ONNX
exporter record without fixing the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contract import BackendError
from t7file import describe_path
from torch_impl.modules import NoiseTable, call, takes_noise


class AveragePool(nn.Module):
    """nn.SpatialAveragePooling(kW, kH, dW, dH) without padding, floor mode.

    Output ``floor((H - kH) / dH) + 1``; each value is THNN's: a sum in the element type, sequential
    over ky then kx, divided by kH*kW afterwards. PyTorch's CPU kernel computes exactly that (its
    accumulator is the element type for float32 and float64, the loop runs over rows then columns):
    measured bit-identical to an explicit sequential sum for float32 and float64, k = 1 ... 32,
    overlapping windows and odd sizes, 1 and 2 threads (parity_tests/test_torch_oracle.py). One op,
    so exports stay small; an explicit chain of kH*kW additions made torch.export 3-4x slower.
    """

    owns_output = True  # a new tensor each call (torch_impl/inplace.py)

    def __init__(self, kw: int, kh: int, dw: int, dh: int, lua_path: str = ""):
        super().__init__()
        self.kernel = (kh, kw)
        self.stride = (dh, dw)
        self.lua_path = lua_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (h, w) = self.kernel, x.shape[2:]
        if h < kh or w < kw:
            raise BackendError(f"nn.SpatialAveragePooling at {describe_path(self.lua_path)}: input {h}x{w} is "
                               f"smaller than its {kh}x{kw} window (Torch7 refuses it too)")
        return F.avg_pool2d(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class UpsampleNearest(nn.Module):
    """nn.SpatialUpSamplingNearest(s): every pixel repeated s x s (pure data movement)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.scale
        return x[:, :, :, None, :, None].expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class CircularPad(nn.Module):
    """nn.SpatialCircularPadding(l, r, t, b) of texture_nets' supplementary/utils.lua, literally.

    The output (N, C, H+t+b, W+l+r) is zeros with the input copied into its interior (negative
    pads crop); then, 1-based, row 1 := row h-1, row h := row 2, and after the rows column
    1 := column w-1, column w := column 2 over the full height. Pad 1 is a torus wrap; pad 0 is
    *not* an identity (it overwrites the input's border); pads of 2 or more copy padding zeros.
    Negative indices keep the graph free of the input size.
    """

    owns_output = True  # torch.cat's new tensor (torch_impl/inplace.py)

    def __init__(self, left: int, right: int, top: int, bottom: int, lua_path: str = ""):
        super().__init__()
        self.pads = (left, right, top, bottom)
        self.lua_path = lua_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.pads
        h, w = x.shape[2] + top + bottom, x.shape[3] + left + right
        if h < 2 or w < 2:
            # Row h-1 (or column w-1) would be row 0: Torch7's narrow raises an error.
            raise BackendError(f"nn.SpatialCircularPadding at {describe_path(self.lua_path)}: padded size {h}x{w} "
                               "is below 2x2, which its border rule cannot index (Torch7 fails too)")
        padded = F.pad(x, self.pads) if any(self.pads) else x
        # The second copy reads row 2, which the first (into row 1) left alone whenever h >= 2.
        rows = torch.cat([padded[:, :, -2:-1], padded[:, :, 1:-1], padded[:, :, 1:2]], dim=2)
        return torch.cat([rows[:, :, :, -2:-1], rows[:, :, :, 1:-1], rows[:, :, :, 1:2]], dim=3)

    def extra_repr(self) -> str:
        return "l={}, r={}, t={}, b={}".format(*self.pads)


class Concat(nn.Module):
    """nn.Concat(dimension): every branch runs on the same input; outputs joined along ``dimension``.

    Torch7's rule (nn/Concat.lua): the output takes the **first** branch's shape with the sizes
    along ``dimension`` summed, and each branch is copied into its slice by ``copy``, which checks
    the element count only. So a branch whose other sizes differ but whose element count matches
    (2x4 against 4x2) is copied in row-major order, silently; any other mismatch is an error.
    """

    def __init__(self, children: list[nn.Module], dimension: int, lua_path: str = ""):
        super().__init__()
        for index, child in enumerate(children, start=1):
            self.add_module(str(index), child)
        self.dim = dimension  # 0-based
        self.lua_path = lua_path
        self.takes_noise = any(takes_noise(child) for child in children)

    def forward(self, x: torch.Tensor, noise: NoiseTable | None = None) -> torch.Tensor:
        outputs = [call(child, x, noise) for child in self.children()]
        joined = concat_like_torch7(outputs, self.dim, self.lua_path)
        if torch.onnx.is_in_onnx_export():
            # The ONNX exporter merges a Concat that feeds another (the doodle's nested levels), which would
            # erase this module's output from the graph and its trace; a clone, dropped later by the
            # exporter, keeps the two apart.
            joined = joined.clone()
        return joined

    def extra_repr(self) -> str:
        return f"dimension={self.dim + 1}"


def concat_like_torch7(outputs: list[torch.Tensor], dim: int, lua_path: str = "") -> torch.Tensor:
    """nn.Concat's join (see :class:`Concat`); raises BackendError naming the path and the sizes."""
    first = outputs[0]
    if first.dim() <= dim:
        raise BackendError(f"nn.Concat at {describe_path(lua_path)}: dimension {dim + 1} does not exist in a "
                           f"{first.dim()}-D output")
    parts = [first]
    for index, output in enumerate(outputs[1:], start=2):
        slot = [*first.shape[:dim], output.shape[dim], *first.shape[dim + 1:]]
        if list(output.shape) != slot:
            if output.numel() != _count(slot):
                raise BackendError(
                    f"nn.Concat at {describe_path(lua_path)}: branch {index} gives {_size(output.shape)}, which does "
                    f"not fit the first branch's {_size(first.shape)} (Torch7: sizes do not match); the input size "
                    "must let every level come back to the same size")
            output = output.reshape(slot)  # Torch7's copy: same element count, row-major order
        parts.append(output)
    return torch.cat(parts, dim=dim)


def _count(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def _size(shape) -> str:
    return "x".join(str(int(size)) for size in shape)
