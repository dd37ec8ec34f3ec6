"""FLOP counting that includes attention on CPU.

`torch.utils.flop_counter.FlopCounterMode` knows the CUDA SDPA kernels (flash / efficient / cudnn)
but has no formula for the CPU one, `aten._scaled_dot_product_flash_attention_for_cpu`, so on CPU
every attention is silently counted as 0 FLOPs. We register the same formula torch uses for the
CUDA kernels: 2·B·H·Lq·Lk·d for QKᵀ plus 2·B·H·Lq·Lk·d for PV (= 4·B·H·Lq·Lk·d; softmax not counted,
like every other elementwise op).

    from flops import count_flops
    total, by_op = count_flops(lambda: unet(x, t, encoder_hidden_states=c))
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

aten = torch.ops.aten

CPU_SDPA_OPS = [op for op in (getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None),) if op is not None]


def attention_flops(query_shape, key_shape, value_shape) -> int:
    """4·B·H·Lq·Lk·d (QKᵀ and PV, 2 FLOPs per multiply-add); query [B, H, Lq, d], value [B, H, Lk, dv]."""
    b, h, lq, d = query_shape
    _, _, lk, dv = value_shape
    if tuple(key_shape) != (b, h, lk, d):
        raise ValueError(f"attention shapes q {tuple(query_shape)}, k {tuple(key_shape)}, v {tuple(value_shape)}")
    return 2 * b * h * lq * lk * d + 2 * b * h * lq * lk * dv


def register_cpu_sdpa_formula() -> None:
    """Idempotent: teaches FlopCounterMode the CPU SDPA kernel (no-op if torch already knows it)."""
    missing = [op for op in CPU_SDPA_OPS if op not in flop_registry]
    if missing:
        @register_flop_formula(missing)
        def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return attention_flops(query_shape, key_shape, value_shape)


def count_flops(fn, *args, **kwargs) -> tuple[int, dict[str, int], object]:
    """(total FLOPs, {op name: FLOPs}, fn's result) of one call of fn."""
    register_cpu_sdpa_formula()
    mode = FlopCounterMode(display=False)
    with mode:
        result = fn(*args, **kwargs)
    by_op = {str(op).replace("aten.", ""): int(n) for op, n in mode.get_flop_counts()["Global"].items()}
    return int(mode.get_total_flops()), by_op, result
