"""Check 6: the speed table. It never asserts a timing; each row is printed as soon as it is measured.

Per row: seconds per portrait end to end - from face tokens made once (pipe.encode_faces) to PNG
bytes with provenance: text encoding, the denoising loop, VAE decode, PNG encoding - the min of
--repeats after a warm-up (the first call; for compiled rows its time is the cold compile time),
portraits per second at batch > 1, seconds per UNet step (the guidance batch, the same call the
pipeline makes; min of ten after a warm-up), and the pipeline's peak VRAM. "base" rows are the
same pipeline called without face tokens (diffusers calls no fuser then): SD1.5 itself.

Rows, in order of what they tell (--budget-s cuts from the end): base / FACT per dtype; then in the
last dtype FACT with channels_last, fused QKV, each SDPA backend, batch 4 and 8, the 4-step LCM
schedule with a random LoRA of LCM-LoRA's layout fused in (guidance 1, as LCM-LoRA runs), the
template portrait (two ControlNet-inpaint passes at --speed-steps nominal steps, from the face photo:
face analysis included) as a multiple of the text-to-image portrait; then torch.compile per mode,
FACT then base (one compiled UNet serves both, one graph each).
"""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass, field

import torch

from gpu_checks import variants
from gpu_checks.models import SHORT, face_pixels, free_memory, vram_of_call
from gpu_checks.report import FAIL, PASS

CHECK = "speed"
PROMPT, NEGATIVE = "a portrait photo of a person, studio light", "blurry, low quality"


@dataclass
class Row:
    name: str
    dtype: object
    fact: bool = True
    batch: int = 1
    steps: int | None = None       # None: --speed-steps
    guidance: float = 5.0
    variant: object = None         # a context manager factory taking the pipeline
    template: bool = False
    compile_mode: str | None = None
    sdpa: str | None = None        # an SDPBackend name: the UNet step runs with it alone, the portrait with it
                                   # first (math where it cannot run: CLIP's masked attention)
    cost: str = "row"
    note: str = ""
    extra: dict = field(default_factory=dict)


def rows_for(setup) -> list[Row]:
    dtypes = setup.check_dtypes if setup.device.type == "cuda" else [torch.float32]
    main = dtypes[-1]
    rows = [Row(f"{'FACT' if fact else 'base'}", dtype, fact=fact) for dtype in dtypes for fact in (False, True)]
    backends = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"] if setup.device.type == "cuda" \
        else ["MATH"]  # (flash is the CPU's default kernel: the FACT row)
    rows += [Row("FACT channels_last", main, variant=variants.channels_last),
             Row("FACT fused QKV", main, variant=variants.fused_qkv)]
    rows += [Row(f"FACT SDPA {b.split('_')[0].lower()}", main, sdpa=b) for b in backends]
    rows += [Row(f"FACT batch {n}", main, batch=n) for n in ((4,) if setup.tiny else (4, 8))]
    rows += [Row("FACT LCM 4 steps + LoRA", main, steps=4, guidance=1.0, variant=variants.lcm_lora, cost="lora"),
             Row("template (FACT)", main, template=True, cost="template")]
    for mode in setup.compile_modes:
        rows += [Row(f"{'FACT' if fact else 'base'} compile {mode}", main, fact=fact, compile_mode=mode, cost="compile")
                 for fact in (True, False)]
    return rows


def run(setup) -> None:
    report = setup.report
    pipes: dict = {}
    results: dict[str, dict] = {}
    for row in rows_for(setup):
        label = f"{row.name} {SHORT[row.dtype]}"
        if not report.fits(setup.estimate(row.cost)):
            report.skip(CHECK, label, "the --budget-s is spent")
            continue
        if row.dtype not in pipes:
            pipes.clear()
            free_memory(setup.device)
            pipes[row.dtype] = setup.models.pipeline("text2img", row.dtype)
        pipe = pipes[row.dtype]
        try:
            measured = measure_template(setup, pipe, row, results) if row.template else measure(setup, pipe, row)
        except Exception as err:  # noqa: BLE001 - a backend or variant this machine lacks: say so, go on
            report.skip(CHECK, label, f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}")
            continue
        results[label] = measured
        report.row(measured)
    compiled = [r for r in report.rows if r["row"].startswith("FACT compile")]
    for r in compiled:
        report.record(CHECK, f"graph breaks, {r['row']}", PASS if r["graph_breaks"] == 0 else FAIL,
                      f"{r['graph_breaks']} graph breaks compiling the UNet with FACT", graph_breaks=r["graph_breaks"])
    if not report.rows:
        report.skip(CHECK, "table", "no row was measured")


def portrait_call(setup, pipe, row: Row, tokens, steps: int, fact_scale: float | None = None):
    def call():
        from facefact.pipelines.metadata import png_bytes

        scale = {"fact_scale": fact_scale} if fact_scale is not None and row.fact else {}
        out = pipe(PROMPT, negative_prompt=NEGATIVE, face_tokens=tokens if row.fact else None, **scale,
                   num_inference_steps=steps, guidance_scale=row.guidance, height=setup.size, width=setup.size,
                   num_images_per_prompt=row.batch,
                   generator=[torch.Generator("cpu").manual_seed(i) for i in range(row.batch)])
        return [png_bytes(image, meta) for image, meta in zip(out.images, out.metadata)]
    return call


