"""FACT's own knobs of one call, checked before any work, and the two that need more than a number.

- `fact_window=(start, end)`: FACT acts only on the steps whose position in the schedule, i / N,
  lies in [start, end) (FACT's `delayed_face_condition`, PuLID's start step, ComfyUI's start_at /
  end_at). A late start keeps the base model's composition and lets the face settle in; start 1.0
  is the base model bit for bit. Switched per step by a `callback_on_step_end` placed in front of
  the user's own (which still runs, with its own tensor inputs).
- `face_regions=[box or mask, ...]` with `face_images=[identity, ...]` (one photo, a list of photos
  or FaceTokens each): several people in one image, identity k only inside region k (see
  facefact.model.regions). Boxes are (x0, y0, x1, y1) fractions of the image; masks are arrays of
  the image's size (or the latent's), nonzero inside.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from facefact.errors import ConfigError
from facefact.model.regions import FaceRegions, box_masks, check_region_masks
from facefact.pipelines.face_tokens import COMBINE_MODES, FaceTokens
from facefact.pipelines.settings import check_window


@dataclass
class FaceRequest:
    face_images: object = None
    face_tokens: object = None
    fact_scale: object = None
    cfg_face: bool = True
    face_combine: str = "concat"
    fact_window: tuple | None = None
    face_regions: list | None = None

    def check(self) -> None:
        if self.face_combine not in COMBINE_MODES:
            raise ConfigError(f"unknown face_combine '{self.face_combine}'", hint=f"use one of: {', '.join(COMBINE_MODES)}")
        if self.fact_window is not None:
            check_window(self.fact_window)
        if self.face_regions is not None:
            if self.face_tokens is not None:
                raise ConfigError("with face_regions, give each identity in face_images= (photos or FaceTokens)")
            identities = self.face_images if isinstance(self.face_images, (list, tuple)) else None
            if not identities or len(identities) != len(self.face_regions):
                given = len(identities) if identities else 0
                raise ConfigError(f"{len(self.face_regions)} face regions but {given} identities in face_images",
                                  hint="face_images=[identity 1, identity 2, ...] with one region each")

    def as_metadata(self) -> dict:
        out = {"face_combine": self.face_combine}
        if self.fact_window is not None:
            out["fact_window"] = [float(v) for v in self.fact_window]
        if self.face_regions is not None:
            out["face_regions"] = [list(map(float, r)) if _is_box(r) else "mask" for r in self.face_regions]
        return out


def fact_window_callback(pipe, adapter, window, bound, signature) -> None:
    """Put a step callback in front of the user's that switches FACT on inside the window."""
    from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

    start, end = check_window(window)
    scale = adapter.scale
    user = bound.arguments.get("callback_on_step_end")
    if user is not None and "callback_on_step_end_tensor_inputs" not in bound.arguments \
            and isinstance(user, (PipelineCallback, MultiPipelineCallbacks)):
        bound.arguments["callback_on_step_end_tensor_inputs"] = user.tensor_inputs

    def active(step: int, total: int) -> bool:
        return start <= step / max(total, 1) < end

    def switch(pipeline, step, timestep, callback_kwargs):
        total = getattr(pipeline, "num_timesteps", None) or len(pipeline.scheduler.timesteps)
        adapter.set_scale(scale if active(step + 1, total) else 0.0)  # for the next step
        return user(pipeline, step, timestep, callback_kwargs) if user is not None else callback_kwargs

    adapter.set_scale(scale if start == 0.0 else 0.0)  # step 0
    if "callback_on_step_end" not in signature.parameters:
        raise ConfigError(f"{type(pipe).__name__} takes no callback_on_step_end, so fact_window cannot be used")
    bound.arguments["callback_on_step_end"] = switch


def _is_box(region) -> bool:
    return isinstance(region, (list, tuple)) and len(region) == 4 and all(isinstance(v, (int, float)) for v in region)


def region_masks(regions, image_size: tuple[int, int], latent_size: tuple[int, int]) -> torch.Tensor:
    """Boxes or masks -> masks [K, h, w] at latent resolution, checked (inside [0, 1], not empty,
    not overlapping)."""
    import torch.nn.functional as F

    masks = []
    for k, region in enumerate(regions):
        if _is_box(region):
            x0, y0, x1, y1 = (float(v) for v in region)
            if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
                raise ConfigError(f"region {k + 1} {tuple(region)} is outside [0, 1]",
                                  hint="boxes are (x0, y0, x1, y1) as fractions of the image width and height")
            if x1 <= x0 or y1 <= y0:
                raise ConfigError(f"region {k + 1} {tuple(region)} is empty: x1 must exceed x0 and y1 exceed y0")
            masks.append(box_masks([(x0, y0, x1, y1)], latent_size)[0])
            continue
        array = np.asarray(region, dtype=np.float32)
        if array.ndim != 2:
            raise ConfigError(f"region {k + 1} is neither a box (x0, y0, x1, y1) nor a 2-D mask")
        mask = torch.from_numpy((array > 0).astype(np.float32))[None, None]
        if tuple(array.shape) != tuple(latent_size):
            if tuple(array.shape) != tuple(image_size):
                raise ConfigError(f"region {k + 1} mask is {array.shape[1]}x{array.shape[0]}; the image is "
                                  f"{image_size[1]}x{image_size[0]}", hint="give a mask of the image's size")
            mask = F.interpolate(mask, size=latent_size, mode="area")
        masks.append(mask[0, 0])
    stacked = torch.stack(masks)
    try:
        check_region_masks(stacked)
    except ValueError as err:
        raise ConfigError(str(err), hint="regions must be disjoint and at least 8x8 pixels") from err
    return stacked


def regions_for(pipe, request: FaceRequest, given) -> tuple[FaceTokens, FaceRegions]:
    """Each identity's FaceTokens, concatenated, and where each one acts."""
    identities = []
    for identity in request.face_images:
        if isinstance(identity, FaceTokens):  # checked against the loaded models as face_tokens= are
            identities.append(pipe._face_condition(None, identity))
        else:
            identities.append(pipe._face_condition(identity, None, request.face_combine))
    height = given("height") or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = given("width") or pipe.unet.config.sample_size * pipe.vae_scale_factor
    latent = (int(height) // pipe.vae_scale_factor, int(width) // pipe.vae_scale_factor)
    masks = region_masks(request.face_regions, (int(height), int(width)), latent)
    spans, start = [], 0
    for faces in identities:
        spans.append((start, start + faces.tokens.shape[1]))
        start += faces.tokens.shape[1]
    device = identities[0].tokens.device
    tokens = torch.cat([f.tokens.to(device) for f in identities], dim=1)
    null = torch.cat([f.null.to(device) for f in identities], dim=1)
    notes = [f"identity {k + 1}: {note}" for k, f in enumerate(identities) for note in f.notes]
    combined = FaceTokens(tokens, null, sum(f.num_photos for f in identities), notes, request.face_combine)
    return combined, FaceRegions(masks, spans)  # masks stay on the CPU: see FaceRegions._build
