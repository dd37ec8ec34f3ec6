"""Identity controls, each proven by an exact property on the tiny models, SD1.5 and SDXL: combine modes,
the timestep window, per-level scales, regions for several people, saved identities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facefact.errors import CheckpointError, ConfigError
from facefact.model.regions import FaceRegions, box_masks
from facefact.pipelines.identity import load_identity, save_identity

SMALL = dict(num_inference_steps=3, output_type="np", height=64, width=64)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def pipe(request):
    """The tiny FACT text-to-image pipeline of each base family (shared by the module)."""
    from facefact.pipelines import FACTStableDiffusionPipeline, FACTStableDiffusionXLPipeline

    return {"sd15": FACTStableDiffusionPipeline, "sdxl": FACTStableDiffusionXLPipeline}[request.param].tiny()


def gen(pipe, **kwargs):
    return pipe("a portrait", generator=torch.Generator().manual_seed(3), **SMALL, **kwargs).images


# ---- several photos, combined on purpose ----------------------------------------------------------
def test_weighted_mean_of_one_photo_is_that_photo(pipe, astronaut):
    one = pipe.encode_faces([astronaut])
    for mode in ("mean", "weighted"):
        combined = pipe.encode_faces([astronaut], combine=mode)
        assert torch.equal(combined.tokens, one.tokens) and torch.equal(combined.null, one.null), mode
    assert pipe.encode_faces([astronaut], combine="weighted").weights == [1.0]


def test_two_photos_combine_as_stated(pipe, astronaut, grace_hopper):
    a, b = pipe.encode_faces([astronaut]).tokens, pipe.encode_faces([grace_hopper]).tokens
    concat = pipe.encode_faces([astronaut, grace_hopper])
    torch.testing.assert_close(concat.tokens, torch.cat([a, b], dim=1), rtol=1e-5, atol=1e-6)
    mean = pipe.encode_faces([astronaut, grace_hopper], combine="mean")
    torch.testing.assert_close(mean.tokens, (a + b) / 2, rtol=1e-5, atol=1e-6)
    weighted = pipe.encode_faces([astronaut, grace_hopper], combine="weighted")
    wa, wb = weighted.weights
    assert abs(wa + wb - 1) < 1e-9 and wa != wb  # the two photos differ in quality
    torch.testing.assert_close(weighted.tokens, wa * a + wb * b, rtol=1e-5, atol=1e-6)
    assert any("photo weights" in note for note in weighted.notes)
    out = pipe("a portrait", face_images=[astronaut, grace_hopper], face_combine="weighted",
               generator=torch.Generator().manual_seed(1), num_inference_steps=2, height=64, width=64)
    assert out.metadata[0]["photo_weights"] == [round(wa, 4), round(wb, 4)]
    assert out.metadata[0]["face_combine"] == "weighted"
    precomputed = pipe("a portrait", face_tokens=weighted, num_inference_steps=1, height=64, width=64)
    assert precomputed.metadata[0]["face_combine"] == "weighted"  # what the tokens are, not the call's default
    with pytest.raises(ConfigError, match="unknown"):
        pipe.encode_faces([astronaut], combine="median")


# ---- timestep window --------------------------------------------------------------------------------
def test_window_starting_at_the_end_is_the_base_model(pipe, astronaut):
    assert np.array_equal(gen(pipe, face_images=[astronaut], fact_window=(1.0, 1.0)), gen(pipe))


def test_whole_window_is_the_plain_call_and_a_late_start_is_in_between(pipe, astronaut):
    plain = gen(pipe, face_images=[astronaut])
    assert np.array_equal(gen(pipe, face_images=[astronaut], fact_window=(0.0, 1.0)), plain)
    late = gen(pipe, face_images=[astronaut], fact_window=(0.5, 1.0))
    assert not np.array_equal(late, plain) and not np.array_equal(late, gen(pipe))
    assert pipe.fact_adapter.scale == 0.5  # the request's switching is undone


def test_window_keeps_the_users_own_callback(pipe, astronaut):
    steps = []

    def mine(p, step, timestep, kwargs):
        steps.append(step)
        return kwargs
    gen(pipe, face_images=[astronaut], fact_window=(0.3, 1.0), callback_on_step_end=mine)
    assert steps == list(range(len(steps))) and len(steps) >= 3


@pytest.mark.parametrize("window", [(0.6, 0.2), (0.5, 0.5), (-0.1, 1.0), (0.0, float("nan")), "early"])
def test_bad_windows_are_refused(pipe, astronaut, window):
    with pytest.raises(ConfigError, match="fact_window"):
        gen(pipe, face_images=[astronaut], fact_window=window)


# ---- per-level strength ---------------------------------------------------------------------------
def test_per_level_scales_all_equal_to_s_are_the_scalar(pipe, astronaut):
    scalar = gen(pipe, face_images=[astronaut], fact_scale=0.7)
    levels = gen(pipe, face_images=[astronaut], fact_scale={"down": 0.7, "mid": 0.7, "up": 0.7})
    assert np.array_equal(levels, scalar)
    assert not np.array_equal(gen(pipe, face_images=[astronaut], fact_scale={"up": 0.7}), scalar)


# ---- several people: regions ------------------------------------------------------------------------
def test_inside_region_a_the_adapter_ignores_identity_b(pipe, astronaut, grace_hopper):
    adapter = pipe.fact_adapter
    fuser = adapter.fuser("up_blocks.1.attentions.0.transformer_blocks.0")  # 8x8 tokens in the tiny UNet
    a = pipe.encode_faces([astronaut]).tokens
    b, b2 = pipe.encode_faces([grace_hopper]).tokens, pipe.encode_faces([astronaut], combine="mean").tokens * -1
    regions = FaceRegions(box_masks([(0, 0, 0.5, 1), (0.5, 0, 1, 1)], (8, 8)), [(0, 16), (16, 32)])
    hidden = torch.randn(2, 64, fuser.block_dim, generator=torch.Generator().manual_seed(0))
    fuser.scale = 1.0
    with torch.no_grad():
        first = fuser(hidden, (torch.cat([a, b], 1), regions))
        second = fuser(hidden, (torch.cat([a, b2], 1), regions))
    left = box_masks([(0, 0, 0.5, 1)], (8, 8))[0].flatten().bool()
    assert torch.equal(first[:, left], second[:, left])            # region A: identity B changes nothing
    assert not torch.equal(first[:, ~left], second[:, ~left])      # region B: it does
    adapter.set_scale(adapter.scale)


def test_outside_every_region_nothing_changes(pipe, astronaut):
    fuser = pipe.fact_adapter.fuser("up_blocks.1.attentions.0.transformer_blocks.0")
    a = pipe.encode_faces([astronaut]).tokens
    regions = FaceRegions(box_masks([(0, 0, 0.5, 0.5)], (8, 8)), [(0, 16)])
    hidden = torch.randn(1, 64, fuser.block_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = fuser(hidden, (a, regions))
    inside = box_masks([(0, 0, 0.5, 0.5)], (8, 8))[0].flatten().bool()
    assert torch.equal(out[:, ~inside], hidden[:, ~inside]) and not torch.equal(out[:, inside], hidden[:, inside])


def test_region_masks_are_decided_on_the_cpu_and_moved_once():
    """Per layer, the attention mask is built where the region masks live (the CPU) and only the
    result moves to the UNet's device: no device -> host wait inside the denoising loop on a GPU.
    The meta device stands in for the GPU here - a decision made there would fail (it holds no values)."""
    regions = FaceRegions(box_masks([(0, 0, 0.5, 1), (0.5, 0, 1, 1)], (8, 8)), [(0, 16), (16, 32)])
    mask, inside = regions.layer(64, 32, torch.device("meta"))
    assert mask.device.type == "meta" and tuple(mask.shape) == (64, 96) and inside is None  # every cell in one
    on_cpu, _ = regions.layer(64, 32, torch.device("cpu"))
    assert on_cpu[0, 64:80].all() and not on_cpu[0, 80:].any()  # token 0 (left half): identity 1's tokens only
    assert on_cpu[4, 80:].all() and not on_cpu[4, 64:80].any()  # token 4 (right half): identity 2's only
    assert regions.layer(64, 32, torch.device("meta"))[0] is mask  # cached per layer size and device


def test_one_region_covering_the_image_is_the_plain_call(pipe, astronaut):
    assert np.array_equal(gen(pipe, face_images=[[astronaut]], face_regions=[(0, 0, 1, 1)]),
                          gen(pipe, face_images=[astronaut]))


def test_two_people_in_one_image(pipe, astronaut, grace_hopper):
    out = pipe("two people", face_images=[astronaut, [grace_hopper]], face_regions=[(0, 0, .5, 1), (.5, 0, 1, 1)],
               generator=torch.Generator().manual_seed(3), num_inference_steps=2, height=64, width=64)
    assert out.metadata[0]["face_regions"] == [[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]]
    assert out.metadata[0]["num_reference_photos"] == 2


@pytest.mark.parametrize("regions,match", [
    ([(0, 0, 0.6, 1), (0.5, 0, 1, 1)], "overlap"),
    ([(0, 0, 0.5, 1), (0.5, 0, 0.5, 1)], "empty"),
    ([(0, 0, 0.5, 1), (0.5, 0, 1.5, 1)], r"outside \[0, 1\]"),
    ([(0, 0, 0.5, 1)], "1 face regions but 2 identities"),
    ([(0, 0, 0.5, 1), (0.5, 0, 0.51, 0.05)], "covers no latent cell"),
])
def test_bad_regions_are_refused(pipe, astronaut, grace_hopper, regions, match):
    with pytest.raises(ConfigError, match=match):
        gen(pipe, face_images=[astronaut, grace_hopper], face_regions=regions)


# ---- saved identities -------------------------------------------------------------------------------
def test_saved_identity_reproduces_the_photo_path_and_refuses_another_adapter(pipe, astronaut, tmp_path):
    from facefact.model.tiny import tiny_face_adapter

    path = save_identity(pipe, pipe.encode_faces([astronaut]), tmp_path / "alice.fid")
    assert np.array_equal(gen(pipe, face_tokens=path), gen(pipe, face_images=[astronaut]))

    other = type(pipe).tiny()
    other.load_fact_adapter(tiny_face_adapter(other.unet, seed=9), encoder=other.face_encoder)
    with pytest.raises(CheckpointError, match="another adapter"):
        load_identity(other, path)
    with pytest.raises(ConfigError, match=r"\.fid"):
        save_identity(pipe, pipe.encode_faces([astronaut]), tmp_path / "alice.safetensors")
    (tmp_path / "junk.fid").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_identity(pipe, tmp_path / "junk.fid")
