"""A test plug-in standing for an artefact that fused its pass-through modules away (an exported graph with no
node for nn.TVLoss): the reference, minus every TVLoss/Identity path in its traces and its isolated view."""

from __future__ import annotations

from contract import BackendError
from reference.backend import ReferenceBackend

PASS_THROUGH = frozenset({"nn.TVLoss", "nn.Identity"})


class _FusedRunner:
    def __init__(self, runner, fused: frozenset[str]):
        self._runner, self._fused = runner, fused

    def forward(self, x, trace=False, noise=None):
        output, recorded = self._runner.forward(x, trace=trace, **({"noise": noise} if noise else {}))
        return output, {path: value for path, value in recorded.items() if path not in self._fused}

    def run_module(self, lua_path, x, noise=None):
        if lua_path in self._fused:
            raise BackendError(f"no module at Lua path {lua_path!r} in this artefact")
        return self._runner.run_module(lua_path, x, **({"noise": noise} if noise else {}))


class FusedPassThroughBackend:
    name = "fused-pass-through"
    dtypes = ("float32",)

    def load(self, model, dtype, *, batchnorm=None):
        from t7file import T7Module, load_module_tree

        root = model if isinstance(model, T7Module) else load_module_tree(model)
        fused = frozenset(m.lua_path for m in root.walk() if m.torch_class in PASS_THROUGH)
        return _FusedRunner(ReferenceBackend().load(root, dtype, batchnorm=batchnorm), fused)
