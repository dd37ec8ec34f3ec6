"""`facefact train` start-up on a million-sample set: the single index.jsonl vs the sharded index.

    python bench/bench_index_startup.py                      # 1,000,000 samples, 10,000 people
    python bench/bench_index_startup.py --samples 100000

Synthesises the index only (entries shaped as `facefact prepare` writes them, ~850 bytes each with
the face record; no images: start-up must not touch them, which is the point), written once in each
form: one `index.jsonl` (sets prepared before format 2) and `index/` shards + manifest. Each form is
then timed in a fresh process from opening the index to the first batch's sample ids (and their face
shuffle partners): what `FaceTrainingSet` + `MicroBatchSampler` do before the first image is read.
The single file is read by today's reader (parsed whole, entries checked as strings); the former
reader also made 6 path lookups per sample (resolve + is_file of image, condition and mask):
that cost is measured on real files and scaled to the set, shown as its own row.
Prints a table with the ratio and the peak memory of each process; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_info import cpu_name  # bench/: beside this script

STORM_PROBE = 2000  # samples whose files are made to time the former per-sample checks


def synthetic_entries(samples: int, people: int):
    """Entries as prepare writes them: photos of a person adjacent, paths relative to the set."""
    per_person = max(samples // people, 1)
    for n in range(samples):
        sid = f"{n:016x}"
        yield {"id": sid, "identity": f"person{n // per_person:06d}", "caption": f"a photo of person {n // per_person}",
               "image": f"samples/{sid[-2:]}/{sid}.image.jpg", "condition": f"samples/{sid[-2:]}/{sid}.cond.png",
               "mask": f"samples/{sid[-2:]}/{sid}.mask.png", "mask_method": "grabcut+landmarks", "status": "accepted",
               "source": f"/data/photos/person{n // per_person:06d}/{n % per_person:04d}.jpg",
               "source_mtime_ns": 1796671402081768308 + n, "source_size": 77950 + n % 5000,
               "original_size": [1024, 768], "target_size": [512, 512], "crops_coords_top_left": [23, 93],
               "face": {"bbox": [159.83, 56.79, 246.87, 167.29], "detector": "yunet", "notes": [], "score": 0.93,
                        "landmarks": [[185.45, 102.02], [224.24, 102.04], [204.9, 123.82], [186.53, 139.48],
                                      [221.11, 140.4]],
                        "quality": {"cut_off": 0.0, "roll": 0.0231, "score": 0.9293, "sharpness": 0.3085,
                                    "size_px": 87.0448, "yaw": 0.1952}}}


def write_both(root: Path, samples: int, people: int) -> tuple[Path, Path]:
    from facefact.training.sample_index import LEGACY_INDEX_NAME, write_sample_index

    single, sharded = root / "single", root / "sharded"
    single.mkdir(parents=True)
    entries = list(synthetic_entries(samples, people))
    with open(single / LEGACY_INDEX_NAME, "w") as handle:  # as format 1 wrote it: one sorted-key line each
        handle.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    write_sample_index(sharded, entries)
    return single, sharded


def start_up(root: str, batch_size: int) -> dict:
    """In this process: open the index, the identities' photo counts (the face-shuffle check), the
    first batch's keys, then each drawn sample's id and a face-shuffle partner's id."""
    from facefact.training.data import MicroBatchSampler
    from facefact.training.sample_index import open_sample_index

    started = time.perf_counter()
    index = open_sample_index(root)
    lonely = sum(1 for count in index.photos_per_identity().values() if count < 2)
    keys = next(iter(MicroBatchSampler(len(index), batch_size, seed=0, start=0, stop=1)))
    ids = [(index[key.index]["id"], index[int(index.members(key.index)[-1])]["id"]) for key in keys]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "ids": ids, "lonely": lonely, "samples": len(index),
            "peak_rss_mb": _peak_memory_mb()}


def _peak_memory_mb() -> float:
    """This process's peak resident memory since it started. Linux's VmHWM, not getrusage's
    ru_maxrss, which keeps the parent's peak across fork + exec (the parent held the entries)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def per_sample_checks_seconds(root: Path) -> float:
    """Seconds per sample of the former loader's checks (resolve and is_file of its three files),
    timed on STORM_PROBE samples whose files exist."""
    entries = list(synthetic_entries(STORM_PROBE, 100))
    for entry in entries:
        for key in ("image", "condition", "mask"):
            (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            (root / entry[key]).touch()
    resolved_root = root.resolve()
    started = time.perf_counter()
    for entry in entries:
        for key in ("image", "condition", "mask"):
            assert (root / entry[key]).resolve().is_relative_to(resolved_root) and (root / entry[key]).is_file()
    return (time.perf_counter() - started) / STORM_PROBE


def _in_fresh_process(root: Path, batch_size: int) -> dict:
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_index_startup as b; " \
           f"print(json.dumps(b.start_up({str(root)!r}, {batch_size})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the start-up of {root} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="fresh-process timings per form (the best is shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        single, sharded = write_both(Path(tmp), args.samples, args.people)
        print(f"wrote {args.samples:,} entries in both forms in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        runs = {name: [_in_fresh_process(root, args.batch_size) for _ in range(args.repeats)]
                for name, root in (("single", single), ("sharded", sharded))}
        storm = per_sample_checks_seconds(Path(tmp) / "probe") * args.samples
        sizes = {"single": _size_mb(single / "index.jsonl"), "sharded": _size_mb(sharded / "index")}
    best = {name: min(r["seconds"] for r in results) for name, results in runs.items()}
    assert runs["single"][0]["ids"] == runs["sharded"][0]["ids"], "the two forms drew different samples"
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.samples:,} samples, {args.people:,} people, "
          f"batch {args.batch_size}; best of {args.repeats} fresh processes, files in the page cache")
    print("| index | on disk | start-up to the first batch's ids | peak memory | vs shards |")
    print("|---|---|---|---|---|")
    shards = best["sharded"]
    for name, label in (("single", "one index.jsonl (today's reader)"), ("sharded", "index/ shards + manifest")):
        peak = max(r["peak_rss_mb"] for r in runs[name])
        print(f"| {label} | {sizes[name]:.0f} MB | {best[name]:.2f} s | {peak:.0f} MB | x{best[name] / shards:.0f} |")
    print(f"| one index.jsonl, former reader (+ 6 path lookups per sample, est.) | {sizes['single']:.0f} MB | "
          f"{best['single'] + storm:.2f} s | - | x{(best['single'] + storm) / shards:.0f} |")


if __name__ == "__main__":
    main()
