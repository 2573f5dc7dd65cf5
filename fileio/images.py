"""Image input and output as texture_nets test.lua does it, with clear errors for odd files.

test.lua (texture_nets aad2cc6)::

    local img = image.load(params.input_image, 3):float()
    if params.image_size > 0 then img = image.scale(img, params.image_size, params.image_size) end
    ...
    stylized = deprocess(stylized[1])              -- src/utils.lua: + mean (B,G,R), BGR->RGB, /255
    image.save(params.save_path, torch.clamp(stylized, 0, 1))

Mirrored here:
  * ``image.load(path, 3)`` multiplies 8-bit samples by ``1/255`` (16-bit PNG: ``1/65535``) in double,
    replicates grey to three channels and keeps the first three channels of four (alpha is dropped,
    not composited). torch/image errors on grey+alpha; here the alpha is dropped the same way.
  * ``image.scale(img, s, s)`` resizes to exactly s x s (aspect ratio not kept) with torch/image's
    own ``scaleBilinear`` on the FloatTensor: separable, rows first; upscaling interpolates with
    aligned corners, downscaling averages the covered source pixels (fractional box filter).
    :func:`torch_scale_bilinear` reproduces it in float32.
  * ``image.save`` clamps to [0, 1], multiplies by 255 and casts to a byte: truncation, not rounding.

Deliberate differences (documented in docs/hardening.md): EXIF orientation is applied by default
(torch/image ignores it; pass ``exif_orientation=False`` for Torch's pixels), formats beyond
PNG/JPEG/PPM are read through Pillow, 16-bit RGB PNGs are read at 8 bits (Pillow's limit), and
images over :data:`MAX_PIXELS` are refused (decompression bombs).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from contract.families import JOHNSON, Family
from contract.families import deprocess as family_deprocess
from fileio.atomic import atomic_write, check_destination
from fileio.errors import UserError

# 2**26 pixels (8192 x 8192) - above any phone photo (48 MP is 8000 x 6000), far below what a bomb claims.
MAX_PIXELS = 1 << 26
# Output extension -> Pillow format name.
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                ".ppm": "PPM", ".webp": "WEBP"}
# torch/image saves JPEG with quality 75.
JPEG_QUALITY = 75

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_GREY_MODES = ("1", "L", "LA", "La")


def load_image(path: str | Path, image_size: int | None = None, *, exif_orientation: bool = True,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image as a 1 x 3 x H x W float64 RGB array in [0, 1] (Torch layout), like ``image.load(path, 3)``.

    ``image_size`` (> 0) resizes to exactly image_size x image_size like test.lua's
    ``image.scale(img, s, s)``, in float32 as Torch does on the FloatTensor. Raises
    UserError for unreadable paths, non-images, truncated files and oversized images.
    """
    from PIL import Image, ImageOps

    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"image size must be a positive integer, got {image_size!r}")
    path = Path(path)
    image = _open(path, max_pixels)
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise UserError(f"refusing image {path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, "
                            f"over the limit of {max_pixels / 1e6:.0f} (a decompression bomb?)")
        if width < 1 or height < 1:
            raise UserError(f"cannot read image {path}: it has no pixels ({width}x{height})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                if exif_orientation:
                    image = _exif_transpose(image, ImageOps)
                rgb = _to_unit_rgb(image, path)
        except UserError:
            raise
        except (OSError, ValueError, SyntaxError, EOFError) as error:  # truncated or corrupt data
            raise UserError(f"cannot decode image {path}: {error}") from None
    if image_size is not None:
        rgb = torch_scale_bilinear(rgb.astype(np.float32), image_size, image_size).astype(np.float64)
    return rgb[np.newaxis]


def image_dimensions(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding the pixels (what a memory check needs before
    :func:`load_image`). Raises UserError like load_image."""
    with _open(Path(path), max_pixels) as image:
        return image.size


def _open(path: Path, max_pixels: int):
    """Pillow's lazy open (the header only), with one-line errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit and raises above twice it; load_image's check is ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        raise UserError(f"cannot read image {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"cannot read image {path}: it is a directory") from None
    except PermissionError:
        raise UserError(f"cannot read image {path}: permission denied") from None
    except UnidentifiedImageError:
        raise UserError(f"cannot read image {path}: not an image format Pillow recognises") from None
    except Image.DecompressionBombError:
        raise UserError(f"refusing image {path}: its header claims far more than the limit of "
                        f"{max_pixels / 1e6:.0f} megapixels (a decompression bomb?)") from None
    except OSError as error:
        raise UserError(f"cannot read image {path}: {error.strerror or error}") from None


def _exif_transpose(image, image_ops):
    """Apply the EXIF orientation tag; a broken EXIF block leaves the pixels as stored."""
    try:
        return image_ops.exif_transpose(image)
    except Exception:  # Pillow raises assorted errors on malformed EXIF; orientation is optional
        return image


def _to_unit_rgb(image, path: Path) -> np.ndarray:
    """3 x H x W float64 in [0, 1]: samples times 1/MAXVAL as torch/image does, grey replicated, alpha dropped."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.ndim != 2 or values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise UserError(f"cannot read image {path}: 32-bit integer samples are not supported")
        grey = values.astype(np.float64) * (1 / 65535)
        return np.repeat(grey[np.newaxis], 3, axis=0)
    if mode == "F":
        raise UserError(f"cannot read image {path}: 32-bit float images are not supported; convert to 8/16-bit")
    if mode in _GREY_MODES:
        grey = np.asarray(image.convert("L"), dtype=np.float64) * (1 / 255)
        return np.repeat(grey[np.newaxis], 3, axis=0)
    try:
        # RGBA/RGBX -> first three channels; palette expanded; CMYK/YCbCr/LAB/HSV converted by Pillow.
        rgb = np.asarray(image.convert("RGB"), dtype=np.float64) * (1 / 255)
    except ValueError as error:
        raise UserError(f"cannot read image {path}: mode {mode} cannot be converted to RGB ({error})") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


# -- torch/image scaleBilinear --------------------------------------------------
def _scale_last_axis(src: np.ndarray, dst_len: int) -> np.ndarray:
    """torch/image generic/image.c ``Main_scale_rowcol`` along the last axis, in float32 like a FloatTensor."""
    src_len = src.shape[-1]
    if dst_len == src_len:
        return src.copy()
    out = np.empty((*src.shape[:-1], dst_len), dtype=np.float32)
    if dst_len > src_len:
        # Linear interpolation with aligned end points; the last pixel is copied.
        scale = np.float32(src_len - 1) / np.float32(dst_len - 1)
        position = np.arange(dst_len - 1, dtype=np.float32) * scale
        index = position.astype(np.int64)
        frac = position - index.astype(np.float32)
        upper = np.minimum(index + 1, src_len - 1)  # weight 0 there; C reads one past the end
        out[..., :-1] = (np.float32(1) - frac) * src[..., index] + frac * src[..., upper]
        out[..., -1] = src[..., -1]
        return out
    # Downscaling: average over [di*scale, (di+1)*scale) with fractional end pixels, summed in order.
    scale = np.float32(src_len) / np.float32(dst_len)
    start_index, start_frac = 0, np.float32(0)
    for di in range(dst_len):
        end = np.float32(di + 1) * scale
        end_index = int(end)
        end_frac = end - np.float32(end_index)
        acc = (np.float32(1) - start_frac) * src[..., start_index]
        weight = np.float32(1) - start_frac
        for si in range(start_index + 1, min(end_index, src_len)):
            acc = acc + src[..., si]
            weight = weight + np.float32(1)
        if end_index < src_len:
            acc = acc + end_frac * src[..., end_index]
            weight = weight + end_frac
        out[..., di] = acc / weight
        start_index, start_frac = end_index, end_frac
    return out


def torch_scale_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image.scale(img, width, height, 'bilinear')`` on a C x H x W float32 array: rows first, then columns."""
    image = np.asarray(image, dtype=np.float32)
    rows = _scale_last_axis(image, width)
    return np.ascontiguousarray(np.swapaxes(_scale_last_axis(np.swapaxes(rows, -1, -2), height), -1, -2))


# -- output -------------------------------------------------------------------
def deprocess(output: np.ndarray, family: Family = JOHNSON) -> np.ndarray:
    """Generator output (1 x 3 x H x W or 3 x H x W, VGG space, BGR) -> H x W x 3 uint8 RGB, as the family's
    script saves it (:func:`contract.families.deprocess`; for texture_nets' test.lua: add the mean pixel to
    channels (B, G, R), flip to RGB, divide by 255, clamp to [0, 1], and image.save's x 255 truncated to a byte).

    NaN or Inf anywhere raise UserError rather than becoming a silently black or white image.
    """
    output = np.asarray(output)
    if output.ndim == 4:
        if output.shape[0] != 1:
            raise UserError(f"deprocess takes one image, got a batch of {output.shape[0]}")
        output = output[0]
    if output.ndim != 3 or output.shape[0] != 3:
        raise UserError(f"deprocess expects 3 x H x W (BGR, VGG space), got shape {tuple(output.shape)}")
    finite = np.isfinite(output)
    if not finite.all():
        nan, inf = int(np.isnan(output).sum()), int(np.isinf(output).sum())
        raise UserError(f"the generator output has {nan} NaN and {inf} Inf values out of {output.size}; "
                        "refusing to write an image (check the model's weights with `texture-nets inspect`)")
    return np.ascontiguousarray(family_deprocess(output, family))


def save_image(array: np.ndarray, path: str | Path, *, source: str | Path | None = None) -> Path:
    """Write an H x W x 3 uint8 RGB array atomically; the format comes from the extension.

    Refuses to overwrite ``source`` (the image being stylized) and unwritable destinations.
    """
    from PIL import Image

    path = Path(path)
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise UserError(f"save_image expects an H x W x 3 uint8 array, got {array.dtype} {tuple(array.shape)}")
    image_format = SAVE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise UserError(f"cannot write {path}: unknown image extension {path.suffix!r}; use one of "
                        + ", ".join(sorted(SAVE_FORMATS)))
    if source is not None and _same_file(Path(source), path):
        raise UserError(f"refusing to overwrite the input image {source}; choose another output path")
    check_destination(path)
    options = {"quality": JPEG_QUALITY} if image_format == "JPEG" else {}

    def write(temp: Path) -> None:
        Image.fromarray(array).save(temp, format=image_format, **options)

    return atomic_write(path, write)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # b does not exist yet (or a vanished): compare the names
        return a.resolve() == b.resolve()
