"""A complete tiny SDXL-layout pipeline with random weights, built offline (the SDXL twin of tiny.py).

What makes it SDXL, as in stabilityai/stable-diffusion-xl-base-1.0, only smaller: two text encoders
(CLIPTextModel + CLIPTextModelWithProjection, their penultimate hidden states concatenated, so the
cross-attention width is the sum of the two), SDXL's "text_time" micro-conditioning (pooled text
embedding + original size, crop, target size), no attention in the first down block, and
transformer stacks of more than one block at the deepest level (`transformer_layers_per_block`
(1, 1, 2), as SDXL's (1, 2, 10)), so FACT's block layouts differ: "first" puts 11 fusers (one per
stack, like SDXL's 11), "all" 17. Euler scheduler, as SDXL ships.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from facefact.model.tiny import TINY_CROSS_ATTENTION_DIM
from facefact.pipelines.tiny import TINY_IMAGE_SIZE, tiny_text_encoder, tiny_tokenizer, tiny_vae

TINY_XL_TEXT_2_WIDTH = 32
TINY_XL_CROSS_ATTENTION_DIM = TINY_CROSS_ATTENTION_DIM + TINY_XL_TEXT_2_WIDTH  # the two encoders side by side
TINY_XL_TIME_EMBED_DIM = 8


def tiny_xl_unet(in_channels: int = 4) -> UNet2DConditionModel:
    """The SDXL UNet layout, small. in_channels 9: SDXL inpainting UNets (latents, mask, masked image)."""
    return UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 8, in_channels=in_channels, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64, 64), norm_num_groups=16, attention_head_dim=8, use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), cross_attention_dim=TINY_XL_CROSS_ATTENTION_DIM,
        addition_embed_type="text_time", addition_time_embed_dim=TINY_XL_TIME_EMBED_DIM,
        # pooled text embedding (text encoder 2's projection) + 6 size / crop numbers
        projection_class_embeddings_input_dim=6 * TINY_XL_TIME_EMBED_DIM + TINY_XL_TEXT_2_WIDTH)


def tiny_text_encoder_2(vocab_size: int) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TINY_XL_TEXT_2_WIDTH, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1, projection_dim=TINY_XL_TEXT_2_WIDTH))


def tiny_xl_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                  timestep_spacing="leading", num_train_timesteps=1000)


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """The base SDXL pipeline, random but deterministic weights, float32 on CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = tiny_tokenizer()
        pipe = StableDiffusionXLPipeline(
            vae=tiny_vae(), text_encoder=tiny_text_encoder(len(tokenizer)),
            text_encoder_2=tiny_text_encoder_2(len(tokenizer)), tokenizer=tokenizer, tokenizer_2=tiny_tokenizer(),
            unet=tiny_xl_unet(), scheduler=tiny_xl_scheduler(), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_xl_inpainting_unet(seed: int = 0) -> UNet2DConditionModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tiny_xl_unet(in_channels=9)


def save_tiny_sdxl_pipeline(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny SDXL base model as a diffusers folder (what `from_pretrained` reads)."""
    directory = Path(directory)
    tiny_sdxl_pipeline(seed).save_pretrained(directory)
    return directory
