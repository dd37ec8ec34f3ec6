"""ControlNet beside the face adapter: `facefact generate --controlnet X --control-image IMG
[--control-scale S]` on the tiny models (`--controlnet tiny`) and on model folders, its provenance
and its errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen_cli_checks import fails

PROMPT = "a portrait in a garden"


def text_embeddings(sd, prompt: str = PROMPT):
    """What a ControlNet must get under classifier-free guidance: the negative and the prompt's text
    embeddings, exactly - none of the face tokens, and every text token (not merely 77 tokens)."""
    text, negative = sd.encode_prompt(prompt, sd._execution_device, 1, True, None)
    return torch.cat([negative, text])


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def control_images(tmp_path_factory):
    """Two different control maps (random edges, a white square on black) and a non-square one."""
    root = tmp_path_factory.mktemp("control")
    rng = np.random.default_rng(0)
    edges = (rng.random((64, 64)) > 0.8).astype(np.uint8) * 255
    Image.fromarray(edges).convert("RGB").save(root / "edges.png")
    square = np.zeros((128, 128, 3), np.uint8)
    square[32:96, 32:96] = 255
    Image.fromarray(square).save(root / "square.png")
    Image.fromarray(np.repeat(edges, 2, axis=0)).convert("RGB").save(root / "tall.png")  # 64x128
    return {name: root / f"{name}.png" for name in ("edges", "square", "tall")}


def tiny(cli, face, out, *extra, n=1):
    code, stdout, err = cli("generate", "--model", "tiny", "--face", face, "--prompt", PROMPT, "-n", n,
                            "--seed", 7, "--steps", 2, "--size", 64, "--out", out, "--json", *extra)
    assert code == 0, err
    return json.loads(stdout)


def test_tiny_controlnet_writes_images_with_provenance(cli, astronaut, control_images, tmp_path):
    summary = tiny(cli, astronaut, tmp_path, "--controlnet", "tiny", "--control-image", control_images["edges"],
                   "--control-scale", 0.8, n=2)
    assert len(summary["images"]) == 2 and summary["contact_sheet"]
    assert all(Path(p).is_file() for p in summary["images"] + [summary["contact_sheet"]])
    meta = summary["metadata"][0]
    assert meta["models"]["controlnet"] == [{"id": "facefact-tiny/controlnet", "seed": 0}]  # one entry per ControlNet
    assert meta["controlnet_conditioning_scale"] == 0.8 and meta["width"] == 64
    assert "edges.png" not in json.dumps(summary["metadata"])  # the control image's name is not recorded


def test_the_control_image_steers_the_output(cli, astronaut, control_images, tmp_path):
    edges = tiny(cli, astronaut, tmp_path / "a", "--controlnet", "tiny", "--control-image", control_images["edges"])
    square = tiny(cli, astronaut, tmp_path / "b", "--controlnet", "tiny", "--control-image", control_images["square"])
    plain = tiny(cli, astronaut, tmp_path / "c")
    off = tiny(cli, astronaut, tmp_path / "d", "--controlnet", "tiny", "--control-image", control_images["edges"],
               "--control-scale", 0)
    a, b = pixels(edges["images"][0]), pixels(square["images"][0])
    assert np.abs(a - b).max() > 10
    assert np.abs(a - pixels(plain["images"][0])).max() > 10
    # scale 0 adds zero residuals to the UNet: exactly the pixels without a ControlNet
    np.testing.assert_array_equal(pixels(off["images"][0]), pixels(plain["images"][0]))
    assert "loras" not in plain["metadata"][0]["models"] and "controlnet_conditioning_scale" not in plain["metadata"][0]


def test_a_transparent_control_map_is_read_on_black(cli, astronaut, control_images, tmp_path):
    """Control maps (pose, edges) are drawn on black: a PNG with a transparent background must stay
    white lines on black, not turn into black lines on white as a photo's alpha would."""
    from facefact.cli.extras import check_settings, load_control_image

    with Image.open(control_images["edges"]) as image:
        lines = np.asarray(image.convert("L"))
    rgba = np.zeros((*lines.shape, 4), np.uint8)
    rgba[..., :3] = 255  # white lines; where alpha is 0 the colour is white too, as many editors save it
    rgba[..., 3] = lines
    Image.fromarray(rgba, "RGBA").save(tmp_path / "pose.png")
    extras = check_settings(controlnet="tiny", control_image=str(tmp_path / "pose.png"), tiny=True)
    load_control_image(extras)
    np.testing.assert_array_equal(np.asarray(extras.control_image), np.asarray(Image.open(control_images["edges"])))
    transparent = tiny(cli, astronaut, tmp_path / "a", "--controlnet", "tiny", "--control-image", tmp_path / "pose.png")
    opaque = tiny(cli, astronaut, tmp_path / "b", "--controlnet", "tiny", "--control-image", control_images["edges"])
    np.testing.assert_array_equal(pixels(transparent["images"][0]), pixels(opaque["images"][0]))


