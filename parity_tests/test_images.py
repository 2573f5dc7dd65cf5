"""Image I/O (texture_nets/images.py) and atomic outputs (texture_nets/atomic.py).

Odd images are made with Pillow in tmp_path. Expected values follow torch/image:
8-bit samples times 1/255 (16-bit PNG: 1/65535) in double, grey replicated, alpha
dropped; image.scale's scaleBilinear (hand-computed cases below); image.save's
clamp, x255 and truncating byte cast.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from contract.families import VGG_MEAN_BGR
from fileio.atomic import atomic_write, atomic_write_bytes
from fileio.errors import UserError
from fileio.images import (
    MAX_PIXELS,
    deprocess,
    load_image,
    save_image,
    torch_scale_bilinear,
)

RNG = np.random.default_rng(5)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # H=5, W=7


def _save(tmp_path, image: Image.Image, name: str, **options):
    path = tmp_path / name
    image.save(path, **options)
    return path


def _expected(rgb_uint8: np.ndarray) -> np.ndarray:
    return (rgb_uint8.astype(np.float64) * (1 / 255)).transpose(2, 0, 1)[np.newaxis]


# -- loading ----------------------------------------------------------------
def test_rgb_png(tmp_path):
    x = load_image(_save(tmp_path, Image.fromarray(RGB), "rgb.png"), None)
    assert x.shape == (1, 3, 5, 7) and x.dtype == np.float64
    np.testing.assert_array_equal(x, _expected(RGB))  # bit-exact: x * (1/255) like img:mul(1/MAXVAL)


def test_grayscale_is_replicated(tmp_path):
    grey = RGB[..., 0]
    x = load_image(_save(tmp_path, Image.fromarray(grey, "L"), "grey.png"))
    np.testing.assert_array_equal(x[0], np.repeat(grey[np.newaxis] * (1 / 255), 3, axis=0))


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.dstack([RGB, np.zeros((5, 7), np.uint8)])  # fully transparent: Torch still sees the colours
    x = load_image(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "rgba.png"))
    np.testing.assert_array_equal(x, _expected(RGB))


def test_grey_alpha_drops_alpha(tmp_path):
    la = Image.fromarray(np.dstack([RGB[..., 1], RGB[..., 2]]), "LA")
    x = load_image(_save(tmp_path, la, "la.png"))
    np.testing.assert_array_equal(x[0, 0], RGB[..., 1] * (1 / 255))
    np.testing.assert_array_equal(x[0, 0], x[0, 2])


def test_palette_with_transparency_expands_to_rgb(tmp_path):
    palette_image = Image.fromarray(RGB).quantize(colors=8)
    palette_image.info["transparency"] = 0
    path = _save(tmp_path, palette_image, "palette.png", transparency=0)
    expected = np.asarray(palette_image.convert("RGB"))
    np.testing.assert_array_equal(load_image(path), _expected(expected))


def test_16_bit_grey_png_uses_65535(tmp_path):
    values = RNG.integers(0, 65536, (4, 6)).astype(np.uint16)
    path = _save(tmp_path, Image.fromarray(values), "grey16.png")
    x = load_image(path)
    np.testing.assert_array_equal(x[0, 1], values * (1 / 65535))


def _png_rgb16(path, values: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = values.shape
    raw = b"".join(b"\x00" + values[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_rgb_png_is_read_at_8_bits(tmp_path):
    """Pillow reduces 16-bit RGB to 8 bits (documented limitation): within 1/255 of Torch's x/65535."""
    values = RNG.integers(0, 65536, (3, 4, 3)).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    _png_rgb16(path, values)
    x = load_image(path)
    torch_values = values.transpose(2, 0, 1) * (1 / 65535)
    assert np.abs(x[0] - torch_values).max() <= 1 / 255


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    cyan = Image.new("CMYK", (6, 4), (255, 0, 0, 0))
    x = load_image(_save(tmp_path, cyan, "cmyk.jpg", quality=95))
    assert x.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(x[0, :, 0, 0], [0, 1, 1], atol=0.03)  # JPEG is lossy: a few levels


