"""The seed each image of a call was made from, as far as it is known - never a made-up one.

The pipeline hands diffusers the `generator` it was given, unchanged: `None` draws from torch's
global RNG exactly as the diffusers parent does (`torch.manual_seed(0); pipe(...)` reproduces).
Provenance records a seed only when it is certain:

- a generator (or one per image) that nothing has drawn from yet: its seed;
- `generator=None` with the global RNG of the device the latents are drawn on untouched since
  `torch.manual_seed(s)`: s;
- anything else (a generator already used, a global RNG already drawn from): no seed is recorded.
"""
from __future__ import annotations

import torch


def call_seeds(generator, batch: int, device) -> list[int | None]:
    """The seed of each of the call's `batch` images (None: not known)."""
    if generator is None:
        return [fresh_seed(global_generator(device))] * batch
    if isinstance(generator, list):
        return ([fresh_seed(g) for g in generator] + [None] * batch)[:batch]
    return [fresh_seed(generator)] * batch  # one generator for the whole batch: image i is batch_index i


def global_generator(device) -> torch.Generator | None:
    """torch's default generator that `randn(device=device)` draws from (None where not known)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return None


def fresh_seed(generator: torch.Generator | None) -> int | None:
    """The generator's seed if nothing has been drawn from it since it was seeded, else None."""
    if generator is None:
        return None
    seed = generator.initial_seed()
    fresh = torch.Generator(generator.device).manual_seed(seed)
    return seed if torch.equal(fresh.get_state(), generator.get_state()) else None