def test_a_control_image_of_another_shape_is_stretched_and_noted(cli, astronaut, control_images, tmp_path):
    summary = tiny(cli, astronaut, tmp_path, "--controlnet", "tiny", "--control-image", control_images["tall"])
    assert any("control image (64x128) was stretched to the output size 64x64" in n for n in summary["notes"])
    assert summary["metadata"][0]["notes"] == summary["notes"]


def test_controlnet_folder_with_real_model_files(cli, astronaut, tiny_model_files, controlnet_folders,
                                                 control_images, tmp_path):
    base, adapter, encoder = tiny_model_files
    code, out, err = cli("generate", "--base-model", base, "--adapter", adapter, "--encoder", encoder,
                         "--controlnet", controlnet_folders["tiny"], "--control-image", control_images["edges"],
                         "--face", astronaut, "--prompt", PROMPT, "--size", 64, "--steps", 2, "--seed", 7,
                         "--out", tmp_path / "files", "--json", "--device", "cpu")
    assert code == 0, err
    summary = json.loads(out)
    meta = summary["metadata"][0]
    assert [entry["id"] for entry in meta["models"]["controlnet"]] == ["tiny-canny"]
    assert meta["controlnet_conditioning_scale"] == 1.0
    assert str(controlnet_folders["tiny"].parent) not in json.dumps(meta)
    # the same weights as --model tiny --controlnet tiny: the same pixels
    same = tiny(cli, astronaut, tmp_path / "tiny", "--controlnet", "tiny", "--control-image", control_images["edges"])
    np.testing.assert_array_equal(pixels(summary["images"][0]), pixels(same["images"][0]))


def test_pipeline_tiny_controlnet_sees_only_text_tokens(face, control_images):
    from facefact.pipelines import FACTStableDiffusionControlNetPipeline

    pipe = FACTStableDiffusionControlNetPipeline.tiny()
    seen = []
    pipe.controlnet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True)
    out = pipe(PROMPT, face_tokens=face, image=Image.open(control_images["edges"]), num_inference_steps=1,
               height=64, width=64, generator=torch.Generator().manual_seed(1), controlnet_conditioning_scale=0.5)
    assert seen and all(torch.equal(states, text_embeddings(pipe)) for states in seen)
    assert out.metadata[0]["controlnet_conditioning_scale"] == 0.5


def controlnet_folder_output(tiny_model_files, controlnet_folder, face):
    from facefact.pipelines.build import load_fact_pipeline

    base, adapter, encoder = tiny_model_files
    pipe = load_fact_pipeline(base, adapter, encoder, controlnet=controlnet_folder, device="cpu", dtype=torch.float32)
    return pipe(PROMPT, face_tokens=face, image=Image.new("RGB", (64, 64)), num_inference_steps=1, height=64,
                width=64, generator=torch.Generator().manual_seed(1))


def test_controlnet_folder_is_named_and_the_adapter_hashed_where_images_are_written(
        tiny_model_files, controlnet_folders, face, tmp_path):
    from facefact.pipelines.hashing import file_sha256
    from facefact.pipelines.metadata import read_png_metadata

    out = controlnet_folder_output(tiny_model_files, controlnet_folders["tiny"], face)
    assert out.metadata[0]["models"]["controlnet"] == [{"id": "tiny-canny"}]  # loading hashes nothing
    assert "sha256" not in out.metadata[0]["models"]["adapter"]
    [png] = out.save(tmp_path)
    saved = read_png_metadata(png)
    assert saved["models"]["adapter"]["sha256"] == file_sha256(tiny_model_files[1])[:16]
    assert [entry["id"] for entry in saved["models"]["controlnet"]] == ["tiny-canny"]
    assert str(controlnet_folders["tiny"].parent) not in json.dumps(saved)


