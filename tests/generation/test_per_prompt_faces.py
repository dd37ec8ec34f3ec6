"""`face_tokens=[a, b]`: one person per prompt, so different people share one UNet batch (the
server's batching). Each prompt's images are its own person's, with its own provenance."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from facefact.errors import ConfigError

CALL = dict(num_inference_steps=2, height=64, width=64)


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


@pytest.fixture(scope="module")
def two_people(tiny_pipe, astronaut, grace_hopper):
    astronaut_faces = replace(tiny_pipe.encode_faces([astronaut]), notes=["about the astronaut"])
    hopper_faces = replace(tiny_pipe.encode_faces([grace_hopper]), notes=["about grace hopper"])
    assert not torch.equal(astronaut_faces.tokens, hopper_faces.tokens)
    return astronaut_faces, hopper_faces


def test_each_prompt_gets_its_own_person(tiny_pipe, two_people):
    a, b = two_people
    batch = tiny_pipe(["a portrait", "a painting"], face_tokens=[a, b], num_images_per_prompt=2,
                      generator=generators(1, 2, 3, 4), negative_prompt=["", "dark"], **CALL)
    alone_a = tiny_pipe("a portrait", face_tokens=a, num_images_per_prompt=2, generator=generators(1, 2), **CALL)
    alone_b = tiny_pipe("a painting", face_tokens=b, num_images_per_prompt=2, generator=generators(3, 4),
                        negative_prompt="dark", **CALL)
    # CPU GEMM kernels depend on the number of rows, so a batch is the same image up to float
    # rounding: at most one level in a few pixels.
    alone = pixels(alone_a.images + alone_b.images)
    assert np.abs(pixels(batch.images) - alone).max() <= 1
    assert np.mean(pixels(batch.images) == alone) > 0.99
    # Against the same batch size, rows are exact: row 0 never sees row 1's person.
    same_rows = tiny_pipe(["a portrait", "a portrait"], face_tokens=[a, a], num_images_per_prompt=2,
                          generator=generators(1, 2, 3, 4), negative_prompt=["", ""], **CALL)
    np.testing.assert_array_equal(pixels(batch.images)[:2], pixels(same_rows.images)[:2])
    assert np.abs(pixels(batch.images)[2:] - pixels(same_rows.images)[2:]).max() > 0
    # Each image's provenance is its own prompt's and person's, as alone
    for got, expected in zip(batch.metadata, alone_a.metadata + alone_b.metadata):
        assert got == expected
    assert batch.metadata[0]["notes"] == ["about the astronaut"]
    assert batch.metadata[2]["notes"] == ["about grace hopper"]
    assert batch.notes == ["prompt 1: about the astronaut", "prompt 2: about grace hopper"]


def test_different_token_counts_or_counts_of_prompts_are_refused(tiny_pipe, two_people, astronaut, grace_hopper):
    a, b = two_people
    two_photos = tiny_pipe.encode_faces([astronaut, grace_hopper])  # 32 tokens against 16
    with pytest.raises(ConfigError, match="prompt 2 are 32 tokens, for prompt 1 16") as caught:
        tiny_pipe(["one", "two"], face_tokens=[a, two_photos], generator=generators(1, 2), **CALL)
    assert caught.value.setting == "face_tokens"
    with pytest.raises(ConfigError, match="2 face_tokens for 3 prompts"):
        tiny_pipe(["one", "two", "three"], face_tokens=[a, b], **CALL)
    with pytest.raises(ConfigError, match="empty list"):
        tiny_pipe(["one"], face_tokens=[], **CALL)


def test_sdxl_pipelines_take_one_person_per_prompt_too(astronaut, grace_hopper):
    from facefact.pipelines import FACTStableDiffusionXLPipeline

    pipe = FACTStableDiffusionXLPipeline.tiny()
    a, b = pipe.encode_faces([astronaut]), pipe.encode_faces([grace_hopper])
    batch = pipe(["a portrait", "a painting"], face_tokens=[a, b], generator=generators(1, 2), **CALL)
    alone = pipe("a painting", face_tokens=b, generator=generators(2), **CALL)
    assert np.abs(pixels(batch.images)[1] - pixels(alone.images)[0]).max() <= 1  # float rounding at most
    assert np.abs(pixels(batch.images)[0] - pixels(alone.images)[0]).max() > 0
    assert batch.metadata[1] == alone.metadata[0]
