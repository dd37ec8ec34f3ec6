"""FACT on every SD1.5 pipeline of diffusers: each class is its diffusers parent plus `FACTMixin`.

    FACTStableDiffusionPipeline                      text-to-image
    FACTStableDiffusionImg2ImgPipeline               image-to-image
    FACTStableDiffusionInpaintPipeline               inpainting (4-channel base or 9-channel inpainting UNet)
    FACTStableDiffusionControlNetPipeline            ControlNet (one, or several as a list / MultiControlNetModel)
    FACTStableDiffusionControlNetImg2ImgPipeline     ControlNet image-to-image
    FACTStableDiffusionControlNetInpaintPipeline     ControlNet inpainting

Load them as their parents (`from_pretrained`, `from_single_file`, or from another pipeline's
components: `FACTStableDiffusionInpaintPipeline(**pipe.components)`), then `load_fact_adapter`.
`__call__` takes every argument of the parent, plus:

    face_images   reference photos (paths, PIL images or RGB arrays) of one person
    face_tokens   instead of photos: FaceTokens from `pipe.encode_faces(...)` (or a [1, 16n, C] tensor)
    fact_scale    FACT's scale for this call only (number or per-level dict; default: set_fact_scale's)
    cfg_face      unconditional branch with the null face tokens (True, as the release) or the face's

and returns a `FACTPipelineOutput` (diffusers' output + per-image provenance, `.save(folder)`),
or the parent's tuple with `return_dict=False`.
"""
from __future__ import annotations

from facefact.logfilters import quiet_transformers_imports

with quiet_transformers_imports():  # facefact uses the PIL image processors; torchvision is never needed
    from diffusers import (StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetInpaintPipeline,
                           StableDiffusionControlNetPipeline, StableDiffusionImg2ImgPipeline,
                           StableDiffusionInpaintPipeline, StableDiffusionPipeline)

from facefact.pipelines.mixin import FACTMixin


class FACTStableDiffusionPipeline(FACTMixin, StableDiffusionPipeline):
    """Text-to-image portraits of the person in `face_images=`."""


class FACTStableDiffusionImg2ImgPipeline(FACTMixin, StableDiffusionImg2ImgPipeline):
    """Image-to-image with the person in `face_images=`."""


class FACTStableDiffusionInpaintPipeline(FACTMixin, StableDiffusionInpaintPipeline):
    """Inpainting (4-channel base or 9-channel inpainting UNet) with the person in `face_images=`."""


class FACTStableDiffusionControlNetPipeline(FACTMixin, StableDiffusionControlNetPipeline):
    """ControlNet text-to-image; ControlNets see the text tokens only (they get no face tokens)."""


class FACTStableDiffusionControlNetImg2ImgPipeline(FACTMixin, StableDiffusionControlNetImg2ImgPipeline):
    """ControlNet image-to-image with the person in `face_images=`."""


class FACTStableDiffusionControlNetInpaintPipeline(FACTMixin, StableDiffusionControlNetInpaintPipeline):
    """ControlNet inpainting with the person in `face_images=` (FACT's template mode runs on it)."""


FACT_PIPELINES = (FACTStableDiffusionPipeline, FACTStableDiffusionImg2ImgPipeline, FACTStableDiffusionInpaintPipeline,
                  FACTStableDiffusionControlNetPipeline, FACTStableDiffusionControlNetImg2ImgPipeline,
                  FACTStableDiffusionControlNetInpaintPipeline)
