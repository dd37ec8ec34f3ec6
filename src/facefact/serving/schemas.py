"""Pydantic models of everything the HTTP API takes and gives (they are also the OpenAPI schema).

`GenerateSettings` is the JSON a client sends beside the photos; the same object travels to the
GPU worker (in process, or as JSON through Redis), so it must stay plain data. Its generation
fields are facefact.pipelines.settings.GenerationSettings' own (names, help, defaults), with the
server's tighter limits; `.generation()` is that dataclass, which the engine hands to the pipeline.
"""
from __future__ import annotations

from dataclasses import fields as dataclass_fields
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facefact.pipelines.scheduler_names import SCHEDULER_NAMES  # plain names: no torch in the API process
from facefact.pipelines.settings import GenerationSettings, check_fact_scale, check_window, default_of
from facefact.serving.families import LARGEST_SIDE
from facefact.serving.openai_schemas import ModelCard
from facefact.serving.presets import STYLE_PRESETS

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


_SHARED = {f.name: f for f in dataclass_fields(GenerationSettings)}


def shared(name: str, **overrides):
    """A pydantic Field for GenerationSettings' field `name`: its default, help and range, with the
    server's own limits (`le=150` steps: a web request must finish) as overrides."""
    f = _SHARED[name]
    kwargs = {"default": default_of(f), "description": f.metadata["help"]}
    kwargs.update({key: f.metadata[meta] for key, meta in (("ge", "low"), ("le", "high"))
                   if f.metadata.get(meta) is not None})
    return Field(**{**kwargs, **overrides})


class GenerateSettings(BaseModel):
    """What to generate. Unknown keys are refused (a typo must not be silently ignored)."""
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000, examples=["a portrait in a garden"])
    negative_prompt: str | None = shared("negative_prompt", max_length=2000)
    style: str | None = Field(default=None, description="a style preset: the prompt is put into its template")
    fact_scale: float = shared("fact_scale", description="FACT adapter scale: 0 = the base model, 1 = full face "
                                                        "(per level: fact_scale_levels)")
    num_images: int = shared("num_images", le=8)
    seed: int | None = shared("seed", le=2**31 - 1)
    steps: int = shared("steps", default=30, le=150)  # the UI's default: a web request should be quick
    guidance: float = shared("guidance", le=30.0)
    scheduler: str = shared("scheduler")
    # the largest any family takes; the served family's own limit is checked on submit (serving.families)
    width: int | None = shared("width", ge=64, le=LARGEST_SIDE)
    height: int | None = shared("height", ge=64, le=LARGEST_SIDE)
    cfg_face: bool = shared("cfg_face")
    face_combine: Literal["concat", "mean", "weighted"] = shared("face_combine")
    fact_window: tuple[float, float] | None = shared("fact_window", description="(start, end) fractions of the "
                                                     "schedule where FACT acts; e.g. [0.3, 1.0]")
    fact_scale_levels: dict[Literal["down", "mid", "up"], float] | None = Field(
        default=None, description="FACT scale per UNet level instead of fact_scale; levels not named get 0")
    face_regions: list[tuple[float, float, float, float]] | None = Field(
        default=None, max_length=4, description="several people in one image: photo k is person k, acting only "
                                               "inside box k (x0, y0, x1, y1 as fractions of the image)")
    loras: dict[str, float] | None = Field(
        default=None, max_length=8, description="LoRAs by name (GET /v1/models) and weight for this request; "
                                                "LoRAs not named are off. Default: the server's --lora weights")

    @field_validator("fact_window")
    @classmethod
    def _window_in_schedule(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if value is None else check_window(value)  # the library's check (a ValueError: 422)

    @field_validator("fact_scale_levels")
    @classmethod
    def _levels_in_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return check_fact_scale(value) if value else value

    @field_validator("loras")
    @classmethod
    def _weights_in_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, weight in (value or {}).items():
            if not -2.0 <= weight <= 2.0:
                raise ValueError(f"LoRA '{name}': weight {weight} is outside -2..2")
        return value

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in SCHEDULER_NAMES:
            raise ValueError(f"unknown scheduler '{value}'; choose one of: {', '.join(SCHEDULER_NAMES)}")
        return value

    def generation(self, seed: int, negative_prompt: str | None) -> GenerationSettings:
        """The library's settings of this request (checked again there), with the seed chosen and the
        style's negative prompt applied."""
        return GenerationSettings(
            negative_prompt=negative_prompt, num_images=self.num_images, seed=seed, steps=self.steps,
            guidance=self.guidance, fact_scale=self.fact_scale_levels or self.fact_scale, cfg_face=self.cfg_face,
            face_combine=self.face_combine, fact_window=tuple(self.fact_window) if self.fact_window else None,
            width=self.width, height=self.height, scheduler=self.scheduler).check()

    @field_validator("style")
    @classmethod
    def _known_style(cls, value: str | None) -> str | None:
        if value is not None and value not in STYLE_PRESETS:
            raise ValueError(f"unknown style '{value}'; choose one of: {', '.join(STYLE_PRESETS)}")
        return value

    @field_validator("width", "height")
    @classmethod
    def _sizes_fit_the_latents(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"{value} is not a multiple of 8 (try {value // 8 * 8})")
        return value


class TemplateJobSettings(BaseModel):
    """A template job: redraw faces of the template photo (FACT's template mode). The defaults are
    the released ones; everything not here keeps its `facefact.template.TemplateSettings` default."""
    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(default=None, min_length=1, max_length=2000,
                               description="default: the release's fixed portrait prompt")
    negative_prompt: str | None = Field(default=None, max_length=2000)
    strength: float = Field(default=0.6, gt=0.0, le=1.0, description="how much of the face is redrawn")
    fact_scale: float = Field(default=0.55, ge=0.0, le=2.0)
    steps: int = Field(default=50, ge=1, le=150, description="nominal steps; strength x steps run")
    guidance: float = Field(default=5.0, ge=0.0, le=30.0)
    scheduler: str = "pndm"
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="first seed; random if not given")
    num_images: int = Field(default=1, ge=1, le=8)
    refine: bool = Field(default=True, description="the release's light second pass over the face")
    crop_size: int | None = Field(default=None, ge=64, le=1024, description="the face crop the model works on "
                                  "(default: the served base's own size, 512 for SD1.5 and 1024 for SDXL)")

    _known_scheduler = field_validator("scheduler")(GenerateSettings._known_scheduler.__func__)

    @field_validator("crop_size")
    @classmethod
    def _crop_fits_the_latents(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"{value} is not a multiple of 8 (try {value // 8 * 8})")
        return value

    def template_settings(self):
        """The library's TemplateSettings (validated: raises ConfigError, e.g. for a pass of no step)."""
        from facefact.template.settings import TemplateSettings

        given = {"strength": self.strength, "fact_scale": self.fact_scale, "steps": self.steps,
                 "guidance_scale": self.guidance, "scheduler": self.scheduler, "refine": self.refine,
                 "crop_size": self.crop_size}
        given.update({k: v for k, v in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt))
                      if v is not None})
        return TemplateSettings(**given).validate()

    def steps_run(self) -> int:
        """Denoising steps per face and image (main pass + refine pass), as diffusers counts them."""
        from facefact.template.settings import TemplateSettings

        defaults = TemplateSettings()
        refine = int(self.steps * defaults.refine_strength) if self.refine else 0
        return int(self.steps * self.strength) + refine


