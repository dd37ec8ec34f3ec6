"""`facefact models list|check|download`: what generation needs, where it is looked for, is it sound.

list      the three models `generate` would use (base, adapter, encoder), where each comes from
          (flag / env / config / default), and whether it is there; plus the known released files.
check     loads each present file as what it should be, records its sha256 in the manifest the
          first time and compares it afterwards. Exit 1 if anything is missing or wrong.
download  released files through ModelScope's own client (the `modelscope` extra), validated, then
          moved into place, checksum recorded; hub bases with huggingface_hub.snapshot_download.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from facefact.cli.exit_codes import ExitCode
from facefact.errors import CheckpointError, FacefactError, ModelNotFoundError
from facefact.cli import config as cli_config
from facefact.pipelines import registry

# Only what StableDiffusionPipeline.from_pretrained reads: not the 4-7 GB original checkpoints.
HUB_PATTERNS = ["model_index.json", "scheduler/*", "tokenizer/*", "*/config.json", "text_encoder/model.safetensors",
                "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list, check and download the model files",
                              description="Model files: what is needed, where it is looked for, checksums, "
                                          "downloads.")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    for name, text in (("list", "what is needed and where it is looked for"),
                       ("check", "load every present file, verify or record its sha256"),
                       ("download", "fetch missing files (needs a connection)")):
        q = sub.add_parser(name, help=text, description=text)
        if name != "list":
            q.add_argument("names", nargs="*", metavar="NAME",
                           help=f"known models ({', '.join(registry.KNOWN_MODELS)}) or 'all'; "
                                "default: the ones generate would use")
        q.add_argument("--models-dir", dest="models_dir", help="where known models live (default ~/.cache/facefact)")
        q.add_argument("--config", help="YAML config file (default: FACEFACT_CONFIG or "
                                        "~/.config/facefact/facefact.yaml)")
        q.add_argument("--base-model", dest="base_model", help="the base model generate would use, to look for")
        q.add_argument("--adapter", help="the FACT adapter file generate would use, to look for")
        q.add_argument("--encoder", help="the TransFace encoder file generate would use, to look for")
        q.add_argument("--json", action="store_true", help="print JSON instead of a table")
        q.set_defaults(func=run, models_command=name)
    p.set_defaults(func=run, models_command="list", names=[], models_dir=None, config=None, base_model=None,
                   adapter=None, encoder=None, json=False)


def run(args) -> int:
    from facefact.pipelines.loading import quiet_libraries

    quiet_libraries()
    config, config_path = cli_config.load_config(args.config)
    directory = cli_config.models_dir(args.models_dir, config)
    wanted = {s: cli_config.resolve_setting(s, getattr(args, s), config, config_path, directory)
              for s in ("base_model", "adapter", "encoder")}
    if args.models_command == "list":
        return list_models(wanted, directory, config_path, args.json)
    targets = select(args.names, wanted, directory)
    if args.models_command == "check":
        return check_models(targets, directory, args.json)
    return download_models(targets, directory, args.json)


def select(names: list[str], wanted: dict, directory: Path) -> list[cli_config.Resolved]:
    if not names:
        return list(wanted.values())
    if names == ["all"]:
        names = list(registry.KNOWN_MODELS)
    unknown = [n for n in names if n not in registry.KNOWN_MODELS]
    if unknown:
        raise ModelNotFoundError(f"unknown model name(s): {', '.join(unknown)}",
                                 hint=f"known: {', '.join(registry.KNOWN_MODELS)}, or 'all'")
    return [cli_config.resolve_setting(registry.KNOWN_MODELS[n].setting, n, {}, None, directory) for n in names]


# ---- list -----------------------------------------------------------------------------------------
def presence(item: cli_config.Resolved) -> str:
    if item.path is not None:
        return "present" if item.path.exists() else "missing"
    return "cached" if hub_cached(item.value) else "not cached"


def hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
    except Exception:  # an id the hub library rejects is simply not cached
        return False


def list_models(wanted: dict, directory: Path, config_path, as_json: bool) -> int:
    rows = [{"setting": s, "location": r.value, "from": r.origin, "status": presence(r)} for s, r in wanted.items()]
    manifest = registry.read_manifest(directory)
    catalogue = [{"name": m.name, "kind": m.kind, "file": m.filename, "description": m.description,
                  "url": m.url, "status": presence(cli_config.resolve_setting(m.setting, m.name, {}, None, directory)),
                  "sha256": (manifest.get(m.filename) or {}).get("sha256")} for m in registry.KNOWN_MODELS.values()]
    if as_json:
        print(json.dumps({"models_dir": str(directory), "config": str(config_path) if config_path else None,
                          "needed": rows, "known": catalogue}, indent=1))
        return 0
    print(f"models dir: {directory}   config: {config_path or 'none'}")
    print("\nneeded by `facefact generate`:")
    for row in rows:
        print(f"  {row['setting']:<10} {row['status']:<8} {row['location']}   ({row['from']})")
    print("\nknown models:")
    for m in catalogue:
        print(f"  {m['name']:<12} {m['kind']:<8} {m['status']:<8} {m['file']}\n      {m['description']}")
    print("\nhub bases that are not cached are downloaded on first use, or by `facefact models download`;"
          "\npoint to local copies with --base-model/--adapter/--encoder, FACEFACT_BASE_MODEL/FACEFACT_ADAPTER/"
          "FACEFACT_ENCODER, or the same keys in the config file; FACEFACT_HOME moves the models dir")
    return 0


# ---- check ----------------------------------------------------------------------------------------
def validate(kind: str, path: Path) -> str:
    """Load `path` as `kind`; return a one-line description or raise CheckpointError."""
    if kind == "adapter":
        from facefact.model import FaceAdapter

        from facefact.model.layouts import family_name

        adapter = FaceAdapter.from_checkpoint(path)
        return (f"FACT adapter for {family_name(adapter.family)}, {len(adapter.block_paths)} blocks (layout "
                f"'{adapter.layout}'), face tokens {adapter.resampler.config.output_dim}")
    if kind == "encoder":
        from facefact.model import TransFaceEncoder

        config = TransFaceEncoder.from_checkpoint(path).config
        return f"TransFace encoder, width {config.embed_dim}, depth {config.depth}"
    from facefact.model.layouts import family_name, unet_family
    from facefact.pipelines.loading import base_unet_config

    config = base_unet_config(str(path))
    if path.is_dir() and not (path / "model_index.json").is_file():
        raise CheckpointError(f"{path} is not a diffusers pipeline folder (no model_index.json)", path=path)
    width = config.get("cross_attention_dim") or ""
    return f"{family_name(unet_family(config))} base" + (f", cross-attention {width}" if width else "")


def check_one(item: cli_config.Resolved, directory: Path) -> dict:
    from facefact.pipelines.hashing import file_sha256

    kind = item.known.kind if item.known else {"base_model": "base"}.get(item.setting, item.setting)
    row = {"setting": item.setting, "location": item.value, "from": item.origin, "ok": False}
    if item.path is None:  # a hub id
        row["ok"] = hub_cached(item.value)
        row["detail"] = "in the hub cache" if row["ok"] else (
            f"not in the hub cache: run `facefact models download` or {cli_config.how_to_point('base_model')}")
        return row
    if not item.path.exists():
        row["detail"] = f"missing: {item.path}; run `facefact models download` or {cli_config.how_to_point(item.setting)}"
        return row
    try:
        row["detail"] = validate(kind, item.path)
    except FacefactError as err:
        row["detail"] = f"does not load: {err.message}"
        return row
    if item.path.is_file():
        digest = file_sha256(item.path)
        record = registry.recorded_checksum(directory, item.path)
        row["sha256"] = digest
        if record is None:
            registry.record_checksum(directory, item.path, digest, "check")
            row["detail"] += "; sha256 recorded"
        elif record["sha256"] != digest:
            row["detail"] = (f"sha256 {digest[:16]}... differs from the one recorded {record['recorded']} "
                             f"({record['sha256'][:16]}...): the file changed or is damaged; download it again")
            return row
        else:
            row["detail"] += "; sha256 verified"
    row["ok"] = True
    return row


def check_models(targets: list, directory: Path, as_json: bool) -> int:
    rows = [check_one(item, directory) for item in targets]
    if as_json:
        print(json.dumps({"models_dir": str(directory), "models": rows}, indent=1))
    else:
        for row in rows:
            print(f"{'ok     ' if row['ok'] else 'PROBLEM'} {row['setting']:<10} {row['location']}\n"
                  f"        {row['detail']}")
    return ExitCode.OK if all(r["ok"] for r in rows) else ExitCode.PROBLEM_FOUND


# ---- download -------------------------------------------------------------------------------------
def download_models(targets: list, directory: Path, as_json: bool) -> int:
    done = []
    for item in targets:
        if item.known is None and item.path is not None and item.path.exists():
            done.append({"name": item.setting, "location": f"{item.path} (local, {item.origin}; not downloaded)"})
            continue
        if item.known is None and item.path is None:  # a hub id given by the user (`org/name`)
            done.append({"name": item.setting, "location": download_hub(item.value)})
            continue
        if item.known is None:
            raise ModelNotFoundError(f"{item.setting} points to {item.value} ({item.origin}), not a known "
                                     "model facefact can download",
                                     hint="download it yourself, or drop the setting to use the default")
        if item.known.source == "hub":
            done.append({"name": item.known.name, "location": download_hub(item.value)})
        else:
            done.append({"name": item.known.name, "location": str(download_file(item.known, item.path, directory))})
    if as_json:
        print(json.dumps({"downloaded": done}, indent=1))
    else:
        for row in done:
            print(f"{row['name']}: {row['location']}")
    return 0


def download_hub(repo_id: str) -> str:
    if registry.offline():
        raise ModelNotFoundError(f"offline: cannot download the base model {repo_id}",
                                 hint=f"download it elsewhere and {cli_config.how_to_point('base_model')}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, allow_patterns=HUB_PATTERNS)
    except Exception as err:  # network, auth, missing repo: all mean "not available from here"
        raise ModelNotFoundError(f"could not download the base model {repo_id}: {str(err).splitlines()[0]}",
                                 hint=f"download it elsewhere and {cli_config.how_to_point('base_model')}") from err


def download_file(model: registry.KnownModel, dest: Path, directory: Path) -> Path:
    """The released file through ModelScope's client into a private folder beside `dest`, validated,
    then renamed into place (never a half-written or unloadable file under the real name)."""
    import shutil
    import tempfile

    from facefact.pipelines.hashing import file_sha256
    from facefact.pipelines.hub import fetch_modelscope_file

    if dest.is_file():
        record = registry.recorded_checksum(directory, dest)
        if record and record["sha256"] == file_sha256(dest):
            print(f"{model.name}: already present and verified: {dest}", file=sys.stderr)
            return dest
    if registry.offline():
        raise ModelNotFoundError(f"offline: cannot download {model.filename}", path=dest,
                                 hint=f"copy it to {dest}, or {cli_config.how_to_point(model.setting)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = f"modelscope:{registry.MODELSCOPE_REPO}@{registry.MODELSCOPE_REVISION}/{model.filename}"
    with tempfile.TemporaryDirectory(prefix=".facefact-download-", dir=dest.parent) as scratch:
        try:
            fetched = fetch_modelscope_file(model.filename, Path(scratch))
        except ModelNotFoundError as err:
            raise ModelNotFoundError(
                f"could not download {model.filename}: {err.message}", path=dest,
                hint=f"{err.hint}; with no connection here, fetch it elsewhere and copy it to {dest}, or "
                     f"{cli_config.how_to_point(model.setting)}") from err
        try:
            validate(model.kind, fetched)
        except FacefactError as err:
            raise CheckpointError(f"the downloaded {model.filename} does not load: {err.message}", path=dest,
                                  hint="the server sent something else; try again later") from err
        digest = file_sha256(fetched)
        shutil.move(str(fetched), dest)
    registry.record_checksum(directory, dest, digest, source)
    return dest
