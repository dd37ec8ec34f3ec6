"""FAIR - Face Adapting Increment Regularization (spec section 7), owned by training.

Each adapter layer's increment is what its fuser adds to the residual stream (output - input),
read by a forward hook on the fuser for as long as a `measuring()` context is open:

    L_FAIR(x) = ||increment * (1 - M)|| / ||x * (1 - M)||,   M = face mask at the layer's resolution

averaged over the batch and the 16 layers. Inference never carries these hooks.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from facefact.model import FaceAdapter


class FairRegularizer:
    def __init__(self, adapter: FaceAdapter):
        self.adapter = adapter
        self._mask: torch.Tensor | None = None
        self._values: dict[int, torch.Tensor] = {}  # id(fuser) -> [B], from the last forward pass

    @contextlib.contextmanager
    def measuring(self, face_mask: torch.Tensor):
        """Inside, each UNet forward pass records FAIR per layer; read it with `loss()`.

        face_mask: [B, 1, h, w] at latent resolution, 1 inside the face. With gradient
        checkpointing, run backward inside this context too: the recomputation re-runs the hooks."""
        self._mask, self._values = face_mask, {}
        handles = [fuser.register_forward_hook(self._record) for fuser in self.adapter.all_fusers()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._mask = None

    def _record(self, fuser, args, output) -> None:
        hidden_states = args[0]
        self._values[id(fuser)] = fair_value(hidden_states, output - hidden_states, self._mask)

    def loss(self) -> torch.Tensor:
        """Mean over layers (in block order) and batch of the values the last forward pass recorded."""
        values = [self._values[id(f)] for f in self.adapter.all_fusers() if id(f) in self._values]
        if not values:
            raise RuntimeError("no FAIR values recorded: run the UNet inside measuring() with face tokens")
        self._values = {}
        return torch.stack([v.mean() for v in values]).mean()


def fair_value(hidden_states: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """||delta * (1 - M)|| / ||h * (1 - M)|| per sample, M = face mask at this layer's resolution."""
    height, width = mask.shape[-2:]
    n_tokens = hidden_states.shape[1]
    while height * width > n_tokens:  # each UNet downsampling halves with ceil (stride 2, pad 1)
        height, width = (height + 1) // 2, (width + 1) // 2
    if height * width != n_tokens:
        raise ValueError(f"face mask {tuple(mask.shape[-2:])} does not match a layer with {n_tokens} tokens")
    outside = 1.0 - F.interpolate(mask.to(delta.dtype), size=(height, width), mode="area")
    outside = outside.flatten(2).transpose(1, 2)  # [B, tokens, 1]
    numerator = (delta * outside).flatten(1).norm(dim=1)
    denominator = (hidden_states * outside).flatten(1).norm(dim=1).clamp_min(1e-6)
    return numerator / denominator
