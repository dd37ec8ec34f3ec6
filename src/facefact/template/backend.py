"""The one place the template mode touches a generation pipeline.

It runs on the diffusers-native FACT inpainting pipelines of either base family:
``FACTStableDiffusionInpaintPipeline`` / ``FACTStableDiffusionXLInpaintPipeline`` (a 4-channel base,
or a 9-channel inpainting checkpoint) and ``FACTStableDiffusionControlNetInpaintPipeline`` /
``FACTStableDiffusionXLControlNetInpaintPipeline`` (one ControlNet, or several), called with
``face_tokens`` (encoded once per person), ``fact_scale``, ``cfg_face`` and a seeded ``generator`` beside
the diffusers parent's own arguments (whose mask processor binarises the mask, and whose 4-channel
branch keeps the latents outside it). The family is the UNet config's (SDXL: text-time
conditioning), never a guess from names. One call makes one image of one pass from an
:class:`InpaintRequest`.
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
    face_tokens: object               # FaceTokens of the identity (pipe.encode_faces), made once
    seed: int
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineInfo:
    """What the template mode needs to know about a pipeline before calling it."""

    num_controlnets: int     # 0, 1 or more
    unet_in_channels: int    # 4 (a plain base, latent blending) or 9 (an inpainting checkpoint)
    name: str
    family: str = "sd15"     # the base family, from the UNet config: "sd15" or "sdxl"


def _inpaint_classes(family: str) -> tuple[str, str]:
    return (("FACTStableDiffusionXLInpaintPipeline", "FACTStableDiffusionXLControlNetInpaintPipeline")
            if family == "sdxl" else
            ("FACTStableDiffusionInpaintPipeline", "FACTStableDiffusionControlNetInpaintPipeline"))


def inspect_pipeline(pipe) -> PipelineInfo:
    """Classify ``pipe`` and refuse one that cannot inpaint (naming what to use instead), and one
    whose ControlNets are for the other base family (naming both)."""
    from facefact.model.layouts import unet_family
    from facefact.pipelines.loading import check_controlnet_fits

    call = inspect.signature(type(pipe).__call__).parameters
    unet = getattr(pipe, "unet", None)
    family = unet_family(unet) if unet is not None else "sd15"
    plain, with_controlnet = _inpaint_classes(family)
    if not hasattr(pipe, "set_fact_scale"):
        raise ConfigError(f"{type(pipe).__name__} is not a FACT pipeline",
                          hint=f"use {plain} or {with_controlnet} (facefact.pipelines), with load_fact_adapter(...) "
                               "done")
    if "mask_image" not in call:  # a FACT twin's __call__ shows its diffusers parent's parameters
        raise ConfigError(f"{type(pipe).__name__} cannot inpaint (it takes no mask_image); the template mode "
                          "redraws a face inside an existing photo",
                          hint=f"use {plain}, or {with_controlnet} for the released OpenPose + Canny setup (e.g. "
                               f"{plain}.from_pipe(pipe) from a text-to-image one)")
    pipe._require_fact()  # no adapter loaded: a clear error now, not after the first pass
    controlnet = getattr(pipe, "controlnet", None)
    count = 0 if controlnet is None else len(getattr(controlnet, "nets", [controlnet]))
    if controlnet is not None:  # an SD1.5 ControlNet on SDXL fails deep inside the first step otherwise
        check_controlnet_fits(controlnet, pipe.unet)
    return PipelineInfo(num_controlnets=count, unet_in_channels=int(pipe.unet.config.in_channels),
                        name=type(pipe).__name__, family=family)


def _control_kwargs(request: InpaintRequest, info: PipelineInfo) -> dict:
    if info.num_controlnets == 0:
        return {}
    images = [Image.fromarray(c) for c in request.controls]
    if info.num_controlnets == 1:
        return {"control_image": images[0], "controlnet_conditioning_scale": float(request.control_scales[0])}
    return {"control_image": images, "controlnet_conditioning_scale": [float(s) for s in request.control_scales]}


def run_inpaint(pipe, info: PipelineInfo, request: InpaintRequest):
    """(the image as RGB uint8, the pipeline's output object: provenance, notes, model files)."""
    import torch

    from facefact.pipelines.loading import make_scheduler

    size = request.image.shape[0]
    previous = pipe.scheduler
    pipe.scheduler = make_scheduler(request.scheduler, previous.config)  # from the base model's own config
    try:
        out = pipe(request.prompt, negative_prompt=request.negative_prompt or None,
                   image=Image.fromarray(request.image),
                   mask_image=Image.fromarray((request.mask > 0).astype(np.uint8) * 255, mode="L"),
                   strength=float(request.strength), num_inference_steps=int(request.steps),
                   guidance_scale=float(request.guidance_scale), height=size, width=size,
                   face_tokens=request.face_tokens, fact_scale=float(request.fact_scale), cfg_face=request.cfg_face,
                   generator=torch.Generator("cpu").manual_seed(int(request.seed)),
                   **_control_kwargs(request, info), **request.extra)
    finally:
        pipe.scheduler = previous
    return np.asarray(out.images[0].convert("RGB"), dtype=np.uint8), out
