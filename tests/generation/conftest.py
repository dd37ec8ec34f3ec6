"""Shared fixtures for the generation tests: photos, a tiny pipeline, an in-process CLI runner."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PARITY = REPO / "tests" / "data" / "parity" / "fact_tiny_a"


@pytest.fixture(scope="session")
def astronaut() -> str:
    return str(REPO / "examples" / "astronaut.jpg")


@pytest.fixture(scope="session")
def grace_hopper(tmp_path_factory) -> str:
    import matplotlib.cbook as cbook

    dst = tmp_path_factory.mktemp("photos") / "grace_hopper.jpg"
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), dst)
    return str(dst)


@pytest.fixture(scope="session")
def plain_jpeg(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("photos") / "plain.jpg"
    Image.fromarray(np.full((256, 256, 3), (120, 180, 90), np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_pipe():
    """One shared tiny text-to-image FACT pipeline (seed 0): tests that change it build their own."""
    from facefact.pipelines import FACTStableDiffusionPipeline

    return FACTStableDiffusionPipeline.tiny()


@pytest.fixture(scope="session")
def face_pixels(astronaut):
    """The astronaut photo as the FACT encoder's input [1, 3, 112, 112]: face analysis once per session."""
    from facefact.faces import FaceAnalysis
    from facefact.pipelines.face_tokens import face_pixels_from_photos

    return face_pixels_from_photos(FaceAnalysis(), [astronaut])


@pytest.fixture(scope="session")
def face(tiny_pipe, face_pixels):
    """FaceTokens of the astronaut for every tiny pipeline of seed 0 (they share the adapter weights)."""
    return tiny_pipe.encode_faces(face_pixels=face_pixels)


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory):
    """(base folder, adapter .safetensors, encoder .safetensors): the tiny models as files on disk."""
    from facefact.model.checkpoints import save_adapter, save_encoder
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.tiny import save_tiny_sd_pipeline, tiny_sd_pipeline

    root = tmp_path_factory.mktemp("models")
    base = save_tiny_sd_pipeline(root / "base")
    adapter = save_adapter(tiny_face_adapter(tiny_sd_pipeline().unet), root / "adapter.safetensors")
    encoder = save_encoder(tiny_encoder(), root / "encoder.safetensors")
    return base, adapter, encoder


@pytest.fixture(scope="session")
def tiny_lora(tmp_path_factory):
    """tiny_lora(seed=3, unet=None) -> a diffusers-format LoRA file (.safetensors) on the attention
    projections of `unet` (default: the tiny UNet), random and non-zero so it changes the image."""
    def make(seed: int = 3, unet=None) -> Path:
        import torch
        from diffusers import StableDiffusionPipeline
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict

        from facefact.pipelines.tiny import tiny_sd_pipeline

        unet = unet if unet is not None else tiny_sd_pipeline(0).unet
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                        target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        folder = tmp_path_factory.mktemp("lora")
        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                                  safe_serialization=True)
        return folder / "pytorch_lora_weights.safetensors"
    return make


@pytest.fixture(scope="session")
def controlnet_folders(tmp_path_factory):
    """The tiny ControlNet saved by diffusers, and one made for a UNet of other widths."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from facefact.pipelines.tiny import tiny_controlnet, tiny_sd_pipeline

    root = tmp_path_factory.mktemp("controlnets")
    tiny_controlnet(tiny_sd_pipeline(0).unet, 0).save_pretrained(root / "tiny-canny")
    other = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64, 64),
        norm_num_groups=16, attention_head_dim=8, cross_attention_dim=48,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    ControlNetModel.from_unet(other, conditioning_embedding_out_channels=(8, 16, 32, 32)).save_pretrained(
        root / "other-family")
    return {"tiny": root / "tiny-canny", "other": root / "other-family"}
