"""Calling a backend through the contract: load, forward and run_module with their optional arguments.

The protocol's optional arguments (``batchnorm`` at load, ``noise`` at forward and run_module) are
passed only when they mean something for the model at hand, so a plug-in written for noise-free
generators keeps working unchanged (contract/protocol.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from contract import BackendError
from contract.families import BATCH_NORMS
from t7file import T7Module


def has_batch_norm(root: T7Module) -> bool:
    return any(module.torch_class in BATCH_NORMS for module in root.walk())


def load_runner(backend: Any, model: str | Path | T7Module, dtype: str, *, root: T7Module | None = None,
                batchnorm: str | None = None, **options: Any) -> Any:
    """``backend.load(model, dtype, **options)``, with ``batchnorm=`` when the model has batch norms and a mode is
    given. ``options``: keywords of this backend's own load (the reference's ``conv_algorithm``)."""
    if dtype not in backend.dtypes:
        raise BackendError(f"backend '{backend.name}' supports {', '.join(backend.dtypes)}, not {dtype}")
    tree = root if root is not None else (model if isinstance(model, T7Module) else None)
    if batchnorm is not None and (tree is None or has_batch_norm(tree)):
        try:
            return backend.load(model, dtype, batchnorm=batchnorm, **options)
        except TypeError as error:
            if "batchnorm" not in str(error):
                raise
            raise BackendError(f"backend '{backend.name}' cannot run batch norms in a chosen mode (its load() takes "
                               "no batchnorm argument), and this model has batch norms") from None
    return backend.load(model, dtype, **options)


def forward(runner: Any, x: np.ndarray, *, trace: bool = False,
            noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``runner.forward(x, trace=...)``, with ``noise=`` when the model draws noise."""
    if noise:
        return runner.forward(x, trace=trace, noise=dict(noise))
    return runner.forward(x, trace=trace)


def run_module(runner: Any, lua_path: str, x: np.ndarray, *, noise: Mapping[str, np.ndarray] | None = None
               ) -> np.ndarray:
    """``runner.run_module(lua_path, x)``, with ``noise=`` when the model draws noise."""
    if noise:
        return runner.run_module(lua_path, x, noise=dict(noise))
    return runner.run_module(lua_path, x)


def cast_noise(noise: Mapping[str, np.ndarray] | None, dtype: str) -> dict[str, np.ndarray]:
    """The noise in a run's dtype (drawn or injected once; every backend gets the same values)."""
    return {path: np.asarray(array, dtype=dtype) for path, array in (noise or {}).items()}


# The judge's summation orders whose float32 errors make the rounding ceiling's basis: THNN's (its default) and one
# GEMM per kernel tap (reference.convolution, algorithm "taps"); harness/core/tolerance.py, ROUNDING_CEILING.
JUDGE_ORDERS: tuple[str | None, ...] = (None, "taps")


def judge_float32_rounding(judge: Any, root: T7Module, x: np.ndarray, reference_trace: Mapping[str, np.ndarray], *,
                           noise: Mapping[str, np.ndarray] | None = None, batchnorm: str | None = None
                           ) -> dict[str, float]:
    """The judge's own float32 runs of ``x`` (float32-representable; the same noise and batch-norm mode as the run
    that made ``reference_trace``), one per order of JUDGE_ORDERS: at each traced path the larger of their errors
    against that float64 trace, the basis of the tolerance model's rounding ceiling (harness.core.tolerance.
    rounding_errors). One run at a time: each trace is dropped once its errors are taken."""
    from harness.core.tolerance import rounding_errors

    found: dict[str, float] = {}
    for order in JUDGE_ORDERS:
        options = {} if order is None else {"conv_algorithm": order}
        try:
            runner = load_runner(judge, root, "float32", batchnorm=batchnorm, **options)
        except TypeError as error:
            if "conv_algorithm" not in str(error):
                raise
            raise BackendError(f"the judge '{getattr(judge, 'name', judge)}' cannot sum in a second order "
                               "(load(..., conv_algorithm='taps')); the rounding ceiling needs it") from None
        _, trace = forward(runner, np.asarray(x, dtype=np.float32), trace=True, noise=cast_noise(noise, "float32"))
        errors = rounding_errors(reference_trace, trace)
        del trace, runner
        found = {path: max(error, found.get(path, error)) for path, error in errors.items()}
    return found
