"""FaceAdapter attach / detach on the tiny SD1.5-layout and SDXL-layout UNets: reversible, exact at scale 0,
`ln.*` checkpoints, several photos, per-level scales."""
from __future__ import annotations

import copy

import pytest
import torch

from facefact.model import FaceAdapter, cross_attention_blocks
from facefact.model.adapter import EmptyFuserSlot, FACTFuser
from facefact.model.tiny import tiny_face_adapter, tiny_resampler_config

from .conftest import encoder_tokens, family_kwargs, make_unet, make_xl_unet, run

# family -> (cross-attention blocks of its tiny UNet, fusers of the default layout "first")
BLOCKS = {"sd15": (16, 16), "sdxl": (17, 11)}


@pytest.fixture(scope="module", params=list(BLOCKS))
def base_unet(request):
    """Every test here runs on the tiny SD1.5 UNet and on the tiny SDXL one (shared, never modified)."""
    return make_unet() if request.param == "sd15" else make_xl_unet()


def family(unet) -> str:
    return "sdxl" if unet.config.get("addition_embed_type") == "text_time" else "sd15"


def snapshot(unet):
    return ({k: v.clone() for k, v in unet.state_dict().items()},
            {name: p for name, p in unet.attn_processors.items()},
            {path: block.norm2 for path, block in cross_attention_blocks(unet).items()},
            {name for name, _ in unet.named_modules()})


def hooks(unet) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in unet.modules())


def test_detach_restores_the_unet_exactly(unet, adapter, inputs):
    before = run(unet, inputs)
    state, processors, norms, modules = snapshot(unet)
    assert (len(norms), len(adapter.block_paths)) == BLOCKS[family(unet)]

    adapter.attach(unet)
    assert adapter.is_attached
    # diffusers' own slots, nothing replaced: the same processors, no hook, every norm2 in place
    blocks = cross_attention_blocks(unet)
    assert all(isinstance(blocks[p].fuser, FACTFuser) for p in adapter.block_paths)
    # the blocks outside the layout get an empty slot (diffusers calls every block's fuser)
    assert all(isinstance(b.fuser, EmptyFuserSlot) for p, b in blocks.items() if p not in adapter.block_paths)
    assert unet.attn_processors == processors and hooks(unet) == 0
    assert all(blocks[p].norm2 is norms[p] for p in norms)
    adapter.set_scale(0.7)
    faces = adapter.face_tokens(encoder_tokens(1))
    changed = run(unet, inputs, faces)
    assert not torch.allclose(changed, before)  # the adapter did act while attached
    adapter.detach()

    assert not adapter.is_attached
    assert torch.equal(run(unet, inputs), before)
    state_after, processors_after, norms_after, modules_after = snapshot(unet)
    assert list(state_after) == list(state)
    assert all(torch.equal(state_after[k], state[k]) for k in state)
    assert processors_after == processors
    assert all(norms_after[p] is norms[p] for p in norms)  # the very same norm2 modules, not copies
    assert modules_after == modules and hooks(unet) == 0  # no fuser, no position_net, no hook left behind
    assert not hasattr(unet, "position_net")


def test_saving_the_unet_while_attached_keeps_the_base_model_intact(unet, adapter, inputs, tmp_path):
    """A UNet saved while attached (e.g. after fuse_lora) reloads as the base model: its state dict
    leaves the fusers out."""
    from diffusers import UNet2DConditionModel

    before = run(unet, inputs)
    adapter.attach(unet)
    try:
        assert not any(".fuser." in key for key in unet.state_dict())
        unet.save_pretrained(tmp_path / "unet")
    finally:
        adapter.detach()
    reloaded = UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    assert torch.equal(run(reloaded, inputs), before)


def test_attach_detach_attach_again_gives_the_same_output(unet, adapter, inputs):
    states = adapter.face_tokens(encoder_tokens(1))
    adapter.attach(unet)
    adapter.set_scale(0.5)
    first = run(unet, inputs, states)
    adapter.detach()
    adapter.attach(unet)
    assert torch.equal(run(unet, inputs, states), first)
    adapter.detach()


def test_attaching_twice_raises(unet, adapter):
    adapter.attach(unet)
    try:
        with pytest.raises(RuntimeError, match="already attached"):
            adapter.attach(unet)
        other = tiny_face_adapter(unet, seed=5)
        with pytest.raises(RuntimeError, match="already carries a FACT adapter"):
            other.attach(unet)
        assert not other.is_attached
        blocks = cross_attention_blocks(unet)
        assert all(blocks[path].fuser is adapter.fuser(path) for path in adapter.block_paths)
    finally:
        adapter.detach()


