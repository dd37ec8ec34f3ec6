"""Masks of the template mode, with the released growth rules and the paste-back feathering.

Growth follows the release: a square kernel whose side is ``int(factor * sqrt(mask area))``
(so ``factor`` 0.04 widens a face mask by about 4 % of its size in total). Everything is binary
``uint8`` (0/1) except the paste weights, float32 in [0, 1].
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def grow(mask: np.ndarray, factor: float) -> np.ndarray:
    """``mask`` dilated by a square kernel of side ``int(factor * sqrt(area))`` (unchanged below 2)."""
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    side = int(math.sqrt(float(mask.sum())) * factor)
    if side < 2:
        return mask
    return cv2.dilate(mask, np.ones((side, side), np.uint8))


def split_at_eyes(above: np.ndarray, below: np.ndarray, eye_y: float) -> np.ndarray:
    """Rows above the eye line from ``above``, the eye row and those beneath from ``below``."""
    out = above.copy()
    row = int(np.clip(math.floor(eye_y), 0, out.shape[0]))
    out[row:] = below[row:]
    return out


def inpaint_mask(face: np.ndarray, eye_y: float, new_face: np.ndarray | None = None, *,
                 grow_all: float = 0.04, grow_below_eyes: float = 0.1) -> np.ndarray:
    """Where the main pass may redraw: the face grown by ``grow_all`` everywhere, and below the eye
    line grown again by ``grow_below_eyes``, but only into the face or the new face warped onto it
    (``new_face``), so jaw and chin can take the new shape while the hairline stays."""
    first = grow(face, grow_all)
    second = grow(first, grow_below_eyes)
    allowed = first if new_face is None else np.maximum(first, (new_face > 0).astype(np.uint8))
    return split_at_eyes(first, second * allowed, eye_y)


def canny_face_mask(face: np.ndarray, eye_y: float, *, grow_below_eyes: float = 0.05) -> np.ndarray:
    """Where the template's edges are removed from the Canny control: the face, grown below the
    eyes so the old jaw line does not pin the new one."""
    face = (face > 0).astype(np.uint8)
    return split_at_eyes(face, grow(face, grow_below_eyes), eye_y)


def _box_slices(bbox, origin, shape) -> tuple[slice, slice]:
    x1, y1, x2, y2 = bbox
    ox, oy = origin
    cols = slice(int(np.clip(math.floor(x1) - ox, 0, shape[1])), int(np.clip(math.ceil(x2) - ox, 0, shape[1])))
    rows = slice(int(np.clip(math.floor(y1) - oy, 0, shape[0])), int(np.clip(math.ceil(y2) - oy, 0, shape[0])))
    return rows, cols


def feather_kernels(k: int) -> tuple[int, int]:
    """(erode side, odd Gaussian side) of the release's paste feathering for unit ``k``."""
    return 2 * k, int(1.8 * k) * 2 + 1


def crop_feather(image_shape, rect, face_box, protected_boxes, k: int) -> np.ndarray:
    """The release's paste mask over ``rect`` (the crop's in-image part, template pixels): the crop
    area minus the protected boxes, eroded by ``2k``, blurred by ``~3.6k``, the target face box set to
    1, and zero again on the protected boxes and outside the crop.

    Computed on ``rect`` plus a margin rather than on the whole template - the same numbers
    (erosion and blur only reach that far) at a memory cost bounded by the crop.
    """
    erode_side, blur_side = feather_kernels(k)
    margin = erode_side + blur_side
    h, w = image_shape[:2]
    x1, y1, x2, y2 = rect
    wx1, wy1, wx2, wy2 = max(0, x1 - margin), max(0, y1 - margin), min(w, x2 + margin), min(h, y2 + margin)
    region = np.zeros((wy2 - wy1, wx2 - wx1), np.float32)
    region[y1 - wy1:y2 - wy1, x1 - wx1:x2 - wx1] = 1.0
    for box in protected_boxes:
        region[_box_slices(box, (wx1, wy1), region.shape)] = 0.0
    soft = cv2.erode(region, np.ones((erode_side, erode_side), np.uint8))
    soft = cv2.GaussianBlur(soft, (blur_side, blur_side), 0)
    soft[_box_slices(face_box, (wx1, wy1), soft.shape)] = 1.0
    soft *= region
    return soft[y1 - wy1:y2 - wy1, x1 - wx1:x2 - wx1]


def edit_feather(edited: np.ndarray, k: int) -> np.ndarray:
    """A soft border around the redrawn region (crop pixels): 1 on it, falling to exactly 0 within
    ``k + ~1.8k`` pixels outside. The paste never reaches further, so everything beyond is the
    template's own pixels."""
    edited = (edited > 0).astype(np.float32)
    side, blur_side = max(2, k), int(1.8 * k) * 2 + 1
    soft = cv2.GaussianBlur(cv2.dilate(edited, np.ones((side, side), np.uint8)), (blur_side, blur_side), 0)
    return np.maximum(soft, edited)


def paste_weight(crop, image_shape, edited: np.ndarray, face_box, protected_boxes=()) -> np.ndarray:
    """Weights (template pixels, over ``crop.inside(image_shape)``) for pasting a result crop back:
    the release's crop feathering, limited to a feathered border around what was redrawn
    (``edited``, crop pixels). Zero weight means the template's pixel is kept exactly."""
    rect = crop.inside(image_shape)
    outer = crop_feather(image_shape, rect, face_box, protected_boxes, crop.feather_k)
    unit = max(1, int(10 * crop.size / 512))
    inner = crop.uncrop(edit_feather(edited, unit), image_shape, interpolation=cv2.INTER_LINEAR)
    return np.minimum(outer, np.clip(inner, 0.0, 1.0)).astype(np.float32)
