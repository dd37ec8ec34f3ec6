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


# ---- --pose-detector openpose:DIR (controlnet_aux, optional) ----------------------------------------------
class StandInOpenpose:
    """controlnet_aux's OpenposeDetector contract (from_pretrained(folder), __call__(image, detect_resolution,
    image_resolution, hand_and_face, return_pil)): like it, the map comes back with its shorter side at
    image_resolution rounded to 64 px, not at the photo's size. It marks the photo's brightest column."""
    calls: list = []

    @classmethod
    def from_pretrained(cls, folder):
        cls.calls.append(("from_pretrained", folder))
        return cls()

    def __call__(self, image, detect_resolution=512, image_resolution=512, hand_and_face=False, return_pil=True):
        image = np.asarray(image)
        self.calls.append(("call", image.shape, detect_resolution, image_resolution, hand_and_face, return_pil))
        h, w = image.shape[:2]
        k = image_resolution / min(h, w)
        out_h, out_w = (int(round(v * k / 64.0)) * 64 for v in (h, w))
        canvas = np.zeros((out_h, out_w, 3), np.uint8)
        column = int(image.mean((0, 2)).argmax() * out_w / w)
        canvas[:, column] = (255, 0, 0)
        return canvas


@pytest.fixture
def annotator_weights(tmp_path):
    import torch

    folder = tmp_path / "annotators"
    folder.mkdir()
    for name in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
        torch.save({"conv.weight": torch.ones(2, 2)}, folder / name)
    return folder


@pytest.fixture
def stand_in_controlnet_aux(monkeypatch):
    import importlib.machinery
    import sys
    import types

    module = types.ModuleType("controlnet_aux")
    module.__spec__ = importlib.machinery.ModuleSpec("controlnet_aux", None)
    module.OpenposeDetector = StandInOpenpose
    StandInOpenpose.calls = []
    monkeypatch.setitem(sys.modules, "controlnet_aux", module)
    return StandInOpenpose.calls


def test_openpose_detector_from_local_weights_draws_the_control_map(cli, astronaut, tmp_path, annotator_weights,
                                                                   stand_in_controlnet_aux):
    code, _, err = cli("generate", "--model", "tiny", "--controlnet", "tiny", "--face", astronaut, "--prompt", "p",
                       "--steps", "2", "--size", "64", "--seed", "1", "--quiet", "--pose-from", astronaut,
                       "--pose-detector", f"openpose:{annotator_weights}", "--out", tmp_path / "out",
                       "--save-control", tmp_path / "ctl")
    assert code == 0, err
    photo = np.asarray(Image.open(astronaut).convert("RGB"))
    assert stand_in_controlnet_aux[0] == ("from_pretrained", str(annotator_weights))
    _, shape, detect, resolution, hand_and_face, return_pil = stand_in_controlnet_aux[1]
    assert shape == photo.shape and detect == resolution == max(photo.shape[:2])
    assert hand_and_face is True and return_pil is False
    control = np.asarray(Image.open(tmp_path / "ctl" / "control.png"))
    assert control.shape == photo.shape  # back at the photo's size
    (marked,) = np.flatnonzero(control[..., 0].any(0))
    assert abs(marked - photo.mean((0, 2)).argmax()) <= 1  # the detector's drawing, in the photo's geometry
    (image,) = (tmp_path / "out").glob("*.png")
    meta = read_png_metadata(image)
    assert "controlnet_aux OpenPose" in meta["control_image"] and "astronaut" not in str(meta)


def test_openpose_detector_refuses_what_it_cannot_use(cli, astronaut, tmp_path, annotator_weights, monkeypatch):
    import sys

    import torch

    base = ["generate", "--model", "tiny", "--controlnet", "tiny", "--face", astronaut, "--prompt", "p",
            "--pose-from", astronaut, "--out", tmp_path / "out"]
    fails(cli(*base, "--pose-detector", "openpose"), "unknown --pose-detector 'openpose'", "openpose:DIR")
    fails(cli(*base, "--pose-detector", "yolo:x"), "unknown --pose-detector")
    fails(cli(*base[:-4], "--out", tmp_path / "out", "--pose-detector", f"openpose:{annotator_weights}"),
          "--pose-detector goes with --pose-from")
    fails(cli(*base, "--pose-detector", f"openpose:{tmp_path / 'nowhere'}"), "OpenPose weights folder not found")
    monkeypatch.setitem(sys.modules, "controlnet_aux", None)  # not installed
    fails(cli(*base, "--pose-detector", f"openpose:{annotator_weights}"), "needs controlnet_aux",
          "or use the MediaPipe pose detector")
    (annotator_weights / "facenet.pth").unlink()
    fails(cli(*base, "--pose-detector", f"openpose:{annotator_weights}"), "lacks facenet.pth")
    torch.save({"weights": torch.ones(1), "code": StandInOpenpose()}, annotator_weights / "facenet.pth")
    fails(cli(*base, "--pose-detector", f"openpose:{annotator_weights}"), "facenet.pth is not a plain PyTorch")
    assert not (tmp_path / "out").exists()
