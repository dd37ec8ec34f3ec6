"""A pipeline's own torch CPU thread count, set for the length of its calls and then put back.

Tiny models (32-channel layers) gain nothing from intra-op threads and lose a lot to them on a
small or busy machine (`FACTStableDiffusionPipeline.tiny()`, 10 steps at 128 px on 2 busy cores:
47-81 s with torch's default 2 threads, 2.8-3.5 s with one). So a pipeline built by `.tiny()` has
`cpu_threads = 1`; every other pipeline has None and leaves torch's count alone. Outside a call
the process's count is untouched: the library never changes it for good.
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def scoped_cpu_threads(count: int | None):
    """Run the block with ``count`` torch threads (None: as they are), then restore the count."""
    if count is None:
        yield
        return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        from facefact.errors import ConfigError

        raise ConfigError(f"cpu_threads must be a whole number of at least 1 or None, not {count!r}",
                          setting="cpu_threads")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
