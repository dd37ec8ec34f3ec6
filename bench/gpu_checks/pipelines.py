"""Check 1: every FACT pipeline class once per dtype, on the device.

For each kind (text-to-image, img2img, inpaint on a 4- and a 9-channel UNet, ControlNet, ControlNet
img2img, ControlNet-inpaint with two ControlNets): the diffusers parent runs first on the same
components (the base pixels); then FACT is loaded and the same call runs with the face tokens at
the release's scale (outputs finite; the face tokens reach the fusers on the UNet's device and
dtype; the tokens are computed once per request - the resampler and encoder do not run inside the
denoising loop) and at fact_scale=0 (the base pixels exactly); then unload_fact_adapter() must leave
the UNet as it was, every parameter and buffer bit for bit and no module left behind.
"""
from __future__ import annotations

import numpy as np
import torch

from gpu_checks.models import KINDS, SHORT, Probe, base_class, call_kwargs, face_pixels, same_state, to_uint8, \
    unet_place, unet_state

CHECK = "pipelines"


@torch.inference_mode()
def run(setup) -> None:
    report, models = setup.report, setup.models
    for dtype in setup.check_dtypes:
        for kind in KINDS:
            name = f"{kind} {SHORT[dtype]}"
            if not report.fits(setup.estimate("pipeline")):
                report.skip(CHECK, name, "the --budget-s is spent")
                continue
            one_kind(setup, kind, dtype, name)
        models.release(dtype)


def one_kind(setup, kind: str, dtype, name: str) -> None:
    report, size, steps = setup.report, setup.size, setup.steps
    pipe = setup.models.pipeline(kind, dtype, fact=False)
    before = unet_state(pipe.unet)
    base_pipe = base_class(pipe)(**pipe.components, requires_safety_checker=False)
    base_pipe.set_progress_bar_config(disable=True)
    base = to_uint8(base_pipe(**call_kwargs(kind, size, steps)).images)
    pipe.load_fact_adapter(setup.models.adapter(dtype), encoder=setup.models.master["encoder"])
    tokens = pipe.encode_faces(face_pixels=face_pixels())
    with Probe(pipe) as probe:
        out = pipe(**call_kwargs(kind, size, steps), face_tokens=tokens)
    images = np.asarray(out.images)
    zero = to_uint8(pipe(**call_kwargs(kind, size, steps), face_tokens=tokens, fact_scale=0.0).images)
    pipe.unload_fact_adapter()
    restored = same_state(before, unet_state(pipe.unet)) and getattr(pipe.unet, "position_net", None) is None

    finite = bool(np.isfinite(images).all())
    place = unet_place(pipe.unet)
    tokens_ok = probe.token_places == {place}
    once = probe.counts.get("resampler", 0) == 0 and probe.counts.get("encoder", 0) == 0
    changed = bool((to_uint8(images) != base).any())  # FACT at the release's scale acts (gates are open)
    zero_diff = int(np.abs(zero.astype(np.int16) - base.astype(np.int16)).max())
    controlnets = {k: v for k, v in probe.counts.items() if k.startswith("controlnet")}
    nets_ok = all(v == probe.counts["unet"] for v in controlnets.values())
    ok = finite and tokens_ok and once and zero_diff == 0 and restored and changed and nets_ok
    report.require(CHECK, name, ok,
                   f"finite {finite}; tokens at {sorted(probe.token_places)} vs UNet {place}; resampler/encoder "
                   f"calls in the loop {probe.counts.get('resampler', 0)}/{probe.counts.get('encoder', 0)}; "
                   f"FACT changes pixels {changed}; scale 0 vs base max |diff| {zero_diff}; unload restores {restored}"
                   + (f"; ControlNet calls {controlnets} per {probe.counts['unet']} UNet calls" if controlnets else ""),
                   finite=finite, token_places=sorted(probe.token_places), unet_place=place,
                   loop_resampler_calls=probe.counts.get("resampler", 0), scale0_max_diff=zero_diff,
                   unload_restores=restored, fact_changes_pixels=changed, calls=probe.counts)
    del pipe
