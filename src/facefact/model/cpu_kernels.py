"""oneDNN linears for the adapter on CPU at inference time.

Why: on CPU, ``F.linear`` in float32 goes to MKL's sgemm, which on AMD processors runs far below the
machine's peak (measured here, Zen, 2 cores: ~150-200 GFLOP/s), while oneDNN - the library that
already runs the UNet's convolutions - reaches ~2x that on the same shapes. PyTorch exposes oneDNN's
linear as ``torch.ops.mkldnn._linear_pointwise`` (the op its own compiler, inductor, emits for CPU
linears), with fused post-ops: that also lets GEGLU compute ``value * gelu(gate)`` inside the GEMMs
instead of writing the 8·C-wide projection out and reading it back twice.

The op has no autograd formula, so it is used only when gradients are off (generation, evaluation,
validation); training goes through the stock modules. It is a private op: ``available()`` checks,
once, that it exists and agrees with ``F.linear``; anything else falls back to the stock path.
``bench/bench_adapter.py --no-onednn`` measures the difference.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from torch import nn

_DTYPES = (torch.float32, torch.bfloat16)
_CHUNK_BYTES = 8 << 20  # per [tokens, inner] temporary of the feed-forward; glibc mmaps blocks over 32 MB


@functools.cache
def available() -> bool:
    """True when oneDNN's linear op exists in this torch build and matches ``F.linear``.

    The probe runs with autocast off and explicit dtypes, so the answer does not depend on the
    context of the first call (an autocast region, another default dtype)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        if not torch.backends.mkldnn.is_available():
            return False
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(8, 24, generator=generator, dtype=torch.float32)
            weight = torch.randn(32, 24, generator=generator, dtype=torch.float32)
            bias = torch.randn(32, generator=generator, dtype=torch.float32)
            gate = op(x, weight, bias, "gelu", [], "none")
            product = op.binary(x, gate, weight, bias, "mul")
            stock = F.linear(x, weight, bias)
            return bool(torch.allclose(gate, F.gelu(stock), atol=1e-4, rtol=1e-4)
                        and torch.allclose(product, stock * F.gelu(stock), atol=1e-3, rtol=1e-4))
    except Exception:  # missing op, build without oneDNN, changed signature: use the stock path
        return False


def usable(x: torch.Tensor, enabled: bool = True) -> bool:
    """oneDNN path for this input and context: a plain CPU float32/bfloat16 tensor, no autograd, no
    autocast (whose casts only the stock modules get), not being compiled, exported or traced (the
    private op would break graphs or end up in them), and the op works in this build."""
    if not enabled or type(x) is not torch.Tensor or _graph_capture():
        return False
    return (x.device.type == "cpu" and x.dtype in _DTYPES and not torch.is_grad_enabled()
            and not _autocast_on() and available())


def linear(x: torch.Tensor, layer: nn.Module, enabled: bool = True) -> torch.Tensor:
    """``layer(x)`` for a plain ``nn.Linear``, through oneDNN when :func:`usable`.

    Anything else - a LoRA-wrapped or hooked layer (accelerate offload, user hooks), weights that
    are not plain tensors on x's device in x's dtype, a GPU tensor, training - is simply called.
    """
    if not usable(x, enabled) or not _plain_linear(layer, x):
        return layer(x)
    out = torch.ops.mkldnn._linear_pointwise(_rows(x), layer.weight, layer.bias, "none", [], "")
    return out.view(*x.shape[:-1], layer.out_features)


def geglu_feed_forward(x: torch.Tensor, ff: nn.Module, enabled: bool = True) -> torch.Tensor:
    """diffusers' ``FeedForward(dim, activation_fn="geglu")`` on ``x``, GELU and product fused on CPU.

    GEGLU: ``proj`` gives [value | gate]; out = net.2(value * gelu(gate)). With oneDNN the gate GEMM
    applies the (exact, erf) GELU as a post-op and the value GEMM multiplies by it as a post-op.
    """
    geglu, out_layer = ff.net[0], ff.net[2]
    dropping = ff.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in ff.modules())
    if (not usable(x, enabled) or dropping or type(geglu) is not GEGLU or _hooked(ff) or _hooked(geglu)
            or not _plain_linear(geglu.proj, x) or not _plain_linear(out_layer, x)):
        return ff(x)  # anything but diffusers' exact-GELU GEGLU, plain and unhooked: the module itself
    op = torch.ops.mkldnn._linear_pointwise
    rows, half = _rows(x), geglu.proj.out_features // 2
    weight, bias = geglu.proj.weight, geglu.proj.bias
    # Row slices of a contiguous [2·inner, dim] weight are contiguous: no copies.
    value_w, gate_w = weight[:half], weight[half:]
    value_b, gate_b = (None, None) if bias is None else (bias[:half], bias[half:])
    out = rows.new_empty(rows.shape[0], out_layer.out_features)
    # Token chunks keep the [chunk, inner] temporaries small enough for malloc to reuse its heap:
    # whole-sequence ones (42 MB at 64x64 latents in fp32) are mmapped fresh every call, and the
    # page faults of touching them cost more than the GEMMs that fill them.
    step = max(1, _CHUNK_BYTES // (half * rows.element_size()))
    for start in range(0, rows.shape[0], step):
        chunk = rows[start:start + step]
        gate = op(chunk, gate_w, gate_b, "gelu", [], "none")
        hidden = op.binary(chunk, gate, value_w, value_b, "mul")
        out[start:start + step] = op(hidden, out_layer.weight, out_layer.bias, "none", [], "")
    return out.view(*x.shape[:-1], out_layer.out_features)


def _graph_capture() -> bool:
    """torch.compile / export / jit tracing or scripting in progress (fx.symbolic_trace hands us a Proxy,
    which the type check in usable() turns away)."""
    compiler = getattr(torch, "compiler", None)
    for probe in (getattr(compiler, "is_compiling", None), getattr(compiler, "is_exporting", None),
                  torch.jit.is_tracing, torch.jit.is_scripting):
        if probe is not None and probe():
            return True
    return False


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _hooked(module: nn.Module) -> bool:
    """Hooks or a replaced forward would be skipped by calling the op directly: leave those to the module."""
    from torch.nn.modules import module as module_globals

    global_hooks = any(getattr(module_globals, name, None) for name in
                       ("_global_forward_hooks", "_global_forward_pre_hooks"))
    return bool(module._forward_hooks or module._forward_pre_hooks or global_hooks
                or hasattr(module, "_hf_hook") or "forward" in module.__dict__)


def _plain_linear(layer: nn.Module, x: torch.Tensor) -> bool:
    """An unhooked nn.Linear whose weight and bias are plain (not meta, not quantised or other tensor
    subclasses) tensors on x's device in x's dtype."""
    if type(layer) is not nn.Linear or _hooked(layer):
        return False
    for tensor in (layer.weight, layer.bias):
        if tensor is None:
            continue
        if (type(tensor) not in (nn.Parameter, torch.Tensor) or tensor.is_meta or tensor.device != x.device
                or tensor.dtype != x.dtype):
            return False
    return True


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()
