"""Shared fixtures: a few "identities" made from two real photos (flips, crops, colour jitter), and
that folder prepared once at the tiny model's 128 px for the training tests; and an adapter trained
on the tiny SDXL base through the CLI (`trained_sdxl_adapter`), which the SDXL closed loop continues."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

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


class TrainedSDXL(NamedTuple):
    """A FACT adapter trained on the tiny SDXL base through the CLI (`prepare --size 1024`, then
    `train --model tiny-sdxl` with FAIR on): what the SDXL closed loop continues from."""
    photos: Path              # the photo folder (two people, three photos each)
    data: Path                # the prepared set (1024 px crops)
    run: Path                 # the training run's output folder
    adapter: Path             # run/adapter.safetensors
    train_args: list[str]     # `facefact train` arguments that made it, without --output-dir


SDXL_TRAIN_ARGS = ["--model", "tiny-sdxl", "--resolution", "64", "--max-steps", "6", "--seed", "4",
                   "--fair-weight", "0.5", "--learning-rate", "0.02", "--face-drop-prob", "0.3",
                   "--text-drop-prob", "0.3", "--shuffle-ramp-steps", "3", "--no-progress"]


@pytest.fixture(scope="session")
def trained_sdxl_adapter(tmp_path_factory, photo_folder) -> TrainedSDXL:
    """Prepared at SDXL's 1024 px and trained (64 px, 6 steps) once per session, through the CLI."""
    from facefact.cli.main import main

    root = tmp_path_factory.mktemp("sdxl-loop")
    data, run = root / "set", root / "run"
    assert main(["prepare", str(photo_folder), "--out", str(data), "--size", "1024", "--workers", "1",
                 "--no-progress"]) == 0
    args = ["--data", str(data), *SDXL_TRAIN_ARGS]
    assert main(["train", *args, "--output-dir", str(run)]) == 0
    return TrainedSDXL(photo_folder, data, run, run / "adapter.safetensors", args)
