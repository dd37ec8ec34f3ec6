"""The one place the server touches the generation pipeline.

`Engine.generate` turns a job (photos + `GenerateSettings`) into PNG bytes with provenance by
calling the library's pipeline object - the server never re-implements generation. Progress and
stopping go through the pipeline's `callback_on_step_end`: `on_step(step, total)` is called after
every denoising step and may raise (cancel, timeout) to stop the job between steps.

`Engine.generate_template` runs FACT's template mode (`facefact.template.TemplatePortrait`) on an
inpainting pipeline made on the first template job, once: by `template_pipeline()` when given;
else, for the tiny models, the tiny two-ControlNet one `facefact template --model tiny|tiny-sdxl`
uses (of the served family), and otherwise one on the loaded pipeline's own modules (`FACTStableDiffusionInpaintPipeline(
**pipe.components)`, or the SDXL inpaint twin on an SDXL base; the adapter already attached to
that UNet used as is: no second copy).
"""
from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from facefact.errors import FacefactError
from facefact.pipelines.metadata import png_bytes
from facefact.serving.presets import apply_style
from facefact.serving.schemas import GenerateSettings, TemplateJobSettings


@dataclass
class GeneratedPNG:
    png: bytes              # the file, with the provenance chunks (JSON, A1111 line, XMP)
    seed: int
    metadata: dict


@dataclass
class EngineResult:
    images: list[GeneratedPNG]
    notes: list[str] = field(default_factory=list)


@dataclass
class PortraitJob:
    photos: list[np.ndarray]     # one person's reference photos
    settings: GenerateSettings


def batch_class(settings: GenerateSettings, num_photos: int) -> str | None:
    """Jobs of one class make the same pipeline call but for their prompt, negative prompt (style),
    seed and face tokens - so they can run as one UNet batch (`Engine.generate_batch`). Everything
    else must match: steps, guidance, size, scheduler, FACT scale / levels / window, cfg_face,
    images per job, LoRAs, and the number of face tokens (16 per photo, or 16 combined). None: the
    job runs alone (several people in one image)."""
    if settings.face_regions:
        return None
    shared = settings.model_dump(exclude={"prompt", "negative_prompt", "style", "seed", "face_combine"})
    shared["face_token_blocks"] = num_photos if settings.face_combine == "concat" else 1
    return json.dumps(shared, sort_keys=True)


def progress_callback(on_step: Callable[[int, int], None] | None, steps: int):
    """diffusers' `callback_on_step_end` calling `on_step(step, total)` after every step."""
    total = steps

    def callback(pipe, step, timestep, kwargs):
        nonlocal total
        total = int(getattr(pipe, "num_timesteps", None) or total)  # PNDM runs steps + 1 model calls
        if on_step is not None:
            on_step(step + 1, total)
        return kwargs
    return callback


