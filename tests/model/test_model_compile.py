"""A torch.compile'd UNet with FACT serves any scale, person and window without compiling again (issue 20).

The fusers' scale reaches their arithmetic as a tensor filled in place (FACTFuser.scale_tensor), so
dynamo does not specialise on its value; what selects a graph is only which fusers act at all (s != 0:
FACT on, FACT off for a window's off steps), the batch shape and the regions' layout. Compiled with
backend "eager" (dynamo's capture and guards, no C++ compiler): exactly what decides recompiles.
"""
from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from facefact.model.adapter import FACTFuser
from facefact.pipelines import FACTStableDiffusionPipeline
from facefact.pipelines.face_tokens import FaceTokens

pytestmark = pytest.mark.slow  # dynamo traces the tiny UNet in ~1 min per graph on a busy 2-core box


def people(pipe, count: int = 2) -> list[FaceTokens]:
    adapter = pipe.fact_adapter
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        return [FaceTokens(adapter.face_tokens(torch.randn(1, 144, adapter.resampler.config.embedding_dim, generator=g)),
                           adapter.null_face_tokens(1), 1) for _ in range(count)]


def generate(pipe, prompt="a portrait", **kwargs):
    return pipe(prompt, num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(3), **kwargs).images


@pytest.fixture(scope="module")
def compiled():
    """(tiny pipeline whose UNet is compiled, eager twin on the same weights, two people)."""
    torch._dynamo.reset()
    pipe = FACTStableDiffusionPipeline.tiny()
    pipe.set_progress_bar_config(disable=True)
    eager = FACTStableDiffusionPipeline.from_pipe(pipe)  # the same UNet module, called without the wrapper
    pipe.unet = torch.compile(pipe.unet, backend="eager")
    a, b = people(pipe)
    # warm-up: the two graphs a server needs for one shape - FACT acting, and no fuser acting (scale 0,
    # or the off steps of a fact_window)
    generate(pipe, face_tokens=a, fact_scale=0.5)
    generate(pipe, face_tokens=a, fact_scale=0.0)
    yield pipe, eager, a, b
    torch._dynamo.reset()


def test_any_scale_person_and_window_reuse_the_warm_graphs(compiled):
    pipe, eager, a, b = compiled
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for kwargs in ({"face_tokens": a, "fact_scale": 0.3}, {"face_tokens": b, "fact_scale": 0.7},
                       {"face_tokens": b, "fact_scale": {"down": 0.2, "mid": 0.4, "up": 0.9}},
                       {"face_tokens": a, "fact_scale": 1.3, "fact_window": (0.5, 1.0)},
                       {"face_tokens": b, "fact_scale": 0.6, "cfg_face": False}):
            images = generate(pipe, **kwargs)
            assert torch.equal(torch.from_numpy(images), torch.from_numpy(generate(eager, **kwargs))), kwargs
    assert counters["stats"]["unique_graphs"] == graphs
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])


def test_two_people_in_one_image_compile_once_for_any_scale_and_people(compiled):
    pipe, eager, a, b = compiled
    regions = [(0, 0, 0.5, 1), (0.5, 0, 1, 1)]
    generate(pipe, face_images=[a, b], face_regions=regions, fact_scale=0.5)  # this layout's graph
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        kwargs = {"face_images": [b, a], "face_regions": regions, "fact_scale": 0.8}
        images = generate(pipe, **kwargs)
    assert counters["stats"]["unique_graphs"] == graphs
    assert torch.equal(torch.from_numpy(images), torch.from_numpy(generate(eager, **kwargs)))
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])


def test_a_fuser_is_one_graph_with_and_without_regions():
    from facefact.model.regions import FaceRegions, box_masks

    fuser = FACTFuser(32, 16, heads=2).eval()
    fuser.scale = 0.4
    hidden, faces = torch.randn(2, 64, 32), torch.randn(2, 32, 16)
    regions = FaceRegions(box_masks([(0, 0, 0.5, 1), (0.5, 0, 1, 1)], (8, 8)), [(0, 16), (16, 32)]).prepare("cpu")
    for objs in (faces, (faces, regions)):
        explained = torch._dynamo.explain(fuser)(hidden, objs)
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_tensor_scale_gives_the_python_floats_bits(dtype):
    """The gate s * tanh(alpha) in each dtype equals what a Python float s gave before, bit for bit,
    also after `.to(dtype)` (the scale keeps float32 / float64 precision: FACTFuser._apply)."""
    fuser = FACTFuser(8, 8, heads=2).to(dtype)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        alpha = torch.randn((), generator=g).to(dtype)
        scale = float(torch.rand((), generator=g)) * 2
        fuser.scale = scale
        x = torch.randn(7, generator=g).to(dtype)
        before = (scale * torch.tanh(alpha)) * x
        assert torch.equal(fuser.gate(alpha) * x, before) and fuser.gate(alpha).dtype == dtype
    assert fuser.scale_tensor.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert "scale_tensor" not in fuser.state_dict()  # never saved: a request's setting, not a weight
