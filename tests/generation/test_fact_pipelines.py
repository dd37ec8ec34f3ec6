"""The twelve FACT pipelines (diffusers' SD1.5 and SDXL pipelines + FACTMixin) on tiny random models: each
runs with a face, the face acts, scale 0 is the diffusers parent bit for bit; batches, outputs, LoRA,
CPU offload, saving with provenance, face tokens. 64 px, 2 steps."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facefact.errors import ConfigError
from facefact.pipelines import (FACTStableDiffusionControlNetImg2ImgPipeline,
                                FACTStableDiffusionControlNetInpaintPipeline, FACTStableDiffusionControlNetPipeline,
                                FACTStableDiffusionImg2ImgPipeline, FACTStableDiffusionInpaintPipeline,
                                FACTStableDiffusionPipeline, FACTStableDiffusionXLControlNetImg2ImgPipeline,
                                FACTStableDiffusionXLControlNetInpaintPipeline, FACTStableDiffusionXLControlNetPipeline,
                                FACTStableDiffusionXLImg2ImgPipeline, FACTStableDiffusionXLInpaintPipeline,
                                FACTStableDiffusionXLPipeline, FACTPipelineOutput)
from facefact.pipelines.mixin import FACTMixin

PROMPT = "a portrait in a garden"


def generator(seed: int = 7) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


@pytest.fixture(scope="module")
def analysis():
    from facefact.faces import FaceAnalysis

    return FaceAnalysis()


@pytest.fixture(scope="module")
def pictures():
    """A 64x64 init image, an inpainting mask (the centre) and a control map."""
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    control = Image.fromarray(((rng.random((64, 64)) > 0.8) * 255).astype(np.uint8)).convert("RGB")
    return {"init": init, "mask": Image.fromarray(mask), "control": control}


def inputs(cls, pictures, num_controlnets: int = 1) -> dict:
    """What each pipeline takes besides the prompt (diffusers' own argument names)."""
    control = pictures["control"] if num_controlnets == 1 else [pictures["control"]] * num_controlnets
    return {
        FACTStableDiffusionPipeline: {},
        FACTStableDiffusionImg2ImgPipeline: {"image": pictures["init"]},
        FACTStableDiffusionInpaintPipeline: {"image": pictures["init"], "mask_image": pictures["mask"]},
        FACTStableDiffusionControlNetPipeline: {"image": control},
        FACTStableDiffusionControlNetImg2ImgPipeline: {"image": pictures["init"], "control_image": control},
        FACTStableDiffusionControlNetInpaintPipeline: {"image": pictures["init"], "mask_image": pictures["mask"],
                                                       "control_image": control},
        # SDXL img2img's default strength (0.3) leaves no step of 2
        FACTStableDiffusionXLPipeline: {},
        FACTStableDiffusionXLImg2ImgPipeline: {"image": pictures["init"], "strength": 0.8},
        FACTStableDiffusionXLInpaintPipeline: {"image": pictures["init"], "mask_image": pictures["mask"]},
        FACTStableDiffusionXLControlNetPipeline: {"image": control},
        FACTStableDiffusionXLControlNetImg2ImgPipeline: {"image": pictures["init"], "control_image": control},
        FACTStableDiffusionXLControlNetInpaintPipeline: {"image": pictures["init"], "mask_image": pictures["mask"],
                                                         "control_image": control},
    }[cls]


CASES = [
    pytest.param(FACTStableDiffusionPipeline, {}, id="txt2img"),
    pytest.param(FACTStableDiffusionImg2ImgPipeline, {}, id="img2img"),
    pytest.param(FACTStableDiffusionInpaintPipeline, {}, id="inpaint"),
    pytest.param(FACTStableDiffusionInpaintPipeline, {"inpainting_unet": True}, id="inpaint-9-channel-unet"),
    pytest.param(FACTStableDiffusionControlNetPipeline, {}, id="controlnet"),
    pytest.param(FACTStableDiffusionControlNetImg2ImgPipeline, {}, id="controlnet-img2img"),
    pytest.param(FACTStableDiffusionControlNetInpaintPipeline, {}, id="controlnet-inpaint"),
    pytest.param(FACTStableDiffusionControlNetInpaintPipeline, {"num_controlnets": 2}, id="controlnet-inpaint-two"),
    pytest.param(FACTStableDiffusionXLPipeline, {}, id="xl-txt2img"),
    pytest.param(FACTStableDiffusionXLImg2ImgPipeline, {}, id="xl-img2img"),
    pytest.param(FACTStableDiffusionXLInpaintPipeline, {}, id="xl-inpaint"),
    pytest.param(FACTStableDiffusionXLInpaintPipeline, {"inpainting_unet": True}, id="xl-inpaint-9-channel-unet"),
    pytest.param(FACTStableDiffusionXLControlNetPipeline, {}, id="xl-controlnet"),
    pytest.param(FACTStableDiffusionXLControlNetImg2ImgPipeline, {}, id="xl-controlnet-img2img"),
    pytest.param(FACTStableDiffusionXLControlNetInpaintPipeline, {}, id="xl-controlnet-inpaint"),
]


@pytest.mark.parametrize("cls, tiny_options", CASES)
def test_each_pipeline_runs_with_a_face_and_scale_zero_is_its_diffusers_parent(cls, tiny_options, pictures,
                                                                              astronaut, analysis):
    from diffusers import MultiControlNetModel

    pipe = cls.tiny(face_analysis=analysis, **tiny_options)
    if tiny_options.get("inpainting_unet"):
        assert pipe.unet.config.in_channels == 9
    if tiny_options.get("num_controlnets"):
        assert isinstance(pipe.controlnet, MultiControlNetModel) and len(pipe.controlnet.nets) == 2
    extra = {**inputs(cls, pictures, tiny_options.get("num_controlnets", 1)), "num_inference_steps": 2,
             "height": 64, "width": 64}
    with_face = pipe(PROMPT, face_images=[astronaut], generator=generator(), **extra)
    assert isinstance(with_face, FACTPipelineOutput) and with_face.images[0].size == (64, 64)
    meta = with_face.metadata[0]
    assert (meta["pipeline"], meta["method"], meta["num_reference_photos"], meta["seed"]) == (
        cls.__name__, "FaceChain-FACT", 1, 7)
    no_face = pipe(PROMPT, generator=generator(), **extra)
    assert no_face.metadata[0]["method"] == "base model"
    assert np.abs(pixels(with_face.images) - pixels(no_face.images)).max() > 0  # the face acts
    scale_zero = pipe(PROMPT, face_images=[astronaut], fact_scale=0.0, generator=generator(), **extra)
    np.testing.assert_array_equal(pixels(scale_zero.images), pixels(no_face.images))

    # the diffusers parent itself, on the same parts with FACT unloaded: the same pixels, bit for bit
    pipe.unload_fact_adapter()
    parent_cls = next(base for base in cls.__bases__ if base is not FACTMixin)
    sd15_only = {"requires_safety_checker": False} if not cls.__name__.startswith("FACTStableDiffusionXL") else {}
    parent = parent_cls(**pipe.components, **sd15_only)
    parent.set_progress_bar_config(disable=True)
    assert not isinstance(parent, FACTMixin)
    reference = parent(PROMPT, generator=generator(), **extra).images
    np.testing.assert_array_equal(pixels(reference), pixels(no_face.images))


def test_prompt_lists_with_several_images_per_prompt(tiny_pipe, face):
    prompts = ["a portrait in a garden", "a portrait on a beach"]
    out = tiny_pipe(prompts, face_tokens=face, num_images_per_prompt=2, num_inference_steps=2, height=64, width=64,
                    generator=[generator(s) for s in (1, 2, 3, 4)], negative_prompt=["blurry", "dark"])
    assert len(out.images) == len(out.metadata) == 4
    assert [m["prompt"] for m in out.metadata] == [prompts[0]] * 2 + [prompts[1]] * 2
    assert [m["negative_prompt"] for m in out.metadata] == ["blurry"] * 2 + ["dark"] * 2
    assert [m["seed"] for m in out.metadata] == [1, 2, 3, 4]
    assert all(m["width"] == m["height"] == 64 for m in out.metadata)
    # image 3 is the second prompt at seed 3 (batch of 4 vs 1: float noise only)
    alone = tiny_pipe(prompts[1], face_tokens=face, num_inference_steps=2, height=64, width=64,
                      generator=generator(3), negative_prompt="dark")
    np.testing.assert_allclose(pixels(alone.images)[0], pixels(out.images)[2], atol=1)
    assert np.abs(pixels(out.images)[0] - pixels(out.images)[2]).max() > 0


def test_return_dict_false_and_output_type_np(tiny_pipe, face):
    common = dict(face_tokens=face, num_inference_steps=2, height=64, width=64)
    as_dict = tiny_pipe(PROMPT, generator=generator(), **common)
    as_tuple = tiny_pipe(PROMPT, generator=generator(), return_dict=False, **common)
    assert type(as_tuple) is tuple and len(as_tuple) == 2  # the parent's (images, nsfw_content_detected)
    np.testing.assert_array_equal(pixels(as_tuple[0]), pixels(as_dict.images))
    as_np = tiny_pipe(PROMPT, generator=generator(), output_type="np", **common)
    assert isinstance(as_np.images, np.ndarray) and as_np.images.shape == (1, 64, 64, 3)
    assert as_np.metadata[0]["width"] == as_np.metadata[0]["height"] == 64
    np.testing.assert_allclose(as_np.images[0] * 255, pixels(as_dict.images)[0], atol=1)


def test_saving_np_images_says_to_use_pil(tiny_pipe, face, tmp_path):
    as_np = tiny_pipe(PROMPT, face_tokens=face, num_inference_steps=1, height=64, width=64, output_type="np")
    with pytest.raises(ValueError, match="output_type='pil'"):
        as_np.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_lora_and_model_cpu_offload_on_a_controlnet_pipeline(face, tiny_lora, pictures):
    """With device="cpu" diffusers installs the accelerate offload hooks without an accelerator (plain
    `enable_model_cpu_offload()` asks for one); the face, a LoRA and the hooks together give the
    same pixels as without the hooks."""
    pytest.importorskip("peft")
    pytest.importorskip("accelerate")
    pipe = FACTStableDiffusionControlNetPipeline.tiny()
    extra = dict(image=pictures["control"], num_inference_steps=2, height=64, width=64)
    before = pixels(pipe(PROMPT, face_tokens=face, generator=generator(), **extra).images)
    pipe.load_lora_weights(tiny_lora(), adapter_name="style")
    with_lora = pipe(PROMPT, face_tokens=face, generator=generator(), **extra)
    assert np.abs(pixels(with_lora.images) - before).max() > 0  # the LoRA acts
    assert with_lora.metadata[0]["models"]["loras"][0]["adapter_name"] == "style"
    no_face = pixels(pipe(PROMPT, generator=generator(), **extra).images)
    assert np.abs(pixels(with_lora.images) - no_face).max() > 0  # and so does the face beside it
    try:
        pipe.enable_model_cpu_offload(device="cpu")
    except (RuntimeError, ValueError) as err:  # an accelerate or diffusers that wants an accelerator
        pytest.skip(f"model CPU offload is not available on this CPU-only machine: {err}")
    assert hasattr(pipe.unet, "_hf_hook") and hasattr(pipe.controlnet, "_hf_hook")
    offloaded = pipe(PROMPT, face_tokens=face, generator=generator(), **extra)
    np.testing.assert_array_equal(pixels(offloaded.images), pixels(with_lora.images))


def test_save_writes_pngs_with_provenance_and_the_model_files_hashes(tmp_path, face):
    from facefact.model.checkpoints import save_adapter
    from facefact.model.tiny import tiny_face_adapter
    from facefact.pipelines.build import load_fact_pipeline
    from facefact.pipelines.hashing import file_sha256
    from facefact.pipelines.metadata import read_png_metadata
    from facefact.pipelines.tiny import tiny_sd_pipeline

    adapter = save_adapter(tiny_face_adapter(tiny_sd_pipeline(0).unet), tmp_path / "models" / "my-adapter.safetensors")
    pipe = load_fact_pipeline("tiny", adapter, "tiny")
    out = pipe(PROMPT, face_tokens=face, num_images_per_prompt=2, generator=[generator(7), generator(8)],
               num_inference_steps=2, height=64, width=64)
    assert "sha256" not in out.metadata[0]["models"]["adapter"]  # nothing is hashed until files are written
    written = out.save(tmp_path / "out")
    assert [p.name for p in written] == ["facefact_7.png", "facefact_8.png"]
    saved = [read_png_metadata(p) for p in written]
    assert [m["seed"] for m in saved] == [7, 8] and all(m["ai_generated"] is True for m in saved)
    models = saved[0]["models"]
    assert models["adapter"] == {"id": "my-adapter.safetensors", "sha256": file_sha256(adapter)[:16]}
    assert models["encoder"] == {"id": "facefact-tiny/encoder", "seed": 0}
    assert models["base_model"] == {"id": "facefact-tiny/base_model", "seed": 0}
    assert saved[0]["fact_scale"] == 0.5 and saved[0]["prompt"] == PROMPT
    assert str(tmp_path) not in json.dumps(saved)  # file names, never where they are on this machine
    with Image.open(written[0]) as image:
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(out.images[0]))
    again = out.save(tmp_path / "out")  # a taken name is not overwritten
    assert [p.name for p in again] == ["facefact_7-1.png", "facefact_8-1.png"]


