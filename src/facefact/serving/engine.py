"""The one place the server touches the generation pipeline.

`Engine.generate` turns a job (photos + `GenerateSettings`) into PNG bytes with provenance by
calling the library's pipeline object - the server never re-implements generation. Progress and
stopping go through the pipeline's `callback_on_step_end`: `on_step(step, total)` is called after
every denoising step and may raise (cancel, timeout) to stop the job between steps.
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from facefact.serving.presets import apply_style
from facefact.serving.schemas import GenerateSettings


@dataclass
class GeneratedPNG:
    png: bytes              # the file, with the provenance chunks (JSON, A1111 line, XMP)
    seed: int
    metadata: dict


@dataclass
class EngineResult:
    images: list[GeneratedPNG]
    notes: list[str] = field(default_factory=list)


def encode_png(image, meta: dict) -> bytes:
    """PNG bytes with facefact's provenance, exactly what `write_png` puts in a file."""
    from facefact.pipelines.metadata import png_info

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(meta))
    return buffer.getvalue()


class Engine:
    """One loaded pipeline on one device. Not thread safe: one worker thread owns it."""

    def __init__(self, pipeline, name: str = "engine0"):
        self.pipeline = pipeline
        self.name = name
        self._busy = threading.Lock()  # a second caller would interleave two requests' adapter state
        pipeline.sd.set_progress_bar_config(disable=True)  # progress goes to the job, not to stderr

    @property
    def default_size(self) -> int:
        return int(self.pipeline.default_size)

    def generate(self, photos: list[np.ndarray], settings: GenerateSettings,
                 on_step: Callable[[int, int], None] | None = None) -> EngineResult:
        prompt, negative = apply_style(settings.style, settings.prompt, settings.negative_prompt)
        total = settings.steps

        def callback(pipe, step, timestep, kwargs):
            nonlocal total
            total = int(getattr(pipe, "num_timesteps", None) or total)  # PNDM runs steps + 1 model calls
            if on_step is not None:
                on_step(step + 1, total)
            return kwargs

        with self._busy:
            out = self.pipeline(prompt, face_images=list(photos), negative_prompt=negative,
                                adapter_scale=settings.fact_scale, cfg_face=settings.cfg_face,
                                num_images_per_prompt=settings.num_images, seed=settings.seed,
                                num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                                height=settings.height, width=settings.width, scheduler=settings.scheduler,
                                callback_on_step_end=callback)
        images = []
        for image, meta in zip(out.images, out.metadata):
            if settings.style:
                meta["style"] = settings.style
            images.append(GeneratedPNG(png=encode_png(image, meta), seed=int(meta["seed"]), metadata=meta))
        return EngineResult(images=images, notes=list(out.notes))
