"""FACT's block layouts side by side, SD1.5 and SDXL: fusers, parameters and the FLOP ratio of one
UNet step with FACT vs without, counted on the meta device (shapes only: no memory, no weights,
seconds on any machine). What the timing run of bench_adapter.py measures, this predicts.

    python bench/bench_adapter.py --layouts             # the table only
"""
from __future__ import annotations

import torch

from base_unets import BASE_UNETS, DEFAULT_SIZE, extra_inputs
from flops import count_flops

ROWS = [("sd15", "first"), ("sdxl", "first"), ("sdxl", "all")]


def layout_row(family: str, layout: str, size: int, batch: int = 2, photos: int = 1) -> dict:
    """One (family, layout): fuser count, parameters (resampler + fusers) and FLOPs per UNet step."""
    from accelerate import init_empty_weights

    from facefact.model import FaceAdapter, ResamplerConfig

    with init_empty_weights():
        unet = BASE_UNETS[family](size // 8)
        adapter = FaceAdapter.for_unet(unet, ResamplerConfig(output_dim=unet.config.cross_attention_dim), layout)
    device = torch.device("meta")
    adapter.attach(unet)
    for fuser in adapter.all_fusers():
        fuser.scale = 0.5
    try:
        latents = torch.empty(batch, 4, size // 8, size // 8, device=device)
        text = torch.empty(batch, 77, unet.config.cross_attention_dim, device=device)
        faces = torch.empty(batch, 16 * photos, unet.config.cross_attention_dim, device=device)
        extra = extra_inputs(unet, batch, device)
        timestep = torch.tensor(500, device=device)
        with torch.no_grad():
            bare, _, _ = count_flops(lambda: unet(latents, timestep, encoder_hidden_states=text, **extra))
            fact, _, _ = count_flops(lambda: unet(latents, timestep, encoder_hidden_states=text, **extra,
                                                  cross_attention_kwargs={"gligen": {"objs": faces}}))
    finally:
        adapter.detach()
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return {"family": family, "layout": layout, "size": size, "batch": batch, "fusers": len(adapter.block_paths),
            "unet_params": count(unet), "fuser_params": count(adapter.fusers),
            "resampler_params": count(adapter.resampler), "flops_bare": bare, "flops_fact": fact}


def layout_table(rows: list[dict]) -> list[str]:
    lines = ["| base | layout | size | fusers | FACT params (fusers + resampler) | % of the UNet | "
             "TFLOP/step bare | with FACT | FLOP ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        total = r["fuser_params"] + r["resampler_params"]
        lines.append(f"| {r['family']} | {r['layout']} | {r['size']}² | {r['fusers']} | {total / 1e6:.0f} M "
                     f"({r['fuser_params'] / 1e6:.0f} + {r['resampler_params'] / 1e6:.0f}) | "
                     f"{100 * total / r['unet_params']:.0f}% | {r['flops_bare'] / 1e12:.2f} | "
                     f"{r['flops_fact'] / 1e12:.2f} | x{r['flops_fact'] / r['flops_bare']:.3f} |")
    return lines


def all_layouts(batch: int = 2, photos: int = 1) -> list[dict]:
    return [layout_row(family, layout, DEFAULT_SIZE[family], batch, photos) for family, layout in ROWS]
