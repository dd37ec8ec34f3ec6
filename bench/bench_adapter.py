"""Cost of the FACT adapter per denoising step, SD1.5-size, random weights, CPU (issue 3).

Prints a table - never asserts a timing:
  * time per UNet step (batch 2 = classifier-free guidance, 1 photo = 16 face tokens) without and
    with the adapter attached (alphas non-zero, scale 0.5), fp32 and bf16, and the overhead;
  * FLOPs per step, bare vs with adapter, attention included (see bench/flops.py: torch's
    FlopCounterMode skips the CPU SDPA kernel unless taught);
  * peak RSS of a whole generation (text encoder + UNet + VAE + TransFace encoder + adapter, all
    SD1.5 / official sizes), each config in its own subprocess so peaks do not mix.

    python bench/bench_adapter.py                      # full: 512², fp32 + bf16, memory (~10 min on CPU)
    python bench/bench_adapter.py --size 256 --repeats 1 --skip-memory   # quick
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import count_flops  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ---- SD1.5-size models with random weights ---------------------------------------------------
def sd15_unet(sample_size: int = 64):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=32).eval().requires_grad_(False)


def sd15_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
        layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512, scaling_factor=0.18215).eval().requires_grad_(False)


def sd15_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).eval().requires_grad_(False)


def official_adapter(unet, seed: int = 0):
    """FaceAdapter.for_unet with the official resampler sizes, gates opened like a trained checkpoint."""
    from facefact.model import FaceAdapter, ResamplerConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = FaceAdapter.for_unet(unet, ResamplerConfig()).eval().requires_grad_(False)
        for proc in adapter.all_processors():
            proc.alpha_attn.fill_(0.6)
            proc.alpha_dense.fill_(0.4)
    return adapter


def quiet_diffusers() -> None:
    # "modules ... should be kept in float32: []" on every UNet.to(bfloat16): nothing is, it is noise
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- per-step timing + FLOPs -------------------------------------------------------------------
def time_calls(fn, repeats: int) -> tuple[list[float], list[float]]:
    """(wall-clock seconds, process CPU seconds) of each call. On a shared machine wall time moves with
    the other jobs' load; CPU time much less so (with 1 thread it is close to the work done)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


@torch.inference_mode()
def bench_step(dtype_names, size: int, repeats: int, steps: int, batch: int, photos: int, scale: float,
               compare_stock: bool = True, breakdown: bool = True) -> list[dict]:
    torch.manual_seed(0)
    latent = size // 8
    print(f"building SD1.5-size UNet + adapter (random weights), {size}x{size} -> {latent}x{latent} latents ...",
          flush=True)
    unet = sd15_unet(latent)
    adapter = official_adapter(unet)
    print(f"  UNet {n_params(unet) / 1e6:.1f} M params; adapter {n_params(adapter) / 1e6:.1f} M "
          f"(resampler {n_params(adapter.resampler) / 1e6:.1f} M, {len(adapter.block_paths)} block adapters)",
          flush=True)
    sample = torch.randn(batch, 4, latent, latent)
    text = torch.randn(batch, 77, 768)
    encoder_tokens = torch.randn(photos, 144, 512)
    face = adapter.face_tokens(encoder_tokens)
    null = adapter.null_face_tokens(photos)
    faces = torch.cat([null] + [face] * (batch - 1)) if batch > 1 else face
    timestep = torch.tensor(500)

    rows = []
    for name in dtype_names:
        dtype = DTYPES[name]
        unet.to(dtype)
        x, t_only, t_faces = sample.to(dtype), text.to(dtype), torch.cat([text, faces], 1).to(dtype)

        def bare():
            return unet(x, timestep, encoder_hidden_states=t_only).sample

        def with_adapter():
            return unet(x, timestep, encoder_hidden_states=t_faces).sample

        from facefact.model import cpu_kernels

        cpu_kernels.available()  # its one-off probe must not land inside the FLOP count
        # FLOPs (the counted calls double as warm-ups), then timings interleaved bare / adapter so
        # that a change of load on the machine (other jobs) hits both alike
        flops_bare, ops_bare, _ = count_flops(bare)
        with attached(adapter, unet, scale, photos):
            flops_ad, ops_ad, _ = count_flops(with_adapter)
        times_bare, times_ad, cpu_bare, cpu_ad, times_stock, cpu_stock = [], [], [], [], [], []
        for _ in range(repeats):
            wall, cpu = time_calls(bare, 1)
            times_bare += wall
            cpu_bare += cpu
            with attached(adapter, unet, scale, photos):
                wall, cpu = time_calls(with_adapter, 1)
                times_ad += wall
                cpu_ad += cpu
                if compare_stock:  # the same adapter with its linears on the stock modules (cpu_fast off)
                    set_cpu_fast(adapter, False)
                    wall, cpu = time_calls(with_adapter, 1)
                    set_cpu_fast(adapter, True)
                    times_stock += wall
                    cpu_stock += cpu
        row = {"dtype": name, "size": size, "batch": batch, "photos": photos,
               "bare_s": min(times_bare), "bare_median_s": statistics.median(times_bare),
               "adapter_s": min(times_ad), "adapter_median_s": statistics.median(times_ad),
               "bare_flops": flops_bare, "adapter_flops": flops_ad,
               "bare_attention_flops": sum(v for k, v in ops_bare.items() if "attention" in k),
               "adapter_attention_flops": sum(v for k, v in ops_ad.items() if "attention" in k),
               "times_bare": times_bare, "times_adapter": times_ad, "cpu_bare": cpu_bare, "cpu_adapter": cpu_ad,
               "times_adapter_stock": times_stock, "cpu_adapter_stock": cpu_stock,
               "bare_cpu_s": min(cpu_bare), "adapter_cpu_s": min(cpu_ad), "threads": torch.get_num_threads()}
        if times_stock:
            row["stock_s"], row["stock_median_s"] = min(times_stock), statistics.median(times_stock)
            row["stock_overhead"] = row["stock_s"] / row["bare_s"] - 1
        if breakdown:  # one more call of each under torch.profiler: where the added time goes
            row["kinds_bare"], row["kinds_adapter"] = time_by_kind(bare), {}
            with attached(adapter, unet, scale, photos):
                row["kinds_adapter"] = time_by_kind(with_adapter)
            row["flops_by_kind_bare"], row["flops_by_kind_adapter"] = flops_by_kind(ops_bare), flops_by_kind(ops_ad)
        row["overhead"] = row["adapter_s"] / row["bare_s"] - 1
        row["cpu_overhead"] = row["adapter_cpu_s"] / row["bare_cpu_s"] - 1
        # each adapter call timed right after a bare one: the median of the pair ratios drifts least with load
        row["pair_overhead"] = statistics.median(a / b for a, b in zip(times_ad, times_bare)) - 1
        rows.append(row)
        print(f"  {name}: bare {fmt_times(times_bare)}  adapter {fmt_times(times_ad)}  (CPU: bare "
              f"{fmt_times(cpu_bare)}  adapter {fmt_times(cpu_ad)})"
              + (f"  adapter, stock linears {fmt_times(times_stock)}" if times_stock else ""), flush=True)
        gc.collect()
    return rows  # the UNet and adapter go with this frame, before the memory runs start


