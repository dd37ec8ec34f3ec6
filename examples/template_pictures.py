"""Draw the pictures of docs/template.md from the public-domain sample photos (no diffusion, no model):
the numbered faces of a two-person photo, and for each face its crop, inpaint mask, new-face
region, face-landmark map and face-masked Canny map.

    PYTHONPATH=src python3 examples/template_pictures.py docs/images
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import matplotlib.cbook as cbook
import numpy as np
from PIL import Image
from skimage import data

from facefact.faces import FaceAnalysis, load_image
from facefact.template.debug import faces_overlay
from facefact.template.faces import find_faces
from facefact.template.prepare import Identity, plan_target
from facefact.template.settings import TemplateSettings

TILE = 256


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    analysis = FaceAnalysis()
    astronaut = np.ascontiguousarray(data.astronaut())
    hopper = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    right = cv2.resize(hopper, (round(hopper.shape[1] * 512 / hopper.shape[0]), 512), interpolation=cv2.INTER_AREA)
    group = np.ascontiguousarray(np.concatenate([astronaut, right], axis=1))
    faces = find_faces(analysis, group)
    people = {1: hopper, 2: astronaut}  # each face gets the other person
    plans = [plan_target(group, faces, face, Identity([people[face.number]], [analysis.get_one(people[face.number])]),
                         TemplateSettings()) for face in faces]
    overlay = faces_overlay(group, faces, faces, plans)
    Image.fromarray(cv2.resize(overlay, (overlay.shape[1] // 2, overlay.shape[0] // 2),
                               interpolation=cv2.INTER_AREA)).save(folder / "template_faces.png", optimize=True)
    rows = []
    for plan in plans:
        tint = plan.image.copy()
        tint[plan.mask > 0] = (0.5 * tint[plan.mask > 0] + [0, 127, 0]).astype(np.uint8)
        outline = tint.copy()
        contours, _ = cv2.findContours(plan.new_face_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(outline, contours, -1, (255, 60, 60), 2)
        cv2.line(outline, (0, int(plan.eye_y)), (plan.image.shape[1], int(plan.eye_y)), (255, 255, 0), 1)
        tiles = [plan.image, outline, plan.controls["face_pose"], plan.controls["canny"]]
        rows.append(np.concatenate([cv2.resize(t, (TILE, TILE), interpolation=cv2.INTER_AREA) for t in tiles], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(folder / "template_maps.png", optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
