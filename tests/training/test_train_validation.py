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
    common = dict(data=str(prepared), init_adapter=opened_adapter, max_steps=3, seed=3, learning_rate=1e-3,
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
    grid = np.asarray(Image.open(tmp_path / "val" / "validation" / "step-00000002.png"))
    assert grid.shape == (SIZE, SIZE * (1 + len(prompts)), 3)
    from diffusers import DDIMScheduler

    from facefact.model.tiny import tiny_encoder
    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.training.data import FaceTrainingSet

    adapter = FaceAdapter.from_checkpoint(tmp_path / "val" / "checkpoints" / "step-00000002" / "adapter.safetensors")
    pipe = FACTStableDiffusionPipeline.tiny()  # the same tiny base as training's
    pipe.load_fact_adapter(adapter, encoder=tiny_encoder())
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    condition = FaceTrainingSet(prepared, resolution=SIZE, seed=3)[0]["condition"][None]

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
