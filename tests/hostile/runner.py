"""Run many `facefact` command lines, each in its own process, fast: the real CLI entry point
(facefact.cli.main.main) in a child forked from a parent that imported the heavy libraries once.

    python runner.py cases.json results.json

cases.json: [{"id", "argv", "cwd", "max_file_bytes"?}, ...]; results.json: {id: {"code", "output", "seconds",
"timed_out"}}. Each child gets its own stdout/stderr file, a memory limit (address space: what the parent maps
plus MEMORY_HEADROOM) and a wall-clock limit after which it is killed (a hang is a result, not a stuck test).
`max_file_bytes` makes the disk "full" for that case: no file may grow past it (RLIMIT_FSIZE; a write
beyond fails with EFBIG as a full disk fails with ENOSPC - no root, no mount needed).
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback

CASE_TIMEOUT_S = float(os.environ.get("FACEFACT_CORPUS_TIMEOUT", "90"))
MEMORY_HEADROOM = 6 * 1024**3


def _preload() -> None:
    """What the commands import anyway; imported once here, shared copy-on-write by every child."""
    import facefact.cli.main  # noqa: F401
    import torch  # noqa: F401
    import accelerate  # noqa: F401
    import diffusers  # noqa: F401
    import facefact.faces  # noqa: F401
    import facefact.model.checkpoints  # noqa: F401
    import facefact.training.trainer  # noqa: F401
    import facefact.evaluation  # noqa: F401
    import facefact.pipelines  # noqa: F401  (imports every diffusers pipeline class: seconds)

    torch.set_num_threads(1)


def _address_space_now() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(argv: list[str], cwd: str, output: str, max_file_bytes: int | None = None) -> None:
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False, errors="backslashreplace")
    os.chdir(cwd)
    limit = _address_space_now() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if max_file_bytes is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 1
    try:
        from facefact.cli.main import main

        code = int(main(argv) or 0)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except BaseException:  # noqa: BLE001 - what a crash looks like to the user: a traceback, exit 1
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        os._exit(code)


def run_case(case: dict, scratch: str) -> dict:
    output = os.path.join(scratch, f"{case['id']}.out")
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(case["argv"], case["cwd"], output, case.get("max_file_bytes"))
    timed_out, status = False, 0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - started > CASE_TIMEOUT_S:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.01)
    with open(output, encoding="utf-8", errors="backslashreplace") as handle:
        text = handle.read()
    code = os.waitstatus_to_exitcode(status)
    return {"code": code, "output": text, "seconds": round(time.monotonic() - started, 2), "timed_out": timed_out}


def main(cases_path: str, results_path: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    _preload()
    with open(cases_path) as handle:
        cases = json.load(handle)
    scratch = os.path.dirname(os.path.abspath(results_path))
    results = {case["id"]: run_case(case, scratch) for case in cases}
    with open(results_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