def test_controlnet_folder_hash_is_recorded_where_images_are_written(tiny_model_files, controlnet_folders, face):
    """The ControlNet's weights are part of what made the image, as the adapter's are."""
    from facefact.pipelines.hashing import file_sha256

    out = controlnet_folder_output(tiny_model_files, controlnet_folders["tiny"], face)
    weights = controlnet_folders["tiny"] / "diffusion_pytorch_model.safetensors"
    expected = [{"id": "tiny-canny", "weights_sha256": file_sha256(weights)[:16]}]
    assert out.metadata_with_hashes()[0]["models"]["controlnet"] == expected


# ---- errors: exit code 2, a message, no traceback; all before any weights are loaded --------------
@pytest.fixture
def no_loading(monkeypatch):
    import facefact.pipelines.build as build
    from facefact.pipelines.mixin import FACTMixin

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the settings and files were checked")

    monkeypatch.setattr(build, "load_fact_pipeline", refuse)
    monkeypatch.setattr(FACTMixin, "tiny", classmethod(refuse))


def run(cli, face, *extra, model="tiny"):
    return cli("generate", *(["--model", model] if model else []), "--face", face, "--prompt", PROMPT,
               "--steps", 1, "--size", 64, "--quiet", *extra)


def test_flag_pairs_and_scale(cli, astronaut, control_images, no_loading):
    fails(run(cli, astronaut, "--controlnet", "tiny"), "--controlnet needs --control-image too", "hint:")
    fails(run(cli, astronaut, "--control-image", control_images["edges"]), "--control-image needs --controlnet too",
          "--controlnet tiny")
    fails(run(cli, astronaut, "--control-scale", 0.5), "--control-scale goes with --controlnet")
    with pytest.raises(SystemExit) as exit_code:  # refused by the flag's own type, as argparse does
        run(cli, astronaut, "--controlnet", "tiny", "--control-image", control_images["edges"], "--control-scale", -1)
    assert exit_code.value.code == 2
    fails(run(cli, astronaut, "--controlnet", "lllyasviel/control_v11p_sd15_canny", "--control-image",
              control_images["edges"]), "--model tiny takes only --controlnet tiny")


def test_bad_control_images(cli, astronaut, tmp_path, no_loading):
    fails(run(cli, astronaut, "--controlnet", "tiny", "--control-image", tmp_path / "missing.png"),
          "missing.png", "file not found")
    text = tmp_path / "edges.png"
    text.write_text("not an image")
    fails(run(cli, astronaut, "--controlnet", "tiny", "--control-image", text), "edges.png")


def test_controlnet_locations_that_do_not_exist(cli, astronaut, tiny_model_files, control_images, tmp_path,
                                                no_loading):
    base, adapter, encoder = tiny_model_files
    files = ["--base-model", base, "--adapter", adapter, "--encoder", encoder, "--control-image",
             control_images["edges"]]
    fails(run(cli, astronaut, *files, "--controlnet", tmp_path / "nope", model=None), "ControlNet not found", "nope")
    fails(run(cli, astronaut, *files, "--controlnet", "tiny", model=None), "ControlNet not found",
          "'tiny' is the built-in one, for --model tiny")


def test_controlnet_folders_that_are_not_one_for_this_model(cli, astronaut, tiny_model_files, controlnet_folders,
                                                             control_images, tmp_path):
    base, adapter, encoder = tiny_model_files
    files = ["--base-model", base, "--adapter", adapter, "--encoder", encoder, "--control-image",
             control_images["edges"], "--out", tmp_path / "out"]
    fails(run(cli, astronaut, *files, "--controlnet", controlnet_folders["other"], model=None),
          "does not fit this base model", "cross_attention_dim is 48", "the UNet's 32")
    fails(run(cli, astronaut, *files, "--controlnet", base, model=None), "not a diffusers ControlNet folder")
    fails(run(cli, astronaut, *files, "--controlnet", base / "unet", model=None),
          "holds a UNet2DConditionModel, not a ControlNetModel")
    weights = tmp_path / "notes.txt"
    weights.write_text("x")
    fails(run(cli, astronaut, *files, "--controlnet", weights, model=None), "not a .safetensors or .pth ControlNet")
    garbage = tmp_path / "canny.safetensors"
    garbage.write_bytes(b"not weights")
    err = fails(run(cli, astronaut, *files, "--controlnet", garbage, model=None), "canny.safetensors",
                "is not a ControlNet checkpoint")
    assert "connection" not in err
    config = shutil.copytree(controlnet_folders["tiny"], tmp_path / "odd-canny") / "config.json"
    config.write_text("[1, 2]")
    fails(run(cli, astronaut, *files, "--controlnet", config.parent, model=None), "config.json",
          "not a diffusers config (JSON, but not a JSON object)")
    assert not (tmp_path / "out").exists()


