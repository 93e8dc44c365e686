"""Tests for the shared image loader: every awkward file a photo collection contains."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geopak.data.images import ImageReadError, open_image, probe_image, to_tensor


def _jpeg_bytes(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def test_rgb_jpeg_path_and_bytes(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 30), (200, 10, 10))
    p = tmp_path / "a.jpg"
    img.save(p, quality=95)
    for src in (p, str(p), p.read_bytes(), io.BytesIO(p.read_bytes())):
        out = open_image(src)
        assert out.mode == "RGB" and out.size == (40, 30)
        r, g, b = out.getpixel((20, 15))
        assert r > 180 and g < 40 and b < 40


def test_png_alpha_composited_on_white(tmp_path: Path) -> None:
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[..., 0] = 255
    arr[:, :5, 3] = 255  # left half opaque red, right half fully transparent
    p = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(p)
    out = np.asarray(open_image(p))
    assert out.shape == (10, 10, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 9]) == (255, 255, 255)


def test_la_and_palette_transparency(tmp_path: Path) -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    p = tmp_path / "la.png"
    la.save(p)
    assert tuple(np.asarray(open_image(p))[0, 0]) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    q = tmp_path / "p.png"
    pal.save(q, transparency=0)
    assert tuple(np.asarray(open_image(q))[0, 0]) == (255, 255, 255)
    pal.save(q)  # no transparency: the palette colour survives
    assert tuple(np.asarray(open_image(q))[0, 0]) == (10, 20, 30)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    assert Image.open(p).mode == "CMYK"
    out = open_image(p)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_16bit_grey_png_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.full((8, 8), 32768, np.uint16)
    arr[0, 0] = 65535
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I")
    out = np.asarray(open_image(p))
    assert out.shape == (8, 8, 3)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert abs(int(out[4, 4, 0]) - 128) <= 1  # mid-grey, not clipped to white


def test_corrupt_and_truncated_jpeg(tmp_path: Path) -> None:
    good = _jpeg_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageReadError) as e:
        open_image(trunc)
    assert "trunc.jpg" in str(e.value) and e.value.code == "unreadable_image"
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(good[:4] + b"\x00" * 200)
    with pytest.raises(ImageReadError):
        open_image(garbage)


def test_zero_byte_missing_and_non_image(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError) as e:
        open_image(empty)
    assert e.value.code == "not_an_image" and "0 bytes" in str(e.value)
    with pytest.raises(ImageReadError) as e:
        open_image(tmp_path / "nope.jpg")
    assert e.value.code == "missing_file"
    txt = tmp_path / "notes.jpg"
    txt.write_text("this is not an image\n" * 20)
    with pytest.raises(ImageReadError) as e:
        probe_image(txt)
    assert e.value.code == "not_an_image"


def test_decompression_bomb_refused_without_decoding(tmp_path: Path) -> None:
    # A PNG whose header claims 40000 x 40000 RGB (4.8 GB decoded) in under 100 bytes.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(40000, 40000))
    assert p.stat().st_size < 100
    with pytest.raises(ImageReadError) as e:
        probe_image(p)
    assert e.value.code == "too_large"
    with pytest.raises(ImageReadError):
        open_image(p)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    with pytest.raises(ImageReadError):
        open_image(small, max_pixels=5000)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif.tobytes())
    assert open_image(p).size == (20, 40)
    assert probe_image(p).width == 40  # the header is raw


def test_arrays_and_pil_inputs() -> None:
    assert open_image(np.zeros((5, 6), np.uint8)).size == (6, 5)
    f = open_image(np.ones((3, 5, 6), np.float32))  # CHW float in [0, 1]
    assert f.size == (6, 5) and f.getpixel((0, 0)) == (255, 255, 255)
    assert open_image(np.full((4, 4, 3), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    assert open_image(Image.new("L", (3, 3), 7)).getpixel((1, 1)) == (7, 7, 7)
    with pytest.raises(ImageReadError):
        open_image(np.zeros((5, 5, 7)))
    with pytest.raises(ImageReadError):
        open_image(np.full((4, 4), np.nan, np.float32))


def test_to_tensor_shape_range_and_centre_crop() -> None:
    arr = np.zeros((50, 100, 3), np.uint8)
    arr[:, 25:75] = 255  # white centre band, black sides
    t = to_tensor(Image.fromarray(arr), size=32)
    assert tuple(t.shape) == (3, 32, 32) and str(t.dtype) == "torch.float32"
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert float(t.mean()) > 0.95  # the crop keeps the centre band only
    assert tuple(to_tensor(np.zeros((7, 9)), size=16).shape) == (3, 16, 16)  # upsampled
