"""The models facefact knows (the released FACT files and the SD1.5 base), the offline switch, what
counts as a hub id, and the checksum manifest of a models folder.

Where a command finds each file (flag > environment > config file > default) is the CLI's
business: facefact.cli.config. The library takes locations.

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
# The built-in random-weight bases (pipelines/tiny.py, tiny_xl.py), named like any base model location.
TINY_BASES = {"tiny": "sd15", "tiny-sdxl": "sdxl"}
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
