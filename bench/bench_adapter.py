"""Cost of the FACT adapter per denoising step: bare UNet vs UNet + FACT, eager and torch.compile'd.

One run prints one table - it never asserts a timing. For each dtype (fp32, bf16) and each path
(eager, `torch.compile` with the default inductor backend and mode):
  * seconds per UNet step without and with FACT (SD1.5-size UNet from the SD1.5 config, random
    weights; 512x512 = 64x64 latents, batch 2 = classifier-free guidance; 1 photo = 16 face tokens
    handed to the fusers through `cross_attention_kwargs={"gligen": {"objs": faces}}`), the
    overhead, and the FLOP ratio beside it (bench/flops.py: FlopCounterMode + the CPU SDPA formula);
  * what each path costs: compile time (first call, bare and FACT) and the peak memory of one step
    (CPU: peak RSS of the process during the step, weights included; CUDA: max_memory_allocated);
  * for eager, where the added time goes by kind of operator (one profiled call each).

    python bench/bench_adapter.py                          # 512, batch 2, fp32 + bf16, eager + compiled
    python bench/bench_adapter.py --dtypes float32 --no-compile --repeats 1   # quick look
    python bench/bench_adapter.py --tiny --repeats 1 --dtypes float32 --no-compile   # smoke test, seconds
    python bench/bench_adapter.py --device cuda            # on a GPU machine
    python bench/bench_adapter.py --family sdxl --device cuda   # SDXL-size UNet, 1024², FACT layout "first"
    python bench/bench_adapter.py --layouts                # SD1.5 vs SDXL layouts: params + FLOP ratio (meta, no timing)

With --family sdxl the UNet is SDXL base 1.0's (1024x1024 = 128x128 latents, its micro-conditioning
passed as the pipeline does) and `--layout` picks the fusers ("first": 11, "all": 70); the table of
parameters and FLOP ratios of SD1.5 and both SDXL layouts (bench/layouts.py) is printed first.

"Bare" is the same UNet called without face tokens: diffusers' blocks call the fuser only when
`gligen` kwargs are passed, so the attached adapter does no work there (and one compiled module
serves both calls, with one graph each).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from base_unets import BASE_UNETS, DEFAULT_SIZE, extra_inputs  # noqa: E402
from cpu_info import cpu_name  # noqa: E402
from flops import count_flops  # noqa: E402
from sd15 import official_adapter  # noqa: E402
from timing import peak_memory_mib, synchronize, timed  # noqa: E402

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
TARGETS = {"fp32": 0.45, "bf16": 0.50}  # issue 9: overhead per step, through supported paths


# ---- models (random weights) --------------------------------------------------------------------
def build_models(tiny: bool, size: int, family: str = "sd15", layout: str = "first"):
    """(UNet, FaceAdapter): the family's real-size UNet + official adapter, or the test suite's tiny pair."""
    if tiny:
        from facefact.model.tiny import tiny_face_adapter
        from facefact.pipelines.tiny import tiny_unet
        from facefact.pipelines.tiny_xl import tiny_xl_unet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            unet = (tiny_xl_unet if family == "sdxl" else tiny_unet)().eval().requires_grad_(False)
        return unet, tiny_face_adapter(unet, layout=layout).eval().requires_grad_(False)
    unet = BASE_UNETS[family](size // 8)
    return unet, official_adapter(unet, layout=layout)


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- profiled breakdown by kind of operator ------------------------------------------------------
KINDS = ("attention", "linear", "convolution", "other")


def op_kind(name: str) -> str:
    """Which kind of work an operator is: attention kernel, GEMM (linear), convolution, or the rest
    (norms, elementwise, copies, allocation)."""
    name = name.lower()
    if "scaled_dot_product" in name or "attention" in name:
        return "attention"
    if "convolution" in name:
        return "convolution"
    if "mm" in name:  # aten::mm / addmm / bmm
        return "linear"
    return "other"


def time_by_kind(fn, device: torch.device) -> dict[str, float]:
    """Seconds of one call of fn spent in each kind of operator: profiler self time (CPU: of the
    calling thread - intra-op threads work inside the op, so the kinds add up to about the wall
    time; CUDA: device time of the kernels)."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    kinds = dict.fromkeys(KINDS, 0.0)
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", 0) if on_cuda else event.self_cpu_time_total
        kinds[op_kind(event.key)] += us / 1e6
    return kinds


def flops_by_kind(ops: dict[str, int]) -> dict[str, int]:
    kinds = dict.fromkeys(KINDS, 0)
    for name, flops in ops.items():
        kinds[op_kind(name)] += flops
    return kinds