def test_exif_orientation(tmp_path):
    stored = Image.fromarray(RGB)  # 7 wide, 5 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    path = _save(tmp_path, stored, "phone.jpg", exif=exif, quality=95)
    assert load_image(path).shape == (1, 3, 7, 5)
    assert load_image(path, exif_orientation=False).shape == (1, 3, 5, 7)  # torch/image's view


def test_one_by_one_and_scaling_it(tmp_path):
    path = _save(tmp_path, Image.new("RGB", (1, 1), (10, 20, 30)), "one.png")
    x = load_image(path)
    assert x.shape == (1, 3, 1, 1)
    y = load_image(path, 3)
    assert y.shape == (1, 3, 3, 3)
    np.testing.assert_array_equal(y[0, :, 1, 1], np.float32(np.array([10, 20, 30]) * (1 / 255)))


def test_image_size_gives_a_square_like_image_scale(tmp_path):
    x = load_image(_save(tmp_path, Image.fromarray(RGB), "rgb.png"), 4)
    assert x.shape == (1, 3, 4, 4) and x.dtype == np.float64
    expected = torch_scale_bilinear(_expected(RGB)[0].astype(np.float32), 4, 4)
    np.testing.assert_array_equal(x[0], expected)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "256"])
def test_bad_image_size(tmp_path, size):
    with pytest.raises(UserError, match="positive integer"):
        load_image(_save(tmp_path, Image.fromarray(RGB), "rgb.png"), size)


def test_decompression_bomb_header(tmp_path):
    """A PNG whose header claims 100000 x 100000 pixels is refused before decoding."""
    path = tmp_path / "bomb.png"
    _png_rgb16(path, np.zeros((1, 1, 3), np.uint16))
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 16, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="megapixels"):
        load_image(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = _save(tmp_path, Image.fromarray(RGB), "rgb.png")
    with pytest.raises(UserError, match="decompression bomb"):
        load_image(path, max_pixels=34)
    assert load_image(path, max_pixels=35).shape == (1, 3, 5, 7)
    assert MAX_PIXELS == 8192 * 8192


@pytest.mark.parametrize("content,fragment", [
    (b"", "not an image"),
    (b"this is text, not a picture\n", "not an image"),
    (b"<html><body>404</body></html>", "not an image"),
])
def test_not_an_image(tmp_path, content, fragment):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(UserError, match=fragment):
        load_image(path)


def test_truncated_image(tmp_path):
    path = _save(tmp_path, Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "big.png")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError) as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_float_image_is_refused(tmp_path):
    path = _save(tmp_path, Image.fromarray(np.ones((3, 3), np.float32), "F"), "float.tif")
    with pytest.raises(UserError, match="float"):
        load_image(path)


