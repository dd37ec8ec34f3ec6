"""The optional pose stage: a text-to-image portrait of the person whose face shapes the new face."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from facefact.template import pose_stage
from facefact.template.faces import find_faces
from facefact.template.portrait import TemplatePortrait
from facefact.template.prepare import Identity, plan_target


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_on_tiny_models_it_runs_and_falls_back(family, inpaint_pipes, fast_settings, analysis, astronaut,
                                               grace_hopper):
    from facefact.pipelines.build import pipeline_class

    pipe = inpaint_pipes("controlnet2", family)
    maker = TemplatePortrait(pipe, analysis=analysis, settings=fast_settings(pose_stage=True, refine=False))
    out = maker(astronaut, grace_hopper, seed=4)
    assert any("no face in the generated portrait" in n for n in out.notes)  # tiny weights draw noise
    assert out.metadata[0]["redrawn_faces"][0]["shape_from"] == "face photo"
    assert out.metadata[0]["template_settings"]["pose_stage"] is True
    assert maker._sibling.unet is pipe.unet and pipe.fact_adapter.is_attached_to(pipe.unet)
    with_pose = hasattr(maker._sibling, "controlnet")  # a body pose found (MediaPipe): the ControlNet twin
    assert type(maker._sibling) is pipeline_class("txt2img", controlnet=with_pose, family=family)
    again = maker(astronaut, grace_hopper, seed=4, settings=fast_settings(refine=False))  # FACT still attached
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(out.images[0]))  # same geometry, same seed
    nine = TemplatePortrait(inpaint_pipes("unet9", family), analysis=analysis, settings=fast_settings(pose_stage=True))
    assert any("cannot draw a portrait from noise" in n for n in nine(astronaut, grace_hopper, seed=0).notes)


def test_a_drawn_face_shapes_the_mask(inpaint_pipes, fast_settings, analysis, astronaut, grace_hopper, monkeypatch):
    drawn = cv2.resize(grace_hopper[60:420, 100:440], (64, 64), interpolation=cv2.INTER_AREA)
    calls = []

    class Drawing:  # stands in for the text-to-image sibling: "draws" Grace Hopper's face
        scheduler = inpaint_pipes("controlnet2").scheduler

        def __call__(self, prompt, **kwargs):
            calls.append(kwargs)
            return SimpleNamespace(images=[Image.fromarray(drawn)])

    monkeypatch.setattr(pose_stage, "text_to_image_sibling", lambda pipe, controlnet=None: Drawing())
    settings = fast_settings(pose_stage=True, refine=False, crop_size=256)
    maker = TemplatePortrait(inpaint_pipes("controlnet2"), analysis=analysis, settings=settings)
    out = maker(astronaut, grace_hopper, seed=1)
    assert out.metadata[0]["redrawn_faces"][0]["shape_from"] == "pose stage portrait"
    assert calls[0]["fact_scale"] == 0.5 and calls[0]["height"] == 256 and calls[0]["face_tokens"] is not None
    faces = find_faces(analysis, astronaut)
    shaped = plan_target(astronaut, faces, faces[0], out.plans[0].identity, settings,
                         shape_from=Identity([drawn], [analysis.get(drawn)[0]]))
    assert shaped.shape_from == "pose stage portrait"
    assert not np.array_equal(shaped.new_face_mask, out.plans[0].new_face_mask)  # plans[0]: the photo's shape


def test_it_follows_the_template_crops_body_pose_through_the_openpose_controlnet(
        inpaint_pipes, fast_settings, analysis, astronaut, grace_hopper, monkeypatch):
    """As in the release, the pose-stage portrait is conditioned on the template crop's body pose: the
    sibling is a ControlNet pipeline on the pipeline's own OpenPose ControlNet (the face_pose one), and
    its image is the crop's pose map. Without MediaPipe it runs unconditioned, and says so."""
    import sys

    import pytest

    pytest.importorskip("mediapipe", reason="the mediapipe extra is not installed")
    from facefact.pipelines import FACTStableDiffusionControlNetPipeline, FACTStableDiffusionPipeline

    made, controls = [], []
    real_sibling, real_shape = pose_stage.text_to_image_sibling, pose_stage.pose_stage_shape

    def recording_sibling(pipe, controlnet=None):
        made.append((real_sibling(pipe, controlnet), controlnet))
        return made[-1][0]

    def recording_shape(*args, **kwargs):
        controls.append(args[-1])
        return real_shape(*args, **kwargs)  # the real call: the ControlNet sibling takes the map

    monkeypatch.setattr(pose_stage, "text_to_image_sibling", recording_sibling)
    monkeypatch.setattr(pose_stage, "pose_stage_shape", recording_shape)
    pipe = inpaint_pipes("controlnet2")
    settings = fast_settings(pose_stage=True, refine=False)  # a 64 px crop: MediaPipe still finds the pose
    out = TemplatePortrait(pipe, analysis=analysis, settings=settings)(astronaut, grace_hopper, seed=2)
    sibling, net = made[0]
    assert isinstance(sibling, FACTStableDiffusionControlNetPipeline) and net is pipe.controlnet.nets[0]
    assert controls[0].shape == (64, 64, 3) and controls[0].any()  # the crop's pose, OpenPose colours on black
    assert any("follows the template crop's body pose" in n for n in out.notes)
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    made.clear()
    out = TemplatePortrait(pipe, analysis=analysis, settings=settings)(astronaut, grace_hopper, seed=2)
    assert isinstance(made[0][0], FACTStableDiffusionPipeline) and made[0][1] is None and controls[-1] is None
    assert any("no body pose of the template crop" in n and "without ControlNet" in n for n in out.notes)
