"""The FACT text-to-image pipeline beside the diffusers features people combine it with: plain base
model (scale 0), seeds, LoRA, model CPU offload, ControlNet, dtypes. Tiny random models, 64 px, 2 steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facefact.errors import ConfigError
from facefact.model import FACTFuser
from facefact.pipelines import FACTStableDiffusionPipeline, FACTStableDiffusionXLPipeline
from facefact.pipelines.tiny import tiny_sd_pipeline
from facefact.pipelines.tiny_xl import tiny_sdxl_pipeline

PROMPT = "a portrait in a garden"


def fast(seed: int | None = 7, **extra) -> dict:
    """2 steps at 64 px with a fresh CPU generator of `seed` (None: no generator)."""
    args = dict(num_inference_steps=2, height=64, width=64, guidance_scale=5.0, **extra)
    if seed is not None:
        args["generator"] = torch.Generator("cpu").manual_seed(seed)
    return args


def as_array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# family -> (FACT text-to-image class, the plain diffusers pipeline on the same tiny weights)
FAMILIES = {"sd15": (FACTStableDiffusionPipeline, tiny_sd_pipeline),
            "sdxl": (FACTStableDiffusionXLPipeline, tiny_sdxl_pipeline)}


def base_pixels(seed: int = 7, family: str = "sd15") -> np.ndarray:
    """The plain diffusers pipeline on the same tiny weights, no adapter anywhere."""
    return as_array(FAMILIES[family][1](0)(PROMPT, **fast(seed)).images[0])


def fusers(pipe) -> list:
    return [m for m in pipe.unet.modules() if isinstance(m, FACTFuser)]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_scale_zero_gives_the_base_pipeline_pixels(family, face_pixels):
    pipe = FAMILIES[family][0].tiny()
    face = pipe.encode_faces(face_pixels=face_pixels)
    ours = pipe(PROMPT, face_tokens=face, fact_scale=0.0, **fast()).images[0]
    reference = base_pixels(family=family)
    np.testing.assert_array_equal(as_array(ours), reference)
    with_face = pipe(PROMPT, face_tokens=face, fact_scale=0.5, **fast()).images[0]
    assert np.abs(as_array(with_face) - reference).max() > 0  # and the face does change it


def test_same_seed_same_image_different_seed_different(tiny_pipe, face):
    two = [torch.Generator("cpu").manual_seed(s) for s in (7, 8)]
    a = tiny_pipe(PROMPT, face_tokens=face, num_images_per_prompt=2, **{**fast(), "generator": two})
    b = tiny_pipe(PROMPT, face_tokens=face, **fast())
    assert [m["seed"] for m in a.metadata] == [7, 8] and b.metadata[0]["seed"] == 7
    np.testing.assert_allclose(as_array(a.images[0]), as_array(b.images[0]), atol=1)  # batch of 2 vs 1
    assert np.abs(as_array(a.images[0]) - as_array(a.images[1])).max() > 10


def test_without_a_generator_torchs_global_rng_decides_and_its_seed_is_recorded_only_when_known(tiny_pipe, face):
    """generator=None draws from torch's global RNG, as the diffusers parent does: torch.manual_seed(s)
    before the call reproduces it, and s is recorded; once that RNG has been drawn from, no seed is claimed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        out = tiny_pipe(PROMPT, face_tokens=face, num_images_per_prompt=2, **fast(None))
        later = tiny_pipe(PROMPT, face_tokens=face, **fast(None))
        torch.manual_seed(11)
        again = tiny_pipe(PROMPT, face_tokens=face, num_images_per_prompt=2, **fast(None))
    assert [(m["seed"], m["batch_index"]) for m in out.metadata] == [(11, 0), (11, 1)]
    assert "seed" not in later.metadata[0]
    for first, second in zip(out.images, again.images):
        np.testing.assert_array_equal(as_array(first), as_array(second))
    # the same draws as one generator seeded 11 for the batch (what the metadata says)
    seeded = tiny_pipe(PROMPT, face_tokens=face, num_images_per_prompt=2, **fast(11))
    np.testing.assert_array_equal(as_array(seeded.images[1]), as_array(out.images[1]))


