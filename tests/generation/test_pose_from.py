"""generate --pose-from PHOTO: the body pose drawn as the OpenPose ControlNet's image."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facefact.pipelines.metadata import read_png_metadata
from gen_cli_checks import fails


def test_pose_from_a_photo_drives_the_controlnet(cli, astronaut, tmp_path):
    pytest.importorskip("mediapipe", reason="the mediapipe extra is not installed")
    common = ["generate", "--model", "tiny", "--controlnet", "tiny", "--face", astronaut, "--prompt", "a portrait",
              "--steps", "2", "--size", "64", "--seed", "1", "--quiet"]
    code, out, err = cli(*common, "--pose-from", astronaut, "--out", tmp_path / "pose", "--save-control",
                         tmp_path / "ctl")
    assert code == 0, err
    control = np.asarray(Image.open(tmp_path / "ctl" / "control.png"))
    assert control.shape == np.asarray(Image.open(astronaut)).shape and control.any()  # the photo's size
    (path,) = (tmp_path / "pose").glob("*.png")
    meta = read_png_metadata(path)
    assert "body pose" in meta["control_image"] and "astronaut" not in str(meta)
    # the same map given as --control-image gives the same pixels
    code, _, err = cli(*common, "--control-image", tmp_path / "ctl" / "control.png", "--out", tmp_path / "image")
    assert code == 0, err
    (again,) = (tmp_path / "image").glob("*.png")
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(again)))


def test_pose_from_needs_a_controlnet_and_excludes_a_control_image(cli, astronaut, tmp_path):
    base = ["generate", "--model", "tiny", "--face", astronaut, "--prompt", "p", "--out", tmp_path]
    fails(cli(*base, "--pose-from", astronaut), "--pose-from needs an OpenPose --controlnet")
    fails(cli(*base, "--controlnet", "tiny", "--pose-from", astronaut, "--control-image", astronaut),
          "--pose-from and --control-image")
