"""The release's optional "pose stage": a text-to-image FACT portrait of the new person, made only for
its face - landmarks and region shaped by the identity as the model draws it - which are then
warped onto the template face (by the same 5-point similarity as a photo's).

It runs on a text-to-image sibling of the inpainting pipeline, of its base family (the same
modules: UNet with FACT, VAE, text encoder(s)). As in the release, the portrait follows the
template crop's body pose: the pose (MediaPipe, facefact.faces.pose) is drawn as an OpenPose map
for the pipeline's own OpenPose ControlNet (the one `controls` reads "face_pose" with). Without MediaPipe, a pose found or an
OpenPose ControlNet the stage runs unconditioned, and says so. A 9-channel inpainting UNet cannot
draw from noise alone, so there the stage is skipped with a note, as it is when the portrait shows
no face; the face photo's own geometry is used then.
"""
from __future__ import annotations

import numpy as np

from facefact.template.prepare import Identity


def body_pose_control(crop_rgb: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """(the crop's body pose drawn as an OpenPose map, None), or (None, why there is none)."""
    from facefact.errors import FacefactError
    from facefact.faces.pose import body_pose, draw_openpose

    try:
        return draw_openpose(body_pose(crop_rgb)), None
    except FacefactError as err:  # MediaPipe is not installed (ConfigError), or no pose found (FaceError)
        return None, err.message


def openpose_controlnet(pipe, controls: tuple[str, ...]):
    """The pipeline's ControlNet that reads the face-pose map (an OpenPose one), or None."""
    nets = getattr(pipe, "controlnet", None)
    if nets is None or "face_pose" not in controls:
        return None
    listed = list(nets.nets) if hasattr(nets, "nets") else [nets]
    index = controls.index("face_pose")
    return listed[index] if index < len(listed) else None


def text_to_image_sibling(pipe, controlnet=None):
    """The text-to-image FACT pipeline of ``pipe``'s base family (FACTStableDiffusion[XL]Pipeline, or
    its ControlNet twin with `controlnet`) on ``pipe``'s modules: FACT lives with the shared UNet, so
    the sibling has ``pipe``'s adapter."""
    from facefact.logfilters import dropped_log_messages, empty_fp32_notice
    from facefact.model.layouts import unet_family
    from facefact.pipelines.build import pipeline_class

    cls = pipeline_class("txt2img", controlnet=controlnet is not None, family=unet_family(pipe.unet))
    with dropped_log_messages("diffusers.models.modeling_utils", empty_fp32_notice):  # from_pipe's .to(dtype)
        sibling = cls.from_pipe(pipe, **({"controlnet": controlnet} if controlnet is not None else {}))
    sibling.set_progress_bar_config(disable=True)
    return sibling


def pose_stage_shape(sibling, info, face_tokens, settings, seed: int, size: int, analysis,
                     number: int, control: np.ndarray | None = None) -> tuple[Identity | None, str | None]:
    """(the portrait as an Identity for geometry, None) or (None, why it was not used). `control`: the
    body-pose map for a ControlNet sibling."""
    import torch
    from PIL import Image

    from facefact.pipelines.loading import make_scheduler

    if info.unet_in_channels != 4:
        return None, (f"pose stage, face {number}: skipped, a {info.unet_in_channels}-channel inpainting UNet "
                      "cannot draw a portrait from noise; the face photo's landmarks are used")
    sibling.scheduler = make_scheduler(settings.scheduler, sibling.scheduler.config)
    image = sibling(settings.prompt, negative_prompt=settings.negative_prompt or None, face_tokens=face_tokens,
                    fact_scale=float(settings.pose_fact_scale), cfg_face=settings.cfg_face, height=size, width=size,
                    num_inference_steps=int(settings.pose_steps or settings.steps),
                    guidance_scale=float(settings.guidance_scale),
                    generator=torch.Generator("cpu").manual_seed(int(seed)),
                    **({"image": Image.fromarray(control)} if control is not None else {})).images[0]
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    faces = analysis.get(rgb)
    if not faces:
        return None, (f"pose stage, face {number}: no face in the generated portrait; "
                      "the face photo's landmarks are used")
    return Identity(photos=[rgb], faces=[faces[0]]), None