def test_one_generator_for_a_batch_and_a_used_generator(tiny_pipe, face):
    shared = tiny_pipe(PROMPT, face_tokens=face, num_images_per_prompt=2, **fast(5))
    assert [(m["seed"], m["batch_index"], m["batch_size"]) for m in shared.metadata] == [(5, 0, 2), (5, 1, 2)]
    used = torch.Generator("cpu").manual_seed(5)
    torch.randn(3, generator=used)
    out = tiny_pipe(PROMPT, face_tokens=face, **{**fast(), "generator": used})
    assert "seed" not in out.metadata[0]  # its seed would not reproduce the image: none is claimed


def test_works_after_load_lora_weights(face, tiny_lora):
    pytest.importorskip("peft")
    pipe = FACTStableDiffusionPipeline.tiny()
    before = pipe(PROMPT, face_tokens=face, **fast()).images[0]
    pipe.load_lora_weights(tiny_lora(), adapter_name="style")
    assert len(fusers(pipe)) == len(pipe.fact_adapter.block_paths) == 16  # LoRA did not displace the fusers
    after = pipe(PROMPT, face_tokens=face, **fast()).images[0]
    no_face = pipe(PROMPT, face_tokens=face, fact_scale=0.0, **fast()).images[0]
    assert np.abs(as_array(after) - as_array(before)).max() > 0   # the LoRA acts
    assert np.abs(as_array(after) - as_array(no_face)).max() > 0  # and so does the face


def test_model_cpu_offload_keeps_the_adapter_with_the_unet(face):
    """Without an accelerator diffusers refuses `enable_model_cpu_offload()` ("requires accelerator"); with
    device="cpu" it installs the same accelerate hooks, which move each model - with all its submodules -
    to the execution device. The fusers are UNet submodules, so they move with it; the result must not change."""
    pytest.importorskip("accelerate")
    pipe = FACTStableDiffusionPipeline.tiny()
    reference = pipe(PROMPT, face_tokens=face, **fast()).images[0]
    pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.unet, "_hf_hook")
    unet_params = {id(p) for p in pipe.unet.parameters()}
    assert all(id(p) in unet_params for fuser in fusers(pipe) for p in fuser.parameters())
    offloaded = pipe(PROMPT, face_tokens=face, **fast()).images[0]
    np.testing.assert_array_equal(as_array(offloaded), as_array(reference))


