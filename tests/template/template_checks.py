"""Checks the template-mode tests share: which pixels changed, and which a plan's edit may reach."""
from __future__ import annotations

import cv2
import numpy as np


def changed_pixels(a: np.ndarray, b) -> np.ndarray:
    return np.any(np.asarray(a) != np.asarray(b), axis=2)


def reach(plan, shape, margin_crop_px: int) -> np.ndarray:
    """Template pixels within ``margin_crop_px`` crop pixels of the plan's inpaint mask (independent of
    the paste code: the mask grown generously, mapped back by nearest neighbour)."""
    grown = cv2.dilate(plan.mask, np.ones((2 * margin_crop_px + 1,) * 2, np.uint8))
    crop = plan.crop
    region = crop.uncrop(grown, shape, interpolation=cv2.INTER_NEAREST) > 0
    full = np.zeros(shape[:2], bool)
    x1, y1, x2, y2 = crop.inside(shape)
    full[y1:y2, x1:x2] = region
    return full
