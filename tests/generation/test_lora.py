"""LoRA beside the face adapter: `facefact generate --lora FILE[:WEIGHT]` and
the FACT pipelines' load_lora_weights / set_adapters (diffusers' own), with provenance and clear errors. Tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facefact.errors import ConfigError
from facefact.cli.extras import parse_lora
from facefact.pipelines.hashing import file_sha256
from gen_cli_checks import fails as check_fails

pytest.importorskip("peft")

PROMPT = "a portrait in a garden"


def fast(seed: int = 7) -> dict:
    return dict(num_inference_steps=2, height=64, width=64, generator=torch.Generator("cpu").manual_seed(seed))


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def generate(cli, face, out, *extra):
    code, stdout, err = cli("generate", "--model", "tiny", "--face", face, "--prompt", PROMPT, "-n", 1, "--seed", 7,
                            "--steps", 2, "--size", 64, "--out", out, "--json", *extra)
    assert code == 0, err
    summary = json.loads(stdout)
    return Path(summary["images"][0]), summary["metadata"][0]


def fails(result, *phrases):
    return check_fails(result, *phrases, max_lines=2)  # the message and its hint, not diffusers' logs


@pytest.fixture(scope="module")
def other_unet_lora(tiny_lora):
    """A well-formed LoRA, but for a UNet of other widths (like an SDXL LoRA on an SD1.5 model)."""
    from diffusers import UNet2DConditionModel

    other = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32, 32, 32),
        norm_num_groups=8, attention_head_dim=8, cross_attention_dim=48,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    return tiny_lora(unet=other)


@pytest.mark.parametrize("spec, path, weight", [
    ("style.safetensors", "style.safetensors", 1.0),
    ("style.safetensors:0.8", "style.safetensors", 0.8),
    ("style.safetensors:-0.5", "style.safetensors", -0.5),
    ("loras/style.safetensors:2", "loras/style.safetensors", 2.0),
    (r"C:\loras\style.safetensors", r"C:\loras\style.safetensors", 1.0),       # a Windows drive is no weight
    (r"C:\loras\style.safetensors:0.7", r"C:\loras\style.safetensors", 0.7),
    ("runs/12:30/style.safetensors", "runs/12:30/style.safetensors", 1.0),     # a colon inside the path
    ("https:/host/x", "https:/host/x", 1.0),
])
def test_parse_lora_spec(spec, path, weight):
    assert parse_lora(spec) == (Path(path), weight)


def test_parse_lora_spec_existing_file_with_a_colon_is_a_file(tmp_path):
    odd = tmp_path / "style:2"
    odd.write_bytes(b"x")
    assert parse_lora(str(odd)) == (odd, 1.0)
    assert parse_lora(f"{odd}:0.5") == (odd, 0.5)


@pytest.mark.parametrize("spec, phrase", [
    ("style.safetensors:strong", "the weight 'strong' is not a number"),
    ("style.safetensors:", "the weight '' is not a number"),
    ("style.safetensors:nan", "finite number"),
    ("style.safetensors:inf", "finite number"),
])
def test_parse_lora_spec_bad_weights(spec, phrase):
    with pytest.raises(ConfigError, match=phrase) as error:
        parse_lora(spec)
    assert "--lora" in str(error.value) and error.value.hint


def test_lora_changes_the_image_weight_zero_does_not(cli, astronaut, tiny_lora, tmp_path):
    lora = tiny_lora()
    plain, plain_meta = generate(cli, astronaut, tmp_path / "plain")
    styled, meta = generate(cli, astronaut, tmp_path / "lora", "--lora", lora)
    zero, zero_meta = generate(cli, astronaut, tmp_path / "zero", "--lora", f"{lora}:0")
    assert np.abs(pixels(styled) - pixels(plain)).max() > 10          # the LoRA acts
    # Weight 0: peft adds lora_B(lora_A(x)) * 0, i.e. exact zeros, to every projection: the same pixels.
    np.testing.assert_array_equal(pixels(zero), pixels(plain))

    assert "loras" not in plain_meta["models"]
    digest = file_sha256(lora)[:16]
    assert meta["models"]["loras"] == [{"id": lora.name, "adapter_name": "lora1", "sha256": digest, "weight": 1.0}]
    assert zero_meta["models"]["loras"] == [{"id": lora.name, "adapter_name": "lora1", "sha256": digest,
                                             "weight": 0.0}]
    with Image.open(styled) as image:
        text = " ".join(str(v) for v in image.info.values())
    assert str(lora.parent) not in text  # the file's name, never where it is on this machine


def test_two_loras_each_at_its_weight(cli, astronaut, tiny_lora, tmp_path):
    first, second = tiny_lora(seed=3), tiny_lora(seed=4)
    only_first, _ = generate(cli, astronaut, tmp_path / "one", "--lora", first)
    both, meta = generate(cli, astronaut, tmp_path / "two", "--lora", first, "--lora", f"{second}:0.5")
    assert [(e["sha256"], e["weight"]) for e in meta["models"]["loras"]] == [
        (file_sha256(first)[:16], 1.0), (file_sha256(second)[:16], 0.5)]
    assert np.abs(pixels(both) - pixels(only_first)).max() > 0  # both are active, not only the last loaded
    second_off, _ = generate(cli, astronaut, tmp_path / "off", "--lora", first, "--lora", f"{second}:0")
    np.testing.assert_array_equal(pixels(second_off), pixels(only_first))


def test_pipeline_records_loras_and_their_weights(face, tiny_lora):
    from facefact.pipelines import FACTStableDiffusionPipeline

    pipe = FACTStableDiffusionPipeline.tiny()
    lora = tiny_lora()
    pipe.load_lora_weights(lora)  # diffusers' signature; facefact names it lora1
    first = pipe(PROMPT, face_tokens=face, **fast())
    assert first.metadata[0]["models"]["loras"] == [{"id": lora.name, "adapter_name": "lora1", "weight": 1.0}]
    assert first.model_files["lora:lora1"] == lora  # hashed where images are written, not when loaded
    assert first.metadata_with_hashes()[0]["models"]["loras"][0]["sha256"] == file_sha256(lora)[:16]
    pipe.set_adapters("lora1", 0.25)
    later = pipe(PROMPT, face_tokens=face, **fast())
    assert later.metadata[0]["models"]["loras"][0]["weight"] == 0.25
    assert first.metadata[0]["models"]["loras"][0]["weight"] == 1.0  # earlier metadata is not rewritten
    with pytest.raises(ConfigError, match="no LoRA named style"):
        pipe.set_adapters(["style"], [1.0])
    with pytest.raises(ConfigError, match="loaded already"):
        pipe.load_lora_weights(lora, adapter_name="lora1")
    pipe.unload_lora_weights()
    after = pipe(PROMPT, face_tokens=face, **fast())
    assert "loras" not in after.metadata[0]["models"] and not any(k.startswith("lora:") for k in after.model_files)


def test_a_sibling_pipeline_lists_the_lora_that_acts_in_its_images(face, tiny_lora):
    """The LoRA lives in the shared UNet, so does its record: a from_pipe sibling's metadata lists it,
    a weight set from either pipeline is the one both report, unloading from either drops it for both."""
    from facefact.pipelines import FACTStableDiffusionImg2ImgPipeline, FACTStableDiffusionPipeline

    pipe = FACTStableDiffusionPipeline.tiny()
    sibling = FACTStableDiffusionPipeline.from_pipe(pipe)
    img2img = FACTStableDiffusionImg2ImgPipeline.from_pipe(pipe)
    plain = np.asarray(sibling(PROMPT, face_tokens=face, **fast()).images[0], dtype=np.int16)
    lora = tiny_lora()
    pipe.load_lora_weights(lora, adapter_name="style")
    styled = sibling(PROMPT, face_tokens=face, **fast())
    assert np.abs(np.asarray(styled.images[0], dtype=np.int16) - plain).max() > 10  # it acts in the sibling...
    assert styled.metadata[0]["models"]["loras"] == [{"id": lora.name, "adapter_name": "style", "weight": 1.0}]
    assert styled.model_files["lora:style"] == lora  # ...and is named and hashed there
    sibling.set_adapters("style", 0.4)
    for one in (pipe, img2img):
        assert one.lora_provenance() == [{"id": lora.name, "adapter_name": "style", "weight": 0.4}]
    img2img.unload_lora_weights()
    again = pipe(PROMPT, face_tokens=face, **fast())
    assert "loras" not in again.metadata[0]["models"] and sibling.lora_provenance() == []
    np.testing.assert_array_equal(np.asarray(again.images[0], dtype=np.int16), plain)


def test_a_fused_lora_is_listed_as_fused_while_its_weights_act(face, tiny_lora):
    from facefact.pipelines import FACTStableDiffusionPipeline

    pipe = FACTStableDiffusionPipeline.tiny()
    sibling = FACTStableDiffusionPipeline.from_pipe(pipe)
    plain = np.asarray(pipe(PROMPT, face_tokens=face, **fast()).images[0], dtype=np.int16)
    lora = tiny_lora()
    pipe.load_lora_weights(lora, adapter_name="style")
    pipe.fuse_lora(lora_scale=0.5)
    fused = [{"id": lora.name, "adapter_name": "style", "weight": 0.5, "fused": True}]
    assert sibling.lora_provenance() == fused
    pipe.unfuse_lora()
    assert sibling.lora_provenance() == [{"id": lora.name, "adapter_name": "style", "weight": 1.0}]
    sibling.fuse_lora(lora_scale=0.5)
    sibling.unload_lora_weights()  # the fused weights stay in the UNet: so does their record
    after = pipe(PROMPT, face_tokens=face, **fast())
    assert after.metadata[0]["models"]["loras"] == fused and after.model_files["lora:style"] == lora
    assert np.abs(np.asarray(after.images[0], dtype=np.int16) - plain).max() > 5


def test_lora_weight_zero_gives_the_pixels_without_it(face, tiny_lora):
    from facefact.pipelines import FACTStableDiffusionPipeline

    pipe = FACTStableDiffusionPipeline.tiny()
    plain = np.asarray(pipe(PROMPT, face_tokens=face, **fast()).images[0], dtype=np.int16)
    pipe.load_lora_weights(tiny_lora(), adapter_name="style")
    styled = np.asarray(pipe(PROMPT, face_tokens=face, **fast()).images[0], dtype=np.int16)
    pipe.set_adapters("style", 0.0)
    zero = np.asarray(pipe(PROMPT, face_tokens=face, **fast()).images[0], dtype=np.int16)
    assert np.abs(styled - plain).max() > 10
    np.testing.assert_array_equal(zero, plain)


def test_lora_folder_with_weight_name_records_that_file_only(face, tiny_lora, tmp_path):
    """diffusers takes a folder plus weight_name=: the provenance is that one file (its name and its
    hash), not every .safetensors in the folder, and not the folder's name."""
    import shutil

    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.pipelines.lora import describe_lora

    folder = tmp_path / "my-loras"
    folder.mkdir()
    style = shutil.copy(tiny_lora(seed=3), folder / "style.safetensors")
    shutil.copy(tiny_lora(seed=4), folder / "another.safetensors")  # first in name order
    expected = {"id": "style.safetensors", "sha256": file_sha256(style)[:16]}
    assert describe_lora(folder, weight_name="style.safetensors") == expected
    pipe = FACTStableDiffusionPipeline.tiny()
    pipe.load_lora_weights(folder, weight_name="style.safetensors")
    out = pipe(PROMPT, face_tokens=face, **fast())
    assert out.metadata_with_hashes()[0]["models"]["loras"] == [{**expected, "adapter_name": "lora1", "weight": 1.0}]
    assert out.metadata[0]["models"]["loras"] == [{"id": "style.safetensors", "adapter_name": "lora1", "weight": 1.0}]
    assert "my-loras" not in json.dumps(out.metadata_with_hashes()[0])


