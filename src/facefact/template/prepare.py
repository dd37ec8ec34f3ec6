"""Everything one target face needs before any diffusion: crop, masks, control maps.

Pure numpy / OpenCV: the crop of the template (other faces blacked out), the face mask and eye
line in crop pixels, the new person's landmarks and face region warped onto the template face by
a 5-point similarity, the inpaint mask, and the control maps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from facefact.faces.align import similarity_transform, transform_points
from facefact.faces.masks import face_mask
from facefact.faces.types import Face
from facefact.template import controls as _controls
from facefact.template import masks as _masks
from facefact.template.faces import TemplateFace
from facefact.template.geometry import SquareCrop
from facefact.template.settings import TemplateSettings


@dataclass
class Identity:
    """The person to put into one template face: their photo(s) and the face found in each."""

    photos: list[np.ndarray]
    faces: list[Face]
    notes: list[str] = field(default_factory=list)

    @property
    def photo(self) -> np.ndarray:  # the first photo drives the geometry (landmarks, face shape)
        return self.photos[0]

    @property
    def face(self) -> Face:
        return self.faces[0]


@dataclass
class TargetPlan:
    """One target face, ready for the pipeline. Arrays are ``crop.size`` square, crop pixels."""

    target: TemplateFace
    crop: SquareCrop
    image: np.ndarray                 # RGB crop of the working template (other faces black)
    face: Face                        # the target face in crop coordinates
    face_mask: np.ndarray             # uint8 0/1
    eye_y: float
    new_face_mask: np.ndarray         # the new person's face warped onto the target, uint8 0/1
    face_points: np.ndarray           # landmarks drawn into the face map (crop coordinates)
    mask: np.ndarray                  # inpaint mask of the main pass, uint8 0/1
    controls: dict[str, np.ndarray]   # name -> RGB uint8 map
    protected: list[tuple]            # other kept faces' boxes (template pixels): never pasted over
    identity: Identity
    shape_from: str = "face photo"    # where the new face's landmarks came from


def face_in_crop(face: Face, crop: SquareCrop) -> Face:
    return dataclasses.replace(face, bbox=crop.box_to_crop(face.bbox),
                               landmarks=crop.to_crop(face.landmarks).astype(np.float32), notes=[])


def working_copy(template: np.ndarray, others: list[TemplateFace], black_out: bool) -> np.ndarray:
    """The template with the other kept faces painted black (the release does this so the identity
    is not drawn onto them); the template itself is left alone."""
    if not black_out or not others:
        return template
    work = template.copy()
    for other in others:
        x1, y1, x2, y2 = other.bbox
        work[max(0, int(np.floor(y1))):max(0, int(np.ceil(y2))), max(0, int(np.floor(x1))):max(0, int(np.ceil(x2)))] = 0
    return work


def _mask_u8(mask) -> np.ndarray:
    return (np.asarray(mask) > 0).astype(np.uint8)


def new_person_geometry(identity: Identity, crop_face: Face, size: int, settings: TemplateSettings,
                        landmarker=None) -> tuple[np.ndarray, np.ndarray]:
    """(face-map points, new-face mask) of the new person, warped onto the target face in the crop
    by the similarity that best maps their 5 landmarks onto the target's."""
    matrix = similarity_transform(identity.face.landmarks, crop_face.landmarks)
    if settings.face_points == "dlib68":
        points68 = landmarker(identity.photo, identity.face.bbox)
        own = _controls.openpose_face_points(points68, identity.face.landmarks)
        warped = transform_points(own, matrix)
        new_face = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(new_face, cv2.convexHull(np.round(warped[:68]).astype(np.int32)), 1)
    else:
        warped = transform_points(identity.face.landmarks, matrix)
        own_mask = face_mask(identity.photo.shape, identity.face)
        new_face = cv2.warpAffine(own_mask, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
    return warped, _mask_u8(new_face)


def template_points(image: np.ndarray, crop_face: Face, settings: TemplateSettings, landmarker=None) -> np.ndarray:
    if settings.face_points == "dlib68":
        return _controls.openpose_face_points(landmarker(image, crop_face.bbox), crop_face.landmarks)
    return crop_face.landmarks.astype(np.float64)


def make_controls(image: np.ndarray, points: np.ndarray, face_m: np.ndarray, eye_y: float,
                  settings: TemplateSettings, *, mask_face_edges: bool = True) -> dict[str, np.ndarray]:
    """The control maps ``settings.controls`` names, at the crop's size."""
    size = image.shape[0]
    out = {}
    if "face_pose" in settings.controls:
        out["face_pose"] = _controls.face_pose_map(points, size)
    if "canny" in settings.controls:
        region = (_masks.canny_face_mask(face_m, eye_y, grow_below_eyes=settings.canny_face_grow)
                  if mask_face_edges else None)
        out["canny"] = _controls.canny_map(image, region, low=settings.canny_low, high=settings.canny_high)
    return out


def plan_target(template: np.ndarray, faces: list[TemplateFace], target: TemplateFace, identity: Identity,
                settings: TemplateSettings, landmarker=None, *, shape_from: Identity | None = None) -> TargetPlan:
    """Crop, masks and controls for redrawing ``target`` with ``identity``; ``landmarker`` (a
    :class:`~facefact.template.controls.Dlib68`) is made when ``face_points="dlib68"`` needs one.
    ``shape_from``: where the new face's landmarks and region come from (the pose stage's portrait),
    when not from the identity's own photo."""
    if settings.face_points == "dlib68" and landmarker is None:
        landmarker = _controls.Dlib68()
    others = [f for f in faces if f.number != target.number]
    crop = SquareCrop.around(target.bbox, face_fraction=settings.face_fraction, size=settings.crop_size)
    image = crop.crop(working_copy(template, others, settings.black_out_others))
    crop_face = face_in_crop(target.face, crop)
    face_m = face_mask(image.shape, crop_face)
    eye_y = float(crop_face.landmarks[:2, 1].mean())
    new_points, new_face = new_person_geometry(shape_from or identity, crop_face, crop.size, settings, landmarker)
    points = new_points if settings.landmark_source == "face_photo" else template_points(
        image, crop_face, settings, landmarker)
    mask = _masks.inpaint_mask(face_m, eye_y, new_face, grow_all=settings.mask_grow,
                               grow_below_eyes=settings.mask_grow_below_eyes)
    return TargetPlan(target=target, crop=crop, image=image, face=crop_face, face_mask=face_m, eye_y=eye_y,
                      new_face_mask=new_face, face_points=points, mask=mask,
                      controls=make_controls(image, points, face_m, eye_y, settings),
                      protected=[f.bbox for f in others], identity=identity,
                      shape_from="pose stage portrait" if shape_from is not None else "face photo")


def refine_inputs(plan: TargetPlan, result: np.ndarray, settings: TemplateSettings,
                  analysis=None, landmarker=None) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """(mask, controls, notes) of the refine pass on the main pass's result crop: the face found
    in the result (the template's face when none is found near it), grown by ``refine_mask_grow``;
    Canny of the whole result (no face masking, as released) and the face map of that face."""
    notes: list[str] = []
    if settings.face_points == "dlib68" and landmarker is None:
        landmarker = _controls.Dlib68()
    face = plan.face
    if analysis is not None:
        found = [f for f in analysis.get(result) if plan.mask[_clamped(f.bbox, result.shape)] > 0]
        if found:
            face = found[0]
        else:
            notes.append(f"refine pass, face {plan.target.number}: no face found in the main pass's result; "
                         "the template face's position is used")
    face_m = face_mask(result.shape, face)
    points = plan.face_points if face is plan.face else template_points(result, face, settings, landmarker)
    mask = _masks.grow(face_m, settings.refine_mask_grow)
    eye_y = float(face.landmarks[:2, 1].mean())
    return mask, make_controls(result, points, face_m, eye_y, settings, mask_face_edges=False), notes


def _clamped(bbox, shape) -> tuple[int, int]:
    """(row, col) of the box centre, inside the image."""
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return int(np.clip(cy, 0, shape[0] - 1)), int(np.clip(cx, 0, shape[1] - 1))
