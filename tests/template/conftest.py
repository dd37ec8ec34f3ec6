"""Shared fixtures of the template-mode tests: the public-domain photos, a two-person photo made
from them, one FaceAnalysis for the session."""
from __future__ import annotations

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads and lose a lot on a busy machine; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def analysis():
    from facefact.faces import FaceAnalysis

    return FaceAnalysis()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def grace_hopper_path() -> str:
    import matplotlib.cbook as cbook

    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def grace_hopper(grace_hopper_path) -> np.ndarray:
    from facefact.faces import load_image

    return load_image(grace_hopper_path)


@pytest.fixture(scope="session")
def group(astronaut, grace_hopper) -> np.ndarray:
    """The astronaut (left, smaller face) and Grace Hopper (right, larger face) side by side, 512 tall."""
    h = astronaut.shape[0]
    right = cv2.resize(grace_hopper, (round(grace_hopper.shape[1] * h / grace_hopper.shape[0]), h),
                       interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.concatenate([astronaut, right], axis=1))


def _old_style_inpaint_pipe(kind: str, analysis):
    """A FaceFactPipeline around a tiny diffusers inpainting pipeline: 'controlnet2' (ControlNet-inpaint
    with two tiny ControlNets, the release's layout), 'unet9' (a 9-channel inpainting UNet) or 'plain'
    (a 4-channel UNet, no ControlNet)."""
    import torch
    from diffusers import (MultiControlNetModel, StableDiffusionControlNetInpaintPipeline,
                           StableDiffusionInpaintPipeline, UNet2DConditionModel)

    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines import FaceFactPipeline
    from facefact.pipelines.tiny import tiny_controlnet, tiny_sd_pipeline

    sd = tiny_sd_pipeline(0)
    parts = {k: v for k, v in sd.components.items() if k != "image_encoder"}
    if kind == "controlnet2":
        nets = MultiControlNetModel([tiny_controlnet(sd.unet, 1), tiny_controlnet(sd.unet, 2)])
        pipe = StableDiffusionControlNetInpaintPipeline(**parts, controlnet=nets, requires_safety_checker=False)
    else:
        if kind == "unet9":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                parts["unet"] = UNet2DConditionModel.from_config({**sd.unet.config, "in_channels": 9})
        pipe = StableDiffusionInpaintPipeline(**parts, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    info = {"base_model": {"id": f"facefact-tiny/{kind}"}, "adapter": {"id": "facefact-tiny/adapter"}}
    return FaceFactPipeline(pipe, tiny_encoder(0), tiny_face_adapter(pipe.unet, seed=1), analysis, info,
                            default_size=64)


@pytest.fixture(scope="session")
def inpaint_pipes(analysis):
    """kind -> a tiny FACT inpainting pipeline (built once per session, on demand)."""
    made = {}

    def get(kind: str):
        if kind not in made:
            made[kind] = _old_style_inpaint_pipe(kind, analysis)
        return made[kind]
    return get


@pytest.fixture
def fast_settings():
    """Tiny-model settings: a 64 px crop, 10 nominal steps (6 main, 1 refine), a short prompt."""
    from facefact.template.settings import TemplateSettings

    def make(**changes):
        base = dict(prompt="a portrait", negative_prompt="blurry", crop_size=64, steps=10)
        return TemplateSettings(**{**base, **changes})
    return make
