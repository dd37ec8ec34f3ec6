"""Validation images during training, made by the real inference pipeline.

A diffusers `StableDiffusionPipeline` is assembled from the training run's own components (the
frozen UNet with the adapter attached, VAE, text encoder(s), tokenizer(s), and a fresh scheduler from
the base model's scheduler config) as a `FACTStableDiffusionPipeline` (SDXL:
`FACTStableDiffusionXLPipeline`), which uses the already-attached
adapter as it is. So a validation image is exactly what that pipeline makes with the current
weights: face tokens of the data set's condition face, null-face classifier-free guidance (the
empty prompt *and* the null face tokens on the unconditional side, spec section 5 `cfg_face`),
seeds `seed + prompt number`.

Validating never changes what training does next: the pipeline draws from its own seeded CPU
generators, the global RNG state is forked around it, and the adapter's scale is put back afterwards.
"""
from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from facefact.model import FaceAdapter

VALIDATION_SCHEDULER = "ddim"
VALIDATION_ADAPTER_SCALE = 1.0  # the scale the adapter is trained at


def validation_pipeline(base, unet, encoder, adapter: FaceAdapter):
    """A FACT pipeline over the training components; `unet` is the bare UNet (not a DDP wrapper)
    that `adapter` is attached to."""
    from facefact.pipelines import FACTStableDiffusionPipeline, FACTStableDiffusionXLPipeline
    from facefact.pipelines.loading import make_scheduler

    # The base model's own inference scheduler (never training's noise scheduler), then switched the
    # diffusers way - what a user does with the pipeline
    scheduler = make_scheduler("pndm", base.scheduler_config)
    if base.text_encoder_2 is not None:  # SDXL: both text encoders, as the base pipeline has them
        pipe = FACTStableDiffusionXLPipeline(vae=base.vae, text_encoder=base.text_encoder,
                                             text_encoder_2=base.text_encoder_2, tokenizer=base.tokenizer,
                                             tokenizer_2=base.tokenizer_2, unet=unet, scheduler=scheduler,
                                             add_watermarker=False)
    else:
        pipe = FACTStableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                           unet=unet, scheduler=scheduler, safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = make_scheduler(VALIDATION_SCHEDULER, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_fact_adapter(adapter, encoder=encoder)
    return pipe


def validation_indices(dataset, samples: int) -> list[int]:
    """The first photo of each person first (rows show different people), then more photos."""
    firsts = dataset.samples.first_of_each_identity()[:samples]
    taken = set(firsts)
    more = (i for i in range(len(dataset)) if i not in taken)  # lazily: a set may hold a million
    return firsts + list(itertools.islice(more, samples - len(firsts)))


@torch.no_grad()
def save_validation_grid(path: Path, pipe, dataset, prompts, *, samples: int, size: int, steps: int,
                         guidance: float, seed: int, autocast_dtype: torch.dtype | None = None,
                         step: int | None = None) -> Path:
    """Rows: condition face, then one image per prompt; one row per validation sample, each of a
    different person when the set has enough. Labelled: a header with the step and the prompts, a
    band above each row with the person's identity; the same labels go into the PNG's text chunks."""
    adapter = pipe.fact_adapter
    scale = adapter.scale
    device = pipe.device
    fork_devices = [device] if device.type == "cuda" else []
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype not in (None, torch.float32)
                else contextlib.nullcontext())
    rows, identities = [], []
    try:
        with torch.random.fork_rng(devices=fork_devices), autocast:
            for index in validation_indices(dataset, samples):
                condition = dataset.own_condition(index)[None]  # [1, 3, 112, 112] in [-1, 1]; never shuffled
                face = ((condition[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
                cells = [np.asarray(Image.fromarray(face).resize((size, size)))]
                for j, prompt in enumerate(prompts):
                    faces = pipe.encode_faces(face_pixels=condition)
                    out = pipe(prompt, face_tokens=faces, generator=torch.Generator("cpu").manual_seed(seed + j),
                               num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                               fact_scale=VALIDATION_ADAPTER_SCALE, cfg_face=True)
                    cells.append(np.asarray(out.images[0].convert("RGB")))
                rows.append(np.concatenate(cells, axis=1))
                identities.append(str(dataset.samples[index]["identity"]))
    finally:
        adapter.set_scale(scale)
    columns = [f"step {step}: condition" if step is not None else "condition", *prompts]
    grid, layout = labelled_grid(rows, columns, identities, size)
    info = PngInfo()
    info.add_text("facefact:validation", json.dumps({"step": step, "columns": columns, "identities": identities,
                                                      "seeds": [seed + j for j in range(len(prompts))], **layout}))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, pnginfo=info)
    return path


LABEL_LINE_PX = 13


def _fit(draw, text: str, font, width: int, lines: int) -> list[str]:
    """`text` wrapped into at most `lines` lines of `width` px, the last cut with '...' if needed."""
    words, out = text.split(), [""]
    for word in words:
        trial = f"{out[-1]} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not out[-1]:
            out[-1] = trial
        elif len(out) < lines:
            out.append(word)
        else:
            out[-1] += " " + word
    for i, line in enumerate(out):
        while draw.textlength(line, font=font) > width and len(line) > 1:
            line = line[:-2] + "\u2026"
        out[i] = line
    return out


def labelled_grid(rows: list[np.ndarray], columns: list[str], identities: list[str], size: int):
    """The image rows under a header (one label per column) and a band naming each row's person;
    returns the image and where the cells are (`header_px`, `row_band_px`, `cell_px`)."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    header_px, band_px = 2 * LABEL_LINE_PX + 4, LABEL_LINE_PX + 2
    width = size * len(columns)
    canvas = Image.new("RGB", (width, header_px + len(rows) * (band_px + size)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, label in enumerate(columns):
        for k, line in enumerate(_fit(draw, label, font, size - 4, 2)):
            draw.text((j * size + 2, 2 + k * LABEL_LINE_PX), line, fill="black", font=font)
    for i, (row, identity) in enumerate(zip(rows, identities)):
        top = header_px + i * (band_px + size)
        draw.text((2, top + 1), _fit(draw, f"identity: {identity}", font, width - 4, 1)[0], fill="black", font=font)
        canvas.paste(Image.fromarray(row), (0, top + band_px))
    return canvas, {"header_px": header_px, "row_band_px": band_px, "cell_px": size}
