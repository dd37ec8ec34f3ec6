"""The square crop around a template face, and the way back into the full-resolution template.

The crop is pixel-aligned in the template: ``[x0, x0 + side) x [y0, y0 + side)``, zero-padded
where it leaves the image, then resized to ``size`` (512 for SD1.5). Keeping it on whole pixels
means the way back (resize ``side``, slice the in-image part) touches no template pixel outside
the crop, and a crop whose ``side`` equals ``size`` makes the round trip exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The released code crops so the face box fills 70 % of the crop side (1 / 0.7 ~ 1.43x the box).
RELEASE_FACE_FRACTION = 0.7


@dataclass(frozen=True)
class SquareCrop:
    """A square region of the template (may reach outside it) and the size it is resized to."""

    x0: int
    y0: int
    side: int
    size: int = 512

    @classmethod
    def around(cls, bbox, *, face_fraction: float = RELEASE_FACE_FRACTION, size: int = 512) -> "SquareCrop":
        """Centred on the face box; half-side ``int(longer box side / face_fraction / 2)`` as released."""
        x1, y1, x2, y2 = (float(v) for v in bbox)
        half = max(1, int(max(x2 - x1, y2 - y1) / face_fraction / 2))
        cx, cy = int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2))
        return cls(cx - half, cy - half, 2 * half, size)

    @property
    def scale(self) -> float:
        """Crop pixels per template pixel."""
        return self.size / self.side

    @property
    def feather_k(self) -> int:
        """The release's feathering unit in template pixels: 10 per 512 of crop side (at least 1)."""
        return max(1, int(10 * self.side / 512))

    def inside(self, shape) -> tuple[int, int, int, int]:
        """The part of the crop inside an image of ``shape``: (x1, y1, x2, y2), possibly empty."""
        h, w = shape[:2]
        return (max(0, self.x0), max(0, self.y0), min(w, self.x0 + self.side), min(h, self.y0 + self.side))

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The ``side x side`` region of ``image`` at template resolution, zeros outside the image."""
        x1, y1, x2, y2 = self.inside(image.shape)
        out = np.zeros((self.side, self.side) + image.shape[2:], image.dtype)
        if x2 > x1 and y2 > y1:
            out[y1 - self.y0:y2 - self.y0, x1 - self.x0:x2 - self.x0] = image[y1:y2, x1:x2]
        return out

    def crop(self, image: np.ndarray, *, interpolation: int | None = None) -> np.ndarray:
        """The region resized to ``size x size`` (area averaging when shrinking, bicubic when growing)."""
        region = self.cut(image)
        if self.side == self.size:
            return region
        if interpolation is None:
            interpolation = cv2.INTER_AREA if self.side > self.size else cv2.INTER_CUBIC
        return cv2.resize(region, (self.size, self.size), interpolation=interpolation)

    def uncrop(self, crop: np.ndarray, shape, *, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
        """A ``size x size`` crop (image or float mask) back at template resolution, only the part
        inside an image of ``shape`` (the rectangle :meth:`inside` gives)."""
        full = crop if self.side == self.size else cv2.resize(crop, (self.side, self.side),
                                                              interpolation=interpolation)
        x1, y1, x2, y2 = self.inside(shape)
        return full[y1 - self.y0:y2 - self.y0, x1 - self.x0:x2 - self.x0]

    def to_crop(self, points) -> np.ndarray:
        """Template (x, y) -> crop (x, y); pixel centres map as cv2.resize maps them."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        return (pts - [self.x0, self.y0] + 0.5) * self.scale - 0.5

    def to_template(self, points) -> np.ndarray:
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        return (pts + 0.5) / self.scale - 0.5 + [self.x0, self.y0]

    def box_to_crop(self, bbox) -> tuple[float, float, float, float]:
        """A box's corners (edges, not pixel centres) in crop coordinates."""
        x1, y1, x2, y2 = bbox
        k = self.scale
        return ((x1 - self.x0) * k, (y1 - self.y0) * k, (x2 - self.x0) * k, (y2 - self.y0) * k)


def paste(template: np.ndarray, crop: SquareCrop, result: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``template`` with ``result`` (a ``size x size`` RGB crop) blended in through ``weight``.

    ``weight`` is float in [0, 1] over :meth:`SquareCrop.inside` at template resolution. Where it is
    0 the output is the template's own value - exactly, not re-quantised - and the template array
    itself is never modified.
    """
    out = template.copy()
    x1, y1, x2, y2 = crop.inside(template.shape)
    if x2 <= x1 or y2 <= y1:
        return out
    region = crop.uncrop(result, template.shape).astype(np.float32)
    where = weight > 0
    w = weight[where][:, None].astype(np.float32)
    old = out[y1:y2, x1:x2]
    blended = region[where] * w + old[where].astype(np.float32) * (1.0 - w)
    old[where] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
