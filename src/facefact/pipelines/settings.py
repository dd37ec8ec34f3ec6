"""The settings of one generation, in one dataclass: what `facefact generate`, `facefact evaluate`
and `facefact serve` share (the sampler, its steps and guidance, FACT's own knobs, size, seeds).

Each field carries its help text, range and choices (`setting(...)`), so the CLI flags, the config
file's `generate:` keys and the server's JSON schema are made from it and can never disagree; a
command that needs another default (evaluate's 30 steps) passes its own. Which flag names a field
(`--scale` for fact_scale) is the CLI's business (facefact.cli.settings_flags). Plain data: no torch
or diffusers import, so `facefact --help` stays fast.

    s = GenerationSettings(steps=30, fact_scale=0.6, seed=7).check()
    out = pipe(prompt, face_images=photo, generator=s.generators(), **s.pipeline_kwargs())
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from facefact.errors import ConfigError
from facefact.pipelines.scheduler_names import SCHEDULER_NAMES
from facefact.validation import MAX_SEED, check_image_size, finite_float, one_of, strict_bool, whole_number

MAX_IMAGES = 1000    # per call: seeds seed..seed+n-1
MAX_STEPS = 500      # of 1000 training timesteps; PNDM at 1000 steps indexes past the schedule's end
MAX_GUIDANCE = 100.0
MAX_FACT_SCALE = 2.0
COMBINE_MODES = ("concat", "mean", "weighted")  # how several photos of one person combine (face_tokens)
UNET_LEVELS = ("down", "mid", "up")


def setting(default, help: str, *, low=None, high=None, choices: tuple | None = None, metavar: str | None = None,
            shown: str | None = None):
    """A dataclass field with what a CLI flag, a config key and a JSON schema need to know about it:
    its help, range or choices, a metavar for its value, and `shown`: what help says the default is,
    where the value itself is too long to show."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "choices": choices,
                                            "metavar": metavar, "shown": shown})


@dataclass
class GenerationSettings:
    negative_prompt: str | None = setting(None, "what the images should not show")
    num_images: int = setting(1, "images to generate (seeds seed..seed+n-1)", low=1, high=MAX_IMAGES, metavar="N")
    seed: int | None = setting(None, "first seed (random if not given; always written to the metadata)",
                               low=0, high=MAX_SEED, metavar="N")
    steps: int = setting(50, "denoising steps", low=1, high=MAX_STEPS, metavar="N")
    guidance: float = setting(5.0, "classifier-free guidance scale", low=0.0, high=MAX_GUIDANCE, metavar="X")
    fact_scale: float | dict = setting(0.5, "FACT adapter scale: 0 = the base model, 1 = full face; or per UNet "
                                            "level: down=0.3,mid=0.5,up=0.6 (levels not named: 0)",
                                       low=0.0, high=MAX_FACT_SCALE, metavar="S")
    cfg_face: bool = setting(True, "the unconditional branch of guidance uses the null face tokens (off: the face "
                                   "tokens too)")
    face_combine: str = setting("concat", "how several photos of one person combine: concat (FACT's own, 16 "
                                          "tokens each), mean, or weighted by face quality",
                                choices=COMBINE_MODES)
    fact_window: tuple[float, float] | None = setting(
        None, "FACT only from START to END of the denoising steps (fractions, e.g. 0.3,1: a late start keeps the "
              "base model's composition); 1,1 = the base model", metavar="START,END")
    width: int | None = setting(None, "image width, a multiple of 8 (default: the model's own: 512 on SD1.5, 1024 "
                                      "on SDXL, 128 on the tiny models)", metavar="PX")
    height: int | None = setting(None, "image height, a multiple of 8 (default: the model's own: 512 on SD1.5, "
                                       "1024 on SDXL, 128 on the tiny models)", metavar="PX")
    scheduler: str = setting("pndm", "sampler (pndm: the release's)", choices=SCHEDULER_NAMES)

    def check(self) -> "GenerationSettings":
        """Every value's type and range, cleaned in place (also for settings built in Python)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None or f.default is not None:
                setattr(self, f.name, _clean(f, value))
        self.width, self.height = check_image_size(self.width, self.height)
        if self.seed is not None and self.seed + self.num_images - 1 > MAX_SEED:
            raise ConfigError(f"seed {self.seed} with {self.num_images} images goes past the largest seed {MAX_SEED}")
        return self

    def pipeline_kwargs(self) -> dict:
        """The FACT pipeline call's arguments for these settings (the scheduler and the generators are
        set apart: `make_scheduler(s.scheduler, ...)`, `generators()`)."""
        out = {"negative_prompt": self.negative_prompt, "num_images_per_prompt": self.num_images,
               "num_inference_steps": self.steps, "guidance_scale": self.guidance, "fact_scale": self.fact_scale,
               "cfg_face": self.cfg_face, "face_combine": self.face_combine, "fact_window": self.fact_window}
        out.update({k: getattr(self, k) for k in ("width", "height") if getattr(self, k) is not None})
        return out

    def generators(self, device: str = "cpu") -> list:
        """One torch generator per image, seeded seed, seed+1, ... (the seed must be set)."""
        import torch

        if self.seed is None:
            raise ConfigError("no seed set", hint="choose one first, e.g. replace(settings, seed=secrets.randbelow(2**31))")
        return [torch.Generator(device).manual_seed(self.seed + i) for i in range(self.num_images)]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["fact_window"] = list(self.fact_window) if self.fact_window is not None else None
        return out

    @classmethod
    def from_mapping(cls, values: dict, base: "GenerationSettings | None" = None, where: str = "settings"):
        """Settings from a mapping (JSON, a config section): keys are field names (`size` sets width and
        height); unknown keys are refused, naming `where` - a typo must not be ignored."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a mapping of setting: value, not {type(values).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in values if k not in names and k != "size")
        if unknown:
            raise ConfigError(f"unknown {where} keys: {', '.join(unknown)}",
                              hint=f"known: {', '.join(sorted(names | {'size'}))}")
        given = {k: v for k, v in values.items() if k != "size"}
        if values.get("size") is not None:
            given.setdefault("width", values["size"])
            given.setdefault("height", values["size"])
        return replace(base or cls(), **given).check()


