"""Golden cases from the reference FACT implementation (tests/data/parity/*/).

Each case is loaded through the public loaders only - the diffusers UNet folder, the adapter in
the released `.ckpt` layout and the TransFace `.pt` - and must reproduce the reference tensors,
with the face tokens handed to the UNet the diffusers way (`cross_attention_kwargs["gligen"]`).
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


def _guidance_faces(t):
    """FACT's face tokens for the guidance batch: null face tokens on the unconditional row."""
    c = t["face_tokens"].shape[-1]
    return torch.cat([t["null_face_tokens"].reshape(1, -1, c), t["face_tokens"].reshape(1, -1, c)])


def float_noise(tensor: torch.Tensor) -> float:
    """The rounding noise of a float32 computation of this size: what two correct implementations
    that sum in another order may differ by."""
    return 1e-5 * tensor.double().norm().item()


def test_unet_output_matches_reference_at_each_scale(case):
    spec, _, adapter, unet, t = case
    faces = {"gligen": {"objs": _guidance_faces(t)}}
    with torch.no_grad():
        base = unet(t["latents"], t["timestep"], encoder_hidden_states=t["text_embeds"]).sample
        assert rel_err(base, t["base_unet_out"]) <= 1e-5
        adapter.attach(unet)
        try:
            for scale in spec["scales"]:
                adapter.set_scale(scale)
                ours = unet(t["latents"], t["timestep"], encoder_hidden_states=t["text_embeds"],
                            cross_attention_kwargs=faces).sample
                expected = t[f"unet_out_scale_{scale}"]
                assert rel_err(ours, expected) <= 1e-5, scale
                if scale == 0 and not spec["ln_in_checkpoint"]:
                    assert torch.equal(ours, base), "scale 0 must be the base UNet bit for bit"
                # The adapter's own contribution, to 5e-5 of itself - or, when it is so small that
                # output - base is rounding-sized (scale 0 with `ln.*` in the checkpoint), to the
                # float noise of the output itself.
                contribution = expected - t["base_unet_out"]
                if contribution.norm() > 0:
                    error = ((ours - base).double() - contribution.double()).norm().item()
                    assert error <= max(5e-5 * contribution.double().norm().item(), float_noise(expected)), scale
        finally:
            adapter.detach()


def test_the_pipeline_loader_reads_the_released_files(case, tmp_path):
    """The parity case's files through `load_fact_adapter` (released .ckpt + TransFace .pt, a folder
    + weight_name too) give the same face tokens as the reference."""
    from facefact.model import EncoderConfig, ResamplerConfig
    from facefact.pipelines import FACTStableDiffusionPipeline

    spec, _, _, _, t = case
    folder = next(c for c in CASES if json.loads((c / "case.json").read_text()) == spec)
    pipe = FACTStableDiffusionPipeline.tiny()
    pipe.unload_fact_adapter()
    from diffusers import UNet2DConditionModel

    pipe.unet = UNet2DConditionModel.from_pretrained(folder / spec["unet_dir"]).eval()  # the case's own UNet
    r, e = spec["resampler"], spec["encoder"]
    pipe.load_fact_adapter(
        folder, encoder=folder, weight_name=spec["adapter_checkpoint"], encoder_weight_name=spec["encoder_checkpoint"],
        resampler_config=ResamplerConfig(**{k: r[k] for k in ("dim", "depth", "dim_head", "heads", "num_queries",
                                                               "embedding_dim", "output_dim", "ff_mult")}),
        encoder_config=EncoderConfig(img_size=e["img_size"], patch_size=e["patch_size"], embed_dim=e["embed_dim"],
                                     depth=e["depth"], num_heads=e["num_heads"]))
    faces = pipe.encode_faces(face_pixels=t["face_pixels"])
    assert rel_err(faces.tokens, t["face_tokens"].reshape(1, -1, faces.tokens.shape[-1])) <= 1e-5
    assert pipe.fact_adapter.is_attached_to(pipe.unet)
