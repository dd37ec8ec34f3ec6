"""Timing and peak memory of one call, the same on a CPU and a GPU (shared by the benchmarks and
the device check): CUDA work is synchronised before the clock is read."""
from __future__ import annotations

import ctypes
import gc
import time
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def peak_memory_mib(fn, device: torch.device) -> float:
    """Peak memory of one call. CUDA: max_memory_allocated. CPU: the process's peak RSS (VmHWM)
    during the call, weights and allocator cache included; freed heap is trimmed first and the
    peak reset through /proc/self/clear_refs, so one call's peak does not carry into the next."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return float("nan")
    fn()
    return proc_status_mib("VmHWM")


def proc_status_mib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return float("nan")