def test_the_gligen_channel_is_facts_own(tiny_pipe, face):
    with pytest.raises(ConfigError, match="FACT's channel for the face tokens") as caught:
        tiny_pipe(PROMPT, face_tokens=face, cross_attention_kwargs={"gligen": {"objs": face.tokens}},
                  num_inference_steps=1, height=64, width=64)
    assert "face_images= or face_tokens=" in caught.value.hint


def test_the_gligen_channel_is_refused_without_a_face_too(tiny_pipe):
    with pytest.raises(ConfigError, match="FACT's channel"):
        tiny_pipe(PROMPT, cross_attention_kwargs={"gligen": {"objs": torch.zeros(1, 16, 32)}},
                  num_inference_steps=1, height=64, width=64)


def test_face_tokens_reproduce_face_images_bit_for_bit(astronaut, analysis):
    pipe = FACTStableDiffusionPipeline.tiny(face_analysis=analysis)
    common = dict(num_inference_steps=2, height=64, width=64)
    from_photos = pipe(PROMPT, face_images=[astronaut], generator=generator(), **common)
    tokens = pipe.encode_faces(face_images=[astronaut])
    assert tokens.tokens.shape == (1, 16, pipe.unet.config.cross_attention_dim) and tokens.num_photos == 1
    from_tokens = pipe(PROMPT, face_tokens=tokens, generator=generator(), **common)
    np.testing.assert_array_equal(pixels(from_tokens.images), pixels(from_photos.images))
    from_tensor = pipe(PROMPT, face_tokens=tokens.tokens, generator=generator(), **common)  # a [1, 16n, C] tensor
    np.testing.assert_array_equal(pixels(from_tensor.images), pixels(from_photos.images))
    assert from_tokens.metadata[0]["num_reference_photos"] == from_tensor.metadata[0]["num_reference_photos"] == 1