class TemplateFaceInfo(BaseModel):
    number: int = Field(description="1-based, left to right: what `targets` counts")
    bbox: list[float] = Field(description="x1, y1, x2, y2 in template pixels")
    width: float
    height: float
    score: float
    too_small: bool = Field(description="below the smallest face the template mode redraws")


class TemplateFaces(BaseModel):
    width: int
    height: int
    default_target: int = Field(description="the largest face: the target when `targets` is not given")
    faces: list[TemplateFaceInfo]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable kind, e.g. no_face, queue_full, too_large")
    message: str
    hint: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Progress(BaseModel):
    step: int = 0
    total: int = 0


class ImageResult(BaseModel):
    index: int
    seed: int
    url: str
    metadata: dict


class JobStatus(BaseModel):
    id: str
    state: JobState
    progress: Progress
    queue_position: int | None = Field(default=None, description="jobs ahead of this one, while queued")
    images: list[ImageResult] = []
    notes: list[str] = []
    error: ErrorDetail | None = None
    worker: str | None = Field(default=None, description="the worker that ran it (scale-out only)")
    expires_in_s: float | None = Field(default=None, description="seconds until the results are deleted")


class JobCreated(BaseModel):
    id: str
    status_url: str


class GeneratedImage(BaseModel):
    index: int
    seed: int
    png_base64: str
    metadata: dict


class GenerateResponse(BaseModel):
    id: str
    images: list[GeneratedImage]
    notes: list[str] = []


class FaceReport(BaseModel):
    photo: int
    bbox: list[float]
    faces_found: int
    notes: list[str] = []


class ModelsInfo(BaseModel):
    """facefact's model information, and OpenAI's model list (`object`, `data`) for OpenAI clients' models.list()."""
    loras: dict[str, float] = Field(description="LoRAs loaded on the server, with their default weights")
    styles: list[str]
    schedulers: list[str]
    default_size: int = Field(description="the image side a request without a size gets (the model's own)")
    base_family: str | None = Field(default=None, description="the served base model's family: sd15 or sdxl "
                                                              "(null: no worker has said yet)")
    max_size: int = Field(default=1536, description="the largest width or height a request may ask for")
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=lambda: [ModelCard()], description="the model served, by the id "
                                  "OpenAI clients name as `model`")


class Health(BaseModel):
    status: Literal["ok", "warming_up"] = "ok"
    ready: bool = Field(default=True, description="false (HTTP 503) while a compiled UNet is warmed up at start")
    queue_depth: int
    queue_size: int
    workers: int
    backend: Literal["local", "redis"]
    base_family: str | None = None  # sd15 / sdxl: the served base model's (null: no worker has said yet)
