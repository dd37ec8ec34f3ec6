"""Tiny random-weight UNet / adapter / encoder, built offline in well under a second each."""
from __future__ import annotations

import copy

import pytest
import torch

from facefact.model.tiny import tiny_encoder, tiny_face_adapter
from facefact.pipelines.tiny import tiny_unet

LATENT = 16  # tiny UNet sample size: 16x16 latents, 3 cross-attention resolutions 16/8/4


def make_unet(seed: int = 0, **overrides):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if not overrides:
            return tiny_unet().eval().requires_grad_(False)
        from diffusers import UNet2DConditionModel

        config = dict(tiny_unet().config)
        config.update(overrides)
        return UNet2DConditionModel.from_config(config).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def base_unet():
    """Shared, never modified: tests that attach use `unet` (a fresh copy)."""
    return make_unet()


@pytest.fixture
def unet(base_unet):
    return copy.deepcopy(base_unet)


@pytest.fixture
def adapter(unet):
    """Trained-like adapter (gates open) for the tiny UNet."""
    return tiny_face_adapter(unet, seed=1, trained_like=True).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder(0)


@pytest.fixture
def inputs(base_unet):
    """(latents [2, 4, 16, 16], timestep, text [2, 77, C]) - deterministic."""
    g = torch.Generator().manual_seed(123)
    width = base_unet.config.cross_attention_dim
    return (torch.randn(2, 4, LATENT, LATENT, generator=g), torch.tensor(500),
            torch.randn(2, 77, width, generator=g))


def encoder_tokens(n: int, seed: int = 7, width: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 144, width, generator=g)


def make_xl_unet(seed: int = 0):
    """The tiny SDXL-layout UNet (two text encoders' width, text_time conditioning, stacks of 2 blocks)."""
    from facefact.pipelines.tiny_xl import tiny_xl_unet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tiny_xl_unet().eval().requires_grad_(False)


def family_kwargs(unet, batch: int) -> dict:
    """What the UNet takes besides latents, timestep and text: SDXL's micro-conditioning (a pooled
    text embedding and the size / crop numbers), deterministic; nothing for SD1.5."""
    if unet.config.get("addition_embed_type") != "text_time":
        return {}
    g = torch.Generator().manual_seed(321)
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    time_ids = torch.tensor([[128.0, 128.0, 0.0, 0.0, 128.0, 128.0]]).repeat(batch, 1)
    return {"added_cond_kwargs": {"text_embeds": torch.randn(batch, pooled, generator=g), "time_ids": time_ids}}


def run(unet, inputs, faces=None) -> torch.Tensor:
    """The UNet on `inputs`; `faces` ([1 or B, 16n, C] face tokens) go to FACT's fusers out of band."""
    latents, timestep, text = inputs
    kwargs = {} if faces is None else {"cross_attention_kwargs": {"gligen": {"objs": faces}}}
    with torch.no_grad():
        return unet(latents, timestep, encoder_hidden_states=text, **family_kwargs(unet, len(latents)),
                    **kwargs).sample
