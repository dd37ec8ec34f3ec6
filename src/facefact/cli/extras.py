"""LoRA and ControlNet flags of the generating commands (generate, serve): CLI concerns, kept in cli/
(the `FILE[:WEIGHT]` syntax, checks that name flags); the library takes plain arguments.

`parse_lora("style.safetensors:0.8")` reads the `FILE[:WEIGHT]` syntax; `check_settings` checks
the flags, `load_control_image` the control image, `check_files` the files - all before any
weights are loaded (the order of work of `generate`: settings, photos, model files, loading);
`apply` loads the LoRAs into a FACT pipeline, which records their provenance (file names and
short hashes, never folders) in every image's metadata, and `control_kwargs` gives the ControlNet
its image. The control image is used as given: the user makes the edge, pose or depth map.
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
    controlnet: str | None = None         # folder, single file, hub id, or "tiny" with --model tiny
    control_image_path: str | None = None
    pose_from: str | None = None          # a photo whose body pose is the control image (--pose-from)
    openpose_weights: str | None = None   # --pose-detector openpose:DIR (controlnet_aux); None: MediaPipe
    control_scale: float = 1.0
    tiny: bool = False
    control_image: object = None          # the PIL image, once read (load_control_image)


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


def check_settings(lora_specs=(), controlnet: str | None = None, control_image: str | None = None,
                   control_scale: float | None = None, tiny: bool = False, pose_from: str | None = None,
                   pose_detector: str | None = None) -> Extras:
    """The flags alone, before any photo or file is read."""
    loras = [parse_lora(spec) for spec in (lora_specs or [])]
    openpose_weights = parse_pose_detector(pose_detector, pose_from)
    if pose_from is not None:
        if control_image is not None:
            raise ConfigError("--pose-from and --control-image both give the ControlNet its image",
                              hint="pass one: --pose-from PHOTO draws the pose map from a photo")
        if controlnet is None:
            raise ConfigError("--pose-from needs an OpenPose --controlnet",
                              hint="e.g. --controlnet lllyasviel/control_v11p_sd15_openpose" +
                                   ("; with --model tiny: --controlnet tiny" if tiny else ""))
        control_image = pose_from  # checked as one below
    if controlnet is not None and control_image is None:
        raise ConfigError("--controlnet needs --control-image too",
                          hint="a ControlNet follows a control image you prepare yourself - an edge (canny), pose or "
                               "depth map, as that ControlNet expects: --control-image edges.png")
    if control_image is not None and controlnet is None:
        raise ConfigError("--control-image needs --controlnet too",
                          hint="name the ControlNet that reads it: --controlnet FOLDER, FILE or hub id (e.g. "
                               "lllyasviel/control_v11p_sd15_canny)" + ("; with --model tiny: --controlnet tiny"
                                                                        if tiny else ""))
    if control_scale is not None and controlnet is None:
        raise ConfigError("--control-scale goes with --controlnet and --control-image")
    scale = 1.0 if control_scale is None else float(control_scale)
    if not math.isfinite(scale) or scale < 0:
        raise ConfigError(f"--control-scale {control_scale} must be a number >= 0", hint="1.0 is the default")
    if tiny and controlnet not in (None, "tiny"):
        raise ConfigError("--model tiny takes only --controlnet tiny (a built-in random ControlNet)",
                          hint=f"drop --model tiny to use {controlnet} with a real base model")
    if pose_from is not None:
        control_image = None
    return Extras(loras=loras, controlnet=controlnet, control_image_path=control_image, control_scale=scale,
                  tiny=tiny, pose_from=pose_from, openpose_weights=openpose_weights)


def parse_pose_detector(spec: str | None, pose_from: str | None) -> str | None:
    """`mediapipe` (the default: offline, in the mediapipe extra) or `openpose:DIR` (controlnet_aux's
    OpenPose on lllyasviel/Annotators' weights in DIR): the weights folder, or None for MediaPipe."""
    if spec is None or spec == "mediapipe":
        return None
    if pose_from is None:
        raise ConfigError("--pose-detector goes with --pose-from PHOTO")
    kind, sep, folder = spec.partition(":")
    if kind != "openpose" or not sep or not folder:
        raise ConfigError(f"unknown --pose-detector '{spec}'",
                          hint="use mediapipe (the default) or openpose:DIR, DIR holding body_pose_model.pth, "
                               "hand_pose_model.pth and facenet.pth from lllyasviel/Annotators")
    return folder


def load_control_image(extras: Extras) -> None:
    """Read the control image now (a clear ImageError if it is missing or not an image).

    Transparency is composited on black, not white as for photos: control maps (pose, edges) are
    drawn on black, and a transparent one would otherwise come out inverted."""
    from PIL import Image

    from facefact.faces.image_io import BLACK, load_image

    if extras.control_image_path is not None:
        extras.control_image = Image.fromarray(load_image(extras.control_image_path, background=BLACK))
    elif extras.openpose_weights is not None:
        from facefact.faces.openpose import openpose_map

        extras.control_image = Image.fromarray(openpose_map(extras.pose_from, extras.openpose_weights))
    elif extras.pose_from is not None:
        from facefact.faces.pose import body_pose, draw_openpose

        extras.control_image = Image.fromarray(draw_openpose(body_pose(extras.pose_from, path=extras.pose_from)))


def save_control_image(extras: Extras, folder: str) -> Path:
    """The control map as used (before resizing to the output size), as DIR/control.png."""
    from facefact.atomic import atomic_path, naming_failed_writes

    path = Path(folder).expanduser() / "control.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, naming_failed_writes(path):
        extras.control_image.save(tmp, format="PNG")
    return path


def control_kwargs(extras: Extras, width: int, height: int, notes: list[str]) -> dict:
    """The ControlNet pipeline's `image` (resized to the output size) and conditioning scale."""
    from PIL import Image

    if extras.control_image is None:
        return {}
    image = extras.control_image
    if image.size != (width, height):
        if abs(image.width / image.height - width / height) > 0.01:
            notes.append(f"the control image ({image.width}x{image.height}) was stretched to the output size "
                         f"{width}x{height}; crop it to that shape to keep its proportions")
        image = image.resize((width, height), Image.LANCZOS)
    return {"image": image, "controlnet_conditioning_scale": extras.control_scale}


def check_files(extras: Extras) -> None:
    """The files exist and can be loaded (peft for LoRA) - before any weights are loaded."""
    from facefact.pipelines.lora import require_peft
    from facefact.safe_open import special_file_kind

    for path, _ in extras.loras:
        if path.is_dir():
            raise ConfigError(f"--lora {path} is a folder", path=path,
                              hint="pass the LoRA file inside it (e.g. pytorch_lora_weights.safetensors)")
        kind = special_file_kind(path)
        if kind not in (None, "missing"):
            raise ConfigError(f"--lora {path}: the path is {kind}, not a LoRA file", path=path,
                              hint="pass the LoRA .safetensors file itself")
        if not path.is_file():
            raise ModelNotFoundError(f"LoRA file not found: {path}", path=path,
                                     hint="check the path; --lora takes a LoRA .safetensors file, optionally "
                                          "with a weight: --lora style.safetensors:0.8")
    if extras.loras:
        require_peft()
    if extras.controlnet is not None and not extras.tiny:
        from facefact.pipelines.registry import looks_like_hub_id

        where = Path(extras.controlnet).expanduser()
        if not where.exists() and not looks_like_hub_id(extras.controlnet):
            raise ModelNotFoundError(f"ControlNet not found: {where}", path=where,
                                     hint="give a diffusers ControlNet folder, a single .safetensors/.pth file or a hub "
                                          "id ('tiny' is the built-in one, for --model tiny)")


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
    if not extras.loras:
        return
    names = [f"lora{index}" for index in range(1, len(extras.loras) + 1)]
    with quiet_diffusers():
        for name, (path, _) in zip(names, extras.loras):
            pipe.load_lora_weights(path, adapter_name=name)
    pipe.set_adapters(names, [weight for _, weight in extras.loras])