def default_of(f):
    return f.default_factory() if f.default is MISSING else f.default


def _clean(f, value):
    """One field's value checked against its type and metadata (numbers from text, as in config files)."""
    meta, kind, name = f.metadata, str(f.type), f.name
    low, high = meta.get("low"), meta.get("high")
    if name == "fact_scale":
        return check_fact_scale(value)
    if name == "fact_window":
        return check_window(value)
    if meta.get("choices"):
        return one_of(name, value, meta["choices"])
    if kind.startswith("bool"):
        return strict_bool(name, value)
    if kind.startswith("int"):
        return whole_number(name, value, low=low, high=high)
    if kind.startswith("float"):
        return finite_float(name, value, low=low, high=high)
    if kind.startswith("str") and not isinstance(value, str):
        raise ConfigError(f"{name} must be text, not {value!r}")
    return value


FACT_SCALE_LEVELS = ("down", "mid", "up")
_BLOCK_PATH_STARTS = ("down_blocks", "mid_block", "up_blocks")  # diffusers' UNet2DConditionModel names


def check_fact_scale(value) -> float | dict:
    """A number in 0..2, or {level or block path: number} (per-level scales; levels not named get 0).
    A key must be a level or start like a UNet block path (whether that block exists is the
    adapter's check), so a typo is refused before any model loads."""
    if isinstance(value, dict):
        if not value:
            raise ConfigError("fact_scale per level is empty", hint="e.g. {'down': 0.3, 'mid': 0.5, 'up': 0.6}")
        for key in value:
            if str(key) not in FACT_SCALE_LEVELS and str(key).split(".")[0] not in _BLOCK_PATH_STARTS:
                raise ConfigError(f"fact_scale level {str(key)!r} is not a UNet level",
                                  hint="use down, mid, up or a block path such as up_blocks.1 "
                                       "(e.g. down=0.3,mid=0.5,up=0.6)", setting="fact_scale")
        return {str(k): finite_float(f"fact_scale[{k}]", v, low=0.0, high=MAX_FACT_SCALE) for k, v in value.items()}
    return finite_float("fact_scale", value, low=0.0, high=MAX_FACT_SCALE)


def check_window(window) -> tuple[float, float]:
    """fact_window (start, end): fractions of the schedule, start before end ((1, 1): never)."""
    if isinstance(window, str):
        window = window.split(",")
    try:
        start, end = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ConfigError(f"fact_window must be (start, end), got {window!r}") from None
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (start, end)):
        raise ConfigError(f"fact_window {window!r}: start and end are fractions of the schedule, in [0, 1]")
    if start >= end and start != 1.0:
        raise ConfigError(f"fact_window {window!r}: start must be before end",
                          hint="e.g. (0.3, 1.0): FACT from 30% of the steps to the end; (1.0, 1.0) is never")
    return start, end
