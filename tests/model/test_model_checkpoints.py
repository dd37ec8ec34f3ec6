"""Adapter / encoder checkpoints: round trips, metadata, and a clear CheckpointError for every bad file."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from facefact.errors import CheckpointError, ModelNotFoundError
from facefact.model import FaceAdapter, TransFaceEncoder
from facefact.model.checkpoints import FORMAT_VERSION, read_safetensors, save_adapter, save_encoder
from facefact.model.tiny import tiny_face_adapter

from .conftest import encoder_tokens, make_unet

PARITY = sorted((Path(__file__).parents[1] / "data" / "parity").glob("*/adapter.ckpt"))[0]


class NotATensor:
    """A Python object inside a pickle: weights_only loading must refuse it."""

    def __init__(self):
        self.payload = "x"


def test_adapter_safetensors_round_trip(tmp_path, adapter):
    path = save_adapter(adapter, tmp_path / "adapter.safetensors", extra_metadata={"note": "test"})
    assert path.exists() and not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind
    loaded = FaceAdapter.from_checkpoint(path)
    original = adapter.released_state_dict()
    again = loaded.released_state_dict()
    assert sorted(again) == sorted(original)  # safetensors stores keys sorted; the order carries no meaning
    assert all(torch.equal(again[k], original[k]) and again[k].dtype == original[k].dtype for k in original)
    assert sorted(loaded.block_paths) == sorted(adapter.block_paths)
    assert loaded.resampler.config == adapter.resampler.config  # sizes come from the metadata

    _, meta = read_safetensors(path)
    assert meta["format"] == "facefact.fact-adapter" and meta["format_version"] == FORMAT_VERSION
    assert json.loads(meta["resampler"]) == adapter.resampler.config.to_dict()
    assert meta["tokens_per_photo"] == "16" and meta["num_blocks"] == "16" and meta["base_family"] == "sd15"
    assert meta["note"] == "test"
    tokens = encoder_tokens(1)
    with torch.no_grad():
        assert torch.equal(loaded.face_tokens(tokens), adapter.face_tokens(tokens))


def test_adapter_released_ckpt_layout_round_trip(tmp_path, adapter):
    path = tmp_path / "adapter.ckpt"
    torch.save(adapter.released_state_dict(), path)
    loaded = FaceAdapter.from_checkpoint(path, adapter.resampler.config)
    assert all(torch.equal(v, adapter.released_state_dict()[k]) for k, v in loaded.released_state_dict().items())
    assert all(k.startswith("local_fac_prj.") or ".attn2.processor." in k for k in loaded.released_state_dict())


def test_encoder_safetensors_round_trip(tmp_path, encoder):
    path = save_encoder(encoder, tmp_path / "transface.safetensors")
    loaded = TransFaceEncoder.from_checkpoint(path)
    assert loaded.config == encoder.config
    state = encoder.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    _, meta = read_safetensors(path)
    assert meta["format"] == "facefact.transface-encoder" and meta["format_version"] == FORMAT_VERSION
    pixels = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(pixels), encoder(pixels))


# ---- bad files ----------------------------------------------------------------------------------
def load_error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        FaceAdapter.from_checkpoint(path, **kwargs)
    text = str(info.value)
    assert "Traceback" not in text and str(path) in text  # names the file, no internals
    return text


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        FaceAdapter.from_checkpoint(tmp_path / "nope.ckpt")


def test_empty_file(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert "empty (0 bytes)" in load_error(tmp_path / "empty.ckpt")


def test_truncated_ckpt(tmp_path):
    data = PARITY.read_bytes()
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    assert "truncated or not a PyTorch weights file" in load_error(tmp_path / "half.ckpt")


def test_truncated_safetensors(tmp_path, adapter):
    path = save_adapter(adapter, tmp_path / "a.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not a valid safetensors file" in load_error(path)


@pytest.mark.parametrize("content", [b"this is not a checkpoint\nhello\n", b"<html><body>404</body></html>",
                                     b"\x80\x02garbage pickle"])
def test_not_a_weights_file(tmp_path, content):
    (tmp_path / "text.ckpt").write_bytes(content)
    assert "truncated or not a PyTorch weights file" in load_error(tmp_path / "text.ckpt")


def test_pickle_with_a_python_object_is_refused(tmp_path, adapter):
    state = dict(adapter.released_state_dict())
    state["local_fac_prj.extra"] = NotATensor()
    torch.save(state, tmp_path / "evil.ckpt")
    message = load_error(tmp_path / "evil.ckpt")
    assert "contains Python objects" in message and "NotATensor" in message


def test_pickle_the_weights_only_loader_cannot_read_is_refused(tmp_path, adapter):
    state = {"local_fac_prj.extra": NotATensor()}
    torch.save(state, tmp_path / "proto5.ckpt", pickle_protocol=5)  # opcodes weights-only loading refuses
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's protocol warning must not leak past our message
        assert "refused to load" in load_error(tmp_path / "proto5.ckpt")


def test_wrong_tensor_shape(tmp_path, adapter):
    state = dict(adapter.released_state_dict())
    key = next(k for k in state if k.endswith("attn2.processor.attn.to_q.weight"))
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    torch.save(state, tmp_path / "shape.ckpt")
    message = load_error(tmp_path / "shape.ckpt", resampler_config=adapter.resampler.config)
    assert "attn.to_q.weight" in message and "shape" in message


def test_missing_tensor(tmp_path, adapter):
    state = dict(adapter.released_state_dict())
    del state[next(k for k in state if k.endswith("ff.net.2.bias"))]
    torch.save(state, tmp_path / "missing.ckpt")
    assert "missing ['ff.net.2.bias']" in load_error(tmp_path / "missing.ckpt",
                                                     resampler_config=adapter.resampler.config)


def test_encoder_passed_as_adapter(tmp_path, encoder):
    torch.save(encoder.state_dict(), tmp_path / "transface.pt")
    message = load_error(tmp_path / "transface.pt")
    assert "not a FACT adapter" in message and "encoder" in message
    # and the other way round
    adapter = tiny_face_adapter(make_unet())
    torch.save(adapter.released_state_dict(), tmp_path / "adapter.ckpt")
    with pytest.raises(CheckpointError, match="not a TransFace encoder"):
        TransFaceEncoder.from_checkpoint(tmp_path / "adapter.ckpt")


@pytest.mark.parametrize("overrides,expected", [
    ({"layers_per_block": 1}, "cross-attention blocks"),
    ({"cross_attention_dim": 64}, "cross-attention is 64 wide"),
    ({"block_out_channels": (32, 64, 64, 64)}, "wide, its adapter"),
])
def test_attach_to_a_different_layout(adapter, overrides, expected):
    other = make_unet(**overrides)
    state = {k: v.clone() for k, v in other.state_dict().items()}
    processors = {k: type(v) for k, v in other.attn_processors.items()}
    with pytest.raises(CheckpointError, match=expected):
        adapter.attach(other)
    assert not adapter.is_attached
    # nothing was changed on the refused UNet
    assert {k: type(v) for k, v in other.attn_processors.items()} == processors
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())
