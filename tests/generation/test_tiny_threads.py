"""A `.tiny()` pipeline runs its calls on one torch thread and puts the process's count back;
other pipelines (cpu_threads None) leave the count alone. Measured on 2 cores with one other busy
process: 10 steps at 128 px took 47-81 s with torch's default 2 threads, 2.8-3.5 s with one."""
from __future__ import annotations

import pytest
import torch

from facefact.errors import ConfigError
from facefact.pipelines import FACTStableDiffusionPipeline


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def threads_during_call(pipe, face) -> list[int]:
    seen = []

    def step(pipeline, index, timestep, kwargs):
        seen.append(torch.get_num_threads())
        return kwargs
    pipe("a portrait", face_images=[face], num_inference_steps=2, height=64, width=64,
         generator=torch.Generator().manual_seed(0), callback_on_step_end=step)
    return seen


def test_tiny_pipeline_scopes_one_thread_to_its_calls(two_threads, astronaut):
    pipe = FACTStableDiffusionPipeline.tiny()
    assert pipe.cpu_threads == 1
    assert set(threads_during_call(pipe, astronaut)) == {1}
    assert torch.get_num_threads() == 2  # put back after the call
    pipe.encode_faces([astronaut])
    assert torch.get_num_threads() == 2
    pipe.cpu_threads = None  # the process's count, as every non-tiny pipeline
    assert set(threads_during_call(pipe, astronaut)) == {2}


def test_a_bad_thread_count_is_a_clear_error(astronaut):
    pipe = FACTStableDiffusionPipeline.tiny(cpu_threads=0)
    with pytest.raises(ConfigError, match="cpu_threads must be a whole number of at least 1"):
        pipe("a portrait", face_images=[astronaut], num_inference_steps=1, height=64, width=64)


def test_evaluate_threads_reach_the_tiny_pipeline():
    from facefact.evaluation.methods import MethodContext, RunSettings

    assert MethodContext(RunSettings()).fact_pipeline().cpu_threads == 1  # the tiny pipeline's own
    assert MethodContext(RunSettings(cpu_threads=3)).fact_pipeline().cpu_threads == 3  # evaluate --threads 3
