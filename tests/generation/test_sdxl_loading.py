"""The one loader on SDXL bases: a diffusers SDXL folder (and "tiny-sdxl") picks the FACT SDXL classes,
loads an SDXL adapter file, and refuses an SD1.5 adapter by name; SD1.5 folders still pick SD1.5 classes."""
from __future__ import annotations

import pytest
import torch

from facefact.errors import CheckpointError
from facefact.pipelines import (FACTStableDiffusionInpaintPipeline, FACTStableDiffusionXLControlNetInpaintPipeline,
                                FACTStableDiffusionXLInpaintPipeline, FACTStableDiffusionXLPipeline)
from facefact.pipelines.build import load_fact_pipeline
from facefact.pipelines.loading import base_family


@pytest.fixture(scope="module")
def sdxl_files(tmp_path_factory):
    """(SDXL base folder, SDXL adapter .safetensors, SD1.5 adapter .safetensors, encoder .safetensors)."""
    from facefact.model.checkpoints import save_adapter, save_encoder
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.tiny import tiny_sd_pipeline
    from facefact.pipelines.tiny_xl import save_tiny_sdxl_pipeline, tiny_sdxl_pipeline

    root = tmp_path_factory.mktemp("sdxl")
    base = save_tiny_sdxl_pipeline(root / "base")
    xl_adapter = save_adapter(tiny_face_adapter(tiny_sdxl_pipeline().unet), root / "xl-adapter.safetensors")
    sd15_adapter = save_adapter(tiny_face_adapter(tiny_sd_pipeline().unet), root / "sd15-adapter.safetensors")
    encoder = save_encoder(tiny_encoder(), root / "encoder.safetensors")
    return base, xl_adapter, sd15_adapter, encoder


def test_an_sdxl_folder_picks_the_sdxl_classes_and_generates(sdxl_files, tiny_model_files, face_pixels):
    base, xl_adapter, _, encoder = sdxl_files
    assert base_family(base) == "sdxl" and base_family(tiny_model_files[0]) == "sd15"
    pipe = load_fact_pipeline(base, xl_adapter, encoder)
    assert type(pipe) is FACTStableDiffusionXLPipeline and pipe.fact_adapter.family == "sdxl"
    out = pipe("a portrait", face_tokens=pipe.encode_faces(face_pixels=face_pixels), num_inference_steps=2,
               height=64, width=64, generator=torch.Generator().manual_seed(1))
    assert out.metadata[0]["pipeline"] == "FACTStableDiffusionXLPipeline"
    assert out.metadata[0]["models"]["adapter"]["id"] == "xl-adapter.safetensors"
    inpaint = load_fact_pipeline(tiny_model_files[0], tiny_model_files[1], tiny_model_files[2], kind="inpaint")
    assert type(inpaint) is FACTStableDiffusionInpaintPipeline  # SD1.5 as before


def test_the_tiny_sdxl_base_by_name():
    assert type(load_fact_pipeline("tiny-sdxl", "tiny", "tiny", kind="inpaint")) is FACTStableDiffusionXLInpaintPipeline
    pipe = load_fact_pipeline("tiny-sdxl", "tiny", "tiny", kind="inpaint", controlnet="tiny")
    assert type(pipe) is FACTStableDiffusionXLControlNetInpaintPipeline


def test_an_sd15_adapter_on_an_sdxl_folder_is_refused_by_name(sdxl_files):
    base, _, sd15_adapter, encoder = sdxl_files
    with pytest.raises(CheckpointError, match="made for Stable Diffusion 1.5 base models, but the base model is SDXL"):
        load_fact_pipeline(base, sd15_adapter, encoder)


def test_generate_on_an_sdxl_folder(cli, sdxl_files, astronaut, tmp_path):
    """`facefact generate --base-model SDXL-FOLDER --adapter SDXL-ADAPTER`: the SDXL twin, provenance saved."""
    from facefact.pipelines.metadata import read_png_metadata

    base, xl_adapter, sd15_adapter, encoder = sdxl_files
    code, out, err = cli("generate", "--base-model", base, "--adapter", xl_adapter, "--encoder", encoder, "--face",
                         astronaut, "--prompt", "a portrait", "--steps", 1, "--size", 64, "--out", tmp_path / "out",
                         "--device", "cpu")
    assert code == 0, err
    (png,) = sorted((tmp_path / "out").glob("*.png"))
    meta = read_png_metadata(png)
    assert meta["pipeline"] == "FACTStableDiffusionXLPipeline" and meta["method"] == "FaceChain-FACT"
    code, out, err = cli("generate", "--base-model", base, "--adapter", sd15_adapter, "--encoder", encoder, "--face",
                         astronaut, "--prompt", "a portrait", "--steps", 1, "--size", 64, "--out", tmp_path / "no")
    assert code == 2 and "made for Stable Diffusion 1.5 base models, but the base model is SDXL" in err


