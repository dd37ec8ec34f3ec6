"""Control maps drawn from the template crop, offline, with OpenCV only.

* Face landmarks in OpenPose's face format (white dots on black, what ``control_v11p_sd15_openpose``
  was trained on with ``include_face``): either the 5 detector landmarks, or - with
  ``face_points="dlib68"`` - OpenPose's 70 points (the 68-point iBUG layout from dlib's predictor,
  plus the two pupils). controlnet_aux is not used: it imports torchvision at import time.
* Canny edges (100 / 200 as released) with the inner face zeroed, so the old identity's features
  are not copied while hair, ears and background edges stay where they are.
"""
from __future__ import annotations

import cv2
import numpy as np

from facefact.errors import ConfigError
from facefact.template.settings import FACE_POINTS



def face_pose_map(points: np.ndarray, size: int) -> np.ndarray:
    """OpenPose-style face map, ``size x size x 3`` uint8: a white dot per point (radius 3 at 512,
    as controlnet_aux draws them); points outside the canvas are left out, as OpenPose does."""
    canvas = np.zeros((size, size, 3), np.uint8)
    radius = max(1, int(round(3 * size / 512)))
    for x, y in np.asarray(points, np.float64).reshape(-1, 2):
        if 0 <= x < size and 0 <= y < size:
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (255, 255, 255), thickness=-1)
    return canvas


def canny_map(rgb: np.ndarray, face_region: np.ndarray | None = None, *, low: int = 100,
              high: int = 200) -> np.ndarray:
    """Canny edges of ``rgb`` as a 3-channel uint8 map, zero wherever ``face_region`` is set."""
    edges = cv2.Canny(rgb, low, high)
    if face_region is not None:
        edges[face_region > 0] = 0
    return np.ascontiguousarray(np.repeat(edges[:, :, None], 3, axis=2))


class Dlib68:
    """dlib's 68-point predictor inside a given face box; the model ships with face-recognition-models
    (already installed for facefact.faces). Its training data (iBUG 300-W) is licensed for
    non-commercial use only, so it is used only when asked for."""

    def __init__(self):
        import dlib  # dlib-bin, a facefact dependency

        from facefact.faces import model_files

        self._dlib = dlib
        self._model = dlib.shape_predictor(str(model_files.dlib_shape68_path()))

    def __call__(self, rgb: np.ndarray, bbox) -> np.ndarray:
        x1, y1, x2, y2 = (int(round(v)) for v in bbox)
        shape = self._model(np.ascontiguousarray(rgb), self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


def openpose_face_points(points68: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """OpenPose's 70 face points: the 68 iBUG points, then the pupils (the 5-point eye centres)."""
    return np.vstack([np.asarray(points68, np.float64).reshape(68, 2),
                      np.asarray(landmarks5, np.float64).reshape(5, 2)[:2]])


def check_face_points(name: str) -> str:
    if name not in FACE_POINTS:
        raise ConfigError(f"unknown face landmark set '{name}'", hint=f"choose one of: {', '.join(FACE_POINTS)}")
    return name
