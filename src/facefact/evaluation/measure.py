"""Time and peak memory of one generation call, and which kind of memory was measured.

* CUDA: ``torch.cuda.max_memory_allocated`` after a reset - the tensors' peak on the GPU
  (``mem_kind = "cuda-max-allocated"``).
* CPU: the process's resident set size sampled every 5 ms in a thread during the call
  (``mem_kind = "cpu-rss-peak"``). tracemalloc would miss torch's C++ allocations, and
  ``ru_maxrss`` never goes down, so it could not say anything about the second image of a run.
  This is the whole process (models included), not the increment of one image.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass


@dataclass
class Measurement:
    seconds: float
    peak_mb: float
    mem_kind: str


def _rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss
    except ImportError:  # Linux fallback without psutil
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval, self.peak = interval, _rss_bytes()
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, _rss_bytes())
        return self.peak


def generation_uses_cuda(device: str | None) -> bool:
    """Whether a method asked for ``device`` (None: its default, CUDA when there is one) runs on CUDA."""
    if device is not None:
        return str(device).startswith("cuda")
    import torch

    return torch.cuda.is_available()


def measure(fn, *args, cuda: bool = False, **kwargs):
    """Run ``fn(*args, **kwargs)``; return (result, :class:`Measurement`)."""
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return result, Measurement(seconds, torch.cuda.max_memory_allocated() / 2**20, "cuda-max-allocated")
    sampler = _RssSampler()
    sampler.start()
    start = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    finally:
        seconds = time.perf_counter() - start
        peak = sampler.stop()
    return result, Measurement(seconds, peak / 2**20, "cpu-rss-peak")
