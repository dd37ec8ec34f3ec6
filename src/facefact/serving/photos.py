"""Uploaded reference photos: decoded under a pixel limit, checked for a usable face.

Photos are named "photo 1", "photo 2"... in every message, never by their upload file name
(file names are often people's names, and messages end up in logs and metadata).
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from facefact.errors import FaceError, ImageError


class PhotoTooLargeError(ImageError):
    """The photo has more pixels than the server accepts."""


@dataclass
class FaceCheck:
    """What the face check found in one photo (the crop is for the UI to show, then dropped)."""
    photo: int
    bbox: list[float]
    faces_found: int
    notes: list[str] = field(default_factory=list)
    crop: np.ndarray | None = None


def photo_name(index: int) -> str:
    return f"photo {index + 1}"


def decode_photo(data: bytes, index: int, max_pixels: int, name: str | None = None) -> np.ndarray:
    """RGB uint8 array of an uploaded photo; the size is checked from the header before decoding."""
    from facefact.faces import load_image

    name = name or photo_name(index)
    if not data:
        raise ImageError("the upload is empty", path=name, hint="send the photo's bytes as a file field")
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise ImageError("not an image (or a format that cannot be read)", path=name,
                         hint="send a JPEG, PNG or WebP photo") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PhotoTooLargeError(f"{width}x{height} is {width * height / 1e6:.1f} megapixels; the server "
                                 f"takes at most {max_pixels / 1e6:.1f}", path=name,
                                 hint="resize the photo (1024 px on the long side is plenty)")
    try:
        return load_image(image, max_pixels=max_pixels)
    except ImageError as err:
        raise ImageError(err.message, path=name, hint=err.hint) from None
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ImageError("the image data is damaged", path=name, hint="export the photo again") from None


def soft_warnings(quality) -> list[str]:
    """Usable, but worth a word: what lowers the likeness without making the photo unusable."""
    warnings = []
    if quality.size_px < 80:
        warnings.append(f"the face is small ({quality.size_px:.0f} px); a photo where it is over 100 px works better")
    if abs(quality.yaw) > 25:
        warnings.append(f"the head is turned ({abs(quality.yaw):.0f} degrees); a frontal photo works better")
    if quality.sharpness < 0.04:
        warnings.append("the face looks blurred; a sharper photo works better")
    if quality.cut_off > 0.02:
        warnings.append("the face is partly outside the photo")
    return warnings


class FaceChecker:
    """Detects the face the pipeline will use, early, so a bad photo is refused at once.

    One detector shared by the server's request threads; calls are serialised (the detector
    object is not documented as thread safe, and a check takes milliseconds)."""

    def __init__(self, analysis=None):
        from facefact.faces import FaceAnalysis

        self.analysis = analysis or FaceAnalysis()
        self._lock = threading.Lock()

    def check(self, rgb: np.ndarray, index: int, with_crop: bool = False) -> FaceCheck:
        import warnings

        from facefact.faces.types import FaceWarning

        name = photo_name(index)
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", FaceWarning)  # the same words are in the notes
            faces = self.analysis.get(rgb)
            try:
                face = self.analysis.get_one(rgb, path=name)
            except FaceError as err:
                raise type(err)(err.message, path=name, hint=err.hint) from None
            crop = self.analysis.context_crop(rgb, face, size=160) if with_crop else None
        notes = list(face.notes) + soft_warnings(face.quality)
        return FaceCheck(photo=index + 1, bbox=[round(float(v), 1) for v in face.bbox], faces_found=len(faces),
                         notes=notes, crop=crop)

    def template_faces(self, rgb: np.ndarray) -> list:
        """The template's faces, numbered left to right as the template mode numbers them."""
        from facefact.template.faces import find_faces

        with self._lock:
            return find_faces(self.analysis, rgb)
