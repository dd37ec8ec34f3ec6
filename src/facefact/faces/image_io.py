"""Load any photo a user may hand us as ``np.uint8`` RGB ``H x W x 3``, or fail with a clear message.

Bad photos are the most common user error, so every way a file can be wrong maps to an
:class:`~facefact.errors.ImageError` that names the file, says what is wrong and what to do.
Memory stays bounded: dimensions are read from the header before any pixel is decoded, big JPEGs
are decoded at reduced scale (libjpeg's DCT scaling) and anything still too big is refused.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facefact.errors import ImageError
from facefact.safe_open import open_regular, special_file_kind

ImageInput = Union[str, Path, Image.Image, np.ndarray]

# A 48 MP phone photo decodes to ~150 MB of RGB; more than this we decode downscaled or refuse.
DEFAULT_MAX_PIXELS = 50_000_000
# No photo is 20 times wider than tall (a panorama is ~4:1); beyond it face detection's image
# pyramid degenerates (a 10000x10 strip overflowed the detector), so such files are refused.
MAX_ASPECT_RATIO = 20
# Formats Pillow decodes natively and safely (EPS/PDF would run external programs, so they are out).
SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM", "TGA"}
_KNOWN_UNSUPPORTED = {  # magic bytes -> name, so the message can say "convert from HEIC"
    b"ftypheic": "HEIC", b"ftypheix": "HEIC", b"ftypmif1": "HEIF", b"ftypavif": "AVIF",
}
# Photo files that folder scans (training sets, evaluation identities) pick up.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
_UNSUPPORTED_SUFFIXES = {".heic", ".heif", ".avif", ".svg", ".raw", ".cr2", ".cr3", ".nef",
                         ".arw", ".dng", ".psd", ".pdf", ".eps", ".jxl"}
_CONVERT_HINT = "convert it to JPEG or PNG (any photo viewer can 'export as JPEG') and try again"


ORIENTATION_TAG = 0x0112  # EXIF
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def load_image(source: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               background: tuple[int, int, int] = WHITE, downscale: bool = True) -> np.ndarray:
    """Return ``source`` as a C-contiguous ``np.uint8`` RGB array ``H x W x 3``.

    ``source`` may be a path, a PIL image or an array (``H x W``, ``H x W x 3`` RGB or
    ``H x W x 4`` RGBA; uint8, uint16, bool or float in [0, 1]). EXIF orientation is applied,
    alpha is composited on ``background`` (white, as for a photo; ``BLACK`` for a control map -
    pose, edges - which is drawn on black), 16-bit and CMYK/palette images are converted, an
    animated GIF gives its first frame. Images above ``max_pixels`` are decoded downscaled if
    they are JPEG and ``downscale`` (a photo only needed for its face), refused otherwise (a
    template, whose every pixel is kept).
    """
    background = tuple(int(c) for c in background)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, background)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, name="<PIL image>", max_pixels=max_pixels, background=background)
    if isinstance(source, (str, Path)):
        return _load_path(Path(source), max_pixels=max_pixels, background=background, downscale=downscale)
    raise ImageError(f"cannot read a photo from a {type(source).__name__}",
                     hint="pass a file path, a PIL.Image or a numpy uint8 RGB array")


def _load_path(path: Path, *, max_pixels: int, background: tuple[int, int, int] = WHITE,
               downscale: bool = True) -> np.ndarray:
    kind = special_file_kind(path)  # before any open: a FIFO would block, /dev/zero never ends
    if kind == "missing":
        raise ImageError("file not found", path=path, hint="check the path and spelling")
    if kind == "a directory":
        raise ImageError("is a folder, not a photo", path=path,
                         hint="pass the image files inside it (e.g. DIR/*.jpg)")
    if kind is not None:
        raise ImageError(f"is {kind}, not a photo file" if kind.startswith(("a ", "not a")) else f"the path is {kind}",
                         path=path, hint="pass an ordinary image file (JPEG or PNG)")
    try:
        handle = open_regular(path, ImageError)
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(32)
        handle.seek(0)
    except OSError as err:
        raise ImageError(f"cannot read the file ({err.strerror})", path=path,
                         hint="check the file permissions") from err
    with handle:
        if size == 0:
            raise ImageError("the file is empty (0 bytes)", path=path,
                             hint="the copy or download probably failed; copy the photo again")
        return _decode_file(path, handle, head, max_pixels=max_pixels, background=background, downscale=downscale)


def _decode_file(path: Path, handle, head: bytes, *, max_pixels: int, background: tuple[int, int, int],
                 downscale: bool = True) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow's global one only adds noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as img:  # reads the header only
                return _pil_to_rgb(img, name=str(path), max_pixels=max_pixels, background=background,
                                   downscale=downscale)
    except Image.DecompressionBombError:
        raise ImageError("the image dimensions are absurdly large (possible decompression bomb)",
                         path=path, hint="resize the photo below 50 megapixels") from None
    except UnidentifiedImageError:
        raise _unidentified(path, head) from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated", ...).
        raise ImageError(f"the image data is truncated or corrupt ({err})", path=path,
                         hint="the file was cut short or damaged; copy or export the photo again") from err
    except MemoryError:
        raise ImageError("not enough memory to decode the image", path=path,
                         hint="resize the photo below 50 megapixels") from None


def _unidentified(path: Path, head: bytes) -> ImageError:
    fmt = next((name for magic, name in _KNOWN_UNSUPPORTED.items() if magic in head[:16]), None)
    if fmt is None and path.suffix.lower() in _UNSUPPORTED_SUFFIXES:
        fmt = path.suffix.lstrip(".").upper()
    if fmt:
        return ImageError(f"{fmt} images are not supported", path=path, hint=_CONVERT_HINT)
    return ImageError(f"not an image file (its contents are not a known image format although it is "
                      f"named '{path.name}')", path=path,
                      hint="make sure this is really a photo; re-export it as JPEG or PNG")


def _pil_to_rgb(img: Image.Image, *, name: str, max_pixels: int,
                background: tuple[int, int, int] = WHITE, downscale: bool = True) -> np.ndarray:
    if img.format and img.format not in SUPPORTED_FORMATS:
        raise ImageError(f"{img.format} images are not supported", path=name, hint=_CONVERT_HINT)
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(f"the image has no pixels ({width}x{height})", path=name, hint=_CONVERT_HINT)
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(f"the image is {width}x{height} pixels, a strip more than {MAX_ASPECT_RATIO} times longer "
                         f"than wide; that is not a photo facefact can use", path=name,
                         hint="crop the photo to the face and its surroundings")
    if width * height > max_pixels and img.format:  # in-memory images are already decoded
        img = _decode_downscaled(img, name=name, max_pixels=max_pixels, downscale=downscale)
    if getattr(img, "is_animated", False):
        img.seek(0)  # animated GIF/WebP: the first frame is the photo
    img.load()
    if img.getexif().get(ORIENTATION_TAG, 1) != 1:  # phones store portrait photos sideways + an EXIF flag
        img = ImageOps.exif_transpose(img)  # (a copy: only when there is something to turn)
    return _mode_to_rgb(img, background, name)


def _decode_downscaled(img: Image.Image, *, name: str, max_pixels: int, downscale: bool = True) -> Image.Image:
    width, height = img.size
    if downscale and img.format in ("JPEG", "MPO"):
        # draft() makes libjpeg decode at 1/2, 1/4 or 1/8 scale: memory never holds the full image.
        for scale in (2, 4, 8):
            if (width / scale) * (height / scale) <= max_pixels:
                img.draft("RGB", (-(-width // scale), -(-height // scale)))
                if img.size[0] * img.size[1] <= max_pixels:
                    return img
                break
    hint = ("resize the photo (2000 px on the long side is plenty)" if downscale else
            f"every pixel of this image is kept, so it may have at most {max_pixels / 1e6:.0f} megapixels; "
            "resize it, or cut out the part around the faces")
    raise ImageError(f"the image is too large to decode safely ({width}x{height} = "
                     f"{width * height / 1e6:.0f} megapixels, limit {max_pixels / 1e6:.0f})", path=name, hint=hint)


def _mode_to_rgb(img: Image.Image, background: tuple[int, int, int] = WHITE, name: str | None = None) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping (which would turn it white).
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():  # one NaN would turn the whole image black after scaling
            bad = int((~np.isfinite(arr)).sum())
            raise ImageError(f"the floating-point image has {bad} pixel(s) that are NaN or infinite",
                             path=name,
                             hint="re-export the image as 8-bit JPEG or PNG")
        top = 1.0 if arr.max() <= 1.0 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        behind = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(behind, rgba)
    return _rgb_array(img if img.mode == "RGB" else img.convert("RGB"))


def _rgb_array(img: Image.Image, rows: int = 256) -> np.ndarray:
    """An RGB image as a writable uint8 array, copied a band of `rows` at a time: np.asarray(img)
    would hold two more copies of the whole image at once (Pillow's tobytes()), ~300 MB for 49 MP."""
    width, height = img.size
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, rows):
        out[top:top + rows] = np.asarray(img.crop((0, top, width, min(top + rows, height))))
    return out


def _array_to_rgb(arr: np.ndarray, background: tuple[int, int, int] = WHITE) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise ImageError(f"an image array must be H x W, H x W x 3 (RGB) or H x W x 4 (RGBA); got shape "
                         f"{arr.shape}", hint="pass np.asarray(PIL.Image.open(path).convert('RGB'))")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("the image array contains NaN or infinity", hint="clean the array first")
        top = 1.0 if arr.max() <= 1.0 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"unsupported image array dtype {arr.dtype}",
                         hint="pass uint8 RGB (0..255) or float RGB in [0, 1]")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:  # composite on the background, as for RGBA files
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        behind = np.asarray(background, np.float32)
        arr = (arr[:, :, :3] * alpha + behind * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)
