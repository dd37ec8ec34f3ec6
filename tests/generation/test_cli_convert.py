"""`facefact convert`: released layout -> safetensors, read back bit for bit; clear refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facefact.model import EncoderConfig, FaceAdapter, ResamplerConfig, TransFaceEncoder
from facefact.model.checkpoints import read_safetensors

# Defined here, not imported from conftest, so the tests work under any pytest import mode.
PARITY = Path(__file__).resolve().parents[1] / "data" / "parity" / "fact_tiny_a"
PARITY_RESAMPLER = ResamplerConfig(dim=64, depth=2, dim_head=16, heads=4, num_queries=16, embedding_dim=32,
                                   output_dim=48, ff_mult=4)


def test_adapter_round_trip_is_identical(cli, tmp_path):
    out = tmp_path / "adapter.safetensors"
    code, stdout, err = cli("convert", "--adapter", PARITY / "adapter.ckpt", "--out", out, "--heads", 4,
                            "--dim-head", 16, "--check-base", PARITY / "unet", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["resampler"] == PARITY_RESAMPLER.to_dict() and summary["blocks"] == 16
    assert "fits" in summary["base"]
    original = FaceAdapter.from_checkpoint(PARITY / "adapter.ckpt", PARITY_RESAMPLER)
    converted = FaceAdapter.from_checkpoint(out)  # sizes come from the file's metadata
    assert converted.resampler.config == PARITY_RESAMPLER
    a, b = original.released_state_dict(), converted.released_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    raw = torch.load(PARITY / "adapter.ckpt", weights_only=True)
    assert set(raw) == set(b)  # nothing dropped, nothing added
    _, metadata = read_safetensors(out)
    assert metadata["format"] == "facefact.fact-adapter" and metadata["source_file"] == "adapter.ckpt"


def test_encoder_round_trip_is_identical(cli, tmp_path):
    out = tmp_path / "encoder.safetensors"
    code, stdout, err = cli("convert", "--encoder", PARITY / "transface.pt", "--out", out, "--heads", 4)
    assert code == 0, err
    assert "read back identical" in stdout
    original = TransFaceEncoder.from_checkpoint(PARITY / "transface.pt", EncoderConfig(num_heads=4))
    converted = TransFaceEncoder.from_checkpoint(out)
    assert converted.config.num_heads == 4
    a, b = original.state_dict(), converted.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pixels = torch.rand(1, 3, 112, 112) * 2 - 1
    assert torch.equal(original(pixels), converted(pixels))


def test_convert_says_when_it_guessed_the_head_split(cli, tmp_path):
    """The tensors fix the attention width, not its split into heads: without --heads (and with no
    record in the file) the official split is assumed, and the user is told how to choose."""
    code, _, err = cli("convert", "--encoder", PARITY / "transface.pt", "--out", tmp_path / "e.safetensors")
    assert code == 0 and "assumed the official 8" in err and "--heads" in err
    code, _, err = cli("convert", "--encoder", tmp_path / "e.safetensors", "--out", tmp_path / "again.safetensors")
    assert code == 0 and "assumed" not in err  # a converted file records its sizes
    code, _, err = cli("convert", "--encoder", PARITY / "transface.pt", "--out", tmp_path / "4.safetensors",
                       "--heads", 4)
    assert code == 0 and "assumed" not in err
    code, _, err = cli("convert", "--adapter", PARITY / "adapter.ckpt", "--out", tmp_path / "a.safetensors")
    assert code == 0 and "attention width 64 splits into heads; assumed 1 head of the official width 64" in err
    assert "--heads/--dim-head" in err
    code, _, err = cli("convert", "--adapter", PARITY / "adapter.ckpt", "--out", tmp_path / "b.safetensors",
                       "--heads", 4, "--dim-head", 16)
    assert code == 0 and "assumed" not in err
    assert FaceAdapter.from_checkpoint(tmp_path / "b.safetensors").resampler.config == PARITY_RESAMPLER


def refused(result, *phrases):
    code, out, err = result
    assert code == 2 and "Traceback" not in err, (out, err)
    for phrase in phrases:
        assert phrase in err, err


@pytest.fixture
def sdxl_base(tmp_path):
    folder = tmp_path / "sdxl" / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                    "addition_embed_type": "text_time",
                                                    "cross_attention_dim": 2048}))
    return folder.parent


def test_refusals(cli, tmp_path, sdxl_base, tiny_model_files):
    ckpt, pt = PARITY / "adapter.ckpt", PARITY / "transface.pt"
    out = tmp_path / "x.safetensors"
    refused(cli("convert", "--adapter", pt, "--out", out), "not a FACT adapter", "--encoder")
    refused(cli("convert", "--encoder", ckpt, "--out", out), "not a TransFace encoder", "--adapter")
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:100_000])
    refused(cli("convert", "--adapter", truncated, "--out", out), "truncated")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    refused(cli("convert", "--encoder", empty, "--out", out), "empty (0 bytes)")
    refused(cli("convert", "--adapter", tmp_path / "missing.ckpt", "--out", out), "not found")
    refused(cli("convert", "--adapter", ckpt, "--out", out, "--heads", 3), "attention width 64")
    refused(cli("convert", "--adapter", ckpt, "--out", out, "--heads", 4, "--check-base", sdxl_base), "SDXL")
    base, _, _ = tiny_model_files  # tiny SD1.5 layout but 32-wide cross-attention: the parity adapter makes 48
    refused(cli("convert", "--adapter", ckpt, "--out", out, "--heads", 4, "--check-base", base), "32 wide")
    refused(cli("convert", "--adapter", ckpt, "--out", tmp_path / "x.pt"), "must end in .safetensors")
    assert not out.exists()
    out.write_bytes(b"keep me")
    refused(cli("convert", "--adapter", ckpt, "--out", out), "exists; not replacing")
    assert out.read_bytes() == b"keep me"


def test_check_base_reads_single_files_by_their_keys(cli, tmp_path):
    from safetensors.torch import save_file

    sd1 = tmp_path / "sd1.safetensors"
    save_file({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 48)},
              sd1)
    code, out, err = cli("convert", "--adapter", PARITY / "adapter.ckpt", "--heads", 4, "--out",
                         tmp_path / "a.safetensors", "--check-base", sd1)
    assert code == 0 and "cross-attention 48" in out, err
    sdxl = tmp_path / "sdxl.safetensors"  # SDXL's keys: its second text encoder, 2048-wide cross-attention
    save_file({"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": torch.zeros(4),
               "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, 2048)},
              sdxl)
    refused(cli("convert", "--adapter", PARITY / "adapter.ckpt", "--heads", 4, "--out", tmp_path / "b.safetensors",
                "--check-base", sdxl), "SDXL")
