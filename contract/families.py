"""Model families: the conventions a Torch7 file does not record, in one place.

A ``.t7`` file holds modules and weights, not how its authors ran it. Three conventions change
the picture and differ between the public texture_nets-era models (docs/real-models.md):

* **the input**: how a picture becomes the tensor ``model:forward`` receives (the image as is,
  the image twice as 6 channels, zeros, BGR, a one-hot colour mask / 10);
* **the batch-norm mode**: batch statistics (``train``, as the v1 notebooks ran them: they never
  call ``:evaluate()``) or running statistics (``evaluate``: the demos and the doodle do);
* **deprocess**: how the VGG-space output becomes a picture (/255, /256, or 0-255 as is).

:func:`detect_family` reads the family off the module classes; every rule fits all eleven
public files and the Torch7 runs of them. A command-line flag may override it. The noise
modules and what they draw are listed by :func:`noise_modules`.

NumPy and t7file only: the harness, the command line and the implementations may all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from t7file import T7Module

# VGG mean pixel (texture_nets src/utils.lua), in the output's channel order (B, G, R).
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68])

CONVOLUTIONS = frozenset({"nn.SpatialConvolution", "nn.SpatialConvolutionMM", "cudnn.SpatialConvolution"})
BATCH_NORMS = frozenset({"nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization"})
GEN_NOISE = "nn.GenNoise"
NOISE_FILL = "nn.NoiseFill"


@dataclass(frozen=True)
class Family:
    """One family of generators and its conventions.

    name: short identifier (``--family`` values); title: for people; kind: "stylization",
    "texture" or "doodle" (what the input is made of); batchnorm: "train" or "evaluate" (None:
    the family has no batch norms); input_rule / deprocess_rule: one sentence each, shown in
    reports; deprocess_divisor: what the output is divided by after the mean is added (255,
    256, or 1 for a picture kept on the 0-255 scale); flip_to_rgb: whether the output's BGR is
    flipped to RGB; sizes: the rule for image sizes, in words.
    """

    name: str
    title: str
    kind: str
    batchnorm: str | None
    input_rule: str
    deprocess_rule: str
    deprocess_divisor: float
    flip_to_rgb: bool
    sizes: str


JOHNSON = Family(
    "johnson", "texture_nets feed-forward stylization (johnson.lua, 2016 pretrained or current head layout)",
    "stylization", None, "the RGB image in [0,1] (test.lua: image.load(path, 3))",
    "add the VGG means, BGR -> RGB, /255, clamp to [0,1] (test.lua)", 255.0, True, "any size")
# Both v1 notebooks (stylization.ipynb, texture.ipynb) deprocess the same way.
_V1_DEPROCESS = "add the VGG means, BGR -> RGB, /256, clamp to [0,1] (the notebook's deprocess)"
V1_STYLE = Family(
    "v1-style", "texture_nets v1 pyramid stylization net (the paper's multi-scale architecture)",
    "stylization", "train",
    "the RGB image in [0,1] twice, as 6 channels (stylization.ipynb: cat(img, img)); GenNoise replaces "
    "channels 4-6 of each scale with U[0,1) noise",
    _V1_DEPROCESS, 256.0, True,
    "multiples of 16 (the notebook rounds to 32)")
V1_TEXTURE = Family(
    "v1-texture", "texture_nets v1 pyramid texture net", "texture", "train",
    "zeros, N x 3 x H x W (texture.ipynb); GenNoise fills every scale with U[0,1) noise",
    _V1_DEPROCESS, 256.0, True,
    "multiples of 32")
DEMOS = Family(
    "demos", "torch-opencv-demos texture_nets stylization net", "stylization", "evaluate",
    "the image in [0,1] in OpenCV's BGR channel order (stylization.lua: frame:permute(3,1,2)/255); NoiseFill "
    "adds no noise",
    "add the VGG means, clamp to 0..255, shown as BGR by cv.imshow (no /255, no flip of the data)", 1.0, True,
    "multiples of 32")
DOODLE = Family(
    "doodle", "online-neural-doodle feed-forward generator", "doodle", "evaluate",
    "a one-hot colour mask / 10, N x colours x H x W (apply.lua); GenNoise adds N(0,1) planes at every level",
    "add the VGG means, BGR -> RGB, /255, clamp to [0,1] (apply.lua)", 255.0, True, "multiples of 32")
GENERIC = Family(
    "generic", "an unrecognised Torch7 generator", "stylization", "train",
    "the RGB image in [0,1]", "add the VGG means, BGR -> RGB, /255, clamp to [0,1]", 255.0, True, "any size")

FAMILIES: dict[str, Family] = {family.name: family for family in (JOHNSON, V1_STYLE, V1_TEXTURE, DEMOS, DOODLE,
                                                                   GENERIC)}


def detect_family(root: T7Module) -> Family:
    """The family of a module tree, from its classes alone (rules in the module docstring of each family)."""
    classes = {module.torch_class for module in root.walk()}
    if "nn.InstanceNormalization" in classes:
        return JOHNSON
    doodle_noise = any(_is_doodle_noise(module) for module in root.walk())
    if NOISE_FILL in classes:
        return DOODLE if doodle_noise else DEMOS
    if GEN_NOISE in classes and not doodle_noise:
        return V1_STYLE if input_planes(root) == 6 else V1_TEXTURE
    if not classes & BATCH_NORMS and "nn.SpatialFullConvolution" in classes:
        return JOHNSON
    return GENERIC


def family_named(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def batchnorm_mode(root: T7Module, family: Family | None = None) -> str:
    """How this model's batch norms normalise: the family's convention (train for the v1 nets,
    evaluate for the demos and the doodle; every BN in every public file is saved with train=true,
    so the flag in the file says nothing)."""
    family = family or detect_family(root)
    return family.batchnorm or "train"


def input_planes(root: T7Module) -> int:
    """Channels of the tensor ``model:forward`` receives: the first convolution's input planes
    (3 when the file has no convolution)."""
    for module in root.walk():
        if module.torch_class in CONVOLUTIONS:
            return module.integer("nInputPlane")
    return 3


# -- noise ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseModule:
    """A module that draws noise in a forward pass.

    kind "fill": texture_nets' GenNoise, which overwrites channels ``first_channel`` to
    ``first_channel + planes - 1`` (0-based) of its input with U[0,1) noise, in place: channels
    4-6 of a style net's 6-channel input (stylization.ipynb: ``output:narrow(2, 4, 3):uniform()``),
    all of a texture net's (supplementary/utils.lua: ``output:uniform()``).
    kind "planes": the doodle's GenNoise, a new N x planes x H x W tensor of N(0,1) noise times
    ``mult``, its input's values ignored. ``distribution`` is "uniform" or "normal".
    The array a noise module draws is N x planes x h x w, h x w its input's size.
    """

    lua_path: str
    kind: str
    planes: int
    distribution: str
    first_channel: int = 0
    mult: float = 1.0


def noise_modules(root: T7Module, family: Family | None = None) -> list[NoiseModule]:
    """Every noise-drawing module, in execution order (Concat runs its branches in order, so a
    pre-order walk is execution order). NoiseFill with 0 noise channels draws nothing."""
    family = family or detect_family(root)
    planes = input_planes(root)
    found = []
    for module in root.walk():
        if module.torch_class != GEN_NOISE:
            continue
        if _is_doodle_noise(module):
            found.append(NoiseModule(module.lua_path, "planes", module.integer("num_planes"), "normal",
                                     mult=float(module.number("mult", 1.0))))
        elif family.name == "v1-style":
            found.append(NoiseModule(module.lua_path, "fill", 3, "uniform", first_channel=3))
        else:
            # The pyramid's pooling keeps the input's channels, so the whole input is the model input's planes.
            found.append(NoiseModule(module.lua_path, "fill", planes, "uniform"))
    return found


def _is_doodle_noise(module: T7Module) -> bool:
    # online-neural-doodle's GenNoise keeps its constructor arguments as fields; texture_nets' has none.
    return module.torch_class == GEN_NOISE and "num_planes" in module.fields


# -- input and output conventions -------------------------------------------------------------------------------------


def image_to_input(image: np.ndarray, family: Family, planes: int | None = None) -> np.ndarray:
    """N x 3 x H x W RGB in [0,1] -> the tensor the family's usage script hands to ``forward``.

    The doodle family takes a colour mask, not a photo: use :func:`mask_to_input`.
    """
    image = np.asarray(image)
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an N x 3 x H x W RGB image, got shape {image.shape}")
    if family.name == "v1-style":
        return np.concatenate([image, image], axis=1)
    if family.name == "v1-texture":
        return np.zeros_like(image)
    if family.name == "demos":
        return np.ascontiguousarray(image[:, ::-1])
    if family.name == "doodle":
        raise ValueError("the doodle net takes a colour mask (mask_to_input), not a photo")
    return image


def mask_to_input(mask_rgb: np.ndarray, colours: int,
                  palette: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """An RGB mask (N x 3 x H x W in [0,1]) -> (one-hot N x colours x H x W / 10, the palette used).

    The rule of online-neural-doodle's apply.py: every pixel goes to the nearest palette colour
    (Euclidean distance in 0-255 RGB, k-means' predict with fixed centroids), channel i is palette
    colour i, and apply.lua divides the one-hot mask by 10. ``palette`` is the model's
    (``gen_doodles.hdf5colors.npy``, kept in the zoo catalogue); without one, the mask's ``colours``
    most frequent colours are used, most frequent first (ties by colour value).
    """
    mask = np.asarray(mask_rgb, dtype=np.float64)
    if mask.ndim != 4 or mask.shape[1] != 3:
        raise ValueError(f"expected an N x 3 x H x W RGB mask, got shape {mask.shape}")
    pixels = (mask * 255).transpose(0, 2, 3, 1).reshape(-1, 3)
    if palette is None:
        values, counts = np.unique(np.round(pixels).astype(np.int64), axis=0, return_counts=True)
        order = np.lexsort((values[:, 2], values[:, 1], values[:, 0], -counts))
        palette = values[order[:colours]].astype(np.float64)
    palette = np.asarray(palette, dtype=np.float64)
    if palette.shape != (colours, 3):
        raise ValueError(f"the palette has shape {palette.shape}; this model takes {colours} colours")
    distance = ((pixels[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2)
    nearest = np.argmin(distance, axis=1)
    n, _, h, w = mask.shape
    one_hot = np.zeros((n * h * w, colours), dtype=np.float64)
    one_hot[np.arange(n * h * w), nearest] = 1.0
    x = one_hot.reshape(n, h, w, colours).transpose(0, 3, 1, 2) / 10.0
    return np.ascontiguousarray(x), [tuple(round(float(v)) for v in colour) for colour in palette]


def input_picture(x: np.ndarray, family: Family) -> np.ndarray:
    """The picture a model input stands for, as N x 3 x H x W RGB in [0,1], for reports: the image a
    style net was given (its first three channels; flipped back from BGR for the demos), the mask of
    the doodle net drawn in grey levels by channel, black for a texture net's zeros."""
    x = np.asarray(x, dtype=np.float64)
    if family.name == "demos":
        return x[:, ::-1]
    if family.name == "doodle":
        level = np.argmax(x, axis=1)[:, None].astype(np.float64) / max(1, x.shape[1] - 1)
        return np.repeat(level, 3, axis=1)
    if x.shape[1] >= 3:
        return np.clip(x[:, :3], 0.0, 1.0)
    return np.repeat(x[:, :1], 3, axis=1)


def deprocess(output: np.ndarray, family: Family = JOHNSON) -> np.ndarray:
    """VGG-space output (N x 3 x H x W or 3 x H x W, BGR, mean subtracted) -> H x W x 3 uint8 RGB
    (of the first sample), as the family's script shows or saves it.

    Adds the means to (B, G, R), flips to RGB, divides by the family's divisor and clamps to [0,1];
    the picture is then stored as torch/image's ``image.save`` does (x 255, truncated to a byte).
    The demos family keeps the 0-255 scale (divisor 1: clamp to 0..255 and truncate).
    """
    output = np.asarray(output, dtype=np.float64)
    if output.ndim == 4:
        output = output[0]
    if output.ndim != 3 or output.shape[0] != 3:
        raise ValueError(f"expected a 3 x H x W output, got shape {output.shape}")
    picture = output + VGG_MEAN_BGR[:, None, None]
    if family.flip_to_rgb:
        picture = picture[::-1]
    if family.deprocess_divisor == 1.0:
        return np.clip(picture, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    picture = np.clip(picture / family.deprocess_divisor, 0.0, 1.0)
    return (picture * 255).astype(np.uint8).transpose(1, 2, 0)
