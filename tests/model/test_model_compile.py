"""The fusers under torch.compile: one graph each, and the scale a tensor with the Python float's bits (issue 20).

The fusers' scale reaches their arithmetic as a tensor filled in place (FACTFuser.scale_tensor), so
dynamo does not specialise on its value; what selects a graph is only which fusers act at all (s != 0:
FACT on, FACT off for a window's off steps), the batch shape and the regions' layout. Compiled with
backend "eager" (dynamo's capture and guards, no C++ compiler): exactly what decides recompiles.
"""
from __future__ import annotations

import pytest
import torch

from facefact.model.adapter import FACTFuser

# The whole pipeline compiled (backend "eager"): scales, per-level scales, the other person, a window,
# cfg_face off and two people's regions reuse the warm graphs, with the eager pixels - checked by the
# device check's "compile" check, which tests/model/test_model_gpu_check.py runs on the CPU (one
# copy of that minutes-long tracing in the suite).


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
