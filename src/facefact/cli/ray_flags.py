"""`--ray [ADDRESS]` of the batch commands (prepare, evaluate): the flag, and how a command runs with it.

`add_ray_flag(parser, work)` adds the flag; `ray_run(args)` checks the extra before any work (a missing
`ray` is a one-line error, not a failure after the photos are listed) and, on a Ray run, sends stdout to
stderr while the work runs: Ray prints its own notes there (a lost worker's rows retried ...), and the
command's stdout carries its summary only, as in a local run.
"""
from __future__ import annotations

import contextlib
import sys


def add_ray_flag(parser, work: str) -> None:
    """`work`: what the cluster does, e.g. "analyse the photos on a Ray cluster (Ray Data actors)"."""
    parser.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                        help=f"{work}: ADDRESS is the head's HOST:PORT that `ray start --head` prints; 'auto' (or "
                             "no value): a private Ray instance on this machine. The same outputs as a local run, "
                             "written here; needs the ray extra (pip install -e \".[ray]\")")


def ray_run(args) -> contextlib.AbstractContextManager:
    """The context the command's work runs in (nothing special without --ray)."""
    if args.ray is None:
        return contextlib.nullcontext()
    from facefact.ray_batch import require_ray

    require_ray()
    return contextlib.redirect_stdout(sys.stderr)
