"""Shared fixtures: a few "identities" made from two real photos (flips, crops, colour jitter), and
that folder prepared once at the tiny model's 128 px for the training tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance


def _real_photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook as cbook
    from skimage import data

    hopper = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    return {"astronaut": np.ascontiguousarray(data.astronaut()), "hopper": hopper}


def _variants(rgb: np.ndarray, count: int, seed: int) -> list[Image.Image]:
    """Same person, different 'photos': mirrored, cropped a little differently, other colours."""
    rng = np.random.default_rng(seed)
    image, out = Image.fromarray(rgb), []
    for i in range(count):
        w, h = image.size
        dx, dy = (rng.uniform(0, 0.06, 2) * [w, h]).astype(int)
        photo = image.crop((dx, dy, w - int(rng.uniform(0, 0.06) * w), h - int(rng.uniform(0, 0.06) * h)))
        if i % 2:
            photo = photo.transpose(Image.FLIP_LEFT_RIGHT)
        photo = ImageEnhance.Color(photo).enhance(rng.uniform(0.6, 1.4))
        photo = ImageEnhance.Brightness(photo).enhance(rng.uniform(0.85, 1.15))
        out.append(photo)
    return out


def make_photo_folder(root: Path, photos_per_identity: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n, (name, rgb) in enumerate(_real_photos().items()):
        person = root / name
        person.mkdir(exist_ok=True)
        for i, photo in enumerate(_variants(rgb, photos_per_identity, seed=n)):
            photo.save(person / f"{i}.jpg", quality=92)
        (person / "0.txt").write_text(f"a portrait photo of {name}\n")
    return root


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def larger_photo_folder(tmp_path_factory) -> Path:
    """24 photos: enough work for a run to be stopped (or a worker killed) halfway."""
    return make_photo_folder(tmp_path_factory.mktemp("photos24"), photos_per_identity=12)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, photo_folder) -> Path:
    from facefact.training.prepare import PrepareSettings, prepare_dataset

    out = tmp_path_factory.mktemp("prepared")
    prepare_dataset(photo_folder, out, PrepareSettings(size=128), workers=1, progress=False)
    return out


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny models are far too small to gain from intra-op threads, and on a busy 2-core CI
    machine spinning OpenMP threads make each step 10-40x slower. Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
