"""load_image: every bad input is a UserError; every odd but valid image comes back as proper RGB."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from modalbridge.errors import UserError
from modalbridge.vision.io import load_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` but carries no pixel data (a decompression-bomb header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)  # a few bytes of a scanline; the rest would be zeros
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_bad_inputs_are_user_errors(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not a png")
    svg = tmp_path / "drawing.png"
    svg.write_text('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>')
    jpg = _save(Image.new("RGB", (64, 64), (10, 200, 30)), tmp_path / "ok.jpg", quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])
    png = _save(Image.new("RGB", (64, 64)), tmp_path / "ok.png")
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(png.read_bytes()[:60])
    cases = {
        tmp_path / "nope.jpg": "not found",
        tmp_path: "directory",
        empty: "empty",
        text: "not an image",
        svg: "SVG is a vector format",
        truncated: "truncated",
        truncated_png: "truncated|unreadable",
        b"": "empty",
        b"GIF89a garbage": "not an image|unreadable|truncated",
    }
    for source, pattern in cases.items():
        with pytest.raises(UserError, match=pattern):
            load_image(source)
    with pytest.raises(UserError, match="cannot load"):
        load_image(12345)


def test_decompression_bombs_are_refused(tmp_path):
    # our cap, from the header alone
    with pytest.raises(UserError, match="over the limit"):
        load_image(_png_header_only(8000, 8000))  # 64 MP > 40 MP default
    # Pillow's own checks become UserErrors too: its warning (> 89 MP) and its error (> 179 MP)
    with pytest.raises(UserError, match="decompression bomb"):
        load_image(_png_header_only(10000, 10000), max_pixels=None)
    with pytest.raises(UserError, match="decompression bomb"):
        load_image(_png_header_only(20000, 20000), max_pixels=None)
    small = _save(Image.new("RGB", (100, 100)), tmp_path / "s.png")
    with pytest.raises(UserError, match="10,000 pixels is over the limit of 5,000"):
        load_image(small, max_pixels=5000)


def test_one_pixel_image_is_accepted_unless_min_size(tmp_path):
    p = _save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "dot.png")
    img = load_image(p)
    assert img.size == (1, 1) and img.mode == "RGB" and img.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(UserError, match="smaller than the minimum"):
        load_image(p, min_size=2)


def test_cmyk_la_p_modes_to_rgb(tmp_path):
    cmyk = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=100)
    r, g, b = load_image(cmyk).getpixel((4, 4))
    assert r > 230 and g < 30 and b < 30  # pure red, not inverted
    assert load_image(_save(Image.new("CMYK", (4, 4), (0, 0, 0, 255)), tmp_path / "k.tif")).getpixel((1, 1)) == (
        0,
        0,
        0,
    )
    la = Image.new("LA", (4, 2), (0, 0))  # fully transparent black ...
    la.putpixel((0, 0), (100, 255))  # ... except one opaque grey pixel
    img = load_image(_save(la, tmp_path / "la.png"))
    assert img.getpixel((3, 1)) == (255, 255, 255) and img.getpixel((0, 0)) == (100, 100, 100)  # onto white
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.putpixel((0, 0), 0)
    img = load_image(_save(p, tmp_path / "p.png", transparency=0))
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((2, 2)) == (255, 0, 0)
    assert load_image(_save(Image.new("1", (3, 3), 1), tmp_path / "bw.png")).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    for suffix in ("png", "tif"):
        img = load_image(_save(Image.fromarray(a), tmp_path / f"g16.{suffix}"))
        assert np.asarray(img)[..., 0].tolist() == [[0, 255], [128, 4]]  # Pillow's convert would give 255 for 32768
    assert np.asarray(load_image(a))[..., 1].tolist() == [[0, 255], [128, 4]]
    assert np.asarray(load_image(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))[0, :, 0].tolist() == [0, 128, 255]
    i32 = Image.fromarray(np.array([[0, 200]], dtype=np.int32), mode="I")  # 8-bit values in a 32-bit image
    assert np.asarray(load_image(i32))[0, :, 0].tolist() == [0, 200]


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    img = load_image(path)
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path):
    src = Image.new("RGB", (40, 20), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = src.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(src, tmp_path / "portrait.jpg", exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (20, 40)  # upright: taller than wide
    top, bottom = img.getpixel((10, 5)), img.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # left half became the top


def test_bytes_file_objects_and_pil_inputs(tmp_path):
    buf = io.BytesIO()
    Image.new("RGBA", (5, 4), (0, 128, 0, 255)).save(buf, "PNG")
    assert load_image(buf.getvalue()).getpixel((0, 0)) == (0, 128, 0)
    buf.seek(0)
    assert load_image(buf).size == (5, 4)
    assert load_image(Image.new("L", (2, 2), 7)).getpixel((1, 1)) == (7, 7, 7)
    with pytest.raises(UserError, match="not an image"):
        load_image(np.zeros((2, 2, 5), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_reduce_to_decodes_images_over_the_cap_at_reduced_size(tmp_path, fmt):
    """Datasets pass reduce_to: a file over max_pixels loads small instead of failing; one under it is unchanged."""
    arr = np.zeros((300, 400, 3), dtype=np.uint8)
    arr[:, 200:] = (200, 30, 30)  # left black, right red
    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(arr).save(path, format=fmt)
    with pytest.raises(UserError, match="over the limit"):
        load_image(path, max_pixels=50_000)  # 120,000 pixels
    small = load_image(path, max_pixels=50_000, reduce_to=100)
    assert max(small.size) <= 100 and small.size[0] > small.size[1] and small.mode == "RGB"
    px = np.asarray(small, dtype=np.int32)
    assert px[:, : small.size[0] // 3].max() < 60 and px[:, -small.size[0] // 3 :, 0].min() > 120  # still left/right
    same = load_image(path, max_pixels=None, reduce_to=100)  # under the cap: exactly what loading without it gives
    assert np.array_equal(np.asarray(same), np.asarray(load_image(path, max_pixels=None)))
