"""The contracts diffusers' own pipeline tests hold its pipelines to (the fast tests of
`PipelineTesterMixin`), checked here in this project's words for the six FACT twins on tiny models.

Each contract runs on three pipelines of one class with the same weights: the stock diffusers
parent ("stock"), the twin with no adapter ("twin"), and the twin with FACT loaded and a face
("face"). Without a face (or at scale 0) the twin is the stock pipeline bit for bit; with one,
every contract still holds. 32 px, 2 steps.
"""
from __future__ import annotations

import inspect
import json

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from facefact.errors import ConfigError
from facefact.pipelines import FACT_PIPELINES, FACTStableDiffusionImg2ImgPipeline, FACTStableDiffusionPipeline

PROMPT = "a portrait in a garden"
SIZE = 32
FACT_KEYWORDS = ("face_images", "face_tokens", "fact_scale", "cfg_face", "face_combine", "fact_window",
                 "face_regions")
CLASSES = [pytest.param(cls, id=cls.__name__.removeprefix("FACTStableDiffusion").removesuffix("Pipeline") or "txt2img")
           for cls in FACT_PIPELINES]
VARIANTS = ("stock", "twin", "face")
PARENTS = {cls: getattr(diffusers, cls.__name__.removeprefix("FACT")) for cls in FACT_PIPELINES}  # by name


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def pictures(cls) -> dict:
    """What each class takes besides the prompt, at SIZE px."""
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 255
    control = Image.fromarray(((rng.random((SIZE, SIZE, 3)) > 0.7) * 255).astype(np.uint8))
    parent = PARENTS[cls].__name__
    out = {}
    if "Img2Img" in parent or "Inpaint" in parent:
        out["image"] = init
    if "Inpaint" in parent:
        out["mask_image"] = Image.fromarray(mask)
    if "ControlNet" in parent:
        out["control_image" if "image" in out else "image"] = control
    return out


class Trio:
    """The stock parent, the twin without an adapter (the same modules) and the twin with FACT (its
    own copy of the same weights); `run(variant, ...)` calls one with the class's inputs."""

    def __init__(self, cls, face):
        self.cls, self.face = cls, face
        self.fact = cls.tiny()
        self.twin = cls.tiny()
        self.twin.unload_fact_adapter()
        self.stock = PARENTS[cls](**self.twin.components)
        self.stock.set_progress_bar_config(disable=True)
        self.inputs = pictures(cls)

    def pipe(self, variant: str):
        return {"stock": self.stock, "twin": self.twin, "face": self.fact}[variant]

    def run(self, variant: str, prompt=PROMPT, **overrides):
        args = {"num_inference_steps": 2, "height": SIZE, "width": SIZE, "guidance_scale": 5.0,
                "output_type": "np", "generator": generator(), **self.inputs, **overrides}
        if variant == "face":
            args.setdefault("face_tokens", self.face)
        return self.pipe(variant)(prompt, **args)


@pytest.fixture(scope="module", params=CLASSES)
def trio(request, face) -> Trio:
    return Trio(request.param, face)


def test_the_twins_call_shows_the_parents_signature_and_facts_keywords():
    for cls in FACT_PIPELINES:
        parent = PARENTS[cls]
        assert cls.diffusers_parent() is parent and issubclass(cls, parent)
        ours, theirs = inspect.signature(cls.__call__).parameters, inspect.signature(parent.__call__).parameters
        assert set(ours) >= set(theirs), cls.__name__
        assert [name for name in ours if name not in theirs] == list(FACT_KEYWORDS)
        assert all(ours[name].kind is inspect.Parameter.KEYWORD_ONLY for name in FACT_KEYWORDS)
        assert all(ours[name] == theirs[name] for name in theirs)  # kinds, defaults and annotations as stock
        assert inspect.signature(cls.__init__) == inspect.signature(parent.__init__)  # what from_pipe reads
        assert cls._callback_tensor_inputs == parent._callback_tensor_inputs
        doc = cls.__call__.__doc__
        assert doc.startswith(parent.__call__.__doc__[:200]) and "FACTPipelineOutput" in doc
        assert all(f"{name} (" in doc for name in FACT_KEYWORDS)
        assert doc.index("face_images (") < doc.index("Examples:")  # inside the Args section


def test_without_a_face_the_twin_is_the_stock_pipeline(trio):
    reference = trio.run("stock").images
    for variant in ("twin", "face"):
        np.testing.assert_array_equal(trio.run(variant, face_tokens=None).images, reference)
    np.testing.assert_array_equal(trio.run("face", fact_scale=0.0).images, reference)
    images, _ = trio.run("face", return_dict=False)  # the parent's tuple
    assert np.abs(images - reference).max() > 1e-3  # the face acts


