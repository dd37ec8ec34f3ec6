"""Every setting of `facefact train` in one dataclass; read from YAML/JSON, overridden by CLI flags.

The CLI flags are generated from the fields (``learning_rate`` -> ``--learning-rate``), so the
config file, the flags and this class can never disagree. See docs/training.md for the meaning
of each setting and examples/train_config.yaml for a complete file.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from facefact.errors import ConfigError
from facefact.pipelines.registry import TINY_BASES
from facefact.validation import MAX_IMAGE_SIDE, MAX_SEED, finite_float, strict_bool, whole_number

# The built-in random-weight bases (pipelines.build's TINY / TINY_XL; this module stays free of torch).
# FACT's block layouts (model.layouts.BLOCK_LAYOUTS, named here without importing torch).
BLOCK_LAYOUTS = ("first", "all")


@dataclass
class TrainConfig:
    # data and models
    data: str = ""                     # a folder written by `facefact prepare`
    output_dir: str = "facefact-train"
    base_model: str = ""               # diffusers SD1.5-family or SDXL folder / hub id / file, or 'tiny' /
                                       #   'tiny-sdxl' (random, built in-process); required
    encoder: str = ""                  # TransFace checkpoint (ms1mv2_model_TransFace_S.pt), or 'tiny'; required
    init_adapter: str | None = None    # start from an adapter checkpoint instead of a fresh one
    resolution: int | None = None      # training size; default: the size the data set was prepared at
    layout: str | None = field(default=None, metadata={"choices": BLOCK_LAYOUTS})  # FACT fuser blocks:
                                       #   'first' (one per transformer stack, the default) or 'all'
    # optimisation
    max_steps: int = 1000              # optimizer steps
    batch_size: int = 1                # per process and micro-step
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_warmup_steps: int = 0
    lr_schedule: str = "constant"      # any diffusers.optimization schedule name: constant, cosine, linear, ...
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    optimizer: str = "adamw"           # 'adamw' or 'adamw8bit' (bitsandbytes)
    mixed_precision: str = "no"        # 'no', 'bf16' or 'fp16' (frozen models in that dtype, adapter in fp32)
    gradient_checkpointing: bool = False
    seed: int = 0
    num_workers: int = 0               # DataLoader worker processes that decode images
    use_cache: bool = True             # read VAE latents / encoder tokens cached by `facefact prepare` when present
    # FACT's decoupled training (spec section 7)
    fair_weight: float = 0.01          # lambda of FAIR; 0 disables it (and its cost)
    face_drop_prob: float = 0.1        # encoder tokens zeroed = the null face used for guidance
    text_drop_prob: float = 0.05       # empty prompt
    shuffle_prob_start: float = 0.0    # curriculum: probability that the condition photo is another photo
    shuffle_prob_end: float = 1.0      #   of the same person ramps linearly from start to end
    shuffle_ramp_steps: int | None = None  # over the first shuffle_ramp_steps steps (0: 'end' from step 0;
                                           #   None: the recipe's share, 20k of 290k steps = 7% of max_steps)
    # logging, validation, checkpoints
    log_every: int = 10
    tensorboard: bool = False
    validate_every: int = 0            # 0: no validation images
    validation_prompts: tuple[str, ...] = ("a portrait photo of a person",)
    validation_samples: int = 2        # condition faces taken from the start of the data set
    validation_steps: int = 20
    validation_guidance: float = 5.0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: str | None = None          # a checkpoint folder, or 'latest' (in output_dir/checkpoints)
    stop_after_steps: int | None = None  # stop (with a checkpoint) after this many steps of *this* run
    progress: bool = True

    def check(self) -> "TrainConfig":
        """Every field's type and range (also for a TrainConfig built in Python, which never went
        through `_coerce`): a NaN learning rate or a batch size of 1.7 is refused, not trained with."""
        def need(ok: bool, message: str, hint: str | None = None, setting: str | None = None):
            if not ok:
                raise ConfigError(message, hint=hint, setting=setting)

        need(bool(self.data), "no training data given", "set data to a folder written by `facefact prepare`", "data")
        need(bool(self.base_model) and bool(self.encoder), "no base model or face encoder given",
             "set base_model (an SD1.5-family diffusers folder) and encoder (the TransFace checkpoint); or "
             "'tiny' for both to try the loop with random-weight models", "base_model" if not self.base_model
             else "encoder")
        counts = [getattr(self, n) for n in ("max_steps", "batch_size", "gradient_accumulation_steps")]
        need(not any(isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0 for v in counts),
             "max_steps, batch_size and gradient_accumulation_steps must be positive")
        self._check_numbers(ranges=False)  # types first: the comparisons below need numbers
        for name in ("gradient_checkpointing", "use_cache", "tensorboard", "progress"):
            strict_bool(name, getattr(self, name))
        need(self.mixed_precision in ("no", "bf16", "fp16"), f"mixed_precision must be no, bf16 or fp16, "
             f"not {self.mixed_precision!r}")
        need(self.optimizer in ("adamw", "adamw8bit"), f"optimizer must be adamw or adamw8bit, not {self.optimizer!r}")
        need(self.layout is None or self.layout in BLOCK_LAYOUTS, f"layout must be first or all, not {self.layout!r}",
             "first: one fuser per transformer stack (FACT's own); all: every transformer block", "layout")
        for name in ("face_drop_prob", "text_drop_prob", "shuffle_prob_start", "shuffle_prob_end"):
            need(0.0 <= getattr(self, name) <= 1.0, f"{name} = {getattr(self, name)} is not a probability in [0, 1]")
        need(self.fair_weight >= 0, "fair_weight must be >= 0")
        need(self.shuffle_ramp_steps is None or self.shuffle_ramp_steps >= 0, "shuffle_ramp_steps must be >= 0")
        need(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        need(self.resolution is None or (self.resolution >= 64 and self.resolution % 8 == 0),
             f"resolution {self.resolution} must be a multiple of 8 and at least 64")
        need(self.lr_warmup_steps >= 0, f"lr_warmup_steps must be >= 0, not {self.lr_warmup_steps}")
        need(isinstance(self.lr_schedule, str), f"lr_schedule must be a name, not {self.lr_schedule!r}")
        schedules = lr_schedule_names()
        need(self.lr_schedule in schedules, f"unknown lr_schedule {self.lr_schedule!r}",
             f"use one of: {', '.join(schedules)}")
        need(self.log_every >= 0, f"log_every must be >= 0, not {self.log_every}",
             "the CSV log is flushed every log_every steps (0: every step)")
        need(self.validate_every >= 0, f"validate_every must be >= 0, not {self.validate_every}",
             "0 turns validation images off")
        need(self.validation_steps >= 1, f"validation_steps must be >= 1, not {self.validation_steps}",
             "the number of sampler steps of each validation image")
        need(self.validation_samples >= 1, f"validation_samples must be >= 1, not {self.validation_samples}")
        need(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, not {self.checkpoint_every}",
             "a checkpoint is also written at the end; to save only then, set checkpoint_every to max_steps")
        need(self.stop_after_steps is None or self.stop_after_steps >= 1,
             f"stop_after_steps must be >= 1, not {self.stop_after_steps}")
        need(all(isinstance(p, str) and p.strip() for p in self.validation_prompts),
             "validation_prompts must be a list of non-empty prompts")
        self._check_numbers(ranges=True)
        return self

    def _check_numbers(self, ranges: bool) -> None:
        for name, low, high in _WHOLE_RANGES:
            value = getattr(self, name)
            if value is not None or name not in _OPTIONAL:
                whole_number(name, value, low=low if ranges else None, high=high if ranges else None)
        for name, low, high, low_open in _FLOAT_RANGES:
            finite_float(name, getattr(self, name), low=low if ranges else None, high=high if ranges else None,
                         low_open=low_open and ranges)

    @property
    def ramp_steps(self) -> int:
        """shuffle_ramp_steps, or the recipe's share of max_steps when it is not set."""
        if self.shuffle_ramp_steps is not None:
            return self.shuffle_ramp_steps
        return max(1, round(self.max_steps * RECIPE_RAMP_STEPS / RECIPE_MAX_STEPS))

    @property
    def uses_random_models(self) -> bool:
        return self.base_model in TINY_BASES or self.encoder == "tiny"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["validation_prompts"] = list(self.validation_prompts)
        return out


