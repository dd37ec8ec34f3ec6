"""plan_target on real photos: the crop, the masks and the controls of one target face."""
from __future__ import annotations

import numpy as np
import pytest

from facefact.template.faces import find_faces
from facefact.template.prepare import Identity, plan_target, working_copy
from facefact.template.settings import TemplateSettings


@pytest.fixture(scope="module")
def hopper_identity(analysis, grace_hopper):
    return Identity(photos=[grace_hopper], faces=[analysis.get_one(grace_hopper)])


def test_plan_of_the_astronaut_face(analysis, group, hopper_identity):
    faces = find_faces(analysis, group)
    plan = plan_target(group, faces, faces[0], hopper_identity, TemplateSettings(crop_size=256))
    assert plan.image.shape == (256, 256, 3) and plan.mask.shape == (256, 256)
    assert set(plan.controls) == {"face_pose", "canny"}
    assert all(m.shape == (256, 256, 3) for m in plan.controls.values())
    x1, y1, x2, y2 = plan.face.bbox
    assert 0.6 < max(x2 - x1, y2 - y1) / 256 < 0.72  # face ~70 % of the crop
    # the mask covers the face and grows beyond it; the eye line lies inside the face box
    assert (plan.mask >= plan.face_mask).all() and plan.mask.sum() > plan.face_mask.sum()
    assert y1 < plan.eye_y < y2
    # the new person's landmarks land on the target face: eyes near the template's eyes
    assert np.abs(plan.face_points[:2] - plan.face.landmarks[:2]).max() < 0.1 * (x2 - x1)
    assert plan.protected == [faces[1].bbox]
    face_pose = plan.controls["face_pose"][:, :, 0]
    ys, xs = np.nonzero(face_pose)
    assert x1 <= xs.min() and xs.max() <= x2 and y1 <= ys.min() and ys.max() <= y2


def test_other_faces_are_blacked_out_in_the_crop_only(analysis, group, hopper_identity):
    faces = find_faces(analysis, group)
    before = group.copy()
    work = working_copy(group, [faces[1]], True)
    x1, y1, x2, y2 = (int(v) for v in faces[1].bbox)
    assert not work[y1 + 1:y2, x1 + 1:x2].any() and np.array_equal(group, before)
    wide = TemplateSettings(crop_size=256, face_fraction=0.1)  # a crop wide enough to hold face 2
    plan = plan_target(group, faces, faces[0], hopper_identity, wide)
    cx, cy = plan.crop.to_crop([[(x1 + x2) / 2, (y1 + y2) / 2]])[0]
    assert 0 <= cx < 256 and not plan.image[int(cy), int(cx)].any()


def test_dlib68_gives_openpose_face_points(analysis, group, hopper_identity):
    faces = find_faces(analysis, group)
    for source in ("face_photo", "template"):
        plan = plan_target(group, faces, faces[1], hopper_identity,
                           TemplateSettings(crop_size=256, face_points="dlib68", landmark_source=source))
        assert plan.face_points.shape == (70, 2)
        x1, y1, x2, y2 = plan.face.bbox
        pad = 0.15 * (x2 - x1)
        assert ((plan.face_points[:, 0] > x1 - pad) & (plan.face_points[:, 0] < x2 + pad)).all()
        assert ((plan.face_points[:, 1] > y1 - pad) & (plan.face_points[:, 1] < y2 + pad)).all()
        assert plan.new_face_mask.sum() > 0.5 * plan.face_mask.sum()
