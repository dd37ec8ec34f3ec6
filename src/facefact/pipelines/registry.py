"""Which model files facefact needs, where it looks for them, and what it knows about them.

Lookup order for every location is: command-line flag > environment variable > config file >
default (the file's name inside the models dir). The models dir itself is `--models-dir` >
`FACEFACT_HOME` > config `models_dir` > `~/.cache/facefact`.

The released FACT files carry no published checksums, so none are written here: the first time a
file is validated (it loads as what it claims to be) its sha256 is recorded in
`<models dir>/manifest.json`, and later checks compare against that record.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from facefact.atomic import atomic_write_bytes
from facefact.errors import ConfigError

MODELSCOPE_REPO = "yucheng1996/FaceChain-FACT"
MODELSCOPE_REVISION = "v1.0.0"
# Where the file lives, shown by `facefact models list`; downloads go through ModelScope's own client.
MODELSCOPE_URL = "https://modelscope.cn/models/{repo}/resolve/{revision}/{filename}"
DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class KnownModel:
    name: str          # registry name, also accepted by --adapter / --encoder
    kind: str          # "encoder" | "adapter" | "base"
    filename: str      # file name in the models dir (or hub id for a base)
    source: str        # "modelscope" | "hub"
    description: str
    setting: str       # the setting (flag without dashes / config key) that points at it

    @property
    def url(self) -> str | None:
        if self.source != "modelscope":
            return None
        return MODELSCOPE_URL.format(repo=MODELSCOPE_REPO, revision=MODELSCOPE_REVISION, filename=self.filename)


KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel("transface-s", "encoder", "ms1mv2_model_TransFace_S.pt", "modelscope",
               "TransFace ViT-S face encoder (frozen)", "encoder"),
    KnownModel("maj", "adapter", "adapter_maj_mask_large_new_reg001_faceshuffle_00290001.ckpt", "modelscope",
               "FACT adapter trained for majicmixRealistic v6 (default)", "adapter"),
    KnownModel("film", "adapter", "adapter_film_mask_large_new_reg001_faceshuffle_00290001.ckpt", "modelscope",
               "FACT adapter trained for a film-grain portrait base", "adapter"),
    KnownModel("sd15", "base", DEFAULT_BASE_MODEL, "hub",
               "Stable Diffusion 1.5 base (diffusers layout, from the Hugging Face hub)", "base_model"),
]}
DEFAULTS = {"encoder": "transface-s", "adapter": "maj", "base_model": "sd15"}
ENV_VARS = {"models_dir": "FACEFACT_HOME", "base_model": "FACEFACT_BASE_MODEL", "adapter": "FACEFACT_ADAPTER",
            "encoder": "FACEFACT_ENCODER", "device": "FACEFACT_DEVICE", "dtype": "FACEFACT_DTYPE"}
# Keys a config file may hold; `generate` holds defaults for `facefact generate` flags.
CONFIG_KEYS = {"models_dir", "base_model", "adapter", "encoder", "device", "dtype", "generate"}
GENERATE_KEYS = {"negative_prompt", "steps", "guidance", "scale", "cfg_face", "size", "width", "height",
                 "scheduler", "n", "out"}


# ---- network --------------------------------------------------------------------------------------
_FALSE = ("", "0", "false", "no", "off")


def offline() -> bool:
    """The one offline switch: FACEFACT_OFFLINE or HF_HUB_OFFLINE set to anything but 0/false/no/off.

    Offline, nothing is downloaded: hub bases load from the local cache only (local_files_only)
    and `facefact models download` refuses with a hint where to put a local copy.
    """
    return any(os.environ.get(name, "0").strip().lower() not in _FALSE
               for name in ("FACEFACT_OFFLINE", "HF_HUB_OFFLINE"))


def looks_like_hub_id(value: str | Path) -> bool:
    """`org/name` - exactly one slash, not a relative/absolute/home path, nothing local by that name."""
    text = str(value)
    if text.count("/") != 1 or "\\" in text or text.startswith((".", "/", "~")) or text.endswith("/"):
        return False
    return not Path(text).expanduser().exists()


# ---- config file --------------------------------------------------------------------------------
def default_config_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "facefact" / "facefact.yaml"


def load_config(path: str | Path | None = None) -> tuple[dict, Path | None]:
    """(config dict, its path). `--config` > FACEFACT_CONFIG > ~/.config/facefact/facefact.yaml if present."""
    import yaml

    explicit = path or os.environ.get("FACEFACT_CONFIG")
    path = Path(explicit).expanduser() if explicit else default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file not found: {path}", path=path,
                              hint="check --config / FACEFACT_CONFIG; see examples/facefact.yaml")
        return {}, None
    from facefact.safe_open import read_text_file

    text = read_text_file(path, ConfigError, what="config file", max_bytes=1024 * 1024,
                          hint="check --config / FACEFACT_CONFIG; see examples/facefact.yaml")
    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot parse the config file: {str(err).splitlines()[0]}", path=path) from err
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a mapping of keys to values", path=path)
    unknown = sorted(set(data) - CONFIG_KEYS) + sorted(f"generate.{k}" for k in set(data.get("generate") or {})
                                                       - GENERATE_KEYS)
    if unknown:  # a typo would otherwise be ignored silently
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}", path=path,
                          hint=f"known keys: {', '.join(sorted(CONFIG_KEYS))}; "
                               f"generate: {', '.join(sorted(GENERATE_KEYS))}")
    if data.get("generate") is not None and not isinstance(data["generate"], dict):
        raise ConfigError("config key 'generate' must be a mapping", path=path)
    return data, path


# ---- locations ----------------------------------------------------------------------------------
@dataclass
class Resolved:
    setting: str
    value: str | None
    origin: str                 # "flag", "env FACEFACT_X", "config <path>", "default"
    known: KnownModel | None    # the registry entry, when the value names one

    @property
    def path(self) -> Path | None:
        """The local file/folder this points to (None for a hub id, known or not: `org/name`)."""
        if self.value is None or (self.known is not None and self.known.source == "hub"):
            return None
        if self.known is None and self.setting == "base_model" and looks_like_hub_id(self.value):
            return None
        return Path(self.value).expanduser()


def models_dir(flag: str | None = None, config: dict | None = None) -> Path:
    value = flag or os.environ.get(ENV_VARS["models_dir"]) or (config or {}).get("models_dir")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "facefact"


def resolve_setting(setting: str, flag: str | None, config: dict | None, config_path: Path | None = None,
                    directory: Path | None = None) -> Resolved:
    """Where `setting` (base_model / adapter / encoder / device / dtype) points, and why."""
    config = config or {}
    env = ENV_VARS.get(setting)
    if flag is not None:
        value, origin = str(flag), "flag --" + setting.replace("_", "-")
    elif env and os.environ.get(env):
        value, origin = os.environ[env], f"env {env}"
    elif config.get(setting) is not None:
        value, origin = str(config[setting]), f"config {config_path or ''}".strip()
        beside = Path(config_path).parent / Path(value).expanduser() if config_path else None
        if beside is not None and not Path(value).expanduser().is_absolute() and beside.exists():
            value = str(beside)  # relative paths in a config file are relative to that file
    elif setting in DEFAULTS:
        value, origin = DEFAULTS[setting], "default"
    else:
        return Resolved(setting, None, "default", None)
    known = KNOWN_MODELS.get(value)
    if known is not None and known.setting != setting:
        raise ConfigError(f"'{value}' is a {known.kind}, not a {setting.replace('_', ' ')}",
                          hint=f"pass it with --{known.setting.replace('_', '-')}")
    if known is not None and known.source == "modelscope":
        value = str((directory or models_dir(None, config)) / known.filename)
    elif known is not None:
        value = known.filename
    return Resolved(setting, value, origin, known)


def how_to_point(setting: str) -> str:
    """The three ways to point a setting at a local copy, for error hints."""
    return (f"pass --{setting.replace('_', '-')} PATH, set {ENV_VARS[setting]}=PATH, or put `{setting}: PATH` "
            f"in the config file (--config / FACEFACT_CONFIG)")


# ---- checksum manifest ----------------------------------------------------------------------------
def manifest_path(directory: Path) -> Path:
    return Path(directory) / MANIFEST_NAME


def read_manifest(directory: Path) -> dict:
    path = manifest_path(directory)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ConfigError("the checksum manifest is corrupt", path=path,
                          hint="delete it; `facefact models check` records the checksums again") from None
    return data if isinstance(data, dict) else {}


def manifest_key(path: Path, directory: Path) -> str:
    """Files inside the models dir are keyed by name (the dir can move); others by absolute path."""
    path = Path(path).expanduser().resolve()
    try:
        return str(path.relative_to(Path(directory).expanduser().resolve()))
    except ValueError:
        return str(path)


def record_checksum(directory: Path, path: Path, sha256: str, source: str) -> None:
    directory = Path(directory)
    data = read_manifest(directory)
    data[manifest_key(path, directory)] = {"sha256": sha256, "bytes": Path(path).stat().st_size, "source": source,
                                          "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"  # before any file is touched
    atomic_write_bytes(manifest_path(directory), text.encode("utf-8"))


def recorded_checksum(directory: Path, path: Path) -> dict | None:
    return read_manifest(directory).get(manifest_key(path, directory))
