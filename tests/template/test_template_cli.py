"""`facefact template` through the CLI, on tiny models, offline."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

TINY = ["--model", "tiny", "--crop-size", "64", "--steps", "10", "--prompt", "a portrait",
        "--negative-prompt", "blurry", "--quiet"]


def test_list_faces(cli, photo_files, tmp_path):
    code, out, err = cli("template", "--template", photo_files["group"], "--list-faces", "--debug-dir", tmp_path / "d")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("template 949x512: 2 faces")
    assert lines[1].strip().startswith("face 1: ") and lines[2].strip().startswith("face 2: ")
    assert "(default target)" in lines[2] and "(default target)" not in lines[1]
    assert Image.open(tmp_path / "d" / "template_faces.png").size == (949, 512)
    code, out, _ = cli("template", "--template", photo_files["group"], "--list-faces", "--json")
    listed = json.loads(out)
    assert code == 0 and listed["default_target"] == 2 and [f["number"] for f in listed["faces"]] == [1, 2]
    assert listed["faces"][0]["bbox"][0] < listed["faces"][1]["bbox"][0]


def test_two_people_into_a_group_photo(cli, photo_files, tmp_path):
    from facefact.faces import load_image
    from facefact.pipelines.metadata import read_png_metadata

    code, out, err = cli("template", "--template", photo_files["group"], "--face", f"1={photo_files['grace']}",
                         "--face", f"2={photo_files['astronaut']}", *TINY, "--seed", "7", "-n", "2",
                         "--out", tmp_path / "out", "--save-control", "--json", "--no-refine")
    assert code == 0, err
    summary = json.loads(out)
    assert [p.rsplit("_", 1)[1] for p in summary["images"]] == ["7.png", "8.png"]
    template = load_image(photo_files["group"])
    result = np.asarray(Image.open(summary["images"][0]).convert("RGB"))
    assert result.shape == template.shape
    changed = np.any(result != template, axis=2)
    meta = read_png_metadata(summary["images"][0])
    crops = meta["redrawn_faces"]
    assert [c["number"] for c in crops] == [1, 2] and meta["seed"] == 7
    inside = np.zeros_like(changed)
    for c in crops:
        x0, y0, side = c["crop"]["x0"], c["crop"]["y0"], c["crop"]["side"]
        inside[max(0, y0):y0 + side, max(0, x0):x0 + side] = True
        x1, y1, x2, y2 = (int(v) for v in c["bbox"])
        assert changed[y1:y2, x1:x2].mean() > 0.5
    assert not changed[~inside].any()  # nothing outside the two crops moved
    assert len([p for p in summary["extra_files"] if "control_" in p]) == 4
    assert "grace" not in json.dumps(meta) and "astronaut" not in json.dumps(meta)


def test_cli_errors_name_the_problem(cli, photo_files):
    group, grace, plain = photo_files["group"], photo_files["grace"], photo_files["plain"]
    code, _, err = cli("template", "--template", group, "--face", f"3={grace}", *TINY)
    assert code == 2 and "has 2 faces" in err and "face 2: " in err
    code, _, err = cli("template", "--template", group, "--face", grace, "--target", "5", *TINY)
    assert code == 2 and "target face 5 does not exist" in err
    code, _, err = cli("template", "--template", plain, "--face", grace, *TINY)
    assert code == 2 and "no face found in the template" in err and "plain.png" in err
    code, _, err = cli("template", "--template", group, "--face", plain, *TINY)
    assert code == 2 and "plain.png" in err and "no face" in err
    code, _, err = cli("template", "--template", group, "--face", f"1={grace}", "--face", f"1={plain}", *TINY)
    assert code == 2 and "given twice" in err
    code, _, err = cli("template", "--template", group, "--face", f"1={grace}", "--face", grace, *TINY)
    assert code == 2 and "mix of" in err
    code, _, err = cli("template", "--template", group, "--face", grace, "--min-face-px", "400", *TINY)
    assert code == 2 and "too small" in err and "400 px" in err
    code, _, err = cli("template", "--template", group, *TINY)
    assert code == 2 and "no --face" in err
    code, _, err = cli("template", "--template", group, "--face", grace, *TINY, "--controls", "canny")
    assert code == 2 and "2 ControlNets but 1 control map (canny)" in err
    with pytest.raises(SystemExit) as exited:  # the flag's own choices, checked by argparse before any work
        cli("template", "--template", group, "--face", grace, *TINY, "--scheduler", "nope")
    assert exited.value.code == 2


def test_models_from_files_with_two_controlnets(cli, photo_files, tmp_path):
    """--base-model / --adapter / --encoder / --controlnet x2 from disk: the released layout, loaded
    as FACTStableDiffusionControlNetInpaintPipeline; provenance names the files and their hashes."""
    from facefact.model.checkpoints import save_adapter, save_encoder
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.metadata import read_png_metadata
    from facefact.pipelines.tiny import save_tiny_sd_pipeline, tiny_controlnet, tiny_sd_pipeline

    base = save_tiny_sd_pipeline(tmp_path / "base")
    unet = tiny_sd_pipeline().unet
    adapter = save_adapter(tiny_face_adapter(unet, seed=1), tmp_path / "adapter.safetensors")
    encoder = save_encoder(tiny_encoder(), tmp_path / "encoder.safetensors")
    tiny_controlnet(unet, 1).save_pretrained(tmp_path / "openpose")
    tiny_controlnet(unet, 2).save_pretrained(tmp_path / "canny")
    args = [a for a in TINY if a not in ("--model", "tiny")]
    code, out, err = cli("template", "--template", photo_files["astronaut"], "--face", photo_files["grace"], *args,
                         "--base-model", base, "--adapter", adapter, "--encoder", encoder,
                         "--controlnet", tmp_path / "openpose", "--controlnet", tmp_path / "canny",
                         "--device", "cpu", "--seed", "3", "--out", tmp_path / "out", "--no-refine")
    assert code == 0, err
    meta = read_png_metadata(out.strip().splitlines()[-1])
    assert meta["pipeline"]["class"] == "FACTStableDiffusionControlNetInpaintPipeline"
    assert [c["id"] for c in meta["models"]["controlnet"]] == ["openpose", "canny"]
    assert meta["models"]["adapter"]["id"] == "adapter.safetensors" and meta["models"]["adapter"].get("sha256")
    assert str(tmp_path) not in json.dumps(meta)  # names only, never the user's folders
