"""Photos and one shared tiny FACT pipeline for the identity-control tests."""
from __future__ import annotations

import pytest
from PIL import Image


@pytest.fixture(scope="session")
def astronaut():
    from skimage.data import astronaut

    return Image.fromarray(astronaut())


@pytest.fixture(scope="session")
def grace_hopper():
    import matplotlib.cbook as cbook

    return Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")


@pytest.fixture(scope="module")
def pipe():
    from facefact.pipelines import FACTStableDiffusionPipeline

    return FACTStableDiffusionPipeline.tiny()
