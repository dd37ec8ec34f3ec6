"""`facefact train` from a config file with flag overrides, on a diffusers folder and an encoder file,
with validation images, CSV log and the example config's keys all valid."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from facefact.cli.main import main
from facefact.training.config import TrainConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_config.yaml"


def test_example_config_is_complete_and_valid():
    config = load_config(EXAMPLE, {"data": "x"}).check()
    assert set(config.to_dict()) == set(TrainConfig().to_dict())
    assert config.fair_weight == 0.01 and config.face_drop_prob == 0.1


def test_cli_train_from_folder_models_with_validation(tmp_path, prepared, capsys):
    from facefact.model.tiny import tiny_encoder
    from facefact.pipelines.tiny import save_tiny_sd_pipeline

    base = save_tiny_sd_pipeline(tmp_path / "sd15")
    encoder_path = tmp_path / "transface.pt"
    torch.save(tiny_encoder().state_dict(), encoder_path)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"data: {prepared}\nmax_steps: 50\nresolution: 64\nvalidate_every: 2\nvalidation_steps: 2\n"
                      f"validation_prompts: [a photo, a painting]\nprogress: false\n")
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--max-steps", "2", "--output-dir", str(out), "--base-model",
                 str(base), "--encoder", str(encoder_path), "--no-progress"])
    assert code == 0 and "trained adapter" in capsys.readouterr().out
    grid = Image.open(out / "validation" / "step-00000002.png")
    layout = json.loads(grid.text["facefact:validation"])
    assert layout["columns"] == ["step 2: condition", "a photo", "a painting"] and len(layout["identities"]) == 2
    # condition + 2 prompts, 2 validation samples, under a header and a label band per row
    assert grid.size == (64 * 3, layout["header_px"] + 2 * (layout["row_band_px"] + 64))
    assert len((out / "log.csv").read_text().splitlines()) == 3


def test_cli_train_errors_are_messages(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--no-progress", "--model", "tiny"]) == 2
    assert "training set not found" in capsys.readouterr().err
    assert main(["train", "--data", "x", "--mixed-precision", "fp8", "--model", "tiny"]) == 2
    assert "mixed_precision" in capsys.readouterr().err


def test_8bit_adam_without_bitsandbytes_is_a_clear_error(tmp_path, prepared):
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    from facefact.errors import ConfigError
    from facefact.training import train

    with pytest.raises(ConfigError, match="bitsandbytes"):
        train(TrainConfig(data=str(prepared), base_model="tiny", encoder="tiny", output_dir=str(tmp_path),
                          optimizer="adamw8bit", max_steps=1,
                          resolution=64, progress=False))


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint-every", "0"], "checkpoint_every must be >= 1"),
    (["--lr-schedule", "bogus"], "unknown lr_schedule 'bogus'"),
    (["--validate-every", "1", "--validation-steps", "0"], "validation_steps must be >= 1"),
    (["--validate-every", "-1"], "validate_every must be >= 0"),
    (["--log-every", "-5"], "log_every must be >= 0"),
    (["--validation-samples", "0"], "validation_samples must be >= 1"),
    (["--lr-warmup-steps", "-1"], "lr_warmup_steps must be >= 0"),
    (["--stop-after-steps", "0"], "stop_after_steps must be >= 1"),
])
def test_cli_train_bad_settings_are_messages_not_tracebacks(tmp_path, prepared, capsys, flags, message):
    """These used to fail inside training (ZeroDivisionError after a full step, diffusers' ValueError,
    a ZeroDivisionError in the validation sampler) instead of being refused up front."""
    code = main(["train", "--data", str(prepared), "--output-dir", str(tmp_path / "run"), "--max-steps", "1",
                 "--resolution", "64", "--no-progress", "--model", "tiny", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_lr_schedule_error_lists_the_valid_names():
    from facefact.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        TrainConfig(data="x", base_model="tiny", encoder="tiny", lr_schedule="bogus").check()
    assert "cosine" in info.value.hint and "piecewise_constant" not in info.value.hint
    for name in ("constant", "cosine", "linear", "constant_with_warmup"):
        TrainConfig(data="x", base_model="tiny", encoder="tiny", lr_schedule=name).check()


def test_a_tiny_adapter_trained_by_the_cli_loads_into_tiny_the_readme_way(tmp_path, prepared, astronaut):
    """`facefact train --model tiny` -> adapter.safetensors -> `.tiny()` + `load_fact_adapter(path,
    encoder="tiny")`, as the README loads an adapter; the trained weights are the ones used."""
    import torch

    from facefact.model.checkpoints import read_safetensors
    from facefact.pipelines import FACTStableDiffusionPipeline

    run = tmp_path / "run"
    assert main(["train", "--data", str(prepared), "--output-dir", str(run), "--max-steps", "1",
                 "--resolution", "64", "--no-progress", "--model", "tiny"]) == 0
    pipe = FACTStableDiffusionPipeline.tiny()
    untrained = pipe("a portrait", face_images=[astronaut], num_inference_steps=2, height=64, width=64,
                     generator=torch.Generator().manual_seed(1), output_type="np").images
    pipe.load_fact_adapter(str(run / "adapter.safetensors"), encoder="tiny")
    trained_weights = read_safetensors(run / "adapter.safetensors")[0]
    name, value = next((k, v) for k, v in trained_weights.items() if "fuser" in k or "attn" in k)
    assert any(torch.equal(value, p.detach().cpu()) for p in pipe.fact_adapter.state_dict().values()
               if p.shape == value.shape), name
    assert pipe._fact_models["encoder"] == {"id": "facefact-tiny/encoder", "seed": 0}
    images = pipe("a portrait", face_images=[astronaut], num_inference_steps=2, height=64, width=64,
                  generator=torch.Generator().manual_seed(1), output_type="np").images
    assert images.shape == untrained.shape and not (images == untrained).all()


def test_tiny_names_a_tiny_part_only_on_a_tiny_pipeline():
    from diffusers import StableDiffusionPipeline

    from facefact.errors import ConfigError
    from facefact.pipelines.tiny import tiny_parts

    plain = StableDiffusionPipeline.__new__(StableDiffusionPipeline)
    with pytest.raises(ConfigError, match="the tiny encoder fits only the tiny base model"):
        tiny_parts(plain, "adapter.safetensors", "tiny")
    assert tiny_parts(plain, "a.safetensors", "e.pt") == ("a.safetensors", "e.pt", {})
