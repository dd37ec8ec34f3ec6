"""Tiny random-weight FACT parts, built offline from configs in milliseconds.

Used by the tests and by `--model tiny`, so the whole path - photo to image, training, evaluation -
runs on any machine with no download. Same classes and code paths as the real models; only the
sizes differ. Weights are random but deterministic (seeded, without touching the global RNG).
"""
from __future__ import annotations

import torch

from facefact.model.encoder import EncoderConfig, TransFaceEncoder
from facefact.model.face_adapter import FaceAdapter
from facefact.model.layouts import DEFAULT_LAYOUT
from facefact.model.resampler import ResamplerConfig

TINY_ENCODER = EncoderConfig(img_size=112, patch_size=9, embed_dim=32, depth=2, num_heads=4, num_classes=32)
TINY_CROSS_ATTENTION_DIM = 32


def tiny_resampler_config(output_dim: int = TINY_CROSS_ATTENTION_DIM) -> ResamplerConfig:
    return ResamplerConfig(dim=64, depth=2, dim_head=16, heads=4, num_queries=16,
                           embedding_dim=TINY_ENCODER.embed_dim, output_dim=output_dim, ff_mult=4)


def tiny_encoder(seed: int = 0) -> TransFaceEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = TransFaceEncoder(TINY_ENCODER)
        torch.nn.init.normal_(encoder.pos_embed, std=0.02)
    return encoder.eval().requires_grad_(False)


def tiny_face_adapter(unet, seed: int = 1, trained_like: bool = True, layout: str = DEFAULT_LAYOUT) -> FaceAdapter:
    """An adapter for `unet` (SD1.5 or SDXL, fusers on the blocks of `layout`). With `trained_like`,
    the gates are opened (alpha != 0) so the face actually changes the output, as with a trained
    checkpoint; otherwise it is the identity."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = FaceAdapter.for_unet(unet, tiny_resampler_config(unet.config.cross_attention_dim), layout)
        if trained_like:
            for fuser in adapter.all_fusers():
                torch.nn.init.uniform_(fuser.alpha_attn, 0.3, 0.8)
                torch.nn.init.uniform_(fuser.alpha_dense, 0.3, 0.8)
    return adapter
