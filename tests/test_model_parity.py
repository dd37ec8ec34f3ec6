"""Golden cases from the reference FACT implementation (tests/data/parity/*/).

Each case is loaded through the public loaders only - the diffusers UNet folder, the adapter in
the released `.ckpt` layout and the TransFace `.pt` - and must reproduce the reference tensors.
Drop another case folder beside the existing one and it is tested too.
"""
import json
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from facefact.model import EncoderConfig, FaceAdapter, ResamplerConfig, TransFaceEncoder

PARITY_DIR = Path(__file__).parent / "data" / "parity"
CASES = sorted(p for p in PARITY_DIR.iterdir() if (p / "case.json").exists())


def rel_err(ours: torch.Tensor, expected: torch.Tensor) -> float:
    return ((ours.double() - expected.double()).norm() / expected.double().norm()).item()


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def case(request):
    folder = request.param
    spec = json.loads((folder / "case.json").read_text())
    enc = spec["encoder"]
    encoder = TransFaceEncoder.from_checkpoint(
        folder / spec["encoder_checkpoint"],
        EncoderConfig(img_size=enc["img_size"], patch_size=enc["patch_size"], embed_dim=enc["embed_dim"],
                      depth=enc["depth"], num_heads=enc["num_heads"]),
        with_head=True)
    r = spec["resampler"]
    adapter = FaceAdapter.from_checkpoint(
        folder / spec["adapter_checkpoint"],
        ResamplerConfig(dim=r["dim"], depth=r["depth"], dim_head=r["dim_head"], heads=r["heads"],
                        num_queries=r["num_queries"], embedding_dim=r["embedding_dim"],
                        output_dim=r["output_dim"], ff_mult=r["ff_mult"]))
    unet = UNet2DConditionModel.from_pretrained(folder / spec["unet_dir"]).eval()
    return spec, encoder, adapter, unet, load_file(folder / "tensors.safetensors")


def test_encoder_tokens_match_reference(case):
    spec, encoder, _, _, t = case
    with torch.no_grad():
        tokens = encoder(t["face_pixels"])
        global_embedding = encoder.global_embedding(tokens)
    assert rel_err(tokens, t["encoder_local_tokens"]) <= 1e-5
    assert rel_err(global_embedding, t["encoder_global_embedding"]) <= 1e-5


def test_face_and_null_tokens_match_reference(case):
    spec, _, adapter, _, t = case
    n = spec["num_ims"]
    with torch.no_grad():
        face = adapter.face_tokens(t["encoder_local_tokens"])
        null = adapter.null_face_tokens(n)
    assert face.shape == (1, 16 * n, spec["resampler"]["output_dim"])
    assert rel_err(face, t["face_tokens"].reshape(1, -1, face.shape[-1])) <= 1e-5
    assert rel_err(null, t["null_face_tokens"].reshape(1, -1, null.shape[-1])) <= 1e-5
    assert null.abs().sum() > 0  # null face tokens are not zeros


def _guidance_batch(t):
    c = t["face_tokens"].shape[-1]
    face = t["face_tokens"].reshape(1, -1, c)
    null = t["null_face_tokens"].reshape(1, -1, c)
    return torch.cat([torch.cat([t["text_embeds"][:1], null], 1), torch.cat([t["text_embeds"][1:], face], 1)])


def test_unet_output_matches_reference_at_each_scale(case):
    spec, _, adapter, unet, t = case
    with torch.no_grad():
        base = unet(t["latents"], t["timestep"], encoder_hidden_states=t["text_embeds"]).sample
        assert rel_err(base, t["base_unet_out"]) <= 1e-5
        adapter.attach(unet)
        try:
            adapter.set_num_face_tokens(16 * spec["num_ims"])
            for scale in spec["scales"]:
                adapter.set_scale(scale)
                ours = unet(t["latents"], t["timestep"], encoder_hidden_states=_guidance_batch(t)).sample
                expected = t[f"unet_out_scale_{scale}"]
                assert rel_err(ours, expected) <= 1e-5, scale
                if scale == 0 and not spec["ln_in_checkpoint"]:
                    assert torch.equal(ours, base), "scale 0 must be the base UNet bit for bit"
                contribution = expected - t["base_unet_out"]
                if contribution.norm() > 0:
                    assert rel_err(ours - t["base_unet_out"], contribution) <= 5e-5, scale
        finally:
            adapter.detach()
