"""The exit codes of every `facefact` command, defined once (documented in docs/refusals.md).

    0    OK             the command did what was asked
    1    CRASH          an unexpected error inside facefact (a bug: please report it with the traceback)
    2    USER_ERROR     bad input: a file, flag, setting or output folder facefact refuses (message says which)
    3    PROBLEM_FOUND  a checking command ran and found a problem (`faces inspect`: a photo without a usable
                        face; `models check`: a missing or bad file; `prepare`: no photo accepted)
    4    OUT_OF_MEMORY  the machine or the accelerator ran out of memory
    130  INTERRUPTED    Ctrl-C or SIGTERM (a container stop, `kill`); outputs written so far are complete files
"""
from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    CRASH = 1
    USER_ERROR = 2
    PROBLEM_FOUND = 3
    OUT_OF_MEMORY = 4
    INTERRUPTED = 130
