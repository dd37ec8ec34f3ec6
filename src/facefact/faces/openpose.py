"""Pose maps with controlnet_aux's OpenPose (body, hands and face), for users who have its weights.

    openpose_map("me.jpg", "annotators/")     # RGB uint8, the photo's size: OpenPose's own drawing

The weights are lllyasviel/Annotators' `body_pose_model.pth`, `hand_pose_model.pth` and
`facenet.pth` in one local folder (nothing is downloaded). controlnet_aux is an optional
dependency, imported only here and only when asked: it imports torchvision when it is imported,
and facefact never installs torchvision (MediaPipe, facefact.faces.pose, is the offline default).
The files are pickles: each is opened with `torch.load(weights_only=True)` first, so one holding
anything but tensors is refused before controlnet_aux unpickles it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from facefact.errors import CheckpointError, ConfigError, ModelNotFoundError

ANNOTATOR_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
ANNOTATORS_REPO = "lllyasviel/Annotators"


def check_weights(folder: str | Path) -> Path:
    """The folder with the three OpenPose files, each a plain tensor file."""
    import torch

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelNotFoundError(f"OpenPose weights folder not found: {folder}", path=folder,
                                 hint=f"put {', '.join(ANNOTATOR_FILES)} from {ANNOTATORS_REPO} in one folder")
    missing = [name for name in ANNOTATOR_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelNotFoundError(f"the OpenPose weights folder lacks {', '.join(missing)}", path=folder,
                                 hint=f"download them from {ANNOTATORS_REPO} into {folder}")
    for name in ANNOTATOR_FILES:
        try:
            torch.load(folder / name, map_location="cpu", weights_only=True)
        except Exception as err:  # an unpickling error, a truncated file, not a torch file at all
            raise CheckpointError(f"{name} is not a plain PyTorch weights file ({type(err).__name__})",
                                  path=folder / name,
                                  hint=f"download it again from {ANNOTATORS_REPO}; facefact does not unpickle "
                                       "files that hold more than tensors") from err
    return folder


def load_detector(folder: str | Path):
    """controlnet_aux's OpenposeDetector on the checked local weights."""
    folder = check_weights(folder)
    if importlib.util.find_spec("controlnet_aux") is None:
        raise ConfigError("the OpenPose pose detector needs controlnet_aux, which is not installed",
                          hint="pip install --no-deps controlnet_aux (with a torchvision that matches your torch); "
                               "or use the MediaPipe pose detector, which needs neither")
    try:
        from controlnet_aux import OpenposeDetector
    except ImportError as err:  # usually torchvision, which controlnet_aux imports at its import
        raise ConfigError(f"controlnet_aux cannot be imported: {err}",
                          hint="install a torchvision that matches your torch, or use the MediaPipe pose detector") \
            from err
    return OpenposeDetector.from_pretrained(str(folder))


def openpose_map(image, weights: str | Path, *, hand_and_face: bool = True, detector=None) -> np.ndarray:
    """OpenPose's pose map of the photo (body, and hands and face unless told otherwise), drawn by
    controlnet_aux at the photo's longer side and returned at the photo's size, RGB uint8 on black."""
    import cv2

    from facefact.faces.image_io import load_image

    rgb = load_image(image)
    detector = detector or load_detector(weights)
    height, width = rgb.shape[:2]
    side = max(height, width)
    drawn = np.asarray(detector(rgb, detect_resolution=side, image_resolution=side, hand_and_face=hand_and_face,
                                return_pil=False), dtype=np.uint8)
    if drawn.ndim != 3 or drawn.shape[2] != 3:
        raise ConfigError(f"controlnet_aux's OpenPose returned an image of shape {drawn.shape}, not RGB",
                          hint="use the controlnet_aux version facefact documents, or the MediaPipe pose detector")
    if drawn.shape[:2] != (height, width):
        drawn = cv2.resize(drawn, (width, height), interpolation=cv2.INTER_NEAREST)
    return drawn
