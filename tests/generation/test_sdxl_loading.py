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
