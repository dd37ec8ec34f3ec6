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


def test_photos_of_two_people_get_a_note_naming_the_odd_one(analysis, astronaut, grace_hopper):
    notes = []
    analyse_photos(analysis, [astronaut, astronaut.transpose(Image.FLIP_LEFT_RIGHT), grace_hopper], notes)
    assert any(note.startswith("reference photo 3 may not show the same person") for note in notes), notes
    notes = []
    analyse_photos(analysis, [astronaut, astronaut.transpose(Image.FLIP_LEFT_RIGHT)], notes)
    assert not any("same person" in note for note in notes)


def test_a_group_photos_face_is_chosen_by_its_number_from_the_left(analysis, group_path):
    """The group photo: the astronaut on the left (face 1, the smaller), Grace Hopper on the right
    (face 2, the larger, the one used without a number)."""
    first, _ = analyse_photos(analysis, [group_path + "#1"], [])
    second, _ = analyse_photos(analysis, [group_path + "#2"], notes := [])
    largest, _ = analyse_photos(analysis, [group_path], [])
    assert np.array_equal(second.numpy(), largest.numpy()) and not np.array_equal(first.numpy(), second.numpy())
    assert any("face 2 of 2 chosen, counting from the left" in note for note in notes), notes
    for number in (0, 5):
        with pytest.raises(FaceError, match=f"face {number} asked for, but the photo has 2 faces, numbered 1..2 "
                                            "from left to right"):
            analyse_photos(analysis, [f"{group_path}#{number}"], [])


def test_a_refused_face_can_be_used_when_asked(astronaut):
    from facefact.faces.types import QualityThresholds

    strict = FaceAnalysis(thresholds=QualityThresholds(min_size_px=5000))
    with pytest.raises(FaceError, match="small"):
        analyse_photos(strict, [astronaut], [])
    notes = []
    analyse_photos(strict, [astronaut], notes, check_quality=False)
    assert any("used although" in note for note in notes)
