"""The ``onnx`` backend: torch_impl's ONNX export, run by ONNX Runtime, with traces and single-module runs.

    backend = harness.core.registry.get_backend("onnx")        # found through the entry point
    runner = backend.load("model.t7", "float32")            # exports with torch_impl.export.export_onnx
    output, trace = runner.forward(x, trace=True)            # trace keyed by dotted Lua path

Traces come from the exported graph itself: PyTorch's exporter names every node after the
module scope it came from ("/12/12.1/12.1.2/12.1.2.2/Conv": the modules of torch_impl are
registered under their Lua paths), so the output of the module at a Lua path is the last tensor
that its scope hands to the rest of the graph. The traced tensors are added as extra graph
outputs of a second session; ``run_module`` runs the subgraph between a module's input and
output tensors (onnx.utils.Extractor), so the isolated view tests the artefact's own kernels.

float32 only: ONNX Runtime's CPU provider has no float64 Conv.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from contract import BackendError
from t7file import T7Module, load_module_tree, trace_paths

# Metadata key holding the JSON list of traced Lua paths (written by this backend's exports).
TRACE_PATHS_KEY = "texture_nets.trace_paths"
# Ops with no data input: they belong to a scope but never carry the module's value.
_SOURCE_OPS = frozenset({"Constant", "ConstantOfShape"})


class OnnxRuntimeBackend:
    """Backend protocol object (contract/protocol.py). ``num_threads``: ONNX Runtime intra-op threads."""

    name = "onnx"
    dtypes = ("float32",)
    framework = "onnxruntime"

    def __init__(self, num_threads: int | None = None):
        self.num_threads = num_threads

    def load(self, model: str | Path | T7Module, dtype: str) -> OnnxRuntimeRunner:
        """Export a .t7 path or module tree with torch_impl.export.export_onnx, or read an existing .onnx file."""
        if dtype not in self.dtypes:
            raise BackendError(f"backend 'onnx' supports {', '.join(self.dtypes)}, not {dtype!r} "
                               "(ONNX Runtime's CPU provider has no float64 Conv)")
        import onnx

        if not isinstance(model, T7Module) and Path(model).suffix.lower() == ".onnx":
            return OnnxRuntimeRunner(onnx.load(str(model)), None, self.num_threads)
        root = model if isinstance(model, T7Module) else load_module_tree(model)
        channels = input_channels(root)
        with tempfile.TemporaryDirectory(prefix="texture-nets-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            if channels == 3:
                from torch_impl.export import export_onnx

                export_onnx(root, path, dtype)  # the artefact `texture-nets convert` writes, self-checked
            else:
                _export_any_width(root, path, channels)
            proto = onnx.load(str(path))
        set_trace_paths(proto, trace_paths(root))
        return OnnxRuntimeRunner(proto, None, self.num_threads, channels)

    def environment(self) -> dict:
        import onnx
        import onnxruntime

        from torch_impl.export import ONNX_OPSET

        return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "opset": ONNX_OPSET,
                "providers": ["CPUExecutionProvider"], "intra_op_threads": self.num_threads or 0}


class OnnxRuntimeRunner:
    """Sessions over one ONNX model: plain, traced (extra outputs) and per-module subgraphs (lazily)."""

    def __init__(self, proto, paths: list[str] | None, num_threads: int | None = None, channels: int | None = 3):
        self.proto = proto
        self.channels = channels
        self.num_threads = num_threads
        graph = proto.graph
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self.scope_outputs, self.scope_inputs = _scope_tensors(graph, self.input_name)
        self.paths = list(paths) if paths is not None else stored_trace_paths(proto)
        if self.paths is None:
            self.paths = _paths_from_scopes(self.scope_outputs)
        self.trace_tensors = self._trace_tensors()
        self._session = self._make_session(proto)
        self._traced_session = None
        self._module_sessions: dict[str, object] = {}
        self._extractor = None

    # -- protocol ----------------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x = _float32_nchw(x, channels=self.channels)
        if not trace:
            return self._session.run([self.output_name], {self.input_name: x})[0], {}
        if self._traced_session is None:
            self._traced_session = self._make_session(self._with_trace_outputs())
        names = list(dict.fromkeys(t for t in self.trace_tensors.values() if t != self.input_name))
        values = dict(zip(names, self._traced_session.run(names, {self.input_name: x}), strict=True))
        values[self.input_name] = x
        output = self._session.run([self.output_name], {self.input_name: x})[0] \
            if self.output_name not in values else values[self.output_name]
        return output, {path: np.array(values[tensor]) for path, tensor in self.trace_tensors.items()}

    def run_module(self, lua_path: str, x: np.ndarray) -> np.ndarray:
        """The subgraph of the module at ``lua_path`` (a residual block path runs the whole block) on ``x``."""
        if lua_path not in self.trace_tensors:
            raise BackendError(f"no traced module at Lua path {lua_path!r} in the ONNX graph")
        x = _float32_nchw(x)
        source = self.scope_inputs.get(lua_path)
        target = self.trace_tensors[lua_path]
        if source is None or source == target:  # no node of its own (TVLoss, Identity): the identity
            return x.copy()
        if lua_path not in self._module_sessions:
            import onnx.shape_inference
            import onnx.utils

            if self._extractor is None:  # the extractor needs the intermediate tensors' types
                self._extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(self.proto))
            sub = self._extractor.extract_model([source], [target])
            self._module_sessions[lua_path] = self._make_session(sub)
        return self._module_sessions[lua_path].run([target], {source: x})[0]

    # -- helpers -----------------------------------------------------------------------------------------------
    def _trace_tensors(self) -> dict[str, str]:
        """Lua path -> tensor name; a module without nodes of its own passes on the previous value."""
        tensors: dict[str, str] = {}
        previous = self.input_name
        for path in self.paths:
            tensor = self.scope_outputs.get(path)
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


def input_channels(root: T7Module) -> int | None:
    """Channels the tree takes: the first module in execution order that says (3 for the generator);
    None when no module fixes them (padding, ReLU: any width)."""
    for module in root.walk():
        for field in ("nInputPlane", "nOutput"):
            value = module.fields.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
                return int(value)
    return None


def _export_any_width(root: T7Module, path: Path, channels: int | None) -> None:
    """A tree that does not take RGB (one module, as the property tests build): the same exporter
    settings as torch_impl.export.export_onnx, with an example of the right width (channels
    dynamic too when no module fixes them)."""
    import torch

    from torch_impl.build import load_torch_model
    from torch_impl.export import ONNX_OPSET, quiet_export_warnings

    module = load_torch_model(root, "float32")
    example = torch.from_numpy(np.random.default_rng(0).random((2, channels or 3, 32, 32)).astype(np.float32))
    axes = {0: "batch", 2: "height", 3: "width"} if channels else {0: "batch", 1: "channels", 2: "height", 3: "width"}
    with quiet_export_warnings(), torch.no_grad():
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": axes, "output": axes})


def _scope_tensors(graph, input_name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(Lua path -> output tensor, Lua path -> input tensor) read off the node scopes.

    A node named "/12/12.1/12.1.2/12.1.2.2/Conv" belongs to scopes 12, 12.1, 12.1.2 and
    12.1.2.2. A scope's output is the last tensor one of its nodes produces for a node outside
    it (or for the graph output); its input is the one tensor its nodes read from outside.
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
            if not tensor or tensor in initializers:
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
