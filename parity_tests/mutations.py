"""A catalogue of known porting bugs, each injectable into the reference backend's own code path.

A parity suite is only worth what it catches. Each :class:`Mutation` names one bug that real ports
of texture_nets make (FACTS §2-3: the seed's three deviations, the torch/nn 919eeca running-stats
drift, layout and padding confusions) and patches the NumPy reference where that bug would live:
the module-level ops ``reference.network`` calls (``conv2d``, ``full_conv2d``, ``instance_norm``,
``replication_pad``), its ``CAddTable``, its loader, or ``fileio.images.deprocess``. A
:class:`MutantBackend` is then an ordinary backend (protocol of harness/core/registry.py) whose runs
happen with the patch active, so the suite judges it exactly as it judges a real port.

The reference is reached by module name at patch time (importlib), never imported at the top of
this module: harness/ stays free of implementation imports, and the patches only exist inside
``Mutation.active()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_NETWORK = "reference.network"
IMAGES = "fileio.images"

# ("module:attribute[.attribute]", factory(original) -> replacement)
Patch = tuple[str, Callable[[Any], Any]]


@dataclass(frozen=True)
class Mutation:
    """One porting bug: ``patches`` replace attributes (given the original) while ``active()``."""

    name: str
    bug: str  # what a port gets wrong, and where it was seen
    patches: tuple[Patch, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(target for target, _ in self.patches)

    @contextmanager
    def active(self) -> Iterator[None]:
        saved = []
        try:
            for target, factory in self.patches:
                owner, attribute = _resolve(target)
                original = getattr(owner, attribute)
                saved.append((owner, attribute, original))
                setattr(owner, attribute, factory(original))
            yield
        finally:
            for owner, attribute, original in reversed(saved):
                setattr(owner, attribute, original)


def _resolve(target: str) -> tuple[Any, str]:
    """'pkg.module:Class.method' -> (pkg.module.Class, 'method')."""
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, attribute = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, attribute


class MutantRunner:
    """A reference runner whose every call runs with the mutation active; outputs in the requested dtype."""

    def __init__(self, runner: Any, mutation: Mutation, dtype: str):
        self.runner, self.mutation, self.dtype = runner, mutation, np.dtype(dtype)

    def forward(self, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with self.mutation.active():
            output, recorded = self.runner.forward(x, trace=trace)
        return output.astype(self.dtype), {path: value.astype(self.dtype) for path, value in recorded.items()}

    def run_module(self, lua_path: str, x: np.ndarray) -> np.ndarray:
        with self.mutation.active():
            return self.runner.run_module(lua_path, x).astype(self.dtype)


class MutantBackend:
    """Backend protocol object: the reference with one mutation applied."""

    dtypes = ("float32", "float64")

    def __init__(self, mutation: Mutation):
        self.mutation = mutation
        self.name = f"mutant:{mutation.name}"

    def context(self):
        """The mutation's patches, for checks outside load/forward (deprocess of this port's images)."""
        return self.mutation.active()

    def load(self, model: str | Path | Any, dtype: str) -> MutantRunner:
        from harness.core.registry import get_backend

        reference = get_backend("reference")
        with self.mutation.active():
            runner = reference.load(model, dtype)
        return MutantRunner(runner, self.mutation, dtype)


# -- the mutated ops ------------------------------------------------------------------------------------------------


def _conv_without_padding_when_strided(conv2d):
    """The seed: stride-2 convolutions run VALID, dropping nn.SpatialConvolution's zero padding 1."""
    def mutated(x, weight, bias, stride=(1, 1), padding=(0, 0)):
        return conv2d(x, weight, bias, stride, (0, 0) if tuple(stride) != (1, 1) else padding)
    return mutated


def _drop_bias(op):
    """The seed: every bias dropped (harmless before an IN, wrong at the last convolution)."""
    def mutated(x, weight, bias, *args):
        return op(x, weight, None, *args)
    return mutated


def _transposed_conv_keeps_top_rows(full_conv2d):
    """The seed: conv2d_transpose 'VALID' with output_shape = 2H keeps full[0:2H], Torch keeps full[p:p+out]."""
    def mutated(x, weight, bias, stride=(1, 1), padding=(0, 0), adjustment=(0, 0)):
        reference = full_conv2d(x, weight, bias, stride, padding, adjustment)
        full = full_conv2d(x, weight, bias, stride, (0, 0), (0, 0))
        out_h, out_w = reference.shape[-2:]
        return _crop_or_extend(full, 0, 0, out_h, out_w, bias)
    return mutated


def _adjustment_on_top_left(full_conv2d):
    """adj's extra row/column put at the top/left instead of Torch's bottom/right."""
    def mutated(x, weight, bias, stride=(1, 1), padding=(0, 0), adjustment=(0, 0)):
        reference = full_conv2d(x, weight, bias, stride, padding, adjustment)
        full = full_conv2d(x, weight, bias, stride, (0, 0), (0, 0))
        out_h, out_w = reference.shape[-2:]
        return _crop_or_extend(full, padding[0] - adjustment[0], padding[1] - adjustment[1], out_h, out_w, bias)
    return mutated


