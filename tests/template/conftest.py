"""Shared fixtures of the template-mode tests: the public-domain photos, a two-person photo made
from them, one FaceAnalysis for the session."""
from __future__ import annotations

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads and lose a lot on a busy machine; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def analysis():
    from facefact.faces import FaceAnalysis

    return FaceAnalysis()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def grace_hopper_path() -> str:
    import matplotlib.cbook as cbook

    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def grace_hopper(grace_hopper_path) -> np.ndarray:
    from facefact.faces import load_image

    return load_image(grace_hopper_path)


@pytest.fixture(scope="session")
def group(astronaut, grace_hopper) -> np.ndarray:
    """The astronaut (left, smaller face) and Grace Hopper (right, larger face) side by side, 512 tall."""
    h = astronaut.shape[0]
    right = cv2.resize(grace_hopper, (round(grace_hopper.shape[1] * h / grace_hopper.shape[0]), h),
                       interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.concatenate([astronaut, right], axis=1))


@pytest.fixture(scope="session")
def inpaint_pipes(analysis):
    """kind -> a tiny FACT inpainting pipeline (built once per session, on demand)."""
    made = {}

    def get(kind: str):
        if kind not in made:
            from facefact.template.tiny import tiny_template_pipeline

            made[kind] = tiny_template_pipeline(kind, analysis=analysis)
        return made[kind]
    return get


@pytest.fixture
def fast_settings():
    """Tiny-model settings: a 64 px crop, 10 nominal steps (6 main, 1 refine), a short prompt."""
    from facefact.template.settings import TemplateSettings

    def make(**changes):
        base = dict(prompt="a portrait", negative_prompt="blurry", crop_size=64, steps=10)
        return TemplateSettings(**{**base, **changes})
    return make


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """cli(*argv) -> (exit code, stdout, stderr), in-process, with an isolated home and config."""
    from facefact.cli.main import main

    monkeypatch.setenv("FACEFACT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("FACEFACT_CONFIG", "FACEFACT_ADAPTER", "FACEFACT_ENCODER", "FACEFACT_BASE_MODEL",
                "FACEFACT_DEVICE", "FACEFACT_DTYPE"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


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
