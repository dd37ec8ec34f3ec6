"""Reference photos checked and chosen: a face of a group photo by number, the quality checks a
user may overrule, and photos that do not look like one person."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facefact.errors import FaceQualityError


def split_face_number(source):
    """"group.jpg#2" -> ("group.jpg", 2) when group.jpg#2 is not itself a file; else (source, None)."""
    if not isinstance(source, (str, Path)):
        return source, None
    text = str(source)
    path, hash_sign, number = text.rpartition("#")
    if hash_sign and number.isdigit() and not Path(text).exists():
        return path, int(number)
    return source, None


def usable_face(analysis, image, name, number, check_quality: bool, notes, index: int):
    """The face to use: the largest (or #number), quality-checked unless the user overrules it."""
    face = analysis.get_one(image, strict=False, path=name, number=number, check=False)
    try:
        analysis.check_quality(face, path=name)
    except FaceQualityError as err:
        if check_quality:
            raise
        if notes is not None:
            notes.append(f"reference photo {index + 1}: used although {err.message}")
    return face


def outlier_notes(embeddings: list[np.ndarray], threshold: float, embedder: str) -> list[str]:
    """Notes when the photos do not look like one person: for two, that they may be two people;
    for more, the photo least like the others when it is below the same-person threshold."""
    matrix = np.stack(embeddings) @ np.stack(embeddings).T
    n = len(embeddings)
    if n == 2:
        similarity = float(matrix[0, 1])
        if similarity >= threshold:
            return []
        return [f"reference photos 1 and 2 may not show the same person (identity similarity {similarity:.2f}, "
                f"below {embedder}'s same-person threshold {threshold:.2f})"]
    mean_to_others = (matrix.sum(1) - np.diag(matrix)) / (n - 1)
    odd = int(np.argmin(mean_to_others))
    if mean_to_others[odd] >= threshold:
        return []
    return [f"reference photo {odd + 1} may not show the same person as the others (mean identity similarity "
            f"{mean_to_others[odd]:.2f}, below {embedder}'s same-person threshold {threshold:.2f})"]
