"""End-to-end training runs on the tiny random models (CPU): learning, FAIR, exact resume, checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from facefact.errors import CheckpointError, ConfigError
from facefact.model import FaceAdapter
from facefact.model.checkpoints import read_safetensors, save_adapter
from facefact.training import TrainConfig, train

TINY = dict(base_model="tiny", encoder="tiny")  # random-weight models, named explicitly
FAST = dict(resolution=64, progress=False, checkpoint_every=1000, log_every=1, **TINY)


def _measure(adapter_path, prepared) -> tuple[float, float]:
    """(noise-prediction MSE, FAIR) on the whole (tiny) set at one fixed noise level and noise draw.
    FAIR = ||adapter increment outside the face|| / ||h outside the face||, averaged over layers."""
    from facefact.model.tiny import tiny_encoder
    from facefact.pipelines.tiny import tiny_sd_pipeline
    from facefact.training.data import FaceTrainingSet
    from facefact.training.fair import FairRegularizer

    pipe, encoder = tiny_sd_pipeline(), tiny_encoder()
    adapter = FaceAdapter.from_checkpoint(adapter_path).attach(pipe.unet)
    data = FaceTrainingSet(prepared, resolution=64, shuffle_prob_end=0.0, face_drop_prob=0.0)
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = pipe.vae.encode(batch["pixel_values"]).latent_dist.mean * pipe.vae.config.scaling_factor
        t = torch.full((len(data),), 500)
        ids = pipe.tokenizer(batch["caption"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        text, faces = pipe.text_encoder(ids)[0], adapter.resampler(encoder(batch["condition"]))
        mask = F.interpolate(batch["face_mask"], size=latents.shape[-2:], mode="area")
        noise = torch.randn(latents.shape, generator=generator)
        noisy = pipe.scheduler.add_noise(latents, noise, t)
        fair = FairRegularizer(adapter)
        with fair.measuring(mask):
            prediction = pipe.unet(noisy, t, encoder_hidden_states=text,
                                   cross_attention_kwargs={"gligen": {"objs": faces}}).sample
            return F.mse_loss(prediction, noise).item(), fair.loss().item()


@pytest.fixture(scope="module")
def opened_adapter(tmp_path_factory):
    """A 'trained-like' starting point (gates open), so there is an increment for FAIR to shrink."""
    from facefact.model.tiny import tiny_face_adapter
    from facefact.pipelines.tiny import tiny_unet

    path = tmp_path_factory.mktemp("init") / "adapter.safetensors"
    save_adapter(tiny_face_adapter(tiny_unet(), trained_like=True), path)
    return str(path)


def test_overfits_and_fair_keeps_the_increment_inside_the_face(tmp_path, prepared, opened_adapter):
    common = dict(data=str(prepared), init_adapter=opened_adapter, max_steps=30, learning_rate=3e-3, seed=1,
                  face_drop_prob=0.0, **FAST)
    with_fair = train(TrainConfig(output_dir=str(tmp_path / "fair"), fair_weight=1.0, **common))
    without = train(TrainConfig(output_dir=str(tmp_path / "plain"), fair_weight=0.0, **common))

    mse_before, fair_before = _measure(opened_adapter, prepared)
    mse_plain, fair_plain = _measure(without.adapter_path, prepared)
    mse_fair, fair_fair = _measure(with_fair.adapter_path, prepared)
    assert mse_plain < 0.9 * mse_before and mse_fair < 0.9 * mse_before  # it learns the handful of images
    fair = [row["fair"] for row in with_fair.history]
    assert sum(fair[-3:]) / 3 < 0.7 * sum(fair[:3]) / 3, fair  # FAIR falls while training
    assert fair_fair < 0.7 * fair_before and fair_fair < 0.8 * fair_plain  # less change outside the face
    log = (tmp_path / "fair" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,mse,fair") and len(log) == 31


def _weights(path):
    return read_safetensors(path)[0]


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, prepared):
    common = dict(data=str(prepared), max_steps=6, seed=5, learning_rate=1e-3, face_drop_prob=0.5,
                  text_drop_prob=0.3, shuffle_ramp_steps=4, gradient_accumulation_steps=2, lr_schedule="cosine",
                  lr_warmup_steps=2, **{**FAST, "checkpoint_every": 2}, keep_checkpoints=2)
    full = train(TrainConfig(output_dir=str(tmp_path / "full"), **common))
    first = train(TrainConfig(output_dir=str(tmp_path / "split"), stop_after_steps=3, **common))
    assert first.adapter_path is None and first.step == 3
    second = train(TrainConfig(output_dir=str(tmp_path / "split"), resume="latest", **common))
    assert second.step == 6 and len(second.history) == 3
    a, b = _weights(full.adapter_path), _weights(second.adapter_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["mse"] for r in full.history[3:]] == [r["mse"] for r in second.history]
    kept = sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir())
    assert kept == ["step-00000004", "step-00000006"]  # keep_checkpoints=2
    state = torch.load(tmp_path / "split" / "checkpoints" / "step-00000006" / "training_state.pt", weights_only=True)
    assert state["step"] == 6
    log_steps = [line.split(",")[0] for line in (tmp_path / "split" / "log.csv").read_text().splitlines()[1:]]
    assert log_steps == [str(i) for i in range(1, 7)]

    # the trained adapter loads as generation loads it, and changes the UNet's output when attached
    from facefact.pipelines.tiny import tiny_unet

    unet, adapter = tiny_unet(), FaceAdapter.from_checkpoint(second.adapter_path)
    latents, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    hidden = torch.cat([text, adapter.null_face_tokens(1)], dim=1)
    with torch.no_grad():
        before = unet(latents, 10, encoder_hidden_states=text).sample
        adapter.attach(unet)
        after = unet(latents, 10, encoder_hidden_states=hidden).sample
        adapter.detach()
    assert not torch.allclose(before, after)


def test_killed_process_resumes_to_the_same_adapter(tmp_path, prepared):
    common = ["--data", str(prepared), "--max-steps", "5", "--seed", "2", "--resolution", "64", "--no-progress",
              "--learning-rate", "1e-3", "--model", "tiny"]
    reference = train(TrainConfig(data=str(prepared), output_dir=str(tmp_path / "ref"), max_steps=5, seed=2,
                                  resolution=64, learning_rate=1e-3, progress=False, **TINY))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "facefact.cli.main", "train", *common, "--output-dir", str(out),
           "--checkpoint-every", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "step-00000002").exists() and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter.safetensors").exists(), "the run finished before it could be killed"
    from facefact.cli.main import main

    assert main(["train", *common, "--output-dir", str(out), "--resume", "latest"]) == 0
    a, b = _weights(reference.adapter_path), _weights(out / "adapter.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_checkpointing_gives_the_same_training(tmp_path, prepared, opened_adapter):
    common = dict(data=str(prepared), init_adapter=opened_adapter, max_steps=2, fair_weight=0.5, seed=3, **FAST)
    plain = train(TrainConfig(output_dir=str(tmp_path / "a"), **common))
    checkpointed = train(TrainConfig(output_dir=str(tmp_path / "b"), gradient_checkpointing=True, **common))
    a, b = _weights(plain.adapter_path), _weights(checkpointed.adapter_path)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert plain.history[-1]["fair"] > 0


def test_out_of_memory_names_the_settings_to_lower(tmp_path, prepared, monkeypatch):
    from facefact.training import models

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(models.AdapterTrainingModule, "forward", oom)
    with pytest.raises(ConfigError, match="out of memory") as err:
        train(TrainConfig(data=str(prepared), output_dir=str(tmp_path), max_steps=1, **FAST))
    assert "batch_size" in str(err.value) and "gradient_checkpointing" in str(err.value)


def test_base_model_without_sd15_layout_is_refused(tmp_path):
    from diffusers import UNet2DConditionModel

    from facefact.model import check_sd15_layout
    from facefact.training.models import load_base_model

    unet = UNet2DConditionModel(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=16, layers_per_block=1, attention_head_dim=8)
    with pytest.raises(CheckpointError, match="Stable Diffusion 1.5"):
        check_sd15_layout(unet, "other")
    with pytest.raises(Exception, match="not a diffusers model folder"):
        load_base_model(str(tmp_path))
