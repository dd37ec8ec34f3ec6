"""The template mode on SDXL bases (tiny random SDXL models): both passes on the SDXL inpaint /
ControlNet-inpaint twins, the exact paste-back, provenance naming what ran, the crop size of the
base family, and a ControlNet of the other family refused by name before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facefact.errors import CheckpointError, ConfigError
from facefact.template import backend
from facefact.template.portrait import TemplatePortrait
from template_checks import changed_pixels, reach


def test_both_passes_on_sdxl_and_only_the_face_changes(inpaint_pipes, fast_settings, analysis, astronaut,
                                                       grace_hopper, monkeypatch):
    pipe = inpaint_pipes("controlnet2", "sdxl")
    calls = []
    real = backend.run_inpaint

    def spy(pipe, info, request):
        calls.append((type(pipe).__name__, request.strength, request.image.shape, request.control_scales))
        return real(pipe, info, request)

    monkeypatch.setattr(backend, "run_inpaint", spy)
    out = TemplatePortrait(pipe, analysis=analysis, settings=fast_settings())(astronaut, grace_hopper, seed=3)
    name = "FACTStableDiffusionXLControlNetInpaintPipeline"
    assert calls == [(name, 0.6, (64, 64, 3), [1.0, 0.2]), (name, 0.1, (64, 64, 3), [0.8, 0.8])]  # main, refine
    result = np.asarray(out.images[0])
    changed = changed_pixels(result, astronaut)
    plan = out.plans[0]
    assert result.shape == astronaut.shape and not changed[~reach(plan, astronaut.shape, 6)].any()
    x1, y1, x2, y2 = (int(v) for v in plan.target.bbox)
    assert changed[y1:y2, x1:x2].mean() > 0.5
    meta = out.metadata[0]
    assert meta["pipeline"] == {"class": name, "base_family": "sdxl", "unet_in_channels": 4, "controlnets": 2}
    models = meta["models"]
    assert models["base_model"] == {"id": "facefact-tiny/base_model", "seed": 0}
    assert [c["id"] for c in models["controlnet"]] == ["facefact-tiny/controlnet"] * 2
    assert models["adapter"]["id"] == "facefact-tiny/adapter" and models["encoder"]["id"] == "facefact-tiny/encoder"
    assert meta["template_settings"]["crop_size"] == 64 and meta["redrawn_faces"][0]["crop"]["size"] == 64


def test_the_crop_size_follows_the_base_family_unless_set(inpaint_pipes, fast_settings, analysis, astronaut,
                                                          grace_hopper):
    settings = fast_settings(crop_size=None, refine=False)
    xl = TemplatePortrait(inpaint_pipes("plain", "sdxl"), analysis=analysis, settings=settings)
    sd15 = TemplatePortrait(inpaint_pipes("plain"), analysis=analysis, settings=settings)
    prepared = xl.prepare(astronaut, grace_hopper)
    assert prepared.plans[0].crop.size == 1024 and prepared.plans[0].image.shape == (1024, 1024, 3)
    assert prepared.settings.crop_size == 1024 and prepared.family == "sdxl"
    assert sd15.prepare(astronaut, grace_hopper).plans[0].crop.size == 512
    assert xl.prepare(astronaut, grace_hopper, settings=fast_settings()).plans[0].crop.size == 64  # set: kept
    # before a pipeline is given (the CLI checks every input before loading weights): the family is named
    unloaded = TemplatePortrait(None, analysis=analysis, settings=settings)
    assert unloaded.prepare(astronaut, grace_hopper, family="sdxl").plans[0].crop.size == 1024
    with pytest.raises(ConfigError, match="the crop size follows the base model's family"):
        unloaded.prepare(astronaut, grace_hopper)
    with pytest.raises(ConfigError, match="family 'sd15' given, but the pipeline's base model is SDXL"):
        xl.prepare(astronaut, grace_hopper, family="sd15")
    for_sd15 = unloaded.prepare(astronaut, grace_hopper, family="sd15")
    with pytest.raises(ConfigError, match=r"prepared for a Stable Diffusion 1.5 base \(512 px crops\), but the "
                                          r"pipeline's base model is SDXL"):
        xl.generate(for_sd15, seed=0)


def test_an_sd15_controlnet_on_an_sdxl_pipeline_is_refused_naming_both(inpaint_pipes, analysis):
    from facefact.pipelines import FACTStableDiffusionXLControlNetInpaintPipeline
    from facefact.pipelines.tiny import tiny_controlnet, tiny_sd_pipeline

    mixed = FACTStableDiffusionXLControlNetInpaintPipeline.from_pipe(
        inpaint_pipes("plain", "sdxl"), controlnet=tiny_controlnet(tiny_sd_pipeline().unet))
    with pytest.raises(CheckpointError, match="ControlNet was made for Stable Diffusion 1.5 base models, but the "
                                              "base model is SDXL"):
        TemplatePortrait(mixed, analysis=analysis)


@pytest.fixture(scope="module")
def sdxl_model_files(tmp_path_factory):
    """An SDXL base folder, SDXL adapter, encoder, and an SD1.5 and an SDXL ControlNet folder."""
    from facefact.model.checkpoints import save_adapter, save_encoder
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.tiny import tiny_controlnet, tiny_sd_pipeline
    from facefact.pipelines.tiny_xl import save_tiny_sdxl_pipeline, tiny_sdxl_pipeline

    root = tmp_path_factory.mktemp("sdxl-template")
    unet = tiny_sdxl_pipeline().unet
    tiny_controlnet(tiny_sd_pipeline().unet, 1).save_pretrained(root / "sd15-openpose")
    tiny_controlnet(unet, 1).save_pretrained(root / "xl-openpose")
    tiny_controlnet(unet, 2).save_pretrained(root / "xl-canny")
    return {"base": save_tiny_sdxl_pipeline(root / "base"),
            "adapter": save_adapter(tiny_face_adapter(unet, seed=1), root / "adapter.safetensors"),
            "encoder": save_encoder(tiny_encoder(), root / "encoder.safetensors"),
            "sd15-openpose": root / "sd15-openpose", "xl-openpose": root / "xl-openpose", "xl-canny": root / "xl-canny"}


def test_the_loader_refuses_an_sd15_controlnet_before_the_sdxl_base_loads(sdxl_model_files, monkeypatch):
    from facefact.pipelines import build

    def load_base(*args, **kwargs):
        raise AssertionError("the base model was loaded before the ControlNet was checked")

    monkeypatch.setattr(build, "load_base_pipeline", load_base)
    files = sdxl_model_files
    with pytest.raises(CheckpointError, match="ControlNet .*sd15-openpose was made for Stable Diffusion 1.5 base "
                                              "models, but the base model is SDXL") as caught:
        build.load_fact_pipeline(files["base"], files["adapter"], files["encoder"], kind="inpaint",
                                 controlnet=[files["xl-canny"], files["sd15-openpose"]], device="cpu",
                                 dtype=torch.float32)
    assert "controlnet-canny-sdxl-1.0" in caught.value.hint  # an SDXL one to use instead


TINY = ["--crop-size", "64", "--steps", "10", "--prompt", "a portrait", "--negative-prompt", "blurry", "--quiet"]


def test_template_cli_on_tiny_sdxl(cli, photo_files, tmp_path):
    from facefact.faces import load_image
    from facefact.pipelines.metadata import read_png_metadata

    code, out, err = cli("template", "--template", photo_files["astronaut"], "--face", photo_files["grace"],
                         "--model", "tiny-sdxl", *TINY, "--seed", "4", "--out", tmp_path / "out", "--json")
    assert code == 0, err
    (image,) = json.loads(out)["images"]
    meta = read_png_metadata(image)
    assert meta["pipeline"]["class"] == "FACTStableDiffusionXLControlNetInpaintPipeline"
    assert meta["pipeline"]["base_family"] == "sdxl" and meta["seed"] == 4
    template = load_image(photo_files["astronaut"])
    result = np.asarray(load_image(image))
    crop = meta["redrawn_faces"][0]["crop"]
    inside = np.zeros(template.shape[:2], bool)
    inside[max(0, crop["y0"]):crop["y0"] + crop["side"], max(0, crop["x0"]):crop["x0"] + crop["side"]] = True
    changed = np.any(result != template, axis=2)
    assert changed.any() and not changed[~inside].any()


def test_template_cli_on_sdxl_files_with_controlnets(cli, photo_files, sdxl_model_files, tmp_path):
    """An SDXL base folder with two SDXL ControlNets runs, naming the files; an SD1.5 ControlNet on it
    is refused naming both families (exit 2)."""
    from facefact.pipelines.metadata import read_png_metadata

    files = sdxl_model_files
    models = ["--base-model", files["base"], "--adapter", files["adapter"], "--encoder", files["encoder"],
              "--device", "cpu"]
    code, out, err = cli("template", "--template", photo_files["astronaut"], "--face", photo_files["grace"],
                         *models, *TINY, "--controlnet", files["xl-openpose"], "--controlnet", files["xl-canny"],
                         "--seed", "1", "--no-refine", "--out", tmp_path / "out")
    assert code == 0, err
    meta = read_png_metadata(out.strip().splitlines()[-1])
    assert meta["pipeline"]["class"] == "FACTStableDiffusionXLControlNetInpaintPipeline"
    assert [c["id"] for c in meta["models"]["controlnet"]] == ["xl-openpose", "xl-canny"]
    assert meta["models"]["base_model"]["id"] == "base" and meta["models"]["adapter"]["id"] == "adapter.safetensors"
    code, out, err = cli("template", "--template", photo_files["astronaut"], "--face", photo_files["grace"],
                         *models, *TINY, "--controlnet", files["sd15-openpose"], "--controls", "face_pose",
                         "--out", tmp_path / "no")
    assert code == 2 and "sd15-openpose was made for Stable Diffusion 1.5 base models, but the base model is " \
                         "SDXL" in err
    assert not list((tmp_path / "no").glob("*.png"))
