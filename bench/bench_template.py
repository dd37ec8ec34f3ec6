"""Cost of one template portrait next to one text-to-image portrait (issue 10), SD1.5-size models with
random weights, on the CPU. Prints a table and one JSON line; asserts no timing.

Template: a `crop`-size crop of the astronaut redrawn with Grace Hopper's identity on
FACTStableDiffusionControlNetInpaintPipeline with two SD1.5-size ControlNets (the release's layout),
main pass (strength 0.6) + refine pass (0.1), paste-back. Text-to-image: FACTStableDiffusionPipeline
on the same UNet at `crop` x `crop`, the same nominal steps. Each runs in its own process, so the
peak RSS of one does not hide in the other's.

    python bench/bench_template.py                       # 512 crop, 10 nominal steps (~10 min on 2 cores)
    python bench/bench_template.py --crop 256 --steps 10 # quicker
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from sd15 import load_official_fact, sd15_parts  # noqa: E402


def run_one(mode: str, crop: int, steps: int) -> dict:
    import matplotlib.cbook as cbook
    from skimage import data

    from facefact.faces import FaceAnalysis, load_image
    from facefact.pipelines import FACTStableDiffusionControlNetInpaintPipeline, FACTStableDiffusionPipeline
    from facefact.template import TemplatePortrait, TemplateSettings

    analysis = FaceAnalysis()
    hopper = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    cls = FACTStableDiffusionControlNetInpaintPipeline if mode == "template" else FACTStableDiffusionPipeline
    pipe = cls(**sd15_parts(crop, mode == "template"))
    pipe.set_progress_bar_config(disable=True)
    load_official_fact(pipe)
    generator = torch.Generator("cpu").manual_seed(0)
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        if mode == "template":
            settings = TemplateSettings(prompt="a portrait", negative_prompt="blurry", crop_size=crop, steps=steps)
            TemplatePortrait(pipe, analysis=analysis, settings=settings)(data.astronaut(), hopper, seed=0)
        else:
            pipe("a portrait", negative_prompt="blurry", face_images=[hopper], height=crop, width=crop,
                 num_inference_steps=steps, guidance_scale=5.0, generator=generator)
    return {"mode": mode, "crop": crop, "steps": steps, "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - start_cpu, "threads": torch.get_num_threads(),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--one", choices=["template", "txt2img"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.crop, args.steps)))
        return
    rows = []
    for mode in ("txt2img", "template"):
        done = subprocess.run([sys.executable, __file__, "--one", mode, "--crop", str(args.crop),
                               "--steps", str(args.steps)], capture_output=True, text=True, check=True, cwd=REPO)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{mode:9s} {rows[-1]['wall_s']:7.1f} s wall  {rows[-1]['cpu_s']:7.1f} s CPU  "
              f"peak RSS {rows[-1]['peak_rss_gb']:.2f} GB", flush=True)
    ratio = {"wall": rows[1]["wall_s"] / rows[0]["wall_s"], "cpu": rows[1]["cpu_s"] / rows[0]["cpu_s"],
             "peak_rss": rows[1]["peak_rss_gb"] / rows[0]["peak_rss_gb"]}
    print(f"template / text-to-image: wall x{ratio['wall']:.2f}, CPU x{ratio['cpu']:.2f}, "
          f"peak memory x{ratio['peak_rss']:.2f}")
    print(json.dumps({"rows": rows, "ratio": ratio}))


if __name__ == "__main__":
    main()