# The curriculum of examples/train_config.yaml (docs/training.md): face shuffle ramps 0 -> 1 over the
# first 20k of 290k steps; without shuffle_ramp_steps a run ramps over the same share of its length.
RECIPE_RAMP_STEPS, RECIPE_MAX_STEPS = 20_000, 290_000

FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}

# One help text per setting: `facefact train --help` shows them (tests check none is missing).
FIELD_HELP = {
    "data": "training set folder written by `facefact prepare`",
    "output_dir": "where checkpoints, log.csv, validation images and adapter.safetensors go",
    "base_model": "SD1.5-family or SDXL base model to train on: diffusers folder, hub id or single file ('tiny' / "
                  "'tiny-sdxl': random weights, to try the loop); its UNet config says which family",
    "encoder": "TransFace checkpoint, e.g. ms1mv2_model_TransFace_S.pt ('tiny': random weights)",
    "init_adapter": "start from this adapter (.safetensors or the released .ckpt) instead of a fresh one",
    "resolution": "training image size in px (default: the size the set was prepared at)",
    "layout": "blocks that carry a FACT fuser: first (one per transformer stack, FACT's own; default) or all "
              "(every block: SDXL 70 instead of 11); default with init_adapter: that adapter's",
    "max_steps": "optimizer steps of the whole run (a resumed run counts from its checkpoint)",
    "batch_size": "samples per process and micro-step",
    "gradient_accumulation_steps": "micro-steps per optimizer step (effective batch = batch x this x processes)",
    "learning_rate": "AdamW learning rate",
    "lr_warmup_steps": "steps of linear learning-rate warm-up",
    "lr_schedule": "diffusers learning-rate schedule: constant, cosine, linear, constant_with_warmup, ...",
    "adam_beta1": "AdamW beta1",
    "adam_beta2": "AdamW beta2",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "clip the gradient norm to this (0: no clipping)",
    "optimizer": "adamw, or adamw8bit (bitsandbytes, CUDA only)",
    "mixed_precision": "no, bf16 or fp16: frozen models in that dtype, trained weights in fp32",
    "gradient_checkpointing": "recompute UNet activations in backward: less memory, slower steps",
    "seed": "seed of the data order and every random draw (a resumed run continues them exactly)",
    "num_workers": "DataLoader processes decoding images (0: in the training process)",
    "use_cache": "use the VAE latents / encoder tokens cached by `facefact prepare`, when present",
    "fair_weight": "lambda of the FAIR loss that keeps the adapter off everything but the face (0: off)",
    "face_drop_prob": "probability of zeroing the face tokens (the null face classifier-free guidance uses)",
    "text_drop_prob": "probability of an empty prompt",
    "shuffle_prob_start": "face-shuffle probability (condition = another photo of the person) at step 0",
    "shuffle_prob_end": "face-shuffle probability at the end of the ramp and after it",
    "shuffle_ramp_steps": "steps over which face shuffle ramps from start to end (0: end from step 0; "
                          "default: 7% of max_steps, the recipe's 20k of 290k)",
    "log_every": "flush log.csv every N steps (0: every step)",
    "tensorboard": "also log to OUTPUT_DIR/tensorboard (needs the tensorboard package)",
    "validate_every": "write a labelled validation grid every N steps (0: never)",
    "validation_prompts": "prompts of the validation grid (one column each)",
    "validation_samples": "rows of the validation grid: condition faces of different people from the set",
    "validation_steps": "sampler steps of each validation image",
    "validation_guidance": "classifier-free guidance scale of the validation images",
    "checkpoint_every": "save a resumable checkpoint every N steps (and always at the end)",
    "keep_checkpoints": "how many of the newest checkpoints to keep",
    "resume": "continue from a checkpoint folder, or 'latest' (the newest in OUTPUT_DIR/checkpoints)",
    "stop_after_steps": "stop with a checkpoint after this many steps of this run (time-sliced jobs)",
    "progress": "show the progress bar",
}


