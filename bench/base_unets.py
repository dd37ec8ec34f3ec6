"""The real base UNets, built from their diffusers configs (random weights or, on the meta device,
shapes only), and what each takes besides latents, timestep and text.

    sd15_unet(64)                       # runwayml/stable-diffusion-v1-5 unet/config.json (bench/sd15.py)
    sdxl_unet(128)                      # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, 1024²
    extra_inputs(unet, batch, device)   # SDXL's added_cond_kwargs (pooled text + size/crop ids); {} for SD1.5
"""
from __future__ import annotations

import torch

from sd15 import sd15_unet

DEFAULT_SIZE = {"sd15": 512, "sdxl": 1024}  # the resolution each family was trained at


def sdxl_unet(sample_size: int = 128):
    """The UNet of stabilityai/stable-diffusion-xl-base-1.0 (unet/config.json), built from its config."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        norm_num_groups=32).eval().requires_grad_(False)


BASE_UNETS = {"sd15": sd15_unet, "sdxl": sdxl_unet}


def extra_inputs(unet, batch: int, device, dtype=torch.float32) -> dict:
    """SDXL's micro-conditioning for `batch` rows (pooled text embedding, original size / crop /
    target size), deterministic; nothing for SD1.5."""
    if unet.config.get("addition_embed_type") != "text_time":
        return {}
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    size = float(unet.config.sample_size * 8)
    generator = torch.Generator().manual_seed(1)
    return {"added_cond_kwargs": {
        "text_embeds": torch.randn(batch, pooled, generator=generator).to(device, dtype),
        "time_ids": torch.tensor([[size, size, 0.0, 0.0, size, size]]).repeat(batch, 1).to(device, dtype)}}
