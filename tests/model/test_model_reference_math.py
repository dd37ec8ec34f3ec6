"""FACTAttnProcessor against a naive implementation of the spec's pseudo-code (section 4).

The reference here builds the whole (N+16n) x (N+16n) attention with an explicit softmax - queries for
the face tokens too - and keeps the first N rows, exactly as written in the spec; the text
cross-attention is also written out by hand. FAIR (section 7) is checked against its definition.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor2_0

from facefact.model import FaceAdapter, cross_attention_blocks
from facefact.model.adapter import FACTAttnProcessor
from facefact.model.tiny import tiny_resampler_config

from .conftest import LATENT, encoder_tokens, run, with_faces


def naive_attention(q, k, v, heads):
    """Explicit softmax(q kᵀ / sqrt(d)) v over all keys; [B, Lq, C] x [B, Lk, C]."""
    b, lq, c = q.shape
    d = c // heads
    q, k, v = (x.reshape(b, -1, heads, d).permute(0, 2, 1, 3) for x in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (weights @ v).permute(0, 2, 1, 3).reshape(b, lq, c)


def naive_block_attn2(proc, attn2, block_norm2, h, text, faces, scale):
    """What the block's attn2 call returns with the adapter: h2 - h + CrossAttn(norm_block2(h2), text)."""
    n = h.shape[1]
    f = faces @ proc.linear.weight.T + proc.linear.bias
    x = F.layer_norm(torch.cat([h, f], dim=1), (h.shape[-1],), proc.norm1.weight, proc.norm1.bias, 1e-5)
    sa = proc.attn
    full = naive_attention(x @ sa.to_q.weight.T, x @ sa.to_k.weight.T, x @ sa.to_v.weight.T, attn2.heads)
    assert full.shape[1] == n + faces.shape[1]  # (N+16n) queries: the whole square matrix
    a = (full @ sa.to_out[0].weight.T + sa.to_out[0].bias)[:, :n]
    h1 = h + scale * torch.tanh(proc.alpha_attn) * a
    y = F.layer_norm(h1, (h.shape[-1],), proc.norm2.weight, proc.norm2.bias, 1e-5)
    proj = proc.ff.net[0].proj
    value, gate = (y @ proj.weight.T + proj.bias).chunk(2, dim=-1)
    ff = (value * F.gelu(gate)) @ proc.ff.net[2].weight.T + proc.ff.net[2].bias
    h2 = h1 + scale * torch.tanh(proc.alpha_dense) * ff
    z = F.layer_norm(h2, (h.shape[-1],), block_norm2.weight, block_norm2.bias, 1e-5)
    cross = naive_attention(z @ attn2.to_q.weight.T, text @ attn2.to_k.weight.T, text @ attn2.to_v.weight.T,
                            attn2.heads)
    cross = cross @ attn2.to_out[0].weight.T + attn2.to_out[0].bias
    return h2 - h + cross


def randomize(module, generator, std=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim,heads,n_visual,photos,scale", [(64, 8, 48, 1, 0.5), (40, 4, 33, 2, 1.0),
                                                             (96, 3, 25, 3, 1.7)])
def test_processor_matches_the_naive_pseudo_code(dim, heads, n_visual, photos, scale, dtype):
    g = torch.Generator().manual_seed(dim + photos)
    cross_dim = 24
    block = BasicTransformerBlock(dim, heads, dim // heads, cross_attention_dim=cross_dim).eval()
    proc = FACTAttnProcessor(dim, cross_dim).eval()
    randomize(block.attn2, g, std=1 / math.sqrt(dim))
    randomize(proc, g, std=1 / math.sqrt(dim))
    with torch.no_grad():
        for norm in (proc.norm1, proc.norm2, block.norm2):
            norm.weight.copy_(1 + 0.2 * torch.randn(dim, generator=g))
            norm.bias.copy_(0.2 * torch.randn(dim, generator=g))
        proc.alpha_attn.fill_(0.7)
        proc.alpha_dense.fill_(-0.4)
    block.to(dtype)
    proc.to(dtype)
    proc._block_norm[0], proc._base[0] = block.norm2, AttnProcessor2_0()
    proc.scale, proc.num_face_tokens = scale, 16 * photos

    h = torch.randn(2, n_visual, dim, generator=g, dtype=dtype)
    text = torch.randn(2, 7, cross_dim, generator=g, dtype=dtype)
    faces = torch.randn(2, 16 * photos, cross_dim, generator=g, dtype=dtype)
    with torch.no_grad():
        proc.remember_block_input(block.norm2, (h,))  # what the pre-hook on the block's norm2 does
        ours = proc(block.attn2, block.norm2(h), encoder_hidden_states=torch.cat([text, faces], dim=1))
        expected = naive_block_attn2(proc, block.attn2, block.norm2, h, text, faces, scale)
        increment = proc.increment(h, faces, heads)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=tol)
    assert ((ours - expected).norm() / expected.norm()).item() < tol
    assert increment.abs().max() > 1e-2  # the adapter did contribute, not only the text cross-attention


