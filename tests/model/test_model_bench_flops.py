"""bench/flops.py: FLOP counting on CPU must include attention (FlopCounterMode alone skips the CPU SDPA kernel)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from flops import attention_flops, count_flops, linear_flops  # noqa: E402


def test_cpu_sdpa_is_counted():
    b, h, lq, lk, d = 2, 3, 50, 66, 8
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    total, by_op, out = count_flops(F.scaled_dot_product_attention, q, k, v)
    assert total == 4 * b * h * lq * lk * d == attention_flops(q.shape, k.shape, v.shape)
    assert out.shape == (b, h, lq, d)
    assert sum(by_op.values()) == total


def test_linear_and_attention_add_up():
    x, w = torch.randn(4, 10, 16), torch.randn(32, 16)
    q = k = v = torch.randn(1, 2, 10, 16)
    total, _, _ = count_flops(lambda: (F.linear(x, w), F.scaled_dot_product_attention(q, k, v)))
    assert total == 2 * 40 * 16 * 32 + 4 * 1 * 2 * 10 * 10 * 16


def test_bench_sorts_operators_into_kinds():
    """The benchmark's time breakdown puts each operator it profiles into the right kind."""
    from bench_adapter import KINDS, flops_by_kind, op_kind

    assert op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_kind("aten::mkldnn_convolution") == "convolution"
    for name in ("aten::addmm", "aten::mm", "aten::bmm"):
        assert op_kind(name) == "linear", name
    for name in ("aten::native_layer_norm", "aten::copy_", "aten::addcmul", "aten::gelu"):
        assert op_kind(name) == "other", name
    by_kind = flops_by_kind({"addmm": 5, "mm": 7, "convolution": 11, "_scaled_dot_product_flash_attention_for_cpu": 13})
    assert by_kind == {"attention": 13, "linear": 12, "convolution": 11, "other": 0} and tuple(by_kind) == KINDS
