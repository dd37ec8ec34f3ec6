"""A request's scheduler comes from the base model's config, not from the previous request's."""
import numpy as np

from facefact.pipelines import FaceFactPipeline


def test_switching_schedulers_back_and_forth_changes_nothing(astronaut):
    pipe = FaceFactPipeline.tiny()
    kwargs = dict(face_images=astronaut, num_inference_steps=3, seed=3, height=64, width=64)
    first = np.asarray(pipe("a portrait", scheduler="euler", **kwargs).images[0])
    karras = np.asarray(pipe("a portrait", scheduler="dpm++karras", **kwargs).images[0])
    again = np.asarray(pipe("a portrait", scheduler="euler", **kwargs).images[0])  # no Karras sigmas carried over
    assert not np.array_equal(first, karras)
    assert np.array_equal(first, again)