@pytest.mark.parametrize("pipe_cls, adapter_family", [(FACTStableDiffusionXLPipeline, "sd15"),
                                                      (FACTStableDiffusionPipeline, "sdxl")])
def test_an_adapter_for_the_other_family_is_refused_before_any_work(pipe_cls, adapter_family, tmp_path, monkeypatch):
    """An SD1.5 adapter file on an SDXL pipeline (and the reverse): refused by name, before the encoder
    is read; the adapter loaded before stays loaded, the UNet untouched."""
    from facefact.errors import CheckpointError
    from facefact.model.checkpoints import save_adapter, save_encoder
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.tiny import tiny_sd_pipeline
    from facefact.pipelines.tiny_xl import tiny_sdxl_pipeline

    other_unet = (tiny_sd_pipeline if adapter_family == "sd15" else tiny_sdxl_pipeline)(0).unet
    adapter_file = save_adapter(tiny_face_adapter(other_unet), tmp_path / "other.safetensors")
    encoder_file = save_encoder(tiny_encoder(), tmp_path / "encoder.safetensors")
    pipe = pipe_cls.tiny()
    loaded, state = pipe.fact_adapter, {k: v.clone() for k, v in pipe.unet.state_dict().items()}

    def no_work(*args, **kwargs):
        raise AssertionError("the encoder was read before the adapter was refused")

    monkeypatch.setattr("facefact.pipelines.mixin.TransFaceEncoder.from_checkpoint", no_work)
    with pytest.raises(CheckpointError) as refused:
        pipe.load_fact_adapter(adapter_file, encoder=encoder_file)
    names = {"sd15": "Stable Diffusion 1.5", "sdxl": "SDXL"}
    base_family = "sd15" if adapter_family == "sdxl" else "sdxl"
    assert (f"made for {names[adapter_family]} base models, but the base model is {names[base_family]}"
            in str(refused.value))
    assert pipe.fact_adapter is loaded
    assert all(torch.equal(v, state[k]) for k, v in pipe.unet.state_dict().items())
