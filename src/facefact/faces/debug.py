"""Overlay pictures for ``facefact faces inspect --debug-dir``: what the detector and masks saw."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facefact.faces.numbering import NumberedFace, largest
from facefact.faces.types import FaceMasks

_LANDMARK_COLOURS = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255)]  # RGB


def overlay(rgb: np.ndarray, faces: list[NumberedFace], masks: FaceMasks | None) -> np.ndarray:
    """Each face boxed (the largest, the one used, in red) and labelled with its number, as
    `--face PHOTO#N` and the template mode count them, and its detection score."""
    out = rgb.copy()
    if masks is not None:  # tint head green, face a little more; dim the rest
        head = masks.head[:, :, None]
        out = (out * (0.45 + 0.55 * head) + np.array([0, 60, 0]) * head * 0.5).clip(0, 255).astype(np.uint8)
        contours, _ = cv2.findContours((masks.face > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 0), 1)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    used = largest(faces).number if faces else None
    for numbered in faces:
        face = numbered.face
        x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
        cv2.rectangle(out, (x1, y1), (x2, y2), (255, 64, 64) if numbered.number == used else (255, 200, 0), thick)
        cv2.putText(out, f"{numbered.number}: {face.score:.2f}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (255, 255, 255), thick)
        for (x, y), colour in zip(face.landmarks, _LANDMARK_COLOURS):
            cv2.circle(out, (int(round(x)), int(round(y))), 2 * thick, colour, -1)
    return out


def write_debug_images(folder: Path, stem: str, rgb: np.ndarray, faces: list[NumberedFace], masks: FaceMasks | None,
                       aligned: np.ndarray | None, condition: np.ndarray | None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, image: np.ndarray) -> None:
        path = folder / f"{stem}_{name}.png"
        bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(path), bgr)
        written.append(path)

    save("overlay", overlay(rgb, faces, masks))
    if masks is not None:
        save("head_mask", (masks.head * 255).astype(np.uint8))
        save("face_mask", (masks.face * 255).astype(np.uint8))
    if aligned is not None:
        save("aligned", aligned)
    if condition is not None:
        save("fact_condition", condition)
    return written
