"""`--threads N` for the commands that run torch, and the default thread policy of the CLI.

Tiny models (32-channel layers) gain nothing from intra-op threads and lose a lot to them on a
small or busy machine: 20 tiny training steps took 100 s with torch's default threading on 2
cores and 20 s with one thread. So the CLI runs tiny models on a CPU with one thread unless
--threads says otherwise; real models keep torch's default (one thread per core). Only the CLI
sets this, for its own process and for the duration of the command; library calls never do.
"""
from __future__ import annotations

import argparse
import contextlib


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_threads_flag(parser) -> None:
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads for torch (default: 1 for tiny models on a CPU, where threads only "
                             "cost time; otherwise torch's default, one per core)")


def thread_count(requested: int | None, *, tiny: bool, on_cpu: bool) -> int | None:
    """The thread count to set, or None to leave torch's default."""
    if requested is not None:
        return requested
    return 1 if tiny and on_cpu else None


def runs_on_cpu(device: str | None) -> bool:
    """Whether torch work lands on the CPU: an explicit cpu device, or none given and no CUDA/MPS."""
    import torch

    if device is not None:
        return str(device).split(":")[0] == "cpu"
    mps = getattr(torch.backends, "mps", None)
    return not (torch.cuda.is_available() or (mps is not None and mps.is_available()))


@contextlib.contextmanager
def torch_threads(requested: int | None, *, tiny: bool, device: str | None):
    """Run the block with the policy's thread count, then put the process's count back."""
    import torch

    count = thread_count(requested, tiny=tiny, on_cpu=runs_on_cpu(device))
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
