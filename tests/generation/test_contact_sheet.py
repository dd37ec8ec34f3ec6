"""Contact sheets label each picture with its seed (so one can be made again); without labels the
sheet is the pictures alone."""
from __future__ import annotations

import numpy as np
from PIL import Image

from facefact.pipelines.metadata import contact_sheet


def test_each_picture_has_its_seed_printed_under_it():
    tiles = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue", "gray")]
    plain = np.asarray(contact_sheet(tiles))
    labelled = np.asarray(contact_sheet(tiles, labels=[f"seed {s}" for s in (7, 8, 9, 10)]))
    assert plain.shape == (2 * 64 + 3 * 4, 2 * 64 + 3 * 4, 3)
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] == plain.shape[1]
    strips = []
    for row in range(2):
        for column in range(2):
            x, y = 4 + column * 68, 4 + row * (labelled.shape[0] - 4) // 2
            assert (labelled[y:y + 64, x:x + 64] == np.asarray(tiles[row * 2 + column])).all()  # the picture
            strip = labelled[y + 64:y + (labelled.shape[0] - 4) // 2 - 4, x:x + 64]
            assert (strip < 128).any()  # dark text on the white strip
            strips.append(strip)
    assert not np.array_equal(strips[0], strips[1])  # "seed 7" is not "seed 8"
