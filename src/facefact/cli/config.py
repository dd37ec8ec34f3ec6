"""Where the commands find their settings: command-line flag > environment variable > config file >
built-in default, and the config file itself. A CLI concern: the library takes plain locations and
values (facefact.pipelines.build.load_fact_pipeline), never flags, environment variables or files in
the home folder.

The models dir is `--models-dir` > `FACEFACT_HOME` > config `models_dir` > `~/.cache/facefact`; a
known model's name (`facefact models list`) resolves to its file inside it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from facefact.errors import ConfigError
from facefact.pipelines.registry import KNOWN_MODELS, KnownModel, looks_like_hub_id

DEFAULTS = {"encoder": "transface-s", "adapter": "maj", "base_model": "sd15"}
ENV_VARS = {"models_dir": "FACEFACT_HOME", "base_model": "FACEFACT_BASE_MODEL", "adapter": "FACEFACT_ADAPTER",
            "encoder": "FACEFACT_ENCODER", "device": "FACEFACT_DEVICE", "dtype": "FACEFACT_DTYPE"}
# Keys a config file may hold; `generate:` holds defaults for the generation settings (config_section_keys).
CONFIG_KEYS = {"models_dir", "base_model", "adapter", "encoder", "device", "dtype", "generate"}


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
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:  # a typo would otherwise be ignored silently
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}", path=path,
                          hint=f"known keys: {', '.join(sorted(CONFIG_KEYS))}")
    section = data.get("generate")
    if section is not None:
        from facefact.cli.settings_flags import section_settings
        from facefact.pipelines.settings import GenerationSettings

        if not isinstance(section, dict):
            raise ConfigError("config key 'generate' must be a mapping", path=path)
        try:  # the generation settings' own names and checks, so `generate: {steps: 1e9}` fails here
            section_settings(GenerationSettings, {k: v for k, v in section.items() if k != "out"},
                             where="config `generate:`")
        except ConfigError as err:
            raise ConfigError(err.message, path=path, hint=err.hint) from None
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
