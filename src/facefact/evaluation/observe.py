"""Look at one generated image: faces, identity embeddings, pose, expression, the face region.

The embedders here are the evaluation's own (SFace, dlib, or ArcFace ONNX via insightface), never
FACT's TransFace conditioning encoder, so identity similarity is not measured by the model that was
optimised for it. Reference embeddings live only in memory for the run (privacy: they are never
written unless the caller asks for it).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from facefact.evaluation import metrics
from facefact.faces import Face, FaceAnalysis, load_image

FACE_MASK_GROW = 0.12   # face mask dilated by this fraction of the face width: edges blend into the background


@dataclass
class Observation:
    """What the analyzer saw in one image (``face`` is the largest one, or None)."""

    n_faces: int
    face: Face | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    mouth_open: float = math.nan
    smile: float = math.nan

    @property
    def detected(self) -> bool:
        return self.face is not None

    def row(self) -> dict:
        q = self.face.quality if self.face else None
        return {"detected": self.detected, "n_faces": self.n_faces,
                "face_score": float(self.face.score) if self.face else math.nan,
                "face_size_px": float(q.size_px) if q else math.nan,
                "yaw": float(q.yaw) if q else math.nan, "roll": float(q.roll) if q else math.nan,
                "mouth_open": self.mouth_open, "smile": self.smile}


def parse_embedder(spec: str) -> tuple[str, dict]:
    """``sface`` | ``dlib`` | ``arcface:PATH.onnx`` (insightface recognition model) -> backend name, options."""
    kind, _, arg = spec.partition(":")
    if kind in {"arcface", "insightface", "curricularface"}:
        return "insightface", {"model_path": arg or None}
    return kind, {}


class ImageAnalyzer:
    """Detection with YuNet, identity with one or more evaluation embedders, expression with dlib's 68 points."""

    def __init__(self, embedders: tuple[str, ...] | list[str] = ("sface",)):
        first, options = parse_embedder(embedders[0])
        self.faces = FaceAnalysis(embedder=first, embedder_options=options, mask_method="ellipse")
        self.embedders = {}   # name shown in results -> backend with .embed(rgb, landmarks, bbox)
        for spec in embedders:
            kind, opts = parse_embedder(spec)
            backend = self.faces.embedder if spec == embedders[0] else FaceAnalysis(
                embedder=kind, embedder_options=opts).embedder
            self.embedders[spec.partition(":")[0]] = backend
        self._landmarks68 = None
        self.notes: list[str] = []

    def check_models(self) -> None:
        """Load every embedder's weights now, so a missing or broken model fails before any image
        is generated (the backends otherwise load on first use)."""
        for backend in self.embedders.values():
            for loader in ("_model", "_models"):
                if callable(getattr(backend, loader, None)):
                    getattr(backend, loader)()

    @property
    def primary(self) -> str:
        return next(iter(self.embedders))

    def thresholds(self) -> dict[str, float]:
        return {name: float(b.threshold) for name, b in self.embedders.items()}

    def _shape68(self):
        if self._landmarks68 is None:
            try:
                import dlib

                from facefact.faces import model_files

                path = model_files._model_file("face_recognition_models", "models",
                                               "shape_predictor_68_face_landmarks.dat", "face-recognition-models")
                self._landmarks68 = dlib.shape_predictor(str(path))
            except Exception as err:  # optional: expression falls back to the 5-point smile ratio
                self._landmarks68 = False
                self.notes.append(f"mouth-open ratio unavailable (dlib 68-point model: {err})")
        return self._landmarks68 or None

    def _mouth_open(self, rgb: np.ndarray, face: Face) -> float:
        predictor = self._shape68()
        if predictor is None:
            return math.nan
        import dlib

        x1, y1, x2, y2 = (int(round(v)) for v in face.bbox)
        shape = predictor(rgb, dlib.rectangle(x1, y1, x2, y2))
        return metrics.mouth_open_ratio(np.array([(p.x, p.y) for p in shape.parts()]))

    def observe(self, image) -> Observation:
        rgb = load_image(image)
        faces = self.faces.get(rgb)
        if not faces:
            return Observation(n_faces=0)
        face = faces[0]
        embeddings = {name: b.embed(rgb, face.landmarks, face.bbox) for name, b in self.embedders.items()}
        return Observation(len(faces), face, embeddings, self._mouth_open(rgb, face),
                           metrics.smile_ratio(face.landmarks))

    def reference_embeddings(self, paths) -> dict[str, list[np.ndarray]]:
        """Embeddings of each reference photo's largest face (photos without a face are left out, with a warning)."""
        found: dict[str, list[np.ndarray]] = {name: [] for name in self.embedders}
        for path in paths:
            obs = self.observe(path)
            if not obs.detected:
                warnings.warn(f"{path}: no face found in the reference photo; it is left out of identity "
                              "similarity", stacklevel=2)
                continue
            for name, vec in obs.embeddings.items():
                found[name].append(vec)
        return found

    def face_region(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        mask = self.faces.masks(rgb, face).face
        return metrics.dilate(mask, int(round(FACE_MASK_GROW * face.width)))

    def outside_face(self, image: np.ndarray, obs: Observation, control: np.ndarray,
                     control_obs: Observation | None) -> tuple[np.ndarray, str]:
        """1 where a pixel is background in both images: outside the output's face (and the control's, if any).

        Without any detected face the usual portrait face box is excluded instead (``center-box``),
        so the number is still defined - and labelled, because it is then less precise.
        """
        region = np.zeros(image.shape[:2], np.float32)
        sources = []
        if obs.detected:
            region = np.maximum(region, self.face_region(image, obs.face))
            sources.append("output-face")
        if control_obs is not None and control_obs.detected:
            region = np.maximum(region, self.face_region(control, control_obs.face))
            sources.append("control-face")
        if not sources:
            region = metrics.box_mask(image.shape, metrics.default_face_box(image.shape), grow=1.0)
            sources.append("center-box")
        return 1.0 - region, "+".join(sources)
