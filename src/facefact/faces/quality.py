"""Per-face quality measures and the checks that refuse unusable faces with a clear reason."""
from __future__ import annotations

import math

import cv2
import numpy as np

from facefact.errors import FaceQualityError
from facefact.faces.align import alignment_matrix, transform_points
from facefact.faces.types import Face, FaceQuality, QualityThresholds

_SHARPNESS_SIDE = 128  # faces are resized to this before measuring, so sharpness ignores face size


def roll_degrees(landmarks: np.ndarray) -> float:
    """Angle of the eye line; 0 for level eyes, > 0 when the right-in-image eye is lower."""
    (lx, ly), (rx, ry) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def yaw_degrees(landmarks: np.ndarray) -> float:
    """Head yaw from where the nose tip sits between the eyes, after undoing roll.

    Model: eyes at +-e on a plane, nose tip ~e in front of it (average adult proportions), so
    under yaw t the nose moves off the eye midpoint by e*sin t while the eye distance shrinks to
    2e*cos t: offset / eye_distance = tan(t) / 2. Frontal = 0; nose over one eye ~ 45 degrees.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    angle = -math.radians(roll_degrees(pts))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    p = pts @ rot.T
    eye_dist = abs(p[1, 0] - p[0, 0])
    mid = (p[0, 0] + p[1, 0]) / 2.0
    if eye_dist < 1e-6:
        return 90.0
    offset = p[2, 0] - mid
    return math.degrees(math.atan2(2.0 * offset, eye_dist))


def sharpness(gray: np.ndarray, bbox) -> float:
    """Variance of the Laplacian of the face crop at <= 128 px, over the crop's grey variance."""
    h, w = gray.shape[:2]
    x1, y1, x2, y2 = bbox
    x1, y1 = max(int(math.floor(x1)), 0), max(int(math.floor(y1)), 0)
    x2, y2 = min(int(math.ceil(x2)), w), min(int(math.ceil(y2)), h)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return 0.0
    crop = gray[y1:y2, x1:x2]
    # Shrink big faces to a common size; never enlarge small ones (upsampling would read as blur,
    # and small faces are handled by the size check).
    side = min(_SHARPNESS_SIDE, crop.shape[0], crop.shape[1])
    crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    contrast = float(crop.var())
    if contrast < 1e-6:
        return 0.0
    return float(cv2.Laplacian(crop, cv2.CV_32F).var()) / contrast


# Where the whole face (forehead to chin) lies in the 112 px ArcFace crop, measured on frontal faces.
_FACE_REGION_IN_TEMPLATE = (20.0, 16.0, 92.0, 108.0)


def cut_off_fraction(bbox, landmarks: np.ndarray, image_shape) -> float:
    """Fraction of the face that lies outside the image.

    Detectors shrink their box to the visible part of a cut face, so the box alone underestimates
    the loss; the landmarks tell where the whole face should be. We map a grid over the face
    region of the ArcFace template back into the photo and count the points that fall outside,
    and take the larger of that and the box's own outside fraction.
    """
    h, w = image_shape[:2]
    x1, y1, x2, y2 = bbox
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    inside = max(min(x2, w) - max(x1, 0.0), 0.0) * max(min(y2, h) - max(y1, 0.0), 0.0)
    box_fraction = 1.0 - inside / area if area > 0 else 1.0
    try:
        to_image = cv2.invertAffineTransform(alignment_matrix(landmarks, 112))
    except ValueError:  # degenerate landmarks
        return float(box_fraction)
    rx1, ry1, rx2, ry2 = _FACE_REGION_IN_TEMPLATE
    gx, gy = np.meshgrid(np.linspace(rx1, rx2, 16), np.linspace(ry1, ry2, 16))
    pts = transform_points(np.stack([gx.ravel(), gy.ravel()], axis=1), to_image)
    outside = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
    return float(max(box_fraction, outside.mean()))


def measure_quality(gray: np.ndarray, bbox, landmarks: np.ndarray, score: float) -> FaceQuality:
    return FaceQuality(
        size_px=float(min(bbox[2] - bbox[0], bbox[3] - bbox[1])),
        sharpness=sharpness(gray, bbox),
        yaw=yaw_degrees(landmarks),
        roll=roll_degrees(landmarks),
        score=float(score),
        cut_off=cut_off_fraction(bbox, landmarks, gray.shape),
    )


def quality_problems(quality: FaceQuality, limits: QualityThresholds) -> list[tuple[str, str]]:
    """Every limit ``quality`` breaks, as (message, hint) pairs, most fundamental first."""
    q, lim = quality, limits
    problems = []
    if q.size_px < lim.min_size_px:
        problems.append((f"the face is too small ({q.size_px:.0f} px, minimum {lim.min_size_px:.0f} px)",
                         "use a photo where the face is larger (crop closer or use the original, "
                         "not a thumbnail)"))
    if q.cut_off > lim.max_cut_off:
        problems.append((f"the face is cut off by the image border ({q.cut_off:.0%} of it is outside, "
                         f"maximum {lim.max_cut_off:.0%})", "use a photo that shows the whole face"))
    if abs(q.yaw) > lim.max_yaw:
        problems.append((f"the head is turned too far to the side (yaw {q.yaw:+.0f} degrees, maximum "
                         f"{lim.max_yaw:.0f})", "use a photo facing the camera"))
    if abs(q.roll) > lim.max_roll:
        problems.append((f"the head is tilted too far (roll {q.roll:+.0f} degrees, maximum "
                         f"{lim.max_roll:.0f})", "rotate the photo upright or use another one"))
    if q.sharpness < lim.min_sharpness:
        problems.append((f"the face is blurred (sharpness {q.sharpness:.3f}, minimum {lim.min_sharpness})",
                         "use a sharper photo (in focus, no motion blur, not heavily compressed)"))
    if q.score < lim.min_score:
        problems.append((f"the face detection is unsure (score {q.score:.2f}, minimum {lim.min_score})",
                         "use a clearer, well-lit photo of the face"))
    return problems


def check_quality(face: Face, limits: QualityThresholds, *, path: str | None = None) -> None:
    """Raise :class:`FaceQualityError` naming every problem of ``face``; return if it is usable."""
    problems = quality_problems(face.quality, limits)
    if problems:
        message = "; ".join(msg for msg, _ in problems)
        raise FaceQualityError(message, hint=problems[0][1], path=path)