def step_call(setup, pipe, row: Row, tokens):
    """One UNet step as the pipeline makes it (same arguments, so a compiled UNet reuses its graph)."""
    from facefact.pipelines.face_tokens import guidance_objs

    cfg = row.guidance > 1
    rows = row.batch * (2 if cfg else 1)
    generator = torch.Generator().manual_seed(0)
    latent = setup.size // 8
    x = torch.randn(rows, 4, latent, latent, generator=generator).to(setup.device, row.dtype)
    text = torch.randn(rows, 77, pipe.unet.config.cross_attention_dim, generator=generator).to(setup.device, row.dtype)
    t = pipe.scheduler.timesteps[0].to(setup.device)
    kwargs = ({"gligen": {"objs": guidance_objs(tokens.to(setup.device, row.dtype), row.batch, cfg, True)}}
              if row.fact else None)
    mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)

    def call():
        if row.compile_mode and mark_step is not None:
            mark_step()  # a new step for CUDA graph trees: the last output may be overwritten
        return pipe.unet(x, t, encoder_hidden_states=text, timestep_cond=None, cross_attention_kwargs=kwargs,
                         added_cond_kwargs=None, return_dict=False)[0]
    return call


@torch.inference_mode()
def measure(setup, pipe, row: Row) -> dict:
    from timing import timed

    steps = row.steps or setup.speed_steps
    tokens = pipe.encode_faces(face_pixels=face_pixels())
    variant = row.variant(pipe) if row.variant else contextlib.nullcontext()
    compile_variant = variants.compiled(row.compile_mode)(pipe) if row.compile_mode else contextlib.nullcontext()
    if row.compile_mode and row.fact:  # the first row of a mode: no graph of another mode is reused
        torch._dynamo.reset()
    sdpa = variants.sdpa_backends([row.sdpa, "MATH"]) if row.sdpa else contextlib.nullcontext()
    breaks_before, new_scale = graph_breaks(), {}
    with variant, compile_variant, sdpa:
        portrait = portrait_call(setup, pipe, row, tokens, steps)
        first = timed(portrait, setup.device)
        times = []
        for index in range(setup.repeats):
            if index == setup.repeats - 1:
                seconds, peak = vram_of_call(pipe, lambda: timed(portrait, setup.device), setup.device)
            else:
                seconds = timed(portrait, setup.device)
            times.append(seconds)
        with variants.sdpa_backends([row.sdpa]) if row.sdpa else contextlib.nullcontext():
            step = step_call(setup, pipe, row, tokens)
            step()
            step_times = [timed(step, setup.device) for _ in range(2 if setup.tiny else 10)]
        if row.compile_mode and row.fact and setup.report.fits(setup.estimate("compile")):
            graphs = unique_graphs()  # a request with another FACT scale: does it compile the UNet again?
            rescale_s = timed(portrait_call(setup, pipe, row, tokens, steps, fact_scale=0.3), setup.device)
            new_scale = {"rescale_first_call_s": rescale_s, "rescale_new_graphs": unique_graphs() - graphs}
    best = min(times)
    out = {"row": row.name, "dtype": SHORT[row.dtype], "batch": row.batch, "steps": steps, "portrait_s": best,
           "portrait_median_s": statistics.median(times), "portraits_per_s": row.batch / best,
           "step_s": min(step_times), "step_median_s": statistics.median(step_times), "peak_vram_mib": peak,
           "first_call_s": first, "note": row.note}
    if row.compile_mode:
        out["compile_s"] = first - best  # the cold compile: the first call beyond a warm one
        out["graph_breaks"] = graph_breaks() - breaks_before
        out["note"] = f"graph breaks {out['graph_breaks']}"
        if new_scale:
            out.update(new_scale)
            out["note"] += (f"; fact_scale 0.3 after 0.5: {new_scale['rescale_new_graphs']} new graph(s), first call "
                            f"{new_scale['rescale_first_call_s']:.1f} s")
    return out


def unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


@torch.inference_mode()
def measure_template(setup, pipe, row: Row, results: dict) -> dict:
    """One template portrait (prepared once: template photo analysed, plans made) vs the text-to-image
    FACT row of the same dtype."""
    from timing import timed

    from gpu_checks.template import face_stack, sample_photos, template_maker

    analysis, why = face_stack()
    if analysis is None:
        raise RuntimeError(why)
    astronaut, hopper = sample_photos()
    steps = max(setup.speed_steps, 10)  # the refine pass (strength 0.1) needs 10 nominal steps for one
    maker = template_maker(setup, row.dtype, analysis, steps=steps, adapter=pipe.fact_adapter)
    prepared = maker.prepare(astronaut, hopper)
    portrait = lambda: maker.generate(prepared, seed=1)  # noqa: E731
    first = timed(portrait, setup.device)
    times = [timed(portrait, setup.device) for _ in range(setup.repeats - 1)]
    last, peak = vram_of_call(maker.pipe, lambda: timed(portrait, setup.device), setup.device)
    best = min(times + [last])
    text2img = results.get(f"FACT {SHORT[row.dtype]}")
    ratio = best / text2img["portrait_s"] if text2img and text2img["steps"] == steps else None
    maker.pipe.unload_fact_adapter()  # the adapter stays attached for the text-to-image pipeline (not ours)
    return {"row": row.name, "dtype": SHORT[row.dtype], "batch": 1, "steps": steps, "portrait_s": best,
            "portraits_per_s": 1 / best, "step_s": None, "peak_vram_mib": peak, "first_call_s": first,
            "template_over_text2img": ratio,
            "note": (f"x{ratio:.2f} the text-to-image portrait; " if ratio else "")
            + f"crop {setup.size}, main {int(steps * 0.6)} + refine {int(steps * 0.1)} steps, "
              "2 ControlNets, face analysis included"}
