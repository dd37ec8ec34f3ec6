"""Pictures of what the template mode saw and made: numbered faces, crops, masks and control maps.

Written only when asked (``--debug-dir`` / ``--save-control``): they contain the template.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facefact.atomic import atomic_path, naming_failed_writes


def faces_overlay(rgb: np.ndarray, faces, targets=(), plans=()) -> np.ndarray:
    """The template with every kept face boxed and numbered (targets in red, others in yellow) and
    each target's crop square outlined."""
    out = rgb.copy()
    thick = max(1, round(max(rgb.shape[:2]) / 500))
    chosen = {t.number for t in targets}
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
        colour = (255, 40, 40) if face.number in chosen else (255, 210, 0)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        label = f"{face.number}: {face.face.width:.0f}x{face.face.height:.0f}"
        cv2.putText(out, label, (x1, max(14 * thick, y1 - 4 * thick)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thick,
                    colour, thick, cv2.LINE_AA)
    for plan in plans:
        c = plan.crop
        cv2.rectangle(out, (c.x0, c.y0), (c.x0 + c.side - 1, c.y0 + c.side - 1), (40, 200, 255), thick)
    return out


def save_png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, naming_failed_writes(path):
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def plan_images(plan) -> dict[str, np.ndarray]:
    """name -> picture, for one target: the crop, its masks and its control maps."""
    tint = plan.image.copy()
    tint[plan.mask > 0] = (0.5 * tint[plan.mask > 0] + [0, 127, 0]).astype(np.uint8)
    pictures = {"crop": plan.image, "inpaint_mask": plan.mask * 255, "mask_on_crop": tint,
                "new_face_mask": plan.new_face_mask * 255}
    pictures.update({f"control_{name}": image for name, image in plan.controls.items()})
    return pictures


def write_plan_images(folder: Path, stem: str, plans, *, only_controls: bool = False) -> list[Path]:
    written = []
    for plan in plans:
        for name, picture in plan_images(plan).items():
            if only_controls and not name.startswith("control_"):
                continue
            written.append(save_png(np.ascontiguousarray(picture.astype(np.uint8)),
                                    folder / f"{stem}_face{plan.target.number}_{name}.png"))
    return written
