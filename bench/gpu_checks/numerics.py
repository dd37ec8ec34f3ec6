"""Check 2: the numerics of one UNet step with FACT.

The same weights (cast from one float32 master) and the same inputs - latents, timestep, text
embeddings and the guidance batch's face tokens (null face, face) made by the resampler from the
same encoder tokens - run in float32 and in each low-precision dtype on the device; the relative
error ||out - out_fp32|| / ||out_fp32|| is printed for the face tokens, the bare UNet step and the
step with FACT. Then the device's float32 step is compared with the CPU's on the same inputs.

Bounds (relative L2 error), and why:
  * fp16 2e-2, bf16 8e-2. One rounding costs at most the unit roundoff u (fp16 2^-11 = 4.9e-4, bf16
    2^-8 = 3.9e-3). The SD1.5 UNet puts ~100 rounded operations (GEMMs, convolutions, norms) on the
    path of each output; GroupNorm / LayerNorm renormalise after each block, so the errors add in
    quadrature rather than compound: sqrt(100) * u = 4.9e-3 (fp16) / 3.9e-2 (bf16). Twice that
    leaves room for the few long reductions (attention over 4096 tokens) and is still far below a
    visible change; FACT's layers must stay inside the same bound as the UNet around them - an
    overflow or a lost scale in the resampler or the fusers shows up as errors of order 1.
  * device fp32 vs CPU fp32: 1e-4, with TF32 switched off for the comparison (TF32 rounds matmul
    inputs to 10 bits, which is fp16-level error by design). What remains is summation order
    and kernel choice: a few fp32 ulps (6e-8) amplified by depth, well under 1e-4.
"""
from __future__ import annotations

import contextlib
import copy

import torch

from gpu_checks.models import SHORT, free_memory
from gpu_checks.report import FAIL, PASS

CHECK = "numerics"
BOUNDS = {torch.float16: 2e-2, torch.bfloat16: 8e-2}
CPU_BOUND = 1e-4


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.double().cpu(), reference.double().cpu()
    return float((value - reference).norm() / reference.norm().clamp_min(1e-30))


@contextlib.contextmanager
def strict_fp32():
    """No TF32 in matmuls / convolutions while inside (restored after): a true float32 reference."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def step_inputs(unet, adapter_config, size: int, seed: int = 0) -> dict:
    """float32 CPU inputs of one guidance step: latents [2,4,h,w], text [2,77,C], encoder tokens [1,144,D]."""
    generator = torch.Generator().manual_seed(seed)
    latent = size // 8
    return {"latents": torch.randn(2, unet.config.in_channels, latent, latent, generator=generator),
            "text": torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator),
            "encoder_tokens": torch.randn(1, 144, adapter_config.embedding_dim, generator=generator)}


@torch.inference_mode()
def one_step(unet, adapter, inputs: dict, device, dtype) -> dict:
    """(face tokens, bare step, FACT step) of `unet` with `adapter` attached, in `dtype` on `device`."""
    from facefact.pipelines.face_tokens import FaceTokens, guidance_objs

    tokens = inputs["encoder_tokens"].to(device)
    faces = FaceTokens(adapter.face_tokens(tokens), adapter.null_face_tokens(1), 1)
    objs = guidance_objs(faces, 1, do_cfg=True, cfg_face=True).to(device, dtype)
    x, text = inputs["latents"].to(device, dtype), inputs["text"].to(device, dtype)
    t = torch.tensor(500, device=device)
    bare = unet(x, t, encoder_hidden_states=text).sample
    fact = unet(x, t, encoder_hidden_states=text, cross_attention_kwargs={"gligen": {"objs": objs}}).sample
    return {"face tokens": faces.tokens.float(), "bare step": bare.float(), "FACT step": fact.float()}


def attached_copy(models, device, dtype):
    """A copy of the master UNet on `device` in `dtype` with a copy of the adapter attached (cast by attach)."""
    unet = copy.deepcopy(models.master["unet"]).to(device, dtype)
    return unet, models.adapter(torch.float32).attach(unet)


def run(setup) -> None:
    report, models, device = setup.report, setup.models, setup.device
    if not report.fits(setup.estimate("numerics")):
        report.skip(CHECK, "all", "the --budget-s is spent")
        return
    inputs = step_inputs(models.master["unet"], models.master["adapter"].resampler.config, setup.size)
    with strict_fp32():
        reference = run_copy(models, inputs, device, torch.float32)
    for dtype in [d for d in setup.check_dtypes if d in BOUNDS] or [torch.bfloat16]:
        low = run_copy(models, inputs, device, dtype)
        errors = {name: relative_error(low[name], reference[name]) for name in reference}
        finite = all(bool(torch.isfinite(v).all()) for v in low.values())
        bound = BOUNDS[dtype]
        ok = finite and all(e <= bound for e in errors.values())
        report.record(CHECK, f"{SHORT[dtype]} vs fp32", PASS if ok else FAIL,
                      ", ".join(f"{k} {v:.2e}" for k, v in errors.items()) + f" (bound {bound:.0e}); finite {finite}",
                      errors=errors, bound=bound, finite=finite)
    with strict_fp32():
        on_cpu = run_copy(models, inputs, torch.device("cpu"), torch.float32)
    errors = {name: relative_error(reference[name], on_cpu[name]) for name in reference}
    ok = all(e <= CPU_BOUND for e in errors.values())
    report.record(CHECK, f"{device.type} fp32 vs cpu fp32", PASS if ok else FAIL,
                  ", ".join(f"{k} {v:.2e}" for k, v in errors.items()) + f" (bound {CPU_BOUND:.0e}, TF32 off)",
                  errors=errors, bound=CPU_BOUND)


def run_copy(models, inputs, device, dtype) -> dict:
    unet, adapter = attached_copy(models, device, dtype)
    try:
        return {k: v.cpu() for k, v in one_step(unet, adapter, inputs, device, dtype).items()}
    finally:
        adapter.detach()
        del unet, adapter
        free_memory(models.device)