class Engine:
    """One loaded FACT pipeline (SD1.5 or SDXL text-to-image) on one device. One worker thread owns it."""

    def __init__(self, pipeline, name: str = "engine0", lora_weights: dict[str, float] | None = None,
                 template_pipeline: Callable[[], object] | None = None):
        from facefact.model.layouts import unet_family  # here: the API process behind Redis stays free of torch

        self.pipeline = pipeline
        self._make_template_pipeline = template_pipeline or (lambda: default_template_pipeline(pipeline))
        self._template = None  # the TemplatePortrait, made on the first template job
        self.name = name
        self.base_family = unet_family(pipeline.unet)  # 'sd15' or 'sdxl', as the UNet's config says
        self.lora_weights = dict(lora_weights or {})  # LoRAs loaded into the pipeline, at their default weights
        self._busy = threading.Lock()  # two requests at once would interleave the scheduler and FACT scale
        # Every request builds its scheduler from the base model's own config, never from the last request's.
        self._scheduler_config = pipeline.scheduler.config
        pipeline.set_progress_bar_config(disable=True)  # progress goes to the job, not to stderr
        self.warm_up_batches: tuple[int, ...] = ()  # set by compile_unet: what warm_up runs
        self.ready = threading.Event()  # set once warm (at once when nothing is compiled)
        self.ready.set()

    def compile_unet(self, batch_sizes=(1,), mode: str | None = None, backend: str = "inductor") -> None:
        """`pipe.unet = torch.compile(pipe.unet)` (diffusers' way), to be warmed up before the first
        job (`warm_up`, by the worker thread): the UNet batches `batch_sizes` will run get their graphs
        then. FACT's scale is a tensor inside the fusers, so any scale, person and level reuses them."""
        import torch

        self.pipeline.unet = torch.compile(self.pipeline.unet, mode=mode, backend=backend)
        self.warm_up_batches = tuple(sorted(set(batch_sizes)))
        self.ready.clear()

    def warm_up(self) -> None:
        """Run each warm-up batch size once at the server's default settings (2 steps, a synthetic face:
        no photo needed), with FACT acting and with no fuser acting (scale 0: a fact_window's off steps):
        the graphs every request of that shape uses. Then `ready` is set."""
        import torch

        from facefact.pipelines.mixin import DEFAULT_FACT_SCALE

        try:
            with self._busy:
                pipe, _, generation = self._prepare(GenerateSettings(prompt="warm-up", seed=0))
                tokens = pipe.encode_faces(face_pixels=torch.zeros(1, 3, 112, 112))
                kwargs = {**generation.pipeline_kwargs(), "num_inference_steps": 2, "output_type": "np"}
                negative = kwargs.pop("negative_prompt") or ""
                for batch in self.warm_up_batches:  # as generate_batch calls it: one prompt and person per job
                    for scale in (DEFAULT_FACT_SCALE, 0.0):
                        pipe(["warm-up"] * batch, face_tokens=[tokens] * batch, negative_prompt=[negative] * batch,
                             **{**kwargs, "fact_scale": scale})
        finally:
            self.ready.set()  # a failed warm-up is logged by the worker; jobs then compile as they come

    @property
    def default_size(self) -> int:
        return int(self.pipeline.unet.config.sample_size * self.pipeline.vae_scale_factor)

    def model_info(self) -> dict:
        """What the API tells clients about this engine's model (JSON: a Redis worker publishes it)."""
        return {"base_family": self.base_family, "default_size": self.default_size}

    def generate(self, photos: list[np.ndarray], settings: GenerateSettings,
                 on_step: Callable[[int, int], None] | None = None) -> EngineResult:
        """One portrait job: a batch of one (see generate_batch), or several people in one image."""
        if not settings.face_regions:
            result, = self.generate_batch([PortraitJob(photos, settings)], on_step)
            if isinstance(result, Exception):
                raise result
            return result
        with self._busy:
            pipe, seed, generation = self._prepare(settings)
            prompt, _ = apply_style(settings.style, settings.prompt, settings.negative_prompt)
            out = pipe(prompt, face_images=[[photo] for photo in photos], face_regions=settings.face_regions,
                       **generation.pipeline_kwargs(), generator=generation.generators(),
                       callback_on_step_end=progress_callback(on_step, settings.steps))
        return EngineResult(images=self._pngs(out.images, out.metadata_with_hashes(), settings),
                            notes=list(out.notes or []))

    def generate_batch(self, jobs: list[PortraitJob], on_step: Callable[[int, int], None] | None = None
                       ) -> list[EngineResult | FacefactError]:
        """Portrait jobs of one batch class (`batch_class`) as one pipeline call, so one UNet batch:
        each job's photos become its own face tokens (`face_tokens=[...]`, one person per prompt),
        prompt, negative prompt and seeds. Returns each job's result, or the error of a job whose
        photos or settings failed (the others run without it). `on_step` follows the whole batch."""
        if len({batch_class(job.settings, len(job.photos)) for job in jobs}) != 1 or jobs[0].settings.face_regions:
            raise ValueError("generate_batch takes jobs of one batch class, without face regions")
        results: list[EngineResult | FacefactError | None] = [None] * len(jobs)
        with self._busy:
            pipe, _, shared = self._prepare(jobs[0].settings)
            rows = []  # (job index, prompt, negative prompt, generation settings, face tokens)
            for index, job in enumerate(jobs):
                try:
                    prompt, negative = apply_style(job.settings.style, job.settings.prompt, job.settings.negative_prompt)
                    seed = secrets.randbelow(2**31) if job.settings.seed is None else job.settings.seed
                    generation = job.settings.generation(seed, negative)
                    tokens = pipe.encode_faces(job.photos, combine=job.settings.face_combine)
                except FacefactError as err:  # this job's photos or settings: the others go on
                    results[index] = err
                    continue
                rows.append((index, prompt, negative or "", generation, tokens))
            if rows:
                out = pipe([row[1] for row in rows], face_tokens=[row[4] for row in rows],
                           **{**shared.pipeline_kwargs(), "negative_prompt": [row[2] for row in rows]},
                           generator=[g for row in rows for g in row[3].generators()],
                           callback_on_step_end=progress_callback(on_step, shared.steps))
        if rows:
            per_job, metadata = shared.num_images, out.metadata_with_hashes()
            for k, (index, *_) in enumerate(rows):
                part = slice(k * per_job, (k + 1) * per_job)
                results[index] = EngineResult(images=self._pngs(out.images[part], metadata[part], jobs[index].settings),
                                              notes=list(metadata[part][0]["notes"]))
        return results

    def _prepare(self, settings: GenerateSettings):
        """(pipeline, seed, GenerationSettings) with the request's LoRAs and scheduler set (holding the lock)."""
        from facefact.pipelines.loading import make_scheduler

        _, negative = apply_style(settings.style, settings.prompt, settings.negative_prompt)
        seed = secrets.randbelow(2**31) if settings.seed is None else settings.seed
        self._set_loras(settings.loras)
        self.pipeline.scheduler = make_scheduler(settings.scheduler, self._scheduler_config)
        generation = replace(settings.generation(seed, negative), width=settings.width or self.default_size,
                             height=settings.height or self.default_size)
        return self.pipeline, seed, generation

    @staticmethod
    def _pngs(images, metadata, settings: GenerateSettings) -> list[GeneratedPNG]:
        out = []
        for image, meta in zip(images, metadata):
            meta["scheduler"] = settings.scheduler
            if settings.style:
                meta["style"] = settings.style
            out.append(GeneratedPNG(png=png_bytes(image, meta), seed=int(meta["seed"]), metadata=meta))
        return out

    def generate_template(self, template, photos: list[np.ndarray], targets: dict[int, list[int]] | None,
                          settings: TemplateJobSettings, on_step: Callable[[int, int], None] | None = None) -> EngineResult:
        """Template job: ``targets`` maps template face numbers to indices into ``photos`` (None: all
        the photos are one person, for the largest face)."""
        people = ({number: [photos[i] for i in indices] for number, indices in targets.items()} if targets
                  else list(photos))
        options = settings.template_settings()
        seed = secrets.randbelow(2**31) if settings.seed is None else settings.seed
        total = settings.num_images * max(1, len(targets or {0: 0})) * settings.steps_run()
        done = 0

        def callback(pipe, step, timestep, kwargs):
            nonlocal done
            done += 1
            if on_step is not None:
                on_step(min(done, total), total)
            return kwargs
        options.extra = {"callback_on_step_end": callback}
        with self._busy:
            maker = self._template_maker()
            self._set_loras(None)  # a LoRA left on by the last portrait request would change the face
            out = maker(template, people, seed=seed, num_images=settings.num_images, settings=options)
        images = []
        for image, meta in zip(out.images, out.metadata_with_hashes()):
            meta["mode"] = "template"
            meta["template_settings"].pop("extra", None)  # the progress callback, not a setting
            images.append(GeneratedPNG(png=png_bytes(image, meta), seed=int(meta["seed"]), metadata=meta))
        return EngineResult(images=images, notes=list(out.notes or []))

    def _template_maker(self):
        """The TemplatePortrait over the inpainting pipeline, made once (called holding the lock)."""
        if self._template is None:
            from facefact.template.portrait import TemplatePortrait

            pipe = self._make_template_pipeline()
            pipe.set_progress_bar_config(disable=True)
            self._template = TemplatePortrait(pipe, analysis=getattr(pipe, "face_analysis", None))
        return self._template

    def _set_loras(self, requested: dict[str, float] | None) -> None:
        """The request's LoRA weights (LoRAs it does not name are off), or the server's defaults."""
        from facefact.errors import ConfigError

        if requested and not self.lora_weights:
            raise ConfigError("this server has no LoRAs loaded", hint="leave out 'loras', or start the server "
                                                                      "with --lora FILE[:WEIGHT]")
        unknown = sorted(set(requested or {}) - set(self.lora_weights))
        if unknown:
            raise ConfigError(f"no LoRA named {', '.join(unknown)} on this server",
                              hint=f"loaded: {', '.join(self.lora_weights)} (GET /v1/models)")
        if self.lora_weights:
            weights = self.lora_weights if requested is None else requested
            names = list(self.lora_weights)
            self.pipeline.set_adapters(names, [float(weights.get(name, 0.0)) for name in names])


