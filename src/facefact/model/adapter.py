"""FACT's layer inside the UNet (spec section 4), in diffusers' own GLIGEN slot.

diffusers' ``BasicTransformerBlock`` already calls ``self.fuser(h, objs)`` exactly where FACT's
layer sits - after the attn1 residual, before the block's ``norm2`` and text cross-attention -
whenever the UNet is called with ``cross_attention_kwargs={"gligen": {"objs": ...}}``; and
``GatedSelfAttentionDense`` is GLIGEN's gated self-attention with FACT's parameter names
(``linear``, ``attn.to_q/k/v/to_out.0``, ``ff.net.0.proj``, ``ff.net.2``, ``norm1``, ``norm2``,
``alpha_attn``, ``alpha_dense``). :class:`FACTFuser` is that module plus FACT's scale s:

    f'  = linear(f)
    a   = SA(norm1(cat[h, f']))[:, :len(h)]
    h1  = h + s * tanh(alpha_attn) * a
    h2  = h1 + s * tanh(alpha_dense) * FF(norm2(h1))

and the block goes on with ``h2 + attn2(norm2_block(h2), text)`` by itself. Face tokens travel per
call out of band (never inside the text embeddings), so ControlNets, which get no
``cross_attention_kwargs``, never see them.

Efficiency: only the len(h) visual queries are needed, so the attention runs as one
``scaled_dot_product_attention`` over [len(h)] queries x [len(h) + 16n] keys instead of
GLIGEN's full (len(h) + 16n)^2 self-attention followed by a slice. Plain modules and ops only, so
``torch.compile`` captures it without graph breaks.

The scale s reaches the arithmetic as a tensor (a non-persistent buffer, filled in place by
`set_scale`), not as a Python float: dynamo specialises a float attribute, so a compiled UNet would
compile again for each new `fact_scale` (and per-level scale); a tensor is a graph input whose
value may change freely. Whether a fuser acts at all (s != 0) stays a Python flag: at s = 0 the
block is untouched bit for bit and costs nothing, and a compiled UNet keeps one graph per pattern
of acting levels (all on, all off for a `fact_window`'s off steps), not one per value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import GatedSelfAttentionDense
from torch import nn


class FACTFuser(GatedSelfAttentionDense):
    """One block's FACT adapter, set as ``block.fuser``. ``scale`` is FACT's s (0 = the block is
    untouched, bit for bit); it is per module so each UNet level can have its own."""

    def __init__(self, block_dim: int, cross_attention_dim: int, heads: int = 8):
        if block_dim % heads:
            raise ValueError(f"block width {block_dim} is not divisible by {heads} heads")
        super().__init__(query_dim=block_dim, context_dim=cross_attention_dim, n_heads=heads,
                         d_head=block_dim // heads)
        # GLIGEN's `attn` is a diffusers Attention, which would show up in `unet.attn_processors`
        # (and break `set_attn_processor(dict)`, e.g. IP-Adapter loading, while FACT is attached).
        # Same parameters, plain module.
        self.attn = FaceSelfAttention(block_dim)
        self.heads = heads
        # s as a tensor (see the module's docs): in float32, or float64 for a float64 fuser - the
        # precision torch computes `python_float * half_tensor` in - kept there by `_apply`
        self.register_buffer("scale_tensor", torch.ones(()), persistent=False)
        self.scale = 1.0
        # The block's own norm2 values while a checkpoint's `ln.*` stands in for them (set by attach)
        self.original_norm: tuple[torch.Tensor, torch.Tensor] | None = None
        self.register_state_dict_post_hook(_leave_out_of_the_unet_state)

    @property
    def scale(self) -> float:
        """FACT's s for this block (0: the block is left exactly as it is)."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        self._scale = float(value)
        self.active = self._scale != 0.0  # a Python flag on purpose: the one thing compiled graphs branch on
        with torch.no_grad():
            self.scale_tensor.fill_(self._scale)  # in place: the same graph input, a kernel, no host sync

    def _apply(self, fn, recurse=True):
        """`module.to(dtype)` casts every floating buffer; the scale keeps the gate's precision, so
        a float16 fuser computes round16(float(s) * tanh(alpha)) exactly as with a Python float."""
        super()._apply(fn, recurse)
        wanted = torch.promote_types(self.alpha_attn.dtype, torch.float32)
        if self.scale_tensor.dtype != wanted:
            self.scale_tensor = torch.full((), self._scale, dtype=wanted, device=self.scale_tensor.device)
        return self

    def gate(self, alpha: torch.Tensor) -> torch.Tensor:
        """s * tanh(alpha) in the fuser's dtype, bit for bit what the Python float s gave."""
        tanh = torch.tanh(alpha)
        return (self.scale_tensor * tanh).to(tanh.dtype)

    @property
    def block_dim(self) -> int:
        return self.linear.out_features

    @property
    def cross_attention_dim(self) -> int:
        return self.linear.in_features

    def forward(self, x: torch.Tensor, objs) -> torch.Tensor:
        """`objs`: face tokens [1 or B, F, C], or (face tokens, FaceRegions) for several people."""
        regions = None
        if isinstance(objs, tuple):
            objs, regions = objs
        if objs is None or not self.active or not self.enabled:
            return x  # adds exactly nothing: the same tensor, so the same bits
        if objs.shape[0] != x.shape[0]:
            if objs.shape[0] != 1:
                raise ValueError(f"face tokens for a batch of {objs.shape[0]}, but the UNet batch is {x.shape[0]}")
            objs = objs.expand(x.shape[0], -1, -1)
        attn_mask, inside = (None, None) if regions is None else regions.layer(x.shape[1], objs.shape[1], x.device)
        faces = self.norm1(self.linear(objs))
        visual = self.norm1(x)  # LayerNorm is per token: norm1(cat[h, f']) = cat[norm1(h), norm1(f')]
        attended = self.attend(visual, torch.cat([visual, faces], dim=1), attn_mask)
        h1 = x + self.gate(self.alpha_attn) * attended
        h2 = h1 + self.gate(self.alpha_dense) * self.ff(self.norm2(h1))
        return h2 if inside is None else torch.where(inside, h2, x)  # outside every region: untouched

    def attend(self, visual: torch.Tensor, context: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The visual rows of SA(cat[visual, faces]), computed for the visual queries only."""
        attn, heads = self.attn, self.heads
        batch, n_visual, dim = visual.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, -1, heads, dim // heads).transpose(1, 2)

        q, k, v = split(attn.to_q(visual)), split(attn.to_k(context)), split(attn.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return attn.to_out[0](out.transpose(1, 2).reshape(batch, n_visual, dim))


class FaceSelfAttention(nn.Module):
    """The parameters of GLIGEN's attention (`to_q`, `to_k`, `to_v` without bias, `to_out.0`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])


def _leave_out_of_the_unet_state(fuser: FACTFuser, state: dict, prefix: str, local_metadata) -> None:
    """Saved as part of a UNet (`...transformer_blocks.0.fuser.*`), the fuser is not there and the
    block's norm2 has its own values: a UNet saved while FACT is attached is the base model, which
    `from_pretrained` reloads intact. Saved as part of a FaceAdapter, nothing changes."""
    if not prefix.endswith(".fuser."):
        return
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]
    if fuser.original_norm is not None:
        block = prefix[: -len("fuser.")]
        state[block + "norm2.weight"], state[block + "norm2.bias"] = (t.clone() for t in fuser.original_norm)


class FaceTokenPassthrough(nn.Module):
    """``unet.position_net`` while FACT is attached. diffusers' UNet hands the ``gligen`` kwargs to
    its ``position_net`` and gives every fuser what it returns; GLIGEN projects boxes there, FACT's
    face tokens are ready as they are. It also names the adapter it was attached with, so whoever
    holds the UNet (every pipeline built on it) finds FACT there: `FaceAdapter.attached_to(unet)`."""

    def __init__(self, adapter: nn.Module | None = None):
        super().__init__()
        self._adapter = [adapter]  # a plain list: the adapter is not a submodule of the UNet

    @property
    def adapter(self) -> nn.Module | None:
        return self._adapter[0]

    def forward(self, objs: torch.Tensor, regions=None):
        return objs if regions is None else (objs, regions)


class EmptyFuserSlot(nn.Module):
    """``block.fuser`` of a transformer block that carries no FACT layer (layout "first" on SDXL, whose
    stacks hold several blocks). diffusers calls every block's fuser once ``gligen`` kwargs are
    passed, so each block needs one; this one returns the block's tokens as they are (no parameters,
    nothing in any state dict)."""

    def forward(self, x: torch.Tensor, objs) -> torch.Tensor:
        return x
