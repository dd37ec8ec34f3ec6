"""What every method of an evaluation run shares: the models (the run's own, and the other models
methods name with ``+MODEL``), where they run, and the generation settings - part of each image's
cache key. Plain data; the model files are only described (hashed), never loaded, here."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from facefact.errors import ConfigError
from facefact.pipelines.registry import TINY_BASES
from facefact.pipelines.settings import GenerationSettings

EVAL_STEPS = 30  # evaluation's default: many images; the identity metrics settle well before 50 steps


@dataclass
class RunSettings:
    """What every method of a run shares (part of each image's cache key): the models, where they
    run, and the generation settings (facefact.pipelines.settings; evaluation's default is 30 steps).
    Evaluation images are square: ``size`` is their side (None: each pipeline's default: 512 on SD1.5,
    1024 on SDXL, 128 on the tiny models). ``named_models``: further models methods may name
    (``fact:0.5+NAME``), each {"model": base, "adapter": ..., "encoder": ...}."""

    model: str = "tiny"                      # "tiny", "tiny-sdxl" or an SD1.5 / SDXL folder, file or hub id
    adapter: str | None = None
    encoder: str | None = None
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(steps=EVAL_STEPS))
    device: str | None = None
    dtype: str | None = None
    arcface_onnx: str | None = None          # for ipadapter-faceid's embeddings
    cpu_threads: int | None = None           # torch threads in the FACT pipeline's calls (None: its own, 1 tiny)
    named_models: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.generation, dict):
            self.generation = GenerationSettings.from_mapping(self.generation, GenerationSettings(steps=EVAL_STEPS),
                                                              where="generation settings")
        g = self.generation.check()
        if g.width != g.height:
            raise ConfigError(f"evaluation images are square, not {g.width}x{g.height}",
                              hint="give one size (width = height)")

    @property
    def size(self) -> int | None:
        return self.generation.width

    def as_dict(self) -> dict:
        g = self.generation
        return {"model": self.model, "adapter": self.adapter, "encoder": self.encoder, "steps": g.steps,
                "size": g.width, "guidance_scale": g.guidance, "scheduler": g.scheduler,
                "negative_prompt": g.negative_prompt, "cfg_face": g.cfg_face, "device": self.device, "dtype": self.dtype,
                "arcface_onnx": self.arcface_onnx}

    def model_provenance(self) -> dict:
        """What the FACT methods run on: each part 'tiny' (built in) or the file / folder / hub id
        given, with its hash - part of every FACT image's cache key, so a retrained adapter at the
        same path is generated again. A given part that does not exist is refused here, before work."""
        from facefact.pipelines.loading import describe_file
        from facefact.pipelines.registry import looks_like_hub_id

        tiny = self.model in TINY_BASES
        out = {}
        for role, given in (("base_model", self.model), ("adapter", self.adapter), ("encoder", self.encoder)):
            value = given if given is not None else ("tiny" if tiny else None)
            if value is None:
                continue
            if value in TINY_BASES or (value == "tiny" and tiny):  # the tiny base's own part
                out[role] = {"id": f"facefact-{self.model if tiny else value}/{role}"}
            elif Path(str(value)).expanduser().exists() or looks_like_hub_id(value):
                out[role] = describe_file(value)
            else:
                raise ConfigError(f"the {role.replace('_', ' ')} {value} does not exist", path=value,
                                  hint="give an existing file or folder (or 'tiny' parts with the tiny model)",
                                  setting=role)
        return out

    def base_family(self) -> str:
        """'sd15' or 'sdxl': what the base model's UNet config says (read without loading weights)."""
        if self.model in TINY_BASES:
            return TINY_BASES[self.model]
        from facefact.pipelines.loading import base_family

        return base_family(self.model)

    def for_model(self, name: str, spec: str) -> "RunSettings":
        """These settings on the model a method names after '+' (a tiny base, or one of named_models)."""
        if name in self.named_models:
            given = self.named_models[name]
            if not isinstance(given, dict) or not given.get("model"):
                raise ConfigError(f"named model '{name}' must give at least its base model",
                                  hint="e.g. {'model': 'path/to/sdxl', 'adapter': ..., 'encoder': ...}",
                                  setting="named_models")
            unknown = sorted(set(given) - {"model", "adapter", "encoder"})
            if unknown:
                raise ConfigError(f"named model '{name}': unknown keys {', '.join(unknown)}",
                                  hint="use model, adapter and encoder", setting="named_models")
            parts = {"model": given["model"], "adapter": given.get("adapter"), "encoder": given.get("encoder")}
        elif name in TINY_BASES:
            parts = {"model": name, "adapter": None, "encoder": None}
        else:
            known = ", ".join([*TINY_BASES, *self.named_models])
            raise ConfigError(f"bad method '{spec}': no model named '{name}'", setting="methods",
                              hint=f"known: {known} (name more with named_models / evaluate --named-model)")
        return replace(self, **parts, named_models={})
