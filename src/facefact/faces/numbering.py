"""The one numbering of a photo's faces: from 1, left to right (by the box's left edge, then its top).

Every place a user picks a face by number uses it: `faces inspect` (its table and overlay),
`generate --face PHOTO#N`, `template --target`, the server's `/v1/template/*` and both UI tabs.
A face keeps its number when smaller faces are dropped (`max_faces`), so a number means one face
of a photo wherever it is shown.
"""
from __future__ import annotations

from dataclasses import dataclass

from facefact.faces.types import Face


@dataclass(frozen=True)
class NumberedFace:
    """A face of a photo with its number (1-based, left to right)."""

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


def number_faces(faces: list[Face], *, keep_largest: int | None = None) -> list[NumberedFace]:
    """``faces`` numbered from 1, left to right; with ``keep_largest`` only that many of the largest
    are returned, each keeping the number it has among all the faces."""
    ordered = sorted(faces, key=lambda f: (f.bbox[0], f.bbox[1]))
    numbered = [NumberedFace(number=i + 1, face=f) for i, f in enumerate(ordered)]
    if keep_largest is not None:
        kept = sorted(numbered, key=lambda n: n.face.area, reverse=True)[:keep_largest]
        numbered = sorted(kept, key=lambda n: n.number)
    return numbered


def largest(faces: list[NumberedFace]) -> NumberedFace:
    return max(faces, key=lambda f: f.face.area)


def listing(faces: list[NumberedFace]) -> str:
    """'face 1: 90x114 px at (10, 20), score 0.93; face 2: ...' (or 'none')."""
    return "; ".join(f.describe() for f in faces) or "none"


def numbers_text(faces: list[NumberedFace]) -> str:
    """How the faces are numbered, for messages: 'numbered 1..3 from left to right'."""
    numbers = [f.number for f in faces]
    if numbers == list(range(1, len(numbers) + 1)):
        return f"numbered 1..{len(numbers)} from left to right"
    return f"numbered {', '.join(map(str, numbers))} from left to right"


def by_number(faces: list[NumberedFace], number) -> NumberedFace | None:
    """The face with this number, or None (also for a number that is not a whole number)."""
    if isinstance(number, bool):
        return None
    return next((f for f in faces if f.number == number), None)
