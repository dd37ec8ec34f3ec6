"""The ways a speed-table row changes the pipeline, each a context manager that undoes itself:
channels_last, fused QKV projections, an SDPA backend, a 4-step LCM schedule with a random LoRA of
the LCM-LoRA (SD1.5) layout fused in, and torch.compile of the UNet."""
from __future__ import annotations

import contextlib
import math

import torch

# The modules LCM-LoRA for SD1.5 (latent-consistency/lcm-lora-sdv1-5) adapts, rank 64.
LCM_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
LCM_LORA_RANK = 64


@contextlib.contextmanager
def channels_last(pipe):
    pipe.unet.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        pipe.unet.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def fused_qkv(pipe):
    """diffusers' fused q/k/v projections of the UNet's attention (FACT's own attention is left as it is)."""
    pipe.unet.fuse_qkv_projections()
    try:
        yield
    finally:
        pipe.unet.unfuse_qkv_projections()


def sdpa_backends(names: list[str]):
    """torch's scaled_dot_product_attention limited to these backends (SDPBackend names), in this order."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [getattr(SDPBackend, name) for name in dict.fromkeys(names)]
    try:
        return sdpa_kernel(backends, set_priority=True)
    except TypeError:  # a torch without set_priority: torch's own order among the allowed ones
        return sdpa_kernel(backends)


def random_lcm_lora(unet, seed: int = 0) -> dict:
    """A LoRA state dict (diffusers / PEFT key format) with LCM-LoRA's layout for `unet`: random,
    small (it changes the UNet's output, it does not break it). FACT's own modules are not targets."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in unet.named_modules():
        if ".fuser." in name or not name.endswith(LCM_LORA_TARGETS):
            continue
        if isinstance(module, torch.nn.Linear):
            a_shape, b_shape = (LCM_LORA_RANK, module.in_features), (module.out_features, LCM_LORA_RANK)
        elif isinstance(module, torch.nn.Conv2d):
            a_shape = (LCM_LORA_RANK, module.in_channels, *module.kernel_size)
            b_shape = (module.out_channels, LCM_LORA_RANK, 1, 1)
        else:
            continue
        fan_in = math.prod(a_shape[1:])
        state[f"unet.{name}.lora_A.weight"] = torch.randn(a_shape, generator=generator) / math.sqrt(fan_in)
        state[f"unet.{name}.lora_B.weight"] = torch.randn(b_shape, generator=generator) * (0.01 / math.sqrt(LCM_LORA_RANK))
    return state


@contextlib.contextmanager
def lcm_lora(pipe):
    """LCMScheduler + the random LCM-LoRA loaded and fused (what LCM-LoRA users run for speed)."""
    from diffusers import LCMScheduler

    previous = pipe.scheduler
    lora = {k: v.to(pipe.unet.dtype) for k, v in random_lcm_lora(pipe.unet).items()}
    pipe.load_lora_weights(lora, adapter_name="lcm")
    pipe.fuse_lora()
    pipe.scheduler = LCMScheduler.from_config(previous.config)
    try:
        yield
    finally:
        pipe.scheduler = previous
        pipe.unfuse_lora()
        pipe.unload_lora_weights()


def compiled(mode: str):
    """`pipe.unet = torch.compile(pipe.unet, mode=...)` as diffusers' docs do it; the eager UNet is put
    back after (the compiled graphs stay in dynamo's cache until it is reset)."""
    @contextlib.contextmanager
    def apply(pipe):
        eager = pipe.unet
        pipe.unet = torch.compile(eager, mode=mode)
        try:
            yield
        finally:
            pipe.unet = eager
    return apply
