"""Shared fixtures of the template-mode tests (the two-person photo `group` is tests/conftest.py's):
one FaceAnalysis for the session, tiny inpainting pipelines, photo files."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def analysis():
    from facefact.faces import FaceAnalysis

    return FaceAnalysis()


@pytest.fixture(scope="session")
def inpaint_pipes(analysis):
    """(kind, family="sd15") -> a tiny FACT inpainting pipeline (built once per session, on demand)."""
    made = {}

    def get(kind: str, family: str = "sd15"):
        if (kind, family) not in made:
            from facefact.template.tiny import tiny_template_pipeline

            made[kind, family] = tiny_template_pipeline(kind, analysis=analysis, family=family)
        return made[kind, family]
    return get


@pytest.fixture
def fast_settings():
    """Tiny-model settings: a 64 px crop, 10 nominal steps (6 main, 1 refine), a short prompt."""
    from facefact.template.settings import TemplateSettings

    def make(**changes):
        base = dict(prompt="a portrait", negative_prompt="blurry", crop_size=64, steps=10)
        return TemplateSettings(**{**base, **changes})
    return make


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory, astronaut, grace_hopper_path, group):
    """{'astronaut': png, 'grace': jpg, 'group': jpg, 'plain': png} on disk."""
    import shutil

    from PIL import Image

    folder = tmp_path_factory.mktemp("template-photos")
    files = {"astronaut": folder / "astronaut.png", "grace": folder / "grace.jpg", "group": folder / "group.jpg",
             "plain": folder / "plain.png"}
    Image.fromarray(astronaut).save(files["astronaut"])
    shutil.copy(grace_hopper_path, files["grace"])
    Image.fromarray(group).save(files["group"], quality=95)
    Image.fromarray(np.full((256, 256, 3), (120, 180, 90), np.uint8)).save(files["plain"])
    return files
