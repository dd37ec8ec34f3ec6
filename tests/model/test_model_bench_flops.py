"""bench/flops.py: FLOP counting on CPU must include attention (FlopCounterMode alone skips the CPU SDPA kernel)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from flops import attention_flops, count_flops  # noqa: E402


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
