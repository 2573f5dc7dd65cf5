"""The backend protocol: how the harness runs an implementation of a Torch7 generator.

A **backend** is an object (an instance, or a module-level object) with

    name: str                        # what reports call it: "reference", "torch", "onnx", ...
    dtypes: tuple[str, ...]          # the subset of DTYPES it runs
    def load(self, model, dtype, *, batchnorm=None) -> Runner

and, optionally (the harness reads each with a default):

    framework: str                   # the importable module it needs ("torch", "onnxruntime"); default "numpy"
    faithful: bool                   # claims to compute what Torch7 computes; False for a reproduction of a
                                     # known-flawed port (tf-seed), whose deviations are reported, not failed
    external_port: bool              # the arithmetic is a port written by others (OpenCV's importer), run
                                     # through an adapter: its drift is a finding about that port, reported
                                     # by drift/verify, never a failure of this project's demo or suite
    instance_norm_statistics: str    # how it sums instance/batch-norm plane statistics: "float64" (Torch7's
                                     # accreal, the default) or "float32" (TF Lite has no float64 reductions)
    supported_classes: frozenset[str]  # Torch7 classes it can run (None or absent: unknown, just try)
    def environment(self) -> dict    # versions, threads, device: copied into every report

``load(model, dtype, batchnorm=...)``: ``model`` is a path (a ``.t7`` file, or an artefact the
backend reads) or an in-memory ``t7file.T7Module`` root. Weights are cast to ``dtype`` like
Torch's ``:float()`` / ``:double()``. ``batchnorm`` is how ``nn.SpatialBatchNormalization``
modules normalise: ``"train"`` (the statistics of the current batch, as a module saved with
``train=true`` computes them) or ``"evaluate"`` (the running statistics, after ``:evaluate()``);
``None`` means the model family's convention (:func:`contract.families.batchnorm_mode`). The
harness passes ``batchnorm`` only to models that contain batch norms, so a backend for other
models may leave the keyword out.

A **runner** has

    def forward(self, x, trace=False, noise=None) -> tuple[np.ndarray, dict[str, np.ndarray]]

``x`` is the exact tensor the Torch7 model's ``forward`` receives, N x C x H x W in Torch's
layout, of the runner's dtype (C = the first convolution's input planes: 3 for the johnson
generators and the v1 texture nets, 6 for the v1 style nets, 4 for the doodle net). It returns
the raw output (N x 3 x H' x W', VGG space, not deprocessed) and, when ``trace`` is true, each
traced module's output keyed by its dotted Lua path (``t7file.trace_paths``), as NumPy arrays in
Torch's N x C x H x W layout. A runner that cannot expose some path leaves it out; the harness
reports it as not compared.

``noise`` maps the Lua path of every noise-drawing module (``contract.families.noise_modules``)
to the array that module draws in this forward: for texture_nets' in-place GenNoise, what it
writes into its channels (N x 3 x h x w); for the doodle's GenNoise, the new N x planes x h x w
tensor. Runners of models that draw noise raise :class:`BackendError` when it is missing; the
harness passes it only to such models (``noise=`` is never passed otherwise).

Optionally a runner also has

    def run_module(self, lua_path, x, noise=None) -> np.ndarray

which runs the one module at ``lua_path`` (a container's path runs the whole container) on
``x``: what drift's isolated view uses. An unknown path raises :class:`BackendError`.

Lua paths are dotted and 1-based: ``"6"`` is ``model.modules[6]``, ``"13.1.2.4"`` is module 4 of
module 2 of module 1 of module 13. The root is ``""``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

DTYPES = ("float32", "float64")
# nn.SpatialBatchNormalization: batch statistics ("train") or running statistics ("evaluate").
BATCHNORM_MODES = ("train", "evaluate")
# How a backend accumulates normalisation statistics (its ``instance_norm_statistics``).
IN_STATISTICS = ("float64", "float32")

Trace = dict[str, np.ndarray]
Noise = dict[str, np.ndarray]


@runtime_checkable
class Runner(Protocol):
    def forward(self, x: np.ndarray, trace: bool = False,
                noise: Noise | None = None) -> tuple[np.ndarray, Trace]: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    dtypes: tuple[str, ...]

    def load(self, model: str | Path | Any, dtype: str, *, batchnorm: str | None = None) -> Runner: ...


def backend_framework(backend: Any) -> str:
    """The module a backend needs (``framework``), "numpy" when it does not say."""
    return str(getattr(backend, "framework", "numpy"))


def backend_is_faithful(backend: Any) -> bool:
    """Whether a backend claims Torch7's semantics (``faithful``); True when it does not say."""
    return bool(getattr(backend, "faithful", True))


def backend_is_external(backend: Any) -> bool:
    """Whether a backend runs someone else's port (``external_port``); False when it does not say."""
    return bool(getattr(backend, "external_port", False))


def backend_statistics(backend: Any) -> str:
    """How a backend sums normalisation statistics (``instance_norm_statistics``), "float64" by default."""
    value = getattr(backend, "instance_norm_statistics", "float64")
    if value not in IN_STATISTICS:
        raise ValueError(f"backend '{getattr(backend, 'name', backend)}': instance_norm_statistics must be one of "
                         f"{', '.join(IN_STATISTICS)}, not {value!r}")
    return value


def backend_supported_classes(backend: Any) -> frozenset[str] | None:
    """The Torch7 classes a backend says it runs, or None when it does not say."""
    classes = getattr(backend, "supported_classes", None)
    return None if classes is None else frozenset(classes)
