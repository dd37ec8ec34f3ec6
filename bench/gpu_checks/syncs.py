"""Check 8 ("syncs"): FACT adds no host <-> device synchronisation to the denoising loop (CUDA only).

Both run under `torch.cuda.set_sync_debug_mode("warn")`, which reports every synchronising operation
(`.item()`, `bool(t)`, `nonzero`, a copy to the host, a blocking copy from it); each is recorded with
the innermost facefact / diffusers line that made it. The bare UNet's and the base pipeline's own
(the scheduler's, diffusers' loop) are allowed; a line only the FACT calls reach is a FAIL naming it.
1. One UNet step: bare, with face tokens, with two people's regions.
2. The whole call, base and FACT (scale, a fact_window switching FACT per step, regions): the
   synchronising calls inside the loop - from the first UNet call to the last step's callback.
On a CPU there is no device to wait for: SKIP, saying so.
"""
from __future__ import annotations

import traceback
import warnings

import torch

from gpu_checks.models import SHORT, face_pixels

CHECK = "syncs"
REGIONS = [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)]
OWN_FILES = ("facefact", "diffusers")  # the frames worth naming: ours and the pipeline's


def run(setup) -> None:
    report = setup.report
    if setup.device.type != "cuda":
        report.skip(CHECK, "denoising loop", "CPU: no host-device boundary to wait on (torch.cuda.set_sync_debug_mode "
                                             "needs a CUDA device); run on a GPU")
        return
    if not report.fits(2 * setup.estimate("pipeline")):
        report.skip(CHECK, "denoising loop", "the --budget-s is spent")
        return
    dtype = setup.check_dtypes[-1]
    with torch.inference_mode():
        pipe = setup.models.pipeline("text2img", dtype)
        people = [pipe.encode_faces(face_pixels=face_pixels(seed)) for seed in (0, 1)]
        unet_step(setup, pipe, people, dtype)
        whole_loop(setup, pipe, people, dtype)


def unet_step(setup, pipe, people, dtype) -> None:
    """One UNet step bare, with face tokens and with two people's regions: the synchronising lines of
    each (debug mode "warn"); a line only the FACT steps reach is a FAIL naming it."""
    from facefact.model.regions import FaceRegions, box_masks
    from facefact.pipelines.face_tokens import guidance_objs

    a, b = (p.to(setup.device, dtype) for p in people)
    side = setup.size // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, side, side, generator=g).to(setup.device, dtype)
    text = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=g).to(setup.device, dtype)
    t = pipe.scheduler.timesteps[0].to(setup.device)
    both = torch.cat([guidance_objs(a, 1, True, True), guidance_objs(b, 1, True, True)], dim=1)
    spans = [(0, a.tokens.shape[1]), (a.tokens.shape[1], both.shape[1])]
    regions = FaceRegions(box_masks(REGIONS, (side, side)), spans).prepare(setup.device)
    variants = {"bare": None, "face tokens": {"gligen": {"objs": guidance_objs(a, 1, True, True)}},
                "regions": {"gligen": {"objs": both, "regions": regions}}}
    sites = {}
    for name, kwargs in variants.items():
        def step(kwargs=kwargs):
            return pipe.unet(x, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs)
        step()  # warm: first-use work (allocator, kernel choice) is not the step's
        sites[name] = synchronising_lines(setup, step, always=True)
    added = {name: sorted(set(found) - set(sites["bare"])) for name, found in sites.items() if name != "bare"}
    offending = {name: lines for name, lines in added.items() if lines}
    detail = ("FACT adds " + "; ".join(f"{name}: {', '.join(lines[:3])}" for name, lines in offending.items())
              if offending else "FACT adds no synchronising op (face tokens, regions)")
    detail += f"; the bare step's own: {sum(sites['bare'].values())}"
    setup.report.require(CHECK, f"UNet step {SHORT[dtype]}", not offending, detail,
                         bare_sites=sorted(sites["bare"]), added=offending)


def whole_loop(setup, pipe, people, dtype) -> None:
    a, b = people
    calls = {"base": {}, "scale 0.5": {"face_tokens": a, "fact_scale": 0.5},
             "window (0.5, 1)": {"face_tokens": a, "fact_scale": 0.5, "fact_window": (0.5, 1.0)},
             "regions": {"face_images": [a, b], "face_regions": REGIONS}}
    sites = {name: loop_syncs(setup, pipe, kwargs) for name, kwargs in calls.items()}
    allowed = set(sites["base"])
    added = {name: sorted(set(found) - allowed) for name, found in sites.items() if name != "base"}
    offending = {name: lines for name, lines in added.items() if lines}
    counts = {name: sum(found.values()) for name, found in sites.items()}
    detail = ("FACT adds " + "; ".join(f"{name}: {', '.join(lines[:3])}" for name, lines in offending.items())
              if offending else "FACT adds none") + f"; syncs in the loop per call: {counts} (base: the scheduler's)"
    setup.report.require(CHECK, f"denoising loop {SHORT[dtype]}", not offending, detail,
                         base_sites=sorted(allowed), added=offending, counts=counts)


def loop_syncs(setup, pipe, kwargs: dict) -> dict[str, int]:
    """'file:line' -> how many synchronising calls it made between the first UNet call and the last
    step's end, in one 4-step call (one warm call first)."""
    steps, state = 4, {"in_loop": False}

    def call(**extra):
        return pipe("a portrait photo", num_inference_steps=steps, height=setup.size, width=setup.size,
                    output_type="np", generator=torch.Generator("cpu").manual_seed(1), **kwargs, **extra)

    def on_step_end(pipeline, step, timestep, callback_kwargs):
        if step == steps - 1:
            state["in_loop"] = False
        return callback_kwargs

    call()
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: state.update(in_loop=True))
    try:
        return synchronising_lines(setup, lambda: call(callback_on_step_end=on_step_end), lambda: state["in_loop"])
    finally:
        handle.remove()


def synchronising_lines(setup, fn, counting=None, always: bool = False) -> dict[str, int]:
    """Runs `fn` under torch.cuda.set_sync_debug_mode("warn"): 'file:line' -> the synchronising calls
    made from it (the innermost facefact / diffusers frame) while `counting()` is true (or always)."""
    found: dict[str, int] = {}

    def show(message, category, filename, lineno, file=None, line=None):
        if (always or counting()) and "synchroniz" in str(message):
            site = own_frame(None) or f"{filename}:{lineno}"
            found[site] = found.get(site, 0) + 1

    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.synchronize(setup.device)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return found


def own_frame(tb) -> str:
    """The innermost facefact / diffusers frame of a traceback (or of the current stack), as
    'package/file.py:line (function)'."""
    frames = traceback.extract_tb(tb) if tb is not None else traceback.extract_stack()[:-2]
    for frame in reversed(frames):
        for package in OWN_FILES:
            marker = f"/{package}/"
            if marker in frame.filename:
                return f"{package}/{frame.filename.split(marker, 1)[1]}:{frame.lineno} ({frame.name})"
    return ""
