"""``FaceAnalysis``: the one entry point for detecting, checking, aligning, masking and comparing faces."""
from __future__ import annotations

import threading
import warnings

import cv2
import numpy as np

from facefact.errors import MultipleFacesError, NoFaceError
from facefact.faces import align as _align
from facefact.faces.backends import DETECTORS, EMBEDDERS, make_backend
from facefact.faces.image_io import DEFAULT_MAX_PIXELS, ImageInput, load_image
from facefact.faces.masks import compute_masks
from facefact.faces.numbering import by_number, listing, number_faces, numbers_text
from facefact.faces.quality import check_quality, measure_quality
from facefact.faces.types import Face, FaceMasks, FaceWarning, QualityThresholds


def _source_name(image) -> str | None:
    return str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else None


class FaceAnalysis:
    """Detect faces and everything FACT needs from them, offline.

    >>> fa = FaceAnalysis()                       # YuNet detector + SFace embedder
    >>> face = fa.get_one("me.jpg")               # largest face, quality-checked
    >>> pixels = fa.fact_condition("me.jpg", face)  # 112x112 head-masked aligned face

    Models load on first use and stay on this object. One object may be shared by threads: its
    detector and embedder let one call in at a time (OpenCV's networks are not thread-safe), so
    results are those of one call at a time. Methods accept a path, a PIL image or an
    ``np.uint8`` RGB array; pass the array from :func:`load_image` to avoid decoding a file twice.
    """

    def __init__(self, *, detector="yunet", embedder="sface", mask_method: str = "grabcut",
                 thresholds: QualityThresholds | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 detector_options: dict | None = None, embedder_options: dict | None = None):
        self.detector = make_backend("detector", detector, DETECTORS, **(detector_options or {}))
        self._embedder_spec = (embedder, embedder_options or {})
        self._embedder = None
        self._embedder_lock = threading.Lock()  # threads asking first get the one embedder
        if isinstance(embedder, str) and embedder not in EMBEDDERS:
            make_backend("embedder", embedder, EMBEDDERS)  # raises ConfigError now, not on first embed
        self.mask_method = mask_method
        self.thresholds = thresholds or QualityThresholds()
        self.max_pixels = max_pixels

    @property
    def embedder(self):
        """The identity backend (``.name``, ``.threshold``: same-person cosine, ``.dim``)."""
        with self._embedder_lock:
            if self._embedder is None:
                name, options = self._embedder_spec
                self._embedder = make_backend("embedder", name, EMBEDDERS, **options)
        return self._embedder

    def describe(self) -> dict:
        return {"detector": self.detector.name, "embedder": self.embedder.name,
                "same_person_cosine_threshold": self.embedder.threshold, "mask_method": self.mask_method}

    # -- detection -------------------------------------------------------------------------

    def load(self, image: ImageInput) -> np.ndarray:
        return load_image(image, max_pixels=self.max_pixels)

    def get(self, image: ImageInput) -> list[Face]:
        """Every face in the photo, largest first, with box, score, landmarks and quality."""
        rgb = self.load(image)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        faces = [Face(bbox=d.bbox, score=d.score, landmarks=d.landmarks, detector=self.detector.name,
                      quality=measure_quality(gray, d.bbox, d.landmarks, d.score))
                 for d in self.detector.detect(rgb)]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def get_one(self, image: ImageInput, *, strict: bool = False, check: bool = True,
                path: str | None = None, number: int | None = None) -> Face:
        """The largest face; refuses a photo without a usable face with a clear error.

        Several faces: strict raises :class:`MultipleFacesError`, otherwise the largest is used,
        a :class:`FaceWarning` is issued and ``face.notes`` says so. ``check`` applies
        ``self.thresholds`` (size, cut off, pose, blur, score) and raises ``FaceQualityError``.
        ``path`` names the photo in messages when ``image`` is already an array. ``number`` picks
        one face of a group photo by its number (from 1, left to right, as `facefact faces inspect`
        and the template mode show them; ``facefact.faces.numbering``).
        """
        name = path or _source_name(image)
        faces = self.get(image)
        if number is not None and faces:
            face = self._numbered(faces, number, name)
            if check:
                check_quality(face, self.thresholds, path=name)
            return face
        if not faces:
            raise NoFaceError("no face found", path=name,
                              hint="use a photo with one clearly visible face, looking at the camera, "
                                   "at least ~100 px tall")
        if len(faces) > 1:
            if strict:
                raise MultipleFacesError(f"{len(faces)} faces found, exactly one is needed", path=name,
                                         hint="crop the photo to the person, or allow several faces (not "
                                              "strict) to use the largest one", setting="strict")
            number = next(n.number for n in number_faces(faces) if n.face is faces[0])
            note = (f"{len(faces)} faces found; using the largest, face {number} from the left "
                    f"({faces[0].width:.0f}x{faces[0].height:.0f} px)")
            faces[0].notes.append(note)
            warnings.warn(f"{name or 'photo'}: {note}", FaceWarning, stacklevel=2)
        if check:
            check_quality(faces[0], self.thresholds, path=name)
        return faces[0]

    @staticmethod
    def _numbered(faces: list[Face], number: int, name: str | None) -> Face:
        """The face with this number (from 1, left to right); NoFaceError naming the numbers there are."""
        numbered = number_faces(faces)
        chosen = by_number(numbered, number)
        if chosen is None:
            raise NoFaceError(f"face {number} asked for, but the photo has {len(faces)} face"
                              f"{'s' if len(faces) != 1 else ''}, {numbers_text(numbered)} ({listing(numbered)})",
                              path=name, hint="`facefact faces inspect PHOTO` shows the faces and their numbers")
        face = chosen.face
        face.notes.append(f"face {number} of {len(faces)} chosen, counting from the left "
                          f"({face.width:.0f}x{face.height:.0f} px at ({face.bbox[0]:.0f}, {face.bbox[1]:.0f}))")
        return face

    def check_quality(self, face: Face, *, path: str | None = None) -> None:
        check_quality(face, self.thresholds, path=path)

    # -- geometry ----------------------------------------------------------------------------

    def alignment_matrix(self, face: Face, size: int = 112) -> np.ndarray:
        return _align.alignment_matrix(face.landmarks, size)

    def align(self, image: ImageInput, face: Face, size: int = 112) -> np.ndarray:
        """Face warped onto the ArcFace template (spec section 1), ``size x size`` RGB, black borders."""
        return _align.warp(self.load(image), self.alignment_matrix(face, size), size)

    def context_crop(self, image: ImageInput, face: Face, scale: float = 1.5, size: int = 512, *,
                     border: str = "black", return_transform: bool = False):
        """Square crop ``scale`` x the face box around it, resized to ``size`` (black or 'edge' padding).

        With ``return_transform=True`` returns ``(crop, matrix)``; crop a mask the same way with
        ``facefact.faces.align.warp(mask, matrix, size)``, or use :meth:`context_crop_with_masks`.
        """
        matrix = _align.context_matrix(face.bbox, scale=scale, size=size)
        crop = _align.warp(self.load(image), matrix, size, border=border)
        return (crop, matrix) if return_transform else crop

    def context_crop_with_masks(self, image: ImageInput, face: Face, scale: float = 1.5, size: int = 512,
                                masks: FaceMasks | None = None, *, border: str = "black"):
        """``(crop, FaceMasks)`` cropped identically: what a training example needs."""
        rgb = self.load(image)
        masks = masks or self.masks(rgb, face)
        crop, matrix = self.context_crop(rgb, face, scale, size, border=border, return_transform=True)
        return crop, FaceMasks(face=_align.warp(masks.face, matrix, size), head=_align.warp(masks.head, matrix, size),
                               method=masks.method)

    # -- masks and FACT input -----------------------------------------------------------------

    def masks(self, image: ImageInput, face: Face, method: str | None = None) -> FaceMasks:
        """Face and head masks, float32 in [0, 1], at the photo's resolution."""
        return compute_masks(self.load(image), face, method=method or self.mask_method)

    def fact_condition(self, image: ImageInput, face: Face, masks: FaceMasks | None = None) -> np.ndarray:
        """The FACT encoder input: the photo times the head mask, then aligned to 112 x 112."""
        rgb = self.load(image)
        head = (masks or self.masks(rgb, face)).head
        masked = (rgb.astype(np.float32) * head[:, :, None] + 0.5).astype(np.uint8)
        return _align.warp(masked, self.alignment_matrix(face, 112), 112)

    # -- identity -------------------------------------------------------------------------------

    def embed(self, image: ImageInput, face: Face) -> np.ndarray:
        """L2-normalised identity embedding of ``face``; compare with :func:`cosine_similarity`
        against ``self.embedder.threshold``."""
        return self.embedder.embed(self.load(image), face.landmarks, face.bbox)

    def same_person(self, a: np.ndarray, b: np.ndarray) -> bool:
        return float(np.dot(a, b)) >= self.embedder.threshold
