"""Caches of VAE latents and encoder tokens: written by prepare (atomically, resumable), used by
training (same result as without them, no VAE/encoder forward), refused when made by other weights."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from facefact.errors import ConfigError
from facefact.model.checkpoints import read_safetensors
from facefact.training import TrainConfig, train
from facefact.training.cache import LATENTS, TOKENS, cache_path, read_metadata
from facefact.training.dataset_format import load_index
from facefact.training.prepare import PrepareSettings, prepare_dataset


@pytest.fixture(scope="module")
def cached(tmp_path_factory, prepared, photo_folder):
    """The shared prepared set (128 px), copied, then given both caches by re-running prepare on it."""
    out = tmp_path_factory.mktemp("cached") / "set"
    shutil.copytree(prepared, out)
    summary = prepare_dataset(photo_folder, out, PrepareSettings(size=128), progress=False, cache_latents="tiny",
                              cache_encoder_tokens="tiny")
    assert summary["processed_now"] == 0  # the photos were done: only the caches were computed
    assert summary["caches"][LATENTS]["computed_now"] == 6 and summary["caches"][TOKENS]["computed_now"] == 6
    return out


def test_prepare_writes_caches_resumably(cached, photo_folder, tmp_path):
    info = json.loads((cached / "dataset.json").read_text())
    assert info["complete"] and set(info["caches"]) == {LATENTS, TOKENS}
    assert info["caches"][LATENTS]["model"] == "tiny" and info["caches"][LATENTS]["image_size"] == 128
    samples = load_index(cached)
    for s in samples:
        latents, meta = read_safetensors(cache_path(cached, s["id"], LATENTS))
        assert latents["mean"].shape == (4, 16, 16) and latents["std"].shape == (4, 16, 16)
        assert (latents["std"] > 0).all()
        tokens, _ = read_safetensors(cache_path(cached, s["id"], TOKENS))
        assert tokens["tokens"].shape[0] == 144 and tokens["tokens"].dtype == torch.float32
    assert not list(cached.rglob("*.tmp"))

    # resume: nothing to do; a lost file is redone alone, with the same content
    work = tmp_path / "set"
    shutil.copytree(cached, work)
    victim = cache_path(work, samples[0]["id"], LATENTS)
    before = read_safetensors(victim)[0]["mean"]
    victim.unlink()
    summary = prepare_dataset(photo_folder, work, PrepareSettings(size=128), progress=False, cache_latents="tiny")
    assert summary["caches"][LATENTS]["computed_now"] == 1
    assert torch.allclose(read_safetensors(victim)[0]["mean"], before, atol=1e-5)
    assert summary["caches"][TOKENS]["fingerprint"] == info["caches"][TOKENS]["fingerprint"]  # kept: still valid
    # a photo that changed is redone, and loses its stale cache files until they are rebuilt
    photo = sorted(photo_folder.glob("hopper/*.jpg"))[0]
    changed = tmp_path / "photos"
    shutil.copytree(photo_folder, changed)
    (changed / "hopper" / photo.name).write_bytes(photo.read_bytes() + b"\0")
    summary = prepare_dataset(changed, work, PrepareSettings(size=128), progress=False)
    assert "caches" not in summary or not summary["caches"]
    assert "caches" not in json.loads((work / "dataset.json").read_text()) or \
        not json.loads((work / "dataset.json").read_text())["caches"]


def _run(tmp_path, name, data, **extra):
    settings = dict(max_steps=3, seed=4, learning_rate=1e-3, face_drop_prob=0.5, progress=False,
                    checkpoint_every=1000, log_every=1, base_model="tiny", encoder="tiny")
    return train(TrainConfig(data=str(data), output_dir=str(tmp_path / name), **{**settings, **extra}))


def test_training_from_caches_equals_training_without(tmp_path, cached, monkeypatch):
    plain = _run(tmp_path, "plain", cached, use_cache=False)

    # with the caches, neither the VAE encoder nor the face encoder runs
    from diffusers import AutoencoderKL

    from facefact.model import TransFaceEncoder

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached model was run")

    monkeypatch.setattr(AutoencoderKL, "encode", must_not_run)
    monkeypatch.setattr(TransFaceEncoder, "forward", must_not_run)
    from_cache = _run(tmp_path, "cache", cached)
    monkeypatch.undo()

    assert [r["mse"] for r in plain.history] == pytest.approx([r["mse"] for r in from_cache.history], rel=1e-5)
    a, b = read_safetensors(plain.adapter_path)[0], read_safetensors(from_cache.adapter_path)[0]
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst


def test_cache_of_other_weights_is_refused(tmp_path, cached):
    from facefact.model.tiny import tiny_encoder
    from facefact.pipelines.tiny import save_tiny_sd_pipeline

    other_encoder = tmp_path / "other_transface.pt"
    torch.save(tiny_encoder(seed=7).state_dict(), other_encoder)
    with pytest.raises(ConfigError, match="encoder-token cache .* was made with encoder 'tiny'") as err:
        _run(tmp_path, "a", cached, encoder=str(other_encoder))
    assert "--cache-encoder-tokens" in str(err.value) and "use_cache: false" in str(err.value)

    other_base = save_tiny_sd_pipeline(tmp_path / "sd15_other", seed=3)
    with pytest.raises(ConfigError, match="latent cache .* was made with base model 'tiny'") as err:
        _run(tmp_path, "b", cached, base_model=str(other_base))
    assert "--cache-latents --base-model" in str(err.value)

    with pytest.raises(ConfigError, match="for 128 px images, but resolution is 64"):
        _run(tmp_path, "c", cached, resolution=64)

    # a cache file from other weights inside a set whose dataset.json says otherwise (interrupted rebuild)
    work = tmp_path / "mixed"
    shutil.copytree(cached, work)
    sid = load_index(work)[0]["id"]
    victim = cache_path(work, sid, LATENTS)
    tensors, meta = read_safetensors(victim)
    from safetensors.torch import save_file

    save_file(tensors, str(victim), metadata={**read_metadata(victim), "fingerprint": "0" * 16})
    from facefact.errors import DatasetError

    with pytest.raises(DatasetError, match="made by other weights"):
        _run(tmp_path, "d", work, max_steps=6)  # one pass over the 6 samples


def test_cli_prepare_cache_flags(tmp_path, prepared, photo_folder, capsys):
    from facefact.cli.main import main

    shutil.copytree(prepared, tmp_path / "set")
    assert main(["prepare", str(photo_folder), "--out", str(tmp_path / "set"), "--size", "128",
                 "--cache-encoder-tokens", "--encoder", "tiny", "--quiet"]) == 0
    assert '"computed_now": 6' in capsys.readouterr().out
    assert set(json.loads((tmp_path / "set" / "dataset.json").read_text())["caches"]) == {TOKENS}
    assert main(["prepare", str(photo_folder), "--out", str(tmp_path / "o"), "--cache-latents", "--quiet"]) == 2
    assert "--base-model" in capsys.readouterr().err
    assert main(["prepare", str(photo_folder), "--out", str(tmp_path / "o"), "--cache-encoder-tokens",
                 "--quiet"]) == 2
    assert "--encoder" in capsys.readouterr().err