def test_unreadable_paths(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(UserError, match="directory"):
        load_image(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_permission_denied(tmp_path):
    path = _save(tmp_path, Image.fromarray(RGB), "secret.png")
    path.chmod(0)
    with pytest.raises(UserError, match="permission"):
        load_image(path)


# -- torch/image scaleBilinear, hand-computed from generic/image.c ---------------
def test_scale_upsampling_aligns_corners():
    row = np.array([[[0.0, 3.0]]], np.float32)  # 1 x 1 x 2
    np.testing.assert_array_equal(torch_scale_bilinear(row, 3, 1), [[[0.0, 1.5, 3.0]]])
    np.testing.assert_array_equal(torch_scale_bilinear(row, 4, 1), [[[0.0, 1.0, 2.0, 3.0]]])


def test_scale_downsampling_averages_covered_pixels():
    row = np.array([[[1.0, 2.0, 4.0, 8.0]]], np.float32)
    np.testing.assert_array_equal(torch_scale_bilinear(row, 2, 1), [[[1.5, 6.0]]])  # box of 2
    s = np.array([[[3.0, 6.0, 9.0]]], np.float32)
    # 3 -> 2: scale 1.5; out0 = (s0 + .5 s1) / 1.5, out1 = (.5 s1 + s2) / 1.5
    expected = [np.float32(np.float32(3.0 + np.float32(0.5) * 6.0) / np.float32(1.5)),
                np.float32(np.float32(np.float32(0.5) * 6.0 + 9.0) / np.float32(1.5))]
    np.testing.assert_array_equal(torch_scale_bilinear(s, 2, 1)[0, 0], expected)


def test_scale_is_rows_then_columns_and_identity_at_same_size():
    image = RNG.random((3, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(torch_scale_bilinear(image, 7, 5), image)
    out = torch_scale_bilinear(image, 4, 9)
    assert out.shape == (3, 9, 4) and out.dtype == np.float32
    assert out.min() >= image.min() and out.max() <= image.max()  # convex combinations only


# -- deprocess ----------------------------------------------------------------
def test_deprocess_inverts_the_vgg_transform():
    rgb = RGB.astype(np.float64)
    bgr = rgb[..., ::-1].transpose(2, 0, 1) - VGG_MEAN_BGR[:, None, None]
    out = deprocess(bgr[np.newaxis])
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    # (v + mean - mean) / 255 * 255 truncated: v or v - 1 where the division rounds down.
    assert np.all((out == RGB) | (out.astype(int) == RGB.astype(int) - 1))
    expected = np.floor(np.clip((bgr + VGG_MEAN_BGR[:, None, None])[::-1] / 255, 0, 1) * 255).transpose(1, 2, 0)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_deprocess_clamps():
    out = deprocess(np.stack([np.full((2, 2), v) for v in (-1000.0, 0.0, 1000.0)]))
    np.testing.assert_array_equal(out[0, 0], [255, 116, 0])  # R clamped high, G = floor(116.779), B low


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_deprocess_refuses_nan_and_inf(bad):
    output = np.zeros((1, 3, 4, 4))
    output[0, 1, 2, 3] = bad
    with pytest.raises(UserError, match=r"NaN|Inf"):
        deprocess(output)


def test_deprocess_refuses_batches_and_bad_shapes():
    with pytest.raises(UserError, match="batch"):
        deprocess(np.zeros((2, 3, 4, 4)))
    with pytest.raises(UserError, match="3 x H x W"):
        deprocess(np.zeros((4, 4, 3)))


# -- saving and atomic writes -----------------------------------------------------
@pytest.mark.parametrize("name,fmt", [("out.png", "PNG"), ("out.JPG", "JPEG"), ("out.jpeg", "JPEG"),
                                      ("out.bmp", "BMP"), ("out.tiff", "TIFF")])
def test_save_image_format_from_extension(tmp_path, name, fmt):
    path = save_image(RGB, tmp_path / name)
    with Image.open(path) as image:
        assert image.format == fmt and image.size == (7, 5)
        if fmt != "JPEG":
            np.testing.assert_array_equal(np.asarray(image), RGB)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


def test_save_image_refuses_unknown_extension(tmp_path):
    with pytest.raises(UserError, match="unknown image extension"):
        save_image(RGB, tmp_path / "out.xyz")


def test_save_image_refuses_to_overwrite_the_input(tmp_path):
    source = _save(tmp_path, Image.fromarray(RGB), "in.png")
    before = source.read_bytes()
    with pytest.raises(UserError, match="input image"):
        save_image(RGB[::-1].copy(), source, source=source)
    link = tmp_path / "alias.png"
    link.symlink_to(source)
    with pytest.raises(UserError, match="input image"):
        save_image(RGB, link, source=source)
    assert source.read_bytes() == before


def test_save_image_bad_arrays(tmp_path):
    with pytest.raises(UserError, match="uint8"):
        save_image(RGB.astype(np.float32), tmp_path / "o.png")


def test_unwritable_destinations(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        save_image(RGB, tmp_path / "missing" / "o.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        save_image(RGB, tmp_path / "d.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_directory(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(UserError, match="permission"):
        save_image(RGB, folder / "o.png")


def test_failed_writer_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"old")

    def half_then_crash(temp):
        temp.write_bytes(b"partial")
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_atomic_write_with_numpy_savers(tmp_path):
    """np.save / np.savez append .npy / .npz to names lacking it: the temporary keeps the suffix."""
    atomic_write(tmp_path / "y.npy", lambda f: np.save(f, np.arange(3)))
    atomic_write(tmp_path / "t.npz", lambda f: np.savez(f, a=np.ones(2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz", "y.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.arange(3))
    with np.load(tmp_path / "t.npz") as archive:
        np.testing.assert_array_equal(archive["a"], np.ones(2))


def test_atomic_write_replaces_and_sets_normal_permissions(tmp_path):
    target = tmp_path / "data.bin"
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