# ---- one dtype, both paths -------------------------------------------------------------------------
def step_inputs(unet, adapter, size: int, batch: int, photos: int, dtype, device):
    """Latents, text embeddings and the CFG face tokens [batch, 16n, C]: the null face for the
    unconditional half, the photo's face tokens for the rest (as the pipelines build them)."""
    generator = torch.Generator().manual_seed(0)
    latent = size // 8
    sample = torch.randn(batch, 4, latent, latent, generator=generator)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=generator)
    encoder_tokens = torch.randn(photos, 144, adapter.resampler.config.embedding_dim, generator=generator)
    face, null = adapter.face_tokens(encoder_tokens.to(device)), adapter.null_face_tokens(photos)
    faces = torch.cat([null] + [face] * (batch - 1)) if batch > 1 else face
    return sample.to(device, dtype), text.to(device, dtype), faces.to(device, dtype)


@torch.inference_mode()
def bench_dtype(unet, adapter, dtype, args, device) -> list[dict]:
    unet.to(device, dtype)
    adapter.to(device, dtype)
    x, text, faces = step_inputs(unet, adapter, args.size, args.batch, args.photos, dtype, device)
    timestep = torch.tensor(500, device=device)
    extra = extra_inputs(unet, args.batch, device, dtype)  # SDXL's micro-conditioning

    def calls(model):
        def bare():
            return model(x, timestep, encoder_hidden_states=text, **extra).sample

        def fact():  # a fresh dict each call: the UNet pops "gligen" out of the one it is given
            return model(x, timestep, encoder_hidden_states=text, **extra,
                         cross_attention_kwargs={"gligen": {"objs": faces}}).sample
        return bare, fact

    bare, fact = calls(unet)
    # FLOPs of the eager calls (the same math runs compiled); the counted calls double as warm-ups
    flops_bare, ops_bare, _ = count_flops(bare)
    flops_fact, ops_fact, _ = count_flops(fact)
    common = {"dtype": SHORT[dtype], "flops_bare": flops_bare, "flops_fact": flops_fact,
              "attention_flops_bare": flops_by_kind(ops_bare)["attention"],
              "attention_flops_fact": flops_by_kind(ops_fact)["attention"]}
    rows = [dict(common, path="eager", **measure(bare, fact, args, device))]
    if not args.no_breakdown:
        rows[0]["kinds_bare"], rows[0]["kinds_fact"] = time_by_kind(bare, device), time_by_kind(fact, device)
        rows[0]["flop_kinds_bare"], rows[0]["flop_kinds_fact"] = flops_by_kind(ops_bare), flops_by_kind(ops_fact)
    report_row(rows[0])
    if dtype in args.compile_dtypes:
        torch._dynamo.reset()  # a fresh compile per dtype: its time is what a user pays once per process
        bare_c, fact_c = calls(torch.compile(unet))
        compile_bare, compile_fact = timed(bare_c, device), timed(fact_c, device)  # first calls compile
        rows.append(dict(common, path="compiled", compile_bare_s=compile_bare, compile_fact_s=compile_fact,
                         **measure(bare_c, fact_c, args, device)))
        report_row(rows[-1])
        torch._dynamo.reset()
    gc.collect()
    return rows


def measure(bare, fact, args, device) -> dict:
    """Warm-up, then `repeats` bare / FACT calls interleaved, so that a change of load on the machine
    (other jobs) hits both alike; then one untimed call each for the peak memory."""
    bare(), fact()
    times_bare, times_fact = [], []
    for _ in range(args.repeats):
        times_bare.append(timed(bare, device))
        times_fact.append(timed(fact, device))
    out = {"times_bare": times_bare, "times_fact": times_fact, "bare_s": min(times_bare), "fact_s": min(times_fact),
           "bare_median_s": statistics.median(times_bare), "fact_median_s": statistics.median(times_fact),
           # each FACT call timed right after a bare one: the median of the pair ratios drifts least with load
           "paired_overhead": statistics.median(f / b for f, b in zip(times_fact, times_bare)) - 1}
    out["overhead"] = out["fact_s"] / out["bare_s"] - 1
    if not args.no_memory:
        out["peak_bare_mib"], out["peak_fact_mib"] = peak_memory_mib(bare, device), peak_memory_mib(fact, device)
    return out


