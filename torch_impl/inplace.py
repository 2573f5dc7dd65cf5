"""When a module may overwrite its input: the buffer reuse of eager, untraced forwards.

Torch7's modules keep their output buffers from one forward to the next (and ReLU(true) writes over its
input); PyTorch's out-of-place ops allocate a new activation per module, and a new large tensor is new
pages, each a page fault (at 512² with 32 channels, a 32 MiB ReLU output took ~10 ms, in place 1-2 ms).
So :class:`torch_impl.modules.LuaSequential` lets an activation or a normalisation overwrite its input
when nothing else can see that input:

* the input is the output of the previous sibling in the same Sequential (never a container's own input:
  that may be the caller's array, or fanned out by a ConcatTable or Concat), and that sibling always
  returns a tensor of its own (:func:`owns_output`: convolutions, pads, poolings, normalisations,
  activations; not Identity, TVLoss, GenNoise, the upsampling's views or containers);
* neither module has forward hooks (a trace records outputs through hooks, so a traced forward keeps every
  value) and no global module hooks are installed;
* gradients are off (the runner's inference mode) and no graph is being captured (exported graphs keep
  the plain out-of-place ops).

Values are the same either way: the in-place ops are the same kernels writing elsewhere
(parity_tests/test_torch_speed_paths.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_hooks

from torch_impl.normalization import capturing_graph

# PyTorch modules that always return a new tensor; torch_impl's own set ``owns_output = True``.
_OWNING = (nn.Conv2d, nn.ConvTranspose2d, nn.ReLU, nn.LeakyReLU, nn.Threshold)
_ACTIVATIONS: dict[type, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda module, x: torch.relu_(x),
    nn.LeakyReLU: lambda module, x: F.leaky_relu_(x, module.negative_slope),
    nn.Threshold: lambda module, x: F.threshold_(x, module.threshold, module.value),
}


def buffers_reusable() -> bool:
    """Whether this forward may overwrite intermediate values at all (eager, no gradients, no global hooks)."""
    return (not torch.is_grad_enabled() and not capturing_graph()
            and not module_hooks._global_forward_hooks and not module_hooks._global_forward_pre_hooks)


def owns_output(module: nn.Module) -> bool:
    """Whether ``module``'s output is a tensor that only its consumer will see: a new tensor, unhooked."""
    return (isinstance(module, _OWNING) or getattr(module, "owns_output", False)) and _unhooked(module)


def run_in_place(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``module(x)`` computed over ``x`` itself, or None when ``module`` cannot or must not (hooks)."""
    if not _unhooked(module):
        return None
    activation = _ACTIVATIONS.get(type(module))
    if activation is not None:
        return activation(module, x)
    forward_in_place = getattr(module, "forward_in_place", None)
    return forward_in_place(x) if forward_in_place is not None else None


def _unhooked(module: nn.Module) -> bool:
    return not module._forward_hooks and not module._forward_pre_hooks
