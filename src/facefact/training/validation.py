"""Validation images during training: a plain DDIM loop with face classifier-free guidance.

Kept self-contained (no pipeline object) so it runs with the UNet exactly as training holds it:
adapter attached, frozen weights in the training dtype. The unconditional branch uses the empty
prompt *and the null face tokens* (spec section 5, `cfg_face`). Uses its own generators only, so
validating never changes what training does next.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facefact.model import FaceAdapter


@torch.no_grad()
def encode_prompts(base, prompts: list[str], device) -> torch.Tensor:
    ids = base.tokenizer(prompts, padding="max_length", max_length=base.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)
    return base.text_encoder(ids)[0]


@torch.no_grad()
def generate(base, adapter: FaceAdapter, encoder_tokens: torch.Tensor, prompt: str, *, size: int, steps: int,
             guidance: float, seed: int, device, dtype) -> np.ndarray:
    """One image [size, size, 3] uint8 for one face (encoder tokens [1, 144, D]) and one prompt."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(base.scheduler_config)
    scheduler.set_timesteps(steps, device=device)
    text = encode_prompts(base, ["", prompt], device).to(dtype)
    faces = torch.cat([adapter.null_face_tokens(1), adapter.face_tokens(encoder_tokens)]).to(dtype)
    hidden = torch.cat([text, faces], dim=1)  # [uncond, cond]
    generator = torch.Generator().manual_seed(seed)
    channels = base.unet.config.in_channels
    latents = torch.randn(1, channels, size // 8, size // 8, generator=generator).to(device, dtype)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        uncond, cond = base.unet(model_input, t, encoder_hidden_states=hidden).sample.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    image = base.vae.decode(latents / base.vae.config.scaling_factor).sample[0]
    return ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def save_validation_grid(path: Path, base, adapter: FaceAdapter, encoder, dataset, prompts, *, samples: int,
                         size: int, steps: int, guidance: float, seed: int, device, dtype) -> Path:
    """Rows: condition face, then one image per prompt; one row per validation sample."""
    rows = []
    for index in range(min(samples, len(dataset))):
        condition = dataset[index]["condition"][None].to(device)
        tokens = encoder(condition.float())
        face = ((condition[0].float().cpu() + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        cells = [np.asarray(Image.fromarray(face).resize((size, size)))]
        cells += [generate(base, adapter, tokens, prompt, size=size, steps=steps, guidance=guidance, seed=seed + j,
                           device=device, dtype=dtype) for j, prompt in enumerate(prompts)]
        rows.append(np.concatenate(cells, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