def _crop_or_extend(full: np.ndarray, top: int, left: int, out_h: int, out_w: int, bias) -> np.ndarray:
    """full[top:top+out_h, left:left+out_w], with rows/columns outside ``full`` holding just the bias."""
    height, width = full.shape[-2:]
    fill = np.zeros((*full.shape[:-3], full.shape[-3], 1, 1), dtype=full.dtype)
    if bias is not None:
        fill += bias.reshape(-1, 1, 1).astype(full.dtype)
    pad_top, pad_left = max(0, -top), max(0, -left)
    pad_bottom, pad_right = max(0, top + out_h - height), max(0, left + out_w - width)
    canvas = np.broadcast_to(fill, (*full.shape[:-2], height + pad_top + pad_bottom, width + pad_left + pad_right))
    canvas = canvas.copy()
    canvas[..., pad_top:pad_top + height, pad_left:pad_left + width] = full
    top, left = top + pad_top, left + pad_left
    return np.ascontiguousarray(canvas[..., top:top + out_h, left:left + out_w])


def _kernel_transposed(op):
    """A bare np.transpose of the weight (FACTS §3): kH and kW swapped, i.e. the kernel mirrored about its diagonal."""
    def mutated(x, weight, bias, *args):
        return op(x, np.ascontiguousarray(np.swapaxes(weight, -1, -2)), bias, *args)
    return mutated


def _kernel_flipped(op):
    """True convolution instead of Torch's cross-correlation (or a transposed conv built with a flipped kernel)."""
    def mutated(x, weight, bias, *args):
        return op(x, np.ascontiguousarray(weight[..., ::-1, ::-1]), bias, *args)
    return mutated


def _running_statistics(instance_norm):
    """torch/nn 919eeca: batch size 1 BatchNorm uses running stats, IN becomes x / sqrt(1 + eps) * w + b."""
    def mutated(x, weight, bias, eps, **kwargs):
        y = x / np.sqrt(x.dtype.type(1.0 + eps))
        if weight is not None:
            y = y * weight[None, :, None, None]
        if bias is not None:
            y = y + bias[None, :, None, None]
        return y.astype(x.dtype)
    return mutated


def _unbiased_variance(instance_norm):
    """Unbiased (n-1) variance, as torch.var's default: (x-m)/sqrt(v*n/(n-1)+eps)*w+b.

    Run through the real instance_norm: with r = (n-1)/n that is IN(x; w*sqrt(r), b, eps*r).
    """
    def mutated(x, weight, bias, eps, **kwargs):
        n = x.shape[-1] * x.shape[-2]
        r = (n - 1) / n
        channels = x.shape[1]
        scale = np.full(channels, np.sqrt(r)) if weight is None else weight * np.sqrt(r)
        shift = np.zeros(channels) if bias is None else bias
        return instance_norm(x, scale.astype(x.dtype), shift.astype(x.dtype), eps * r, **kwargs)
    return mutated


def _eps_outside_sqrt(instance_norm):
    """(x - mean) / (sqrt(var) + eps) instead of / sqrt(var + eps)."""
    def mutated(x, weight, bias, eps, **kwargs):
        mean = x.mean(axis=(2, 3), keepdims=True, dtype=np.float64)
        std = np.sqrt(((x - mean) ** 2).mean(axis=(2, 3), keepdims=True))
        y = ((x - mean) / (std + eps)).astype(x.dtype)
        if weight is not None:
            y = y * weight[None, :, None, None]
        if bias is not None:
            y = y + bias[None, :, None, None]
        return y.astype(x.dtype)
    return mutated


def _one_wide_pad(mode: str):
    """Replication padding replaced by one np.pad/tf.pad of the full width in ``mode`` (FACTS §3)."""
    def factory(replication_pad):
        def mutated(x, left, right, top, bottom):
            if min(left, right, top, bottom) < 0:
                return replication_pad(x, left, right, top, bottom)
            widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
            return np.pad(x, widths, mode=mode)
        return mutated
    return factory


def _pad_order_confused(replication_pad):
    """(l, r, t, b) read as (t, b, l, r): TF's [[t, b], [l, r]] paddings filled from Torch's argument order."""
    def mutated(x, left, right, top, bottom):
        return replication_pad(x, top, bottom, left, right)
    return mutated


def _residual_add(kind: str):
    """Patches ``CAddTable.apply`` (the reference's residual sum)."""
    def factory(original_apply):
        def apply(self, x, run, owned):
            if kind == "dropped":  # the skip connection lost: the block outputs its branch only
                return x[-1].copy(), True
            total, _ = original_apply(self, x, run, owned)
            return np.maximum(total, 0).astype(total.dtype), True  # a ReLU after the add
        return apply
    return factory


def _deprocess_bgr_rgb_swapped(deprocess):
    """The channel flip forgotten (or done twice): BGR data shown as RGB."""
    def mutated(output, *args, **kwargs):
        return deprocess(np.asarray(output)[..., ::-1, :, :], *args, **kwargs)
    return mutated


