"""Alignment (least-squares similarity to the ArcFace template), context crops and masks."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from facefact.faces import ARCFACE_TEMPLATE, similarity_transform
from facefact.faces.align import transform_points


def test_similarity_transform_recovers_known_transform():
    angle, scale, shift = np.radians(23.0), 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE * 2.0 + 30.0
    dst = src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-7)


def test_similarity_transform_is_least_squares_and_never_reflects():
    rng = np.random.default_rng(0)
    src = ARCFACE_TEMPLATE + rng.normal(0, 3, ARCFACE_TEMPLATE.shape)
    matrix = similarity_transform(src, ARCFACE_TEMPLATE)
    a, b = matrix[0, 0], matrix[1, 0]
    assert matrix[1, 1] == pytest.approx(a) and matrix[0, 1] == pytest.approx(-b)  # rotation+scale only
    best = np.sum((transform_points(src, matrix) - ARCFACE_TEMPLATE) ** 2)
    for _ in range(50):  # any perturbed similarity fits worse
        p = rng.normal(0, 1e-3, 4)
        m = np.array([[a + p[0], -(b + p[1]), matrix[0, 2] + p[2]], [b + p[1], a + p[0], matrix[1, 2] + p[3]]])
        assert np.sum((transform_points(src, m) - ARCFACE_TEMPLATE) ** 2) >= best
    mirrored = ARCFACE_TEMPLATE * np.array([-1.0, 1.0])
    assert np.linalg.det(similarity_transform(mirrored, ARCFACE_TEMPLATE)[:, :2]) > 0


def test_exact_landmarks_land_on_template():
    rng = np.random.default_rng(1)
    for _ in range(5):
        angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 5)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        marks = ARCFACE_TEMPLATE @ rot.T + rng.uniform(-200, 200, 2)
        mapped = transform_points(marks, similarity_transform(marks, ARCFACE_TEMPLATE))
        assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 1e-6


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_real_landmarks_land_near_template(fa, photo, request):
    # A real face is not the mean template (a smile widens the mouth), so the least-squares fit
    # leaves residuals: measured 1.7-4.5 px per point on these photos, RMS ~3.5 px. The eyes,
    # which drive scale and rotation, are checked tighter than the mouth.
    image = request.getfixturevalue(photo)
    face = fa.get_one(image)
    residual = np.linalg.norm(transform_points(face.landmarks, fa.alignment_matrix(face)) - ARCFACE_TEMPLATE, axis=1)
    assert np.sqrt(np.mean(residual ** 2)) < 4.0
    assert residual[:2].max() < 4.0 and residual.max() < 5.0
    crop = fa.align(image, face)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    big = fa.align(image, face, size=224)
    assert big.shape == (224, 224, 3)


def _rotate_scale(image, angle, scale):
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT), m


@pytest.mark.parametrize("angle,scale", [(15, 1.0), (-10, 0.8), (0, 1.3)])
def test_rotated_scaled_photo_gives_same_aligned_crop(fa, grace_hopper, angle, scale):
    face = fa.get_one(grace_hopper)
    reference = fa.align(grace_hopper, face).astype(np.float32)
    moved, m = _rotate_scale(grace_hopper, angle, scale)
    # Exact landmarks carried through the synthetic transform: only resampling differs.
    from dataclasses import replace

    carried = replace(face, landmarks=transform_points(face.landmarks, m).astype(np.float32))
    assert np.abs(fa.align(moved, carried).astype(np.float32) - reference).mean() < 5.0
    # Landmarks detected again on the transformed photo: YuNet's landmark jitter (~5% of the eye
    # distance) moves the crop by a few pixels, so compare geometry and blurred content.
    redetected = fa.get_one(moved)
    expected_in_crop = transform_points(transform_points(face.landmarks, m), fa.alignment_matrix(redetected))
    reference_in_crop = transform_points(face.landmarks, fa.alignment_matrix(face))
    assert np.linalg.norm(expected_in_crop - reference_in_crop, axis=1).max() < 6.0  # of 112 px
    again = fa.align(moved, redetected).astype(np.float32)
    corr = np.corrcoef(cv2.GaussianBlur(reference, (0, 0), 1.5).ravel(), cv2.GaussianBlur(again, (0, 0), 1.5).ravel())
    assert corr[0, 1] > 0.85


def test_context_crop_and_mask_stay_registered(fa, astronaut):
    face = fa.get_one(astronaut)
    crop, matrix = fa.context_crop(astronaut, face, scale=1.5, size=512, return_transform=True)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    assert np.array_equal(fa.context_crop(astronaut, face), crop)
    centre = transform_points(np.array([[(face.bbox[0] + face.bbox[2]) / 2, (face.bbox[1] + face.bbox[3]) / 2]]), matrix)
    np.testing.assert_allclose(centre[0], [256, 256], atol=1e-6)
    crop2, masks = fa.context_crop_with_masks(astronaut, face)
    assert masks.head.shape == (512, 512) and np.array_equal(crop2, crop)
    inside = masks.head > 0.5
    assert 0.15 < inside.mean() < 0.8  # the head fills a good part of a 1.5x face crop


def test_context_crop_pads_at_border(fa, astronaut):
    corner = astronaut[40:300, 150:420]  # face near the top edge: the 1.5x box leaves the image
    face = fa.get_one(corner, check=False)
    black = fa.context_crop(corner, face, size=256)
    edge = fa.context_crop(corner, face, size=256, border="edge")
    assert (black[0] == 0).all() and edge[0].mean() > 5


def test_masks_at_image_resolution(fa, astronaut, grace_hopper):
    for image in (astronaut, grace_hopper):
        face = fa.get_one(image)
        masks = fa.masks(image, face)
        assert masks.method == "grabcut+landmarks"
        assert masks.face.shape == masks.head.shape == image.shape[:2]
        face_px, head_px = masks.face > 0.5, masks.head > 0.5
        assert (face_px & ~head_px).sum() == 0           # head contains face
        assert head_px.sum() > 1.3 * face_px.sum()        # and hair around it
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        assert not head_px[min(image.shape[0] - 1, y2 + (y2 - y1)):, :].any()  # no shoulders/body
        cx = (x1 + x2) // 2
        assert face_px[(y1 + y2) // 2, cx] and head_px[max(0, y1 - 5), cx]   # forehead/hair row
    ellipse = fa.masks(astronaut, fa.get_one(astronaut), method="ellipse")
    assert ellipse.method == "landmarks-ellipse"


def test_mediapipe_masks_need_the_extra(fa, astronaut):
    import importlib.util

    from facefact.errors import ConfigError

    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("mediapipe is installed here")
    with pytest.raises(ConfigError, match="mediapipe"):
        fa.masks(astronaut, fa.get_one(astronaut), method="mediapipe")


def test_fact_condition_is_masked_aligned_face(fa, astronaut):
    face = fa.get_one(astronaut)
    cond = fa.fact_condition(astronaut, face)
    assert cond.shape == (112, 112, 3) and cond.dtype == np.uint8
    plain = fa.align(astronaut, face)
    assert np.abs(cond[40:100, 30:80].astype(int) - plain[40:100, 30:80]).mean() < 1.0  # face kept
    assert (cond[105:, :10] == 0).all()  # below the chin at the side: masked to black


def test_downscaled_warp_keeps_pixel_centres_registered():
    # A blob centred at 1000.5 in a 2000 x 2000 image, warped with scale 0.056, must land at
    # 1000.5 * 0.056 = 56.028 (the INTER_AREA pre-shrink must honour OpenCV's half-pixel centres).
    from facefact.faces.align import warp
    size, centre, scale = 2000, 1000.5, 0.056
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    blob = np.exp(-((xx - centre) ** 2 + (yy - centre) ** 2) / (2 * 40.0 ** 2)).astype(np.float32)
    matrix = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
    out = warp(blob, matrix, 112).astype(np.float64)
    oy, ox = np.mgrid[0:112, 0:112]
    cx, cy = (out * ox).sum() / out.sum(), (out * oy).sum() / out.sum()
    expected = centre * scale
    assert cx == pytest.approx(expected, abs=0.05) and cy == pytest.approx(expected, abs=0.05)
