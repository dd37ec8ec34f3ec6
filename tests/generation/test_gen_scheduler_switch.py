"""Schedulers are set the diffusers way (`pipe.scheduler = X.from_config(pipe.scheduler.config)`, or
`make_scheduler(name, config)` for the CLI's names); switching back and forth carries nothing over."""
import numpy as np
import torch

from facefact.pipelines import FACTStableDiffusionPipeline
from facefact.pipelines.loading import make_scheduler


def image(pipe, face):
    return np.asarray(pipe("a portrait", face_tokens=face, num_inference_steps=3, height=64, width=64,
                           generator=torch.Generator("cpu").manual_seed(3)).images[0])


def test_switching_schedulers_back_and_forth_changes_nothing(face):
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    pipe = FACTStableDiffusionPipeline.tiny()
    base_config = pipe.scheduler.config
    pipe.scheduler = EulerDiscreteScheduler.from_config(base_config)
    first = image(pipe, face)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(base_config, use_karras_sigmas=True)
    karras = image(pipe, face)
    pipe.scheduler = EulerDiscreteScheduler.from_config(base_config)  # no Karras sigmas carried over
    again = image(pipe, face)
    assert not np.array_equal(first, karras)
    assert np.array_equal(first, again)
    assert pipe("a portrait", face_tokens=face, num_inference_steps=1, height=64,
                width=64).metadata[0]["scheduler"] == "EulerDiscreteScheduler"


def test_make_scheduler_from_the_current_config_does_not_carry_the_previous_choice(face):
    pipe = FACTStableDiffusionPipeline.tiny()
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    first = image(pipe, face)
    pipe.scheduler = make_scheduler("dpm++karras", pipe.scheduler.config)
    karras = image(pipe, face)
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    assert not np.array_equal(first, karras)
    assert np.array_equal(first, image(pipe, face))
