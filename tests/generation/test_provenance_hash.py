"""Which base model made an image: the sha256 of a single file, of a diffusers folder's UNet
weights, or the hub cache's commit for a hub id - looked up in the cache, never on the network."""
from __future__ import annotations

import hashlib
import shutil
import socket

import pytest

from facefact.pipelines.hashing import file_sha256
from facefact.pipelines.loading import describe_file, weight_files
from facefact.pipelines.metadata import a1111_parameters


def sha16(*chunks: bytes) -> str:
    return hashlib.sha256(b"".join(chunks)).hexdigest()[:16]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("provenance must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_diffusers_folder_gets_the_hash_of_its_unet_weights(tiny_model_files, tmp_path, no_network):
    base = shutil.copytree(tiny_model_files[0], tmp_path / "my-sd15")
    unet_file = base / "unet" / "diffusion_pytorch_model.safetensors"
    info = describe_file(base)
    assert info == {"id": "my-sd15", "unet_sha256": file_sha256(unet_file)[:16]}

    (base / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"a variant")  # not what is loaded
    vae = next((base / "vae").glob("*.safetensors"))
    vae.write_bytes(vae.read_bytes()[::-1])  # another component: not part of the UNet hash
    assert describe_file(base) == info

    unet_file.write_bytes(unet_file.read_bytes() + b"\0")  # other UNet weights, another hash
    assert describe_file(base)["unet_sha256"] != info["unet_sha256"]


def test_weight_files_shards_bin_and_variants(tmp_path):
    shards = tmp_path / "sharded"
    shards.mkdir()
    (shards / "diffusion_pytorch_model-00002-of-00002.safetensors").write_bytes(b"two")
    (shards / "diffusion_pytorch_model-00001-of-00002.safetensors").write_bytes(b"one")
    (shards / "diffusion_pytorch_model.safetensors.index.json").write_text("{}")
    (shards / "config.json").write_text("{}")
    assert [p.name for p in weight_files(shards)] == ["diffusion_pytorch_model-00001-of-00002.safetensors",
                                                       "diffusion_pytorch_model-00002-of-00002.safetensors"]
    base = tmp_path / "base"
    shutil.copytree(shards, base / "unet")
    assert describe_file(base)["unet_sha256"] == sha16(b"one", b"two")  # name order, bytes one after another

    old = tmp_path / "old" / "unet"
    old.mkdir(parents=True)
    (old / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    assert describe_file(old.parent)["unet_sha256"] == sha16(b"pickle")
    only_variant = tmp_path / "fp16" / "unet"
    only_variant.mkdir(parents=True)
    (only_variant / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"half")
    assert describe_file(only_variant.parent)["unet_sha256"] == sha16(b"half")
    empty = tmp_path / "empty" / "unet"
    empty.mkdir(parents=True)
    assert describe_file(empty.parent) == {"id": "empty"}


def test_model_folder_without_unet_hashes_its_own_weights(tmp_path):
    controlnet = tmp_path / "control_canny"
    controlnet.mkdir()
    (controlnet / "config.json").write_text("{}")
    (controlnet / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    assert describe_file(controlnet) == {"id": "control_canny", "weights_sha256": sha16(b"weights")}


def fake_hub_cache(root, repo_id: str, commit: str, filename: str = "model_index.json"):
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / filename).write_text("{}")


def test_hub_id_gets_the_cached_revision_without_network(tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # so that no local folder is named like the hub id
    commit = "1d0c4ebf6ff58a5caecab40fa1406526bca4b5b9"
    fake_hub_cache(tmp_path / "hub", "some-org/sd15-finetune", commit)
    fake_hub_cache(tmp_path / "hub", "some-org/control-canny", "a" * 40, filename="config.json")
    assert describe_file("some-org/sd15-finetune") == {"id": "some-org/sd15-finetune", "revision": commit}
    assert describe_file("some-org/control-canny")["revision"] == "a" * 40
    assert describe_file("some-org/not-downloaded") == {"id": "some-org/not-downloaded"}


@pytest.mark.parametrize("base, expected", [
    ({"id": "majic.safetensors", "sha256": "0123456789abcdef"}, "Model hash: 0123456789, Model: majic.safetensors"),
    # A1111's Model hash is the whole checkpoint file's (what Civitai and the like look up): a UNet-only
    # hash or a git revision would name no file there; they stay in the facefact JSON only.
    ({"id": "my-sd15", "unet_sha256": "fedcba9876543210"}, "Size: 64x64, Model: my-sd15"),
    ({"id": "org/sd15", "revision": "1d0c4ebf6ff58a5c"}, "Size: 64x64, Model: org/sd15"),
    ({"id": "org/sd15"}, "Size: 64x64, Model: org/sd15"),
])
def test_a1111_model_hash_is_the_single_files_hash_only(base, expected):
    meta = {"prompt": "p", "steps": 2, "width": 64, "height": 64, "models": {"base_model": base}}
    assert expected in a1111_parameters(meta)
    if "sha256" not in base:
        assert "Model hash" not in a1111_parameters(meta)
