"""Acceptance: each embedder keeps a person above its threshold under edits and another below."""
from __future__ import annotations

import io

import cv2
import pytest
from PIL import Image

from facefact.errors import ConfigError
from facefact.faces import FaceAnalysis, cosine_similarity, load_image


def _rotate(image, angle):
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)


def _jpeg30(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=30)
    return load_image(Image.open(io.BytesIO(buf.getvalue())))


def _crop(image, face):
    x1, y1, x2, y2 = face.bbox
    w, h = x2 - x1, y2 - y1
    return image[max(0, int(y1 - 0.6 * h)):int(y2 + 0.4 * h), max(0, int(x1 - 0.5 * w)):int(x2 + 0.5 * w)].copy()


EDITS = {
    "flip": lambda im, f: im[:, ::-1].copy(),
    "rotate+20": lambda im, f: _rotate(im, 20),
    "rotate-20": lambda im, f: _rotate(im, -20),
    "rescale0.5": lambda im, f: cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
    "jpeg30": lambda im, f: _jpeg30(im),
    "crop": _crop,
}


@pytest.fixture(scope="module")
def people(astronaut, grace_hopper):
    return {"astronaut": astronaut, "grace_hopper": grace_hopper}


@pytest.mark.parametrize("which", ["fa", "fa_dlib"])
def test_same_person_above_other_below_threshold(which, request, people):
    analysis = request.getfixturevalue(which)
    threshold = analysis.embedder.threshold
    reference = {name: analysis.embed(img, analysis.get_one(img)) for name, img in people.items()}
    cross = cosine_similarity(reference["astronaut"], reference["grace_hopper"])
    assert cross < threshold
    report = []
    for name, image in people.items():
        other = "grace_hopper" if name == "astronaut" else "astronaut"
        face = analysis.get_one(image)
        for edit, fn in EDITS.items():
            edited = fn(image, face)
            emb = analysis.embed(edited, analysis.get_one(edited))
            same, diff = cosine_similarity(emb, reference[name]), cosine_similarity(emb, reference[other])
            report.append(f"{analysis.embedder.name} {name} {edit}: same {same:.3f} other {diff:.3f}")
            assert same > threshold, "\n".join(report)
            assert diff < threshold, "\n".join(report)


def test_embedder_names_and_thresholds(fa, fa_dlib):
    assert (fa.embedder.name, fa.embedder.threshold) == ("sface", pytest.approx(0.363))
    assert fa_dlib.embedder.name == "dlib"
    # dlib's euclidean 0.6 on raw descriptors (norm ~1.42) expressed as a cosine threshold
    assert fa_dlib.embedder.threshold == pytest.approx(1 - 0.36 / (2 * 1.42 ** 2), abs=1e-3)
    assert fa.describe()["embedder"] == "sface"


def test_unknown_and_missing_backends_fail_clearly():
    with pytest.raises(ConfigError, match="unknown face embedder 'arcfaec'") as err:
        FaceAnalysis(embedder="arcfaec")
    assert "sface" in err.value.hint
    import importlib.util

    if importlib.util.find_spec("insightface") is None:
        with pytest.raises(ConfigError, match="insightface"):
            FaceAnalysis(embedder="insightface").embedder


def test_models_load_lazily_per_object():
    fresh = FaceAnalysis()
    assert fresh._embedder is None and fresh.detector._net is None
    other = FaceAnalysis()
    assert other.detector is not fresh.detector
