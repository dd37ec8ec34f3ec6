"""FaceFactPipeline beside the diffusers features people combine it with: plain base model
(scale 0), LoRA, model CPU offload, ControlNet. Tiny random models, 64 px, 2 steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facefact.model import FACTAttnProcessor
from facefact.pipelines import FaceFactPipeline
from facefact.pipelines.tiny import tiny_sd_pipeline

PROMPT = "a portrait in a garden"
FAST = dict(num_inference_steps=2, height=64, width=64, seed=7)


def as_array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def face(tiny_pipe, astronaut):
    return tiny_pipe.face_pixels([astronaut])  # detection once; the tests reuse the aligned face


def test_scale_zero_gives_the_base_pipeline_pixels(tiny_pipe, face):
    ours = tiny_pipe(PROMPT, face_pixels=face, adapter_scale=0.0, **FAST).images[0]
    base = tiny_sd_pipeline(0)  # the same weights, no adapter anywhere
    reference = base(PROMPT, generator=torch.Generator("cpu").manual_seed(7), num_inference_steps=2,
                     guidance_scale=5.0, height=64, width=64).images[0]
    np.testing.assert_array_equal(as_array(ours), as_array(reference))
    with_face = tiny_pipe(PROMPT, face_pixels=face, adapter_scale=0.5, **FAST).images[0]
    assert np.abs(as_array(with_face) - as_array(reference)).max() > 0  # and the face does change it


def test_same_seed_same_image_different_seed_different(tiny_pipe, face):
    a = tiny_pipe(PROMPT, face_pixels=face, num_images_per_prompt=2, **FAST)
    b = tiny_pipe(PROMPT, face_pixels=face, **FAST)
    assert [m["seed"] for m in a.metadata] == [7, 8]
    np.testing.assert_allclose(as_array(a.images[0]), as_array(b.images[0]), atol=1)  # batch of 2 vs 1
    assert np.abs(as_array(a.images[0]) - as_array(a.images[1])).max() > 10


def test_works_after_load_lora_weights(face, tiny_lora):
    pytest.importorskip("peft")
    pipe = FaceFactPipeline.tiny()
    before = pipe(PROMPT, face_pixels=face, **FAST).images[0]
    pipe.load_lora_weights(tiny_lora(), adapter_name="style")
    processors = [m for m in pipe.sd.unet.modules() if isinstance(m, FACTAttnProcessor)]
    assert len(processors) == len(pipe.adapter.block_paths)  # LoRA did not displace the FACT processors
    after = pipe(PROMPT, face_pixels=face, **FAST).images[0]
    no_face = pipe(PROMPT, face_pixels=face, adapter_scale=0.0, **FAST).images[0]
    assert np.abs(as_array(after) - as_array(before)).max() > 0   # the LoRA acts
    assert np.abs(as_array(after) - as_array(no_face)).max() > 0  # and so does the face


def test_model_cpu_offload_keeps_the_adapter_with_the_unet(tiny_pipe, face):
    """Without an accelerator diffusers refuses `enable_model_cpu_offload()` ("requires accelerator"); with
    device="cpu" it installs the same accelerate hooks, which move each model - with all its submodules -
    to the execution device. The FACT processors (and the borrowed norms) are UNet submodules, so they
    move with it; the result must not change."""
    pipe = FaceFactPipeline.tiny()
    reference = pipe(PROMPT, face_pixels=face, **FAST).images[0]
    pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.sd.unet, "_hf_hook")
    unet_params = {id(p) for p in pipe.sd.unet.parameters()}
    for proc in pipe.adapter.all_processors():
        assert all(id(p) in unet_params for p in proc.parameters())
    offloaded = pipe(PROMPT, face_pixels=face, **FAST).images[0]
    np.testing.assert_array_equal(as_array(offloaded), as_array(reference))


def test_controlnet_sees_only_the_text_tokens(face):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    from facefact.model.tiny import tiny_encoder, tiny_face_adapter

    sd = tiny_sd_pipeline(0)
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(sd.unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
    parts = {k: v for k, v in sd.components.items() if k not in ("image_encoder",)}
    cn_pipe = StableDiffusionControlNetPipeline(**parts, controlnet=controlnet)
    cn_pipe.set_progress_bar_config(disable=True)
    pipe = FaceFactPipeline(cn_pipe, tiny_encoder(0), tiny_face_adapter(cn_pipe.unet, seed=1))

    seen = {"controlnet": [], "unet": []}
    for name, module in (("controlnet", controlnet), ("unet", cn_pipe.unet)):
        module.register_forward_pre_hook(
            lambda m, args, kwargs, name=name: seen[name].append(kwargs["encoder_hidden_states"].clone()),
            with_kwargs=True)
    # the text embeddings themselves (negative | prompt, for classifier-free guidance): the very tensor the
    # ControlNet must get - a count of 77 tokens would also pass with 16 text tokens cut and the faces kept
    text, negative = cn_pipe.encode_prompt(PROMPT, cn_pipe._execution_device, 1, True, None)
    text_only = torch.cat([negative, text])

    def check_request():
        assert seen["controlnet"] and seen["unet"]
        for states in seen["controlnet"]:
            assert torch.equal(states, text_only)
        for states in seen["unet"]:  # the UNet: the same text, then the 16 face tokens
            assert states.shape[1] == 77 + 16 and torch.equal(states[:, :77], text_only)
        seen["controlnet"].clear()
        seen["unet"].clear()

    control = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    out = pipe(PROMPT, face_pixels=face, image=control, **FAST)
    assert len(out.images) == 1
    check_request()

    # A second pipeline over the same ControlNet (here with the same, already attached adapter) must
    # not stack a second hook that cuts the face tokens off again.
    again = FaceFactPipeline(cn_pipe, pipe.encoder, pipe.adapter)
    again(PROMPT, face_pixels=face, image=control, **FAST)
    check_request()
    # and outside a request nothing is cut: the ControlNet pipeline is the plain one again
    cn_pipe(PROMPT, image=control, num_inference_steps=1, height=64, width=64)
    assert seen["controlnet"] and all(torch.equal(states, text_only) for states in seen["controlnet"])


def test_adapter_state_is_restored_after_a_request(face):
    """After a request `pipe.sd(...)` is the plain base model again: no face tokens expected at the
    end of the text, the scale as it was before."""
    pipe = FaceFactPipeline.tiny()
    scale_before = pipe.adapter.scale
    pipe(PROMPT, face_pixels=face, adapter_scale=0.8, **FAST)
    assert pipe.adapter.num_face_tokens == 0 and pipe.adapter.scale == scale_before
    assert all(p.num_face_tokens == 0 and p.scale == scale_before for p in pipe.adapter.all_processors())
    direct = pipe.sd(PROMPT, generator=torch.Generator("cpu").manual_seed(7), num_inference_steps=2,
                     guidance_scale=5.0, height=64, width=64).images[0]
    reference = tiny_sd_pipeline(0)(PROMPT, generator=torch.Generator("cpu").manual_seed(7), num_inference_steps=2,
                                    guidance_scale=5.0, height=64, width=64).images[0]
    np.testing.assert_array_equal(as_array(direct), as_array(reference))


def test_adapter_state_is_restored_when_a_request_fails(tiny_pipe, face):
    scale_before, tokens_before = tiny_pipe.adapter.scale, tiny_pipe.adapter.num_face_tokens

    def stop(pipe, step, timestep, kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_pipe(PROMPT, face_pixels=face, adapter_scale=0.8, callback_on_step_end=stop, **FAST)
    assert (tiny_pipe.adapter.scale, tiny_pipe.adapter.num_face_tokens) == (scale_before, tokens_before)


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(face_images=[]), "empty"),
    (dict(prompt_embeds=torch.zeros(1, 77, 32)), "prompt_embeds"),
    (dict(negative_prompt_embeds=torch.zeros(1, 77, 32)), "negative_prompt_embeds"),
    (dict(generator=torch.Generator("cpu")), "generator"),
    (dict(scheduler="no-such-scheduler"), "no-such-scheduler"),
])
def test_bad_arguments_are_config_errors_before_any_work(tiny_pipe, face, kwargs, phrase, monkeypatch):
    from facefact.errors import ConfigError

    def no_work(*args, **kw):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(tiny_pipe.sd, "encode_prompt", no_work)
    monkeypatch.setattr(tiny_pipe, "encode_faces", no_work)
    args = {**FAST, **kwargs}
    if "face_images" not in kwargs:
        args["face_pixels"] = face
    with pytest.raises(ConfigError, match=phrase) as error:
        tiny_pipe(PROMPT, **args)
    assert error.value.hint


def test_encoder_stays_float32_under_an_outer_autocast(tiny_pipe, face):
    plain_face, plain_null = tiny_pipe.encode_faces(face_pixels=face)
    seen = []
    hook = tiny_pipe.encoder.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto_face, auto_null = tiny_pipe.encode_faces(face_pixels=face)
    finally:
        hook.remove()
    assert seen == [torch.float32]
    torch.testing.assert_close(auto_face, plain_face, rtol=0, atol=0)
    torch.testing.assert_close(auto_null, plain_null, rtol=0, atol=0)


def test_to_a_dtype_keeps_the_encoder_float32(face):
    pipe = FaceFactPipeline.tiny()
    assert pipe.to(torch.bfloat16) is pipe
    assert pipe.sd.unet.dtype == torch.bfloat16
    assert {p.dtype for p in pipe.encoder.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.adapter.parameters()} == {torch.bfloat16}  # follows the UNet, as attach() does
    out = pipe(PROMPT, face_pixels=face, **FAST)
    assert len(out.images) == 1 and out.metadata[0]["dtype"] == "bfloat16"
    pipe.to("cpu", torch.float32)
    assert {p.dtype for p in pipe.encoder.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.adapter.parameters()} == {torch.float32}
