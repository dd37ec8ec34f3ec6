"""`facefact generate` end to end on the tiny models: files, provenance, determinism, config."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facefact.pipelines.hashing import file_sha256
from facefact.pipelines.metadata import DIGITAL_SOURCE_TYPE, XMP_KEY, read_png_metadata


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


PROMPT = "a portrait in a garden"


def generate(cli, out, *extra, face=None, seed=7, n=2):
    return cli("generate", "--model", "tiny", *(["--face", face] if face else []), "--prompt", PROMPT,
               "-n", n, "--seed", seed, "--steps", 2, "--size", 64, "--out", out, "--quiet", *extra)


def test_one_photo_writes_images_sheet_and_provenance(cli, astronaut, tmp_path):
    code, out, err = generate(cli, tmp_path, face=astronaut)
    assert code == 0, err
    stem = "a-portrait-in-a-garden"
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{stem}_7-8_sheet.png", f"{stem}_7.png", f"{stem}_8.png"]
    assert str(tmp_path / f"{stem}_7.png") in out

    meta = read_png_metadata(tmp_path / f"{stem}_7.png")
    assert meta["seed"] == 7 and meta["prompt"] == PROMPT and meta["ai_generated"] is True
    assert meta["steps"] == 2 and meta["fact_scale"] == 0.5 and meta["cfg_face"] is True
    assert meta["num_reference_photos"] == 1 and meta["scheduler"] == "pndm"
    assert meta["width"] == meta["height"] == 64
    assert meta["models"]["adapter"]["id"] == "facefact-tiny/adapter"
    with Image.open(tmp_path / f"{stem}_7.png") as im:
        info = dict(im.info)
    assert "Seed: 7" in info["parameters"] and info["parameters"].startswith(PROMPT)
    assert "AI-generated" in info["Description"] and "AI-generated" in info["Comment"]
    assert info["Software"].startswith("facefact")
    assert DIGITAL_SOURCE_TYPE in info[XMP_KEY]
    assert "astronaut.jpg" not in info["facefact"]  # nothing about the reference photo but its count
    assert read_png_metadata(tmp_path / f"{stem}_8.png")["seed"] == 8

    sheet = read_png_metadata(tmp_path / f"{stem}_7-8_sheet.png")
    assert sheet["seeds"] == [7, 8] and sheet["ai_generated"] is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_same_seed_same_pixels_and_no_silent_overwrite(cli, astronaut, tmp_path):
    assert generate(cli, tmp_path, face=astronaut, n=1)[0] == 0
    assert generate(cli, tmp_path, face=astronaut, n=1)[0] == 0        # same name: numbered, not replaced
    assert generate(cli, tmp_path, "--name", "other", face=astronaut, seed=9, n=1)[0] == 0
    first = tmp_path / "a-portrait-in-a-garden_7.png"
    second = tmp_path / "a-portrait-in-a-garden_7-1.png"
    np.testing.assert_array_equal(pixels(first), pixels(second))
    assert not np.array_equal(pixels(first), pixels(tmp_path / "other_9.png"))
    mtime = first.stat().st_mtime_ns
    assert generate(cli, tmp_path, "--overwrite", face=astronaut, n=1)[0] == 0
    assert first.stat().st_mtime_ns >= mtime and not (tmp_path / "a-portrait-in-a-garden_7-2.png").exists()


def test_two_photos_and_json_summary(cli, astronaut, grace_hopper, tmp_path):
    code, out, err = cli("generate", "--model", "tiny", "--face", astronaut, "--face", grace_hopper, "--prompt",
                         PROMPT, "-n", 1, "--seed", 7, "--steps", 2, "--size", 64, "--out", tmp_path / "two", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert len(summary["images"]) == 1 and summary["contact_sheet"] is None
    assert read_png_metadata(summary["images"][0])["num_reference_photos"] == 2
    assert generate(cli, tmp_path / "one", face=astronaut, n=1)[0] == 0
    one = next((tmp_path / "one").iterdir())
    assert not np.array_equal(pixels(one), pixels(summary["images"][0]))  # the second face changes the image


def test_config_file_supplies_defaults_and_flags_win(cli, astronaut, tmp_path):
    config = tmp_path / "facefact.yaml"
    config.write_text("generate:\n  steps: 2\n  scale: 0.0\n  scheduler: ddim\n  n: 1\n")
    code, out, err = cli("generate", "--model", "tiny", "--face", astronaut, "--prompt", PROMPT, "--seed", 3,
                         "--size", 64, "--out", tmp_path, "--config", config, "--scheduler", "euler", "--no-cfg-face",
                         "--guidance", 7, "--negative-prompt", "blurry", "--json")
    assert code == 0, err
    meta = json.loads(out)["metadata"][0]
    assert (meta["steps"], meta["fact_scale"], meta["scheduler"]) == (2, 0.0, "euler")
    assert (meta["cfg_face"], meta["guidance_scale"], meta["negative_prompt"]) == (False, 7.0, "blurry")
    assert "Negative prompt: blurry" in Image.open(json.loads(out)["images"][0]).info["parameters"]

    config.write_text("adpater: x.ckpt\n")  # a typo is an error, not silently ignored
    code, _, err = cli("generate", "--model", "tiny", "--face", astronaut, "--prompt", PROMPT, "--config", config)
    assert code == 2 and "unknown config keys: adpater" in err and "Traceback" not in err


def test_real_model_files_path(cli, astronaut, tiny_model_files, tmp_path):
    base, adapter, encoder = tiny_model_files
    code, out, err = cli("generate", "--base-model", base, "--adapter", adapter, "--encoder", encoder,
                         "--face", astronaut, "--prompt", PROMPT, "--size", 64, "--steps", 2, "--seed", 1,
                         "--out", tmp_path, "--json", "--device", "cpu")
    assert code == 0, err
    meta = json.loads(out)["metadata"][0]
    assert meta["width"] == 64
    # provenance names the model files, never where they are on this machine (/home/<user>/...)
    models = meta["models"]
    assert models["adapter"] == {"id": adapter.name, "sha256": file_sha256(adapter)[:16]}
    assert models["encoder"] == {"id": encoder.name, "sha256": file_sha256(encoder)[:16]}
    unet_hash = models["base_model"]["unet_sha256"]  # a folder: the hash of its UNet weights
    assert models["base_model"] == {"id": base.name, "unet_sha256": unet_hash}
    [png] = [p for p in tmp_path.iterdir() if p.suffix == ".png" and "sheet" not in p.name]
    with Image.open(png) as im:
        text = " ".join(str(v) for v in im.info.values())
        # a folder has no single-file hash to look up on model sites: no A1111 Model hash
        assert f"Size: 64x64, Model: {base.name}" in im.info["parameters"]
        assert "Model hash" not in im.info["parameters"] and unet_hash[:10] not in im.info["parameters"]
    assert str(adapter.parent) not in text and str(base.parent) not in text


def test_output_names_never_carry_the_photo_name(cli, astronaut, tmp_path):
    photo = tmp_path / "Jane Doe passport.jpg"
    shutil.copy(astronaut, photo)
    code, out, err = generate(cli, tmp_path / "out", face=str(photo), n=1)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a-portrait-in-a-garden_7.png"]
    assert generate(cli, tmp_path / "out", "--name", "jane", face=str(photo), n=1)[0] == 0  # chosen explicitly
    assert (tmp_path / "out" / "jane_7.png").exists()


def test_readme_command_in_a_subprocess(astronaut, tmp_path):
    env = {**os.environ, "FACEFACT_HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
           "OMP_NUM_THREADS": "1"}
    script = shutil.which("facefact")  # the installed console script, as users run it
    command = [script] if script else [sys.executable, "-m", "facefact.cli.main"]
    proc = subprocess.run([*command, "generate", "--model", "tiny", "--face", astronaut, "--prompt", PROMPT,
                           "-n", "2", "--seed", "7", "--steps", "2", "--out", "outputs/"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "torchvision" not in proc.stderr
    written = [Path(line.split()[0]) for line in proc.stdout.splitlines()]
    assert len(written) == 3 and all((tmp_path / p).is_file() for p in written)
    assert read_png_metadata(tmp_path / written[0])["width"] == 128  # the tiny model's own size