def lr_schedule_names() -> tuple[str, ...]:
    """The diffusers.optimization schedules training can build (piecewise_constant needs step rules,
    which facefact does not pass)."""
    from diffusers.optimization import SchedulerType

    return tuple(s.value for s in SchedulerType if s.value != "piecewise_constant")


# (name, low, high): whole-number settings and their ranges (seed: what torch generators accept).
_WHOLE_RANGES = [("max_steps", 1, None), ("batch_size", 1, 4096), ("gradient_accumulation_steps", 1, None),
                 ("lr_warmup_steps", 0, None), ("seed", 0, MAX_SEED), ("num_workers", 0, 256),
                 ("shuffle_ramp_steps", 0, None), ("log_every", 0, None), ("validate_every", 0, None),
                 ("validation_samples", 1, 1024), ("validation_steps", 1, 1000), ("checkpoint_every", 1, None),
                 ("keep_checkpoints", 1, None), ("resolution", 64, MAX_IMAGE_SIDE), ("stop_after_steps", 1, None)]
_OPTIONAL = {"resolution", "stop_after_steps", "shuffle_ramp_steps"}
# (name, low, high, low excluded): float settings.
_FLOAT_RANGES = [("learning_rate", 0.0, 1.0, True), ("adam_beta1", 0.0, 1.0, False), ("adam_beta2", 0.0, 1.0, False),
                 ("weight_decay", 0.0, None, False), ("max_grad_norm", 0.0, None, False),
                 ("fair_weight", 0.0, None, False), ("face_drop_prob", 0.0, 1.0, False),
                 ("text_drop_prob", 0.0, 1.0, False), ("shuffle_prob_start", 0.0, 1.0, False),
                 ("shuffle_prob_end", 0.0, 1.0, False), ("validation_guidance", 0.0, 100.0, False)]


