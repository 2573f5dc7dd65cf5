"""The ``opencv`` backend: the .t7 read by OpenCV's own Torch importer and run by OpenCV's own layers.

    backend = harness.core.registry.get_backend("opencv")     # found through the entry point
    runner = backend.load("model.t7", "float32")                # cv2.dnn.readNetFromTorch(model.t7, ...)
    output, trace = runner.forward(x, trace=True)               # trace keyed by dotted Lua path
    runner.adapter_paths                                        # Lua path -> what the adapter computed there

What each view runs (``runner.views`` says the same, for reports):

* **output** (``forward``): ``readNetFromTorch(file, isBinary, evaluate)`` with the settings a user
  gets: ``DNN_BACKEND_OPENCV`` / ``DNN_TARGET_CPU``, layer fusion on, Winograd on, ``net.forward()``.
* **trace** (``forward(trace=True)``): a second Net from the same file with ``enableFusion(False)``
  (Winograd as shipped), every mapped layer requested in one ``net.forward(names)``. With fusion on,
  a blob that feeds a Concat is aliased into the Concat's buffer and reads back as garbage, and a Net
  set up again for another output list applies a batch norm that MVN had absorbed a second time
  (docs/ports/opencv.md), so traces come from an unfused Net, one per output list and input shape.
  Layer names map to Lua paths by :mod:`opencv_backend.naming` (checked against the Net's own names).
* **isolated** (``run_module``): the one module written as a one-module .t7 (t7file's writer) and
  read by the same importer with the same defaults: OpenCV's own layer(s) for that module, on the
  input the harness gives.

Adapter code (``adapter_paths``): the custom layers of :mod:`opencv_backend.layers` for the classes
OpenCV lacks, and, only with ``bn_alias="patch"``, the rewrite of texture_nets v1's batch norms
declared with fewer features than channels (OpenCV cannot run those files as distributed: its fused
path raises in ``fastNormChannel``, its unfused path reads past the 8-element scale and gives NaN).
By default such a file is refused with a BackendError.

float32 only: OpenCV's importer converts every tensor to float32 (``readTorchTensor``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from contract import BackendError
from contract.families import CONVOLUTIONS, batchnorm_mode, input_planes, noise_modules
from opencv_backend import layers
from opencv_backend.files import (
    ScratchFiles,
    alias_overrides,
    aliased_batch_norms,
    module_file,
    module_indices,
    to_torch_object,
)
from opencv_backend.naming import LayerPlan, plan_layers
from t7file import T7Module, UnsupportedModuleError, load_module_tree, trace_paths
from t7file.writer import dumps_t7

BN_ALIAS_CHOICES = ("refuse", "patch")
# Torch7 classes this backend runs: OpenCV's importer for most, the adapter's custom layers for the rest.
SUPPORTED_CLASSES = frozenset({
    "nn.Sequential", "nn.Concat", "nn.ConcatTable", "nn.CAddTable", "nn.Identity",
    "nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution", "nn.SpatialFullConvolution",
    "nn.InstanceNormalization", "nn.SpatialBatchNormalization", "nn.ReLU", "nn.SpatialAveragePooling",
    "nn.SpatialUpSamplingNearest", *layers.ADAPTER_CLASSES,
})
# Modules that take or give a Lua table: no Net of their own.
TABLE_CLASSES = frozenset({"nn.ConcatTable", "nn.CAddTable"})


class OpenCVBackend:
    """Backend protocol object (contract/protocol.py).

    ``bn_alias``: what to do with a batch norm declared with fewer features than the channels it
    normalises (texture_nets v1, docs/real-models.md). "refuse" (default): BackendError, because
    OpenCV cannot run the file as distributed. "patch": hand OpenCV a rewritten copy whose weight
    and bias hold the values Torch7 reads; those paths are listed in ``adapter_paths``.
    ``num_threads``: ``cv2.setNumThreads`` (process-wide) at load; None leaves OpenCV's default.
    """

    dtypes = ("float32",)
    framework = "cv2"
    faithful = True  # it claims Torch7's semantics; the harness judges the claim
    # The arithmetic is OpenCV's, a port written by others: its drift is a finding about OpenCV, reported by
    # drift and verify, never a failure of this project's demo or suite (contract/protocol.py).
    external_port = True
    supported_classes = SUPPORTED_CLASSES

    def __init__(self, bn_alias: str = "refuse", num_threads: int | None = None):
        if bn_alias not in BN_ALIAS_CHOICES:
            raise BackendError(f"bn_alias must be one of {', '.join(BN_ALIAS_CHOICES)}, not {bn_alias!r}")
        self.bn_alias = bn_alias
        self.num_threads = num_threads
        self.name = "opencv" if bn_alias == "refuse" else "opencv-bn-alias-patched"

    def load(self, model: str | Path | T7Module, dtype: str, *, batchnorm: str | None = None) -> OpenCVRunner:
        if dtype not in self.dtypes:
            raise BackendError(f"backend '{self.name}' supports float32 only, not {dtype!r} (OpenCV's Torch importer "
                               "converts every tensor to float32)")
        import cv2

        layers.register()
        if self.num_threads:
            cv2.setNumThreads(int(self.num_threads))
        scratch = ScratchFiles()
        if isinstance(model, T7Module):
            root, source, is_binary = model, None, True
        else:
            source = Path(model)
            root = load_module_tree(source)  # T7Error for anything malformed, before OpenCV sees it
            with open(source, "rb") as handle:
                head = handle.read(2)
            is_binary = not (head[:1].isdigit() and head[1:2] in (b"\n", b"\r"))
        _check_classes(root)
        mode = batchnorm or batchnorm_mode(root)
        if mode not in ("train", "evaluate"):
            raise BackendError(f"batchnorm must be 'train' or 'evaluate', not {mode!r}")
        # The first convolution fixes the input planes; a tree without one (a single module) takes any width.
        planes = input_planes(root) if any(m.torch_class in CONVOLUTIONS for m in root.walk()) else None
        aliased = aliased_batch_norms(root, planes) if planes is not None else []
        adapter = {module.lua_path: f"supplied by the adapter: {layers.ADAPTER_CLASSES[module.torch_class]}"
                   for module in root.walk() if module.torch_class in layers.ADAPTER_CLASSES}
        overrides: dict[str, dict[str, Any]] = {}
        if aliased:
            first = aliased[0]
            if self.bn_alias == "refuse":
                raise BackendError(
                    f"OpenCV cannot run this file as distributed: the batch norm at Lua path {first.lua_path} declares "
                    f"{first.features} features for {first.channels} channels ({len(aliased)} such modules; Torch7 "
                    "reads the missing gamma/beta from the flat parameter storage, docs/real-models.md) and OpenCV "
                    "4.x fails on it (fastNormChannel: 'scale should be a 1d tensor', or NaN unfused); "
                    "the backend 'opencv_backend:patched' runs an adapter-rewritten copy")
            if mode != "train":
                raise BackendError(f"batch norm at Lua path {first.lua_path} declares {first.features} features for "
                                   f"{first.channels} channels: what Torch7 computes for it is established for "
                                   "batch statistics (train) only")
            overrides = alias_overrides(aliased)
            for bn in aliased:
                adapter[bn.lua_path] = (
                    f"parameters rewritten by the adapter: weight/bias given to OpenCV as {bn.channels}-element "
                    f"tensors holding flat[{bn.weight_offset}:+{bn.channels}] / flat[{bn.bias_offset}:+{bn.channels}] "
                    f"(Torch7's aliased read of a {bn.features}-feature batch norm); the normalisation is "
                    "OpenCV's MVN + BatchNorm")
        if source is None or overrides:
            stem = "patched" if overrides else "model"
            source = scratch.write(to_torch_object(root, overrides), stem)
            is_binary = True
        return OpenCVRunner(root, source, is_binary, mode == "evaluate", adapter, overrides, scratch, planes)

    def environment(self) -> dict:
        import cv2

        try:
            from importlib import metadata

            package = f"opencv-python-headless {metadata.version('opencv-python-headless')}"
        except Exception:  # another OpenCV distribution (opencv-python, a source build)
            package = "unknown distribution"
        features = getattr(cv2, "getCPUFeaturesLine", lambda: "")()
        return {"opencv": cv2.__version__, "package": package, "dnn_backend": "DNN_BACKEND_OPENCV",
                "dnn_target": "DNN_TARGET_CPU", "threads": cv2.getNumThreads(), "cpu_features": features,
                "output_view": "fusion on, Winograd on (OpenCV's defaults)",
                "trace_view": "fusion off, Winograd on", "bn_alias": self.bn_alias}


def patched() -> OpenCVBackend:
    """``opencv_backend:patched``: the backend that runs texture_nets v1 files through an adapter-rewritten copy
    (their batch norms' aliased parameters made explicit; listed in ``adapter_paths``)."""
    return OpenCVBackend(bn_alias="patch")


class OpenCVRunner:
    """Nets over one .t7 file, one per view, output list and input shape (OpenCV's Net is not re-set-up safely)."""

    def __init__(self, root: T7Module, model_file: Path, is_binary: bool, evaluate: bool,
                 adapter_paths: dict[str, str], overrides: dict[str, dict[str, Any]], scratch: ScratchFiles,
                 planes: int | None):
        self.root = root
        self.model_file = model_file
        self.is_binary = is_binary
        self.evaluate = evaluate
        self.adapter_paths = dict(adapter_paths)
        self.planes = planes
        self.plan: LayerPlan = plan_layers(root, evaluate)
        self.paths = trace_paths(root)
        self.views = {
            "output": f"cv2.dnn.readNetFromTorch({model_file.name}, isBinary={is_binary}, evaluate={evaluate}); "
                      "DNN_BACKEND_OPENCV, DNN_TARGET_CPU, fusion on, Winograd on (the defaults); net.forward()",
            "trace": "a second Net from the same file with enableFusion(False), Winograd on; every mapped layer in "
                     "one net.forward(names)",
            "isolated": "run_module: the module alone as a one-module .t7 read by readNetFromTorch with the defaults",
        }
        self._overrides = overrides
        self._scratch = scratch
        self._noise = {module.lua_path: module for module in noise_modules(root)}
        self._indices = _noise_indices(model_file, self._noise) if self._noise else {}
        self._nets: dict[tuple, Any] = {}
        self._module_files: dict[str, tuple[Path, dict[str, int]]] = {}
        self._names_checked: str | None = None

    # -- protocol ----------------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, trace: bool = False,
                noise: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x = _float32_nchw(x, self.planes)
        slots = self._slots(noise, self._noise, self._indices)
        output = self._run(("output", x.shape), self.model_file, x, slots, fusion=True)[0]
        if not trace:
            return output, {}
        self._check_names()
        wanted = {path: self.plan.outputs[path] for path in self.paths if path in self.plan.outputs}
        names = list(dict.fromkeys(wanted.values()))
        values = dict(zip(names, self._run(("trace", x.shape), self.model_file, x, slots, fusion=False, names=names),
                          strict=True))
        return output, {path: np.array(values[name]) for path, name in wanted.items()}

    def run_module(self, lua_path: str, x: np.ndarray, noise: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """OpenCV's own layer(s) for the module at ``lua_path`` alone (a container runs whole), on ``x``."""
        try:
            module = self.root.find(lua_path)
        except KeyError:
            raise BackendError(f"no module at Lua path {lua_path!r} in this model") from None
        if lua_path == "":
            return self.forward(x, noise=noise)[0]
        if module.torch_class in TABLE_CLASSES:
            raise BackendError(f"{module.torch_class} at Lua path {lua_path} takes or gives a table: it has no OpenCV "
                               "net of its own")
        if lua_path not in self._module_files:
            data_root = module_file(module, self._overrides)
            path = self._scratch.write(data_root, "module_" + lua_path.replace(".", "_"))
            self._module_files[lua_path] = (path, module_indices(path.read_bytes()))
        path, written = self._module_files[lua_path]
        inside = {p: m for p, m in self._noise.items() if p == lua_path or p.startswith(lua_path + ".")}
        indices = {p: written[_written_path(p, lua_path)] for p in inside}
        x = _float32_nchw(x, None)
        slots = self._slots({p: v for p, v in (noise or {}).items() if p in inside}, inside, indices)
        return self._run(("module", lua_path, x.shape), path, x, slots, fusion=True)[0]

    # -- helpers -----------------------------------------------------------------------------------------------
    def _slots(self, noise: Mapping[str, np.ndarray] | None, modules: dict, indices: dict[str, int]) -> dict:
        noise = dict(noise or {})
        unknown = sorted(set(noise) - set(modules))
        if unknown:
            raise BackendError(f"noise given for Lua path(s) {', '.join(unknown)}, which draw no noise here")
        missing = [path for path in modules if path not in noise]
        if missing:
            raise BackendError(f"this model draws noise: no noise given for Lua path(s) {', '.join(missing)}")
        return {indices[path]: layers.NoiseSlot(module.kind, module.first_channel, module.planes,
                                                np.ascontiguousarray(noise[path], dtype=np.float32))
                for path, module in modules.items()}

    def _net(self, key: tuple, path: Path, fusion: bool):
        if key not in self._nets:
            import cv2

            net = cv2.dnn.readNetFromTorch(str(path), self.is_binary if path == self.model_file else True,
                                           self.evaluate)
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
            if not fusion:
                net.enableFusion(False)
            self._nets[key] = net
        return self._nets[key]

    def _run(self, key: tuple, path: Path, x: np.ndarray, slots: dict, *, fusion: bool,
             names: list[str] | None = None) -> list[np.ndarray]:
        import cv2

        with layers.FORWARD_LOCK:
            layers.STATE.slots, layers.STATE.error = slots, None
            try:
                net = self._net(key, path, fusion)
                net.setInput(x)
                result = net.forward(names) if names else [net.forward()]
            except cv2.error as error:
                detail = layers.STATE.error or _cv_message(error)
                raise BackendError(f"OpenCV {cv2.__version__}: {detail}") from None
            finally:
                layers.STATE.slots = {}
        return [np.array(value, dtype=np.float32) for value in result]

    def _check_names(self) -> None:
        """The Lua-path mapping rests on the importer's naming rules: compare them with this Net's own names once."""
        if self._names_checked is None:
            names = tuple(self._net(("names",), self.model_file, True).getLayerNames())
            self._names_checked = "" if names == self.plan.names else (
                f"OpenCV named {len(names)} layers, the importer's rules predict {len(self.plan.names)} "
                f"(first difference: {_first_difference(names, self.plan.names)})")
        if self._names_checked:
            raise BackendError("cannot map OpenCV's layers to Lua paths for this model: " + self._names_checked)


def _check_classes(root: T7Module) -> None:
    for module in root.walk():
        if module.torch_class not in SUPPORTED_CLASSES:
            raise UnsupportedModuleError(module.torch_class, module.lua_path, sorted(SUPPORTED_CLASSES))
        if module.torch_class == "nn.NoiseFill" and module.integer("num_noise_channels", 0) != 0:
            raise UnsupportedModuleError("nn.NoiseFill (num_noise_channels > 0)", module.lua_path,
                                         sorted(SUPPORTED_CLASSES))


def _noise_indices(model_file: Path, modules: dict) -> dict[str, int]:
    indices = module_indices(model_file.read_bytes())
    missing = [path for path in modules if path not in indices]
    if missing:
        raise BackendError(f"cannot find the .t7 object index of the noise module(s) at {', '.join(missing)}")
    return {path: indices[path] for path in modules}


def _written_path(path: str, module_path: str) -> str:
    """A descendant's path in the one-module file, where the module sits at "1"."""
    return "1" + path[len(module_path):]


def _float32_nchw(x: np.ndarray, planes: int | None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or (planes is not None and x.shape[1] != planes):
        raise BackendError(f"expected an N x {planes or 'C'} x H x W input, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise BackendError("the input holds NaN or Inf values")
    return x


def _cv_message(error: Exception) -> str:
    """cv2.error's several lines ("OpenCV(4.14.0) file:line: error: (code) in function ... > detail") as one."""
    text = " ".join(str(error).split())
    return (text[:400] + " ...") if len(text) > 400 else (text or type(error).__name__)


def _first_difference(actual: tuple[str, ...], expected: tuple[str, ...]) -> str:
    for index, (a, b) in enumerate(zip(actual, expected, strict=False)):
        if a != b:
            return f"layer {index + 1}: {a} vs {b}"
    return f"after {min(len(actual), len(expected))} layers"


def dumps(root: T7Module) -> bytes:
    """The bytes of the file the adapter would hand OpenCV for an in-memory tree (for tests and reports)."""
    return dumps_t7(to_torch_object(root))



def forward_as_distributed(model_file: str | Path, x: np.ndarray, noise: Mapping[str, np.ndarray], *,
                           fusion: bool, evaluate: bool = False) -> np.ndarray:
    """OpenCV's importer and layers on the file exactly as distributed (no rewrite), the adapter's custom layers
    and noise only: the evidence behind refusing the v1 files (docs/ports/opencv.md, D5). Raises cv2.error."""
    import cv2

    root = load_module_tree(model_file)
    indices = module_indices(Path(model_file).read_bytes())
    slots = {indices[m.lua_path]: layers.NoiseSlot(m.kind, m.first_channel, m.planes,
                                                   np.asarray(noise[m.lua_path], dtype=np.float32))
             for m in noise_modules(root)}
    layers.register()
    with layers.FORWARD_LOCK:
        layers.STATE.slots = slots
        try:
            net = cv2.dnn.readNetFromTorch(str(model_file), True, evaluate)
            net.enableFusion(fusion)
            net.setInput(np.ascontiguousarray(x, dtype=np.float32))
            return net.forward()
        finally:
            layers.STATE.slots = {}