def test_lora_file_errors(cli, astronaut, tiny_model_files, other_unet_lora, tmp_path):
    _, fact_adapter, _ = tiny_model_files
    text = tmp_path / "notes.safetensors"
    text.write_text("not weights")
    from safetensors.torch import save_file

    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"foo.bar.lora_A.weight": torch.zeros(4, 8), "foo.bar.lora_B.weight": torch.zeros(8, 4)}, unrelated)

    def run(*lora):
        return cli("generate", "--model", "tiny", "--face", astronaut, "--prompt", PROMPT, "--steps", 1,
                   "--size", 64, "--quiet", "--out", tmp_path / "out", *[a for x in lora for a in ("--lora", x)])

    fails(run(tmp_path / "missing.safetensors"), "LoRA file not found", "missing.safetensors", "hint:")
    fails(run(tmp_path), "is a folder", "pass the LoRA file inside it")
    fails(run(f"{text}:lots"), "the weight 'lots' is not a number")
    fails(run(fact_adapter), "adapter.safetensors is not a LoRA for this model", "Stable Diffusion 1.5")
    fails(run(other_unet_lora), "is not a LoRA for this model", "size mismatch")
    fails(run(text), "notes.safetensors is not a LoRA for this model")
    fails(run(unrelated), "unrelated.safetensors holds no LoRA weights for this model")
    assert not (tmp_path / "out").exists()


def test_lora_without_peft_says_what_to_install(cli, astronaut, tiny_lora, monkeypatch, tmp_path):
    import diffusers.utils

    import facefact.pipelines.build as build

    monkeypatch.setattr(diffusers.utils, "USE_PEFT_BACKEND", False)
    monkeypatch.setattr(build, "load_fact_pipeline", lambda *a, **k: pytest.fail("loaded before the check"))
    err = fails(cli("generate", "--model", "tiny", "--face", astronaut, "--prompt", PROMPT, "--lora", tiny_lora(),
                    "--out", tmp_path), "needs the peft package", "pip install -U peft")
    assert "diffusers" in err
