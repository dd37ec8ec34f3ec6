"""Time face analysis stages on one 1024 px photo (CPU). Prints a table; asserts nothing.

    python bench/bench_faces.py [--embedder sface|dlib] [--repeats 20] [PHOTO]

Target on a 2-core CPU: <= 100 ms per photo for detection + landmarks + alignment + masks +
embedding with the default (YuNet + SFace + GrabCut) backends.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np


def _photo(path: str | None) -> np.ndarray:
    from facefact.faces import load_image

    if path:
        rgb = load_image(path)
    else:
        from skimage import data

        rgb = data.astronaut()
    scale = 1024 / max(rgb.shape[:2])
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


def main() -> None:
    from facefact.faces import FaceAnalysis

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", nargs="?")
    parser.add_argument("--embedder", default="sface", choices=["sface", "dlib"])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    rgb = _photo(args.photo)
    fa = FaceAnalysis(embedder=args.embedder)
    t0 = time.perf_counter()
    face = fa.get_one(rgb)
    fa.embed(rgb, face)
    warmup_ms = (time.perf_counter() - t0) * 1000

    stages = {
        "detect + landmarks + quality": lambda: fa.get(rgb),
        "align 112": lambda: fa.align(rgb, face),
        "context crop 512": lambda: fa.context_crop(rgb, face),
        "masks (face + head)": lambda: fa.masks(rgb, face),
        f"embed ({fa.embedder.name})": lambda: fa.embed(rgb, face),
    }
    times = {name: [] for name in stages}
    for _ in range(args.repeats):
        for name, fn in stages.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)

    print(f"photo {rgb.shape[1]}x{rgb.shape[0]}, face {face.quality.size_px:.0f} px, "
          f"{args.repeats} repeats, OpenCV threads {cv2.getNumThreads()}; first call incl. model load {warmup_ms:.0f} ms")
    print(f"{'stage':32s} {'median ms':>10s} {'min ms':>8s}")
    total = 0.0
    for name, values in times.items():
        median = statistics.median(values)
        total += median
        print(f"{name:32s} {median:10.1f} {min(values):8.1f}")
    print(f"{'total per photo':32s} {total:10.1f}")


if __name__ == "__main__":
    main()
