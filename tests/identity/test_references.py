"""Reference photos checked and chosen: the odd one out is named, a group photo's face is chosen
by number, and a refused face can be used when the user insists."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facefact.errors import FaceError
from facefact.faces import FaceAnalysis
from facefact.pipelines.face_tokens import analyse_photos


@pytest.fixture(scope="module")
def analysis():
    return FaceAnalysis()


@pytest.fixture(scope="module")
def group(tmp_path_factory, astronaut, grace_hopper):
    """The astronaut (larger) and Grace Hopper side by side."""
    left, right = astronaut.resize((512, 512)), grace_hopper.resize((300, 384))
    canvas = Image.new("RGB", (812, 512), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (512, 64))
    path = tmp_path_factory.mktemp("group") / "group.png"
    canvas.save(path)
    return str(path)


def test_photos_of_two_people_get_a_note_naming_the_odd_one(analysis, astronaut, grace_hopper):
    notes = []
    analyse_photos(analysis, [astronaut, astronaut.transpose(Image.FLIP_LEFT_RIGHT), grace_hopper], notes)
    assert any(note.startswith("reference photo 3 may not show the same person") for note in notes), notes
    notes = []
    analyse_photos(analysis, [astronaut, astronaut.transpose(Image.FLIP_LEFT_RIGHT)], notes)
    assert not any("same person" in note for note in notes)


def test_a_group_photos_face_is_chosen_by_its_number(analysis, group):
    first, _ = analyse_photos(analysis, [group + "#0"], [])
    largest, _ = analyse_photos(analysis, [group], [])
    second, _ = analyse_photos(analysis, [group + "#1"], notes := [])
    assert np.array_equal(first.numpy(), largest.numpy()) and not np.array_equal(first.numpy(), second.numpy())
    assert any("face #1 of 2 chosen" in note for note in notes)
    with pytest.raises(FaceError, match="face #5 asked for, but 2"):
        analyse_photos(analysis, [group + "#5"], [])


def test_a_refused_face_can_be_used_when_asked(astronaut):
    from facefact.faces.types import QualityThresholds

    strict = FaceAnalysis(thresholds=QualityThresholds(min_size_px=5000))
    with pytest.raises(FaceError, match="small"):
        analyse_photos(strict, [astronaut], [])
    notes = []
    analyse_photos(strict, [astronaut], notes, check_quality=False)
    assert any("used although" in note for note in notes)
