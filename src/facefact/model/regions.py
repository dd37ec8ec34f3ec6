"""Several people in one generated image: each identity's face tokens act only in its region.

`FaceRegions` travels with the face tokens to every fuser (through diffusers' `position_net`,
which hands the fusers what it returns). At each layer the visual tokens inside region k may attend
to identity k's face tokens only (all visual tokens stay visible to all), and tokens outside every
region are left exactly as they were: no identity there.

Regions are masks at latent resolution [K, h, w]; at a layer with fewer tokens (each UNet
downsampling halves with ceil) a cell belongs to region k when more than half of it is in k, so
regions that do not overlap never overlap at any layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class FaceRegions:
    def __init__(self, masks: torch.Tensor, spans: list[tuple[int, int]]):
        if masks.ndim != 3 or masks.shape[0] != len(spans):
            raise ValueError(f"regions: {masks.shape[0] if masks.ndim == 3 else '?'} masks for {len(spans)} identities")
        self.masks = masks.float()
        self.spans = list(spans)
        self._per_layer: dict[tuple, tuple] = {}

    @property
    def latent_size(self) -> tuple[int, int]:
        return tuple(self.masks.shape[-2:])

    @property
    def num_face_tokens(self) -> int:
        return self.spans[-1][1] if self.spans else 0

    def prepare(self, device) -> "FaceRegions":
        """Build every layer's masks on `device` now - each ceil-halving of the latent down to one
        cell - so that inside the denoising loop the fusers only look them up: no mask work, no
        host -> device copy (a synchronising one on a GPU), nothing for torch.compile to break on."""
        device = torch.empty(0, device=device).device  # "cuda" -> "cuda:0": the key the fusers' tensors give
        height, width = self.latent_size
        while True:
            self.layer(height * width, self.num_face_tokens, device)
            if height * width == 1:
                return self
            height, width = (height + 1) // 2, (width + 1) // 2

    def layer(self, n_tokens: int, n_faces: int, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(attention mask [N, N + F] or None when nothing is masked, inside-any-region [N, 1] or
        None when every token is inside one), for a layer of N visual tokens; cached per layer size
        (all of them built up front by `prepare`)."""
        key = (n_tokens, n_faces, str(device))
        if key not in self._per_layer:
            self._per_layer[key] = self._build(n_tokens, n_faces, device)
        return self._per_layer[key]

    def _build(self, n_tokens: int, n_faces: int, device):
        height, width = self.latent_size
        while height * width > n_tokens:
            height, width = (height + 1) // 2, (width + 1) // 2
        if height * width != n_tokens:
            raise ValueError(f"regions of a {self.latent_size} latent do not fit a layer of {n_tokens} tokens")
        # Built on the CPU, where the masks live, and moved once: the denoising loop on a GPU never
        # waits for a device -> host copy (`bool(t.all())` of a CUDA tensor would be one per layer).
        masks = self.masks.cpu()
        coverage = F.interpolate(masks[None], size=(height, width), mode="area")[0]  # [K, h, w]
        inside = (coverage > 0.5).flatten(1)  # [K, N]
        faces_allowed = torch.zeros(n_tokens, n_faces, dtype=torch.bool)
        for k, (start, end) in enumerate(self.spans):
            faces_allowed[:, start:end] = inside[k][:, None]
        mask = torch.cat([torch.ones(n_tokens, n_tokens, dtype=torch.bool), faces_allowed], dim=1)
        any_inside = inside.any(0)[:, None]
        return (None if bool(mask.all()) else mask.to(device)), (None if bool(any_inside.all()) else any_inside.to(device))


def box_masks(boxes, latent_size: tuple[int, int]) -> torch.Tensor:
    """Boxes (x0, y0, x1, y1) as fractions of the image -> masks [K, h, w] at latent resolution,
    one latent cell per 8x8 pixels, a cell in the box when its centre is."""
    height, width = latent_size
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / width
    masks = []
    for x0, y0, x1, y1 in boxes:
        masks.append(((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :])
    return torch.stack(masks).float()


def check_region_masks(masks: torch.Tensor) -> None:
    """Each region has a cell, no two overlap (clear errors, before any work)."""
    sizes = (masks > 0.5).flatten(1).sum(1)
    empty = [k + 1 for k, n in enumerate(sizes.tolist()) if n == 0]
    if empty:
        raise ValueError(f"region {empty[0]} covers no latent cell (8x8 pixels): make it larger")
    overlap = ((masks > 0.5).sum(0) > 1)
    if bool(overlap.any()):
        raise ValueError("face regions overlap: each part of the image can belong to one identity only")
