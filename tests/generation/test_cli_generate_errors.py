"""What `facefact generate` says when the user gets something wrong: a message, exit code 2, no traceback."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gen_cli_checks import fails


# Defined here, not imported from conftest, so the tests work under any pytest import mode.
PARITY = Path(__file__).resolve().parents[1] / "data" / "parity" / "fact_tiny_a"


def tiny(cli, face, *extra, prompt="a portrait"):
    return cli("generate", "--model", "tiny", "--face", face, "--prompt", prompt, "--steps", 1, "--size", 64,
               "--quiet", *extra)


def test_photo_without_a_face(cli, plain_jpeg, tmp_path):
    err = fails(tiny(cli, plain_jpeg, "--out", tmp_path), "no face", "plain.jpg")
    assert "hint:" in err and not list(tmp_path.iterdir())


def test_missing_photo(cli, tmp_path):
    fails(tiny(cli, tmp_path / "nobody.jpg", "--out", tmp_path), "nobody.jpg")


def test_size_not_a_multiple_of_8(cli, astronaut, capsys):
    with pytest.raises(SystemExit) as exited:  # --size's own check, by argparse, before any work
        tiny(cli, astronaut, "--size", 100)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "argument --size: 100 is not a positive multiple of 8" in err and "try 96" in err
    fails(tiny(cli, astronaut, "--width", 64, "--height", 60), "height 60")


def test_prompt_longer_than_the_text_encoder_says_what_was_cut(cli, astronaut, tmp_path):
    prompt = "a portrait in a garden " + " ".join(f"word{i}" for i in range(40)) + " unicorn"
    code, out, err = tiny(cli, astronaut, "--out", tmp_path, prompt=prompt)
    assert code == 0, err
    assert "note: the prompt is" in err and "unicorn" in err.split("this part was cut")[1]


def test_tiny_takes_a_trained_adapter_file_but_no_base_model(cli, astronaut, tiny_model_files, tmp_path):
    """`--model tiny --adapter FILE`: a trained adapter on the tiny base and encoder it was trained with."""
    import json

    from PIL import Image

    _, adapter, _ = tiny_model_files
    fails(tiny(cli, astronaut, "--adapter", tmp_path / "x.safetensors"), "adapter not found", "x.safetensors")
    fails(tiny(cli, astronaut, "--base-model", tmp_path), "--model tiny is the built-in tiny base model")
    code, out, err = tiny(cli, astronaut, "--adapter", adapter, "--seed", 3, "--json", "--out", tmp_path / "file")
    assert code == 0, err
    from_file = json.loads(out)
    meta = from_file["metadata"][0]
    assert meta["models"]["adapter"]["id"] == adapter.name and len(meta["models"]["adapter"]["sha256"]) == 16
    assert meta["models"]["encoder"]["id"] == "facefact-tiny/encoder"
    code, out, err = tiny(cli, astronaut, "--seed", 3, "--json", "--out", tmp_path / "built-in")
    assert code == 0, err
    # the file holds the built-in tiny adapter's weights: the same pixels
    with Image.open(from_file["images"][0]) as a, Image.open(json.loads(out)["images"][0]) as b:
        assert a.tobytes() == b.tobytes()


def test_missing_model_files_say_where_they_were_looked_for(cli, astronaut, tmp_path):
    err = fails(cli("generate", "--face", astronaut, "--prompt", "p"), "adapter not found",
                "adapter_maj_mask_large_new_reg001_faceshuffle_00290001.ckpt", "(from default)")
    assert "FACEFACT_ADAPTER" in err and "facefact models download" in err
    fails(cli("generate", "--face", astronaut, "--prompt", "p", "--adapter", tmp_path / "nope.safetensors"),
          "nope.safetensors", "from flag --adapter")


@pytest.fixture
def adapter_variants(tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((PARITY / "adapter.ckpt").read_bytes()[:50_000])
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    return {"truncated": truncated, "empty": empty, "encoder": PARITY / "transface.pt",
            "other_unet": PARITY / "adapter.ckpt"}


@pytest.mark.parametrize("variant, phrases", [
    ("truncated", ["truncated"]),
    ("empty", ["empty (0 bytes)"]),
    ("encoder", ["not a FACT adapter", "encoder"]),
    ("other_unet", ["48-wide face tokens", "32 wide"]),  # parity adapter: cross-attention 48, tiny UNet: 32
])
def test_bad_adapter_files(cli, astronaut, tiny_model_files, adapter_variants, variant, phrases, tmp_path):
    base, _, encoder = tiny_model_files
    fails(cli("generate", "--base-model", base, "--adapter", adapter_variants[variant], "--encoder", encoder,
              "--face", astronaut, "--prompt", "p", "--steps", 1, "--out", tmp_path), *phrases)


def test_adapter_given_as_encoder(cli, astronaut, tiny_model_files):
    base, adapter, _ = tiny_model_files
    fails(cli("generate", "--base-model", base, "--adapter", adapter, "--encoder", adapter, "--face", astronaut,
              "--prompt", "p"), "not a TransFace encoder")


def test_base_model_folder_without_model_index(cli, astronaut, tiny_model_files, tmp_path):
    base, adapter, encoder = tiny_model_files
    broken = tmp_path / "base"
    shutil.copytree(base / "unet", broken / "unet")
    fails(cli("generate", "--base-model", broken, "--adapter", adapter, "--encoder", encoder, "--face", astronaut,
              "--prompt", "p"), "not a diffusers model folder")


def test_several_faces_uses_the_largest_and_says_so(cli, astronaut, grace_hopper, tmp_path):
    from PIL import Image

    from facefact.pipelines.metadata import read_png_metadata

    a, g = Image.open(astronaut).convert("RGB"), Image.open(grace_hopper).convert("RGB").resize((400, 470))
    group = Image.new("RGB", (a.width + g.width, max(a.height, g.height)), "white")
    group.paste(a, (0, 0))
    group.paste(g, (a.width, 0))
    group.save(tmp_path / "group.jpg")
    code, out, err = tiny(cli, tmp_path / "group.jpg", "--out", tmp_path / "out")
    assert code == 0, err
    assert err.count("2 faces found; using the largest") == 1 and "FaceWarning" not in err
    meta = read_png_metadata(out.split()[0])
    assert meta["notes"] and "group.jpg" not in str(meta)  # the note is kept, the photo's name is not


def test_unavailable_device_and_dtype(cli, astronaut):
    import torch

    if not torch.cuda.is_available():
        fails(tiny(cli, astronaut, "--device", "cuda"), "device 'cuda' is not available")
    fails(tiny(cli, astronaut, "--device", "toaster"), "unknown device 'toaster'")
    fails(tiny(cli, astronaut, "--device", "cpu", "--dtype", "float16"), "float16 is not supported on the CPU")