# ---- several ControlNets at once (diffusers' MultiControlNetModel) ------------------------------
@pytest.fixture(scope="module")
def second_controlnet_folder(tmp_path_factory):
    from facefact.pipelines.tiny import tiny_controlnet, tiny_sd_pipeline

    folder = tmp_path_factory.mktemp("controlnets2") / "tiny-pose"
    tiny_controlnet(tiny_sd_pipeline(0).unet, 5).save_pretrained(folder)
    return folder


def several_controlnets_pipeline(form, tiny_model_files, folders):
    """A FACT ControlNet pipeline over two ControlNets: folders through load_fact_pipeline, models
    (a MultiControlNetModel or a list) through diffusers' from_pretrained + load_fact_adapter."""
    from diffusers import ControlNetModel, MultiControlNetModel

    from facefact.pipelines import FACTStableDiffusionControlNetPipeline
    from facefact.pipelines.build import load_fact_pipeline

    base, adapter, encoder = tiny_model_files
    if form == "list of folders":
        return load_fact_pipeline(base, adapter, encoder, controlnet=folders, device="cpu", dtype=torch.float32)
    nets = [ControlNetModel.from_pretrained(str(folder)) for folder in folders]
    pipe = FACTStableDiffusionControlNetPipeline.from_pretrained(
        str(base), controlnet=MultiControlNetModel(nets) if form == "MultiControlNetModel" else nets,
        safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_fact_adapter(adapter, encoder=encoder)
    return pipe


def run_two_controlnets(pipe, face, control_images):
    edges, square = Image.open(control_images["edges"]), Image.open(control_images["square"]).resize((64, 64))
    return pipe(PROMPT, face_tokens=face, image=[edges, square], num_inference_steps=1, height=64, width=64,
                generator=torch.Generator().manual_seed(1), controlnet_conditioning_scale=[1.0, 0.5])


@pytest.mark.parametrize("form", ["MultiControlNetModel", "list of models", "list of folders"])
def test_several_controlnets_see_only_the_text(form, tiny_model_files, controlnet_folders, second_controlnet_folder,
                                               control_images, face):
    from diffusers import MultiControlNetModel

    folders = [controlnet_folders["tiny"], second_controlnet_folder]
    pipe = several_controlnets_pipeline(form, tiny_model_files, folders)
    assert isinstance(pipe.controlnet, MultiControlNetModel) and len(pipe.controlnet.nets) == 2
    seen = []
    for net in pipe.controlnet.nets:
        net.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()),
                                      with_kwargs=True)
    out = run_two_controlnets(pipe, face, control_images)
    assert len(out.images) == 1 and len(seen) == 2  # every ControlNet sees the text tokens only
    assert all(torch.equal(states, text_embeddings(pipe)) for states in seen)
    assert out.metadata[0]["controlnet_conditioning_scale"] == [1.0, 0.5]
    assert str(folders[0].parent) not in json.dumps(out.metadata[0])
    if form == "list of folders":  # one entry per ControlNet, by its folder's name
        assert out.metadata[0]["models"]["controlnet"] == [{"id": "tiny-canny"}, {"id": "tiny-pose"}]


@pytest.mark.parametrize("form", ["MultiControlNetModel", "list of models"])
def test_controlnet_models_given_to_diffusers_are_each_described(form, tiny_model_files, controlnet_folders,
                                                                 second_controlnet_folder, control_images, face):
    folders = [controlnet_folders["tiny"], second_controlnet_folder]
    out = run_two_controlnets(several_controlnets_pipeline(form, tiny_model_files, folders), face, control_images)
    assert out.metadata[0]["models"]["controlnet"] == [{"id": "tiny-canny"}, {"id": "tiny-pose"}]
