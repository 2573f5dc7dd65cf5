"""A catalogue of known porting bugs, each injectable into the reference backend's own code path.

A parity suite is only worth what it catches. Each :class:`Mutation` names one bug that real ports
of texture_nets make (the seed's three deviations, the torch/nn 919eeca running-stats drift, layout
and padding confusions, a framework default in place of the file's value, a precision shortcut in a
statistic, the v1-era models' traps of docs/real-models.md) and patches the NumPy reference where that
bug would live: the module-level ops ``reference.network`` and ``reference.pyramid`` call, their
containers, their builders, or ``fileio.images``. Two scopes:

* ``port``: a :class:`MutantBackend` is an ordinary backend (contract/protocol.py) whose runs happen with
  the patch active, so the suite judges it exactly as it judges a real port, against a clean judge;
* ``shared``: the bug is in code every backend relies on (the judge's own fast paths, the deprocess of
  fileio.images), so the patch is active for the whole run, judge included; only the checks of the
  judge against its definitions and of deprocess against known answers can see it.

The reference is reached by module name at patch time (importlib), never imported at the top of
this module: harness/ stays free of implementation imports, and the patches only exist inside
``Mutation.active()``.

Also a pytest plugin, to watch the real suite catch a mutant (the measurement behind test_mutations.py's
timings)::

    PARITY_MUTANT="BN aliasing dropped (extra channels 1/0)" pytest parity_tests -x -p parity_tests.mutations

A port mutant becomes the only backend under test (``--backend`` is replaced by it); a shared one is
applied to the whole session. ``PARITY_MUTANT_REPORT=FILE`` appends one JSON line per failing test: the
seconds since the session started and the test's node id.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_NETWORK = "reference.network"
PYRAMID = "reference.pyramid"
CONVOLUTION = "reference.convolution"
NORMALIZATION = "reference.normalization"
IMAGES = "fileio.images"
SCOPES = ("port", "shared")

# ("module:attribute[.attribute]", factory(original) -> replacement)
Patch = tuple[str, Callable[[Any], Any]]


@dataclass(frozen=True)
class Mutation:
    """One porting bug: ``patches`` replace attributes (given the original) while ``active()``."""

    name: str
    bug: str  # what a port gets wrong, and where it was seen
    patches: tuple[Patch, ...]
    scope: str = "port"  # "port": judged as a backend; "shared": active for the whole run (SCOPES)

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

    def forward(self, x: np.ndarray, trace: bool = False, noise: Mapping[str, np.ndarray] | None = None
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        with self.mutation.active():
            output, recorded = self.runner.forward(x, trace=trace, noise=noise)
        return output.astype(self.dtype), {path: value.astype(self.dtype) for path, value in recorded.items()}

    def run_module(self, lua_path: str, x: np.ndarray, noise: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        with self.mutation.active():
            return self.runner.run_module(lua_path, x, noise=noise).astype(self.dtype)


class MutantBackend:
    """Backend protocol object: the reference with one mutation applied."""

    dtypes = ("float32", "float64")

    def __init__(self, mutation: Mutation):
        self.mutation = mutation
        self.name = f"mutant:{mutation.name}"

    def context(self):
        """The mutation's patches, for checks outside load/forward."""
        return self.mutation.active()

    def load(self, model: str | Path | Any, dtype: str, *, batchnorm: str | None = None) -> MutantRunner:
        from harness.core.registry import get_backend

        reference = get_backend("reference")
        with self.mutation.active():
            runner = reference.load(model, dtype) if batchnorm is None else reference.load(model, dtype,
                                                                                            batchnorm=batchnorm)
        return MutantRunner(runner, self.mutation, dtype)


# -- the mutated ops ------------------------------------------------------------------------------------------------


def _conv_without_padding_when_strided(conv2d):
    """The seed: stride-2 convolutions run VALID, dropping nn.SpatialConvolution's zero padding 1."""
    def mutated(x, weight, bias, stride=(1, 1), padding=(0, 0), **kwargs):
        return conv2d(x, weight, bias, stride, (0, 0) if tuple(stride) != (1, 1) else padding, **kwargs)
    return mutated


def _drop_bias(op):
    """The seed: every bias dropped (harmless before an IN, wrong at the last convolution)."""
    def mutated(x, weight, bias, *args, **kwargs):
        return op(x, weight, None, *args, **kwargs)
    return mutated


def _transposed_conv_keeps_top_rows(full_conv2d):
    """The seed: conv2d_transpose 'VALID' with output_shape = 2H keeps full[0:2H], Torch keeps full[p:p+out]."""
    return _cropped_elsewhere(full_conv2d, lambda padding, adjustment: (0, 0))


