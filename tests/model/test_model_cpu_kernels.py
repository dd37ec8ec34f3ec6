"""The adapter's oneDNN CPU path computes what the stock modules compute, and only runs when it may."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from facefact.model import FACTAttnProcessor, cpu_kernels

needs_onednn = pytest.mark.skipif(not cpu_kernels.available(), reason="this torch build has no oneDNN linear")


class OpLog(TorchDispatchMode):
    """Which aten / mkldnn operators ran."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))

    @property
    def onednn(self) -> bool:
        return any("_linear_pointwise" in op for op in self.ops)


def run(fn):
    with OpLog() as log:
        out = fn()
    return out, log.onednn


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_linear_matches_the_module(bias, dtype, tolerance):
    torch.manual_seed(0)
    layer, x = nn.Linear(48, 40, bias=bias).to(dtype), torch.randn(2, 33, 48, dtype=dtype)
    exact = F.linear(x.double(), layer.weight.double(), None if layer.bias is None else layer.bias.double())
    with torch.no_grad():
        (fast, used), stock = run(lambda: cpu_kernels.linear(x, layer)), layer(x)
        strided, used_strided = run(lambda: cpu_kernels.linear(x.transpose(0, 1), layer))
    assert used and used_strided and fast.dtype == dtype and fast.shape == stock.shape == (2, 33, 40)
    assert relative_error(fast, exact) < tolerance and relative_error(stock, exact) < tolerance
    assert relative_error(strided, exact.transpose(0, 1)) < tolerance


@needs_onednn
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_geglu_feed_forward_matches_diffusers_in_chunks(monkeypatch, dtype, tolerance):
    torch.manual_seed(0)
    ff = FeedForward(32, activation_fn="geglu").to(dtype).eval()
    x = torch.randn(2, 37, 32, dtype=dtype)
    # 128 inner features x 4 bytes: 3 rows per chunk in float32 (6 in bfloat16) -> many chunks, a ragged last one
    monkeypatch.setattr(cpu_kernels, "_CHUNK_BYTES", 3 * 128 * 4)
    with torch.no_grad():
        fast, used = run(lambda: cpu_kernels.geglu_feed_forward(x, ff))
        stock = ff(x)
        # GEGLU written out in float64: [value | gate] = proj(x); out = net.2(value * gelu(gate))
        proj, out = ff.net[0].proj, ff.net[2]
        value, gate = F.linear(x.double(), proj.weight.double(), proj.bias.double()).chunk(2, dim=-1)
        exact = F.linear(value * F.gelu(gate), out.weight.double(), out.bias.double())
    assert used and fast.dtype == dtype and fast.shape == stock.shape
    assert relative_error(fast, exact) < tolerance
    assert relative_error(stock, exact) < tolerance


@needs_onednn
def test_processor_with_and_without_onednn_agree():
    torch.manual_seed(0)
    proc = FACTAttnProcessor(64, 32).eval()
    with torch.no_grad():
        proc.alpha_attn.fill_(0.7)
        proc.alpha_dense.fill_(-0.5)
        h, faces = torch.randn(2, 50, 64), torch.randn(2, 16, 32)
        fast, used = run(lambda: proc.increment(h, faces, heads=4))
        proc.cpu_fast = False
        stock, used_when_off = run(lambda: proc.increment(h, faces, heads=4))
    assert used and not used_when_off
    assert fast.abs().max() > 0.1  # the gates are open: the increment is not trivially zero
    assert relative_error(fast, stock) < 1e-5


# ---- when the stock modules must run (these hold with or without oneDNN in the build) ----------
def test_training_uses_the_modules_so_gradients_flow():
    torch.manual_seed(0)
    layer, ff = nn.Linear(16, 16), FeedForward(16, activation_fn="geglu")
    x = torch.randn(3, 16, requires_grad=True)
    out, used = run(lambda: cpu_kernels.geglu_feed_forward(cpu_kernels.linear(x, layer), ff))
    assert not used and out.requires_grad
    out.sum().backward()
    assert layer.weight.grad is not None and ff.net[0].proj.weight.grad is not None


def test_hooked_wrapped_or_offloaded_layers_are_called_as_they_are():
    class Scaled(nn.Linear):  # e.g. a LoRA-style wrapper: its own forward must run
        def forward(self, x):
            return 2 * super().forward(x)

    x, seen = torch.randn(4, 8), []
    hooked = nn.Linear(8, 8)
    hooked.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    offloaded = nn.Linear(8, 8).to("meta")  # what accelerate's sequential offload leaves between calls
    with torch.no_grad():
        for layer in (Scaled(8, 8), hooked):
            out, used = run(lambda: cpu_kernels.linear(x, layer))
            assert not used and torch.equal(out, layer(x))
        assert seen  # the user's hook ran
        with pytest.raises(RuntimeError, match="meta"):  # the module's own error, not a made-up CPU result
            offloaded(x)
        with pytest.raises(RuntimeError, match="meta"):
            cpu_kernels.linear(x, offloaded)
        ff = FeedForward(8, activation_fn="geglu")
        ff.net[2].register_forward_pre_hook(lambda module, args: seen.append("pre"))
        _, used = run(lambda: cpu_kernels.geglu_feed_forward(x, ff))
        assert not used and seen[-1] == "pre"


def test_autocast_dropout_fp16_and_tracing_use_the_modules():
    torch.manual_seed(0)
    layer, x = nn.Linear(8, 8), torch.randn(4, 8)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, used = run(lambda: cpu_kernels.linear(x, layer))
        assert not used and out.dtype == torch.bfloat16  # autocast's cast, as the module gives it
        ff = FeedForward(8, activation_fn="geglu", dropout=0.5).train()
        _, used = run(lambda: cpu_kernels.geglu_feed_forward(x, ff))
        assert not used  # dropout active: only the module drops
        _, used = run(lambda: cpu_kernels.linear(x.half(), layer.half()))
        assert not used

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(8, 8)

        def forward(self, x):
            return cpu_kernels.linear(x, self.layer)

    with torch.no_grad():
        traced = torch.fx.symbolic_trace(Model())
    assert "_linear_pointwise" not in traced.code
    assert not cpu_kernels.usable(x, enabled=False) and not cpu_kernels.usable(x.double())
