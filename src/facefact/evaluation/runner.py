"""``evaluate()``: generate identity x prompt x seed x method, then measure every image.

Two passes, so a crash or Ctrl-C in either loses nothing: first every image is generated (or found
in the run folder - each file is keyed by a hash of everything that changes its pixels, so a re-run
reuses what is done and regenerates only what changed), then every image is analysed. Analysis is
cheap and always redone, so new metrics apply to old images.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from facefact import __version__
from facefact.atomic import atomic_write_bytes
from facefact.errors import ConfigError
from facefact.evaluation import metrics
from facefact.evaluation.datasets import Identity, Prompt, load_identities, load_prompts
from facefact.evaluation.measure import generation_uses_cuda, measure
from facefact.evaluation.methods import (Method, MethodContext, MethodUnavailable, RunSettings,
                                         method_slug, parse_method)
from facefact.evaluation.observe import ImageAnalyzer, Observation
from facefact.evaluation.results import METRIC_INFO, EvalResults, aggregate, identity_metrics
from facefact.pipelines.settings import GenerationSettings

DEFAULT_METHODS = ("fact:0.5", "base")


@dataclass
class Job:
    identity: Identity
    prompt: Prompt
    seed: int
    method: Method
    path: Path          # where the image is (or will be)

    @property
    def text(self) -> str:
        return self.prompt.for_subject(self.identity.subject)


def _progress(iterable, total: int, desc: str, enabled: bool):
    """A tqdm bar over ``iterable`` (or a manual one when it is None); the iterable itself when disabled."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)


def build_methods(specs, context: MethodContext, *, add_controls: bool = True):
    """(methods, skipped, notes). Controls that decoupling needs (e.g. ``base`` for ``fact:S``) are added."""
    methods, skipped, notes = [], [], []
    for spec in specs:
        try:
            method = parse_method(spec, context) if isinstance(spec, str) else spec
        except MethodUnavailable as err:
            skipped.append({"method": spec, "reason": str(err)})
            continue
        if any(m.name == method.name for m in methods):
            raise ConfigError(f"method '{method.name}' is listed twice", hint="give each method once", setting="methods")
        methods.append(method)
    names = {m.name for m in methods}
    for control in dict.fromkeys(m.control for m in methods if m.control):
        if control not in names and add_controls:
            methods.append(parse_method(control, context))
            names.add(control)
            notes.append(f"added '{control}' as the no-face control that decoupling is measured against")
    if not methods:
        raise ConfigError("no method can run", hint="; ".join(s["reason"].splitlines()[0] for s in skipped)
                          or "e.g. the methods fact:0.5 and base", setting="methods")
    return methods, skipped, notes


