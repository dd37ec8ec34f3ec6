"""Contact sheets of facefact's identity controls, on the tiny models (run it with real weights:
pass --base-model/--adapter/--encoder; tiny random models make noise, but every knob runs).

Each sheet's first row is the images, labelled with their setting; the second row is each image's
difference from the first, amplified so the largest becomes white (the label gives the factor and
the largest difference in grey levels): on the tiny models the images differ by less than one grey
level, which no eye sees in the first row.

    python examples/identity_controls.py --out docs/images
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def difference_tiles(arrays: list[np.ndarray]) -> tuple[list[Image.Image], list[str]]:
    """|image - first image| per pixel (max over RGB; the pipeline's float images, 0..255, before
    PNG rounding), scaled by one factor for the whole row so the largest difference is white; and
    their labels."""
    diffs = [np.abs(a - arrays[0]).max(axis=2) for a in arrays]
    largest = max(float(d.max()) for d in diffs)
    gain = 255.0 / largest if largest > 0 else 1.0
    tiles = [Image.fromarray(np.clip(d * gain, 0, 255).astype(np.uint8)).convert("RGB") for d in diffs]
    labels = ["difference to the first:"] + [f"x{gain:.0f}, max {float(d.max()):.2f} grey" for d in diffs[1:]]
    return tiles, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/identity-controls")
    parser.add_argument("--base-model", default="tiny")
    parser.add_argument("--adapter", default="tiny")
    parser.add_argument("--encoder", default="tiny")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    import matplotlib.cbook as cbook
    from skimage.data import astronaut

    from facefact.pipelines.build import load_fact_pipeline
    from facefact.pipelines.metadata import contact_sheet, sheet_metadata, write_png

    pipe = load_fact_pipeline(args.base_model, args.adapter, args.encoder)
    alice = Image.fromarray(astronaut())
    grace = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def row(name: str, calls: list[dict], labels: list[str]) -> None:
        results = [pipe("a portrait photo", generator=torch.Generator().manual_seed(7), height=args.size,
                        width=args.size, num_inference_steps=args.steps, output_type="np", **call) for call in calls]
        images = [Image.fromarray((r.images[0] * 255).round().astype(np.uint8)) for r in results]
        diffs, diff_labels = difference_tiles([r.images[0] * 255 for r in results])
        metas = [r.metadata[0] for r in results]
        sheet = contact_sheet(images + diffs, columns=len(images), labels=labels + diff_labels)
        print(write_png(sheet, out / f"{name}.png", sheet_metadata(metas), overwrite=True))

    windows = ((0, 1), (0.3, 1), (0.6, 1), (1, 1))
    row("window", [{"face_images": [alice], "fact_window": w} for w in windows], [f"window {w}" for w in windows])
    combines = ("concat", "mean", "weighted")
    row("combine", [{"face_images": [alice, grace], "face_combine": c} for c in combines], list(combines))
    levels = (0.5, {"down": 0.5}, {"mid": 0.5}, {"up": 0.5})
    row("levels", [{"face_images": [alice], "fact_scale": s} for s in levels],
        ["all 0.5", "down only", "mid only", "up only"])
    row("regions", [{"face_images": [alice, grace], "face_regions": [(0, 0, .5, 1), (.5, 0, 1, 1)]},
                    {"face_images": [grace, alice], "face_regions": [(0, 0, .5, 1), (.5, 0, 1, 1)]}],
        ["alice | grace", "grace | alice"])


if __name__ == "__main__":
    main()
