"""Where FACT's weight files come from: a file, a folder, the Hugging Face hub or ModelScope.

    resolve_weight_file("fact_adapter.safetensors", what="FACT adapter")
    resolve_weight_file("models/", what="FACT adapter", weight_name="adapter.ckpt")
    resolve_weight_file("org/repo", what="FACT adapter", weight_name="adapter.safetensors")       # huggingface_hub
    resolve_weight_file("modelscope:yucheng1996/FaceChain-FACT", what="FACT adapter",
                        weight_name="adapter_maj_mask_large_new_reg001_faceshuffle_00290001.ckpt")  # modelscope client

Downloads go through each hub's own client, which checks what it fetched against the hub's
checksums and keeps it in that hub's cache; offline (FACEFACT_OFFLINE / HF_HUB_OFFLINE) only the
cache is read and a missing file is named with where to put it.
"""
from __future__ import annotations

from pathlib import Path

from facefact.errors import ConfigError, ModelNotFoundError
from facefact.pipelines.registry import MODELSCOPE_REPO, MODELSCOPE_REVISION, looks_like_hub_id, offline

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
MODELSCOPE_PREFIX = "modelscope:"


def resolve_weight_file(source, *, what: str, weight_name: str | None = None, subfolder: str | None = None,
                        revision: str | None = None) -> Path:
    text = str(source)
    if text.startswith(MODELSCOPE_PREFIX):
        return _modelscope_file(text[len(MODELSCOPE_PREFIX):], what, weight_name, revision)
    local = Path(text).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        return _file_in_folder(local / (subfolder or ""), what, weight_name)
    if looks_like_hub_id(text):
        return _hub_file(text, what, weight_name, subfolder, revision)
    raise ModelNotFoundError(f"{what} not found: {text}", path=text,
                             hint="give a file, a folder (with weight_name=), a Hugging Face hub id or "
                                  "'modelscope:yucheng1996/FaceChain-FACT' (with weight_name=); `facefact models` "
                                  "lists the released files")


def _file_in_folder(folder: Path, what: str, weight_name: str | None) -> Path:
    if weight_name:
        path = folder / weight_name
        if not path.is_file():
            raise ModelNotFoundError(f"{what} not found: {path}", path=path, hint=f"is '{weight_name}' in {folder}?")
        return path
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES) \
        if folder.is_dir() else []
    if len(candidates) != 1:
        listed = ", ".join(p.name for p in candidates[:6]) or "no weight files"
        raise ConfigError(f"{folder} holds {len(candidates)} weight files ({listed}): which is the {what}?",
                          path=folder, hint="pass weight_name= (the file's name inside the folder)")
    return candidates[0]


def _hub_file(repo_id: str, what: str, weight_name: str | None, subfolder: str | None, revision: str | None) -> Path:
    if not weight_name:
        raise ConfigError(f"{what} from the hub repository {repo_id}: which file?", path=repo_id,
                          hint="pass weight_name= (the file's name in the repository)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, weight_name, subfolder=subfolder, revision=revision,
                                    local_files_only=offline()))
    except LocalEntryNotFoundError:
        raise ModelNotFoundError(
            f"{what} {repo_id}/{weight_name} is not in the local hub cache and this machine is offline",
            path=f"{repo_id}/{weight_name}",
            hint="download it where there is a connection and pass the local file instead") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise ModelNotFoundError(f"could not fetch {what} {repo_id}/{weight_name}: {str(err).splitlines()[0][:200]}",
                                 path=f"{repo_id}/{weight_name}", hint="check the id and file name") from err


def _modelscope_file(model_id: str, what: str, weight_name: str | None, revision: str | None,
                     local_dir: Path | None = None) -> Path:
    if not weight_name:
        raise ConfigError(f"{what} from ModelScope {model_id}: which file?", path=model_id,
                          hint="pass weight_name= (e.g. adapter_maj_mask_large_new_reg001_faceshuffle_00290001.ckpt)")
    where = f"modelscope:{model_id}/{weight_name}"
    if offline():
        raise ModelNotFoundError(f"{what} {where}: this machine is offline",
                                 path=where, hint=f"download {weight_name} where there is a connection (`facefact "
                                                  "models download`) and pass the local file")
    try:
        from modelscope.hub.file_download import model_file_download
    except ImportError:  # also a stand-in package without that module
        raise ModelNotFoundError(f"{what} {where} needs ModelScope's client, which is not installed", path=where,
                                 hint="pip install 'facefact[modelscope]', or download the file and pass it") from None
    try:
        extra = {"local_dir": str(local_dir)} if local_dir is not None else {}
        return Path(model_file_download(model_id, weight_name, revision=revision or MODELSCOPE_REVISION, **extra))
    except Exception as err:  # the client raises its own kinds (HTTP, integrity, not found)
        raise ModelNotFoundError(f"could not fetch {what} {where}: {str(err).splitlines()[0][:200]}", path=where,
                                 hint="check the connection and the file name, or download it by hand") from err


def fetch_modelscope_file(filename: str, folder: Path, model_id: str = MODELSCOPE_REPO,
                          revision: str = MODELSCOPE_REVISION) -> Path:
    """One file of a ModelScope repository into `folder`, through ModelScope's own client (which
    checks what it fetched against the hub's checksums)."""
    return _modelscope_file(model_id, "file", filename, revision, local_dir=folder)
