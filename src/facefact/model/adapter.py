"""FACT's face adapter inside the UNet (spec section 4) and its attach / detach.

Each SD1.5 transformer block with cross-attention gets a gated self-attention over its visual
tokens plus the face tokens, applied *before* the block's text cross-attention:

    f'  = linear(f)
    a   = SA(norm1(cat[h, f']))[:, :len(h)]
    h1  = h + s * tanh(alpha_attn) * a
    h2  = h1 + s * tanh(alpha_dense) * FF(norm2(h1))
    out = h2 + CrossAttn(norm_block2(h2), text)

diffusers' BasicTransformerBlock calls ``attn2(norm2(h))`` and adds ``h`` back, so the processor
must see h itself, before the block's norm2. Attaching registers a forward pre-hook on the block's
``norm2`` that hands its input h to the processor; the block, its modules and its parameters stay
exactly as they are (saving or inspecting the UNet while attached shows the original layout, plus
the adapter weights under ``attn2.processor.*`` as with diffusers' own IP-Adapter). The processor
computes h2, applies the block's norm2 (or the ``ln`` some checkpoints carry in its place) and
returns ``(h2 - h) + cross_attention``; the block's own residual adds ``h``. Detaching removes the
hook and restores the original processor, so the UNet is as before, bit for bit. The text
cross-attention is computed by the block's original processor, so scale 0 reproduces the base
UNet bit for bit and LoRA / other processors keep working.

Efficiency: only the len(h) visual queries are needed, so the attention is computed with
``scaled_dot_product_attention`` over [len(h)] queries x [len(h) + 16n] keys without ever
materialising the (len(h) + 16n)^2 matrix that the reference builds. On CPU at inference the
linears and the GEGLU feed-forward go through oneDNN (``cpu_kernels``: ~2x MKL's speed on AMD CPUs,
GELU and product fused, token chunks that stay out of mmap); on GPU and in training they are the
stock modules. docs/performance.md has the measurements.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn

from facefact.model import cpu_kernels


class GatedSelfAttention(nn.Module):
    """Attention over visual + face tokens; only the visual queries are computed."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # key `to_out.0`, as in diffusers

    def forward(self, visual: torch.Tensor, context: torch.Tensor, heads: int, cpu_fast: bool = True) -> torch.Tensor:
        batch, n_visual, dim = visual.shape
        head_dim = dim // heads

        def project(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
            return cpu_kernels.linear(x, layer, cpu_fast).view(batch, -1, heads, head_dim).transpose(1, 2)

        q = project(self.to_q, visual)
        k, v = project(self.to_k, context), project(self.to_v, context)
        out = F.scaled_dot_product_attention(q, k, v)
        return cpu_kernels.linear(out.transpose(1, 2).reshape(batch, n_visual, dim), self.to_out[0], cpu_fast)


class FACTAttnProcessor(nn.Module):
    """Replaces a block's ``attn2`` processor; owns the adapter weights of that block.

    State set per request by :class:`facefact.model.FaceAdapter` (never per denoising step):
    ``scale`` and ``num_face_tokens`` (16 per reference photo, at the end of the sequence).
    """

    def __init__(self, block_dim: int, cross_attention_dim: int):
        super().__init__()
        self.linear = nn.Linear(cross_attention_dim, block_dim)
        self.attn = GatedSelfAttention(block_dim)
        self.ff = FeedForward(block_dim, activation_fn="geglu")
        self.norm1 = nn.LayerNorm(block_dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(block_dim, eps=1e-5)
        self.alpha_attn = nn.Parameter(torch.tensor(0.0))
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))
        self.ln: nn.Module | None = None  # a checkpoint's `ln.*`: replaces the block's norm2 (spec section 4)
        self.scale = 1.0
        self.num_face_tokens = 16
        # CPU inference: run the linears through oneDNN (see cpu_kernels; ~2x on AMD CPUs). Off = stock modules.
        self.cpu_fast = True
        # Training only (FAIR, spec section 7): a face mask at latent resolution [B, 1, h, w];
        # when set, the forward pass stores this layer's ||increment*(1-M)|| / ||h*(1-M)|| per sample.
        self.fair_mask: torch.Tensor | None = None
        self.fair_value: torch.Tensor | None = None
        # The processor this one replaced and the block's norm2, kept outside nn.Module registration
        # on purpose: they are the block's, not ours, and must not appear in our state dict.
        self._base = [None]
        self._block_norm = [None]
        self._block_input: torch.Tensor | None = None  # h, handed over by the pre-hook on the block's norm2

    @property
    def owns_ln(self) -> bool:
        """True when the checkpoint carried `ln.*`, which then replaces the block's norm2."""
        return self.ln is not None

    def remember_block_input(self, module, args) -> None:
        """Forward pre-hook on the block's norm2: keep h for the attn2 call that follows."""
        self._block_input = args[0]

    @property
    def block_dim(self) -> int:
        return self.linear.out_features

    @property
    def cross_attention_dim(self) -> int:
        return self.linear.in_features

    def increment(self, hidden_states: torch.Tensor, face_tokens: torch.Tensor, heads: int) -> torch.Tensor:
        """h2 - h: what the adapter adds to the residual stream before the text cross-attention."""
        return self._h2(hidden_states, face_tokens, heads) - hidden_states

    def _h2(self, hidden_states: torch.Tensor, face_tokens: torch.Tensor, heads: int) -> torch.Tensor:
        faces = self.linear(face_tokens)
        visual, faces = self.norm1(hidden_states), self.norm1(faces)  # LayerNorm is per token
        attended = self.attn(visual, torch.cat([visual, faces], dim=1), heads, self.cpu_fast)
        # h + g * x in one pass (addcmul) rather than a multiply then an add over the whole stream
        h1 = torch.addcmul(hidden_states, self.scale * torch.tanh(self.alpha_attn), attended)
        dense = cpu_kernels.geglu_feed_forward(self.norm2(h1), self.ff, self.cpu_fast)
        return torch.addcmul(h1, self.scale * torch.tanh(self.alpha_dense), dense)

    # __call__ rather than forward: diffusers' Attention reads the processor's call signature, and
    # nothing here needs nn.Module hooks (the UNet's own hooks move us with it).
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        # `hidden_states` is norm2(h); the pre-hook on the block's norm2 gave us h itself.
        h, self._block_input = self._block_input, None
        if h is None:
            raise RuntimeError("FACT processor called without its block: attach it with FaceAdapter.attach(unet)")
        base_processor = self._base[0]
        n_faces = self.num_face_tokens
        if encoder_hidden_states is None or n_faces == 0:
            text, faces = encoder_hidden_states, None
        else:
            if encoder_hidden_states.shape[1] <= n_faces:
                raise ValueError(f"encoder_hidden_states has {encoder_hidden_states.shape[1]} tokens; expected "
                                 f"text tokens followed by {n_faces} face tokens")
            # contiguous: a strided slice would send the block's own to_k / to_v down a slower (bmm) path
            text, faces = encoder_hidden_states[:, :-n_faces].contiguous(), encoder_hidden_states[:, -n_faces:]

        if faces is None or (self.scale == 0 and self.fair_mask is None):
            # scale 0 adds exactly nothing (0 * finite = 0): skip the work, the result is the same bits
            delta = None
            normed = hidden_states if self.ln is None else self.ln(h)
        else:
            h2 = self._h2(h, faces, attn.heads)
            delta = h2 - h
            if self.fair_mask is not None:
                self.fair_value = self._fair(h, delta)
            normed = (self.ln or self._block_norm[0])(h2)
        cross = base_processor(attn, normed, encoder_hidden_states=text, attention_mask=attention_mask,
                               temb=temb, **kwargs)
        return cross if delta is None else delta + cross

    def _fair(self, hidden_states: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """||delta * (1 - M)|| / ||h * (1 - M)|| per sample, M = face mask at this layer's resolution."""
        mask = self.fair_mask
        height, width = mask.shape[-2:]
        n_tokens = hidden_states.shape[1]
        while height * width > n_tokens:  # each UNet downsampling halves with ceil (stride 2, pad 1)
            height, width = (height + 1) // 2, (width + 1) // 2
        if height * width != n_tokens:
            raise ValueError(f"face mask {tuple(mask.shape[-2:])} does not match a layer with {n_tokens} tokens")
        outside = 1.0 - F.interpolate(mask.to(delta.dtype), size=(height, width), mode="area")
        outside = outside.flatten(2).transpose(1, 2)  # [B, tokens, 1]
        numerator = (delta * outside).flatten(1).norm(dim=1)
        denominator = (hidden_states * outside).flatten(1).norm(dim=1).clamp_min(1e-6)
        return numerator / denominator
