"""`--model tiny-sdxl`: the built-in tiny SDXL base, adapter and encoder for the generating commands;
an adapter of the other family refused in one line naming both, with a hint."""
from __future__ import annotations

import pytest

from facefact.pipelines.metadata import read_png_metadata


@pytest.fixture(scope="module")
def sd15_adapter(tmp_path_factory):
    from facefact.model.checkpoints import save_adapter
    from facefact.model.tiny import tiny_face_adapter
    from facefact.pipelines.tiny import tiny_sd_pipeline

    return save_adapter(tiny_face_adapter(tiny_sd_pipeline().unet), tmp_path_factory.mktemp("a") / "sd15.safetensors")


def test_generate_and_identity_on_tiny_sdxl(cli, astronaut, tmp_path):
    code, out, err = cli("generate", "--model", "tiny-sdxl", "--face", astronaut, "--prompt", "a portrait",
                         "--steps", 1, "--seed", 3, "--out", tmp_path / "out")
    assert code == 0, err
    meta = read_png_metadata(out.split()[0])
    assert meta["pipeline"] == "FACTStableDiffusionXLPipeline" and meta["method"] == "FaceChain-FACT"
    assert (meta["width"], meta["height"]) == (128, 128)  # the tiny models' own size (no --size given)
    code, out, err = cli("identity", "save", "--model", "tiny-sdxl", "--face", astronaut, "-o", tmp_path / "me.fid")
    assert code == 0, err
    code, out, err = cli("generate", "--model", "tiny-sdxl", "--identity", tmp_path / "me.fid", "--prompt", "x",
                         "--steps", 1, "--size", 64, "--out", tmp_path / "by-identity")
    assert code == 0, err
    code, _, err = cli("generate", "--model", "tiny", "--identity", tmp_path / "me.fid", "--prompt", "x",
                       "--steps", 1, "--size", 64, "--out", tmp_path / "wrong")  # saved with the SDXL models
    assert code != 0 and "Traceback" not in err


def test_an_sd15_adapter_on_tiny_sdxl_is_one_line_with_a_hint(cli, astronaut, sd15_adapter, tmp_path):
    code, out, err = cli("generate", "--model", "tiny-sdxl", "--adapter", sd15_adapter, "--face", astronaut,
                         "--prompt", "x", "--steps", 1, "--out", tmp_path / "out")
    first, hint = err.strip().splitlines()
    assert code == 2 and not list((tmp_path / "out").glob("*.png"))
    assert "made for Stable Diffusion 1.5 base models, but the base model is SDXL" in first
    assert hint.strip().startswith("hint:") and "SDXL" in hint


def test_tiny_sdxl_flags_and_help(cli, capsys):
    code, _, err = cli("generate", "--model", "tiny-sdxl", "--base-model", "some/model", "--face", "x.jpg",
                       "--prompt", "x")
    assert code == 2 and "--model tiny-sdxl" in err and "drop --base-model" in err
    from facefact.cli.main import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "tiny-sdxl" in text and "1024 on SDXL" in text and "512 on SD1.5" in text
