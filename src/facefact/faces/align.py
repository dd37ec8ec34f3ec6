"""Similarity alignment to the ArcFace 112x112 template and context crops.

The FACT encoder (and SFace) were trained on faces warped onto this template, so the
transform must be the same kind: rotation + uniform scale + translation, fitted by least
squares to all five points (Umeyama 1991, closed form) - a robust estimator such as
``cv2.estimateAffinePartial2D(method=LMEDS)`` would ignore some points and differ from training.
"""
from __future__ import annotations

import cv2
import numpy as np

# Spec section 1 (x, y) for a 112 x 112 crop.
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],   # eye, left in image
    [73.5318, 51.5014],   # eye, right in image
    [56.0252, 71.7366],   # nose tip
    [41.5493, 92.3655],   # mouth corner, left
    [70.7299, 92.2041],   # mouth corner, right
], dtype=np.float64)


def similarity_transform(src5: np.ndarray, dst5: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``2 x 3`` matrix ``M`` minimising ``sum |M [src;1] - dst|^2``."""
    src = np.asarray(src5, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst5, dtype=np.float64).reshape(-1, 2)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("degenerate landmarks: all points coincide")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection would fit better: forbid it
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(s) @ sign) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def template_for(size: int) -> np.ndarray:
    return ARCFACE_TEMPLATE * (size / 112.0)


def alignment_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    return similarity_transform(landmarks, template_for(size))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int, *, border: str = "black",
         interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp an image or mask with a 2x3 matrix into a ``size x size`` square (black or edge border)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5 and interpolation == cv2.INTER_LINEAR:
        # Bilinear sampling of a much larger image aliases (jagged hair, moire); average with
        # INTER_AREA first, then warp the smaller image with the matrix adjusted to match.
        factor = scale * 1.5
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        actual = np.array([small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]])
        # OpenCV samples pixel centres: x_small = (x + 0.5) * f - 0.5, so x = x_small / f
        # + (0.5 / f - 0.5) per axis; both the linear part and the offset must be carried over.
        linear = matrix[:, :2].copy()
        matrix = np.hstack([linear / actual, (matrix[:, 2] + linear @ (0.5 / actual - 0.5))[:, None]])
        image = small
    mode = cv2.BORDER_REPLICATE if border == "edge" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(image, matrix, (size, size), flags=interpolation, borderMode=mode, borderValue=0)


def context_matrix(bbox, *, scale: float = 1.5, size: int = 512) -> np.ndarray:
    """Axis-aligned square crop around the face box, ``scale`` x its longer side, resized to ``size``."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    side = max(x2 - x1, y2 - y1) * scale
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    k = size / side
    return np.array([[k, 0.0, size / 2.0 - k * cx], [0.0, k, size / 2.0 - k * cy]])
