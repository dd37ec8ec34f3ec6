"""Validation images during training, made by the real inference pipeline.

A diffusers `StableDiffusionPipeline` is assembled from the training run's own components (the
frozen UNet with the adapter attached, VAE, text encoder, tokenizer, and a fresh scheduler from the
base model's scheduler config) as a `FACTStableDiffusionPipeline`, which uses the already-attached
adapter as it is. So a validation image is exactly what that pipeline makes with the current
weights: face tokens of the data set's condition face, null-face classifier-free guidance (the
empty prompt *and* the null face tokens on the unconditional side, spec section 5 `cfg_face`),
seeds `seed + prompt number`.

Validating never changes what training does next: the pipeline draws from its own seeded CPU
generators, the global RNG state is forked around it, and the adapter's scale is put back afterwards.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facefact.model import FaceAdapter

VALIDATION_SCHEDULER = "ddim"
VALIDATION_ADAPTER_SCALE = 1.0  # the scale the adapter is trained at


@torch.no_grad()
def encode_prompts(base, prompts: list[str], device) -> torch.Tensor:
    ids = base.tokenizer(prompts, padding="max_length", max_length=base.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(device)
    return base.text_encoder(ids)[0]


def validation_pipeline(base, unet, encoder, adapter: FaceAdapter):
    """A FACT pipeline over the training components; `unet` is the bare UNet (not a DDP wrapper)
    that `adapter` is attached to."""
    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.pipelines.loading import make_scheduler

    # The base model's own inference scheduler (never training's noise scheduler), then switched the
    # diffusers way - what a user does with the pipeline
    pipe = FACTStableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                       unet=unet, scheduler=make_scheduler("pndm", base.scheduler_config),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler(VALIDATION_SCHEDULER, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_fact_adapter(adapter, encoder=encoder)
    return pipe


@torch.no_grad()
def save_validation_grid(path: Path, pipe, dataset, prompts, *, samples: int, size: int, steps: int,
                         guidance: float, seed: int, autocast_dtype: torch.dtype | None = None) -> Path:
    """Rows: condition face, then one image per prompt; one row per validation sample."""
    adapter = pipe.fact_adapter
    scale = adapter.scale
    device = pipe.device
    fork_devices = [device] if device.type == "cuda" else []
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype not in (None, torch.float32)
                else contextlib.nullcontext())
    rows = []
    try:
        with torch.random.fork_rng(devices=fork_devices), autocast:
            for index in range(min(samples, len(dataset))):
                condition = dataset[index]["condition"][None]  # [1, 3, 112, 112] in [-1, 1]
                face = ((condition[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
                cells = [np.asarray(Image.fromarray(face).resize((size, size)))]
                for j, prompt in enumerate(prompts):
                    faces = pipe.encode_faces(face_pixels=condition)
                    out = pipe(prompt, face_tokens=faces, generator=torch.Generator("cpu").manual_seed(seed + j),
                               num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                               fact_scale=VALIDATION_ADAPTER_SCALE, cfg_face=True)
                    cells.append(np.asarray(out.images[0].convert("RGB")))
                rows.append(np.concatenate(cells, axis=1))
    finally:
        adapter.set_scale(scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
