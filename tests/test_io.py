"""Reading every image kind with Pillow, and every bad file -> UserError naming the file."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fgdsr.data.io import list_images, read_image, to_8bit, write_image
from fgdsr.errors import UserError

RGB = np.random.default_rng(0).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)


def _png16(path, a):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour)."""
    a = np.asarray(a, dtype=">u2")
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if a.ndim == 3 else 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_rgb_round_trip(tmp_path, suffix):
    p = write_image(tmp_path / f"a{suffix}", RGB)
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, RGB)
    assert [f.name for f in tmp_path.iterdir()] == [f"a{suffix}"]  # atomic: no temp file left


def test_jpeg_is_read_as_rgb(tmp_path):
    img = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    out = read_image(write_image(tmp_path / "a.jpg", img))
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - img).max() <= 3


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = RGB[..., 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (6, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_palette_rgba_la_cmyk(tmp_path):
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    rgba = np.dstack([RGB, np.zeros((6, 5), np.uint8)])  # fully transparent: alpha is dropped, not composited
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB)
    Image.fromarray(np.dstack([RGB[..., 0], RGB[..., 1]]), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.repeat(RGB[..., :1], 3, axis=2))
    Image.new("CMYK", (3, 2), (255, 0, 0, 0)).save(tmp_path / "c.tif")  # pure cyan
    assert read_image(tmp_path / "c.tif")[0, 0].tolist() == [0, 255, 255]
    Image.new("CMYK", (3, 2), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg").min() >= 250  # no ink = white


def test_16bit_grayscale_and_colour(tmp_path):
    g = np.array([[0, 257, 1000], [40000, 65535, 32768]], np.uint16)
    _png16(tmp_path / "g16.png", g)
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], (g >> 8).astype(np.uint8))  # documented: high byte
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png", keep_16bit=True)[..., 2], g)
    c = (np.arange(18, dtype=np.uint16).reshape(2, 3, 3) * 3000 + 77).astype(np.uint16)
    _png16(tmp_path / "c16.png", c)
    np.testing.assert_array_equal(read_image(tmp_path / "c16.png"), (c >> 8).astype(np.uint8))
    with pytest.raises(UserError, match="c16.png.*TIFF"):
        read_image(tmp_path / "c16.png", keep_16bit=True)
    import tifffile

    tifffile.imwrite(tmp_path / "c16.tif", c)
    np.testing.assert_array_equal(read_image(tmp_path / "c16.tif", keep_16bit=True), c)
    np.testing.assert_array_equal(read_image(tmp_path / "c16.tif"), (c >> 8).astype(np.uint8))


def test_to_8bit_inverts_times_257():
    v = np.arange(256, dtype=np.uint16)
    np.testing.assert_array_equal(to_8bit(v * 257), v.astype(np.uint8))


def _bad_files(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all\n")
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    corrupt = bytearray(data)
    corrupt[60:200] = bytes(140)  # damage the compressed pixel data
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    return ["truncated.png", "empty.png", "text.png", "garbage.jpg", "corrupt.png", "missing.png"]


def test_bad_files_raise_usererror_naming_the_file(tmp_path):
    for name in _bad_files(tmp_path):
        with pytest.raises(UserError) as e:
            read_image(tmp_path / name)
        msg = str(e.value)
        assert name in msg and "\n" not in msg, msg
    with pytest.raises(UserError):
        read_image(tmp_path)  # a folder


def test_write_image_checks(tmp_path):
    with pytest.raises(UserError, match="format"):
        write_image(tmp_path / "a.xyz", RGB)
    with pytest.raises(ValueError):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 2), np.uint8))
    write_image(tmp_path / "sub" / "g.png", RGB[..., 0])
    assert read_image(tmp_path / "sub" / "g.png").shape == (6, 5, 3)


def test_list_images_sorted_and_filtered(tmp_path):
    for n in ["b.png", "a.JPG", ".hidden.png", "notes.txt", "c.tiff"]:
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.tiff"]
