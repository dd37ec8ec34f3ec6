"""Perceiver resampler: encoder tokens [n, 144, D] -> 16 face tokens per photo (spec section 3).

Checkpoint prefix `local_fac_prj.`. Null face tokens are the resampler applied to zeros - not
zeros - and are what classifier-free guidance and face-condition drop use.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int = 1024           # W: width of the latent queries
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16     # face tokens per photo
    embedding_dim: int = 512  # D: encoder width
    output_dim: int = 768     # C: the UNet's cross-attention width
    ff_mult: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.dim_head, self.heads = dim_head, heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape  # heads outer, then dim_head
        return x.reshape(n, t, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x, normed_latents = self.norm1(x), self.norm2(latents)
        q = self._split_heads(self.to_q(normed_latents))
        k, v = self.to_kv(torch.cat([x, normed_latents], dim=1)).chunk(2, dim=-1)
        k, v = self._split_heads(k), self._split_heads(v)
        # Scale q and k separately (d^-1/4 each), as the reference does: it keeps fp16 logits small.
        scale = self.dim_head ** -0.25
        logits = (q * scale) @ (k * scale).transpose(-2, -1)
        weights = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
        out = (weights @ v).transpose(1, 2).reshape(latents.shape[0], latents.shape[1], -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    # Indices matter: checkpoint keys are `1.0` (norm), `1.1` and `1.3` (linears).
    return nn.Sequential(nn.LayerNorm(dim, eps=1e-5), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class Resampler(nn.Module):
    def __init__(self, config: ResamplerConfig | None = None):
        super().__init__()
        self.config = c = config or ResamplerConfig()
        self.latents = nn.Parameter(torch.randn(1, c.num_queries, c.dim) / c.dim ** 0.5)
        self.proj_in = nn.Linear(c.embedding_dim, c.dim)
        self.proj_out = nn.Linear(c.dim, c.output_dim)
        self.norm_out = nn.LayerNorm(c.output_dim, eps=1e-5)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(c.dim, c.dim_head, c.heads), _feed_forward(c.dim, c.ff_mult)])
            for _ in range(c.depth))

    def forward(self, encoder_tokens: torch.Tensor) -> torch.Tensor:
        """[n, T, D] -> [n, num_queries, C]."""
        latents = self.latents.repeat(encoder_tokens.shape[0], 1, 1)
        x = self.proj_in(encoder_tokens)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))

    @torch.no_grad()
    def max_output_norm(self) -> float:
        """An upper bound on the L2 norm of any output token, whatever the input.

        The output is LayerNorm(h) = gamma * x + beta with x = (h - mean) / sqrt(var + eps), whose
        norm is at most sqrt(C) (sum of x_i^2 = C var / (var + eps) < C), so every token's norm is at
        most max|gamma| * sqrt(C) + |beta|. A mean of tokens (combine "mean" / "weighted") stays
        within it too (the norm is convex). Tokens above it were not made by this resampler."""
        weight, bias = self.norm_out.weight.float(), self.norm_out.bias.float()
        return float(weight.abs().max()) * weight.numel() ** 0.5 + float(bias.norm())