def _adjustment_on_top_left(full_conv2d):
    """adj's extra row/column put at the top/left instead of Torch's bottom/right."""
    return _cropped_elsewhere(full_conv2d, lambda padding, adjustment: (padding[0] - adjustment[0],
                                                                        padding[1] - adjustment[1]))


def _cropped_elsewhere(full_conv2d, corner: Callable[[tuple[int, int], tuple[int, int]], tuple[int, int]]):
    """The transposed convolution's output (its right size) cropped out of the uncropped result at
    ``corner(padding, adjustment)`` (top, left) instead of Torch's (padding, padding)."""
    def mutated(x, weight, bias, stride=(1, 1), padding=(0, 0), adjustment=(0, 0)):
        reference = full_conv2d(x, weight, bias, stride, padding, adjustment)
        full = full_conv2d(x, weight, bias, stride, (0, 0), (0, 0))
        out_h, out_w = reference.shape[-2:]
        return _crop_or_extend(full, *corner(padding, adjustment), out_h, out_w, bias)
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
    """A bare np.transpose of the weight (docs/torch7-semantics.md, the seed's port): kH and kW swapped, i.e. the
    kernel mirrored about its diagonal."""
    def mutated(x, weight, bias, *args, **kwargs):
        return op(x, np.ascontiguousarray(np.swapaxes(weight, -1, -2)), bias, *args, **kwargs)
    return mutated


def _kernel_flipped(op):
    """True convolution instead of Torch's cross-correlation (or a transposed conv built with a flipped kernel)."""
    def mutated(x, weight, bias, *args, **kwargs):
        return op(x, np.ascontiguousarray(weight[..., ::-1, ::-1]), bias, *args, **kwargs)
    return mutated


def _affine(y: np.ndarray, weight, bias, dtype) -> np.ndarray:
    """An instance norm's per-channel ``y * weight + bias`` (either absent with affine=false), in ``dtype``."""
    if weight is not None:
        y = y * weight[None, :, None, None]
    if bias is not None:
        y = y + bias[None, :, None, None]
    return y.astype(dtype)


def _running_statistics(instance_norm):
    """torch/nn 919eeca: batch size 1 BatchNorm uses running stats, IN becomes x / sqrt(1 + eps) * w + b."""
    def mutated(x, weight, bias, eps, **kwargs):
        y = x / np.sqrt(x.dtype.type(1.0 + eps))
        return _affine(y, weight, bias, x.dtype)
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
        return _affine(y, weight, bias, x.dtype)
    return mutated


def _one_wide_pad(mode: str):
    """Replication padding replaced by one np.pad/tf.pad of the full width in ``mode`` (docs/torch7-semantics.md)."""
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


# texture_nets' VGG means in B, G, R order (docs/torch7-semantics.md, "The I/O contract").
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
        def __init__(self, root, dtype, *args, **kwargs):
            super().__init__(root, "float32", *args, **kwargs)
    return Float32Network


# -- the judge's fast paths (shared scope: only visible with the fast paths forced on small inputs) ------------------