def test_controlnet_sees_only_the_text_tokens_and_the_unet_gets_the_faces_apart(face):
    """Built from parts as a user would: a plain diffusers ControlNet beside the FACT adapter."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines import FACTStableDiffusionControlNetPipeline

    sd = tiny_sd_pipeline(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        controlnet = ControlNetModel.from_unet(sd.unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
    parts = {k: v for k, v in sd.components.items() if k != "image_encoder"}
    pipe = FACTStableDiffusionControlNetPipeline(**parts, controlnet=controlnet, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_fact_adapter(tiny_face_adapter(pipe.unet, seed=1), encoder=tiny_encoder(0))

    seen = {"controlnet": [], "unet": [], "objs": []}

    def record(name):
        def hook(module, args, kwargs):
            seen[name].append(kwargs["encoder_hidden_states"].clone())
            if name == "unet":
                seen["objs"].append(((kwargs.get("cross_attention_kwargs") or {}).get("gligen") or {}).get("objs"))
        return hook

    for name, module in (("controlnet", controlnet), ("unet", pipe.unet)):
        module.register_forward_pre_hook(record(name), with_kwargs=True)
    # the text embeddings themselves (negative | prompt, for classifier-free guidance): the very tensor
    # the ControlNet must get - a count of 77 tokens would also pass with text tokens swapped for faces
    text, negative = pipe.encode_prompt(PROMPT, pipe._execution_device, 1, True, None)
    text_only = torch.cat([negative, text])
    control = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    out = pipe(PROMPT, face_tokens=face, image=control, **fast())
    assert len(out.images) == 1 and seen["controlnet"] and seen["unet"]
    assert all(torch.equal(states, text_only) for states in seen["controlnet"] + seen["unet"])
    expected = torch.cat([face.null, face.tokens])  # the unconditional row first, with the null face tokens
    assert all(objs is not None and torch.equal(objs, expected) for objs in seen["objs"])
    for values in seen.values():
        values.clear()
    # the plain diffusers pipeline over the same parts is the plain one: no face tokens anywhere
    plain = StableDiffusionControlNetPipeline(**parts, controlnet=controlnet, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    plain(PROMPT, image=control, num_inference_steps=1, height=64, width=64)
    assert seen["controlnet"] and all(torch.equal(states, text_only) for states in seen["controlnet"])
    assert seen["objs"] and all(objs is None for objs in seen["objs"])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_adapter_state_after_a_request_and_after_unloading(family, face_pixels):
    """A per-call fact_scale leaves the set scale as it was; unload_fact_adapter gives back the
    base model, bit for bit, with no fuser or position_net left in the UNet."""
    pipe = FAMILIES[family][0].tiny()
    state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    face = pipe.encode_faces(face_pixels=face_pixels)
    pipe.set_fact_scale(0.3)
    out = pipe(PROMPT, face_tokens=face, fact_scale=0.8, **fast())
    assert out.metadata[0]["fact_scale"] == 0.8
    assert pipe.fact_adapter.scale == 0.3 and {f.scale for f in fusers(pipe)} == {0.3}
    assert pipe(PROMPT, face_tokens=face, **fast()).metadata[0]["fact_scale"] == 0.3
    pipe.unload_fact_adapter()
    assert not fusers(pipe) and getattr(pipe.unet, "position_net", None) is None
    assert not any(name.endswith(".fuser") for name, _ in pipe.unet.named_modules())
    assert all(torch.equal(v, state[k]) for k, v in pipe.unet.state_dict().items())
    direct = pipe(PROMPT, **fast()).images[0]
    np.testing.assert_array_equal(as_array(direct), base_pixels(family=family))
    with pytest.raises(ConfigError, match="no FACT adapter is loaded"):
        pipe(PROMPT, face_tokens=face, **fast())


def test_adapter_state_is_restored_when_a_request_fails(tiny_pipe, face):
    scale_before = tiny_pipe.fact_adapter.scale

    def stop(pipe, step, timestep, kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_pipe(PROMPT, face_tokens=face, fact_scale=0.8, callback_on_step_end=stop, **fast())
    assert tiny_pipe.fact_adapter.scale == scale_before
    assert {f.scale for f in fusers(tiny_pipe)} == {scale_before}


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(face_images=[]), "empty"),
    (dict(face_images=["a.jpg"], face_tokens=torch.zeros(1, 16, 32)), "not both"),
    (dict(face_tokens=torch.zeros(16, 32)), r"\[1, 16n, C\]"),
    (dict(face_tokens=torch.zeros(1, 20, 32)), "not a positive multiple of 16"),
    (dict(face_tokens=torch.zeros(1, 16, 32), cross_attention_kwargs={"gligen": {}}), "FACT's channel"),
    (dict(cross_attention_kwargs={"gligen": {"objs": torch.zeros(1, 16, 32)}}), "FACT's channel"),
])
def test_bad_face_arguments_are_config_errors_before_any_work(tiny_pipe, kwargs, phrase, monkeypatch):
    def no_work(*args, **kw):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(tiny_pipe, "encode_prompt", no_work)
    monkeypatch.setattr(tiny_pipe.face_encoder, "forward", no_work)
    with pytest.raises(ConfigError, match=phrase) as error:
        tiny_pipe(PROMPT, **fast(), **kwargs)
    assert isinstance(error.value, ValueError)  # catchable as the builtin too


def test_encoder_stays_float32_under_an_outer_autocast(tiny_pipe, face_pixels):
    plain = tiny_pipe.encode_faces(face_pixels=face_pixels)
    seen = []
    hook = tiny_pipe.face_encoder.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = tiny_pipe.encode_faces(face_pixels=face_pixels)
    finally:
        hook.remove()
    assert seen == [torch.float32]
    torch.testing.assert_close(auto.tokens, plain.tokens, rtol=0, atol=0)
    torch.testing.assert_close(auto.null, plain.null, rtol=0, atol=0)


def test_to_a_dtype_keeps_the_encoder_float32(face):
    pipe = FACTStableDiffusionPipeline.tiny()
    assert pipe.to(torch.bfloat16) is pipe
    assert pipe.unet.dtype == torch.bfloat16
    assert {p.dtype for p in pipe.face_encoder.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.fact_adapter.parameters()} == {torch.bfloat16}  # follows the UNet
    out = pipe(PROMPT, face_tokens=face, **fast())
    assert len(out.images) == 1 and out.metadata[0]["dtype"] == "bfloat16"
    pipe.to("cpu", torch.float32)
    assert {p.dtype for p in pipe.face_encoder.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.fact_adapter.parameters()} == {torch.float32}
