"""Pure functions that decide *what* a step trains on; no state, so tests and resume can rely on them.

Curriculum (the paper names one without a schedule, spec section 7): training starts mostly on
self-reconstruction (condition photo = target photo: easy, the adapter learns to read the face
tokens at all), and the probability of *face shuffle* (condition = another photo of the same
person: the adapter must carry identity, not copy pose/lighting/expression) ramps up linearly:

    p_shuffle(step) = start + (end - start) * min(step / ramp_steps, 1)      (ramp_steps = 0: end)

Randomness: every per-sample decision and every noise draw comes from a generator seeded by
(seed, micro-step, slot in the global batch), never from a global RNG. A resumed run therefore makes exactly
the choices the uninterrupted run would have made, whatever happened before.
"""
from __future__ import annotations

import functools

import torch


def shuffle_probability(step: int, start: float, end: float, ramp_steps: int) -> float:
    """Face-shuffle probability at optimizer step `step` (0-based) under the linear curriculum."""
    if ramp_steps <= 0:
        return float(end)
    progress = min(max(step, 0) / ramp_steps, 1.0)
    return float(start + (end - start) * progress)


def generator_for(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, keys): reproducible, order independent."""
    mixed = seed & 0xFFFFFFFF
    for key in keys:  # splitmix-style mixing keeps nearby keys far apart
        mixed = (mixed * 0x9E3779B97F4A7C15 + key + 1) & 0xFFFFFFFFFFFFFFFF
        mixed ^= mixed >> 31
    return torch.Generator().manual_seed(mixed & 0x7FFFFFFFFFFFFFFF)


@functools.lru_cache(maxsize=4)
def epoch_order(num_samples: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(torch.randperm(num_samples, generator=generator_for(seed, 0xE90C, epoch)).tolist())


def micro_batch_indices(micro_step: int, batch_size: int, num_samples: int, seed: int,
                        world_size: int = 1, rank: int = 0) -> list[int]:
    """Sample indices for one micro-batch of one process. All processes together read
    batch_size * world_size consecutive entries of a per-epoch permutation (drawn again each epoch)."""
    per_step = batch_size * world_size
    first = micro_step * per_step + rank * batch_size
    out = []
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, num_samples)
        out.append(epoch_order(num_samples, seed, epoch)[offset])
    return out


def choose_condition(sample_index: int, identity_members: list[int], shuffle_p: float,
                     generator: torch.Generator) -> int:
    """Index of the sample whose condition photo conditions `sample_index`: with probability
    `shuffle_p` another photo of the same identity (never the image itself), else its own."""
    others = [i for i in identity_members if i != sample_index]
    if not others or torch.rand((), generator=generator).item() >= shuffle_p:
        return sample_index
    return others[int(torch.randint(len(others), (), generator=generator))]
