"""Where the weights come from: base model, FACT adapter and TransFace encoder.

A base model is a diffusers folder, a hub id, or a single-file `.safetensors`/`.ckpt` community
fine-tune; every failure names the location and what to do. Nothing here runs a model.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from facefact.errors import CheckpointError, ConfigError, FacefactError, ModelNotFoundError
from facefact.pipelines.hashing import HashCache
from facefact.pipelines.registry import looks_like_hub_id, offline
from facefact.pipelines.scheduler_names import SCHEDULERS
from facefact.pipelines.single_file import safetensors_header, single_file_unet_config


def make_scheduler(name: str, base_config):
    import diffusers

    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler '{name}'", hint=f"choose one of: {', '.join(SCHEDULERS)}")
    class_name, overrides = SCHEDULERS[name]
    # the settings a previous choice put in (e.g. Karras sigmas) never carry over to this one
    chosen_keys = {key for _, settings in SCHEDULERS.values() for key in settings}
    config = {k: v for k, v in dict(base_config).items() if k not in chosen_keys}
    return getattr(diffusers, class_name).from_config(config, **overrides)


def pick_device_dtype(device: str | torch.device | None, dtype: str | torch.dtype | None):
    """CUDA -> float16, MPS -> float16, CPU -> float32 unless asked otherwise."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else (
            "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    device = torch.device(device)
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
                 "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in names:
            raise ConfigError(f"unknown dtype '{dtype}'", hint="use float32, float16 or bfloat16", setting="dtype")
        dtype = names[dtype]
    if dtype is None:
        dtype = torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("float16 is not supported on the CPU", hint="use float32 or bfloat16 on the CPU", setting="dtype")
    return device, dtype


def quiet_libraries() -> None:
    """transformers warns at import that torchvision is absent (facefact never needs it).

    `facefact.cli.main` sets TRANSFORMERS_VERBOSITY=error (unless set) before transformers is
    imported; this covers a transformers that was imported earlier (by the caller of `main`), and
    still lets an explicit TRANSFORMERS_VERBOSITY win.
    """
    import os

    if "transformers" in sys.modules and os.environ.get("TRANSFORMERS_VERBOSITY", "error") == "error":
        sys.modules["transformers"].logging.set_verbosity_error()


def base_family(location: str | Path) -> str:
    """'sdxl' or 'sd15': the family a base model's UNet config says (a diffusers folder, a cached hub
    id), or diffusers' own detection says of a single .safetensors / .ckpt file - read without loading
    weights. A single file that is no SD1.5 / SDXL base is refused naming what it is; where a folder's
    or hub id's config cannot be read here (not in the cache offline) it is 'sd15', and loading the
    base reports what is wrong with it."""
    from facefact.model.layouts import unet_family

    path = Path(str(location)).expanduser()
    if path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            return "sd15"  # load_base_pipeline names the file and the suffixes it takes
        return unet_family(single_file_unet_config(path))
    try:
        return unet_family(base_unet_config(str(location)))
    except (FacefactError, OSError, ValueError):
        return "sd15"


