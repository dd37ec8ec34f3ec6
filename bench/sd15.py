"""Full-size random-weight models for the benchmarks and the device check, built offline from configs.

The UNet, VAE and CLIP text encoder of runwayml/stable-diffusion-v1-5 (each model folder's
config.json), the SD1.5 ControlNet layout (made from the UNet, as `ControlNetModel.from_unet` does),
and FACT at the official sizes (`ResamplerConfig()`, `EncoderConfig()`: TransFace-S, 16 face tokens
of 768) with the gates opened as a trained checkpoint has them. No download; the tokenizer is the
tests' byte-level one (same vocabulary size as any, same 77-token limit). Build under
`with torch.device("cuda"):` to create and initialise the weights on the GPU (seconds, not minutes).
"""
from __future__ import annotations

import torch

SD15_UNET = dict(layers_per_block=2, block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
                 cross_attention_dim=768, norm_num_groups=32, out_channels=4,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


def sd15_unet(sample_size: int = 64, in_channels: int = 4):
    """SD1.5's UNet (in_channels 9: the SD1.5 inpainting checkpoints' layout), eval, frozen."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=sample_size, in_channels=in_channels, **SD15_UNET).eval().requires_grad_(False)


def sd15_vae(size: int = 512):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=size,
                         scaling_factor=0.18215).eval().requires_grad_(False)


def sd15_text_encoder(vocab_size: int):
    """CLIP ViT-L/14's text tower (SD1.5's text encoder config) for a tokenizer of `vocab_size`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu", bos_token_id=vocab_size - 2,
                                        eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)).eval().requires_grad_(False)


def sd15_parts(size: int, with_controlnets: bool, seed: int = 0) -> dict:
    """A StableDiffusionPipeline's components at SD1.5 size (random), PNDM as SD1.5; with
    `with_controlnets`, two acting ControlNets as a MultiControlNetModel (the release's layout)."""
    from diffusers import MultiControlNetModel

    from facefact.pipelines.tiny import tiny_scheduler, tiny_tokenizer

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    unet = sd15_unet(size // 8)
    parts = {"vae": sd15_vae(size), "text_encoder": sd15_text_encoder(len(tokenizer)), "tokenizer": tokenizer,
             "unet": unet, "scheduler": tiny_scheduler(), "safety_checker": None, "feature_extractor": None,
             "requires_safety_checker": False}
    if with_controlnets:
        parts["controlnet"] = MultiControlNetModel([sd15_controlnet(unet, seed + k) for k in range(2)])
    return parts


def sd15_controlnet(unet, seed: int = 0):
    """An SD1.5-layout ControlNet from `unet` that acts (residual convolutions std 0.02: they reach
    the UNet without swamping it at full width)."""
    from facefact.pipelines.tiny import acting_controlnet

    return acting_controlnet(unet, seed, residual_std=0.02).eval().requires_grad_(False)


def official_adapter(unet, seed: int = 0, layout: str = "first"):
    """FaceAdapter.for_unet with the official resampler sizes (face tokens as wide as the UNet's text:
    768 on SD1.5, 2048 on SDXL) and block `layout`, gates opened like a trained checkpoint."""
    from facefact.model import FaceAdapter, ResamplerConfig

    torch.manual_seed(seed)
    config = ResamplerConfig(output_dim=unet.config.cross_attention_dim)
    adapter = FaceAdapter.for_unet(unet, config, layout).eval().requires_grad_(False)
    for fuser in adapter.all_fusers():
        fuser.alpha_attn.fill_(0.6)
        fuser.alpha_dense.fill_(0.4)
    return adapter


def official_encoder(seed: int = 0):
    """TransFace-S (the release's encoder) with random weights, float32, frozen."""
    from facefact.model import EncoderConfig, TransFaceEncoder

    torch.manual_seed(seed)
    encoder = TransFaceEncoder(EncoderConfig())
    torch.nn.init.normal_(encoder.pos_embed, std=0.02)
    return encoder.eval().requires_grad_(False)


def load_official_fact(pipe) -> None:
    """FACT at the official sizes into `pipe` (random weights, gates open)."""
    pipe.load_fact_adapter(official_adapter(pipe.unet), encoder=official_encoder())