@pytest.mark.parametrize("variant", VARIANTS)
def test_batches_images_per_prompt_and_guidance(trio, variant):
    """A batch's first image is the single image; num_images_per_prompt counts; guidance 1 (no
    unconditional branch) and above 1 give the same shapes."""
    batch = trio.run(variant, [PROMPT, "a portrait on a beach"], num_images_per_prompt=2,
                     generator=[generator(seed) for seed in range(4)]).images
    assert batch.shape == (4, SIZE, SIZE, 3)
    single = trio.run(variant).images
    np.testing.assert_allclose(batch[0], single[0], atol=1e-4)
    unguided = trio.run(variant, guidance_scale=1.0).images
    assert unguided.shape == single.shape == (1, SIZE, SIZE, 3) and np.abs(unguided - single).max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_callbacks_get_the_tensors_asked_for_and_may_change_them(trio, variant):
    seen = []

    def zero_at_the_end(pipe, step, timestep, tensors):
        assert set(tensors) == {"latents", "prompt_embeds"}
        seen.append(step)
        return {"latents": torch.zeros_like(tensors["latents"])} if step == pipe.num_timesteps - 1 else {}

    extra = {"fact_window": (0.0, 1.0)} if variant == "face" else {}  # FACT's own step callback in front
    out = trio.run(variant, output_type="latent", callback_on_step_end=zero_at_the_end,
                   callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"], **extra)
    assert seen == list(range(trio.pipe(variant).num_timesteps)) and float(out.images.abs().sum()) == 0.0
    assert set(trio.pipe(variant)._callback_tensor_inputs) >= {"latents", "prompt_embeds"}


def test_generator_none_follows_torchs_global_rng_as_the_parent(trio):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        stock = trio.run("stock", generator=None).images
        torch.manual_seed(3)
        plain = trio.run("face", generator=None, fact_scale=0.0)
        torch.manual_seed(3)
        first = trio.run("face", generator=None).images
        torch.manual_seed(3)
        second = trio.run("face", generator=None).images
    np.testing.assert_array_equal(plain.images, stock)
    np.testing.assert_array_equal(first, second)
    assert plain.metadata[0]["seed"] == 3


def test_attention_slicing_and_fused_qkv_change_nothing(trio):
    reference = trio.run("face").images
    pipe = trio.fact
    pipe.enable_attention_slicing(slice_size=1)
    try:
        np.testing.assert_allclose(trio.run("face").images, reference, atol=1e-4)
    finally:
        pipe.disable_attention_slicing()
    pipe.fuse_qkv_projections()
    try:
        np.testing.assert_allclose(trio.run("face").images, reference, atol=1e-3)
    finally:
        pipe.unfuse_qkv_projections()


def test_from_pipe_and_components_share_fact(trio):
    reference = trio.run("face").images
    for other in (trio.cls.from_pipe(trio.fact), trio.cls(**trio.fact.components)):
        assert other.fact_adapter is trio.fact.fact_adapter
        other.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(other(PROMPT, face_tokens=trio.face, num_inference_steps=2, height=SIZE,
                                            width=SIZE, guidance_scale=5.0, output_type="np", generator=generator(),
                                            **trio.inputs).images, reference)
    stock = PARENTS[trio.cls].from_pipe(trio.fact)  # the stock class on the same UNet: the base model
    stock.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(stock(PROMPT, num_inference_steps=2, height=SIZE, width=SIZE, guidance_scale=5.0,
                                        output_type="np", generator=generator(), **trio.inputs).images,
                                  trio.run("stock").images)


def test_save_pretrained_loads_as_stock_and_as_the_twin_with_the_base_unet(trio, tmp_path):
    from diffusers import DiffusionPipeline

    trio.fact.save_pretrained(tmp_path)  # saved while FACT is attached
    parent = PARENTS[trio.cls]
    assert json.loads((tmp_path / "model_index.json").read_text())["_class_name"] == parent.__name__
    base = trio.stock.unet.state_dict()
    for loader, expected in ((DiffusionPipeline, parent), (trio.cls, trio.cls)):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is expected
        if expected is trio.cls:
            assert loaded.fact_adapter is None  # FACT is not part of the folder: load it again
        unet = loaded.unet.state_dict()
        assert unet.keys() == base.keys() and all(torch.equal(unet[k], base[k]) for k in base)
    assert trio.fact.fact_adapter is not None  # saving left FACT loaded


def test_to_float16_moves_every_component_and_fact_follows(face):
    pipe = FACTStableDiffusionPipeline.tiny()
    pipe.to(dtype=torch.float16)
    dtypes = {name: module.dtype for name, module in pipe.components.items() if hasattr(module, "dtype")}
    assert set(dtypes.values()) == {torch.float16}, dtypes
    assert {p.dtype for p in pipe.fact_adapter.parameters()} == {torch.float16}
    assert {p.dtype for p in pipe.face_encoder.parameters()} == {torch.float32}  # the encoder stays float32


def test_model_cpu_offload_gives_the_same_images(face):
    pytest.importorskip("accelerate")
    pipe = FACTStableDiffusionImg2ImgPipeline.tiny()
    args = dict(image=pictures(FACTStableDiffusionImg2ImgPipeline)["image"], face_tokens=face, num_inference_steps=2,
                height=SIZE, width=SIZE, output_type="np")
    before = pipe(PROMPT, generator=generator(), **args).images
    try:
        pipe.enable_model_cpu_offload(device="cpu")  # hooks without an accelerator (see test_fact_pipelines)
    except (RuntimeError, ValueError) as err:
        pytest.skip(f"model CPU offload is not available on this CPU-only machine: {err}")
    np.testing.assert_array_equal(pipe(PROMPT, generator=generator(), **args).images, before)


def test_from_pipe_across_classes_shares_loading_and_unloading(face, tiny_model_files):
    """The issue's acceptance: an img2img pipeline from a text-to-image one generates with its FACT;
    unloading from either restores the UNet bit for bit for both; a new adapter replaces it for both."""
    from facefact.model.tiny import tiny_face_adapter

    pipe = FACTStableDiffusionPipeline.tiny()
    pipe.unload_fact_adapter()
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    _, adapter_file, encoder_file = tiny_model_files
    pipe.load_fact_adapter(adapter_file, encoder=encoder_file)
    pipe2 = FACTStableDiffusionImg2ImgPipeline.from_pipe(pipe)
    pipe2.set_progress_bar_config(disable=True)
    args = dict(image=pictures(FACTStableDiffusionImg2ImgPipeline)["image"], num_inference_steps=2, height=SIZE,
                width=SIZE, output_type="np", strength=1.0)
    faced = pipe2(PROMPT, face_tokens=face, generator=generator(), **args).images
    plain = pipe2(PROMPT, face_tokens=face, fact_scale=0.0, generator=generator(), **args).images
    assert np.abs(faced - plain).max() > 1e-3
    assert pipe2.face_encoder is pipe.face_encoder and pipe2._fact_models["adapter"]["id"] == "adapter.safetensors"
    for unloader in (pipe, pipe2):
        other = pipe2 if unloader is pipe else pipe
        unloader.unload_fact_adapter()
        assert other.fact_adapter is None and not hasattr(pipe.unet, "position_net")
        state = pipe.unet.state_dict()
        assert state.keys() == base.keys() and all(torch.equal(state[k], base[k]) for k in base)
        with pytest.raises(ConfigError, match="no FACT adapter"):
            other(PROMPT, face_tokens=face, **args)
        pipe.load_fact_adapter(adapter_file, encoder=encoder_file)
    replacement = tiny_face_adapter(pipe.unet, seed=9)
    pipe2.load_fact_adapter(replacement, encoder=pipe.face_encoder)  # loading in one replaces it for both
    assert pipe.fact_adapter is replacement is pipe2.fact_adapter
    analysis = object()  # any stand-in: only where it is kept is checked
    pipe2.face_analysis = analysis  # set in one, found by both
    assert pipe.face_analysis is analysis
    pipe.unload_fact_adapter()
    with pytest.raises(ConfigError, match="no FACT adapter"):
        pipe2.face_analysis = analysis


def test_ip_adapter_beside_fact(face):
    """diffusers' IP-Adapter (its processors and image projection) and FACT (the GLIGEN slots) on one UNet."""
    pipe = FACTStableDiffusionPipeline.tiny()
    unet = pipe.unet
    cross, hidden = unet.config.cross_attention_dim, 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        image_proj = {"proj.weight": torch.randn(cross * 4, hidden) * 0.1, "proj.bias": torch.zeros(cross * 4),
                      "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)}
        layers = {}
        cross_attention = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
        for key_id, name in enumerate(cross_attention):  # diffusers numbers them 1, 3, 5, ...
            width = unet.get_submodule(name.removesuffix(".processor")).inner_dim
            for part in ("to_k_ip", "to_v_ip"):
                layers[f"{2 * key_id + 1}.{part}.weight"] = torch.randn(width, cross) * 0.3
        embeds = torch.randn(2, 1, hidden)  # [negative, positive] image embeddings
    args = dict(num_inference_steps=2, height=SIZE, width=SIZE, output_type="np", guidance_scale=5.0)
    faced = pipe(PROMPT, face_tokens=face, generator=generator(), **args).images
    pipe.load_ip_adapter({"image_proj": image_proj, "ip_adapter": layers}, subfolder="", weight_name="",
                         image_encoder_folder=None)
    both = pipe(PROMPT, face_tokens=face, ip_adapter_image_embeds=[embeds], generator=generator(), **args).images
    ip_only = pipe(PROMPT, ip_adapter_image_embeds=[embeds], generator=generator(), **args).images
    assert np.abs(both - faced).max() > 1e-3 and np.abs(both - ip_only).max() > 1e-3  # both act
    pipe.set_ip_adapter_scale(0.0)
    np.testing.assert_allclose(pipe(PROMPT, face_tokens=face, ip_adapter_image_embeds=[embeds],
                                    generator=generator(), **args).images, faced, atol=1e-5)
    pipe.unload_ip_adapter()
    np.testing.assert_array_equal(pipe(PROMPT, face_tokens=face, generator=generator(), **args).images, faced)
