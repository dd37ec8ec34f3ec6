"""load_image: every kind of bad or unusual file gives RGB uint8 or a clear ImageError."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facefact.errors import ImageError
from facefact.faces import load_image


def _save(path, img, fmt, **kw):
    img.save(path, fmt, **kw)
    return path


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="not found") as err:
        load_image(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(err.value) and err.value.hint
    with pytest.raises(ImageError, match="folder") as err:
        load_image(tmp_path)
    assert err.value.path == str(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as err:
        load_image(tmp_path / "empty.jpg")
    assert "empty.jpg" in str(err.value) and "copy" in err.value.hint


def test_truncated_jpeg(tmp_path, astronaut, jpeg_bytes):
    data = jpeg_bytes(astronaut)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as err:
        load_image(tmp_path / "cut.jpg")
    assert "cut.jpg" in str(err.value)


def test_text_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("these are not pixels\n" * 10)
    with pytest.raises(ImageError, match="not an image") as err:
        load_image(tmp_path / "notes.jpg")
    assert "notes.jpg" in str(err.value) and err.value.hint


def test_unsupported_formats(tmp_path):
    heic = tmp_path / "phone.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    with pytest.raises(ImageError, match="HEIC images are not supported") as err:
        load_image(heic)
    assert "JPEG" in err.value.hint
    eps = tmp_path / "figure.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    with pytest.raises(ImageError, match="not supported"):
        load_image(eps)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))  # 10 gigapixels claimed in 100 bytes
    with pytest.raises(ImageError, match="(absurdly large|too large)") as err:
        load_image(bomb)
    assert "bomb.png" in str(err.value)
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(9000, 9000))  # 81 MP: above our limit, below Pillow's
    with pytest.raises(ImageError, match="too large"):
        load_image(big)
    assert Image.MAX_IMAGE_PIXELS == 89478485  # we never change Pillow's global


def test_big_jpeg_is_decoded_downscaled(tmp_path, astronaut):
    path = _save(tmp_path / "big.jpg", Image.fromarray(astronaut).resize((2048, 2048)), "JPEG")
    small = load_image(path, max_pixels=1_100_000)
    assert small.shape == (1024, 1024, 3)
    with pytest.raises(ImageError, match="too large"):
        load_image(path, max_pixels=10_000)  # even 1/8 scale would not fit


def test_exif_rotation_honoured(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path / "rot.jpg", img, "JPEG", exif=exif.tobytes())
    assert load_image(path).shape == (40, 20, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "I", "1"])
def test_modes_converted_to_rgb(tmp_path, mode):
    base = Image.new("RGB", (16, 12), (200, 100, 50))
    img = base.convert(mode) if mode not in ("I;16", "I") else Image.new(mode, (16, 12), 40000)
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I") else "PNG"
    path = _save(tmp_path / f"m.{fmt.lower()}", img, fmt)
    rgb = load_image(path)
    assert rgb.shape == (12, 16, 3) and rgb.dtype == np.uint8
    if mode in ("I;16", "I"):
        assert 150 <= rgb[0, 0, 0] <= 160  # 40000/65535*255 ~ 156: scaled, not clipped to white


def test_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgb = load_image(_save(tmp_path / "t.png", img, "PNG"))
    assert (rgb == 255).all()


def test_transparent_pixels_on_another_background(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    img.putpixel((1, 2), (255, 255, 255, 255))
    path = _save(tmp_path / "t.png", img, "PNG")
    for source in (path, Image.open(path), np.asarray(Image.open(path))):
        rgb = load_image(source, background=(0, 0, 0))
        assert rgb[2, 1].tolist() == [255, 255, 255] and rgb.sum() == 3 * 255
    half = np.zeros((1, 1, 4), np.uint8)
    half[0, 0] = (200, 100, 0, 128)
    assert load_image(half, background=(0, 0, 0))[0, 0].tolist() == [100, 50, 0]
    assert load_image(half)[0, 0].tolist() == [227, 177, 127]  # white stays the default


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgb = load_image(path)
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50


def test_arrays_and_pil_inputs():
    gray = np.full((5, 6), 7, np.uint8)
    assert load_image(gray).shape == (5, 6, 3)
    assert load_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    assert load_image(np.ones((5, 6, 3), np.float32))[0, 0, 0] == 255
    assert load_image(np.full((5, 6, 3), 65535, np.uint16))[0, 0, 0] == 255
    assert load_image(Image.new("L", (6, 5))).shape == (5, 6, 3)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((5, 6, 2), np.uint8))
    with pytest.raises(ImageError):
        load_image(12)
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((2, 2, 3), np.nan, np.float32))


def test_cli_style_message_has_no_traceback(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "x.png")
    assert "Traceback" not in str(err.value) and "x.png" in str(err.value)


def test_a_large_photo_is_decoded_without_whole_image_copies(tmp_path):
    """Issue 19: a 49 MP photo peaked at 1.6 GB. Decoding holds Pillow's image (4 bytes a pixel) and
    the RGB array (3), no more: measured in a fresh process, the peak grows by about 8 bytes a pixel
    (np.asarray(img)'s whole-image bytes and an exif_transpose copy made it about 12)."""
    import subprocess
    import sys

    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (90, 120, 150)).save(path, quality=80)
    code = ("import resource, sys; from facefact.faces import load_image; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; rgb = load_image(sys.argv[1]); "
            "print(rgb.shape, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    shape, grown = done.stdout.rsplit(" ", 1)
    assert shape.strip() == "(3000, 4000, 3)"
    assert int(grown) < 10 * 4000 * 3000, f"decoding grew the peak by {int(grown) / 1e6:.0f} MB"


def test_exif_orientation_is_still_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "turned.jpg"
    img.save(path, exif=exif)
    assert load_image(path).shape == (40, 20, 3)
