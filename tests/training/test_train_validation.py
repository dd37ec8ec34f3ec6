"""Validation images are made by the FACT pipeline itself (same pixels as inference with the same
weights, seed and steps), and validating does not change training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facefact.model import FaceAdapter
from facefact.model.checkpoints import read_safetensors, save_adapter
from facefact.training import TrainConfig, train

SIZE = 64


@pytest.fixture(scope="module")
def opened_adapter(tmp_path_factory):
    from facefact.model.tiny import tiny_face_adapter
    from facefact.pipelines.tiny import tiny_unet

    path = tmp_path_factory.mktemp("init") / "adapter.safetensors"
    save_adapter(tiny_face_adapter(tiny_unet(), trained_like=True), path)
    return str(path)


def test_validation_images_are_facefact_pipeline_images_and_leave_training_alone(tmp_path, prepared,
                                                                                  opened_adapter):
    prompts = ("a photo", "a painting")
    common = dict(data=str(prepared), base_model="tiny", encoder="tiny", init_adapter=opened_adapter, max_steps=3,
                  seed=3, learning_rate=1e-3,
                  face_drop_prob=0.5, resolution=SIZE, progress=False, checkpoint_every=2, log_every=1,
                  validation_steps=3, validation_samples=1, validation_prompts=prompts, validation_guidance=4.0)
    validated = train(TrainConfig(output_dir=str(tmp_path / "val"), validate_every=2, **common))
    plain = train(TrainConfig(output_dir=str(tmp_path / "plain"), validate_every=0, **common))

    # training is bit-identical with and without validation
    a, b = read_safetensors(validated.adapter_path)[0], read_safetensors(plain.adapter_path)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["mse"] for r in validated.history] == [r["mse"] for r in plain.history]
    assert not (tmp_path / "plain" / "validation").exists()

    # the step-2 grid holds exactly what the FACT pipeline makes from the step-2 adapter
    grid, layout = _grid_cells(tmp_path / "val" / "validation" / "step-00000002.png")
    assert grid.shape == (SIZE, SIZE * (1 + len(prompts)), 3)
    assert layout["step"] == 2 and layout["columns"][1:] == list(prompts)
    from diffusers import DDIMScheduler

    from facefact.model.tiny import tiny_encoder
    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.training.data import FaceTrainingSet

    adapter = FaceAdapter.from_checkpoint(tmp_path / "val" / "checkpoints" / "step-00000002" / "adapter.safetensors")
    pipe = FACTStableDiffusionPipeline.tiny()  # the same tiny base as training's
    pipe.load_fact_adapter(adapter, encoder=tiny_encoder())
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    condition = FaceTrainingSet(prepared, resolution=SIZE, seed=3, shuffle_prob_end=0.0)[0]["condition"][None]

    def make(prompt, pixels, seed):
        return pipe(prompt, face_tokens=pipe.encode_faces(face_pixels=pixels),
                    generator=torch.Generator().manual_seed(seed), num_inference_steps=3, guidance_scale=4.0,
                    height=SIZE, width=SIZE, fact_scale=1.0).images[0]

    for j, prompt in enumerate(prompts):
        image = make(prompt, condition, 3 + j)
        cell = grid[:, SIZE * (1 + j): SIZE * (2 + j)]
        assert np.array_equal(np.asarray(image), cell), f"prompt {j}: max diff " \
            f"{np.abs(np.asarray(image).astype(int) - cell).max()}"
    # the face matters: another condition gives another image
    other = make(prompts[0], -condition, 3)
    assert not np.array_equal(np.asarray(other), grid[:, SIZE:2 * SIZE])


def _grid_cells(path, row: int = 0):
    """The image cells of one row of a validation grid (below its labels), and the grid's labels."""
    import json

    with Image.open(path) as image:
        layout = json.loads(image.text["facefact:validation"])
        pixels = np.asarray(image.convert("RGB"))
    top = layout["header_px"] + row * (layout["row_band_px"] + layout["cell_px"]) + layout["row_band_px"]
    return pixels[top:top + layout["cell_px"]], layout


def test_validation_grid_is_labelled_and_shows_different_people(tmp_path, prepared, opened_adapter):
    prompts = ("a photo of a person smiling in a sunny garden", "a painting")
    train(TrainConfig(data=str(prepared), base_model="tiny", encoder="tiny", init_adapter=opened_adapter,
                      max_steps=1, resolution=SIZE, progress=False, validate_every=1, validation_steps=2,
                      validation_samples=3, validation_prompts=prompts, output_dir=str(tmp_path / "run")))
    path = tmp_path / "run" / "validation" / "step-00000001.png"
    _, layout = _grid_cells(path)
    people = ["astronaut", "hopper"]  # the photo folder's people (conftest)
    assert layout["step"] == 1 and layout["columns"] == ["step 1: condition", *prompts]
    assert sorted(layout["identities"][:2]) == people   # two people before a second photo of anyone
    assert len(layout["identities"]) == 3
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (layout["header_px"] + 3 * (layout["row_band_px"] + SIZE), SIZE * 3)
    header = pixels[:layout["header_px"]]
    assert (header < 128).any() and (header == 255).mean() > 0.5  # dark text on white
    for row in range(3):
        top = layout["header_px"] + row * (layout["row_band_px"] + SIZE)
        assert (pixels[top:top + layout["row_band_px"]] < 128).any(), f"row {row} has no identity label"


def test_pipeline_uses_an_adapter_already_attached_to_its_unet():
    from facefact.errors import ConfigError
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.pipelines.tiny import tiny_sd_pipeline

    parts = {k: v for k, v in tiny_sd_pipeline().components.items() if k != "image_encoder"}
    pipe = FACTStableDiffusionPipeline(**parts, requires_safety_checker=False)
    adapter = tiny_face_adapter(pipe.unet).attach(pipe.unet)
    pipe.load_fact_adapter(adapter, encoder=tiny_encoder())
    assert pipe.fact_adapter is adapter and adapter.is_attached_to(pipe.unet)
    pipe.unload_fact_adapter()  # not attached by the pipeline: it stays attached for its owner
    assert adapter.is_attached_to(pipe.unet)

    other = FACTStableDiffusionPipeline.tiny()
    with pytest.raises(ConfigError, match="attached to another UNet"):
        other.load_fact_adapter(adapter, encoder=tiny_encoder())
    adapter.detach()