def load_base_pipeline(location: str | Path, dtype: torch.dtype, controlnet=None, cls=None):
    """A diffusers SD1.5-family or SDXL pipeline of class `cls` (default: StableDiffusionPipeline, or the
    ControlNet one) from a diffusers folder, a single .safetensors/.ckpt file or a hub id."""
    import inspect

    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

    if cls is None:
        cls = StableDiffusionControlNetPipeline if controlnet is not None else StableDiffusionPipeline
    extra = {"controlnet": controlnet} if controlnet is not None else {}
    if "requires_safety_checker" in inspect.signature(cls.__init__).parameters:  # SD1.5; SDXL has no checker
        extra.update(safety_checker=None, requires_safety_checker=False)
    kwargs = dict(dtype=dtype, **extra)
    path = Path(str(location)).expanduser()
    try:
        if path.is_file():
            if path.suffix not in (".safetensors", ".ckpt"):
                raise ConfigError(f"{path} is not a .safetensors or .ckpt model file", path=path)
            return cls.from_single_file(str(path), **kwargs)
        if path.is_dir():
            if not (path / "model_index.json").exists():
                raise ModelNotFoundError(f"{path} is not a diffusers model folder (no model_index.json)", path=path,
                                         hint="give a folder saved by diffusers, a hub id, or a single "
                                              ".safetensors file", setting="base_model")
            return cls.from_pretrained(str(path), **kwargs)
        if not looks_like_hub_id(location):
            raise ModelNotFoundError(f"base model not found: {location}", path=location,
                                     hint="give a diffusers folder, a single .safetensors/.ckpt file, or a hub id "
                                          "such as 'stable-diffusion-v1-5/stable-diffusion-v1-5'")
        return cls.from_pretrained(str(location), local_files_only=offline(), **kwargs)
    except FacefactError:
        raise  # our own message already (also an OSError where it is a FileNotFoundError)
    except (OSError, EnvironmentError) as err:
        raise ModelNotFoundError(
            f"could not load the base model '{location}': {str(err).splitlines()[0]}", path=location,
            hint="without a connection, download it elsewhere and pass the local folder; single-file models also "
                 "need their config, which diffusers fetches from the hub once") from err


# Every ControlNet has a hint block for its control image: `input_hint_block` in the original
# layout (with or without the `control_model.` prefix), `controlnet_cond_embedding` in diffusers'.
_CONTROLNET_KEY_MARKS = ("input_hint_block.", "controlnet_cond_embedding.")


def _check_single_file_controlnet(path: Path, hint: str) -> None:
    """A .safetensors file's key names (its header only) say whether it is a ControlNet at all -
    before diffusers fetches a config for it from the hub."""
    if path.suffix != ".safetensors":
        return  # a pickle can only be told apart by loading it: diffusers' own error is mapped below
    with safetensors_header(path, "a ControlNet checkpoint", hint) as f:
        keys = list(f.keys())
    if not any(mark in key for key in keys for mark in _CONTROLNET_KEY_MARKS):
        raise CheckpointError(f"{path} is not a ControlNet checkpoint: it holds no ControlNet hint block "
                              "(input_hint_block / controlnet_cond_embedding)", path=path, hint=hint)


def _single_file_controlnet(path: Path, dtype: torch.dtype, hint: str):
    from diffusers import ControlNetModel

    _check_single_file_controlnet(path, hint)
    try:
        # Its config comes from the hub (the matching diffusers ControlNet's): offline, from the
        # hub cache only - a clear error at once instead of retries.
        return ControlNetModel.from_single_file(str(path), dtype=dtype, local_files_only=offline())
    except (OSError, EnvironmentError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Unable to load weights" in first or "Unable to locate the file" in first:  # the file itself
            raise CheckpointError(f"{path} is not a ControlNet checkpoint: it cannot be read as weights", path=path,
                                  hint=hint) from err
        offline_note = " (offline: the hub cache only)" if offline() else ""
        raise ModelNotFoundError(
            f"could not load the ControlNet {path.name}{offline_note}: a single-file ControlNet takes its config "
            f"from the hub, once, and that failed: {first[:200]}", path=path,
            hint="run it once with a connection (the config is then cached), or use a diffusers ControlNet folder "
                 "(config.json and diffusion_pytorch_model.safetensors)") from err


def _read_json_config(config: Path, hint: str) -> dict:
    """A diffusers config.json, read safely: a CheckpointError naming it when it is not a JSON object."""
    from facefact.safe_open import read_text_file

    try:
        data = json.loads(read_text_file(config, CheckpointError, what="config.json", hint=hint))
    except ValueError as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{config} is not a diffusers config (not a JSON object): {str(err)[:200]}",
                              path=config, hint=hint) from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{config} is not a diffusers config (JSON, but not a JSON object)", path=config,
                              hint=hint)
    return data


