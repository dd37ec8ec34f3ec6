"""Detector and embedder backends behind two small interfaces, chosen explicitly by name.

Each backend loads its model on first use and keeps it on the instance (no module-level caches),
so two ``FaceAnalysis`` objects never share mutable OpenCV state. One backend may be called from
several threads (the server's job threads share one): OpenCV's and dlib's networks keep per-call
state on the object (YuNet's input size, the blobs of a forward pass) and are not thread-safe, so
each backend owns a lock and lets one call in at a time, model loading included.
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facefact.errors import CheckpointError, ConfigError
from facefact.faces import model_files
from facefact.faces.align import alignment_matrix, warp


@dataclass
class Detection:
    bbox: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # float32 [5, 2]


def _load_error(name: str, path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"cannot load the {name} model ({err})", path=path,
                           hint="the file may be corrupt; reinstall the package that ships it")


class YuNetDetector:
    """OpenCV YuNet (libfacedetection): boxes, scores and 5 landmarks, ~10 ms at 640 px on a CPU."""

    name = "yunet"

    def __init__(self, *, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 detect_size: int = 640, upright_refine: bool = True, refine_min_roll: float = 6.0):
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.detect_size = detect_size  # long side the photo is shrunk to before detection
        # YuNet's landmarks collapse towards an upright face when the head is tilted (20 degrees
        # of roll reads as ~3). dlib's 5-point predictor measures the eye line well, so for tilted
        # faces we rotate the face upright and let YuNet place its landmarks there.
        self.upright_refine = upright_refine
        self.refine_min_roll = refine_min_roll
        self._net = self._shape = None
        self._lock = threading.Lock()  # one detection at a time: setInputSize + detect share the net

    def _model(self):
        if self._net is None:
            path = model_files.yunet_path()
            try:
                self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), self.score_threshold,
                                                      self.nms_threshold, 5000)
            except cv2.error as err:
                raise _load_error("YuNet face detector", path, err) from err
        return self._net

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        with self._lock:
            return self._detect(rgb)

    def _detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.detect_size / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                    interpolation=cv2.INTER_AREA)
        net = self._model()
        net.setInputSize((small.shape[1], small.shape[0]))
        _, rows = net.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        sx, sy = w / small.shape[1], h / small.shape[0]
        found = []
        for row in [] if rows is None else rows:
            x, y, bw, bh = row[:4]
            marks = row[4:14].reshape(5, 2) * np.array([sx, sy])
            found.append(Detection(bbox=(float(x * sx), float(y * sy), float((x + bw) * sx), float((y + bh) * sy)),
                                   score=float(row[14]), landmarks=_image_order(marks)))
        if self.upright_refine:
            found = [self._refine_tilted(rgb, d) for d in found]
        return found

    def _eye_line_roll(self, rgb: np.ndarray, bbox) -> float:
        if self._shape is None:
            import dlib  # dlib-bin; its 5-point model is CC0 and ships in face-recognition-models

            self._shape = dlib.shape_predictor(str(model_files.dlib_shape5_path()))
        import dlib

        x1, y1, x2, y2 = (int(round(v)) for v in bbox)
        pts = np.array([(p.x, p.y) for p in self._shape(rgb, dlib.rectangle(x1, y1, x2, y2)).parts()], float)
        eye_a, eye_b = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)  # two corners per eye
        left, right = (eye_a, eye_b) if eye_a[0] < eye_b[0] else (eye_b, eye_a)
        return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))

    def _refine_tilted(self, rgb: np.ndarray, det: Detection) -> Detection:
        roll = self._eye_line_roll(rgb, det.bbox)
        if abs(roll) < self.refine_min_roll:
            return det
        x1, y1, x2, y2 = det.bbox
        side = 2.2 * max(x2 - x1, y2 - y1)
        k = min(1.0, 320.0 / side)
        out = max(32, int(round(side * k)))
        to_crop = cv2.getRotationMatrix2D(((x1 + x2) / 2, (y1 + y2) / 2), roll, k)  # roll -> upright
        to_crop[:, 2] += np.array([out / 2, out / 2]) - np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        crop = cv2.warpAffine(rgb, to_crop, (out, out), borderMode=cv2.BORDER_REPLICATE)
        net = self._model()
        net.setInputSize((out, out))
        _, rows = net.detect(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if rows is None:
            return det
        centres = rows[:, :2] + rows[:, 2:4] / 2
        row = rows[int(np.argmin(np.linalg.norm(centres - out / 2, axis=1)))]
        back = cv2.invertAffineTransform(to_crop)
        marks = row[4:14].reshape(5, 2).astype(np.float64) @ back[:, :2].T + back[:, 2]
        return Detection(bbox=det.bbox, score=det.score, landmarks=_image_order(marks))


def _image_order(marks: np.ndarray) -> np.ndarray:
    """YuNet gives the subject's right eye first, which is the eye left in the image; keep the
    spec's "smaller x first" rule robust to mirrored or upside-down faces anyway."""
    marks = np.asarray(marks, dtype=np.float32).copy()
    if marks[0, 0] > marks[1, 0]:
        marks[[0, 1]] = marks[[1, 0]]
    if marks[3, 0] > marks[4, 0]:
        marks[[3, 4]] = marks[[4, 3]]
    return marks


