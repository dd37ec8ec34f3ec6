"""Validation images are made by FaceFactPipeline itself (same pixels as inference with the same
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

    # the step-2 grid holds exactly what FaceFactPipeline makes from the step-2 adapter
    grid = np.asarray(Image.open(tmp_path / "val" / "validation" / "step-00000002.png"))
    assert grid.shape == (SIZE, SIZE * (1 + len(prompts)), 3)
    from facefact.model.tiny import tiny_encoder
    from facefact.pipelines.fact import FaceFactPipeline
    from facefact.pipelines.tiny import tiny_sd_pipeline
    from facefact.training.data import FaceTrainingSet

    adapter = FaceAdapter.from_checkpoint(tmp_path / "val" / "checkpoints" / "step-00000002" / "adapter.safetensors")
    pipe = FaceFactPipeline(tiny_sd_pipeline(), tiny_encoder(), adapter)
    pipe.sd.set_progress_bar_config(disable=True)
    condition = FaceTrainingSet(prepared, resolution=SIZE, seed=3)[0]["condition"][None]
    for j, prompt in enumerate(prompts):
        image = pipe(prompt, face_pixels=condition, seed=3 + j, num_inference_steps=3, guidance_scale=4.0,
                     height=SIZE, width=SIZE, scheduler="ddim", adapter_scale=1.0).images[0]
        cell = grid[:, SIZE * (1 + j): SIZE * (2 + j)]
        assert np.array_equal(np.asarray(image), cell), f"prompt {j}: max diff " \
            f"{np.abs(np.asarray(image).astype(int) - cell).max()}"
    # the face matters: another condition gives another image
    other = pipe(prompts[0], face_pixels=-condition, seed=3, num_inference_steps=3, guidance_scale=4.0,
                 height=SIZE, width=SIZE, scheduler="ddim", adapter_scale=1.0).images[0]
    assert not np.array_equal(np.asarray(other), grid[:, SIZE:2 * SIZE])


def test_pipeline_uses_an_adapter_already_attached_to_its_unet():
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.fact import FaceFactPipeline
    from facefact.pipelines.tiny import tiny_sd_pipeline, tiny_unet

    sd = tiny_sd_pipeline()
    adapter = tiny_face_adapter(sd.unet).attach(sd.unet)
    pipe = FaceFactPipeline(sd, tiny_encoder(), adapter)
    assert not pipe.attached_here and adapter.is_attached
    fresh = FaceFactPipeline(tiny_sd_pipeline(), tiny_encoder(), tiny_face_adapter(tiny_unet()))
    assert fresh.attached_here and fresh.adapter.is_attached

    from facefact.errors import ConfigError

    with pytest.raises(ConfigError, match="attached to another UNet"):
        FaceFactPipeline(tiny_sd_pipeline(), tiny_encoder(), adapter)
    adapter.detach()
