"""LoRA beside the face adapter, for `facefact generate` and library users alike.

`parse_lora("style.safetensors:0.8")` reads the `FILE[:WEIGHT]` syntax; `check_files` checks the
files before any weights are loaded (same order of work as `generate`: settings, photos, model
files, then loading); `apply` loads them into a FaceFactPipeline, which records their provenance
(file names and short hashes, never folders) in every image's metadata.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from facefact.errors import ConfigError, ModelNotFoundError

LORA_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}


@dataclass
class Extras:
    loras: list[tuple[Path, float]] = field(default_factory=list)  # (file, weight), in the order given


def parse_lora(spec: str) -> tuple[Path, float]:
    """`FILE` or `FILE:WEIGHT`. Only a trailing number is a weight, so Windows paths (C:\\...) and
    file names with colons work; an existing file of the whole name is always a file."""
    whole = Path(spec).expanduser()
    if whole.is_file():
        return whole, 1.0
    head, sep, tail = spec.rpartition(":")
    if not sep or not head or "/" in tail or "\\" in tail:
        return whole, 1.0
    try:
        weight = float(tail)
    except ValueError:
        head_path = Path(head).expanduser()
        if head_path.is_file() or head_path.suffix.lower() in LORA_SUFFIXES:
            raise ConfigError(f"--lora {spec}: the weight '{tail}' is not a number",
                              hint="write --lora FILE:WEIGHT with a number, e.g. --lora style.safetensors:0.8") from None
        return whole, 1.0
    if not math.isfinite(weight):
        raise ConfigError(f"--lora {spec}: the weight must be a finite number", hint="e.g. 0.8; 1.0 is the default")
    return Path(head).expanduser(), weight


def check_settings(lora_specs) -> Extras:
    """The `FILE[:WEIGHT]` specs alone, before any photo or file is read."""
    return Extras(loras=[parse_lora(spec) for spec in (lora_specs or [])])


def check_files(extras: Extras) -> None:
    """The files exist and can be loaded (peft for LoRA) - before any weights are loaded."""
    from facefact.pipelines.loading import require_peft

    for path, _ in extras.loras:
        if path.is_dir():
            raise ConfigError(f"--lora {path} is a folder", path=path,
                              hint="pass the LoRA file inside it (e.g. pytorch_lora_weights.safetensors)")
        if not path.is_file():
            raise ModelNotFoundError(f"LoRA file not found: {path}", path=path,
                                     hint="check the path; --lora takes a LoRA .safetensors file, optionally "
                                          "with a weight: --lora style.safetensors:0.8")
    if extras.loras:
        require_peft()


@contextlib.contextmanager
def quiet_diffusers():
    """diffusers logs, while loading a LoRA, that the text encoder has no LoRA keys (normal for most
    LoRAs), for a second one the first one's keys as "missing", and for a bad file the whole
    exception at ERROR level before raising it (which facefact reports itself): noise on stderr."""
    import logging

    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        diffusers_logging.set_verbosity(level)


def apply(pipe, extras: Extras) -> None:
    """Load the LoRAs into the pipeline as lora1, lora2..., each at its weight."""
    with quiet_diffusers():
        for index, (path, weight) in enumerate(extras.loras, start=1):
            pipe.load_lora_weights(path, adapter_name=f"lora{index}", weight=weight)
