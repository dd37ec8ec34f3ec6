"""Tiny random-weight FACT inpainting pipelines for the template mode, built offline in seconds.

``kind``: "controlnet2" (ControlNet-inpaint with two tiny ControlNets: the release's OpenPose + Canny
layout), "unet9" (a 9-channel inpainting UNet, no ControlNet) or "plain" (4-channel UNet, no ControlNet);
``family``: "sd15" (the tiny SD1.5 layout) or "sdxl" (the tiny SDXL layout, with tiny SDXL ControlNets).
"""
from __future__ import annotations

from facefact.errors import ConfigError

TINY_KINDS = ("controlnet2", "unet9", "plain")


def tiny_kind_options(kind: str) -> dict:
    """load_fact_pipeline's arguments for a tiny template pipeline of ``kind``."""
    if kind not in TINY_KINDS:
        raise ConfigError(f"unknown tiny pipeline kind '{kind}'", hint=f"choose one of: {', '.join(TINY_KINDS)}")
    return {"controlnet": ["tiny", "tiny"] if kind == "controlnet2" else None, "inpainting_unet": kind == "unet9"}


def tiny_template_pipeline(kind: str = "controlnet2", *, seed: int = 0, analysis=None, family: str = "sd15"):
    """A tiny FACT inpainting pipeline of the given kind and base family
    (FACTStableDiffusion[XL][ControlNet]InpaintPipeline)."""
    from facefact.pipelines.build import pipeline_class

    if family not in ("sd15", "sdxl"):
        raise ConfigError(f"unknown base family '{family}'", hint="choose sd15 or sdxl")
    options = tiny_kind_options(kind)
    cls = pipeline_class("inpaint", controlnet=bool(options["controlnet"]), family=family)
    if options["controlnet"]:
        return cls.tiny(seed, num_controlnets=2, face_analysis=analysis)
    return cls.tiny(seed, inpainting_unet=options["inpainting_unet"], face_analysis=analysis)
