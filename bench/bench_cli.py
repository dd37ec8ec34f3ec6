"""CLI start-up times against the library doing the same work. Prints a table; asserts nothing.

    python bench/bench_cli.py [--repeats 3] [PHOTO]

Each row runs a fresh interpreter (what a user waits for) and reports the best of --repeats
wall-clock times and the peak memory of the process. Targets (issue 14): `facefact --help` < 1 s,
`facefact faces inspect PHOTO` < 3 s. The library rows do the same work without the CLI, so the
ratio shows what the command adds on top of the work itself.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LIBRARY_INSPECT = """
import sys
from facefact.faces import FaceAnalysis
fa = FaceAnalysis()
rgb = fa.load(sys.argv[1])
face = fa.get_one(rgb, path=sys.argv[1])
fa.embed(rgb, face)
"""


def _run(argv: list[str]) -> tuple[float, float]:
    """(seconds, peak MB) of one fresh process (os.wait4 gives that process's own peak)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 1):  # inspect exits 1 for an unusable photo: still a timing
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed:\n{err.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def _best(argv: list[str], repeats: int) -> tuple[float, float]:
    runs = [_run(argv) for _ in range(repeats)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", nargs="?", default=str(ROOT / "examples" / "astronaut.jpg"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    py = [sys.executable]
    cli = py + ["-m", "facefact.cli.main"]
    rows = [  # (what, command, target seconds or None, library row it is compared with or None)
        ("python itself", py + ["-c", "pass"], None, None),
        ("import facefact", py + ["-c", "import facefact"], None, None),
        ("facefact --help", cli + ["--help"], 1.0, "import facefact"),
        ("facefact generate --help", cli + ["generate", "--help"], 1.0, "import facefact"),
        ("facefact train --help", cli + ["train", "--help"], 1.0, "import facefact"),
        ("facefact evaluate --help", cli + ["evaluate", "--help"], 1.0, "import facefact"),
        ("library: inspect one photo", py + ["-c", LIBRARY_INSPECT, args.photo], None, None),
        ("facefact faces inspect PHOTO", cli + ["faces", "inspect", args.photo], 3.0, "library: inspect one photo"),
    ]
    times = {}
    print(f"{'what':<32}{'best s':>8}{'peak MB':>9}{'target':>8}{'vs library':>12}")
    for what, argv, target, versus in rows:
        seconds, peak = _best(argv, args.repeats)
        times[what] = seconds
        verdict = "" if target is None else (f"<{target:g} ok" if seconds < target else f"<{target:g} MISS")
        ratio = f"{seconds / times[versus]:.2f}x" if versus else ""
        print(f"{what:<32}{seconds:>8.2f}{peak:>9.0f}{verdict:>8}{ratio:>12}")


if __name__ == "__main__":
    main()
