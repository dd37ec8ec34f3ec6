"""Result objects of face analysis: plain dataclasses that print, compare and serialise well."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class FaceQuality:
    """How usable a detected face is. Thresholds live in :class:`QualityThresholds`.

    ``size_px``: shorter side of the face box in pixels. ``sharpness``: variance of the Laplacian of
    the face shrunk to at most 128 px, divided by the face's grey-level variance (so it does not depend on
    face size or contrast; sharp photos score above ~0.1). ``yaw``/``roll`` in degrees: yaw > 0 when
    the nose points to the image right, roll > 0 when the eye line goes down to the right.
    ``score``: detector confidence. ``cut_off``: fraction of the face box outside the image.
    """

    size_px: float
    sharpness: float
    yaw: float
    roll: float
    score: float
    cut_off: float

    def as_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class QualityThresholds:
    """Limits used by ``FaceAnalysis.get_one`` to refuse a face; change them per use case."""

    min_size_px: float = 40.0   # below this the 112 px aligned crop is mostly upsampling blur
    min_sharpness: float = 0.015
    max_yaw: float = 45.0       # beyond this one eye is hidden: identity and landmarks degrade
    max_roll: float = 60.0      # roll is undone by alignment, only absurd values are refused
    min_score: float = 0.6
    max_cut_off: float = 0.15


@dataclass
class Face:
    """One detected face. ``landmarks`` are ``float32 [5, 2]`` in image pixels, in the order
    eye (left in image), eye (right in image), nose tip, mouth corner (left), mouth corner (right)."""

    bbox: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    quality: FaceQuality
    detector: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def width(self) -> float:
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def as_dict(self) -> dict:
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "landmarks": np.round(self.landmarks.astype(float), 2).tolist(),
            "quality": self.quality.as_dict(),
            "detector": self.detector,
            "notes": list(self.notes),
        }


@dataclass
class FaceMasks:
    """Masks at image resolution, ``float32`` in [0, 1]: ``face`` (skin region from brows to chin)
    and ``head`` (face + hair). ``method`` names what produced ``head``."""

    face: np.ndarray
    head: np.ndarray
    method: str


class FaceWarning(UserWarning):
    """Something about a photo worth telling the user that does not stop the run."""
