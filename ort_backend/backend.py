"""The ``onnx`` backend: torch_impl's ONNX export, run by ONNX Runtime, with traces and single-module runs.

    backend = harness.core.registry.get_backend("onnx")        # found through the entry point
    runner = backend.load("model.t7", "float32")            # exports with torch_impl.export.export_onnx
    output, trace = runner.forward(x, trace=True)            # trace keyed by dotted Lua path
    output, _ = runner.forward(x, noise={"1.2.2": a, ...})  # models with nn.GenNoise: noise as graph inputs

Traces come from the exported graph itself: PyTorch's exporter names every node after the
module scope it came from ("/12/12.1/12.1.2/12.1.2.2/Conv": the modules of torch_impl are
registered under their Lua paths), so the output of the module at a Lua path is the last tensor
that its scope hands to the rest of the graph. The traced tensors are added as extra graph
outputs of a second session; ``run_module`` runs the subgraph between a module's input and
output tensors (onnx.utils.Extractor), so the isolated view tests the artefact's own kernels.

Models that draw noise (the v1-era nets, docs/real-models.md) take one graph input per noise module,
``noise/<Lua path>`` (listed in the metadata key ``texture_nets.noise_paths``). A noise module that
only hands its noise on (the doodle's GenNoise) has no node: its trace is that graph input.

float32 only: ONNX Runtime's CPU provider has no float64 Conv.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from contract import BackendError
from t7file import T7Module, load_module_tree, trace_paths

# Metadata key holding the JSON list of traced Lua paths (written by torch_impl.export.export_onnx).
TRACE_PATHS_KEY = "texture_nets.trace_paths"
# torch_impl.export's names for the noise inputs (kept here so reading an .onnx file needs no torch import;
# parity_tests/test_onnx_plugin.py checks that they agree).
ONNX_NOISE_PATHS_KEY = "texture_nets.noise_paths"
ONNX_NOISE_PREFIX = "noise/"
# Ops with no data input: they belong to a scope but never carry the module's value.
_SOURCE_OPS = frozenset({"Constant", "ConstantOfShape"})


class OnnxRuntimeBackend:
    """Backend protocol object (contract/protocol.py). ``num_threads``: ONNX Runtime intra-op threads."""

    name = "onnx"
    dtypes = ("float32",)
    framework = "onnxruntime"

    def __init__(self, num_threads: int | None = None):
        self.num_threads = num_threads

    def load(self, model: str | Path | T7Module, dtype: str, *, batchnorm: str | None = None) -> OnnxRuntimeRunner:
        """Export a .t7 path or module tree with torch_impl.export.export_onnx (batch norms in ``batchnorm``
        mode, default the family's), or read an existing .onnx file (as exported)."""
        if dtype not in self.dtypes:
            raise BackendError(f"backend 'onnx' supports {', '.join(self.dtypes)}, not {dtype!r} "
                               "(ONNX Runtime's CPU provider has no float64 Conv)")
        import onnx

        if not isinstance(model, T7Module) and Path(model).suffix.lower() == ".onnx":
            return OnnxRuntimeRunner(onnx.load(str(model)), None, self.num_threads, None)
        from torch_impl.export import export_onnx
        from torch_impl.structure import fixed_input_width

        root = model if isinstance(model, T7Module) else load_module_tree(model)
        with tempfile.TemporaryDirectory(prefix="texture-nets-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            try:
                export_onnx(root, path, dtype, batchnorm=batchnorm)  # what `texture-nets convert` writes, self-checked
            except ValueError as error:  # an unknown batchnorm mode
                raise BackendError(str(error)) from None
            proto = onnx.load(str(path))
        set_trace_paths(proto, trace_paths(root))
        return OnnxRuntimeRunner(proto, None, self.num_threads, fixed_input_width(root))

    def environment(self) -> dict:
        import onnx
        import onnxruntime

        from torch_impl.export import ONNX_OPSET

        return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "opset": ONNX_OPSET,
                "providers": ["CPUExecutionProvider"], "intra_op_threads": self.num_threads or 0}


class OnnxRuntimeRunner:
    """Sessions over one ONNX model: plain, traced (extra outputs) and per-module subgraphs (lazily).

    ``channels``: the input width to insist on (None: whatever the graph's input declares, if fixed)."""

    def __init__(self, proto, paths: list[str] | None, num_threads: int | None = None, channels: int | None = None):
        self.proto = proto
        self.num_threads = num_threads
        graph = proto.graph
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self.channels = channels if channels is not None else _declared_channels(graph.input[0])
        self.noise_inputs = stored_noise_inputs(proto)  # Lua path -> graph input name
        missing = [name for name in self.noise_inputs.values() if name not in {i.name for i in graph.input}]
        if missing:
            raise BackendError(f"the ONNX model's metadata lists noise inputs it does not have: {', '.join(missing)}")
        self.scope_outputs, self.scope_inputs = _scope_tensors(graph, self.input_name, set(self.noise_inputs.values()))
        self.paths = list(paths) if paths is not None else stored_trace_paths(proto)
        if self.paths is None:
            self.paths = _paths_from_scopes(self.scope_outputs)
        self.trace_tensors = self._trace_tensors()
        self._session = self._make_session(proto)
        self._traced_session = None
        self._module_sessions: dict[str, object] = {}
        self._extractor = None

    # -- protocol ----------------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, trace: bool = False,
                noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x = _float32_nchw(x, channels=self.channels)
        feeds = {self.input_name: x, **self._noise_feeds(noise, list(self.noise_inputs))}
        if not trace:
            return self._session.run([self.output_name], feeds)[0], {}
        if self._traced_session is None:
            self._traced_session = self._make_session(self._with_trace_outputs())
        names = list(dict.fromkeys(t for t in self.trace_tensors.values() if t not in feeds))
        values = dict(zip(names, self._traced_session.run(names, feeds), strict=True))
        values.update(feeds)
        output = self._session.run([self.output_name], feeds)[0] \
            if self.output_name not in values else values[self.output_name]
        return output, {path: np.array(values[tensor]) for path, tensor in self.trace_tensors.items()}

    def run_module(self, lua_path: str, x: np.ndarray, noise: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The subgraph of the module at ``lua_path`` (a residual block path runs the whole block) on ``x``;
        ``noise`` needs only the noise modules inside it."""
        if lua_path not in self.trace_tensors:
            raise BackendError(f"no traced module at Lua path {lua_path!r} in the ONNX graph")
        x = _float32_nchw(x)
        inside = [path for path in self.noise_inputs if path == lua_path or path.startswith(lua_path + ".")]
        noise_feeds = self._noise_feeds(noise, inside)
        target = self.trace_tensors[lua_path]
        if target in noise_feeds:  # a noise module without nodes of its own: its output is its noise
            return noise_feeds[target].copy()
        source = self.scope_inputs.get(lua_path)
        if source is None or source == target:  # no node of its own (TVLoss, Identity): the identity
            return x.copy()
        if lua_path not in self._module_sessions:
            import onnx.shape_inference
            import onnx.utils

            if self._extractor is None:  # the extractor needs the intermediate tensors' types
                self._extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(self.proto))
            sub = self._extractor.extract_model([source, *noise_feeds], [target])
            self._module_sessions[lua_path] = self._make_session(sub)
        return self._module_sessions[lua_path].run([target], {source: x, **noise_feeds})[0]

    # -- helpers -----------------------------------------------------------------------------------------------
    def _noise_feeds(self, noise: Mapping[str, np.ndarray] | None, required: list[str]) -> dict[str, np.ndarray]:
        """Graph input name -> float32 array for the noise modules in ``required``; BackendError naming
        the Lua path of anything missing, and of noise for paths that draw none."""
        given = dict(noise or {})
        unknown = sorted(set(given) - set(self.noise_inputs))
        if unknown:
            raise BackendError(f"noise given for Lua path(s) {', '.join(unknown)}, which draw no noise in this model"
                               + (f" (noise modules: {', '.join(self.noise_inputs)})" if self.noise_inputs else ""))
        missing = [path for path in required if path not in given]
        if missing:
            raise BackendError(f"no noise given for the nn.GenNoise at Lua path(s) {', '.join(missing)}: this model "
                               "draws noise there; pass noise={lua_path: array} (contract/protocol.py)")
        feeds = {}
        for path in required:
            array = np.ascontiguousarray(given[path], dtype=np.float32)
            if array.ndim != 4:
                raise BackendError(f"noise for Lua path {path} must be N x planes x h x w, got shape {array.shape}")
            feeds[self.noise_inputs[path]] = array
        return feeds

    def _trace_tensors(self) -> dict[str, str]:
        """Lua path -> tensor name; a module without nodes of its own passes on the previous value, except
        a noise module, whose output is its noise input."""
        tensors: dict[str, str] = {}
        previous = self.input_name
        for path in self.paths:
            tensor = self.scope_outputs.get(path)
            if tensor is None and path in self.noise_inputs:
                tensor = self.noise_inputs[path]
            if tensor is None:
                tensor = self.scope_inputs.get(path, previous)
                self.scope_inputs.setdefault(path, tensor)
            tensors[path] = tensor
            previous = tensor
        return tensors

    def _with_trace_outputs(self):
        import onnx

        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        existing = {output.name for output in model.graph.output} | {self.input_name}
        for tensor in dict.fromkeys(self.trace_tensors.values()):
            if tensor not in existing:
                model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
        return model

    def _make_session(self, proto):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if self.num_threads:
            options.intra_op_num_threads = self.num_threads
        return onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _scope_tensors(graph, input_name: str, noise_names: set[str] | frozenset[str] = frozenset()
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """(Lua path -> output tensor, Lua path -> input tensor) read off the node scopes.

    A node named "/12/12.1/12.1.2/12.1.2.2/Conv" belongs to scopes 12, 12.1, 12.1.2 and
    12.1.2.2. A scope's output is the last tensor one of its nodes produces for a node outside
    it (or for the graph output); its input is the one tensor its nodes read from outside, other
    than a noise graph input (``noise_names``).
    """
    initializers = {init.name for init in graph.initializer}
    producer_scopes: dict[str, set[str]] = {}
    node_scopes = []
    for node in graph.node:
        scopes = set(node.name.split("/")[1:-1]) if node.name.startswith("/") else set()
        node_scopes.append(scopes)
        for tensor in node.output:
            producer_scopes[tensor] = scopes
    graph_outputs = {output.name for output in graph.output}
    outputs: dict[str, str] = {}
    inputs: dict[str, str] = {}
    for node, scopes in zip(graph.node, node_scopes, strict=True):
        for tensor in node.input:
            if not tensor or tensor in initializers or tensor in noise_names:
                continue
            produced_by = producer_scopes.get(tensor, set())
            # A tensor crossing into a scope from outside is that scope's input (its data, not constants).
            for scope in scopes - produced_by:
                if tensor == input_name or node.op_type not in _SOURCE_OPS:
                    inputs.setdefault(scope, tensor)
            # ...and the producing scopes that the consumer is not part of hand it out: their output.
            for scope in produced_by - scopes:
                outputs[scope] = tensor
    for output in graph_outputs:
        for scope in producer_scopes.get(output, set()):
            outputs[scope] = output
    return outputs, inputs


def set_trace_paths(proto, paths: list[str]) -> None:
    """Record the Lua paths to trace in the model's metadata, so the .onnx file describes itself."""
    for prop in list(proto.metadata_props):
        if prop.key == TRACE_PATHS_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = TRACE_PATHS_KEY, json.dumps(paths)


def stored_noise_inputs(proto) -> dict[str, str]:
    """Lua path -> graph input name of every noise module, from torch_impl.export's metadata."""
    for prop in proto.metadata_props:
        if prop.key == ONNX_NOISE_PATHS_KEY:
            return {str(path): ONNX_NOISE_PREFIX + str(path) for path in json.loads(prop.value)}
    return {}


def _declared_channels(value_info) -> int | None:
    dims = value_info.type.tensor_type.shape.dim
    return int(dims[1].dim_value) if len(dims) == 4 and dims[1].dim_value > 0 else None


def stored_trace_paths(proto) -> list[str] | None:
    for prop in proto.metadata_props:
        if prop.key == TRACE_PATHS_KEY:
            return [str(path) for path in json.loads(prop.value)]
    return None


def _paths_from_scopes(scope_outputs: dict[str, str]) -> list[str]:
    """A bare .onnx without the metadata: every module scope of the graph, in graph order. Containers
    (ConcatTable, CAddTable) appear too and node-less modules (TVLoss, Identity) are missing: load the
    .t7 (or a file this backend wrote) for exactly t7file.trace_paths."""
    return list(scope_outputs)


def _float32_nchw(x: np.ndarray, channels: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise BackendError(f"expected an N x {channels or 'C'} x H x W input, got shape {x.shape}")
    return x
