"""Training on an SDXL base (the tiny one): what the UNet is given (both text encoders, pooled text,
the size/crop time ids prepare recorded), exact resume, block layouts, and what is refused by name."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from facefact.cli.main import main
from facefact.errors import CheckpointError, ConfigError, DatasetError
from facefact.model import FaceAdapter
from facefact.model.checkpoints import read_safetensors, save_adapter
from facefact.training import TrainConfig, train

XL = dict(base_model="tiny-sdxl", encoder="tiny", resolution=64, progress=False, checkpoint_every=1000, log_every=1)


def _records(data) -> list[dict]:
    from facefact.training.sample_index import written_entries

    return written_entries(data)


def test_prepare_records_where_each_crop_comes_from(trained_sdxl_adapter):
    """original size = the photo's; cutting `size` px at the crop top-left out of the photo resized so
    that the crop is `size` px gives the prepared image back (and a shifted cut does not)."""
    for record in _records(trained_sdxl_adapter.data):
        with Image.open(record["source"]) as photo:
            photo = photo.convert("RGB")
        assert record["original_size"] == [photo.height, photo.width] and record["target_size"] == [1024, 1024]
        x1, y1, x2, y2 = record["face"]["bbox"]
        k = 1024 / (max(x2 - x1, y2 - y1) * 1.5)  # prepare's crop: 1.5 x the face box, resized to 1024
        top, left = record["crops_coords_top_left"]
        assert top > 0 and left > 0 and (top + 1024) / k <= photo.height and (left + 1024) / k <= photo.width

        with Image.open(trained_sdxl_adapter.data / record["image"]) as prepared:
            image = np.asarray(prepared.convert("RGB").resize((128, 128), Image.BOX)).astype(float)

        def difference(dy, dx):  # mean |pixel difference| of the cut shifted by (dy, dx) crop px
            box = ((left + dx) / k, (top + dy) / k, (left + dx + 1024) / k, (top + dy + 1024) / k)
            return np.abs(np.asarray(photo.resize((128, 128), Image.BOX, box=box)).astype(float) - image).mean()

        here = difference(0, 0)  # interpolation and JPEG apart, the same pixels
        assert here < 8 and all(difference(dy, dx) > here for dy, dx in ((-16, 0), (16, 0), (0, -16), (0, 16)))
        assert difference(60, 60) > 2 * here


def test_a_crop_past_the_photo_edge_starts_at_zero_there():
    from facefact.training.micro_conditioning import crop_fields, time_ids

    # face box 40 px at (40..80): crop side 60 px from x = y = 30, resized by 64/60 -> starts at 32
    inside = crop_fields(100, 120, (40, 40, 80, 80), 1.5, 64)
    assert inside == {"original_size": [100, 120], "crops_coords_top_left": [32, 32], "target_size": [64, 64]}
    # face box at the corner: the crop starts 10 px before the photo (black padding): 0, not -11
    assert crop_fields(100, 120, (0, 0, 40, 40), 1.5, 64)["crops_coords_top_left"] == [0, 0]
    assert time_ids(inside, 128) == [100.0, 120.0, 64.0, 64.0, 128.0, 128.0]  # top-left scales with the size


def test_the_unet_gets_the_text_and_time_ids_diffusers_gives_it(trained_sdxl_adapter):
    from facefact.training.data import FaceTrainingSet
    from facefact.training.models import load_base_model
    from facefact.training.text_conditioning import encode_prompts

    base = load_base_model("tiny-sdxl")
    prompts = ["a portrait photo of astronaut", ""]
    text = encode_prompts(base, prompts, "cpu")
    from facefact.pipelines.tiny_xl import tiny_sdxl_pipeline

    embeds, _, pooled, _ = tiny_sdxl_pipeline().encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(text.embeds, embeds) and torch.equal(text.pooled, pooled)

    data = FaceTrainingSet(trained_sdxl_adapter.data, resolution=64)
    record = _records(trained_sdxl_adapter.data)[0]
    top, left = record["crops_coords_top_left"]
    expected = [*record["original_size"], round(top * 64 / 1024), round(left * 64 / 1024), 64, 64]
    assert data[0]["time_ids"].tolist() == [float(v) for v in expected]


def test_an_older_set_trains_with_diffusers_defaults_and_says_so(tmp_path, prepared, caplog):
    from facefact.training.data import FaceTrainingSet

    old = shutil.copytree(prepared, tmp_path / "old")  # the same files, an index without the SDXL fields
    shutil.rmtree(old / "index")  # as an older facefact wrote it: one index.jsonl
    rows = [{k: v for k, v in r.items() if k not in ("original_size", "crops_coords_top_left", "target_size")}
            for r in _records(prepared)]
    (old / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert FaceTrainingSet(old, resolution=64)[0]["time_ids"].tolist() == [64.0, 64.0, 0.0, 0.0, 64.0, 64.0]
    result = train(TrainConfig(data=str(old), output_dir=str(tmp_path / "run"), max_steps=1, **XL))
    assert result.adapter_path.is_file()
    assert "no SDXL size/crop fields" in caplog.text and f"{len(rows)} of {len(rows)} samples" in caplog.text

    rows[0]["crops_coords_top_left"] = [-3, 5]  # an edited index is refused naming the line
    (old / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match="line 1 has"):
        FaceTrainingSet(old)


def test_sdxl_stop_and_resume_equals_an_uninterrupted_run(tmp_path, prepared):
    common = dict(data=str(prepared), max_steps=4, seed=5, learning_rate=1e-3, face_drop_prob=0.5, text_drop_prob=0.3,
                  shuffle_ramp_steps=3, gradient_accumulation_steps=2, lr_schedule="cosine", lr_warmup_steps=1,
                  fair_weight=0.5, **{**XL, "checkpoint_every": 2})
    full = train(TrainConfig(output_dir=str(tmp_path / "full"), **common))
    first = train(TrainConfig(output_dir=str(tmp_path / "split"), stop_after_steps=2, **common))
    assert first.adapter_path is None and first.step == 2
    second = train(TrainConfig(output_dir=str(tmp_path / "split"), resume="latest", **common))
    a, b = read_safetensors(full.adapter_path)[0], read_safetensors(second.adapter_path)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["mse"] for r in full.history[2:]] == [r["mse"] for r in second.history]
    assert full.history[0]["fair"] == 0 < full.history[-1]["fair"]  # gates closed at first, then FAIR acts


def test_the_layout_is_a_setting_recorded_in_the_file_and_checked_on_resume(tmp_path, prepared):
    common = dict(data=str(prepared), max_steps=1, **XL)
    result = train(TrainConfig(output_dir=str(tmp_path / "all"), layout="all", **common))
    adapter = FaceAdapter.from_checkpoint(result.adapter_path)
    assert (adapter.family, adapter.layout, len(adapter.block_paths)) == ("sdxl", "all", 17)
    assert read_safetensors(result.adapter_path)[1]["block_layout"] == "all"
    with pytest.raises(CheckpointError, match="layout 'all', 17 fusers.*layout 'first', 11 fusers"):
        train(TrainConfig(output_dir=str(tmp_path / "all"), resume="latest", **{**common, "max_steps": 2}))
    with pytest.raises(ConfigError, match="init_adapter .* has block layout 'all'"):
        train(TrainConfig(output_dir=str(tmp_path / "b"), init_adapter=str(result.adapter_path), layout="first",
                          **common))
    with pytest.raises(ConfigError, match="layout must be first or all"):
        TrainConfig(data=str(prepared), layout="every", **{k: XL[k] for k in ("base_model", "encoder")}).check()


def test_an_sd15_adapter_is_refused_on_an_sdxl_base_by_name(tmp_path, prepared):
    from facefact.model.tiny import tiny_face_adapter
    from facefact.pipelines.tiny import tiny_unet

    sd15 = save_adapter(tiny_face_adapter(tiny_unet()), tmp_path / "sd15.safetensors")
    with pytest.raises(CheckpointError, match="Stable Diffusion 1.5.*SDXL|SDXL.*Stable Diffusion 1.5"):
        train(TrainConfig(data=str(prepared), output_dir=str(tmp_path / "run"), init_adapter=str(sd15),
                          max_steps=1, **XL))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_cli_takes_tiny_sdxl_and_a_layout(tmp_path, prepared, capsys):
    assert main(["train", "--data", str(prepared), "--model", "tiny-sdxl", "--base-model", "sd15/"]) == 2
    assert "--model tiny-sdxl uses the built-in random models; drop --base-model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", str(prepared), "--model", "tiny-sdxl", "--layout", "every"])
    assert main(["train", "--data", str(prepared), "--model", "tiny-sdxl", "--layout", "all", "--max-steps", "1",
                 "--resolution", "64", "--no-progress", "--output-dir", str(tmp_path / "run")]) == 0
    assert "trained adapter:" in capsys.readouterr().out
    assert FaceAdapter.from_checkpoint(tmp_path / "run" / "adapter.safetensors").layout == "all"


def test_an_sdxl_folder_trains_from_the_sdxl_example_config_with_validation(tmp_path, prepared, capsys):
    """A diffusers SDXL folder is an SDXL base because its UNet config says so; the example config is
    complete and valid; validation images come from the SDXL FACT pipeline."""
    from pathlib import Path

    from facefact.model.tiny import tiny_encoder
    from facefact.pipelines.tiny_xl import save_tiny_sdxl_pipeline
    from facefact.training.config import load_config

    example = Path(__file__).resolve().parents[2] / "examples" / "train_config_sdxl.yaml"
    config = load_config(example, {"data": "x"}).check()
    assert (config.layout, config.gradient_checkpointing, config.mixed_precision) == ("first", True, "bf16")
    base = save_tiny_sdxl_pipeline(tmp_path / "sdxl")
    encoder = tmp_path / "transface.pt"
    torch.save(tiny_encoder().state_dict(), encoder)
    out = tmp_path / "run"
    assert main(["train", "--config", str(example), "--data", str(prepared), "--base-model", str(base), "--encoder",
                 str(encoder), "--output-dir", str(out), "--max-steps", "1", "--gradient-accumulation-steps", "1",
                 "--resolution", "64", "--mixed-precision", "no", "--optimizer", "adamw", "--lr-warmup-steps", "0",
                 "--validate-every", "1", "--validation-steps", "2", "--num-workers", "0", "--threads", "1",
                 "--no-progress"]) == 0
    assert "trained adapter" in capsys.readouterr().out
    assert FaceAdapter.from_checkpoint(out / "adapter.safetensors").family == "sdxl"
    grid = Image.open(out / "validation" / "step-00000001.png")
    assert len(json.loads(grid.text["facefact:validation"])["columns"]) == 3


def test_sdxl_training_from_caches_equals_training_without(tmp_path, prepared, photo_folder, monkeypatch):
    from diffusers import AutoencoderKL

    from facefact.model import TransFaceEncoder
    from facefact.training.prepare import PrepareSettings, prepare_dataset

    data = shutil.copytree(prepared, tmp_path / "set")
    summary = prepare_dataset(photo_folder, data, PrepareSettings(size=128), progress=False,
                              cache_latents="tiny-sdxl", cache_encoder_tokens="tiny")
    assert summary["caches"]["latents"]["model"] == "tiny-sdxl"
    common = dict(data=str(data), max_steps=2, seed=4, learning_rate=1e-3, face_drop_prob=0.5,
                  **{**XL, "resolution": None})
    plain = train(TrainConfig(output_dir=str(tmp_path / "plain"), use_cache=False, **common))

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached model was run")

    monkeypatch.setattr(AutoencoderKL, "encode", must_not_run)
    monkeypatch.setattr(TransFaceEncoder, "forward", must_not_run)
    cached = train(TrainConfig(output_dir=str(tmp_path / "cached"), **common))
    monkeypatch.undo()
    assert [r["mse"] for r in plain.history] == pytest.approx([r["mse"] for r in cached.history], rel=1e-5)
    a, b = read_safetensors(plain.adapter_path)[0], read_safetensors(cached.adapter_path)[0]
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