UNET = "model.diffusion_model."


def _single_file(path, family: str, *, in_channels: int = 4, refiner: bool = False):
    """A tiny base model file in the original (A1111 / ComfyUI) key layout: the keys diffusers'
    detection reads (SDXL: the second text encoder, OpenCLIP bigG; the refiner: only that one, as
    embedder 0), the UNet's first convolution and a cross-attention at the family's width."""
    from safetensors.torch import save_file

    width = {"sd15": 768, "sdxl": 1280 if refiner else 2048}[family]
    state = {f"{UNET}input_blocks.0.0.weight": torch.zeros(8, in_channels, 3, 3),
             f"{UNET}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(8, width),
             f"{UNET}output_blocks.11.0.skip_connection.weight": torch.zeros(4, 8, 1, 1)}
    if family == "sdxl":
        state[f"conditioner.embedders.{0 if refiner else 1}.model.transformer.resblocks.9.mlp.c_proj.bias"] = \
            torch.zeros(4)
        state["conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"] = torch.zeros(4)
    else:
        state["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] = torch.zeros(4)
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:  # a Lightning-style .ckpt: the weights under "state_dict", beside plain training numbers
        torch.save({"state_dict": state, "global_step": 1000, "epoch": 3}, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_files_are_told_apart_by_diffusers_detection(tmp_path, suffix):
    assert base_family(_single_file(tmp_path / f"xl{suffix}", "sdxl")) == "sdxl"
    assert base_family(_single_file(tmp_path / f"xl-inpaint{suffix}", "sdxl", in_channels=9)) == "sdxl"
    assert base_family(_single_file(tmp_path / f"sd15{suffix}", "sd15")) == "sd15"
    assert base_family(_single_file(tmp_path / f"sd15-inpaint{suffix}", "sd15", in_channels=9)) == "sd15"
    with pytest.raises(CheckpointError, match="is an SDXL refiner, not a Stable Diffusion 1.5 or SDXL base"):
        base_family(_single_file(tmp_path / f"refiner{suffix}", "sdxl", refiner=True))


class Callback:
    """A Python object as training frameworks pickle beside the weights."""

    opened = False

    def __init__(self):
        self.monitor = "loss"

    def __setstate__(self, state):  # runs only if the object is really unpickled
        Callback.opened = True


def test_a_ckpt_is_read_weights_only(tmp_path):
    """A .ckpt holding more than tensors and plain values is refused, never unpickled."""
    path = tmp_path / "sneaky.ckpt"
    torch.save({"state_dict": {f"{UNET}x": torch.zeros(1)}, "callback": Callback()}, path)
    with pytest.raises(CheckpointError, match="refused to load .*sneaky.ckpt: it contains Python objects"):
        base_family(path)
    assert not Callback.opened


def test_the_loader_picks_the_class_from_a_single_files_keys(sdxl_files, tmp_path, monkeypatch):
    """load_fact_pipeline on a single file: the SDXL classes for an SDXL file, the SD1.5 ones for an
    SD1.5 file; an adapter file of the other family is refused naming both before the base loads."""
    from facefact.pipelines import FACTStableDiffusionControlNetInpaintPipeline, build

    _, xl_adapter, sd15_adapter, encoder = sdxl_files
    xl, sd15 = _single_file(tmp_path / "xl.safetensors", "sdxl"), _single_file(tmp_path / "sd15.ckpt", "sd15")
    asked = []

    def load_base(location, dtype, controlnet=None, cls=None):  # stands in for diffusers' from_single_file
        asked.append(cls)
        raise RuntimeError("stop after the class is chosen")

    monkeypatch.setattr(build, "load_base_pipeline", load_base)
    for base, adapter in ((xl, xl_adapter), (sd15, sd15_adapter)):
        with pytest.raises(RuntimeError, match="stop after"):
            load_fact_pipeline(base, adapter, encoder, kind="inpaint", device="cpu")
    assert asked == [FACTStableDiffusionXLInpaintPipeline, FACTStableDiffusionInpaintPipeline]
    with pytest.raises(CheckpointError, match="made for Stable Diffusion 1.5 base models, but the base model is SDXL"):
        load_fact_pipeline(xl, sd15_adapter, encoder, device="cpu")
    with pytest.raises(CheckpointError, match="made for SDXL base models, but the base model is Stable Diffusion 1.5"):
        load_fact_pipeline(sd15, xl_adapter, encoder, device="cpu")
    assert len(asked) == 2  # neither refusal reached the base model
    assert FACTStableDiffusionControlNetInpaintPipeline is build.pipeline_class("inpaint", True, "sd15")
