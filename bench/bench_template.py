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


def sd15_parts(size: int, with_controlnets: bool) -> dict:
    """SD1.5-size UNet, VAE and CLIP text encoder (random), a byte-level tokenizer, PNDM as SD1.5."""
    from diffusers import AutoencoderKL, ControlNetModel, MultiControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from facefact.pipelines.tiny import tiny_scheduler, tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=size // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=size, scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu", bos_token_id=len(tokenizer) - 2,
                                        eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1))
    parts = {"vae": vae, "text_encoder": text, "tokenizer": tokenizer, "unet": unet, "scheduler": tiny_scheduler(),
             "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if with_controlnets:
        parts["controlnet"] = MultiControlNetModel([ControlNetModel.from_unet(unet) for _ in range(2)])
    for module in (unet, vae, text):
        module.eval().requires_grad_(False)
    return parts


def load_official_fact(pipe) -> None:
    from facefact.model import EncoderConfig, FaceAdapter, ResamplerConfig, TransFaceEncoder

    adapter = FaceAdapter.for_unet(pipe.unet, ResamplerConfig())
    for fuser in adapter.all_fusers():  # opened gates, as a trained checkpoint has them
        fuser.alpha_attn.data.fill_(0.6)
        fuser.alpha_dense.data.fill_(0.4)
    pipe.load_fact_adapter(adapter.eval().requires_grad_(False), encoder=TransFaceEncoder(EncoderConfig()).eval())


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
