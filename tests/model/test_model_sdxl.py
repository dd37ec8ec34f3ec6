"""FACT on SDXL: block layouts ("first" / "all") on SDXL's real UNet layout and the tiny one, the base
family and layout a file records, and the refusal of an adapter made for the other family."""
from __future__ import annotations

import copy

import pytest
import torch

from facefact.errors import CheckpointError
from facefact.model import FaceAdapter, cross_attention_blocks, layout_blocks
from facefact.model.checkpoints import read_safetensors, save_adapter
from facefact.model.layouts import adapter_base_family
from facefact.model.tiny import tiny_face_adapter

from .conftest import encoder_tokens, make_unet, make_xl_unet, run

PARITY_ADAPTER = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "parity" / "fact_tiny_a"


def real_unet(family: str):
    """The UNet of SD1.5 / SDXL base 1.0 (their unet/config.json), on the meta device: layout only."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    common = dict(layers_per_block=2, in_channels=4, out_channels=4)
    if family == "sd15":
        config = dict(block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
                      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    else:
        config = dict(block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                      transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
                      addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=2816)
    with init_empty_weights():
        return UNet2DConditionModel(**common, **config)


@pytest.mark.parametrize("family, first, every", [("sd15", 16, 16), ("sdxl", 11, 70)])
def test_layouts_on_the_real_unets(family, first, every):
    unet = real_unet(family)
    assert (len(layout_blocks(unet, "first")), len(layout_blocks(unet, "all"))) == (first, every)
    assert len(cross_attention_blocks(unet)) == every
    # convert labels the real layouts with their family (2048 / 768-wide face tokens)
    width = unet.config.cross_attention_dim
    assert adapter_base_family(list(layout_blocks(unet, "first")), width) == family
    assert adapter_base_family(list(layout_blocks(unet, "all")), width) == family


def test_convert_labels_refuse_a_width_of_the_other_family():
    sdxl_paths = list(layout_blocks(real_unet("sdxl"), "first"))
    with pytest.raises(CheckpointError, match="768 wide, the width of Stable Diffusion 1.5.*SDXL layout"):
        adapter_base_family(sdxl_paths, 768)
    assert adapter_base_family(sdxl_paths, 64) == "sdxl-layout-64"


@pytest.mark.parametrize("layout, blocks", [("first", 11), ("all", 17)])
def test_an_sdxl_file_records_family_layout_and_width_and_loads_as_it_was_saved(tmp_path, layout, blocks):
    unet = make_xl_unet()
    adapter = tiny_face_adapter(unet, layout=layout)
    assert (adapter.family, adapter.layout, len(adapter.block_paths)) == ("sdxl", layout, blocks)
    path = save_adapter(adapter, tmp_path / "xl.safetensors")
    meta = read_safetensors(path)[1]
    assert (meta["base_family"], meta["block_layout"], meta["cross_attention_dim"], meta["num_blocks"]) == (
        "sdxl", layout, "64", str(blocks))
    loaded = FaceAdapter.from_checkpoint(path)
    assert (loaded.family, loaded.layout, set(loaded.block_paths)) == ("sdxl", layout, set(adapter.block_paths))
    loaded.attach(unet)
    loaded.detach()


def test_released_sd15_files_without_the_new_metadata_load_as_sd15():
    released = FaceAdapter.from_checkpoint(PARITY_ADAPTER / "adapter.ckpt")
    assert (released.family, released.layout, len(released.block_paths)) == ("sd15", "first", 16)


@pytest.mark.parametrize("adapter_family, base_family", [("sd15", "sdxl"), ("sdxl", "sd15")])
def test_an_adapter_for_the_other_family_is_refused_by_name_and_the_unet_is_untouched(
        tmp_path, adapter_family, base_family):
    makers = {"sd15": make_unet, "sdxl": make_xl_unet}
    path = save_adapter(tiny_face_adapter(makers[adapter_family]()), tmp_path / "adapter.safetensors")
    adapter = FaceAdapter.from_checkpoint(path)
    base = makers[base_family]()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    names = {"sd15": "Stable Diffusion 1.5", "sdxl": "SDXL"}
    with pytest.raises(CheckpointError) as refused:
        adapter.attach(base)
    message = str(refused.value)
    assert f"made for {names[adapter_family]} base models, but the base model is {names[base_family]}" in message
    assert not adapter.is_attached and not hasattr(base, "position_net")
    assert all(torch.equal(v, state[k]) for k, v in base.state_dict().items())


@pytest.mark.parametrize("entry, value, phrase", [
    ("base_family", "sdxl", "says base family 'sdxl'"),
    ("base_family", "flux", "'flux', which facefact does not know"),
    ("block_layout", "diagonal", "unknown FACT block layout 'diagonal'"),
    ("cross_attention_dim", "2048", "cross_attention_dim '2048'"),
])
def test_metadata_that_contradicts_the_tensors_is_refused(tmp_path, entry, value, phrase):
    from facefact.model.checkpoints import adapter_metadata, atomic_save_safetensors

    adapter = tiny_face_adapter(make_unet())
    meta = {**adapter_metadata(adapter), entry: value}
    path = atomic_save_safetensors(adapter.released_state_dict(), tmp_path / "bad.safetensors", meta)
    with pytest.raises(CheckpointError, match=phrase) as refused:
        FaceAdapter.from_checkpoint(path)
    assert refused.value.path == str(path)


def test_layout_all_acts_on_more_blocks_than_first_and_both_detach_exactly():
    unet = make_xl_unet()
    g = torch.Generator().manual_seed(5)
    inputs = (torch.randn(2, 4, 16, 16, generator=g), torch.tensor(500), torch.randn(2, 77, 64, generator=g))
    base = run(unet, inputs)
    state = copy.deepcopy(unet.state_dict())
    outputs = {}
    for layout in ("first", "all"):
        adapter = tiny_face_adapter(unet, seed=1, layout=layout)
        faces = adapter.face_tokens(encoder_tokens(1)).detach()
        adapter.attach(unet)
        try:
            outputs[layout] = run(unet, inputs, faces)
        finally:
            adapter.detach()
        assert torch.equal(run(unet, inputs), base)
        assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
        assert not any(hasattr(block, "fuser") for block in cross_attention_blocks(unet).values())
    assert not torch.allclose(outputs["first"], base) and not torch.allclose(outputs["all"], outputs["first"])
