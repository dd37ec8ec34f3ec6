"""Contact sheets of facefact's identity controls, on the tiny models (run it with real weights:
pass --base-model/--adapter/--encoder; tiny random models make noise, but every knob runs).

    python examples/identity_controls.py --out docs/images
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image


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

    def row(name: str, calls: list[dict]) -> None:
        results = [pipe("a portrait photo", generator=torch.Generator().manual_seed(7), height=args.size,
                        width=args.size, num_inference_steps=args.steps, **call) for call in calls]
        images = [r.images[0] for r in results]
        metas = [r.metadata[0] for r in results]
        print(write_png(contact_sheet(images), out / f"{name}.png", sheet_metadata(metas), overwrite=True))

    row("window", [{"face_images": [alice], "fact_window": w} for w in ((0, 1), (0.3, 1), (0.6, 1), (1, 1))])
    row("combine", [{"face_images": [alice, grace], "face_combine": c} for c in ("concat", "mean", "weighted")])
    row("levels", [{"face_images": [alice], "fact_scale": s}
                   for s in (0.5, {"down": 0.5}, {"mid": 0.5}, {"up": 0.5})])
    row("regions", [{"face_images": [alice, grace], "face_regions": [(0, 0, .5, 1), (.5, 0, 1, 1)]},
                    {"face_images": [grace, alice], "face_regions": [(0, 0, .5, 1), (.5, 0, 1, 1)]}])


if __name__ == "__main__":
    main()
