"""The same photo always gets the same masks and FACT condition, whatever ran before in the process."""
import cv2
import numpy as np


def test_masks_do_not_depend_on_earlier_calls(fa, astronaut, grace_hopper):
    face = fa.get_one(astronaut)
    first = fa.masks(astronaut, face)
    fa.masks(grace_hopper, fa.get_one(grace_hopper))
    cv2.setRNGSeed(12345)  # whatever else in the process used OpenCV's global RNG in between
    again = fa.masks(astronaut, face)
    assert np.array_equal(first.head, again.head) and np.array_equal(first.face, again.face)
    assert np.array_equal(fa.fact_condition(astronaut, face), fa.fact_condition(astronaut, face))
