"""Body pose from a photo (MediaPipe, optional) as an OpenPose map: the keypoints land on the person."""
from __future__ import annotations

import numpy as np
import pytest

from facefact.faces import FaceAnalysis


@pytest.fixture(scope="module")
def mediapipe():
    return pytest.importorskip("mediapipe", reason="the mediapipe extra is not installed")


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_keypoints_land_on_the_person(mediapipe, photo, request):
    from facefact.faces.pose import body_pose, draw_openpose

    rgb = request.getfixturevalue(photo)
    pose = body_pose(rgb)
    face = FaceAnalysis().get_one(rgb)
    x1, y1, x2, y2 = face.bbox
    nose, neck, right, left = pose.keypoints[[0, 1, 2, 5]]
    assert x1 <= nose[0] <= x2 and y1 <= nose[1] <= y2          # the nose is in the face box
    assert neck[1] > y2 - 0.2 * (y2 - y1)                        # the neck below the face
    assert right[1] > y1 and left[1] > y1 and right[0] < left[0]  # shoulders below the brow, person's right on the left
    drawn = draw_openpose(pose)
    assert drawn.shape == rgb.shape and drawn.dtype == np.uint8 and drawn.any()
    assert tuple(drawn[int(nose[1]), int(nose[0])]) == (255, 0, 0)  # OpenPose's nose colour at the nose


def test_a_photo_without_a_person_is_a_clear_error(mediapipe):
    from facefact.errors import FaceError
    from facefact.faces.pose import body_pose

    with pytest.raises(FaceError, match="no person's pose found"):
        body_pose(np.full((256, 256, 3), 127, np.uint8))


def test_without_mediapipe_the_error_says_how_to_install(monkeypatch):
    import importlib.util

    from facefact.errors import ConfigError
    from facefact.faces import pose

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mediapipe" else real(name, *a))
    with pytest.raises(ConfigError, match="needs MediaPipe") as caught:
        pose.body_pose(np.zeros((64, 64, 3), np.uint8))
    assert "--no-deps" in caught.value.hint
