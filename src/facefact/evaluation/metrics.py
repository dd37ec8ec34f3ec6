"""Metric arithmetic on plain numpy arrays: no models here, so every formula has a known-answer test.

Images are ``uint8 H x W x 3``; masks are float/bool ``H x W`` with 1 = "count this pixel".
Distances between images are in [0, 1] (fraction of the full 0-255 range), so they read the same at
any resolution and across runs.
"""
from __future__ import annotations

import itertools
import math

import cv2
import numpy as np

LOWRES_SIDE = 32  # the "feature" distance compares 32 x 32 area-averaged images: layout and colour, not noise


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def identity_similarity(embedding: np.ndarray, references: list[np.ndarray]) -> float:
    """Mean cosine similarity of an output face to each reference photo's face of the identity."""
    return float(np.mean([cosine(embedding, r) for r in references]))


def _as_float(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float32) / 255.0


def _resize_to(image: np.ndarray, shape) -> np.ndarray:
    if image.shape[:2] == tuple(shape[:2]):
        return image
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def pixel_distance(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference over the pixels where ``mask`` is set (all pixels without a mask).
    ``b`` is resized to ``a`` if their sizes differ. NaN when the mask is empty."""
    b = _resize_to(b, a.shape)
    diff = np.abs(_as_float(a) - _as_float(b)).mean(axis=2)
    if mask is None:
        return float(diff.mean())
    weight = np.asarray(mask, np.float32)
    total = float(weight.sum())
    return float((diff * weight).sum() / total) if total > 0 else math.nan


def lowres_distance(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, side: int = LOWRES_SIDE) -> float:
    """Mean absolute difference of ``side x side`` area-averaged images, over cells mostly inside ``mask``.

    Pixels outside the mask are zeroed and each cell is renormalised by its mask coverage, so a
    change inside the excluded region cannot leak into the cells next to it.
    """
    b = _resize_to(b, a.shape)
    weight = np.ones(a.shape[:2], np.float32) if mask is None else np.asarray(mask, np.float32)
    small_w = cv2.resize(weight, (side, side), interpolation=cv2.INTER_AREA)
    keep = small_w > 0.5
    if not keep.any():
        return math.nan
    shrink = [cv2.resize(_as_float(x) * weight[:, :, None], (side, side), interpolation=cv2.INTER_AREA)
              / np.maximum(small_w, 1e-6)[:, :, None] for x in (a, b)]
    return float(np.abs(shrink[0] - shrink[1]).mean(axis=2)[keep].mean())


def outside_face_drift(image: np.ndarray, control: np.ndarray, outside: np.ndarray) -> dict:
    """How much ``image`` differs from ``control`` (same prompt and seed, no face condition) outside the
    face (``outside`` = 1 there), and inside it for scale. FACT claims the first stays near 0."""
    inside = 1.0 - np.asarray(outside, np.float32)
    return {
        "drift_outside_px": pixel_distance(image, control, outside),
        "drift_outside_lowres": lowres_distance(image, control, outside),
        "drift_inside_px": pixel_distance(image, control, inside),
        "outside_fraction": float(np.asarray(outside, np.float32).mean()),
    }


def mean_pairwise(items: list, distance) -> float:
    """Mean of ``distance(a, b)`` over all unordered pairs; NaN with fewer than two items."""
    pairs = list(itertools.combinations(items, 2))
    if not pairs:
        return math.nan
    return float(np.mean([distance(a, b) for a, b in pairs]))


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and np.isfinite(v)]


def diversity(embeddings: list, yaws: list, rolls: list, expressions: list, images: list[np.ndarray]) -> dict:
    """Spread across seeds of one identity x prompt x method. Missing faces (None) are left out.

    identity: mean pairwise cosine distance of output embeddings (0 = the same face every time);
    pose/expression: mean pairwise absolute difference (degrees / ratio); images: mean pairwise
    pixel distance and 32 x 32 distance (a face pasted onto an identical picture scores ~0).
    """
    faces = [e for e in embeddings if e is not None]
    thumbs = [cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in images]
    return {
        # rounded: identical embeddings give 1 - cos ~ 1e-16 from float error, which should read as 0
        "div_identity": mean_pairwise(faces, lambda a, b: round(1.0 - cosine(a, b), 9)),
        "div_yaw": mean_pairwise(_finite(yaws), lambda a, b: abs(a - b)),
        "div_roll": mean_pairwise(_finite(rolls), lambda a, b: abs(a - b)),
        "div_expression": mean_pairwise(_finite(expressions), lambda a, b: abs(a - b)),
        "div_image_px": mean_pairwise(thumbs, pixel_distance),
        "div_image_lowres": mean_pairwise(images, lowres_distance),
        "n_seeds": len(images),
        "n_faces": len(faces),
    }


# -- expression from landmarks ------------------------------------------------------------------

def mouth_open_ratio(landmarks68: np.ndarray) -> float:
    """Inner-lip gap over mouth width from dlib's 68 points (0 closed, ~0.3+ open/laughing)."""
    p = np.asarray(landmarks68, np.float64)
    width = np.linalg.norm(p[54] - p[48])
    return float(np.linalg.norm(p[66] - p[62]) / width) if width > 0 else math.nan


def smile_ratio(landmarks5: np.ndarray) -> float:
    """Mouth width over eye distance from the 5 detector points: a smile widens the mouth (~0.8 neutral)."""
    p = np.asarray(landmarks5, np.float64)
    eyes = np.linalg.norm(p[1] - p[0])
    return float(np.linalg.norm(p[4] - p[3]) / eyes) if eyes > 0 else math.nan


# -- regions -----------------------------------------------------------------------------------

def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return np.asarray(mask, np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(np.asarray(mask > 0.5, np.uint8), kernel).astype(np.float32)


def box_mask(shape, bbox, grow: float = 1.25) -> np.ndarray:
    """1 inside ``bbox`` (x1, y1, x2, y2) grown by ``grow`` around its centre."""
    x1, y1, x2, y2 = bbox
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * grow / 2, (y2 - y1) * grow / 2
    mask = np.zeros(shape[:2], np.float32)
    mask[max(0, int(cy - hh)):max(0, int(math.ceil(cy + hh))), max(0, int(cx - hw)):max(0, int(math.ceil(cx + hw)))] = 1
    return mask


def default_face_box(shape) -> tuple[float, float, float, float]:
    """Where a portrait's face usually is (centre, upper half) when no detector found one."""
    h, w = shape[:2]
    return (0.3 * w, 0.15 * h, 0.7 * w, 0.65 * h)
