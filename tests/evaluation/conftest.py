"""Shared fixtures: two real identities (astronaut, Grace Hopper) and a fake method returning photos."""
from __future__ import annotations

import pytest
from PIL import Image

from eval_fakes import PhotoMethod


@pytest.fixture(scope="session")
def identities_dir(tmp_path_factory, astronaut, grace_hopper):
    root = tmp_path_factory.mktemp("identities")
    for name, rgb in (("astronaut", astronaut), ("hopper", grace_hopper)):
        (root / name).mkdir()
        Image.fromarray(rgb).save(root / name / "ref.png")
    (root / "hopper" / "subject.txt").write_text("a woman")
    return root


@pytest.fixture(scope="module")
def one_identity(tmp_path_factory, astronaut):
    """A folder with one person (the astronaut), one reference photo."""
    root = tmp_path_factory.mktemp("one")
    (root / "astronaut").mkdir()
    Image.fromarray(astronaut).save(root / "astronaut" / "ref.jpg", quality=95)
    return root


@pytest.fixture(scope="session")
def analyzer():
    from facefact.evaluation.observe import ImageAnalyzer

    return ImageAnalyzer(["sface"])


@pytest.fixture()
def prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# two prompts\na photo of {subject} on a beach\na pencil sketch of {subject}\n")
    return path


@pytest.fixture()
def photo_methods():
    return [PhotoMethod("pasted", paste=True), PhotoMethod("photo")]

