"""Loading ControlNets (`facefact.pipelines.loading.load_controlnet`, `load_fact_pipeline(controlnet=...)`):
what is wrong with a ControlNet file, folder or location, as facefact errors - without the network."""
from __future__ import annotations

import shutil

import pytest
import torch

from facefact.errors import ConfigError

# ---- load_controlnet: what is wrong with a ControlNet file or folder, as facefact errors ----------
@pytest.fixture
def network_attempts(monkeypatch):
    """Every attempt to reach a host (name lookup or connect) is refused and recorded - except the
    one-off lookup some huggingface_hub versions make for their user agent (`_detect_agent`, no
    retries, off only with HF_HUB_OFFLINE): no model file or config is asked for."""
    import socket
    import traceback

    attempts = []

    def refuse(*args, **kwargs):
        if not any("_detect_agent" in frame.filename for frame in traceback.extract_stack()):
            attempts.append(args[:1])
        raise OSError("network refused in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_controlnet_config_that_is_json_but_not_an_object(controlnet_folders, tmp_path):
    from facefact.errors import CheckpointError
    from facefact.pipelines.loading import load_controlnet

    folder = shutil.copytree(controlnet_folders["tiny"], tmp_path / "odd-canny")
    for text in ("[1, 2]", "not json {"):
        (folder / "config.json").write_text(text)
        with pytest.raises(CheckpointError, match="config.json") as caught:
            load_controlnet(folder, torch.float32)
        assert type(caught.value) is CheckpointError and "JSON object" in str(caught.value)


@pytest.mark.parametrize("content", [b"garbage", None], ids=["not safetensors", "safetensors of another model"])
def test_a_single_file_that_is_not_a_controlnet(tmp_path, content, network_attempts):
    from safetensors.torch import save_file

    from facefact.errors import CheckpointError
    from facefact.pipelines.loading import load_controlnet

    path = tmp_path / "canny.safetensors"
    if content is None:
        save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 8)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a ControlNet checkpoint") as caught:
        load_controlnet(path, torch.float32)
    assert type(caught.value) is CheckpointError  # not ModelNotFoundError, whose hint is about connections
    assert "canny.safetensors" in str(caught.value) and "connection" not in str(caught.value)
    assert network_attempts == []  # told apart from the file alone, before any config is fetched


def test_a_pth_file_that_is_not_a_controlnet(tmp_path, network_attempts):
    from facefact.errors import CheckpointError
    from facefact.pipelines.loading import load_controlnet

    path = tmp_path / "canny.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a ControlNet checkpoint") as caught:
        load_controlnet(path, torch.float32)
    assert type(caught.value) is CheckpointError and "canny.pth" in str(caught.value)


def test_offline_single_file_controlnet_fails_fast_without_the_network(tmp_path, monkeypatch, network_attempts):
    """A single-file ControlNet takes its config from the hub: offline, only the hub cache is asked."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    from facefact.errors import ModelNotFoundError
    from facefact.pipelines.loading import load_controlnet
    from facefact.pipelines.tiny import tiny_controlnet, tiny_sd_pipeline

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("FACEFACT_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    path = tmp_path / "canny.safetensors"
    save_file(tiny_controlnet(tiny_sd_pipeline(0).unet, 0).state_dict(), path)
    with pytest.raises(ModelNotFoundError, match="offline") as caught:
        load_controlnet(path, torch.float32)
    assert "canny.safetensors" in str(caught.value) and "config" in str(caught.value)
    assert network_attempts == []


def test_one_of_several_controlnets_that_does_not_fit_is_named(tiny_model_files, controlnet_folders):
    from facefact.errors import CheckpointError
    from facefact.pipelines.build import load_fact_pipeline

    base, adapter, encoder = tiny_model_files
    with pytest.raises(CheckpointError, match="ControlNet [^ ]*other-family does not fit this base model"):
        load_fact_pipeline(base, adapter, encoder, device="cpu", dtype=torch.float32,
                           controlnet=[controlnet_folders["tiny"], controlnet_folders["other"]])


def test_a_controlnet_that_is_no_location_is_named(tiny_model_files):
    from facefact.errors import ModelNotFoundError
    from facefact.pipelines.build import load_fact_pipeline

    base, adapter, encoder = tiny_model_files
    with pytest.raises(ModelNotFoundError, match="ControlNet not found: 3"):
        load_fact_pipeline(base, adapter, encoder, device="cpu", dtype=torch.float32, controlnet=3)
    with pytest.raises(ConfigError, match="tiny ControlNets"):
        load_fact_pipeline("tiny", "tiny", "tiny", controlnet=3)


def test_an_empty_list_of_controlnets_is_a_config_error():
    from facefact.pipelines.build import load_fact_pipeline

    with pytest.raises(ConfigError, match="ControlNet"):
        load_fact_pipeline("tiny", "tiny", "tiny", controlnet=[])


def test_a_folder_that_is_no_model_is_said_once_without_a_connection_hint(tiny_model_files, tmp_path):
    from facefact.errors import ModelNotFoundError
    from facefact.pipelines.loading import load_base_pipeline, load_controlnet

    base = tiny_model_files[0]
    (tmp_path / "unet").mkdir()
    for load, folder in ((load_controlnet, base), (load_base_pipeline, tmp_path)):
        with pytest.raises(ModelNotFoundError, match="is not a diffusers") as caught:
            load(folder, torch.float32)
        assert "could not load" not in str(caught.value) and "connection" not in str(caught.value)