# texture_nets' VGG means in B, G, R order (FACTS §2 I/O contract).
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def _deprocess_mean_not_added(deprocess):
    """The VGG mean not added back before /255."""
    def mutated(output, *args, **kwargs):
        output = np.asarray(output, dtype=np.float64)
        return deprocess(output - VGG_MEAN_BGR.reshape(-1, 1, 1), *args, **kwargs)
    return mutated


def _float32_network_factory(network_class):
    """The reference Network, always built in float32 whatever dtype it is asked for."""
    class Float32Network(network_class):
        def __init__(self, root, dtype):
            super().__init__(root, "float32")
    return Float32Network


# -- the catalogue -----------------------------------------------------------------------------------------------

_NET = REFERENCE_NETWORK
CATALOGUE: tuple[Mutation, ...] = (
    Mutation("seed: stride-2 conv without zero padding",
             "tf_texture_net runs the stride-2 convolutions VALID, dropping padding 1 (FACTS §3 (1))",
             ((f"{_NET}:conv2d", _conv_without_padding_when_strided),)),
    Mutation("seed: transposed conv one-pixel shift",
             "conv2d_transpose('VALID', output_shape=2H) keeps full[0:2H], Torch full[1:2H+1] (FACTS §3 (2))",
             ((f"{_NET}:full_conv2d", _transposed_conv_keeps_top_rows),)),
    Mutation("seed: biases dropped",
             "every bias dropped: absorbed by the INs, wrong at the last convolution (FACTS §3 (3))",
             ((f"{_NET}:conv2d", _drop_bias), (f"{_NET}:full_conv2d", _drop_bias))),
    Mutation("conv kernel kH/kW swapped",
             "a bare np.transpose(w) mirrors each kernel about its diagonal (the seed's earlier version)",
             ((f"{_NET}:conv2d", _kernel_transposed),)),
    Mutation("full conv kernel kH/kW swapped", "the same for the transposed convolutions' weights",
             ((f"{_NET}:full_conv2d", _kernel_transposed),)),
    Mutation("conv kernel flipped", "true convolution instead of cross-correlation (a kernel flip too many)",
             ((f"{_NET}:conv2d", _kernel_flipped),)),
    Mutation("full conv kernel flipped", "transposed conv with a flipped kernel (Torch's full conv does not flip)",
             ((f"{_NET}:full_conv2d", _kernel_flipped),)),
    Mutation("IN running statistics (torch/nn 919eeca)",
             "batch-size-1 BatchNorm uses running stats: y = x/sqrt(1+eps)*w+b (FACTS §2)",
             ((f"{_NET}:instance_norm", _running_statistics),)),
    Mutation("IN unbiased variance", "variance divided by n-1 instead of n",
             ((f"{_NET}:instance_norm", _unbiased_variance),)),
    Mutation("IN eps outside the sqrt", "(x-mean)/(sqrt(var)+eps) instead of (x-mean)/sqrt(var+eps)",
             ((f"{_NET}:instance_norm", _eps_outside_sqrt),)),
    Mutation("replication pad as one wide SYMMETRIC pad",
             "tf.pad(x, k, 'SYMMETRIC') once instead of k stacked 1-pixel pads (FACTS §3)",
             ((f"{_NET}:replication_pad", _one_wide_pad("symmetric")),)),
    Mutation("replication pad as REFLECT", "tf.pad(..., 'REFLECT') / ReflectionPad2d: never replication",
             ((f"{_NET}:replication_pad", _one_wide_pad("reflect")),)),
    Mutation("replication pad order (l,r,t,b) confused", "Torch's (l, r, t, b) read as (t, b, l, r)",
             ((f"{_NET}:replication_pad", _pad_order_confused),)),
    Mutation("full conv adj on top/left", "the adj row/column added at the top/left instead of bottom/right",
             ((f"{_NET}:full_conv2d", _adjustment_on_top_left),)),
    Mutation("residual add dropped", "the block returns its branch only (skip connection lost)",
             ((f"{_NET}:CAddTable.apply", _residual_add("dropped")),)),
    Mutation("ReLU after the residual add", "a ReLU after the CAddTable (texture_nets has none; FACTS §1)",
             ((f"{_NET}:CAddTable.apply", _residual_add("relu")),)),
    Mutation("deprocess BGR/RGB swapped", "VGG-space output shown without the BGR->RGB flip",
             ((f"{IMAGES}:deprocess", _deprocess_bgr_rgb_swapped),)),
    Mutation("deprocess mean not added", "the BGR means not added back before /255 (FACTS §2 I/O contract)",
             ((f"{IMAGES}:deprocess", _deprocess_mean_not_added),)),
    Mutation("float64 silently computed in float32", "a float64 run whose weights and arithmetic are float32",
             ((f"{_NET}:Network", _float32_network_factory),)),
)


def mutation(name: str) -> Mutation:
    for candidate in CATALOGUE:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no mutation named {name!r}; known: {', '.join(m.name for m in CATALOGUE)}")