def _coerce(name: str, value):
    """A config-file or flag value to the field's type, with facefact.validation's rules: numeric
    strings are numbers (YAML reads 1e-4 as a string), 1.7 is not a whole number, "no" is not a bool."""
    kind = str(FIELD_TYPES[name])
    if value is None:
        return None
    if kind.startswith("tuple"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"setting {name}: {value!r} is not a list of texts")
        return tuple(items)
    if kind.startswith("bool"):
        return strict_bool(name, value)
    if kind.startswith("int"):
        return whole_number(name, value)
    if kind.startswith("float"):
        return finite_float(name, value)
    if isinstance(value, (dict, list, tuple)):
        raise ConfigError(f"setting {name}: {value!r} is not a valid {kind}")
    return str(value)


def config_from_dict(values: dict, base: TrainConfig | None = None) -> TrainConfig:
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(f"unknown training settings {unknown}", hint=f"valid settings: {', '.join(FIELD_TYPES)}")
    merged = (base or TrainConfig()).to_dict()
    merged.update({k: _coerce(k, v) for k, v in values.items()})
    merged["validation_prompts"] = tuple(merged["validation_prompts"])
    return TrainConfig(**merged)


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Settings from a .yaml/.yml/.json file, then `overrides` (e.g. the CLI flags given)."""
    from facefact.safe_open import read_text_file

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}", path=path)
    text = read_text_file(path, ConfigError, what="config file")
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as err:  # yaml and json raise different types; both mean a malformed file
        raise ConfigError(f"cannot parse {path}: {err}", path=path) from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of setting: value", path=path)
    return config_from_dict({**values, **(overrides or {})})