def report_row(r: dict) -> None:
    """Each config's table row as soon as it is measured: a run cut short still leaves its numbers."""
    times = " ".join(f"{b:.3f}/{f:.3f}" for b, f in zip(r["times_bare"], r["times_fact"]))
    print(f"  {r['dtype']} {r['path']}: bare/FACT s per step {times}", flush=True)
    print("  " + main_table([r])[-1], flush=True)


# ---- report ----------------------------------------------------------------------------------------
def machine(device: torch.device) -> str:
    import diffusers

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = f"; GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"CPU {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, {ram:.0f} GiB RAM"
            f"{gpu}; torch {torch.__version__}, diffusers {diffusers.__version__}, Python {platform.python_version()}")


def bf16_note(args, device) -> list[str]:
    """bf16 on a CPU without AVX-512 is not a path to measure: torch's oneDNN bf16 kernels need it, and
    bf16 convolutions fall back to the slow reference kernel (10-200x slower than fp32 on an AVX2 VM)."""
    if device.type != "cpu" or torch.bfloat16 not in args.dtype_list:
        return []
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        return []
    return [f"note: torch CPU capability {capability}, no AVX-512: bf16 convolutions run torch's slow reference "
            "kernel here; these bf16 numbers say nothing about bf16 on an AVX-512 / AMX CPU"]


def main_table(rows: list[dict]) -> list[str]:
    lines = ["| dtype | path | bare s/step | FACT s/step | overhead | paired overhead | FLOP ratio "
             "| compile s (bare / FACT) | peak MiB (bare / FACT) | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        compile_s = f"{r['compile_bare_s']:.0f} / {r['compile_fact_s']:.0f}" if "compile_bare_s" in r else "-"
        peak = f"{r['peak_bare_mib']:.0f} / {r['peak_fact_mib']:.0f}" if "peak_bare_mib" in r else "-"
        target = TARGETS.get(r["dtype"])
        verdict = "-" if target is None else f"<= {100 * target:+.0f}%: {'met' if r['overhead'] <= target else 'missed'}"
        lines.append(
            f"| {r['dtype']} | {r['path']} | {r['bare_s']:.3f} ({r['bare_median_s']:.3f}) | {r['fact_s']:.3f} "
            f"({r['fact_median_s']:.3f}) | **{100 * r['overhead']:+.0f}%** | {100 * r['paired_overhead']:+.0f}% | "
            f"x{r['flops_fact'] / r['flops_bare']:.3f} ({100 * (r['flops_fact'] / r['flops_bare'] - 1):+.0f}%) | "
            f"{compile_s} | {peak} | {verdict} |")
    return lines


def breakdown_table(r: dict) -> list[str]:
    kb, ka, fb, fa = r["kinds_bare"], r["kinds_fact"], r["flop_kinds_bare"], r["flop_kinds_fact"]
    total_b, total_a = sum(kb.values()), sum(ka.values())
    lines = ["", f"Where the time goes, {r['dtype']} eager (one profiled call each; profiler self time, s):",
             "| kind of op | bare s | FACT s | added s | added, % of the bare step | added GFLOP "
             "| GFLOP/s bare | GFLOP/s of what is added |", "|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        added_t, added_f = ka[kind] - kb[kind], fa[kind] - fb[kind]
        rate_b = f"{fb[kind] / kb[kind] / 1e9:.0f}" if fb[kind] and kb[kind] > 0 else "-"
        rate_a = f"{added_f / added_t / 1e9:.0f}" if added_f and added_t > 0 else "-"
        lines.append(f"| {kind} | {kb[kind]:.3f} | {ka[kind]:.3f} | {added_t:+.3f} | "
                     f"{100 * added_t / total_b:+.0f}% | {added_f / 1e9:.1f} | {rate_b} | {rate_a} |")
    lines.append(f"| all | {total_b:.3f} | {total_a:.3f} | {total_a - total_b:+.3f} | "
                 f"{100 * (total_a / total_b - 1):+.0f}% | {(sum(fa.values()) - sum(fb.values())) / 1e9:.1f} | | |")
    return lines


def report(rows: list[dict], args, device, models: str) -> str:
    peak_what = "max_memory_allocated" if device.type == "cuda" else "peak RSS of the process, weights included"
    lines = [f"facefact adapter benchmark - {datetime.datetime.now().isoformat(timespec='minutes')} - {machine(device)}",
             f"{models}; {args.size}x{args.size} ({args.size // 8}^2 latents), batch {args.batch}, {args.photos} "
             f"photo(s) = {16 * args.photos} face tokens, scale {args.scale}, device {device}",
             f"s/step = min of {args.repeats} interleaved bare / FACT calls after a warm-up (median in ()); paired = "
             f"median of FACT/bare per repeat; compile = first call under torch.compile (inductor, default mode); "
             f"peak = one step, {peak_what}"] + bf16_note(args, device) + [""]
    lines += main_table(rows)
    for r in rows:
        if "kinds_bare" in r:
            lines += breakdown_table(r)
    if rows:
        r = rows[0]
        lines += ["", f"attention FLOPs (SDPA, counted via the registered CPU formula): "
                      f"{r['attention_flops_bare'] / 1e12:.4f} TFLOP/step bare, {r['attention_flops_fact'] / 1e12:.4f} "
                      f"with FACT; all: {r['flops_bare'] / 1e12:.4f} / {r['flops_fact'] / 1e12:.4f} TFLOP/step"]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, help="image size, a multiple of 8 (latents are size/8); "
                                                 "default 512 (SD1.5) / 1024 (SDXL), 128 with --tiny")
    parser.add_argument("--family", choices=sorted(BASE_UNETS), default="sd15", help="base UNet: sd15 or sdxl")
    parser.add_argument("--layout", choices=["first", "all"], default="first",
                        help="FACT block layout: one fuser per transformer stack (first) or every block (all)")
    parser.add_argument("--layouts", action="store_true",
                        help="print SD1.5 vs SDXL layouts (params, FLOP ratio; meta device, seconds) and stop")
    parser.add_argument("--batch", type=int, default=2, help="UNet batch (2 = one image with classifier-free guidance)")
    parser.add_argument("--repeats", type=int, default=3, help="timed bare / FACT call pairs per config, after a warm-up")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16, float16")
    parser.add_argument("--no-compile", action="store_true", help="eager only (skip torch.compile)")
    parser.add_argument("--compile-dtypes", help="dtypes to also run compiled (default: all of --dtypes)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny UNet + adapter: a smoke run in seconds")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--photos", type=int, default=1, help="reference photos (16 face tokens each)")
    parser.add_argument("--scale", type=float, default=0.5, help="FACT scale")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the profiled split by kind of operator")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory call of each config")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    args.size = args.size or (128 if args.tiny else DEFAULT_SIZE[args.family])
    if args.size % 8 or args.size < 64:
        parser.error("--size must be a multiple of 8, at least 64")
    if args.batch < 1 or args.repeats < 1 or args.photos < 1:
        parser.error("--batch, --repeats and --photos must be at least 1")
    args.dtype_list = dtype_list(parser, "--dtypes", args.dtypes)
    compiled = [] if args.no_compile else dtype_list(parser, "--compile-dtypes", args.compile_dtypes or args.dtypes)
    args.compile_dtypes = [d for d in compiled if d in args.dtype_list]
    return args


