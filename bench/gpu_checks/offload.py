"""Check 4: diffusers' CPU offload with FACT loaded (CUDA only).

A text-to-image FACT pipeline runs once on the GPU (the reference pixels and peak VRAM), then on
fresh copies of the same weights with `enable_model_cpu_offload()` and with
`enable_sequential_cpu_offload()`: the face encoder and resampler follow the offload (FACTMixin),
the face tokens reach the fusers on the GPU in the UNet's dtype, the outputs are finite and the
same pixels as without offload (the same kernels run; only where the weights wait differs), and
the peak VRAM of each is reported (the pipeline's weights on the GPU + the call's peak
beyond what was allocated before it).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from gpu_checks.models import SHORT, Probe, call_kwargs, face_pixels, free_memory, to_uint8, vram_of_call

CHECK = "offload"
MODES = ("none", "model", "sequential")


@torch.inference_mode()
def run(setup) -> None:
    report, device = setup.report, setup.device
    if device.type != "cuda":
        report.skip(CHECK, "model and sequential", f"CPU offload moves weights to {device.type}: there is nothing "
                                                   "to offload to on a CPU (runs with --device cuda)")
        return
    dtype = setup.check_dtypes[0]
    reference = None
    for mode in MODES:
        if not report.fits(setup.estimate("offload") / len(MODES)):
            report.skip(CHECK, mode, "the --budget-s is spent")
            continue
        pipe = offload_pipeline(setup, dtype, mode)
        tokens = pipe.encode_faces(face_pixels=face_pixels())
        with Probe(pipe) as probe:
            images, peak = vram_of_call(pipe, lambda: pipe(**call_kwargs("text2img", setup.size, setup.steps),
                                                           face_tokens=tokens).images, device)
        pixels = to_uint8(images)
        reference = pixels if reference is None else reference
        finite = bool(np.isfinite(images).all())
        same = bool(np.array_equal(pixels, reference))
        expected = {(str(torch.device(device.type, device.index or 0)), SHORT[dtype])}
        ok = finite and same and probe.token_places == expected
        report.require(CHECK, f"{mode} {SHORT[dtype]}", ok,
                       f"peak VRAM {peak:.0f} MiB; finite {finite}; same pixels as without offload {same}; face "
                       f"tokens at {sorted(probe.token_places)}", peak_vram_mib=peak, finite=finite,
                       same_pixels=same, token_places=sorted(probe.token_places))
        del pipe, tokens
        free_memory(device)


def offload_pipeline(setup, dtype, mode: str):
    """A text-to-image FACT pipeline on copies of this dtype's weights, offloaded as `mode` says."""
    if mode == "none":
        return setup.models.pipeline("text2img", dtype)
    # Offload moves modules to the CPU and back: copies, so the weights the other checks share stay put.
    parts = {name: copy.deepcopy(module).cpu() for name, module in setup.models.parts(dtype).items()
             if name in ("unet", "vae", "text_encoder")}
    pipe = setup.models.pipeline("text2img", dtype, parts=parts)
    index = setup.device.index or 0
    if mode == "model":
        pipe.enable_model_cpu_offload(gpu_id=index)
    else:
        pipe.enable_sequential_cpu_offload(gpu_id=index)
    return pipe
