"""Saved identities checked past their format tag (issue 19): the resampler's bound on token length
is a true bound, tokens the adapter made pass it, forged ones are refused by the library too."""
from __future__ import annotations

import pytest
import torch

from facefact.errors import CheckpointError, ConfigError
from facefact.pipelines.face_tokens import face_tokens_problem
from facefact.pipelines.identity import load_identity, read_identity, save_identity


def test_max_output_norm_bounds_every_token_whatever_the_input():
    from facefact.model.resampler import Resampler, ResamplerConfig

    config = ResamplerConfig(dim=32, depth=1, dim_head=8, heads=4, num_queries=4, embedding_dim=16, output_dim=24,
                             ff_mult=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        resampler = Resampler(config)
        with torch.no_grad():
            resampler.norm_out.weight.uniform_(-3, 3)
            resampler.norm_out.bias.uniform_(-2, 2)
            inputs = torch.cat([torch.randn(8, 5, 16) * scale for scale in (0, 1e-3, 1, 1e3, 1e6)])
            longest = float(resampler(inputs).norm(dim=-1).max())
    bound = resampler.max_output_norm()
    assert longest <= bound
    assert longest > 0.5 * bound  # a bound, not a number far above anything the resampler makes


def test_the_adapters_own_tokens_pass_and_forged_ones_do_not(pipe, astronaut):
    faces = pipe.encode_faces([astronaut, astronaut], combine="mean")
    adapter, width = pipe._require_fact(), pipe.unet.config.cross_attention_dim
    assert face_tokens_problem(faces.tokens, adapter, width, 2, "mean") is None
    assert face_tokens_problem(faces.null, adapter, width, 2, "mean") is None
    assert face_tokens_problem(faces.tokens * 0.999, adapter, width) is None
    assert "long" in face_tokens_problem(faces.tokens * 1e30, adapter, width)
    assert "wide" in face_tokens_problem(faces.tokens[..., :7], adapter, width)
    assert "17 face tokens" in face_tokens_problem(torch.zeros(1, 17, width), adapter, width)
    assert "32 face tokens" in face_tokens_problem(torch.cat([faces.tokens] * 2, 1), adapter, width, 1, "concat")
    with pytest.raises(ConfigError, match="face_tokens: .*long"):  # tokens handed to the call directly
        pipe("a portrait", face_tokens=faces.tokens * 1e30, num_inference_steps=1, height=64, width=64)


def _rewrite(path, out, tensors=None, **metadata):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    save_file({**load_file(path), **(tensors or {})}, str(out), metadata={**meta, **metadata})
    return out


def test_forged_identities_are_refused_by_the_library(pipe, astronaut, tmp_path):
    good = save_identity(pipe, pipe.encode_faces([astronaut]), tmp_path / "good.fid")
    assert read_identity(good).summary()["tokens"] == [1, 16, pipe.unet.config.cross_attention_dim]
    tokens = read_identity(good).tokens
    for forged, match in [
        (_rewrite(good, tmp_path / "a.fid", num_photos="abc"), "num_photos 'abc'"),
        (_rewrite(good, tmp_path / "b.fid", weights="{"), "not valid JSON"),
        (_rewrite(good, tmp_path / "c.fid", combine="concat\x1b[2J"), "combine mode"),
        (_rewrite(good, tmp_path / "d.fid", {"tokens": tokens[:, :, :7].contiguous()}), "differ in shape"),
    ]:
        with pytest.raises(CheckpointError, match=match) as refused:
            load_identity(pipe, forged)
        assert forged.name in str(refused.value) and refused.value.hint
    huge = _rewrite(good, tmp_path / "huge.fid", {"tokens": tokens * 1e30})
    read_identity(huge)  # by itself it is a well-formed file: only the models tell its tokens are impossible
    with pytest.raises(CheckpointError, match="do not fit the loaded models"):
        load_identity(pipe, huge)


def test_a_fifo_is_named_not_missing(pipe, tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.fid")
    with pytest.raises(CheckpointError, match="FIFO"):
        load_identity(pipe, tmp_path / "pipe.fid")
    with pytest.raises(ConfigError, match="not found"):
        read_identity(tmp_path / "missing.fid")
