"""nn.SpatialBatchNormalization (and cudnn's) in Torch7's own arithmetic, both modes, and the v1 aliasing.

docs/real-models.md ("nn.SpatialBatchNormalization", "The batch-norm mode is a convention", "The
aliasing trap") is the spec. In short:

* ``train`` (batch statistics, as the v1 notebooks ran every file): per channel over N x H x W, a
  double sum; ``mean = (real) sum / count``; ``ss`` = double sum of the real squares of the real
  differences ``x - mean``; ``invstd = (real)(1 / sqrt(ss / count + eps))``;
  ``y = ((x - mean) * invstd) * gamma + beta`` in the element type.
* ``evaluate`` (running statistics, after ``:evaluate()``): ``mean = running_mean``,
  ``invstd = (real)(1 / sqrt((double) running_var + eps))``, same ``y``.
* A train-mode module with fewer features than the channels it gets (pyramid.lua's
  ``SpatialBatchNormalization(8)`` before a merge) reads ``gamma[c] = flat[weight_offset + c]``
  and ``beta[c] = flat[bias_offset + c]`` from the file's one flat parameter storage, as cunn did
  when the nets were trained.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from t7file import T7ModelError, T7Module
from torch_impl.normalization import batch_norm_2d

MODES = ("train", "evaluate")


class BatchNorm(nn.Module):
    """One batch norm; ``weight``/``bias`` hold gamma/beta for as many channels as the module can serve
    (more than its features when they are read from the flat storage)."""

    owns_output = True  # a new tensor each call (torch_impl/inplace.py)

    def __init__(self, mode: str, gamma: torch.Tensor, beta: torch.Tensor, eps: float, features: int, *,
                 running_mean: torch.Tensor | None = None, invstd: torch.Tensor | None = None,
                 torch_class: str = "nn.SpatialBatchNormalization", lua_path: str = "", note: str = ""):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"batch-norm mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.weight = nn.Parameter(gamma, requires_grad=False)
        self.bias = nn.Parameter(beta, requires_grad=False)
        self.eps = float(eps)
        self.features = features
        self.torch_class, self.lua_path = torch_class, lua_path
        self.note = note  # why at most weight.numel() channels can run, for the error message
        if mode == "evaluate":
            self.register_buffer("running_mean", running_mean)
            self.register_buffer("invstd", invstd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalize(x, None)

    def forward_in_place(self, x: torch.Tensor) -> torch.Tensor:
        """The same values written over ``x`` (torch_impl/inplace.py decides when that is allowed)."""
        return self._normalize(x, x)

    def _normalize(self, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        channels = x.shape[1]
        gamma, beta = self.weight, self.bias
        if channels != gamma.numel():
            if channels > gamma.numel():
                raise T7ModelError(f"{self.features} features cannot normalise {channels} channels: {self.note}",
                                   torch_class=self.torch_class, lua_path=self.lua_path)
            gamma, beta = gamma[:channels], beta[:channels]
        if self.mode == "train":
            return batch_norm_2d(x, gamma, beta, self.eps, out)
        shape = (1, channels, 1, 1)
        mean = self.running_mean[:channels].view(shape)
        centered = x - mean if out is None else torch.sub(x, mean, out=out)
        # ((x - mean) * invstd) * gamma + beta, in that order, in place on the one full-size temporary.
        return centered.mul_(self.invstd[:channels].view(shape)).mul_(gamma.view(shape)).add_(beta.view(shape))

    def extra_repr(self) -> str:
        return f"{self.features}, mode={self.mode}, eps={self.eps:g}, channels<={self.weight.numel()}"


def build_batch_norm(t7: T7Module, dtype: torch.dtype, mode: str, channels: int | None) -> BatchNorm:
    """A BatchNorm for ``t7`` in ``mode``; ``channels``: what it receives, when the tree says (else None)."""
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    weight, bias = t7.optional_array("weight"), t7.optional_array("bias")
    features = _features(t7, weight)
    eps = t7.number("eps", 1e-5)
    if mode == "evaluate":
        if channels is not None and channels > features:
            raise T7ModelError(f"in evaluate mode its running statistics hold {features} values but it receives "
                               f"{channels} channels (only train-mode batch norms read their gamma/beta past the "
                               "end; Torch7 reads undefined memory here)", torch_class=t7.torch_class,
                               lua_path=t7.lua_path)
        running_mean, invstd = _running_statistics(t7, features, eps)
        gamma_np = np.ones(features) if weight is None else weight.reshape(-1)
        beta_np = np.zeros(features) if bias is None else bias.reshape(-1)
        return BatchNorm(mode, _tensor(gamma_np, np_dtype), _tensor(beta_np, np_dtype), eps, features,
                         running_mean=_tensor(running_mean, np_dtype), invstd=_tensor(invstd, np_dtype),
                         torch_class=t7.torch_class, lua_path=t7.lua_path,
                         note="in evaluate mode its running statistics hold that many values")
    if weight is None or bias is None:
        # affine = false: gamma 1 and beta 0 for every channel, however many.
        size = max(features, channels or 0)
        gamma_np, beta_np, note = np.ones(size), np.zeros(size), ""
    elif channels is None or channels > features:
        gamma_np, beta_np, note = _aliased(t7, weight, bias, features, channels)
    else:
        gamma_np, beta_np, note = weight.reshape(-1), bias.reshape(-1), ""
    if channels is not None and channels > gamma_np.size:
        raise T7ModelError(f"{features} features cannot normalise the {channels} channels it receives: {note}",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    return BatchNorm(mode, _tensor(gamma_np, np_dtype), _tensor(beta_np, np_dtype), eps, features,
                     torch_class=t7.torch_class, lua_path=t7.lua_path, note=note)


def _features(t7: T7Module, weight: np.ndarray | None) -> int:
    for name in ("running_mean", "running_var", "running_std"):
        array = t7.optional_array(name)
        if array is not None and array.size:
            return int(array.size)
    if weight is not None:
        return int(weight.size)
    raise T7ModelError("has neither running statistics nor weight: cannot tell its feature count",
                       torch_class=t7.torch_class, lua_path=t7.lua_path)


def _aliased(t7: T7Module, weight: np.ndarray, bias: np.ndarray, features: int,
             channels: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """gamma/beta read on from the module's own offsets in the flat parameter storage (cunn's unchecked
    ``weight[c]``, ``bias[c]``): ``channels`` values, or as many as the storage holds when unknown."""
    try:
        weight_storage, bias_storage = t7.storage("weight"), t7.storage("bias")
    except T7ModelError:
        return weight.reshape(-1), bias.reshape(-1), ("its parameters come without the file's flat storage, so "
                                                      "nothing past its own weight and bias can be read")
    available = min(weight_storage.flat.size - weight_storage.offset, bias_storage.flat.size - bias_storage.offset)
    note = (f"Torch7 reads gamma/beta past its {features} values into the flat parameter storage, which holds "
            f"{available} values from its weight's offset {weight_storage.offset} and its bias's "
            f"{bias_storage.offset}")
    count = available if channels is None else min(channels, available)
    if count < features:
        count = features
    gamma = weight_storage.flat[weight_storage.offset:weight_storage.offset + count]
    beta = bias_storage.flat[bias_storage.offset:bias_storage.offset + count]
    if gamma.size < features or not np.array_equal(gamma[:features], weight.reshape(-1)) \
            or not np.array_equal(beta[:features], bias.reshape(-1)):
        raise T7ModelError("its weight/bias do not match their own place in the file's storage",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    return gamma, beta, note


def _running_statistics(t7: T7Module, features: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    mean = t7.optional_array("running_mean")
    var = t7.optional_array("running_var")
    std = t7.optional_array("running_std")
    if mean is None or (var is None and std is None):
        raise T7ModelError("evaluate mode needs running_mean and running_var", torch_class=t7.torch_class,
                           lua_path=t7.lua_path)
    if var is not None:
        # (real)(1 / sqrt((double) running_var + eps)), computed in double from the stored values.
        invstd = 1.0 / np.sqrt(var.reshape(-1).astype(np.float64) + eps)
    else:
        invstd = std.reshape(-1).astype(np.float64)  # nn before 2016 stored 1/sqrt(var + eps) itself
    if mean.size != features or invstd.size != features:
        raise T7ModelError(f"running statistics have {mean.size}/{invstd.size} values for {features} features",
                           torch_class=t7.torch_class, lua_path=t7.lua_path)
    return mean.reshape(-1), invstd


def _tensor(array: np.ndarray, np_dtype) -> torch.Tensor:
    # A private contiguous copy: the arrays may be views of the file's one shared storage.
    return torch.from_numpy(np.array(array, dtype=np_dtype, order="C"))