def test_scale_zero_is_the_base_unet_bit_for_bit(unet, adapter, inputs):
    base = run(unet, inputs)
    states = adapter.face_tokens(encoder_tokens(1))
    adapter.attach(unet)
    try:
        adapter.set_scale(0.0)
        assert torch.equal(run(unet, inputs, states), base)
        adapter.set_scale(1.0)  # no face tokens at all: the text alone, whatever the scale
        assert torch.equal(run(unet, inputs), base)
    finally:
        adapter.detach()


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 3.0])
def test_untrained_adapter_is_the_identity_at_any_scale(unet, inputs, scale):
    base = run(unet, inputs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        adapter = FaceAdapter.for_unet(unet, tiny_resampler_config(unet.config.cross_attention_dim))
    assert all(p.alpha_attn.item() == 0 and p.alpha_dense.item() == 0 for p in adapter.all_fusers())
    adapter.attach(unet)
    try:
        adapter.set_scale(scale)
        with torch.no_grad():
            states = adapter.face_tokens(encoder_tokens(1))
        assert torch.equal(run(unet, inputs, states), base)
    finally:
        adapter.detach()


# ---- checkpoints that carry the block norm as `processor.ln.*` ----------------------------------
def adapter_with_ln(adapter, seed: int = 11):
    g = torch.Generator().manual_seed(seed)
    state = dict(adapter.released_state_dict())
    ln = {}
    for path in adapter.block_paths:
        width = adapter.fuser(path).block_dim
        ln[path] = (1 + 0.3 * torch.randn(width, generator=g), 0.2 * torch.randn(width, generator=g))
        state[f"{path}.attn2.processor.ln.weight"], state[f"{path}.attn2.processor.ln.bias"] = ln[path]
    return FaceAdapter.from_state_dict(state), ln


def test_ln_checkpoint_replaces_the_block_norm_and_detach_restores_it(unet, adapter, inputs):
    loaded, ln = adapter_with_ln(adapter)
    assert loaded.owns_block_norms and len(loaded.block_norms) == len(adapter.block_paths)
    assert (loaded.family, loaded.layout) == (adapter.family, adapter.layout)  # read from the block paths
    assert all(k in loaded.released_state_dict() for k in (f"{p}.attn2.processor.ln.weight" for p in ln))

    # independent expectation: a copy of the UNet with the checkpoint's norm2 parameters copied in
    expected_unet = copy.deepcopy(unet)
    for path, block in cross_attention_blocks(expected_unet).items():
        if path not in ln:
            continue  # a block without a fuser keeps its norm
        block.norm2.weight.copy_(ln[path][0])
        block.norm2.bias.copy_(ln[path][1])
    expected = run(expected_unet, inputs)

    base = run(unet, inputs)
    norms = {p: (b.norm2, b.norm2.weight.clone(), b.norm2.bias.clone()) for p, b in cross_attention_blocks(unet).items()}
    states = loaded.face_tokens(encoder_tokens(1))
    loaded.attach(unet)
    try:
        loaded.set_scale(0.0)
        ours = run(unet, inputs, states)
        assert not torch.allclose(ours, base)  # the checkpoint's norm is in effect even at scale 0
        assert torch.equal(ours, expected)
    finally:
        loaded.detach()
    for path, block in cross_attention_blocks(unet).items():
        module, weight, bias = norms[path]
        assert block.norm2 is module
        assert torch.equal(block.norm2.weight, weight) and torch.equal(block.norm2.bias, bias)
    assert torch.equal(run(unet, inputs), base)
    # the checkpoint's norm stays with the adapter (it is its weight), ready for the next attach
    assert all(torch.equal(loaded.block_norms[p.replace(".", "/")].weight, ln[p][0]) for p in ln)
    assert loaded.released_state_dict().keys() == adapter_with_ln(adapter)[0].released_state_dict().keys()


# ---- several photos ---------------------------------------------------------------------------
def test_two_photos_are_concatenated_in_order(unet, adapter, inputs):
    tokens = encoder_tokens(2)
    with torch.no_grad():
        both = adapter.face_tokens(tokens)
        first, second = adapter.face_tokens(tokens[:1]), adapter.face_tokens(tokens[1:])
        swapped = adapter.face_tokens(tokens.flip(0))
        other = adapter.face_tokens(torch.cat([tokens[:1], encoder_tokens(1, seed=99)]))
    assert both.shape == (1, 32, unet.config.cross_attention_dim)
    torch.testing.assert_close(both, torch.cat([first, second], dim=1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(swapped, torch.cat([second, first], dim=1), rtol=1e-6, atol=1e-6)

    base = run(unet, inputs)
    adapter.attach(unet)
    try:
        adapter.set_scale(1.0)
        out = run(unet, inputs, both)
        out_swapped = run(unet, inputs, swapped)
        out_other = run(unet, inputs, other)
        out_one = run(unet, inputs, first)
    finally:
        adapter.detach()
    assert out.shape == base.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, base)
    # Face tokens enter only as keys/values of the gated self-attention, with no position: the
    # softmax over keys does not depend on their order, so the photo order changes nothing but
    # rounding. (Which photos are given does matter.)
    torch.testing.assert_close(out_swapped, out, rtol=1e-4, atol=1e-5)
    assert (out_other - out).abs().max() > 1e-3
    assert (out_one - out).abs().max() > 1e-3


def test_null_tokens_for_n_photos_repeat_the_one_photo_block(adapter):
    with torch.no_grad():
        one = adapter.null_face_tokens(1)
        three = adapter.null_face_tokens(3)
    assert one.shape == (1, 16, adapter.resampler.config.output_dim)
    assert three.shape == (1, 48, adapter.resampler.config.output_dim)
    assert one.abs().sum() > 0  # not zeros
    torch.testing.assert_close(three, one.repeat(1, 3, 1), rtol=1e-6, atol=1e-6)


def test_per_level_scales_equal_to_s_are_the_scalar_s(unet, adapter, inputs):
    faces = adapter.face_tokens(encoder_tokens(1))
    adapter.attach(unet)
    try:
        adapter.set_scale(0.6)
        scalar = run(unet, inputs, faces)
        adapter.set_scale({"down": 0.6, "mid": 0.6, "up": 0.6})
        assert torch.equal(run(unet, inputs, faces), scalar)
        adapter.set_scale({"up": 0.6})  # the levels not named get 0, as with set_ip_adapter_scale
        up = sum(path.startswith("up_blocks.") for path in adapter.block_paths)  # SD1.5 9, tiny SDXL 6
        assert [f.scale for f in adapter.all_fusers()].count(0.6) == up > 0
        assert not torch.equal(run(unet, inputs, faces), scalar)
        with pytest.raises(ValueError, match="names no block"):
            adapter.set_scale({"sideways": 1.0})
        with pytest.raises(ValueError, match="finite"):
            adapter.set_scale(float("nan"))
    finally:
        adapter.detach()


def test_face_tokens_never_reach_a_text_only_call(unet, adapter, inputs):
    """Without face tokens the attached UNet is the base model: nothing is taken from the text."""
    base = run(unet, inputs)
    adapter.attach(unet)
    try:
        adapter.set_scale(1.0)
        assert torch.equal(run(unet, inputs), base)
    finally:
        adapter.detach()


def test_the_fusers_compile_without_graph_breaks(unet, adapter, inputs):
    """Plain modules and ops: torch.compile captures the whole fuser in one graph."""
    fuser = adapter.fuser(adapter.block_paths[0])
    fuser.scale = 0.5
    hidden = torch.randn(2, 256, fuser.block_dim)
    faces = adapter.face_tokens(encoder_tokens(1)).detach()
    compiled = torch.compile(fuser, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(hidden, faces), fuser(hidden, faces))


def test_the_whole_unet_with_fact_compiles_in_one_graph(unet, adapter, inputs):
    """With FACT attached and face tokens passed, torch.compile(fullgraph=True) still captures the
    whole tiny UNet: the adapter adds no graph break (the eager backend: tracing only, no codegen)."""
    faces = adapter.face_tokens(encoder_tokens(1)).detach()
    adapter.attach(unet)
    try:
        adapter.set_scale(0.5)
        compiled = torch.compile(unet, fullgraph=True, backend="eager")
        latents, timestep, text = inputs
        with torch.no_grad():
            out = compiled(latents, timestep, encoder_hidden_states=text, **family_kwargs(unet, len(latents)),
                           cross_attention_kwargs={"gligen": {"objs": faces}}).sample
        torch.testing.assert_close(out, run(unet, inputs, faces))
    finally:
        adapter.detach()
        torch._dynamo.reset()


def test_a_compiled_unet_is_still_the_unet_fact_is_attached_to(unet, adapter):
    """`pipe.unet = torch.compile(pipe.unet)` (diffusers' documented way) keeps FACT usable: the
    wrapper is seen through, another UNet is not taken for it."""
    from facefact.pipelines import FACTStableDiffusionPipeline

    adapter.attach(unet)
    try:
        wrapped = torch.compile(unet, backend="eager")  # never called: nothing is traced
        assert adapter.is_attached_to(wrapped) and adapter.is_attached_to(unet)
        assert not adapter.is_attached_to(copy.deepcopy(unet)) and not adapter.is_attached_to(torch.compile(
            copy.deepcopy(unet), backend="eager"))
    finally:
        adapter.detach()
    pipe = FACTStableDiffusionPipeline.tiny()
    pipe.unet = torch.compile(pipe.unet, backend="eager")
    pipe.set_fact_scale(0.3)  # refused before: "the FACT adapter is not attached to this pipeline's UNet"
    assert pipe.fact_adapter.scale == 0.3
