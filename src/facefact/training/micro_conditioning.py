"""SDXL's size and crop micro-conditioning of a training sample (numpy only: prepare uses it too).

SDXL's UNet is told, with every image, `add_time_ids` = original size (h, w) + crop top-left
(top, left) + target size (h, w) - as diffusers' `train_text_to_image_sdxl.py` computes them:
the photo's size before any resizing, then where the training crop starts in the photo resized
for it, then the crop's size. `facefact prepare` records the three per sample (the fields below):
its crop is a square around the face, `crop_scale` x the face box, resized to `size`, which is the
same as resizing the whole photo by k = size / side and cutting `size` x `size` pixels at
(k * y1, k * x1); a crop that reaches past the photo's edge (black padding) starts at 0 there.

Sets prepared before these fields existed get what diffusers' SDXL pipelines assume when a caller
gives none: original size = target size, crop top-left = (0, 0) ("an uncropped image at the
training size"); training says so once (`MISSING_NOTE`).
"""
from __future__ import annotations

FIELDS = ("original_size", "crops_coords_top_left", "target_size")
MISSING_NOTE = ("the training set has no SDXL size/crop fields (prepared before they were recorded): using "
                "diffusers' SDXL defaults, original size = target size and crop top-left = (0, 0); run "
                "`facefact prepare` again into a new folder to record each photo's own")


def crop_fields(image_height: int, image_width: int, bbox, crop_scale: float, size: int) -> dict[str, list[int]]:
    """The record fields of a crop made by `FaceAnalysis.context_crop(image, face, crop_scale, size)`
    (the geometry of facefact.faces.align.context_matrix)."""
    from facefact.faces.align import context_matrix

    matrix = context_matrix(bbox, scale=crop_scale, size=size)  # photo px -> crop px: x' = k x + t
    left, top = (max(0, round(-float(matrix[i, 2]))) for i in (0, 1))
    return {"original_size": [int(image_height), int(image_width)], "crops_coords_top_left": [top, left],
            "target_size": [int(size), int(size)]}


def field_problem(record: dict) -> str | None:
    """What is wrong with a record's micro-conditioning fields (absent is fine: an older set), or None."""
    present = [name for name in FIELDS if name in record]
    if present and len(present) != len(FIELDS):
        return f"has {present} but not all of {list(FIELDS)}"
    for name in present:
        value = record[name]
        if not (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1_000_000 for v in value)):
            return f"{name} {value!r} is not a pair of whole numbers >= 0"
    if present and min(record["target_size"]) < 1:
        return f"target_size {record['target_size']!r} is not a positive size"
    return None


def time_ids(record: dict, resolution: int) -> list[float]:
    """SDXL's six numbers for a sample trained at `resolution` x `resolution`: the crop's top-left
    scaled from the size it was prepared at to the training size; the defaults for an older set."""
    if "original_size" not in record:
        return [float(resolution), float(resolution), 0.0, 0.0, float(resolution), float(resolution)]
    (height, width), (top, left) = record["original_size"], record["crops_coords_top_left"]
    scale = resolution / record["target_size"][0]
    return [float(height), float(width), float(round(top * scale)), float(round(left * scale)),
            float(resolution), float(resolution)]