def load_controlnet(location: str | Path, dtype: torch.dtype):
    """A diffusers `ControlNetModel` from a folder, a hub id or a single .safetensors/.pth file."""
    from diffusers import ControlNetModel

    path = Path(str(location)).expanduser()
    hint = "use a ControlNet for Stable Diffusion 1.5-family models, e.g. lllyasviel/control_v11p_sd15_canny"
    try:
        if path.is_file():
            if path.suffix not in (".safetensors", ".ckpt", ".pth", ".pt", ".bin"):
                raise ConfigError(f"{path} is not a .safetensors or .pth ControlNet file", path=path, hint=hint)
            return _single_file_controlnet(path, dtype, hint)
        if path.is_dir():
            config = path / "config.json"
            if not config.is_file():
                raise ModelNotFoundError(f"{path} is not a diffusers ControlNet folder (no config.json)", path=path,
                                         hint="give a folder saved by diffusers (config.json and "
                                              "diffusion_pytorch_model.safetensors), a hub id or a single file",
                                         setting="controlnet")
            kind = _read_json_config(config, hint).get("_class_name")
            if kind != "ControlNetModel":
                raise CheckpointError(f"{path} holds a {kind or 'model of unknown kind'}, not a ControlNetModel",
                                      path=path, hint=hint)
            return ControlNetModel.from_pretrained(str(path), dtype=dtype)
        if not looks_like_hub_id(location):
            raise ModelNotFoundError(f"ControlNet not found: {location}", path=location,
                                     hint="give a diffusers ControlNet folder, a single .safetensors/.pth file or a "
                                          "hub id such as 'lllyasviel/control_v11p_sd15_canny'")
        return ControlNetModel.from_pretrained(str(location), dtype=dtype, local_files_only=offline())
    except FacefactError:
        raise
    except (OSError, EnvironmentError) as err:
        raise ModelNotFoundError(
            f"could not load the ControlNet '{location}': {str(err).splitlines()[0]}", path=location,
            hint="without a connection, download it elsewhere and pass the local folder") from err
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"could not load the ControlNet '{location}': {str(err).splitlines()[0][:300]}",
                              path=location, hint=hint) from err


CONTROLNET_EXAMPLES = {"sd15": "lllyasviel/control_v11p_sd15_canny", "sdxl": "diffusers/controlnet-canny-sdxl-1.0"}


def check_controlnet_family(controlnet, family: str, name: str | list | None = None) -> None:
    """A ControlNet made for the other base family (an SD1.5 one on an SDXL base, or the reverse) is
    refused naming both families; each ControlNet's family is its config's, as a UNet's is. For
    several (a MultiControlNetModel), `name` may be a list: one name per ControlNet."""
    from facefact.model.layouts import family_name, unet_family

    nets = list(getattr(controlnet, "nets", [controlnet]))
    names = list(name) if isinstance(name, (list, tuple)) else [name] * len(nets)
    for net, label in zip(nets, names + [None] * (len(nets) - len(names))):
        mine = unet_family(net.config)
        if mine != family:
            raise CheckpointError(
                f"the ControlNet{f' {label}' if label else ''} was made for {family_name(mine)} base models, but the "
                f"base model is {family_name(family)}", path=label, setting="controlnet",
                hint=f"use a ControlNet made for {family_name(family)} (e.g. {CONTROLNET_EXAMPLES[family]}), or a "
                     f"{family_name(mine)} base model")


def check_controlnet_fits(controlnet, unet, name: str | list | None = None) -> None:
    """A ControlNet adds its outputs to the UNet's blocks and reads the same text tokens: its family
    and widths must be the UNet's (an SDXL or SD2 ControlNet on an SD1.5 model fails deep inside
    otherwise). For several (a MultiControlNetModel), `name` may be a list: one name per ControlNet."""
    from facefact.model.layouts import unet_family

    def as_list(value):
        return list(value) if isinstance(value, (list, tuple)) else [value]

    family = unet_family(unet)
    check_controlnet_family(controlnet, family, name)
    nets = list(getattr(controlnet, "nets", [controlnet]))  # MultiControlNetModel holds several
    names = list(name) if isinstance(name, (list, tuple)) else [name] * len(nets)
    for net, name in zip(nets, names + [None] * (len(nets) - len(names))):
        for key in ("cross_attention_dim", "block_out_channels"):
            mine, theirs = net.config.get(key), unet.config.get(key)
            if mine is not None and theirs is not None and as_list(mine) != as_list(theirs):
                raise CheckpointError(
                    f"the ControlNet{f' {name}' if name else ''} does not fit this base model: its {key} is "
                    f"{mine}, the UNet's {theirs}",
                    hint=f"use a ControlNet made for this model family (e.g. {CONTROLNET_EXAMPLES[family]})")


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files diffusers loads from a model folder (a UNet's, a ControlNet's), in name
    order: .safetensors, else .bin; every shard; the plain files, not variants (`*.fp16.*`),
    unless there are only variants."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for suffix in (".safetensors", ".bin"):
        files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix == suffix), key=lambda p: p.name)
        plain = [p for p in files if "." not in p.stem]
        if files:
            return plain or files
    return []


