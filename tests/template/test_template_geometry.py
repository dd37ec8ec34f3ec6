"""Template mode without diffusion: faces, crop, masks, controls and paste-back, on real photos."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from facefact.errors import ConfigError, FaceQualityError, NoFaceError
from facefact.template import masks as M
from facefact.template.controls import canny_map, face_pose_map
from facefact.template.faces import choose_targets, find_faces
from facefact.template.geometry import SquareCrop, paste


# ---- faces ----------------------------------------------------------------------------------
def test_faces_numbered_left_to_right_default_target_is_largest(analysis, group, astronaut):
    faces = find_faces(analysis, group)
    assert [f.number for f in faces] == [1, 2]
    assert faces[0].bbox[2] <= astronaut.shape[1] < faces[1].bbox[0]  # 1 = astronaut (left half)
    assert faces[1].face.area > faces[0].face.area
    assert [t.number for t in choose_targets(faces, None, min_face_px=48)] == [2]
    assert [t.number for t in choose_targets(faces, [2, 1], min_face_px=48)] == [2, 1]
    kept = find_faces(analysis, group, max_faces=1)  # the larger face keeps its number among all
    assert len(kept) == 1 and kept[0].bbox == faces[1].bbox and kept[0].number == 2
    assert [t.number for t in choose_targets(kept, [2], min_face_px=48)] == [2]
    with pytest.raises(ConfigError, match=r"target face 1 does not exist: the template has 1 face, numbered 2 "):
        choose_targets(kept, [1], min_face_px=48)


def test_face_choice_errors(analysis, group):
    faces = find_faces(analysis, group)
    with pytest.raises(ConfigError, match=r"has 2 faces.*face 1: \d+x\d+ px"):
        choose_targets(faces, [3], min_face_px=48, path="t.jpg")
    with pytest.raises(ConfigError, match="more than once"):
        choose_targets(faces, [1, 1], min_face_px=48)
    with pytest.raises(FaceQualityError, match=r"too small.*minimum is 500 px"):
        choose_targets(faces, [1], min_face_px=500)
    with pytest.raises(NoFaceError, match="no face found in the template") as err:
        choose_targets(find_faces(analysis, np.full((200, 200, 3), 90, np.uint8)), None, min_face_px=48,
                       path="plain.png")
    assert "plain.png" in str(err.value)


# ---- crop -----------------------------------------------------------------------------------
def test_square_crop_release_rule_and_zero_padding():
    crop = SquareCrop.around((10.0, 20.0, 80.0, 120.0), size=512)  # 70 x 100 box near the corner
    assert crop.side == 2 * int(100 / 0.7 / 2) == 142
    assert crop.x0 == 45 - 71 and crop.y0 == 70 - 71
    image = np.random.default_rng(0).integers(1, 256, (300, 400, 3), dtype=np.uint8)
    region = crop.cut(image)
    assert region.shape == (142, 142, 3)
    assert not region[:, :-crop.x0].any() and not region[:-crop.y0, :].any()  # outside: zeros
    assert np.array_equal(region[-crop.y0:, -crop.x0:], image[:crop.y0 + 142, :crop.x0 + 142])
    assert crop.crop(image).shape == (512, 512, 3)
    pts = np.array([[10.0, 20.0], [80.0, 120.0], [45.5, 70.25]])
    assert np.allclose(crop.to_template(crop.to_crop(pts)), pts)
    x1, y1, x2, y2 = crop.box_to_crop((10.0, 20.0, 80.0, 120.0))
    assert math.isclose((y2 - y1) / 512, 100 / 142)  # the longer side fills ~70 % of the crop


def test_paste_keeps_every_pixel_outside_the_weight(astronaut):
    crop = SquareCrop(100, 40, 240, 128)
    rng = np.random.default_rng(1)
    result = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    rect = crop.inside(astronaut.shape)
    weight = np.zeros((rect[3] - rect[1], rect[2] - rect[0]), np.float32)
    weight[50:150, 60:120] = rng.random((100, 60), dtype=np.float32)
    before = astronaut.copy()
    out = paste(astronaut, crop, result, weight)
    assert np.array_equal(astronaut, before)  # the template is not modified
    full = np.zeros(astronaut.shape[:2], np.float32)
    full[rect[1]:rect[3], rect[0]:rect[2]] = weight
    assert np.array_equal(out[full == 0], astronaut[full == 0])
    assert (out[full > 0.5] != astronaut[full > 0.5]).any()


def test_round_trip_of_an_unchanged_crop(astronaut):
    exact = SquareCrop(150, 30, 256, 256)  # side == size: no resampling, the round trip is exact
    ones = np.ones((256, 256), np.float32)
    assert np.array_equal(paste(astronaut, exact, exact.crop(astronaut), ones), astronaut)
    resized = SquareCrop(140, 20, 180, 512)  # upscaled crop: back through two resamplings
    rect = resized.inside(astronaut.shape)
    w = np.ones((rect[3] - rect[1], rect[2] - rect[0]), np.float32)
    out = paste(astronaut, resized, resized.crop(astronaut), w)
    assert np.abs(out.astype(int) - astronaut.astype(int)).mean() < 1.5


# ---- masks ----------------------------------------------------------------------------------
def _box_of(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_grow_uses_the_release_kernel():
    face = np.zeros((200, 200), np.uint8)
    face[50:150, 60:140] = 1  # area 8000, sqrt ~ 89.4
    side = int(math.sqrt(8000) * 0.1)  # 8
    grown = M.grow(face, 0.1)
    x1, y1, x2, y2 = _box_of(grown)
    assert (x2 - x1 + 1) - 80 == side - 1 and (y2 - y1 + 1) - 100 == side - 1
    assert np.array_equal(M.grow(face, 0.01), face)  # kernel side 0: unchanged


def test_inpaint_mask_grows_more_below_the_eyes_only_into_the_new_face():
    face = np.zeros((300, 300), np.uint8)
    cv2.ellipse(face, (150, 150), (60, 80), 0, 0, 360, 1, -1)
    eye_y = 130.0
    first = M.grow(face, 0.04)
    no_new = M.inpaint_mask(face, eye_y, None)
    assert np.array_equal(no_new, first)  # nowhere to grow into
    new_face = np.zeros_like(face)
    cv2.ellipse(new_face, (150, 170), (75, 95), 0, 0, 360, 1, -1)  # a larger, lower chin
    mask = M.inpaint_mask(face, eye_y, new_face)
    assert np.array_equal(mask[:130], first[:130])  # above the eye line: the small growth
    second = M.grow(first, 0.1)
    below = mask[130:]
    assert (below >= first[130:]).all() and (below <= second[130:]).all()
    assert (below <= np.maximum(first, new_face)[130:]).all()
    assert below.sum() > first[130:].sum()  # the chin did grow
    canny_region = M.canny_face_mask(face, eye_y)
    assert np.array_equal(canny_region[:130], face[:130]) and canny_region[130:].sum() > face[130:].sum()


def test_paste_weight_protects_other_faces_and_stops_near_the_edit(astronaut):
    crop = SquareCrop(60, 0, 400, 512)
    edited = np.zeros((512, 512), np.uint8)
    edited[150:350, 180:330] = 1
    face_box = (200.0, 100.0, 280.0, 200.0)
    other = (90.0, 20.0, 160.0, 90.0)
    weight = M.paste_weight(crop, astronaut.shape, edited, face_box, [other])
    rect = crop.inside(astronaut.shape)
    full = np.zeros(astronaut.shape[:2], np.float32)
    full[rect[1]:rect[3], rect[0]:rect[2]] = weight
    assert not full[20:90, 90:160].any()  # the other face: weight exactly 0
    edited_t = np.zeros(astronaut.shape[:2], bool)
    edited_t[rect[1]:rect[3], rect[0]:rect[2]] = crop.uncrop(edited.astype(np.float32), astronaut.shape,
                                                             interpolation=cv2.INTER_NEAREST) > 0
    inner_face = np.zeros_like(edited_t)
    inner_face[110:190, 210:270] = True
    assert (full[inner_face & edited_t] == 1).all()
    far = cv2.dilate(edited_t.astype(np.uint8), np.ones((61, 61), np.uint8)) == 0
    assert not full[far].any()


def test_crop_feather_window_equals_the_whole_image_computation():
    shape = (300, 260)
    rect, face_box, other, k = (20, 0, 220, 200), (80, 60, 150, 140), (30, 10, 60, 40), 6
    window = M.crop_feather(shape, rect, face_box, [other], k)
    region = np.zeros(shape, np.float32)  # the release's way: a template-size mask
    region[0:200, 20:220] = 1
    region[10:40, 30:60] = 0
    erode, blur = M.feather_kernels(k)
    soft = cv2.GaussianBlur(cv2.erode(region, np.ones((erode, erode), np.uint8)), (blur, blur), 0)
    soft[60:140, 80:150] = 1
    soft *= region
    assert np.allclose(window, soft[0:200, 20:220], atol=1e-6)


# ---- controls -------------------------------------------------------------------------------
def test_face_pose_map_dots_and_masked_canny(astronaut):
    points = np.array([[10, 10], [40, 12], [25, 30], [-5, 3], [70, 70]], float)
    pose = face_pose_map(points, 64)
    assert pose.shape == (64, 64, 3) and pose.dtype == np.uint8
    n, _ = cv2.connectedComponents(pose[:, :, 0])
    assert n - 1 == 3  # points off the canvas are left out
    assert (pose[10, 10] == 255).all() and (pose[30, 25] == 255).all()
    region = np.zeros(astronaut.shape[:2], np.uint8)
    region[50:200, 150:300] = 1
    edges = canny_map(astronaut, region)
    assert edges.shape == astronaut.shape and not edges[region > 0].any()
    assert np.array_equal(edges[:, :, 0][region == 0], cv2.Canny(astronaut, 100, 200)[region == 0])
