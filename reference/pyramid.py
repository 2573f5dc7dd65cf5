"""The ops of the texture_nets v1-era generators: pyramid nets, their derivatives, the doodle net.

One small op per Torch7 module class, each following docs/real-models.md (established by running
the original Lua Torch7 on the eleven public files): nn.Concat, nn.SpatialAveragePooling,
nn.SpatialUpSamplingNearest, nn.LeakyReLU, nn.SpatialBatchNormalization (both modes, and the
v1 nets' aliased reads past 8 features), nn.SpatialCircularPadding, both nn.GenNoise classes and
nn.NoiseFill. The numerics live in the primitive modules (pooling, padding, normalization,
activation); here each op reads its module's fields and checks what it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contract.families import NoiseModule
from reference.activation import leaky_relu
from reference.normalization import batch_norm
from reference.ops import InputError, Op, Run, Value, dims
from reference.padding import circular_pad
from reference.pooling import average_pool, upsample_nearest
from t7file import T7ModelError, T7Module, describe_path


@dataclass
class Concat(Op):
    """nn.Concat(2): every branch on the same input; the output has the first branch's shape with the
    channel counts summed, each branch copied into its channel slice by ``copy``, which checks the
    element count only (so 2x4 against 4x2 is copied in row-major order; no cropping, no centring)."""

    children: tuple[Op, ...] = ()

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:
        outputs = []
        for child in self.children:
            value, _ = child.apply(x, run, False)  # branches share the input: none may write into it
            run.record(child, value)
            outputs.append(child.batch(value))
        batch, _, height, width = outputs[0].shape
        out = np.empty((batch, sum(o.shape[1] for o in outputs), height, width), dtype=outputs[0].dtype)
        offset = 0
        for index, branch in enumerate(outputs, start=1):
            planes = branch.shape[1]
            if branch.size != batch * planes * height * width:
                # An input size the pyramid cannot take: a request this runner cannot serve (BackendError), as
                # the other implementations say it, not a broken file.
                raise InputError(f"{self.torch_class} at {describe_path(self.lua_path)}: sizes do not match: branch "
                                 f"{index} outputs {dims(branch.shape)}, but its slice of the output is "
                                 f"{dims((batch, planes, height, width))} (the first branch's size, "
                                 f"{dims(outputs[0].shape)})")
            out[:, offset:offset + planes] = branch.reshape(batch, planes, height, width)
            offset += planes
        return out, True

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class AveragePooling(Op):
    kernel: tuple[int, int] = (1, 1)  # (H, W)
    stride: tuple[int, int] = (1, 1)

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:
        return average_pool(self.batch(x), *self.kernel, *self.stride), True


@dataclass
class UpSamplingNearest(Op):
    scale: int = 1

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:
        return upsample_nearest(self.batch(x), self.scale), True


@dataclass
class LeakyReLU(Op):
    negval: float = 0.01

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:
        return leaky_relu(self.tensor(x), self.negval, in_place=owned), True


@dataclass
class CircularPad(Op):
    left: int = 0
    right: int = 0
    top: int = 0
    bottom: int = 0

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:
        return circular_pad(self.batch(x), self.left, self.right, self.top, self.bottom), True


@dataclass
class BatchNormalization(Op):
    """nn.SpatialBatchNormalization in ``mode`` "train" (batch statistics) or "evaluate" (running ones).

    In train mode an input with more channels than the module's features reads gamma[c] and beta[c]
    on past its own parameters, in the file's one flat storage (cunn's unchecked read, what the v1
    nets were trained with; docs/real-models.md, "The aliasing trap"): ``flat[offset + c]``.
    """

    mode: str = "train"
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    eps: float = 1e-5
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    module: T7Module | None = field(default=None, repr=False)
    dtype: np.dtype = field(default=np.dtype("float64"), repr=False)
    _aliased: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:
        x = self.batch(x)
        channels = x.shape[1]
        if self.mode == "evaluate":
            if channels != self.running_mean.size:
                raise T7ModelError(f"evaluate mode normalises with running statistics for {self.running_mean.size} "
                                   f"channels, but the input has {channels}", torch_class=self.torch_class,
                                   lua_path=self.lua_path)
            return batch_norm(x, self.weight, self.bias, self.eps, running_mean=self.running_mean,
                              running_var=self.running_var, in_place=owned), True
        weight, bias = self._affine(channels)
        return batch_norm(x, weight, bias, self.eps, in_place=owned), True

    def _affine(self, channels: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.weight is None or channels <= self.weight.size:
            # No affine part, or cunn's reads of weight[c], bias[c] for c < C stay inside the tensors.
            return (None if self.weight is None else self.weight[:channels],
                    None if self.bias is None else self.bias[:channels])
        if channels not in self._aliased:
            self._aliased[channels] = (self._storage_read("weight", channels), self._storage_read("bias", channels))
        return self._aliased[channels]

    def _storage_read(self, name: str, channels: int) -> np.ndarray | None:
        if name == "bias" and self.bias is None:
            return None
        storage = self.module.storage(name)
        if storage.offset + channels > storage.flat.size:
            raise T7ModelError(f"the input has {channels} channels, {self.weight.size} features: train mode reads "
                               f"{name}[c] for c < {channels} from the flat parameter storage (docs/real-models.md), "
                               f"which holds only {storage.flat.size - storage.offset} values from the {name}'s "
                               f"offset {storage.offset}", torch_class=self.torch_class, lua_path=self.lua_path)
        return np.ascontiguousarray(storage.flat[storage.offset:storage.offset + channels], dtype=self.dtype)


@dataclass
class NoiseFill(Op):
    """nn.NoiseFill with num_noise_channels = 0 (every public file): Torch7 copies its input. The values are
    passed on unchanged (the ownership flag keeps in-place successors off the caller's array)."""

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:
        return self.tensor(x), owned


@dataclass
class GenNoise(Op):
    """Both nn.GenNoise classes, fed the injected array of this Lua path (``run.noise``).

    kind "fill" (texture_nets): in place on its input, channels [first_channel, first_channel + planes)
    := the array (N x planes x h x w); kind "planes" (online-neural-doodle): a new N x planes x H x W
    tensor = the array, its input's values ignored (contract.families.NoiseModule).
    """

    spec: NoiseModule | None = None

    def apply(self, x: Value, run: Run, owned: bool) -> tuple[Value, bool]:
        x = self.batch(x)
        batch, channels, height, width = x.shape
        spec = self.spec
        noise = run.noise.get(self.lua_path)
        if noise is None:  # Network checks every noise module up front; this guards a direct call
            raise InputError(f"no noise given for the noise module at Lua path {self.lua_path}")
        expected = (batch, spec.planes, height, width)
        if noise.shape != expected:
            raise InputError(f"noise for Lua path {self.lua_path} has shape {dims(noise.shape)}; this input needs "
                             f"{dims(expected)}")
        if spec.kind == "planes":
            return noise, False  # the caller's array: never written into
        stop = spec.first_channel + spec.planes
        if channels < stop:
            raise InputError(f"nn.GenNoise at Lua path {self.lua_path} fills channels {spec.first_channel + 1}-{stop} "
                             f"(1-based) of its input, which has {channels}")
        out = x if owned else x.copy()
        out[:, spec.first_channel:stop] = noise
        return out, True


# -- building from the module tree -------------------------------------------------------------------------------


def build_concat(module: T7Module, children: tuple[Op, ...]) -> Op:
    if module.integer("dimension", 2) != 2:
        raise T7ModelError(f"concatenates along dimension {module.integer('dimension')}; only 2 (channels of N x C x "
                           "H x W) is supported", torch_class=module.torch_class, lua_path=module.lua_path)
    if not children:
        raise T7ModelError("has no branches", torch_class=module.torch_class, lua_path=module.lua_path)
    return Concat(module.lua_path, module.torch_class, children=children)


def build_average_pooling(module: T7Module) -> Op:
    if (module.integer("padW", 0), module.integer("padH", 0)) != (0, 0) or module.flag("ceil_mode", False) \
            or not module.flag("divide", True):
        raise T7ModelError("only unpadded, floor-mode, dividing average pooling is supported (as in every public "
                           "texture_nets file)", torch_class=module.torch_class, lua_path=module.lua_path)
    k_w, k_h = module.integer("kW"), module.integer("kH")
    return AveragePooling(module.lua_path, module.torch_class, kernel=(k_h, k_w),
                          stride=(module.integer("dH", k_h), module.integer("dW", k_w)))


def build_upsampling(module: T7Module) -> Op:
    return UpSamplingNearest(module.lua_path, module.torch_class, scale=module.integer("scale_factor"))


def build_leaky_relu(module: T7Module) -> Op:
    return LeakyReLU(module.lua_path, module.torch_class, negval=float(module.number("negval", 0.01)))


def build_circular_pad(module: T7Module) -> Op:
    return CircularPad(module.lua_path, module.torch_class, left=module.integer("pad_l", 0),
                       right=module.integer("pad_r", 0), top=module.integer("pad_t", 0),
                       bottom=module.integer("pad_b", 0))


def build_batch_norm(module: T7Module, dtype: np.dtype, mode: str) -> Op:
    weight = bias = None
    if module.flag("affine", True) and module.optional_array("weight") is not None:
        weight = np.ascontiguousarray(module.array("weight").reshape(-1), dtype=dtype)
        if module.optional_array("bias") is not None:
            bias = np.ascontiguousarray(module.array("bias").reshape(-1), dtype=dtype)
            if bias.size != weight.size:
                raise T7ModelError(f"'bias' has {bias.size} values, 'weight' {weight.size}",
                                   torch_class=module.torch_class, lua_path=module.lua_path)
    running_mean = running_var = None
    if mode == "evaluate":
        running_mean = np.ascontiguousarray(module.array("running_mean").reshape(-1), dtype=dtype)
        running_var = np.ascontiguousarray(module.array("running_var").reshape(-1), dtype=dtype)
        for name, array in (("running_var", running_var), ("weight", weight), ("bias", bias)):
            if array is not None and array.size != running_mean.size:
                raise T7ModelError(f"'{name}' has {array.size} values, 'running_mean' {running_mean.size}",
                                   torch_class=module.torch_class, lua_path=module.lua_path)
    return BatchNormalization(module.lua_path, module.torch_class, mode=mode, weight=weight, bias=bias,
                              eps=float(module.number("eps", 1e-5)), running_mean=running_mean,
                              running_var=running_var, module=module, dtype=dtype)


def build_noise_fill(module: T7Module) -> Op:
    if module.integer("num_noise_channels", 0) != 0:
        raise T7ModelError(f"num_noise_channels = {module.integer('num_noise_channels')}: this NoiseFill draws noise "
                           "channels, which the reference does not run (every public file has 0)",
                           torch_class=module.torch_class, lua_path=module.lua_path)
    return NoiseFill(module.lua_path, module.torch_class)


def build_gen_noise(module: T7Module, spec: NoiseModule) -> Op:
    return GenNoise(module.lua_path, module.torch_class, spec=spec)