def image_key(method: Method, references_hash: str, prompt_text: str, seed: int, size) -> str:
    """Hash of everything that changes the pixels: the cache key of one image file."""
    payload = {"settings": method.settings(), "prompt": prompt_text, "seed": seed, "size": size,
               "references": references_hash if method.uses_references else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _plan(identities, prompts, seeds, methods, out: Path, size) -> list[Job]:
    jobs = []
    for identity in identities:
        ref_hash = identity.content_hash()  # once per identity: it reads every reference file
        for prompt in prompts:
            for seed in seeds:
                for method in methods:
                    text = prompt.for_subject(identity.subject)
                    key = image_key(method, ref_hash, text, seed, size)
                    # Images that do not depend on the person are shared by all identities with the same prompt.
                    owner = identity.name if method.uses_references else "_shared"
                    path = out / "images" / method_slug(method.name) / owner / f"{prompt.id}-s{seed}-{key}.png"
                    jobs.append(Job(identity, prompt, seed, method, path))
    return jobs


def _read_sidecar(sidecar: Path) -> dict | None:
    """The generation record next to an image, or None when it is missing or unreadable (e.g. cut short
    by a crash in an older version, which wrote it in place): such an image counts as not generated."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def generated_records(jobs: list[Job]) -> tuple[dict[Path, dict | None], set[Path]]:
    """(found, damaged): each image's generation record from an earlier run (None: to generate), and
    the images whose record was unreadable. The resume check of the local and the Ray run alike."""
    found: dict[Path, dict | None] = {}
    damaged: set[Path] = set()
    for job in jobs:
        if job.path in found:
            continue
        sidecar = job.path.with_suffix(".json")
        found[job.path] = _read_sidecar(sidecar) if job.path.is_file() else None
        if found[job.path] is None and job.path.is_file() and sidecar.is_file():
            damaged.add(job.path)
    return found, damaged


def generate_image(method: Method, text: str, references, seed: int, size, cuda: bool) -> tuple[bytes, dict]:
    """One cell (method, identity, prompt, seed): (PNG bytes, generation record), nothing written."""
    image, m = measure(method.generate, text, references, seed, size, cuda=cuda)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    record = {"time_s": m.seconds, "peak_mb": m.peak_mb, "mem_kind": m.mem_kind, "method": method.name,
              "prompt": text, "seed": seed, "width": image.width, "height": image.height}
    if getattr(method, "base_family", None):  # which base family made it (sd15 / sdxl)
        record["base_family"] = method.base_family
    return buffer.getvalue(), record


def write_image(path: Path, png: bytes, record: dict) -> None:
    """The image, then its record - written last (and whole, or not at all): an image without a
    readable record is generated again."""
    atomic_write_bytes(path, png)
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(record).encode())


def _generate_all(jobs: list[Job], size, cuda: bool, progress: bool, *, ray: str | None = None,
                  ray_plan: dict | None = None) -> tuple[dict[Path, dict], list[str]]:
    """Generate missing images; return the sidecar (time, memory, cached) of every image, and notes.
    ray: a cluster address ('auto': a private instance) that generates them instead (runner_ray.py)."""
    found, damaged = generated_records(jobs)
    info: dict[Path, dict] = {path: {**record, "cached": True} for path, record in found.items() if record is not None}
    notes = []
    if damaged:
        notes.append(f"regenerated {len(damaged)} image(s) whose generation record (.json beside the image) was "
                     f"unreadable, e.g. {sorted(damaged)[0].with_suffix('.json')}")
    if ray is not None:
        from facefact.evaluation.runner_ray import generate_on_ray

        photo_notes = []
        for path, record, found_notes in generate_on_ray(jobs, found, size, progress, address=ray, **ray_plan):
            info[path] = {**record, "cached": False}
            photo_notes.extend(found_notes)
        # in the local run's order (the first image of each reference set), each once
        notes.extend(dict.fromkeys(note for _, note in sorted(photo_notes, key=lambda pair: pair[0])))
        return info, notes
    missing = {j.method.name: j.method for j in jobs if found[j.path] is None}
    for method in missing.values():
        if hasattr(method, "prepare"):
            method.prepare()  # model loading is not part of the per-image time
    for job in _progress(jobs, len(jobs), "generating", progress):
        if job.path in info:
            continue
        png, record = generate_image(job.method, job.text, job.identity.references, job.seed, size, cuda)
        write_image(job.path, png, record)
        info[job.path] = {**record, "cached": False}
    return info, notes


def check_run_settings(*, seeds: int, max_prompts: int | None = None) -> None:
    """Refuse run settings that cannot make an image, before any model is loaded or image generated
    (the generation settings check themselves: GenerationSettings.check)."""
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1 (got {seeds})", hint="4 seeds per prompt give diversity metrics")
    if seeds > 10_000:
        raise ConfigError(f"seeds {seeds} is more than 10000 images per prompt", hint="4 seeds give diversity metrics")
    if max_prompts is not None and max_prompts < 1:
        raise ConfigError(f"max_prompts must be at least 1 (got {max_prompts})",
                          hint="leave it out to use every prompt")


def evaluate(identities, prompts="default", *, methods=DEFAULT_METHODS, seeds: int = 2, first_seed: int = 0,
             out: str | Path = "facefact-eval", model: str = "tiny", adapter: str | None = None,
             encoder: str | None = None, generation: GenerationSettings | dict | None = None, device: str | None = None,
             dtype: str | None = None, embedders=("sface",), clip=None, max_prompts: int | None = None,
             arcface_onnx: str | None = None, add_controls: bool = True, keep_embeddings: bool = False,
             report: bool = True, show_references: bool = False, progress: bool = True, ray: str | None = None,
             workers: int | None = None, cpu_threads: int | None = None,
             named_models: dict | None = None) -> EvalResults:
    """Run an evaluation; writes results.json/.csv, aggregate.csv and report.html under ``out``.

    ``generation``: the generation settings (facefact.pipelines.settings.GenerationSettings, or a dict
    of them, e.g. ``{"steps": 2, "size": 64}``); evaluation's default is 30 steps, and a negative prompt
    not given is the prompt set's. Images are square.
    ``methods``: specs ("fact:0.5", "base", ...) or :class:`~facefact.evaluation.methods.Method` objects;
    ``fact:0.5+tiny-sdxl`` / ``fact:0.5+NAME``: on the tiny SDXL base, or on ``named_models[NAME]``
    ({"model": base, "adapter": ..., "encoder": ...}) instead of the run's model - an SDXL FACT
    against the SD1.5 one in one run, each with its own ``base+MODEL`` control.
    ``clip``: a CLIP folder / cached hub id, a :class:`ClipScorer`, or None (CLIP-T reported unavailable).
    ``embedders``: evaluation identity models ("sface", "dlib", "arcface:PATH.onnx"); the first is primary.
    ``keep_embeddings``: also save output embeddings to embeddings.npz (references are never saved).
    ``show_references``: embed thumbnails of the reference photos in report.html (off by default).
    ``cpu_threads``: torch threads during the FACT pipeline's calls (None: the pipeline's own, 1 on
    the tiny models; facefact.pipelines.threads).
    Results name reference photos relative to their identity (file names), never by full path.
    ``ray``: generate the images on a Ray cluster (its address; 'auto': a private instance on this
    machine) with ``workers`` pipelines (default: one per GPU of the cluster, else one per CPU); the
    same images and metrics, measured here (runner_ray.py). Methods are then given as specs.
    """
    started = time.time()
    out = Path(out)
    check_run_settings(seeds=seeds, max_prompts=max_prompts)
    settings = RunSettings(model=model, adapter=adapter, encoder=encoder, generation=generation or {},
                           device=device, dtype=dtype, arcface_onnx=arcface_onnx, cpu_threads=cpu_threads,
                           named_models=dict(named_models or {}))
    if ray is not None and not all(isinstance(m, str) for m in methods):
        raise ConfigError("on a Ray cluster the methods are given by their specs (e.g. 'fact:0.5'): each worker "
                          "builds its own from the spec", hint="pass method specs, or run without a Ray cluster",
                          setting="methods")
    people = load_identities(identities)
    prompt_set = load_prompts(prompts, limit=max_prompts)
    if settings.generation.negative_prompt is None:
        settings.generation = replace(settings.generation, negative_prompt=prompt_set.negative_prompt)
    size = settings.size
    context = MethodContext(settings)
    method_list, skipped, notes = build_methods(list(methods), context, add_controls=add_controls)
    # what the FACT methods run on, hashed - and a model that does not exist refused - before any work
    models = context.models() if any(getattr(m, "uses_fact", False) for m in method_list) else {}
    for s in skipped:
        warnings.warn(s["reason"], stacklevel=2)
    seed_list = list(range(first_seed, first_seed + seeds))
    jobs = _plan(people, prompt_set.prompts, seed_list, method_list, out, size)
    analyzer = ImageAnalyzer(list(embedders))  # before generating: a bad embedder fails now, not after
    analyzer.check_models()
    ray_plan = {"settings": settings, "specs": list(methods), "add_controls": add_controls, "workers": workers}
    gen_info, gen_notes = _generate_all(jobs, size, generation_uses_cuda(device), progress, ray=ray,
                                        ray_plan=ray_plan)
    notes.extend(gen_notes)
    notes.extend(context.notes)

    scorer, clip_note = _clip_scorer(clip, device)
    if clip_note:
        notes.append(clip_note)
    rows, groups, kept = _analyse(jobs, gen_info, analyzer, scorer, out, progress)
    notes.extend(analyzer.notes)
    if keep_embeddings:
        np.savez(out / "embeddings.npz", **kept)

    embedder_names = list(analyzer.embedders)
    families = {m.name: m.base_family for m in method_list if getattr(m, "base_family", None)}
    config = {"facefact_version": __version__, "identities_dir": str(identities), "prompts": str(prompts),
              "prompt_set": prompt_set.name, "num_prompts": len(prompt_set.prompts), "seeds": seed_list,
              "methods": [m.name for m in method_list], "method_settings": {m.name: m.settings() for m in method_list},
              "method_families": families, "generation": settings.as_dict(), "embedders": embedder_names,
              "models": models, "named_models": context.other_models(), "thresholds": analyzer.thresholds(),
              "clip": getattr(scorer, "name", None), "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
              "wall_s": round(time.time() - started, 2)}
    table = aggregate(rows, groups, embedder_names, analyzer.thresholds())
    for agg in table:
        agg["base_family"] = families.get(agg["method"])
    results = EvalResults(config=config, rows=rows, groups=groups, aggregate=table,
                          identities=[{"name": p.name, "subject": p.subject, "references": [r.name for r in p.references]}
                                      for p in people],
                          skipped=skipped, notes=notes,
                          metric_info={**METRIC_INFO, **identity_metrics(embedder_names)})
    results.save(out)
    if report:
        from facefact.evaluation.report import write_report

        write_report([results], out / "report.html", show_references=show_references)
    return results


def _clip_scorer(clip, device):
    if clip is None:
        return None, ("CLIP-T unavailable: no CLIP model given (a transformers CLIPModel folder, e.g. "
                      "openai/clip-vit-large-patch14; `facefact evaluate --clip PATH`)")
    if hasattr(clip, "score"):
        return clip, None
    from facefact.evaluation.clip_score import ClipScorer

    return ClipScorer.load(clip, device=device), None


def _analyse(jobs, gen_info, analyzer: ImageAnalyzer, scorer, out: Path, progress: bool):
    """Per-image rows, per-group diversity rows and (optionally kept) output embeddings.

    Works one identity x prompt block at a time (all its seeds and methods) and then drops the pixels,
    so memory does not grow with the size of the run.
    """
    observations: dict[Path, Observation] = {}   # small; kept so shared (identity-free) images are analysed once
    pixels: dict[Path, np.ndarray] = {}

    def look(path: Path) -> Observation:
        if path not in pixels:
            pixels[path] = np.asarray(Image.open(path).convert("RGB"))
        if path not in observations:
            observations[path] = analyzer.observe(pixels[path])
        return observations[path]

    index = {(j.identity.name, j.prompt.id, j.seed, j.method.name): j for j in jobs}
    blocks: dict[tuple, list[Job]] = {}
    for job in jobs:
        blocks.setdefault((job.identity.name, job.prompt.id), []).append(job)
    refs, rows, groups, kept = {}, [], [], {}
    bar = _progress(None, len(jobs), "measuring", progress) if progress else None
    for (who, _), block in blocks.items():
        if who not in refs:  # in memory only: the users' reference embeddings are never written
            refs[who] = analyzer.reference_embeddings(block[0].identity.references)
        block_rows = []
        for job in block:
            obs = look(job.path)
            row = {"identity": who, "prompt_id": job.prompt.id, "category": job.prompt.category,
                   "prompt": job.text, "seed": job.seed, "method": job.method.name,
                   "image": job.path.relative_to(out).as_posix(),
                   **{k: gen_info[job.path][k] for k in ("time_s", "peak_mb", "mem_kind", "cached")},
                   **{k: gen_info[job.path][k] for k in ("base_family", "width", "height") if k in gen_info[job.path]},
                   **obs.row()}
            for name in analyzer.embedders:
                vec = obs.embeddings.get(name)
                row[f"id_sim_{name}"] = (metrics.identity_similarity(vec, refs[who][name])
                                         if vec is not None and refs[who][name] else math.nan)
                if vec is not None:
                    kept[f"{method_slug(job.method.name)}/{who}/{job.prompt.id}/s{job.seed}/{name}"] = vec
            row.update(_decoupling(job, index, obs, look, pixels, analyzer))
            block_rows.append(row)
            if bar is not None:
                bar.update(1)
        scores = (scorer.score([Image.fromarray(pixels[j.path]) for j in block], [j.text for j in block])
                  if scorer is not None else [math.nan] * len(block))
        for row, score in zip(block_rows, scores):
            row["clip_t"] = score
        rows.extend(block_rows)
        groups.extend(_diversity_groups(block, observations, pixels, analyzer.primary))
        pixels.clear()
    if bar is not None:
        bar.close()
    return rows, groups, kept


def _decoupling(job: Job, index, obs, look, pixels, analyzer) -> dict:
    empty = {"control": "", "drift_outside_px": math.nan, "drift_outside_lowres": math.nan,
             "drift_inside_px": math.nan, "outside_fraction": math.nan, "drift_mask": ""}
    control_job = index.get((job.identity.name, job.prompt.id, job.seed, job.method.control)) if job.method.control else None
    if control_job is None:
        return empty
    control_obs = look(control_job.path)
    image, control = pixels[job.path], pixels[control_job.path]
    if control.shape != image.shape:
        control = np.asarray(Image.fromarray(control).resize(image.shape[1::-1], Image.BICUBIC))
    outside, source = analyzer.outside_face(image, obs, control, control_obs)
    return {**empty, "control": control_job.method.name, **metrics.outside_face_drift(image, control, outside),
            "drift_mask": source}


def _diversity_groups(jobs, observations, pixels, primary: str) -> list[dict]:
    grouped: dict[tuple, list[Job]] = {}
    for job in jobs:
        grouped.setdefault((job.identity.name, job.prompt.id, job.method.name), []).append(job)
    groups = []
    for (who, prompt_id, method), members in grouped.items():
        obs = [observations[j.path] for j in members]
        # Mouth-open ratio when dlib's 68 points are there, else the 5-point smile ratio - never a mix.
        expression = [o.mouth_open for o in obs]
        if all(math.isnan(e) for e in expression):
            expression = [o.smile for o in obs]
        groups.append({"identity": who, "prompt_id": prompt_id, "method": method,
                       **metrics.diversity([o.embeddings.get(primary) for o in obs],
                                           [o.row()["yaw"] for o in obs], [o.row()["roll"] for o in obs],
                                           expression,
                                           [pixels[j.path] for j in members])})
    return groups