@contextlib.contextmanager
def attached(adapter, unet, scale: float, photos: int):
    adapter.attach(unet)
    adapter.set_scale(scale)
    adapter.set_num_face_tokens(16 * photos)
    try:
        yield adapter
    finally:
        adapter.detach()


KINDS = ("attention", "linear", "convolution", "other")


def op_kind(name: str) -> str:
    """Which kind of work an operator is: attention kernel, GEMM (linear), convolution, or the rest
    (norms, elementwise, copies, allocation)."""
    name = name.lower()
    if "scaled_dot_product" in name or "attention" in name:
        return "attention"
    if "convolution" in name:
        return "convolution"
    if "mm" in name or "linear_pointwise" in name:  # aten::mm / addmm / bmm, oneDNN's linear
        return "linear"
    return "other"


def time_by_kind(fn) -> dict[str, float]:
    """Seconds of one call of fn spent in each kind of operator (profiler self time of the calling
    thread: intra-op threads work inside the op, so the kinds add up to about the wall time)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    kinds = dict.fromkeys(KINDS, 0.0)
    for event in prof.key_averages():
        kinds[op_kind(event.key)] += event.self_cpu_time_total / 1e6
    return kinds


def flops_by_kind(ops: dict[str, int]) -> dict[str, int]:
    kinds = dict.fromkeys(KINDS, 0)
    for name, flops in ops.items():
        kinds[op_kind(name)] += flops
    return kinds


def set_cpu_fast(adapter, enabled: bool) -> None:
    """Adapter linears through oneDNN on CPU (facefact.model.cpu_kernels) or through the stock nn modules."""
    for proc in adapter.all_processors():
        proc.cpu_fast = enabled


def fmt_times(times) -> str:
    return "[" + ", ".join(f"{t:.2f}" for t in times) + "] s"


# ---- peak memory of a whole generation (child process) ------------------------------------------
def memory_child(dtype_name: str, size: int, steps: int, with_adapter: bool) -> dict:
    """Build every component directly in `dtype` (so no fp32 copy inflates a bf16 peak), generate once."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from facefact.model import EncoderConfig, TransFaceEncoder
    from facefact.pipelines.fact import FaceFactPipeline
    from facefact.pipelines.tiny import tiny_tokenizer

    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    start = time.perf_counter()
    tokenizer = tiny_tokenizer()
    torch.set_default_dtype(dtype)
    try:
        unet, vae, text_encoder = sd15_unet(size // 8), sd15_vae(), sd15_text_encoder(tokenizer)
    finally:
        torch.set_default_dtype(torch.float32)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    sd = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                 scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                 requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    if with_adapter:
        encoder = TransFaceEncoder(EncoderConfig()).eval()  # official sizes, float32 as in the reference
        pipe = FaceFactPipeline(sd, encoder, official_adapter(unet))  # attach() casts the adapter to the UNet dtype
    gc.collect()
    build_s = time.perf_counter() - start
    rss_built = rss_mb()
    start = time.perf_counter()
    with torch.inference_mode():
        if with_adapter:
            out = pipe("a portrait photo of a person", face_pixels=torch.rand(1, 3, 112, 112) * 2 - 1, seed=0,
                       num_inference_steps=steps, guidance_scale=5.0, height=size, width=size)
            image = out.images[0]
        else:
            image = sd("a portrait photo of a person", num_inference_steps=steps, guidance_scale=5.0, height=size,
                       width=size, generator=torch.Generator().manual_seed(0)).images[0]
    return {"dtype": dtype_name, "with_adapter": with_adapter, "size": size, "steps": steps,
            "image_size": list(image.size), "build_s": build_s, "generate_s": time.perf_counter() - start,
            "rss_built_mb": rss_built, "peak_rss_mb": peak_rss_mb()}


def rss_mb() -> float:
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak RSS of this process image. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over
    exec, so a child of the (large) benchmark process would report the parent's peak."""
    peak = _proc_status_mb("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return float("nan")


def bench_memory(dtype_names, size: int, steps: int) -> list[dict]:
    rows = []
    for name in dtype_names:
        for with_adapter in (False, True):
            what = "with adapter" if with_adapter else "bare SD1.5"
            print(f"memory: {name} {what}, {size}x{size}, {steps} steps (subprocess) ...", flush=True)
            cmd = [sys.executable, __file__, "--_memory-child", json.dumps([name, size, steps, with_adapter])]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"memory subprocess failed ({name}, {what})")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# ---- report -----------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}), {ram:.0f} GiB RAM; "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def report(step_rows, memory_rows, args) -> str:
    lines = [f"facefact adapter benchmark - {datetime.date.today().isoformat()} - {machine()}",
             f"UNet step = SD1.5-size UNet, random weights, {args.size}x{args.size} ({args.size // 8}^2 latents), "
             f"batch {args.batch} (CFG), {args.photos} photo(s) = {16 * args.photos} face tokens, scale {args.scale}; "
             f"time = min of {args.repeats} interleaved bare / adapter calls (wall clock; CPU = process CPU time; paired = median over repeats of adapter/bare of the same repeat) after a warm-up (median in ())",
             ""]
    if step_rows:
        lines += ["| dtype | threads | without adapter s/step | with adapter s/step | overhead | CPU s/step without / with "
                  "| CPU overhead | paired overhead | TFLOP/step without | TFLOP/step with | FLOP ratio | adapter share of FLOPs |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in step_rows:
            share = 1 - r["bare_flops"] / r["adapter_flops"]
            lines.append(
                f"| {r['dtype']} | {r['threads']} | {r['bare_s']:.2f} ({r['bare_median_s']:.2f}) | {r['adapter_s']:.2f} "
                f"({r['adapter_median_s']:.2f}) | {100 * r['overhead']:+.0f}% | {r['bare_cpu_s']:.2f} / "
                f"{r['adapter_cpu_s']:.2f} | {100 * r['cpu_overhead']:+.0f}% | {100 * r['pair_overhead']:+.0f}% | {r['bare_flops'] / 1e12:.3f} | "
                f"{r['adapter_flops'] / 1e12:.3f} | x{r['adapter_flops'] / r['bare_flops']:.3f} "
                f"({100 * (r['adapter_flops'] / r['bare_flops'] - 1):+.0f}%) | {100 * share:.0f}% |")
        if any("stock_s" in r for r in step_rows):
            lines += ["", "Same adapter, its linears through the stock nn modules (MKL on CPU) instead of oneDNN "
                          "(facefact.model.cpu_kernels), timed in the same repeats:",
                      "| dtype | with adapter, oneDNN s/step | overhead | with adapter, stock linears s/step | overhead "
                      "| oneDNN speed-up of the adapter's own time |", "|---|---|---|---|---|---|"]
            for r in step_rows:
                if "stock_s" in r:
                    own_fast, own_stock = r["adapter_s"] - r["bare_s"], r["stock_s"] - r["bare_s"]
                    lines.append(f"| {r['dtype']} | {r['adapter_s']:.2f} ({r['adapter_median_s']:.2f}) | "
                                 f"{100 * r['overhead']:+.0f}% | {r['stock_s']:.2f} ({r['stock_median_s']:.2f}) | "
                                 f"{100 * r['stock_overhead']:+.0f}% | x{own_stock / own_fast:.2f} |"
                                 if own_fast > 0 else f"| {r['dtype']} | {r['adapter_s']:.2f} | - | {r['stock_s']:.2f} | - | - |")
        for r in step_rows:
            if "kinds_bare" not in r:
                continue
            kb, ka, fb, fa = r["kinds_bare"], r["kinds_adapter"], r["flops_by_kind_bare"], r["flops_by_kind_adapter"]
            total_b = sum(kb.values())
            lines += ["", f"Where the time goes, {r['dtype']} (one profiled call each; profiler self time, s):",
                      "| kind of op | without adapter s | with adapter s | added s | added, % of the bare step "
                      "| added GFLOP | GFLOP/s without | GFLOP/s of what is added |", "|---|---|---|---|---|---|---|---|"]
            for kind in KINDS:
                added_t, added_f = ka[kind] - kb[kind], fa[kind] - fb[kind]
                rate_b = f"{fb[kind] / kb[kind] / 1e9:.0f}" if fb[kind] and kb[kind] > 0 else "-"
                rate_a = f"{added_f / added_t / 1e9:.0f}" if added_f and added_t > 0 else "-"
                lines.append(f"| {kind} | {kb[kind]:.2f} | {ka[kind]:.2f} | {added_t:+.2f} | "
                             f"{100 * added_t / total_b:+.0f}% | {added_f / 1e9:.0f} | {rate_b} | {rate_a} |")
            lines.append(f"| all | {total_b:.2f} | {sum(ka.values()):.2f} | {sum(ka.values()) - total_b:+.2f} | "
                         f"{100 * (sum(ka.values()) / total_b - 1):+.0f}% | {(sum(fa.values()) - sum(fb.values())) / 1e9:.0f} | | |")
        r = step_rows[0]
        lines += ["", f"attention FLOPs (SDPA, counted via the registered CPU formula): "
                      f"{r['bare_attention_flops'] / 1e12:.3f} TFLOP/step without, "
                      f"{r['adapter_attention_flops'] / 1e12:.3f} with"]
    if memory_rows:
        lines += ["", f"Peak RSS of a whole generation ({memory_rows[0]['size']}x{memory_rows[0]['size']}, "
                      f"{memory_rows[0]['steps']} steps, CFG; SD1.5-size CLIP text encoder + UNet + VAE, random "
                      f"weights; with adapter: + TransFace-S encoder (fp32) + official-size adapter)",
                  "| dtype | pipeline | RSS after build MiB | peak RSS MiB | generate s |", "|---|---|---|---|---|"]
        for m in memory_rows:
            lines.append(f"| {m['dtype']} | {'FACT (with adapter)' if m['with_adapter'] else 'bare SD1.5'} | "
                         f"{m['rss_built_mb']:.0f} | {m['peak_rss_mb']:.0f} | {m['generate_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="image size (latents are size/8); default 512")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="timed UNet calls per config (after a warm-up)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps of the whole-generation memory run")
    parser.add_argument("--batch", type=int, default=2, help="UNet batch (2 = classifier-free guidance)")
    parser.add_argument("--photos", type=int, default=1, help="reference photos (16 face tokens each)")
    parser.add_argument("--scale", type=float, default=0.5, help="adapter scale")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, = cores)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the whole-generation peak-RSS runs")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the profiled call that splits the added time by kind of operator")
    parser.add_argument("--no-stock-compare", action="store_true",
                        help="do not also time the adapter with its linears on the stock modules (oneDNN off)")
    parser.add_argument("--skip-step", action="store_true", help="skip the per-step timing / FLOPs")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quiet_diffusers()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.memory_child:
        name, size, steps, with_adapter = json.loads(args.memory_child)
        print(json.dumps(memory_child(name, size, steps, with_adapter)))
        return 0
    if args.size % 8:
        parser.error("--size must be a multiple of 8")
    dtype_names = ["fp32", "bf16"] if args.dtype == "both" else [args.dtype]
    step_rows = [] if args.skip_step else bench_step(dtype_names, args.size, args.repeats, args.steps, args.batch,
                                                     args.photos, args.scale, not args.no_stock_compare,
                                                     not args.no_breakdown)
    gc.collect()
    memory_rows = [] if args.skip_memory else bench_memory(dtype_names, args.size, args.steps)
    print()
    print(report(step_rows, memory_rows, args))
    if args.json:
        args.json.write_text(json.dumps({"step": step_rows, "memory": memory_rows, "machine": machine()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
