"""The faces of a template photo: found, numbered as everywhere (from 1, left to right), chosen as targets."""
from __future__ import annotations

import numpy as np

from facefact.errors import ConfigError, FaceQualityError, NoFaceError
from facefact.faces.numbering import NumberedFace, by_number, largest, listing, number_faces, numbers_text


# The template's faces are the photo's faces numbered as everywhere else (faces/numbering.py).
TemplateFace = NumberedFace


def find_faces(analysis, image: np.ndarray, *, max_faces: int | None = None) -> list[TemplateFace]:
    """The ``max_faces`` largest faces (all when None), each with its number among all the faces
    (from 1, left to right)."""
    return number_faces(analysis.get(image), keep_largest=max_faces)


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
            if not isinstance(number, (int, np.integer)) or by_number(faces, int(number)) is None:
                raise ConfigError(
                    f"target face {number} does not exist: the template has {len(faces)} "
                    f"face{'s' if len(faces) != 1 else ''}, {numbers_text(faces)} "
                    f"({listing(faces)})", path=path, hint="pick a number from this list (`facefact template --list-faces` shows it)",
                    setting="target")
            if number in seen:
                raise ConfigError(f"target face {number} is given more than once", path=path,
                                  hint="give each template face one identity; several photos of one person "
                                       "go into one list for that face")
            seen.add(int(number))
        chosen = [by_number(faces, int(n)) for n in numbers]
    for target in chosen:
        if target.size_px < min_face_px:
            raise FaceQualityError(
                f"template face {target.number} is too small to redraw ({target.face.width:.0f}x"
                f"{target.face.height:.0f} px; the minimum is {min_face_px:.0f} px)", path=path,
                hint="use a larger or higher-resolution template, or lower the minimum (min_face_px) and "
                     "expect a blurry face", setting="min_face_px")
    return chosen
