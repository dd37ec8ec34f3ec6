"""Check 7 ("compile"): a torch.compile'd UNet with FACT serves every request of one shape without
compiling again, captures the fusers without graph breaks, and gives the eager pixels.

The UNet is compiled as diffusers documents it (`pipe.unet = torch.compile(pipe.unet)`): inductor on
CUDA; on a CPU backend "eager" - dynamo's capture, guards and recompiles exactly as with inductor,
without a C++ compiler's minutes. A warm-up makes the two graphs a server needs per shape (FACT acting
at 0.5; no fuser acting: scale 0, a fact_window's off steps); then, with dynamo's
`error_on_recompile`, other scales (one number, per level), the other person, a window, `cfg_face`
off and two people in one image (after its own warm-up: regions are a third graph) must reuse them.
Each compiled image is compared with the same call on the eager UNet (the same weights): equal on a
CPU; on a GPU, where inductor fuses and reorders float math (and a few steps of a random-weight
model amplify rounding in places), a mean difference within 2/255, the largest one reported. And each fuser alone,
with and without regions, is one graph under `torch._dynamo.explain`.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from gpu_checks.models import SHORT, face_pixels

CHECK = "compile"
REGIONS = [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)]
GPU_MEAN_PIXEL_BOUND = 2.0  # of 255, the mean over the image: inductor's fused kernels round differently


def backend_for(device: torch.device) -> str:
    return "inductor" if device.type == "cuda" else "eager"


def unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


@torch.inference_mode()
def run(setup) -> None:
    report = setup.report
    if not report.fits(3 * setup.estimate("compile")):
        report.skip(CHECK, "recompiles", "the --budget-s is spent")
        return
    dtype = setup.check_dtypes[-1]
    pipe = setup.models.pipeline("text2img", dtype)
    from facefact.pipelines import FACTStableDiffusionPipeline

    eager = FACTStableDiffusionPipeline.from_pipe(pipe)  # the same UNet module, called without the wrapper
    people = [pipe.encode_faces(face_pixels=face_pixels(seed)) for seed in (0, 1)]
    torch._dynamo.reset()
    pipe.unet = torch.compile(pipe.unet, backend=backend_for(setup.device))
    try:
        recompiles(setup, pipe, eager, people, dtype)
    finally:
        pipe.unet = pipe.unet._orig_mod
        torch._dynamo.reset()
    fuser_graphs(setup, pipe)


def generate(setup, pipe, **kwargs) -> np.ndarray:
    out = pipe("a portrait photo", num_inference_steps=setup.steps, height=setup.size, width=setup.size,
               output_type="np", generator=torch.Generator("cpu").manual_seed(3), **kwargs)
    return np.round(np.asarray(out.images) * 255).astype(np.int16)


def recompiles(setup, pipe, eager, people, dtype) -> None:
    report, (a, b) = setup.report, people
    started, breaks = time.perf_counter(), graph_breaks()
    generate(setup, pipe, face_tokens=a, fact_scale=0.5)
    generate(setup, pipe, face_tokens=a, fact_scale=0.0)
    warm_s, warm_graphs = time.perf_counter() - started, unique_graphs()
    requests = {"scale 0.3": {"face_tokens": a, "fact_scale": 0.3},
                "other person, 0.7": {"face_tokens": b, "fact_scale": 0.7},
                "per level": {"face_tokens": b, "fact_scale": {"down": 0.2, "mid": 0.4, "up": 0.9}},
                "window (0.5, 1)": {"face_tokens": a, "fact_scale": 1.0, "fact_window": (0.5, 1.0)},
                "cfg_face off": {"face_tokens": b, "fact_scale": 0.6, "cfg_face": False}}
    diffs, problems = [], []
    for name, kwargs in requests.items():
        diffs.append(one_request(setup, pipe, eager, name, kwargs, problems))
    region_graphs = unique_graphs()
    generate(setup, pipe, face_images=[a, b], face_regions=REGIONS, fact_scale=0.5)  # the regions layout's graph
    region_graphs = unique_graphs() - region_graphs
    diffs.append(one_request(setup, pipe, eager, "two people, regions",
                             {"face_images": [b, a], "face_regions": REGIONS, "fact_scale": 0.8}, problems))
    worst, mean = max(d[0] for d in diffs), max(d[1] for d in diffs)
    within = worst == 0 if setup.device.type == "cpu" else mean <= GPU_MEAN_PIXEL_BOUND
    bound = "equal" if setup.device.type == "cpu" else f"mean <= {GPU_MEAN_PIXEL_BOUND}"
    new_breaks = graph_breaks() - breaks
    ok = not problems and within and new_breaks == 0
    detail = (f"{backend_for(setup.device)} {SHORT[dtype]}: warm-up {warm_graphs} graphs in {warm_s:.1f} s, regions "
              f"+{region_graphs}; {len(requests) + 1} other requests: "
              + ("; ".join(problems) if problems else "no recompile")
              + f"; graph breaks {new_breaks}; pixels vs eager: max diff {worst}, mean {mean:.3f} ({bound})")
    report.require(CHECK, "recompiles", ok, detail, warm_graphs=warm_graphs, warm_s=warm_s, region_graphs=region_graphs,
                   problems=problems, graph_breaks=new_breaks, max_pixel_diff=int(worst), mean_pixel_diff=mean,
                   bound=bound)


def one_request(setup, pipe, eager, name: str, kwargs: dict, problems: list) -> tuple[int, float]:
    """Runs one request under error_on_recompile; a recompile is named in `problems`. Returns the
    largest and the mean pixel difference from the eager UNet's image."""
    graphs = unique_graphs()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            compiled = generate(setup, pipe, **kwargs)
    except Exception as err:  # noqa: BLE001 - dynamo's RecompileError (wrapped by the backend): name it
        problems.append(f"{name}: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}")
        return 0, 0.0
    if unique_graphs() != graphs:
        problems.append(f"{name}: {unique_graphs() - graphs} new graph(s)")
    difference = np.abs(compiled - generate(setup, eager, **kwargs))
    return int(difference.max()), float(difference.mean())


def fuser_graphs(setup, pipe) -> None:
    """Each fuser alone - plain face tokens and two people's regions - is one graph, no break."""
    from facefact.model.regions import FaceRegions, box_masks

    adapter = pipe.fact_adapter
    fuser = adapter.fuser(adapter.block_paths[0])
    param = next(fuser.parameters())
    tokens = adapter.face_tokens(torch.zeros(1, 144, adapter.resampler.config.embedding_dim, device=param.device,
                                             dtype=param.dtype)).expand(2, -1, -1)
    faces = torch.cat([tokens, tokens], dim=1)
    side = setup.size // 8
    hidden = torch.randn(2, side * side, fuser.block_dim, device=param.device, dtype=param.dtype)
    regions = FaceRegions(box_masks(REGIONS, (side, side)), [(0, tokens.shape[1]), (tokens.shape[1], faces.shape[1])])
    counts = {}
    for name, objs in (("face tokens", faces), ("regions", (faces, regions.prepare(param.device)))):
        explained = torch._dynamo.explain(fuser)(hidden, objs)
        counts[name] = (explained.graph_count, explained.graph_break_count,
                        [str(r.reason)[:120] for r in explained.break_reasons])
    ok = all(graphs == 1 and breaks == 0 for graphs, breaks, _ in counts.values())
    detail = "; ".join(f"{name}: {g} graph(s), {b} break(s)" + (f" ({', '.join(r)})" if r else "")
                       for name, (g, b, r) in counts.items())
    setup.report.require(CHECK, "fuser graph breaks", ok, detail, counts=counts)
