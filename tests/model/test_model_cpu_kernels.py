"""The adapter's oneDNN CPU path computes what the stock modules compute, and only when it may."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn

from facefact.model import FACTAttnProcessor, cpu_kernels

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="this torch build has no oneDNN linear")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_linear_matches_the_module_in_float32():
    torch.manual_seed(0)
    layer, x = nn.Linear(48, 40), torch.randn(2, 33, 48)
    with torch.no_grad():
        fast, stock = cpu_kernels.linear(x, layer), layer(x)
    assert fast.shape == stock.shape == (2, 33, 40)
    assert relative_error(fast, stock) < 1e-5


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_geglu_feed_forward_matches_diffusers_in_chunks(monkeypatch, dtype, tolerance):
    torch.manual_seed(0)
    ff = FeedForward(32, activation_fn="geglu").to(dtype)
    x = torch.randn(2, 37, 32, dtype=dtype)
    # 128 inner features x 4 bytes: 3 rows per chunk in float32 (6 in bfloat16) -> many chunks, a ragged last one
    monkeypatch.setattr(cpu_kernels, "_CHUNK_BYTES", 3 * 128 * 4)
    with torch.no_grad():
        fast = cpu_kernels.geglu_feed_forward(x, ff)
        stock = ff(x)
        # GEGLU written out in float64: [value | gate] = proj(x); out = net.2(value * gelu(gate))
        proj, out = ff.net[0].proj, ff.net[2]
        value, gate = F.linear(x.double(), proj.weight.double(), proj.bias.double()).chunk(2, dim=-1)
        exact = F.linear(value * F.gelu(gate), out.weight.double(), out.bias.double())
    assert fast.dtype == dtype and fast.shape == stock.shape
    assert relative_error(fast, exact) < tolerance
    assert relative_error(stock, exact) < tolerance


def test_training_uses_the_modules_so_gradients_flow():
    torch.manual_seed(0)
    layer, ff = nn.Linear(16, 16), FeedForward(16, activation_fn="geglu")
    x = torch.randn(3, 16, requires_grad=True)
    out = cpu_kernels.geglu_feed_forward(cpu_kernels.linear(x, layer), ff)
    assert out.requires_grad
    out.sum().backward()
    assert layer.weight.grad is not None and ff.net[0].proj.weight.grad is not None


def test_anything_but_a_plain_linear_is_called_as_is():
    class Scaled(nn.Linear):  # e.g. a LoRA-style wrapper: its own forward must run
        def forward(self, x):
            return 2 * super().forward(x)

    layer, x = Scaled(8, 8), torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(cpu_kernels.linear(x, layer), layer(x))
        assert not cpu_kernels.usable(x, enabled=False)
        assert not cpu_kernels.usable(x.double())


def test_processor_with_and_without_onednn_agree():
    torch.manual_seed(0)
    proc = FACTAttnProcessor(64, 32).eval()
    with torch.no_grad():
        proc.alpha_attn.fill_(0.7)
        proc.alpha_dense.fill_(-0.5)
        h, faces = torch.randn(2, 50, 64), torch.randn(2, 16, 32)
        fast = proc.increment(h, faces, heads=4)
        proc.cpu_fast = False
        stock = proc.increment(h, faces, heads=4)
    assert fast.abs().max() > 0.1  # the gates are open: the increment is not trivially zero
    assert relative_error(fast, stock) < 1e-5
