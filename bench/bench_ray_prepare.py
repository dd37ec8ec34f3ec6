"""`facefact prepare` throughput, local vs `--ray` with 1 and 2 workers, and the Ray path's overhead.

    python bench/bench_ray_prepare.py                # 48 photos of 512 px, training crops of 256 px
    python bench/bench_ray_prepare.py --photos 200 --size 512

Runs everything on this machine: the local run (one process), then a private Ray instance
(facefact.ray_local, loopback only, as `--ray auto`) with as many CPUs as the machine has, on which
`prepare --ray` runs with 1 and with 2 actors. Each Ray run counts from the call to the last file
written: connecting, starting the actors (each builds its face stack), the photos, disconnecting.
The per-job overhead is a one-photo Ray run minus a one-photo local run. On 2 cores the point is
correctness and overhead, not speed-up. Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cpu_info import cpu_name  # bench/: beside this script


def _photo_folder(root: Path, count: int, side: int) -> Path:
    """`count` photos of two people (the public-domain astronaut and Grace Hopper), mirrored and
    shifted so that no two files are the same."""
    import matplotlib.cbook as cbook
    from skimage import data

    people = {"astronaut": data.astronaut(),
              "hopper": np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))}
    for n in range(count):
        name = list(people)[n % 2]
        image = Image.fromarray(people[name]).convert("RGB")
        shift = 2 * (n // 2)
        image = image.crop((shift, shift, image.width - shift, image.height - shift)).resize((side, side))
        if (n // 2) % 2:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        (root / name).mkdir(parents=True, exist_ok=True)
        image.save(root / name / f"{n:04d}.jpg", quality=92)
    return root


def _timed_prepare(photos: Path, out: Path, size: int, **kwargs) -> float:
    from facefact.training.prepare import PrepareSettings, prepare_dataset

    start = time.perf_counter()
    summary = prepare_dataset(photos, out, PrepareSettings(size=size), progress=False, check_people=False, **kwargs)
    seconds = time.perf_counter() - start
    assert summary["processed_now"] == summary["photos"], summary
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--side", type=int, default=512, help="side of each input photo")
    parser.add_argument("--size", type=int, default=256, help="training crop side (prepare --size)")
    args = parser.parse_args()
    from facefact.ray_local import private_cluster

    with tempfile.TemporaryDirectory(prefix="bench-ray-prepare-") as tmp:
        tmp = Path(tmp)
        photos = _photo_folder(tmp / "photos", args.photos, args.side)
        one = _photo_folder(tmp / "one", 1, args.side)
        rows = [("local, 1 process", _timed_prepare(photos, tmp / "local", args.size))]
        local_one = _timed_prepare(one, tmp / "local-one", args.size)
        with private_cluster(cpus_per_node=os.cpu_count()) as address:
            for workers in (1, 2):
                rows.append((f"--ray, {workers} worker{'s' * (workers > 1)}",
                             _timed_prepare(photos, tmp / f"ray{workers}", args.size, ray=address, workers=workers)))
            ray_one = _timed_prepare(one, tmp / "ray-one", args.size, ray=address, workers=1)
        for name in ("ray1", "ray2"):  # the same files as the local run
            for path in (tmp / "local").rglob("*.jpg"):
                assert path.read_bytes() == (tmp / name / path.relative_to(tmp / "local")).read_bytes()
    print(f"{args.photos} photos of {args.side} px -> {args.size} px crops; {cpu_name()}, {os.cpu_count()} CPUs")
    base = args.photos / rows[0][1]
    print(f"{'run':22s} {'seconds':>9s} {'photos/s':>9s} {'vs local':>9s}")
    for name, seconds in rows:
        rate = args.photos / seconds
        print(f"{name:22s} {seconds:9.1f} {rate:9.2f} {rate / base:8.2f}x")
    print(f"per-job overhead of --ray (one photo: {ray_one:.1f} s on Ray, {local_one:.1f} s local): "
          f"{ray_one - local_one:.1f} s")


if __name__ == "__main__":
    main()