def dtype_list(parser, flag: str, text: str) -> list:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DTYPES]
    if unknown or not names:
        parser.error(f"{flag}: unknown {unknown or 'empty list'}; choose from float32, bfloat16, float16")
    return list(dict.fromkeys(DTYPES[n] for n in names))


def main(argv=None) -> int:
    args = parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    # "modules ... should be kept in float32: []" on every UNet.to(bfloat16): nothing is, it is noise
    diffusers_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print("\n".join([machine(device)] + bf16_note(args, device)), flush=True)
    if args.layouts or (args.family == "sdxl" and not args.tiny):
        from layouts import all_layouts, layout_table

        print("\n".join(["FACT block layouts (meta device; batch 2, 1 photo):"] + layout_table(all_layouts())), flush=True)
        if args.layouts:
            return 0
    torch.manual_seed(0)
    unet, adapter = build_models(args.tiny, args.size, args.family, args.layout)
    adapter.attach(unet)
    adapter.set_scale(args.scale)
    size_name = {"sd15": "SD1.5-size", "sdxl": "SDXL-size"}[args.family]
    models = (f"{'tiny ' + args.family if args.tiny else size_name} UNet ({n_params(unet) / 1e6 - n_params(adapter.fusers) / 1e6:.1f} M "
              f"params, random weights) + FACT adapter ({n_params(adapter) / 1e6:.1f} M: resampler "
              f"{n_params(adapter.resampler) / 1e6:.1f} M, {len(adapter.block_paths)} fusers, layout {args.layout})")
    print(models, flush=True)
    rows = []
    for dtype in args.dtype_list:
        rows += bench_dtype(unet, adapter, dtype, args, device)
    print()
    print(report(rows, args, device, models))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "machine": machine(device), "args": vars(args)}, indent=1,
                                        default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