def test_processor_rejects_too_few_tokens():
    proc = FACTAttnProcessor(16, 8)
    block = BasicTransformerBlock(16, 2, 8, cross_attention_dim=8)
    proc._block_norm[0], proc._base[0] = block.norm2, AttnProcessor2_0()
    h = torch.randn(1, 4, 16)
    proc.remember_block_input(block.norm2, (h,))
    with pytest.raises(ValueError, match="face tokens"):
        proc(block.attn2, block.norm2(h), encoder_hidden_states=torch.randn(1, 16, 8))


# ---- FAIR (spec section 7) --------------------------------------------------------------------
def face_mask(batch=2):
    mask = torch.zeros(batch, 1, LATENT, LATENT)
    mask[0, :, 4:12, 5:11] = 1
    mask[1, :, 2:9, 6:14] = 1
    return mask


def capture_attn2_inputs(unet):
    """block path -> (h, encoder_hidden_states) of the last call of the block's attn2, where h is the
    residual stream before the block's norm2 (attn2 itself receives norm2(h))."""
    seen, handles, block_inputs = {}, [], {}
    for path, block in cross_attention_blocks(unet).items():
        def norm_hook(module, args, path=path):
            block_inputs[path] = args[0]

        def attn_hook(module, args, kwargs, path=path):
            seen[path] = (block_inputs[path], kwargs["encoder_hidden_states"])
        handles.append(block.norm2.register_forward_pre_hook(norm_hook))
        handles.append(block.attn2.register_forward_pre_hook(attn_hook, with_kwargs=True))
    return seen, handles


def independent_fair(adapter, unet, seen, mask):
    values = []
    for path in adapter.block_paths:
        proc, h = adapter.processor(path), seen[path][0]
        faces = seen[path][1][:, -proc.num_face_tokens:]
        delta = proc.increment(h, faces, cross_attention_blocks(unet)[path].attn2.heads)
        factor = int(round(math.sqrt(mask.shape[-1] * mask.shape[-2] / h.shape[1])))
        outside = 1 - F.avg_pool2d(mask, factor)  # the mask at this layer's resolution (power-of-2 pooling)
        outside = outside.flatten(2).transpose(1, 2)
        per_sample = (delta * outside).flatten(1).norm(dim=1) / (h * outside).flatten(1).norm(dim=1)
        values.append(per_sample.mean())
    return torch.stack(values).mean()


def test_fair_loss_matches_its_definition(unet, adapter, inputs):
    states = with_faces(inputs[2], adapter.face_tokens(encoder_tokens(1)))
    mask = face_mask()
    adapter.attach(unet)
    seen, handles = capture_attn2_inputs(unet)
    try:
        adapter.set_scale(1.0)
        with adapter.fair_regularizer(mask):
            run(unet, inputs, states)
        loss = adapter.fair_loss()
        with torch.no_grad():
            expected = independent_fair(adapter, unet, seen, mask)
        assert {seen[p][0].shape[1] for p in seen} == {256, 64, 16, 4}  # every resolution, mid block included
    finally:
        for handle in handles:
            handle.remove()
        adapter.detach()
    assert loss.item() > 0
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    assert all(p.fair_mask is None for p in adapter.all_processors())  # the context cleaned up
    with pytest.raises(RuntimeError, match="no FAIR values"):
        adapter.fair_loss()  # values are consumed once read


def test_fair_loss_is_zero_for_an_untrained_adapter(unet, inputs):
    adapter = FaceAdapter.for_unet(unet, tiny_resampler_config(unet.config.cross_attention_dim))
    states = with_faces(inputs[2], adapter.face_tokens(encoder_tokens(1)).detach())
    adapter.attach(unet)
    try:
        with adapter.fair_regularizer(face_mask()):
            run(unet, inputs, states)
        assert adapter.fair_loss().item() == 0.0
    finally:
        adapter.detach()


def test_fair_loss_has_gradients_for_the_adapter(unet, adapter, inputs):
    adapter.requires_grad_(True)
    latents, timestep, text = inputs
    adapter.attach(unet)
    try:
        states = with_faces(text, adapter.face_tokens(encoder_tokens(1)))
        with adapter.fair_regularizer(face_mask()):
            unet(latents, timestep, encoder_hidden_states=states)
        adapter.fair_loss().backward()
    finally:
        adapter.detach()
    proc = adapter.all_processors()[0]
    assert proc.alpha_attn.grad is not None and proc.alpha_attn.grad.abs() > 0
    assert adapter.resampler.latents.grad is not None
    assert all(p.grad is None for p in unet.parameters())  # the frozen UNet gets none
