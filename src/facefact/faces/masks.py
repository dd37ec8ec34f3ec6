"""Face and head masks at image resolution, from what installs everywhere (OpenCV).

* face: an ellipse fitted to the detector box and turned with the eye line.
* head (face + hair): GrabCut seeded by the detected face. The face ellipse is certain
  foreground, a head-shaped prior around it (hair above and at the sides) probable foreground,
  the neck/body below the chin and everything far outside the prior certain background. GrabCut
  runs on the head region shrunk to ~160 px, so it costs a few ms at any photo size. We then keep
  the largest blob, fill its holes, add the face and dilate a little (spec section 1).
* mediapipe (only if installed, ``pip install facefact[mediapipe]``): the same head prior
  intersected with MediaPipe's person segmentation.
"""
from __future__ import annotations

import importlib.util
import math

import cv2
import numpy as np

from facefact.errors import ConfigError
from facefact.faces.types import Face, FaceMasks

MASK_METHODS = ("grabcut", "ellipse", "mediapipe")
_GRABCUT_SIDE = 160  # working resolution of GrabCut: enough for a head outline, ~5-15 ms


def _ellipse(shape, center, axes, angle_deg) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.ellipse(mask, (round(center[0]), round(center[1])), (max(1, round(axes[0])), max(1, round(axes[1]))),
                angle_deg, 0, 360, 1, thickness=-1)
    return mask


def _face_geometry(face: Face):
    x1, y1, x2, y2 = face.bbox
    w, h = x2 - x1, y2 - y1
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0, w, h, face.quality.roll


def face_mask(shape, face: Face, *, shrink: float = 1.0) -> np.ndarray:
    cx, cy, w, h, roll = _face_geometry(face)
    return _ellipse(shape, (cx, cy), (0.5 * w * shrink, 0.55 * h * shrink), roll)


def head_prior(shape, face: Face, *, grow: float = 1.0) -> np.ndarray:
    """Where a head can be: wider than the face and reaching well above it for hair."""
    cx, cy, w, h, roll = _face_geometry(face)
    up = np.array([math.sin(math.radians(roll)), -math.cos(math.radians(roll))])  # head 'up' in the image
    center = np.array([cx, cy]) + up * 0.22 * h
    return _ellipse(shape, center, (0.85 * w * grow, 0.85 * h * grow), roll)


def _below_chin(shape, face: Face) -> np.ndarray:
    """1 for pixels beyond the chin line (neck, shoulders): never part of the head."""
    cx, cy, w, h, roll = _face_geometry(face)
    t = math.radians(roll)
    down = np.array([-math.sin(t), math.cos(t)])
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    along = (xs - cx) * down[0] + (ys - cy) * down[1]
    return (along > 0.6 * h).astype(np.uint8)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros(mask.shape, np.uint8)
    if contours:
        cv2.drawContours(out, [max(contours, key=cv2.contourArea)], -1, 1, thickness=-1)  # also fills holes
    return out


def _finish(head: np.ndarray, face: np.ndarray, face_obj: Face) -> np.ndarray:
    head = _largest_blob(np.maximum(head, face))
    radius = max(1, round(0.04 * min(face_obj.width, face_obj.height)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(head, kernel)


def _roi(shape, face: Face):
    cx, cy, w, h, _ = _face_geometry(face)
    side = 1.4 * max(w, h)
    x1, y1 = max(0, int(cx - side)), max(0, int(cy - side * 1.15))
    x2, y2 = min(shape[1], int(math.ceil(cx + side))), min(shape[0], int(math.ceil(cy + side)))
    return x1, y1, x2, y2


def _grabcut_head(rgb: np.ndarray, face: Face, face_m: np.ndarray) -> np.ndarray | None:
    x1, y1, x2, y2 = _roi(rgb.shape, face)
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    k = min(1.0, _GRABCUT_SIDE / max(x2 - x1, y2 - y1))
    small = cv2.resize(rgb[y1:y2, x1:x2], (max(2, round((x2 - x1) * k)), max(2, round((y2 - y1) * k))),
                       interpolation=cv2.INTER_AREA)
    # Express the face in ROI-small coordinates to draw the seeds there.
    sx, sy = small.shape[1] / (x2 - x1), small.shape[0] / (y2 - y1)
    bx1, by1, bx2, by2 = face.bbox
    local = Face(bbox=((bx1 - x1) * sx, (by1 - y1) * sy, (bx2 - x1) * sx, (by2 - y1) * sy), score=face.score,
                 landmarks=face.landmarks, quality=face.quality)
    seeds = np.full(small.shape[:2], cv2.GC_BGD, np.uint8)
    seeds[head_prior(small.shape, local, grow=1.25) > 0] = cv2.GC_PR_BGD
    seeds[head_prior(small.shape, local) > 0] = cv2.GC_PR_FGD
    seeds[_below_chin(small.shape, local) > 0] = cv2.GC_BGD
    seeds[face_mask(small.shape, local, shrink=0.8) > 0] = cv2.GC_FGD
    present = set(np.unique(seeds).tolist())
    if not ({cv2.GC_BGD, cv2.GC_PR_BGD} & present) or not ({cv2.GC_FGD, cv2.GC_PR_FGD} & present):
        return None  # GrabCut needs both classes; a face filling the whole photo has no background
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        # GrabCut seeds its colour models with k-means on OpenCV's global RNG, so the same photo would
        # get a slightly different mask on every call; a fixed seed makes the mask a function of the photo.
        cv2.setRNGSeed(0)
        cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), seeds, None, bgd, fgd, 3, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None  # e.g. a flat colour region: GMMs cannot be fitted; caller falls back
    fg = np.isin(seeds, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    full = np.zeros(rgb.shape[:2], np.uint8)
    full[y1:y2, x1:x2] = cv2.resize(fg, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    return full


def _mediapipe_person(rgb: np.ndarray) -> np.ndarray:
    if importlib.util.find_spec("mediapipe") is None:
        raise ConfigError("mask method 'mediapipe' needs the mediapipe package, which is not installed",
                          hint="pip install 'facefact[mediapipe]', or use the default 'grabcut' masks")
    import mediapipe as mp  # optional extra; legacy solutions API bundles its model in the wheel

    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        result = segmenter.process(rgb)
    return (result.segmentation_mask > 0.5).astype(np.uint8)


def compute_masks(rgb: np.ndarray, face: Face, *, method: str = "grabcut") -> FaceMasks:
    if method not in MASK_METHODS:
        raise ConfigError(f"unknown mask method '{method}'", hint=f"choose one of: {', '.join(MASK_METHODS)}")
    face_m = face_mask(rgb.shape, face)
    head, used = None, method
    if method == "grabcut":
        head = _grabcut_head(rgb, face, face_m)
        used = "grabcut+landmarks"
    elif method == "mediapipe":
        head = head_prior(rgb.shape, face) * _mediapipe_person(rgb) * (1 - _below_chin(rgb.shape, face))
        used = "mediapipe-selfie+landmarks"
    if head is None:  # 'ellipse' asked for, or GrabCut impossible on this photo
        head = head_prior(rgb.shape, face) * (1 - _below_chin(rgb.shape, face))
        used = "landmarks-ellipse" if method == "ellipse" else "landmarks-ellipse (grabcut failed)"
    return FaceMasks(face=face_m.astype(np.float32), head=_finish(head, face_m, face).astype(np.float32),
                     method=used)
