"""A complete tiny Stable Diffusion 1.5-layout pipeline with random weights, built offline (SDXL: tiny_xl).

Tokenizer (byte-level CLIP BPE with no merges), CLIP text encoder, UNet with the SD1.5 block
layout (3 cross-attention down blocks, 1 plain; mid; 1 plain up block, 3 cross-attention), VAE
with the SD 8x downsampling, PNDM scheduler configured like SD1.5. Everything from configs.
Optionally a tiny ControlNet made from that UNet, as diffusers' `ControlNetModel.from_unet` does.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (AutoencoderKL, ControlNetModel, PNDMScheduler, StableDiffusionControlNetPipeline,
                       StableDiffusionPipeline, UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from facefact.model.tiny import TINY_CROSS_ATTENTION_DIM

TINY_IMAGE_SIZE = 128  # 16x16 latents


def tiny_tokenizer() -> CLIPTokenizer:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.model_max_length = 77
    return tokenizer


def tiny_unet(in_channels: int = 4) -> UNet2DConditionModel:
    """in_channels 9: the layout of SD1.5 inpainting UNets (latents, mask, masked-image latents)."""
    return UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 8, in_channels=in_channels, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64), norm_num_groups=16, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_CROSS_ATTENTION_DIM)


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=TINY_IMAGE_SIZE)


def tiny_text_encoder(vocab_size: int) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TINY_CROSS_ATTENTION_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1))


def tiny_scheduler() -> PNDMScheduler:
    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                         steps_offset=1, set_alpha_to_one=False, num_train_timesteps=1000)


def tiny_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The base pipeline, random but deterministic weights, float32 on CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = tiny_tokenizer()
        pipe = StableDiffusionPipeline(
            vae=tiny_vae(), text_encoder=tiny_text_encoder(len(tokenizer)), tokenizer=tokenizer, unet=tiny_unet(),
            scheduler=tiny_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_controlnet(unet: UNet2DConditionModel, seed: int = 0) -> ControlNetModel:
    """A tiny ControlNet for `unet` (see `acting_controlnet`), random but deterministic."""
    return acting_controlnet(unet, seed, conditioning_channels=(8, 16, 32, 32), residual_std=0.1)


def acting_controlnet(unet: UNet2DConditionModel, seed: int = 0, *, conditioning_channels=(16, 32, 96, 256),
                      residual_std: float = 0.1) -> ControlNetModel:
    """A ControlNet for `unet` (its encoder weights copied, as `ControlNetModel.from_unet` does) that
    acts, as a trained one does. `from_unet` zero-initialises the output convolutions, so a fresh
    ControlNet changes nothing; here they are random (std `residual_std`), and the conditioning
    embedding is re-initialised so the control image reaches them. The default channels are the
    SD1.5 ControlNets' (the benchmarks' full-size random models); deterministic for a seed."""
    with torch.random.fork_rng(devices=[unet.device] if unet.device.type == "cuda" else []):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(conditioning_channels))
        for module in controlnet.controlnet_cond_embedding.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.zeros_(module.bias)
        torch.nn.init.normal_(controlnet.controlnet_cond_embedding.conv_out.weight, std=0.2)
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(module.weight, std=residual_std)
    return controlnet


def tiny_sd_controlnet_pipeline(seed: int = 0) -> StableDiffusionControlNetPipeline:
    """`tiny_sd_pipeline(seed)` with a tiny ControlNet beside its UNet: the same base weights."""
    sd = tiny_sd_pipeline(seed)
    parts = {k: v for k, v in sd.components.items() if k != "image_encoder"}
    pipe = StableDiffusionControlNetPipeline(**parts, controlnet=tiny_controlnet(sd.unet, seed),
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sd_pipeline(directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny base model as a diffusers folder (what `from_pretrained` reads)."""
    directory = Path(directory)
    tiny_sd_pipeline(seed).save_pretrained(directory)
    return directory


def tiny_fact_pipeline(cls, seed: int = 0, *, inpainting_unet: bool = False, num_controlnets: int = 1,
                       face_analysis=None, layout: str | None = None):
    """`cls` (a FACT pipeline class, SD1.5 or SDXL) on the tiny base of its family and `seed`, with a
    tiny FACT adapter (of block `layout`, default "first") and encoder loaded. ControlNet classes get
    `num_controlnets` tiny ControlNets (several: a MultiControlNetModel)."""
    import inspect

    from diffusers import MultiControlNetModel

    from facefact.model.layouts import DEFAULT_LAYOUT
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter

    parameters = inspect.signature(cls.__init__).parameters
    if "text_encoder_2" in parameters:  # an SDXL pipeline
        from facefact.pipelines.tiny_xl import tiny_sdxl_pipeline, tiny_xl_inpainting_unet

        base, inpainting, extra = tiny_sdxl_pipeline(seed), tiny_xl_inpainting_unet, {}
    else:
        def inpainting(seed):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return tiny_unet(in_channels=9)
        base, extra = tiny_sd_pipeline(seed), {"requires_safety_checker": False}
    parts = {k: v for k, v in base.components.items() if k in parameters and k != "image_encoder"}
    if inpainting_unet:
        parts["unet"] = inpainting(seed)
    if "controlnet" in parameters:
        nets = [tiny_controlnet(base.unet, seed + k) for k in range(num_controlnets)]  # from the 4-channel UNet
        parts["controlnet"] = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    pipe = cls(**parts, **extra)
    pipe.set_progress_bar_config(disable=True)
    pipe._facefact_tiny = seed
    adapter = tiny_face_adapter(pipe.unet, seed=seed + 1, layout=layout or DEFAULT_LAYOUT)
    pipe.load_fact_adapter(adapter, encoder=tiny_encoder(seed), face_analysis=face_analysis)
    pipe._fact_models.update({name: {"id": f"facefact-tiny/{name}", "seed": seed} for name in ("adapter", "encoder")})
    if "controlnet" in parts:
        pipe._facefact_controlnet_info = [{"id": "facefact-tiny/controlnet", "seed": seed + k}
                                          for k in range(num_controlnets)]
    return pipe


TINY = "tiny"


def tiny_parts(pipe, adapter, encoder):
    """(adapter, encoder, their provenance entries): "tiny" as either names that part of the tiny
    pipeline `pipe` (built by `.tiny(seed)`: the seed's tiny encoder, and adapter of seed + 1, as
    `facefact train --model tiny` uses them); anything else is returned as it is."""
    named = [role for role, source in (("adapter", adapter), ("encoder", encoder))
             if isinstance(source, str) and source == TINY]
    if not named:
        return adapter, encoder, {}
    seed = getattr(pipe, "_facefact_tiny", None)
    if seed is None:
        from facefact.errors import ConfigError

        raise ConfigError(f"the tiny {' and '.join(named)} fit{'s' if len(named) == 1 else ''} only the tiny base "
                          "model", hint="pass the real files for a real base model, or build the pipeline "
                                        "with .tiny() (CLI: --model tiny)", setting=named[0])
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter

    if "adapter" in named:
        adapter = tiny_face_adapter(pipe.unet, seed=seed + 1)
    if "encoder" in named:
        encoder = tiny_encoder(seed)
    return adapter, encoder, {role: {"id": f"facefact-tiny/{role}", "seed": seed} for role in named}
