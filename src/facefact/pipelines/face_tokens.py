"""Reference photos -> FACT face tokens, once per request (spec sections 1-3, 5).

    condition = encode_face_tokens(photos, analysis, encoder, adapter, device)
    condition.tokens   # [1, 16n, C]: photos concatenated in the order given
    condition.null     # [1, 16n, C]: the resampler on zero encoder tokens (not zeros)
    condition.notes    # what face analysis said ("2 faces found; using the largest", ...)

`guidance_objs` lays them out for diffusers' UNet batch: [uncond rows..., cond rows...], the
null face tokens on the unconditional side when `cfg_face` (what the released apps do).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facefact.errors import ConfigError


@dataclass
class FaceTokens:
    tokens: torch.Tensor                 # [1, 16n, C]
    null: torch.Tensor                   # [1, 16n, C]
    num_photos: int
    notes: list[str] = field(default_factory=list)

    def to(self, device, dtype) -> "FaceTokens":
        return FaceTokens(self.tokens.to(device, dtype), self.null.to(device, dtype), self.num_photos, self.notes)


def guidance_objs(faces: FaceTokens, batch: int, do_cfg: bool, cfg_face: bool) -> torch.Tensor:
    """Face tokens for each row of the UNet batch: `batch` rows, twice that under guidance with the
    unconditional rows first (diffusers' order)."""
    cond = faces.tokens.expand(batch, -1, -1)
    if not do_cfg:
        return cond
    uncond = (faces.null if cfg_face else faces.tokens).expand(batch, -1, -1)
    return torch.cat([uncond, cond])


def face_pixels_from_photos(analysis, face_images, notes: list[str] | None = None) -> torch.Tensor:
    """Photos -> the FACT encoder's input [n, 3, 112, 112] in [-1, 1]: head-masked, aligned.

    Raises the face-analysis errors (no face, too small, ...) naming the photo. Callers that want
    to fail before loading any weights (the CLI) call this first and pass the pixels on.
    """
    if isinstance(face_images, (str, Path, np.ndarray)) or hasattr(face_images, "getpixel"):
        face_images = [face_images]  # one photo given on its own (path, array or PIL image)
    face_images = list(face_images)
    if not face_images:
        raise ConfigError("face_images is an empty list",
                          hint="pass at least one reference photo, or face_images=None for no face")
    crops = []
    for index, source in enumerate(face_images):
        name = str(source) if isinstance(source, (str, Path)) else None
        image = analysis.load(source)
        face = analysis.get_one(image, strict=False, path=name)  # clear errors: no face, too small...
        if notes is not None:  # photo names stay out of notes: notes go into image metadata
            notes.extend(f"reference photo {index + 1}: {note}" for note in face.notes)
        crops.append(analysis.fact_condition(image, face))
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return (pixels / 255.0 - 0.5) / 0.5


@torch.no_grad()
def encode_face_pixels(pixels: torch.Tensor, encoder, adapter, device, notes: list[str] | None = None) -> FaceTokens:
    """[n, 3, 112, 112] in [-1, 1] -> FaceTokens on `device`, in the resampler's dtype.

    The encoder always runs in float32 (spec); an outer autocast (training's validation images run
    under one) must not change that nor recast the resampler away from its own dtype."""
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, 112, 112):
        raise ConfigError(f"face pixels must be [n, 3, 112, 112], got {list(pixels.shape)}",
                          hint="pass face_images= (photos), or face pixels made by face_pixels_from_photos")
    device = torch.device(device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device.type, enabled=False))
        encoder_param = next(encoder.parameters())
        encoder_device = encoder_param.device
        tokens = encoder(pixels.to(encoder_device, torch.float32)).to(adapter.resampler.latents.device)
        face = adapter.face_tokens(tokens)
        null = adapter.null_face_tokens(len(pixels), tuple(tokens.shape[1:]))
    return FaceTokens(face.to(device), null.to(device), len(pixels), list(notes or []))