def _unfold_blocks_one_row_early(conv_by_unfold):
    """Blocked im2col off by one: every row block after the first unfolds the windows of the rows one above it.

    Invisible until a convolution needs more than one block (UNFOLD_BLOCK_BYTES, 16 MB: images of several
    hundred pixels), i.e. on every small input the parity checks use."""
    def mutated(x, weight, stride, out_h, out_w):
        from reference import convolution

        correct = conv_by_unfold(x, weight, stride, out_h, out_w)
        _, n_in, k_h, k_w = weight.shape
        rows = min(out_h, max(1, convolution.UNFOLD_BLOCK_BYTES // (n_in * k_h * k_w * out_w * x.itemsize)))
        out = correct.copy()
        for row in range(rows, out_h, rows):
            stop = min(out_h, row + rows)
            out[:, :, row:stop] = correct[:, :, row - 1:stop - 1]
        return out
    return mutated


def _col2im_drops_last_tap_row(col2im):
    """Blocked col2im off by one: every block but the first adds the taps of kernel rows 0..kH-2 only."""
    def mutated(canvas, columns, top, span_h, span_w, stride):
        if top > 0 and columns.shape[1] > 1:
            columns = columns[:, :-1]
        return col2im(canvas, columns, top, span_h, span_w, stride)
    return mutated


def _thread_split_drops_chunk_ends(parallel_ranges):
    """A wrong thread split: every chunk but the last stops one item early (the last channel of each chunk is never
    normalised). Invisible while a job is too small to be split (MIN_ELEMENTS_PER_THREAD)."""
    def mutated(count, elements_per_item, work):
        from reference.parallel import split_ranges

        ranges = split_ranges(count, elements_per_item)
        if len(ranges) <= 1:
            return parallel_ranges(count, elements_per_item, work)
        for start, stop in ranges[:-1]:
            work(start, stop - 1)
        work(*ranges[-1])
        return None
    return mutated


# -- precision shortcuts ---------------------------------------------------------------------------------------


def _one_pass_float32(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: mean and variance from float32 running sums of x and x^2, var = E[x^2] - E[x]^2."""
    rows = values.astype(np.float32)
    count = np.float32(rows.shape[1])
    mean = np.cumsum(rows, axis=1, dtype=np.float32)[:, -1] / count
    square = np.cumsum(rows * rows, axis=1, dtype=np.float32)[:, -1] / count
    return mean, np.maximum(square - mean * mean, np.float32(0))


def _in_float32_statistics(instance_norm):
    """Instance-norm statistics in float32, one pass (sum x, sum x^2): Torch7 sums in double and centres first."""
    def mutated(x, weight, bias, eps, **kwargs):
        batch, channels = x.shape[:2]
        mean, var = _one_pass_float32(x.reshape(batch * channels, -1))
        shape = (batch, channels, 1, 1)
        y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape).astype(np.float64) + eps)
        return _affine(y, weight, bias, x.dtype)
    return mutated


def _bn_float32_statistics(batch_norm):
    """Train-mode batch-norm statistics in float32, one pass (sum x, sum x^2) over N x H x W."""
    def mutated(x, weight, bias, eps, *, running_mean=None, running_var=None, **kwargs):
        if running_mean is not None:
            return batch_norm(x, weight, bias, eps, running_mean=running_mean, running_var=running_var, **kwargs)
        mean, var = _one_pass_float32(np.moveaxis(x, 1, 0).reshape(x.shape[1], -1))
        return batch_norm(x, weight, bias, eps, running_mean=mean, running_var=var, **kwargs)
    return mutated


# -- a parameter of the file ignored in favour of a framework's default -----------------------------------------


def _bn_eps(eps_used: float):
    """Batch norms with ``eps_used`` whatever the file says (Keras' BatchNormalization defaults to 1e-3)."""
    def factory(batch_norm):
        def mutated(x, weight, bias, eps, **kwargs):
            return batch_norm(x, weight, bias, eps_used, **kwargs)
        return mutated
    return factory


def _in_eps_ignored(instance_norm):
    """The instance norm's own eps ignored: 1e-5 (InstanceNormalization's default) whatever the file says."""
    def mutated(x, weight, bias, eps, **kwargs):
        return instance_norm(x, weight, bias, 1e-5, **kwargs)
    return mutated


def _leaky_negval_ignored(leaky_relu):
    """LeakyReLU's negval ignored: tf.nn.leaky_relu's default alpha, 0.2 (the files say 0.01)."""
    def mutated(x, negval, **kwargs):
        return leaky_relu(x, 0.2, **kwargs)
    return mutated


# -- the v1 traps (docs/real-models.md) ----------------------------------------------------------------------


def _aliasing(kind: str):
    """gamma/beta for the channels past a train-mode batch norm's features, read some other way than cunn did."""
    def factory(storage_read):
        def mutated(self, name, channels):
            own = self.weight if name == "weight" else self.bias
            if own is None:
                return storage_read(self, name, channels)
            if kind == "defaults":  # the extra channels get the affine identity
                fill = np.ones if name == "weight" else np.zeros
                return np.concatenate([own, fill(channels - own.size, dtype=own.dtype)])
            if kind == "declared":  # only the declared values, repeated
                return np.resize(own, channels)
            storage = self.module.storage(name)  # the storage read from its start, the tensor's offset ignored
            return np.ascontiguousarray(storage.flat[:channels], dtype=own.dtype)
        return mutated
    return factory


def _batch_norm_mode_swapped(build_batch_norm):
    """Batch norms in the other mode: running statistics for the v1 nets (batch statistics), and vice versa."""
    def mutated(module, dtype, mode):
        return build_batch_norm(module, dtype, "evaluate" if mode == "train" else "train")
    return mutated


def _circular_pad_zero_is_identity(circular_pad):
    """SpatialCircularPadding(0, 0, 0, 0) taken for an identity (it overwrites the input's border)."""
    def mutated(x, left, right, top, bottom):
        if (left, right, top, bottom) == (0, 0, 0, 0):
            return x.copy()
        return circular_pad(x, left, right, top, bottom)
    return mutated


def _noise_into_first_channels(build_gen_noise):
    """A style net's noise written into channels 1-3 (over the image) instead of 4-6."""
    def mutated(module, spec):
        return build_gen_noise(module, replace(spec, first_channel=0) if spec.first_channel else spec)
    return mutated


def _deprocess_v1_by_255(family_deprocess):
    """The v1 nets' pictures divided by 255 (test.lua's) instead of the notebooks' 256."""
    def mutated(output, family=None, *args, **kwargs):
        if family is not None and family.deprocess_divisor == 256.0:
            family = replace(family, deprocess_divisor=255.0)
        return family_deprocess(output, family, *args, **kwargs) if family is not None else family_deprocess(output)
    return mutated


# -- the catalogue -----------------------------------------------------------------------------------------------

_NET = REFERENCE_NETWORK
CATALOGUE: tuple[Mutation, ...] = (
    Mutation("seed: stride-2 conv without zero padding",
             "tf_texture_net runs the stride-2 convolutions VALID, dropping padding 1 (docs/torch7-semantics.md)",
             ((f"{_NET}:conv2d", _conv_without_padding_when_strided),)),
    Mutation("seed: transposed conv one-pixel shift",
             "conv2d_transpose('VALID', output_shape=2H) keeps full[0:2H], Torch full[1:2H+1] "
             "(docs/torch7-semantics.md)",
             ((f"{_NET}:full_conv2d", _transposed_conv_keeps_top_rows),)),
    Mutation("seed: biases dropped",
             "every bias dropped: absorbed by the INs, wrong at the last convolution (docs/torch7-semantics.md)",
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
             "batch-size-1 BatchNorm uses running stats: y = x/sqrt(1+eps)*w+b (docs/torch7-semantics.md)",
             ((f"{_NET}:instance_norm", _running_statistics),)),
    Mutation("IN unbiased variance", "variance divided by n-1 instead of n",
             ((f"{_NET}:instance_norm", _unbiased_variance),)),
    Mutation("IN eps outside the sqrt", "(x-mean)/(sqrt(var)+eps) instead of (x-mean)/sqrt(var+eps)",
             ((f"{_NET}:instance_norm", _eps_outside_sqrt),)),
    Mutation("replication pad as one wide SYMMETRIC pad",
             "tf.pad(x, k, 'SYMMETRIC') once instead of k stacked 1-pixel pads (docs/torch7-semantics.md)",
             ((f"{_NET}:replication_pad", _one_wide_pad("symmetric")),)),
    Mutation("replication pad as REFLECT", "tf.pad(..., 'REFLECT') / ReflectionPad2d: never replication",
             ((f"{_NET}:replication_pad", _one_wide_pad("reflect")),)),
    Mutation("replication pad order (l,r,t,b) confused", "Torch's (l, r, t, b) read as (t, b, l, r)",
             ((f"{_NET}:replication_pad", _pad_order_confused),)),
    Mutation("full conv adj on top/left", "the adj row/column added at the top/left instead of bottom/right",
             ((f"{_NET}:full_conv2d", _adjustment_on_top_left),)),
    Mutation("residual add dropped", "the block returns its branch only (skip connection lost)",
             ((f"{_NET}:CAddTable.apply", _residual_add("dropped")),)),
    Mutation("ReLU after the residual add",
             "a ReLU after the CAddTable (texture_nets has none; docs/torch7-semantics.md)",
             ((f"{_NET}:CAddTable.apply", _residual_add("relu")),)),
    Mutation("deprocess BGR/RGB swapped", "VGG-space output shown without the BGR->RGB flip",
             ((f"{IMAGES}:deprocess", _deprocess_bgr_rgb_swapped),), "shared"),
    Mutation("deprocess mean not added",
             "the BGR means not added back before /255 (docs/torch7-semantics.md, the I/O contract)",
             ((f"{IMAGES}:deprocess", _deprocess_mean_not_added),), "shared"),
    Mutation("float64 silently computed in float32", "a float64 run whose weights and arithmetic are float32",
             ((f"{_NET}:Network", _float32_network_factory),)),
    # a bug in a fast path of the judge (shared: every verdict on a large input would be wrong)
    Mutation("judge: im2col row blocks off by one", "each unfold block after the first starts one output row early",
             ((f"{CONVOLUTION}:_conv_by_unfold", _unfold_blocks_one_row_early),), "shared"),
    Mutation("judge: col2im blocks drop a tap row", "col2im blocks after the first skip the last kernel row",
             ((f"{CONVOLUTION}:_col2im", _col2im_drops_last_tap_row),), "shared"),
    Mutation("judge: thread split drops chunk ends", "every normalisation chunk but the last stops one channel early",
             ((f"{NORMALIZATION}:parallel_ranges", _thread_split_drops_chunk_ends),), "shared"),
    # precision shortcuts in a statistic
    Mutation("IN statistics in float32 (one pass)", "mean and E[x^2] - mean^2 from float32 sums (Torch7: double, "
             "centred)", ((f"{_NET}:instance_norm", _in_float32_statistics),)),
    Mutation("BN statistics in float32 (one pass)", "train-mode batch statistics from float32 sums of x and x^2",
             ((f"{PYRAMID}:batch_norm", _bn_float32_statistics),)),
    # a parameter of the file ignored in favour of a framework default
    Mutation("BN eps: Keras default 1e-3", "the file's eps (1e-5) replaced by Keras BatchNormalization's 1e-3",
             ((f"{PYRAMID}:batch_norm", _bn_eps(1e-3)),)),
    Mutation("IN eps of the module ignored", "InstanceNormalization's eps read as the default 1e-5",
             ((f"{_NET}:instance_norm", _in_eps_ignored),)),
    Mutation("LeakyReLU negval ignored (0.2)", "tf.nn.leaky_relu's default alpha 0.2 instead of the file's negval",
             ((f"{PYRAMID}:leaky_relu", _leaky_negval_ignored),)),
    # the v1 traps (docs/real-models.md)
    Mutation("BN aliasing dropped (extra channels 1/0)", "gamma 1 and beta 0 for the channels past the features",
             ((f"{PYRAMID}:BatchNormalization._storage_read", _aliasing("defaults")),)),
    Mutation("BN aliasing: declared features repeated", "gamma[c mod F], beta[c mod F]: only the declared values",
             ((f"{PYRAMID}:BatchNormalization._storage_read", _aliasing("declared")),)),
    Mutation("BN aliasing: storage offset ignored", "gamma/beta read from the start of the flat storage",
             ((f"{PYRAMID}:BatchNormalization._storage_read", _aliasing("offset")),)),
    Mutation("BN in the wrong mode", "running statistics where the family runs batch statistics, and vice versa",
             ((f"{PYRAMID}:build_batch_norm", _batch_norm_mode_swapped),)),
    Mutation("circular pad 0 as identity", "SpatialCircularPadding(0,0,0,0) skipped: the border is not overwritten",
             ((f"{PYRAMID}:circular_pad", _circular_pad_zero_is_identity),)),
    Mutation("noise into channels 1-3", "a style net's GenNoise overwrites the image (channels 1-3), not 4-6",
             ((f"{PYRAMID}:build_gen_noise", _noise_into_first_channels),)),
    Mutation("deprocess v1 by 255", "the v1 notebooks divide by 256; test.lua's /255 used for every family",
             ((f"{IMAGES}:family_deprocess", _deprocess_v1_by_255),), "shared"),
)


def mutation(name: str) -> Mutation:
    for candidate in CATALOGUE:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no mutation named {name!r}; known: {', '.join(m.name for m in CATALOGUE)}")


# -- a pytest plugin: the real suite against one mutant ------------------------------------------------------------

ENVIRONMENT = "PARITY_MUTANT"
REPORT = "PARITY_MUTANT_REPORT"


def environment_mutant() -> MutantBackend:
    """The backend factory ``parity_tests.mutations:environment_mutant``: the port mutant named by $PARITY_MUTANT."""
    return MutantBackend(mutation(os.environ[ENVIRONMENT]))


_SESSION: dict[str, Any] = {}


def pytest_configure(config) -> None:
    name = os.environ.get(ENVIRONMENT)
    if not name:
        return
    bug = mutation(name)
    _SESSION["start"] = time.monotonic()
    if bug.scope == "shared":
        stack = contextlib.ExitStack()
        stack.enter_context(bug.active())
        _SESSION["stack"] = stack
    else:
        config.option.backend = ["parity_tests.mutations:environment_mutant"]


def pytest_unconfigure(config) -> None:
    stack = _SESSION.pop("stack", None)
    if stack is not None:
        stack.close()


def pytest_runtest_logreport(report) -> None:
    if report.failed and os.environ.get(ENVIRONMENT) and os.environ.get(REPORT):
        with open(os.environ[REPORT], "a") as out:
            out.write(json.dumps({"mutant": os.environ[ENVIRONMENT], "seconds": time.monotonic() - _SESSION["start"],
                                  "test": report.nodeid, "when": report.when}) + "\n")