def cached_revision(repo_id: str) -> str | None:
    """The commit the local hub cache resolves `repo_id` (its `main`) to - a cache lookup only,
    never a network call; None when it is not in the cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model_index.json", "config.json", "adapter_config.json"):
            found = try_to_load_from_cache(repo_id, filename)
            if isinstance(found, str):
                return Path(found).parent.name
    except Exception:  # provenance is best effort: an odd cache never stops generation
        return None
    return None


def describe_file(path: str | Path, hashes: HashCache | None = None) -> dict:
    """Id + short hash for provenance metadata (hashes are computed when a model is loaded, and
    remembered per file path, size, times and inode in `hashes`, default `HashCache.default()`).

    The id of a local file or folder is its name only: the metadata travels with the images and a
    full path names the user and their folders (`/home/<user>/...`). A hub id is kept as given.
    - a file: `sha256` (first 16 hex digits) and `bytes`;
    - a diffusers pipeline folder: `unet_sha256`, over the UNet's weight files (see weight_files);
      a model folder (a ControlNet's): `weights_sha256`, over its weight files;
    - a hub id: `revision`, the commit the local hub cache resolves it to, when it is cached.
    """
    local = Path(str(path)).expanduser()
    hashes = hashes or HashCache.default()
    if local.is_file():
        return {"id": local.name, "sha256": hashes.files_sha256([local])[:16], "bytes": local.stat().st_size}
    if local.is_dir():
        info = {"id": local.resolve().name}
        if (local / "unet").is_dir():
            if files := weight_files(local / "unet"):
                info["unet_sha256"] = hashes.files_sha256(files)[:16]
        elif files := weight_files(local):
            info["weights_sha256"] = hashes.files_sha256(files)[:16]
        return info
    info = {"id": str(path)}
    if looks_like_hub_id(path) and (revision := cached_revision(str(path))):
        info["revision"] = revision
    return info


def require_file(path: str | Path | None, what: str, flag: str) -> Path:
    if path is None:
        raise ModelNotFoundError(f"no {what} given", hint=f"pass {flag} PATH (see `facefact models`)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"{what} not found: {path}", path=path,
                                 hint=f"download it (see `facefact models`) or pass the right file with {flag}")
    return path


def base_unet_config(base: str) -> dict:
    """The UNet config of a base model (folder, single file or hub id), without loading its weights."""
    from diffusers import UNet2DConditionModel

    path = Path(str(base)).expanduser()
    if path.is_dir():
        for candidate in (path / "unet" / "config.json", path / "config.json"):
            if candidate.is_file():
                return _read_json_config(candidate, hint="the base model folder is damaged; copy or download it "
                                                         "again")
        raise ModelNotFoundError(f"{path} holds no UNet config (unet/config.json)", path=path)
    if path.is_file():
        return single_file_unet_config(path)
    if not looks_like_hub_id(base):
        raise ModelNotFoundError(f"base model not found: {base}", path=base)
    try:
        return dict(UNet2DConditionModel.load_config(str(base), subfolder="unet", local_files_only=offline()))
    except OSError as err:
        offline_note = " (offline: the hub cache only)" if offline() else ""
        raise ModelNotFoundError(f"could not read the UNet config of '{base}'{offline_note}: "
                                 f"{str(err).splitlines()[0]}", path=base, hint="pass a local diffusers folder") from err
