"""The pieces every reference op is made of: the op base class, the state of one forward pass, errors.

Each Torch7 module becomes one :class:`Op` that knows its Lua path. ``apply(x, run, owned)``
returns ``(value, owned)``: a value is a tensor or a Lua table (a list of tensors, after a
ConcatTable), and ``owned`` says the network may write into it. Ops that Torch7 runs in place
(ReLU(true), LeakyReLU(true), texture_nets' GenNoise) write into their input only when they own
it; the result is what Torch7 computes, whatever the buffers hold afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from contract import BackendError
from t7file import T7ModelError, describe_path

# A value flowing between modules: a tensor, or a Lua table of tensors.
Value = np.ndarray | list[np.ndarray]


class InputError(BackendError, ValueError):
    """A request the reference cannot serve for this model: an input or noise of the wrong shape, a path
    that does not exist, missing noise. A BackendError (the protocol's one error type) and, as before the
    protocol had one, a ValueError."""


class Run:
    """State of one forward pass: where traced outputs go (None when not tracing) and the injected noise."""

    def __init__(self, trace: dict[str, np.ndarray] | None, noise: Mapping[str, np.ndarray] | None = None):
        self.trace = trace
        self.noise = dict(noise or {})

    def record(self, op: Op, value: Value) -> bool:
        """Keep ``value`` as ``op``'s traced output; True when it was kept (so nobody may write into it)."""
        if self.trace is not None and op.traced:
            self.trace[op.lua_path] = value
            return True
        return False


@dataclass
class Op:
    """One Torch7 module. ``apply`` returns (value, owned): ``owned`` says the network may write into it."""

    lua_path: str
    torch_class: str
    traced: bool = field(default=False, init=False)

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:  # pragma: no cover (every op overrides)
        raise NotImplementedError

    def tensor(self, x: Value) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise T7ModelError("expects a tensor input but receives a table (is a CAddTable missing?)",
                               torch_class=self.torch_class, lua_path=self.lua_path)
        return x

    def batch(self, x: Value) -> np.ndarray:
        """The input as an N x C x H x W tensor (the modules of the v1-era nets take batches only)."""
        x = self.tensor(x)
        if x.ndim != 4:
            raise InputError(f"{self.torch_class} at {describe_path(self.lua_path)} expects N x C x H x W, got an "
                             f"input of shape {x.shape}")
        return x

    def walk(self):
        yield self


def dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)