def default_template_pipeline(pipe):
    """The template mode's pipeline for an engine on ``pipe`` (see the module's docstring)."""
    from facefact.model.layouts import unet_family

    tiny_seed = getattr(pipe, "_facefact_tiny", None)
    if tiny_seed is not None:  # as `facefact template --model tiny|tiny-sdxl` (--tiny-kind controlnet2, as released)
        from facefact.template.tiny import tiny_template_pipeline

        return tiny_template_pipeline("controlnet2", seed=tiny_seed, analysis=getattr(pipe, "face_analysis", None),
                                      family=unet_family(pipe.unet))
    return inpaint_sibling(pipe)


def inpaint_sibling(pipe):
    """A FACT inpainting pipeline (SD1.5 or SDXL, as ``pipe``'s UNet) on ``pipe``'s own modules (no
    second copy of the weights): FACT lives with the shared UNet, so the sibling has ``pipe``'s
    adapter, encoder and their provenance."""
    from facefact.model.layouts import unet_family
    from facefact.pipelines.build import pipeline_class

    cls = pipeline_class("inpaint", controlnet=False, family=unet_family(pipe.unet))
    sibling = cls(**pipe.components)
    if getattr(pipe.config, "_name_or_path", None):
        sibling.register_to_config(_name_or_path=pipe.config._name_or_path)  # the base model in the provenance
    return sibling
