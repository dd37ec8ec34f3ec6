"""Tiny random-weight FACT inpainting pipelines for the template mode, built offline in seconds.

``kind``: "controlnet2" (ControlNet-inpaint with two tiny ControlNets: the release's OpenPose + Canny
layout), "unet9" (a 9-channel inpainting UNet, no ControlNet) or "plain" (4-channel UNet, no ControlNet).
"""
from __future__ import annotations

from facefact.errors import ConfigError

TINY_KINDS = ("controlnet2", "unet9", "plain")


def tiny_template_pipeline(kind: str = "controlnet2", *, seed: int = 0, analysis=None):
    """A FaceFactPipeline around a tiny diffusers inpainting pipeline of the given kind."""
    import torch
    from diffusers import (MultiControlNetModel, StableDiffusionControlNetInpaintPipeline,
                           StableDiffusionInpaintPipeline, UNet2DConditionModel)

    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines import FaceFactPipeline
    from facefact.pipelines.tiny import tiny_controlnet, tiny_sd_pipeline

    if kind not in TINY_KINDS:
        raise ConfigError(f"unknown tiny pipeline kind '{kind}'", hint=f"choose one of: {', '.join(TINY_KINDS)}")
    sd = tiny_sd_pipeline(seed)
    parts = {k: v for k, v in sd.components.items() if k != "image_encoder"}
    if kind == "controlnet2":
        nets = MultiControlNetModel([tiny_controlnet(sd.unet, seed + 1), tiny_controlnet(sd.unet, seed + 2)])
        pipe = StableDiffusionControlNetInpaintPipeline(**parts, controlnet=nets, requires_safety_checker=False)
    else:
        if kind == "unet9":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                parts["unet"] = UNet2DConditionModel.from_config({**sd.unet.config, "in_channels": 9})
        pipe = StableDiffusionInpaintPipeline(**parts, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    info = {"base_model": {"id": f"facefact-tiny/{kind}", "seed": seed},
            "adapter": {"id": "facefact-tiny/adapter", "seed": seed + 1},
            "encoder": {"id": "facefact-tiny/encoder", "seed": seed}}
    if kind == "controlnet2":
        info["controlnet"] = [{"id": "facefact-tiny/controlnet-face-pose"}, {"id": "facefact-tiny/controlnet-canny"}]
    return FaceFactPipeline(pipe, tiny_encoder(seed), tiny_face_adapter(pipe.unet, seed=seed + 1), analysis, info,
                            default_size=64)
