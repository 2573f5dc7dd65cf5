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

Costs (measured, docs/benchmarks.md): a module's session is built when its path is asked for and only the
last one is kept. Keeping every one (as this backend once did) held each session's memory arena and
intra-op threads: 1.7 GiB at 512², and destroying 186 of them took 6 s, against 0.1 s one at a time.
Exports of a .t7 file are memoised in the process by the file's bytes and the batch-norm mode
(``EXPORT_MEMO_SIZE``): verify and the tests load the same few models many times.

Models that draw noise (the v1-era nets, docs/real-models.md) take one graph input per noise module,
``noise/<Lua path>`` (listed in the metadata key ``texture_nets.noise_paths``). A noise module that
only hands its noise on (the doodle's GenNoise) has no node: its trace is that graph input.

float32 only: ONNX Runtime's CPU provider has no float64 Conv.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import OrderedDict
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
# Exports kept per process (the serialised model, its trace paths, its input width): a v1 net's export
# is 1-5 s and its model 0.1-2 MB, the full-width generator's 7 MB.
EXPORT_MEMO_SIZE = 8
_EXPORTS: OrderedDict[tuple, tuple[bytes, list[str], int | None]] = OrderedDict()


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
        from contract.families import batchnorm_mode
        from torch_impl.export import export_onnx
        from torch_impl.structure import fixed_input_width

        digest = None if isinstance(model, T7Module) else _file_digest(model)
        root = model if isinstance(model, T7Module) else None
        if root is None and batchnorm is None:  # the memo's key needs the family's mode
            root = load_module_tree(model)
        # torch_impl builds batch norms in the family's mode when none is given: the same export.
        key = None if digest is None else (digest, dtype, batchnorm or batchnorm_mode(root))
        if key in _EXPORTS:
            return self._memoised(key)
        if root is None:
            root = load_module_tree(model)
        with tempfile.TemporaryDirectory(prefix="texture-nets-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            try:
                export_onnx(root, path, dtype, batchnorm=batchnorm)  # what `texture-nets convert` writes, self-checked
            except ValueError as error:  # an unknown batchnorm mode
                raise BackendError(str(error)) from None
            proto = onnx.load(str(path))
        paths, width = trace_paths(root), fixed_input_width(root)
        set_trace_paths(proto, paths)
        if key is not None:
            _EXPORTS[key] = (proto.SerializeToString(), paths, width)
            while len(_EXPORTS) > EXPORT_MEMO_SIZE:
                _EXPORTS.popitem(last=False)
        return OnnxRuntimeRunner(proto, paths, self.num_threads, width)

    def _memoised(self, key: tuple) -> OnnxRuntimeRunner:
        import onnx

        _EXPORTS.move_to_end(key)
        blob, paths, width = _EXPORTS[key]
        return OnnxRuntimeRunner(onnx.load_from_string(blob), paths, self.num_threads, width)

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
        self._module_session: tuple[str, object] | None = None  # (Lua path, session): the last one only
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
        # The output is a copy: callers keep it after the trace is gone (drift's report), and an array of the
        # traced session pins that session's whole memory arena (the trace's 0.7 GiB at 512²) while it lives.
        output = self._session.run([self.output_name], feeds)[0] \
            if self.output_name not in values else values[self.output_name].copy()
        # The session's outputs are fresh arrays: handed out as they are, except the feeds (the caller's own
        # arrays, or views of them) and a tensor already handed out under another path (a node-less module).
        trace, handed_out = {}, set()
        for path, tensor in self.trace_tensors.items():
            value = values.get(tensor)
            if value is None or id(value) in handed_out:
                value = np.array(feeds[tensor] if value is None else value)
            handed_out.add(id(value))
            trace[path] = value
        return output, trace

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
        if self._module_session is None or self._module_session[0] != lua_path:
            import onnx.shape_inference
            import onnx.utils

            if self._extractor is None:  # the extractor needs the intermediate tensors' types
                self._extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(self.proto))
            sub = self._extractor.extract_model([source, *noise_feeds], [target])
            # The previous module session (its threads) goes first, and the traced session too: its arena keeps
            # the whole trace's memory (0.7 GiB at 512²) after the trace is gone; a traced forward rebuilds it.
            self._module_session = self._traced_session = None
            self._module_session = (lua_path, self._make_session(sub, module=True))
        return self._module_session[1].run([target], {source: x, **noise_feeds})[0]

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
        return {self.noise_inputs[path]: _noise_array(path, given[path]) for path in required}

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

    def _make_session(self, proto, module: bool = False):
        """A CPU session; ``module``: a single module's, run once or a few times, so no memory arena (it would
        keep the layer's peak until the session goes) and no spinning threads (the harness judges between
        runs). Neither setting changes a kernel or its arithmetic."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if self.num_threads:
            options.intra_op_num_threads = self.num_threads
        if module:
            options.enable_cpu_mem_arena = False
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def _file_digest(model: str | Path) -> str | None:
    """The SHA-256 of the file ``model`` (what its export depends on, with the dtype and the batch-norm mode);
    None when it cannot be read: the export reports that."""
    try:
        return hashlib.sha256(Path(model).read_bytes()).hexdigest()
    except OSError:
        return None


def _float32_nchw(x: np.ndarray, channels: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        raise BackendError(f"expected an N x {channels or 'C'} x H x W input, got shape {x.shape}")
    return x


def _noise_array(lua_path: str, noise: np.ndarray) -> np.ndarray:
    """One GenNoise's injected noise as the graph input takes it (float32, contiguous), or BackendError."""
    array = np.ascontiguousarray(noise, dtype=np.float32)
    if array.ndim != 4:
        raise BackendError(f"noise for Lua path {lua_path} must be N x planes x h x w, got shape {array.shape}")
    return array
