"""The faces of a template photo: found, numbered left to right, and chosen as targets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facefact.errors import ConfigError, FaceQualityError, NoFaceError
from facefact.faces.types import Face


@dataclass(frozen=True)
class TemplateFace:
    """A face of the template; ``number`` is 1-based, counting left to right by the box's left edge."""

    number: int
    face: Face

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return self.face.bbox

    @property
    def size_px(self) -> float:
        """The shorter side of the face box, as the face quality checks measure it."""
        return min(self.face.width, self.face.height)

    def describe(self) -> str:
        x1, y1, _, _ = self.bbox
        return (f"face {self.number}: {self.face.width:.0f}x{self.face.height:.0f} px at "
                f"({x1:.0f}, {y1:.0f}), score {self.face.score:.2f}")

    def as_dict(self) -> dict:
        return {"number": self.number, "bbox": [round(float(v), 1) for v in self.bbox],
                "width": round(self.face.width, 1), "height": round(self.face.height, 1),
                "score": round(float(self.face.score), 3)}


def find_faces(analysis, image: np.ndarray, *, max_faces: int | None = None) -> list[TemplateFace]:
    """The ``max_faces`` largest faces (all when None), numbered left to right."""
    faces = analysis.get(image)  # largest first
    if max_faces is not None:
        faces = faces[:max_faces]
    ordered = sorted(faces, key=lambda f: (f.bbox[0], f.bbox[1]))
    return [TemplateFace(number=i + 1, face=f) for i, f in enumerate(ordered)]


def largest(faces: list[TemplateFace]) -> TemplateFace:
    return max(faces, key=lambda f: f.face.area)


def listing(faces: list[TemplateFace]) -> str:
    return "; ".join(f.describe() for f in faces) or "none"


def choose_targets(faces: list[TemplateFace], numbers, *, min_face_px: float,
                   path: str | None = None) -> list[TemplateFace]:
    """The faces with these numbers (1-based, left to right), in the order given; the largest
    when ``numbers`` is empty. Clear errors for no face, a number out of range, a face given twice
    and a face too small to redraw."""
    if not faces:
        raise NoFaceError("no face found in the template", path=path,
                          hint="use a template photo with at least one clearly visible face, ~100 px or larger")
    numbers = list(numbers or [])
    if not numbers:
        chosen = [largest(faces)]
    else:
        seen: set[int] = set()
        for number in numbers:
            if not isinstance(number, (int, np.integer)) or isinstance(number, bool) or not 1 <= number <= len(faces):
                raise ConfigError(
                    f"target face {number} does not exist: the template has {len(faces)} "
                    f"face{'s' if len(faces) != 1 else ''}, numbered 1..{len(faces)} from left to right "
                    f"({listing(faces)})", path=path, hint="pick a number from this list (`facefact template --list-faces` shows it)",
                    setting="target")
            if number in seen:
                raise ConfigError(f"target face {number} is given more than once", path=path,
                                  hint="give each template face one identity; several photos of one person "
                                       "go into one list for that face")
            seen.add(int(number))
        chosen = [faces[int(n) - 1] for n in numbers]
    for target in chosen:
        if target.size_px < min_face_px:
            raise FaceQualityError(
                f"template face {target.number} is too small to redraw ({target.face.width:.0f}x"
                f"{target.face.height:.0f} px; the minimum is {min_face_px:.0f} px)", path=path,
                hint="use a larger or higher-resolution template, or lower the minimum (min_face_px) and "
                     "expect a blurry face", setting="min_face_px")
    return chosen