class SFaceEmbedder:
    """OpenCV SFace (MobileFaceNet, 128-d) on the 112 px ArcFace-aligned crop.

    ``threshold``: cosine 0.363, OpenCV's documented same-person threshold for SFace."""

    name = "sface"
    dim = 128
    threshold = 0.363

    def __init__(self):
        self._net = None
        self._lock = threading.Lock()

    def _model(self):
        if self._net is None:
            path = model_files.sface_path()
            try:
                self._net = cv2.FaceRecognizerSF.create(str(path), "")
            except cv2.error as err:
                raise _load_error("SFace face recognizer", path, err) from err
        return self._net

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray, bbox) -> np.ndarray:
        crop = warp(rgb, alignment_matrix(landmarks, 112), 112)
        with self._lock:
            feature = self._model().feature(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)).reshape(-1)
        return _l2_normalise(feature)


class DlibEmbedder:
    """dlib's ResNet-34 face descriptor (128-d; dlib-models, CC0), landmarks from its 5-point model.

    dlib's own rule is "same person if the euclidean distance of raw descriptors < 0.6". Raw
    descriptors have a nearly constant norm n ~ 1.42, and for equal norms d^2 = 2 n^2 (1 - cos), so
    on our L2-normalised embeddings that rule is cos > 1 - 0.6^2 / (2 * 1.42^2) ~ 0.911: ``threshold``.
    """

    name = "dlib"
    dim = 128
    native_distance_threshold = 0.6
    typical_raw_norm = 1.42
    threshold = round(1.0 - native_distance_threshold ** 2 / (2.0 * typical_raw_norm ** 2), 3)

    def __init__(self, *, jitters: int = 0):
        self.jitters = jitters  # dlib's test-time augmentation; 0 keeps it at ~70 ms a face
        self._shape = self._net = None
        self._lock = threading.Lock()

    def _models(self):
        if self._net is None:
            import dlib  # from dlib-bin; imported here so sface-only users never pay for it

            shape_path, net_path = model_files.dlib_shape5_path(), model_files.dlib_resnet_path()
            try:
                self._shape = dlib.shape_predictor(str(shape_path))
                self._net = dlib.face_recognition_model_v1(str(net_path))
            except RuntimeError as err:
                raise _load_error("dlib face", net_path, err) from err
        return self._shape, self._net

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray, bbox) -> np.ndarray:
        import dlib

        # dlib's 5-point model places its own landmarks inside our detector's box; its chip
        # alignment expects exactly those, so we do not substitute YuNet's points.
        x1, y1, x2, y2 = (int(round(v)) for v in bbox)
        with self._lock:
            shape_model, net = self._models()
            shape = shape_model(rgb, dlib.rectangle(x1, y1, x2, y2))
            raw = np.asarray(net.compute_face_descriptor(rgb, shape, self.jitters), dtype=np.float32)
        return _l2_normalise(raw)


class InsightFaceEmbedder:
    """ArcFace via insightface, only when it is installed and its ONNX file is given (no downloads)."""

    name = "insightface"
    dim = 512
    threshold = 0.28  # common verification threshold for buffalo_l w600k_r50 cosine similarity

    def __init__(self, *, model_path: str | Path | None = None):
        if importlib.util.find_spec("insightface") is None:
            raise ConfigError("the insightface embedder needs the insightface package, which is not installed",
                              hint="pip install 'facefact[insightface]', or use the sface or dlib embedder",
                              setting="embedder")
        if model_path is None or not Path(model_path).is_file():
            raise ConfigError("the insightface embedder needs model_path= pointing to a recognition ONNX "
                              "file (e.g. ~/.insightface/models/buffalo_l/w600k_r50.onnx)",
                              path=model_path, hint="facefact never downloads insightface models itself")
        self.model_path = Path(model_path)
        self._net = None
        self._lock = threading.Lock()

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray, bbox) -> np.ndarray:
        crop = warp(rgb, alignment_matrix(landmarks, 112), 112)
        with self._lock:
            if self._net is None:
                from insightface.model_zoo import get_model

                self._net = get_model(str(self.model_path))
                self._net.prepare(ctx_id=-1)
            feature = self._net.get_feat(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)).reshape(-1)
        return _l2_normalise(feature)


EMBEDDERS = {"sface": SFaceEmbedder, "dlib": DlibEmbedder, "insightface": InsightFaceEmbedder}
DETECTORS = {"yunet": YuNetDetector}


def make_backend(kind: str, name, table: dict, **kwargs):
    if not isinstance(name, str):
        return name  # an already-built backend object (duck-typed), e.g. in tests
    if name not in table:
        raise ConfigError(f"unknown face {kind} '{name}'", hint=f"choose one of: {', '.join(table)}")
    return table[name](**kwargs)


def _l2_normalise(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def cosine_similarity(a: np.ndarray, b: np.ndarray):
    """Cosine similarity of two vectors (a float), or the matrix between rows of 2-D inputs."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a2, b2 = np.atleast_2d(a), np.atleast_2d(b)
    a2 = a2 / np.maximum(np.linalg.norm(a2, axis=1, keepdims=True), 1e-12)
    b2 = b2 / np.maximum(np.linalg.norm(b2, axis=1, keepdims=True), 1e-12)
    sim = a2 @ b2.T
    return float(sim[0, 0]) if a.ndim == 1 and b.ndim == 1 else sim
