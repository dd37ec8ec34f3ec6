"""Each metric against a case with a known answer."""
from __future__ import annotations

import math

import numpy as np
import pytest

from facefact.evaluation import metrics


def test_identical_images_have_similarity_one_and_zero_drift(analyzer, astronaut):
    obs = analyzer.observe(astronaut)
    assert obs.detected
    refs = analyzer.reference_embeddings([astronaut])
    assert metrics.identity_similarity(obs.embeddings["sface"], refs["sface"]) == pytest.approx(1.0, abs=1e-5)
    outside, source = analyzer.outside_face(astronaut, obs, astronaut, obs)
    assert source == "output-face+control-face"
    drift = metrics.outside_face_drift(astronaut, astronaut, outside)
    assert drift["drift_outside_px"] == 0 and drift["drift_outside_lowres"] == 0 and drift["drift_inside_px"] == 0
    assert 0.5 < drift["outside_fraction"] < 1


def test_different_people_have_low_similarity(analyzer, astronaut, grace_hopper):
    a, g = analyzer.observe(astronaut), analyzer.observe(grace_hopper)
    sim = metrics.identity_similarity(a.embeddings["sface"], [g.embeddings["sface"]])
    assert sim < analyzer.thresholds()["sface"] < 0.5


def test_change_outside_the_face_is_drift_inside_is_not(analyzer, astronaut):
    obs = analyzer.observe(astronaut)
    x1, y1, x2, y2 = (int(v) for v in obs.face.bbox)

    outside_change = astronaut.copy()
    outside_change[400:480, 20:100] = 255 - outside_change[400:480, 20:100]   # bottom-left, far from the face
    o_obs = analyzer.observe(outside_change)
    mask, _ = analyzer.outside_face(outside_change, o_obs, astronaut, obs)
    d = metrics.outside_face_drift(outside_change, astronaut, mask)
    expected = np.abs(outside_change.astype(float) - astronaut).mean(axis=2).sum() / 255 / mask.sum()
    assert d["drift_outside_px"] == pytest.approx(expected, rel=1e-4)
    assert d["drift_outside_px"] > 0.005 and d["drift_outside_lowres"] > 0.005
    assert d["drift_inside_px"] == 0

    inside_change = astronaut.copy()
    inside_change[y1 + 30:y1 + 50, x1 + 30:x2 - 30] = 0                          # a band across the face
    i_obs = analyzer.observe(inside_change)
    mask, _ = analyzer.outside_face(inside_change, i_obs, astronaut, obs)
    d = metrics.outside_face_drift(inside_change, astronaut, mask)
    assert d["drift_outside_px"] == 0 and d["drift_outside_lowres"] == 0
    assert d["drift_inside_px"] > 0.01


def test_box_fallback_when_no_face(analyzer):
    flat = np.full((128, 128, 3), 128, np.uint8)
    obs = analyzer.observe(flat)
    assert not obs.detected and math.isnan(obs.row()["yaw"])
    mask, source = analyzer.outside_face(flat, obs, flat, obs)
    assert source == "center-box"
    assert mask[64, 64] == 0 and mask[2, 2] == 1


def test_pixel_and_lowres_distance_known_values():
    black, white = np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)
    assert metrics.pixel_distance(black, white) == 1.0
    half = np.zeros((32, 32), np.float32)
    half[:, :16] = 1
    grey = black.copy()
    grey[:, 16:] = 255                                   # differs only where the mask is 0
    assert metrics.pixel_distance(black, grey, half) == 0
    assert metrics.lowres_distance(black, grey, half, side=8) == 0
    assert metrics.lowres_distance(black, white, side=8) == pytest.approx(1.0)
    assert math.isnan(metrics.pixel_distance(black, white, np.zeros((32, 32))))


def test_diversity_zero_for_copies_positive_for_differences():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    e = np.ones(4) / 2
    same = metrics.diversity([e, e, e], [0, 0, 0], [1, 1, 1], [0.1, 0.1, 0.1], [image, image, image])
    assert same["div_identity"] == pytest.approx(0, abs=1e-12)
    assert same["div_yaw"] == same["div_roll"] == same["div_expression"] == same["div_image_px"] == 0
    other = np.array([1.0, 0, 0, 0])
    diff = metrics.diversity([e, other, None], [0, 10, None], [0, 0, 0], [0.0, 0.3, math.nan],
                             [image, 255 - image, image])
    assert diff["div_identity"] == pytest.approx(1 - 0.5)               # one pair among detected faces
    assert diff["div_yaw"] == 10 and diff["div_expression"] == pytest.approx(0.3)
    assert diff["div_image_px"] > 0.2 and diff["n_faces"] == 2
    assert math.isnan(metrics.mean_pairwise([1.0], lambda a, b: 0.0))


def test_expression_ratios_from_landmarks(analyzer, astronaut):
    closed = np.zeros((68, 2))
    closed[48], closed[54] = (0, 0), (10, 0)
    closed[62], closed[66] = (5, 0), (5, 0)
    assert metrics.mouth_open_ratio(closed) == 0
    opened = closed.copy()
    opened[66] = (5, 4)
    assert metrics.mouth_open_ratio(opened) == pytest.approx(0.4)
    five = np.array([[0, 0], [10, 0], [5, 5], [1, 10], [9, 10]], float)
    assert metrics.smile_ratio(five) == pytest.approx(0.8)
    obs = analyzer.observe(astronaut)   # a closed-lip smile
    assert 0 <= obs.mouth_open < 0.25 and 0.5 < obs.smile < 1.2
