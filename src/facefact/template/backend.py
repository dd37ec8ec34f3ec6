"""The one place the template mode touches a generation pipeline.

Two kinds of pipeline are accepted:

* the diffusers-native FACT inpainting pipelines (``FACTStableDiffusionInpaintPipeline``,
  ``FACTStableDiffusionControlNetInpaintPipeline``): called with ``face_images``, ``fact_scale``,
  ``cfg_face`` and a ``generator`` beside the diffusers parent's own arguments;
* the older :class:`facefact.pipelines.FaceFactPipeline` wrapping a diffusers inpainting pipeline
  (``seed=`` and ``adapter_scale=``).

Either way one call makes one image of one pass from an :class:`InpaintRequest`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from facefact.errors import ConfigError


@dataclass
class InpaintRequest:
    prompt: str
    negative_prompt: str
    image: np.ndarray                 # RGB uint8, size x size
    mask: np.ndarray                  # 0/1, size x size
    controls: list[np.ndarray]        # one RGB map per ControlNet, in their order
    control_scales: list[float]
    strength: float
    steps: int
    guidance_scale: float
    scheduler: str
    fact_scale: float
    cfg_face: bool
    face_images: list[np.ndarray]     # the identity's photo(s)
    seed: int
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineInfo:
    """What the template mode needs to know about a pipeline before calling it."""

    style: str               # "native" (diffusers subclass with face_images=) or "wrapper" (FaceFactPipeline)
    num_controlnets: int     # 0, 1 or more
    unet_in_channels: int    # 4 (plain SD1.5, latent blending) or 9 (an inpainting checkpoint)
    model_info: dict


def _diffusers_pipeline(pipe):
    return pipe.sd if hasattr(pipe, "sd") and hasattr(pipe, "adapter") else pipe


def inspect_pipeline(pipe) -> PipelineInfo:
    """Classify ``pipe`` and refuse one that cannot inpaint, naming what to use instead."""
    sd = _diffusers_pipeline(pipe)
    style = "wrapper" if sd is not pipe else "native"
    if style == "native" and "face_images" not in inspect.signature(type(pipe).__call__).parameters:
        raise ConfigError(f"{type(pipe).__name__} is not a FACT pipeline (its call takes no face_images)",
                          hint="use FACTStableDiffusionInpaintPipeline or FACTStableDiffusionControlNetInpaintPipeline")
    if "mask_image" not in inspect.signature(type(sd).__call__).parameters:
        raise ConfigError(f"{type(sd).__name__} cannot inpaint (it takes no mask_image); the template mode "
                          "redraws a face inside an existing photo",
                          hint="use an inpainting pipeline: FACTStableDiffusionInpaintPipeline, or the "
                               "ControlNet one for the released OpenPose + Canny setup")
    controlnet = getattr(sd, "controlnet", None)
    count = 0 if controlnet is None else len(getattr(controlnet, "nets", [controlnet]))
    info = dict(getattr(pipe, "model_info", None) or getattr(pipe, "fact_model_info", None) or {})
    return PipelineInfo(style=style, num_controlnets=count, unet_in_channels=int(sd.unet.config.in_channels),
                        model_info=info)


def _control_kwargs(request: InpaintRequest, info: PipelineInfo) -> dict:
    if info.num_controlnets == 0:
        return {}
    images = [Image.fromarray(c) for c in request.controls]
    if info.num_controlnets == 1:
        return {"control_image": images[0], "controlnet_conditioning_scale": float(request.control_scales[0])}
    return {"control_image": images, "controlnet_conditioning_scale": [float(s) for s in request.control_scales]}


def run_inpaint(pipe, info: PipelineInfo, request: InpaintRequest) -> tuple[np.ndarray, dict, list[str]]:
    """(the image as RGB uint8, that image's provenance from the pipeline or {}, the pipeline's notes)."""
    import torch

    size = request.image.shape[0]
    common = dict(negative_prompt=request.negative_prompt or None, image=Image.fromarray(request.image),
                  mask_image=Image.fromarray((request.mask > 0).astype(np.uint8) * 255, mode="L"),
                  strength=float(request.strength), num_inference_steps=int(request.steps),
                  guidance_scale=float(request.guidance_scale), height=size, width=size,
                  **_control_kwargs(request, info), **request.extra)
    if info.style == "wrapper":
        out = pipe(request.prompt, face_images=request.face_images, adapter_scale=float(request.fact_scale),
                   cfg_face=request.cfg_face, seed=int(request.seed), scheduler=request.scheduler, **common)
    else:
        from facefact.pipelines.loading import make_scheduler

        previous = pipe.scheduler
        pipe.scheduler = make_scheduler(request.scheduler, previous.config)
        try:
            out = pipe(request.prompt, face_images=request.face_images, fact_scale=float(request.fact_scale),
                       cfg_face=request.cfg_face, generator=torch.Generator("cpu").manual_seed(int(request.seed)),
                       **common)
        finally:
            pipe.scheduler = previous
    image = out.images[0]
    meta = (getattr(out, "metadata", None) or [{}])[0]
    return np.asarray(image.convert("RGB"), dtype=np.uint8), dict(meta), list(getattr(out, "notes", None) or [])
