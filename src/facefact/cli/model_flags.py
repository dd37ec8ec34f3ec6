"""Model selection shared by the commands that generate (generate, identity, serve, template):
flags / environment / config file -> the locations of base model, adapter and encoder ('tiny' or a
file, folder or hub id), and the one loader (facefact.pipelines.build) called with them."""
from __future__ import annotations

from pathlib import Path

from facefact.errors import ConfigError, ModelNotFoundError
from facefact.pipelines.registry import TINY_BASES

# The built-in random-weight base models (`--model NAME` / `--base-model NAME`); "tiny" as an adapter or
# encoder location is the chosen tiny base's own.
TINY_MODELS = tuple(TINY_BASES)
DEVICE_HELP = "cuda, cuda:1, mps or cpu (default: the best available)"


def add_model_flags(parser, title: str = "models", device_help: str = DEVICE_HELP, base_help: str | None = None):
    """The model flags every generating command shares (same names, same meaning); returns the group."""
    m = parser.add_argument_group(title)
    m.add_argument("--model", choices=["fact", *TINY_MODELS], default="fact",
                   help="'tiny' / 'tiny-sdxl': built-in random-weight SD1.5 / SDXL models (offline, seconds; images "
                        "are noise; 128 px); --adapter / --encoder may still be files")
    m.add_argument("--base-model", dest="base_model",
                   help=base_help or "SD1.5 or SDXL base: diffusers folder, hub id or single .safetensors file (its "
                                     "UNet config picks the family; images default to 512 px on SD1.5, 1024 on "
                                     "SDXL); 'tiny' / 'tiny-sdxl': the built-in ones")
    m.add_argument("--adapter", help="FACT adapter file, or a known name: maj, film ('tiny': the built-in one)")
    m.add_argument("--encoder", help="TransFace encoder file ('tiny': the built-in one)")
    m.add_argument("--models-dir", dest="models_dir", help="where known models live (default ~/.cache/facefact)")
    m.add_argument("--config", help="YAML config file (default: FACEFACT_CONFIG or ~/.config/facefact/facefact.yaml)")
    m.add_argument("--device", help=device_help)
    m.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="weights' precision (default: float16 on GPUs, float32 on CPUs)")
    return m


def check_device(device: str | None) -> None:
    """torch's own message for a missing accelerator is an AssertionError deep in .to(); say it plainly."""
    import torch

    if device is None:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{device}'", hint="use cuda, cuda:N, mps or cpu") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if not available.get(kind, True):
        raise ConfigError(f"device '{device}' is not available on this machine (torch {torch.__version__})",
                          hint="drop --device to use the best available one, or install a torch build for it")


def is_tiny(args) -> bool:
    """Whether the command runs a built-in tiny base (`--model tiny|tiny-sdxl` or `--base-model tiny...`)."""
    return args.model in TINY_MODELS or getattr(args, "base_model", None) in TINY_MODELS


def model_locations(args, config: dict, config_path) -> dict:
    """base_model / adapter / encoder: 'tiny' / 'tiny-sdxl' (built in) or a location - flag > env >
    config > default; `--model tiny` (or tiny-sdxl) makes the tiny models the default of each, so
    `--model tiny --adapter run/adapter.safetensors` is a trained adapter on the tiny base and encoder
    it was trained with."""
    from facefact.cli import config as cli_config
    from facefact.pipelines import registry

    tiny = args.model in TINY_MODELS
    if tiny and args.base_model not in (None, args.model):
        raise ConfigError(f"--model {args.model} is the built-in {args.model} base model; drop --base-model "
                          f"(or --model {args.model})", setting="base_model")
    directory = cli_config.models_dir(args.models_dir, config)
    where, missing = {}, []
    for setting in ("base_model", "adapter", "encoder"):
        flag = getattr(args, setting)
        if setting == "base_model" and (flag in TINY_MODELS or tiny):
            where[setting] = flag or args.model
            continue
        if flag == "tiny" or (tiny and flag is None):
            where[setting] = "tiny"
            continue
        resolved = cli_config.resolve_setting(setting, flag, config, config_path, directory)
        value = resolved.value if setting == "base_model" else resolved.path
        local = Path(str(value)).expanduser()
        if not local.exists() and not registry.looks_like_hub_id(str(value)) and not str(value).startswith("modelscope:"):
            missing.append((setting, value, resolved.origin))
        where[setting] = value
    if missing:
        raise _missing_models(missing)
    if "tiny" in (where["adapter"], where["encoder"]) and where["base_model"] not in TINY_MODELS:
        raise ConfigError("the tiny adapter and encoder fit only the tiny base model",
                          hint="pass --adapter and --encoder files for a real base model")
    return where


def _missing_models(missing: list[tuple]) -> ModelNotFoundError:
    """Every missing model file in one error (one line each), so one download fixes them all."""
    from facefact.cli import config as cli_config

    what = {"base_model": "base model"}
    lines = [f"{what.get(setting, setting)} not found: {value} (from {origin})" for setting, value, origin in missing]
    settings = [setting for setting, _, _ in missing]
    if len(settings) == 1:
        hint = (("run `facefact models download`, or " if settings[0] != "base_model" else
                 "give a diffusers folder, a .safetensors file or a hub id; ") + cli_config.how_to_point(settings[0]))
    else:
        ways = ", ".join(f"--{s.replace('_', '-')} / {cli_config.ENV_VARS[s]}" for s in settings)
        hint = ("run `facefact models download`" + (" (and give a base model folder or hub id)"
                                                    if "base_model" in settings else "")
                + f", or point at local copies: {ways}, or their keys in the config file (--config / FACEFACT_CONFIG)")
    message = lines[0] if len(lines) == 1 else f"{len(lines)} model files not found:\n  " + "\n  ".join(lines)
    return ModelNotFoundError(message, path=missing[0][1], hint=hint, setting=settings[0] if len(lines) == 1 else None)


def load_pipeline(args, config: dict, config_path, analysis, controlnet=None, kind: str = "txt2img", **options):
    """The FACT pipeline of `kind` on the models the flags / environment / config file name; `options`
    go to facefact.pipelines.build.load_fact_pipeline as they are (e.g. the tiny ControlNets)."""
    from facefact.cli import config as cli_config
    from facefact.pipelines.build import load_fact_pipeline

    device = cli_config.resolve_setting("device", args.device, config, config_path).value
    dtype = cli_config.resolve_setting("dtype", args.dtype, config, config_path).value
    check_device(device)
    where = model_locations(args, config, config_path)
    pipe = load_fact_pipeline(where["base_model"], where["adapter"], where["encoder"], kind=kind,
                              controlnet=controlnet, device=device, dtype=dtype, face_analysis=analysis, **options)
    if getattr(args, "threads", None):  # --threads N wins over the tiny pipeline's own one thread
        pipe.cpu_threads = args.threads
    return pipe
