"""Detection, quality and identity on real photos (skimage astronaut, matplotlib Grace Hopper)."""
from __future__ import annotations


import numpy as np
import pytest

from facefact.faces import Face, FaceWarning, cosine_similarity


def test_get_returns_faces_with_box_score_landmarks_quality(fa, astronaut):
    faces = fa.get(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert isinstance(face, Face)
    x1, y1, x2, y2 = face.bbox
    assert 150 < x1 < x2 < 300 and 30 < y1 < y2 < 200
    assert face.score > 0.8
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    left_eye, right_eye, nose, mouth_l, mouth_r = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    q = face.quality
    assert q.size_px > 80 and q.cut_off == 0.0 and abs(q.yaw) < 20 and abs(q.roll) < 10
    assert q.sharpness > fa.thresholds.min_sharpness
    d = face.as_dict()
    assert d["detector"] == "yunet" and len(d["landmarks"]) == 5 and "quality" in d


def test_get_one_on_path_and_pil(fa, grace_hopper_path):
    from PIL import Image

    face = fa.get_one(grace_hopper_path)
    face_pil = fa.get_one(Image.open(grace_hopper_path))
    np.testing.assert_allclose(face.landmarks, face_pil.landmarks, atol=1e-3)


def test_several_faces_take_largest_with_warning(fa, astronaut):
    small = astronaut[::2, ::2]
    two = np.zeros((512, 1024, 3), np.uint8)
    two[:, :512] = astronaut
    two[128:384, 600:856] = small
    with pytest.warns(FaceWarning, match="2 faces found"):
        face = fa.get_one(two)
    assert face.bbox[0] < 512 and "2 faces found" in face.notes[0]


def test_embedding_is_normalised(fa, astronaut):
    face = fa.get_one(astronaut)
    emb = fa.embed(astronaut, face)
    assert emb.shape == (fa.embedder.dim,) and abs(np.linalg.norm(emb) - 1) < 1e-5
    assert fa.embedder.name == "sface" and fa.embedder.threshold == pytest.approx(0.363)


def test_cosine_similarity_vector_and_matrix():
    a = np.array([1.0, 0.0])
    b = np.array([1.0, 1.0])
    assert cosine_similarity(a, b) == pytest.approx(np.sqrt(0.5))
    m = cosine_similarity(np.stack([a, b]), np.stack([a, b]))
    assert m.shape == (2, 2) and m[0, 0] == pytest.approx(1.0)
