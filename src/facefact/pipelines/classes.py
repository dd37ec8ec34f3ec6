"""FACT on diffusers' SD1.5 and SDXL pipelines: each class is its diffusers parent plus `FACTMixin`.

    FACTStableDiffusionPipeline                      text-to-image
    FACTStableDiffusionImg2ImgPipeline               image-to-image
    FACTStableDiffusionInpaintPipeline               inpainting (4-channel base or 9-channel inpainting UNet)
    FACTStableDiffusionControlNetPipeline            ControlNet (one, or several as a list / MultiControlNetModel)
    FACTStableDiffusionControlNetImg2ImgPipeline     ControlNet image-to-image
    FACTStableDiffusionControlNetInpaintPipeline     ControlNet inpainting

and their SDXL twins, `FACTStableDiffusionXL...Pipeline` (text-to-image, img2img, inpaint, ControlNet,
ControlNet img2img, ControlNet inpaint), the same FACT on SDXL bases with an SDXL FACT adapter (an
adapter made for the other family is refused by name when it is loaded).

Load them as their parents (`from_pretrained`, `from_single_file`, `from_pipe`, or from another
pipeline's components: `FACTStableDiffusionInpaintPipeline(**pipe.components)`), then
`load_fact_adapter` - or not: FACT lives with the UNet, so a pipeline made on a UNet that has it
has it too. `__call__` shows the parent's signature and takes every argument of the parent, plus
FACT's keyword arguments (documented in `help(pipe.__call__)`):

    face_images   reference photos (paths, PIL images or RGB arrays) of one person
    face_tokens   instead of photos: FaceTokens from `pipe.encode_faces(...)` (or a [1, 16n, C] tensor)
    fact_scale    FACT's scale for this call only (number or per-level dict; default: set_fact_scale's)
    cfg_face      unconditional branch with the null face tokens (True, as the release) or the face's
    face_combine, fact_window, face_regions   several photos, a timestep window, several people

and returns a `FACTPipelineOutput` (diffusers' output + per-image provenance, `.save(folder)`),
or the parent's tuple with `return_dict=False`. `save_pretrained` writes a folder that diffusers
loads as the stock parent (and the FACT class as itself), with the base UNet.
"""
from __future__ import annotations

from facefact.logfilters import quiet_transformers_imports

with quiet_transformers_imports():  # facefact uses the PIL image processors; torchvision is never needed
    from diffusers import (StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetInpaintPipeline,
                           StableDiffusionControlNetPipeline, StableDiffusionImg2ImgPipeline,
                           StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLControlNetInpaintPipeline,
                           StableDiffusionXLControlNetPipeline, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline)

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


# ---- SDXL ----------------------------------------------------------------------------------------
class FACTStableDiffusionXLPipeline(FACTMixin, StableDiffusionXLPipeline):
    """SDXL text-to-image portraits of the person in `face_images=`."""


class FACTStableDiffusionXLImg2ImgPipeline(FACTMixin, StableDiffusionXLImg2ImgPipeline):
    """SDXL image-to-image with the person in `face_images=`."""


class FACTStableDiffusionXLInpaintPipeline(FACTMixin, StableDiffusionXLInpaintPipeline):
    """SDXL inpainting (4-channel base or 9-channel inpainting UNet) with the person in `face_images=`."""


class FACTStableDiffusionXLControlNetPipeline(FACTMixin, StableDiffusionXLControlNetPipeline):
    """SDXL ControlNet text-to-image; ControlNets see the text tokens only (they get no face tokens)."""


class FACTStableDiffusionXLControlNetImg2ImgPipeline(FACTMixin, StableDiffusionXLControlNetImg2ImgPipeline):
    """SDXL ControlNet image-to-image with the person in `face_images=`."""


class FACTStableDiffusionXLControlNetInpaintPipeline(FACTMixin, StableDiffusionXLControlNetInpaintPipeline):
    """SDXL ControlNet inpainting with the person in `face_images=`."""


FACT_XL_PIPELINES = (FACTStableDiffusionXLPipeline, FACTStableDiffusionXLImg2ImgPipeline,
                     FACTStableDiffusionXLInpaintPipeline, FACTStableDiffusionXLControlNetPipeline,
                     FACTStableDiffusionXLControlNetImg2ImgPipeline, FACTStableDiffusionXLControlNetInpaintPipeline)
