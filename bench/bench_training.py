"""Training step time with and without FAIR on the full SD1.5-size architecture (random weights).

    python bench/bench_training.py                  # 512 px (64x64 latents), batch 1, CPU: minutes
    python bench/bench_training.py --size 256 --steps 3
    python bench/bench_training.py --device cuda --dtype bf16 --batch 4

One step = resampler + UNet forward with the 16 fusers attached (face tokens through
`cross_attention_kwargs["gligen"]`), ε-MSE (+ λ·FAIR, `facefact.training.fair.FairRegularizer`),
backward, AdamW step: what `facefact train` runs per micro-batch, without the frozen VAE / text /
face encoders (identical in both modes). Steps alternate between the two modes so drift in machine load
hits both. Target: FAIR adds at most 5%.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F


def sd15_unet(size: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5 unet/config.json
        sample_size=size // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image size (latents are size/8)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per mode (after one warm-up each)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="frozen UNet dtype (autocast); the adapter trains in fp32")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    from facefact.model import FaceAdapter, ResamplerConfig
    from facefact.training.fair import FairRegularizer
    from facefact.training.models import trainable_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    unet = sd15_unet(args.size).to(device, dtype).requires_grad_(False)
    unet_params = sum(p.numel() for p in unet.parameters())  # before attach: fusers register in the UNet
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    adapter = FaceAdapter.for_unet(unet, ResamplerConfig()).attach(unet)
    adapter.set_scale(1.0)
    params = [p for _, p in trainable_parameters(adapter)]  # as `facefact train`: fp32 masters
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    for fuser in adapter.all_fusers():  # open the gates, as in a trained adapter, so the increment is not zero
        torch.nn.init.constant_(fuser.alpha_attn, 0.5)
        torch.nn.init.constant_(fuser.alpha_dense, 0.5)
    fair = FairRegularizer(adapter)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    latent = args.size // 8
    b = args.batch
    noisy = torch.randn(b, 4, latent, latent, device=device, dtype=dtype)
    target = torch.randn(b, 4, latent, latent, device=device)
    text = torch.randn(b, 77, 768, device=device, dtype=dtype)
    tokens = torch.randn(b, 144, 512, device=device)
    mask = torch.zeros(b, 1, latent, latent, device=device)
    mask[..., latent // 4: 3 * latent // 4, latent // 4: 3 * latent // 4] = 1
    timesteps = torch.full((b,), 500, device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def step(fair_weight: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fair_context = fair.measuring(mask) if fair_weight else contextlib.nullcontext()
        with fair_context, autocast:
            faces = adapter.resampler(tokens)  # [B, 16, C], to the fusers out of band
            prediction = unet(noisy, timesteps, encoder_hidden_states=text,
                              cross_attention_kwargs={"gligen": {"objs": faces.to(dtype)}}).sample
            loss = F.mse_loss(prediction.float(), target)
            if fair_weight:
                loss = loss + fair_weight * fair.loss()
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    print(f"SD1.5 UNet {unet_params / 1e6:.0f}M frozen + adapter "
          f"{sum(p.numel() for p in params) / 1e6:.0f}M trained; {args.size}px ({latent}x{latent} latents), "
          f"batch {b}, {args.device}, {args.dtype}, threads {torch.get_num_threads()}")
    step(0.0), step(0.01)  # warm-up: allocator, kernels
    times = {0.0: [], 0.01: []}
    for round_ in range(args.steps):  # ABBA order: neither mode always runs first
        for weight in (0.0, 0.01) if round_ % 2 == 0 else (0.01, 0.0):
            times[weight].append(step(weight))
    plain, fair = statistics.median(times[0.0]), statistics.median(times[0.01])
    spread = {w: " ".join(f"{t:.2f}" for t in ts) for w, ts in times.items()}
    print(f"step without FAIR: {plain:.3f} s (median of {args.steps}: {spread[0.0]})")
    print(f"step with FAIR:    {fair:.3f} s (median of {args.steps}: {spread[0.01]})")
    print(f"FAIR overhead:     {100 * (fair / plain - 1):+.1f}%  (target <= +5%)")


if __name__ == "__main__":
    main()
