"""FACTFuser in its diffusers block against a naive implementation of the spec's pseudo-code (section 4).

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

from facefact.model import FaceAdapter
from facefact.model.adapter import FACTFuser
from facefact.training.fair import FairRegularizer
from facefact.model.tiny import tiny_resampler_config

from .conftest import LATENT, encoder_tokens, run


def naive_attention(q, k, v, heads):
    """Explicit softmax(q kᵀ / sqrt(d)) v over all keys; [B, Lq, C] x [B, Lk, C]."""
    b, lq, c = q.shape
    d = c // heads
    q, k, v = (x.reshape(b, -1, heads, d).permute(0, 2, 1, 3) for x in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    return (weights @ v).permute(0, 2, 1, 3).reshape(b, lq, c)


def naive_fuser(fuser, h, faces, scale):
    """h2 of the spec: the whole (N+16n)^2 gated self-attention, then the gated feed-forward."""
    n = h.shape[1]
    f = faces @ fuser.linear.weight.T + fuser.linear.bias
    x = F.layer_norm(torch.cat([h, f], dim=1), (h.shape[-1],), fuser.norm1.weight, fuser.norm1.bias, 1e-5)
    sa = fuser.attn
    full = naive_attention(x @ sa.to_q.weight.T, x @ sa.to_k.weight.T, x @ sa.to_v.weight.T, fuser.heads)
    assert full.shape[1] == n + faces.shape[1]  # (N+16n) queries: the whole square matrix
    a = (full @ sa.to_out[0].weight.T + sa.to_out[0].bias)[:, :n]
    h1 = h + scale * torch.tanh(fuser.alpha_attn) * a
    y = F.layer_norm(h1, (h.shape[-1],), fuser.norm2.weight, fuser.norm2.bias, 1e-5)
    proj = fuser.ff.net[0].proj
    value, gate = (y @ proj.weight.T + proj.bias).chunk(2, dim=-1)
    ff = (value * F.gelu(gate)) @ fuser.ff.net[2].weight.T + fuser.ff.net[2].bias
    return h1 + scale * torch.tanh(fuser.alpha_dense) * ff


def naive_block(block, fuser, h0, text, faces, scale):
    """The whole transformer block with FACT, written out: attn1 residual, h2, then the block's own
    norm2 + text cross-attention on h2, then its feed-forward."""
    dim = h0.shape[-1]
    h = h0 + block.attn1(block.norm1(h0))
    h2 = naive_fuser(fuser, h, faces, scale)
    attn2 = block.attn2
    z = F.layer_norm(h2, (dim,), block.norm2.weight, block.norm2.bias, 1e-5)
    cross = naive_attention(z @ attn2.to_q.weight.T, text @ attn2.to_k.weight.T, text @ attn2.to_v.weight.T,
                            attn2.heads)
    out = h2 + cross @ attn2.to_out[0].weight.T + attn2.to_out[0].bias
    return out + block.ff(block.norm3(out))


def randomize(module, generator, std=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim,heads,n_visual,photos,scale", [(64, 8, 48, 1, 0.5), (40, 4, 33, 2, 1.0),
                                                             (96, 3, 25, 3, 1.7)])
def test_fuser_in_its_block_matches_the_naive_pseudo_code(dim, heads, n_visual, photos, scale, dtype):
    g = torch.Generator().manual_seed(dim + photos)
    cross_dim = 24
    block = BasicTransformerBlock(dim, heads, dim // heads, cross_attention_dim=cross_dim).eval()
    fuser = FACTFuser(dim, cross_dim, heads).eval()
    randomize(block, g, std=1 / math.sqrt(dim))
    randomize(fuser, g, std=1 / math.sqrt(dim))
    with torch.no_grad():
        for norm in (fuser.norm1, fuser.norm2, block.norm1, block.norm2, block.norm3):
            norm.weight.copy_(1 + 0.2 * torch.randn(dim, generator=g))
            norm.bias.copy_(0.2 * torch.randn(dim, generator=g))
        fuser.alpha_attn.fill_(0.7)
        fuser.alpha_dense.fill_(-0.4)
    block.to(dtype)
    fuser.to(dtype)
    fuser.scale = scale
    block.fuser = fuser  # diffusers' own slot

    h0 = torch.randn(2, n_visual, dim, generator=g, dtype=dtype)
    text = torch.randn(2, 7, cross_dim, generator=g, dtype=dtype)
    faces = torch.randn(2, 16 * photos, cross_dim, generator=g, dtype=dtype)
    with torch.no_grad():
        ours = block(h0, encoder_hidden_states=text, cross_attention_kwargs={"gligen": {"objs": faces}})
        expected = naive_block(block, fuser, h0, text, faces, scale)
        without = block(h0, encoder_hidden_states=text)
        h = h0 + block.attn1(block.norm1(h0))
        increment = fuser(h, faces) - h
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=tol)
    assert ((ours - expected).norm() / expected.norm()).item() < tol
    assert increment.abs().max() > 1e-2 and not torch.allclose(ours, without)  # the adapter did contribute


def test_fuser_refuses_face_tokens_for_another_batch():
    fuser = FACTFuser(16, 8, 2)
    with pytest.raises(ValueError, match="face tokens for a batch of 3"):
        fuser(torch.randn(2, 4, 16), torch.randn(3, 16, 8))


# ---- FAIR (spec section 7) --------------------------------------------------------------------
def face_mask(batch=2):
    mask = torch.zeros(batch, 1, LATENT, LATENT)
    mask[0, :, 4:12, 5:11] = 1
    mask[1, :, 2:9, 6:14] = 1
    return mask


def capture_fuser_inputs(adapter):
    """block path -> (h, face tokens) of the last call of each fuser (a test-side hook)."""
    seen, handles = {}, []
    for path in adapter.block_paths:
        def hook(module, args, path=path):
            seen[path] = args
        handles.append(adapter.fuser(path).register_forward_pre_hook(hook))
    return seen, handles


def independent_fair(adapter, seen, mask):
    values = []
    for path in adapter.block_paths:
        fuser, (h, faces) = adapter.fuser(path), seen[path]
        delta = naive_fuser(fuser, h, faces.expand(h.shape[0], -1, -1), fuser.scale) - h
        factor = int(round(math.sqrt(mask.shape[-1] * mask.shape[-2] / h.shape[1])))
        outside = 1 - F.avg_pool2d(mask, factor)  # the mask at this layer's resolution (power-of-2 pooling)
        outside = outside.flatten(2).transpose(1, 2)
        per_sample = (delta * outside).flatten(1).norm(dim=1) / (h * outside).flatten(1).norm(dim=1)
        values.append(per_sample.mean())
    return torch.stack(values).mean()


def test_fair_loss_matches_its_definition(unet, adapter, inputs):
    faces = adapter.face_tokens(encoder_tokens(1))
    mask = face_mask()
    adapter.attach(unet)
    seen, handles = capture_fuser_inputs(adapter)
    fair = FairRegularizer(adapter)
    try:
        adapter.set_scale(1.0)
        with fair.measuring(mask):
            run(unet, inputs, faces)
        loss = fair.loss()
        with torch.no_grad():
            expected = independent_fair(adapter, seen, mask)
        assert {seen[p][0].shape[1] for p in seen} == {256, 64, 16, 4}  # every resolution, mid block included
    finally:
        for handle in handles:
            handle.remove()
        adapter.detach()
    assert loss.item() > 0
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    assert all(not f._forward_hooks for f in adapter.all_fusers())  # the context cleaned up
    with pytest.raises(RuntimeError, match="no FAIR values"):
        fair.loss()  # values are consumed once read


def test_fair_loss_is_zero_for_an_untrained_adapter(unet, inputs):
    adapter = FaceAdapter.for_unet(unet, tiny_resampler_config(unet.config.cross_attention_dim))
    faces = adapter.face_tokens(encoder_tokens(1)).detach()
    adapter.attach(unet)
    fair = FairRegularizer(adapter)
    try:
        with fair.measuring(face_mask()):
            run(unet, inputs, faces)
        assert fair.loss().item() == 0.0
    finally:
        adapter.detach()


def test_fair_loss_has_gradients_for_the_adapter(unet, adapter, inputs):
    adapter.requires_grad_(True)
    latents, timestep, text = inputs
    adapter.attach(unet)
    fair = FairRegularizer(adapter)
    try:
        faces = adapter.face_tokens(encoder_tokens(1))
        with fair.measuring(face_mask()):
            unet(latents, timestep, encoder_hidden_states=text, cross_attention_kwargs={"gligen": {"objs": faces}})
        fair.loss().backward()
    finally:
        adapter.detach()
    fuser = adapter.all_fusers()[0]
    assert fuser.alpha_attn.grad is not None and fuser.alpha_attn.grad.abs() > 0
    assert adapter.resampler.latents.grad is not None
    assert all(p.grad is None for p in unet.parameters())  # the frozen UNet gets none
