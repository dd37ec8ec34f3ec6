"""A fake evaluation method that returns real photos (known answers without a generator)."""
from __future__ import annotations

import numpy as np
from PIL import Image


class PhotoMethod:
    """Returns the reference photo itself; ``paste`` paints a seed-dependent corner outside the face,
    so decoupling (vs ``photo``) and image diversity have known non-zero answers."""

    uses_references = True

    def __init__(self, name: str = "photo", paste: bool = False):
        self.name, self.paste = name, paste
        self.control = "photo" if paste else None
        self.calls = 0

    def settings(self) -> dict:
        return {"method": self.name, "paste": self.paste}

    def generate(self, prompt, references, seed, size):
        self.calls += 1
        rgb = np.array(Image.open(references[0]).convert("RGB"))
        if self.paste:
            rgb[-64:, :64] = (40 + 70 * seed) % 256
        return Image.fromarray(rgb)
