"""Reading and writing weights: the released FACT / TransFace files and facefact's safetensors.

Released files are pickles; they are only ever read with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers. facefact's own format is safetensors
with metadata (format version, architecture sizes, base family, tokens per photo), so a file
says what it is and needs no side config.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from facefact.errors import CheckpointError, ModelNotFoundError
from facefact.model.resampler import ResamplerConfig

ADAPTER_FORMAT = "facefact.fact-adapter"
ENCODER_FORMAT = "facefact.transface-encoder"
FORMAT_VERSION = "1"
RESAMPLER_PREFIX = "local_fac_prj."
PROCESSOR_MARK = ".attn2.processor."


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelNotFoundError(f"file not found: {path}", path=path,
                                 hint="check the path, or run `facefact models` to see what is needed and where")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a weights file", path=path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy was interrupted", path=path,
                              hint="download the file again")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from a .safetensors, .pt, .pth, .ckpt or .bin file, safely."""
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    not_weights = CheckpointError(f"cannot read {path}: the file is truncated or not a PyTorch weights file",
                                  path=path, hint="download the file again; check the size matches the source")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK", b"\x80")):  # neither torch's zip format nor a (legacy) pickle: e.g. text, HTML
        raise not_weights
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            what = f"it contains Python objects, not only tensors (e.g. {found.group(1)})"
        elif zipfile.is_zipfile(path):  # an intact archive whose pickle the weights-only unpickler refuses
            what = "its pickle holds more than tensors and plain containers (refused by weights-only loading)"
        else:  # a damaged (legacy) pickle stream
            raise not_weights from err
        raise CheckpointError(f"refused to load {path}: {what}",
                              path=path, hint="only weights files are accepted; convert it to safetensors "
                                              "where it was made, or re-download the official file") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError, TypeError,
            AttributeError, UnicodeDecodeError) as err:  # the weights-only unpickler's errors on garbage vary
        raise CheckpointError(f"{not_weights.message} ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]})",
                              path=path, hint=not_weights.hint) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # Lightning-style wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors", path=path,
                              hint="expected a state dict such as the released FACT .ckpt or TransFace .pt")
    return state


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, metadata
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({err})", path=path,
                              hint="the file may be truncated; download or convert it again") from err


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write to a temporary file beside the target, then rename: never a half-written file."""
    from safetensors.torch import save_file

    from facefact.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


# ---- adapter layout -------------------------------------------------------------------------
def split_adapter_state(state: dict, source=None) -> tuple[dict, dict[str, dict]]:
    """Flat released layout -> (resampler state, {block path: processor state})."""
    resampler, processors, other = {}, {}, []
    for key, tensor in state.items():
        if key.startswith(RESAMPLER_PREFIX):
            resampler[key[len(RESAMPLER_PREFIX):]] = tensor
        elif PROCESSOR_MARK in key:
            block, name = key.split(PROCESSOR_MARK, 1)
            processors.setdefault(block, {})[name] = tensor
        else:
            other.append(key)
    if not resampler or not processors:
        hint = ("this looks like a TransFace encoder; pass it as the encoder, not the adapter"
                if "patch_embed.proj.weight" in state else
                "expected a FACT adapter: keys `local_fac_prj.*` and `<block>.attn2.processor.*`")
        raise CheckpointError("not a FACT adapter checkpoint (no resampler or no block adapters)", path=source, hint=hint)
    if other:
        raise CheckpointError(f"unexpected tensors in a FACT adapter checkpoint: {other[:4]}", path=source)
    return resampler, processors


def resampler_config_from_state(state: dict, config: ResamplerConfig | None, source=None) -> ResamplerConfig:
    """Sizes the tensors determine (widths, depth, queries) come from them; the split of the inner
    width into heads x dim_head cannot, so it comes from `config` (official: 12 x 64)."""
    base = config or ResamplerConfig()
    try:
        _, queries, dim = state["latents"].shape
        output_dim, _ = state["proj_out.weight"].shape
        _, embedding_dim = state["proj_in.weight"].shape
        inner = state["layers.0.0.to_q.weight"].shape[0]
        ff_mult = state["layers.0.1.1.weight"].shape[0] // dim
    except KeyError as err:
        raise CheckpointError(f"resampler tensor {err} is missing", path=source) from err
    depth = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    heads, dim_head = base.heads, base.dim_head
    if heads * dim_head != inner:
        if config is not None or inner % dim_head:
            raise CheckpointError(f"resampler attention is {inner} wide, not heads x dim_head = {heads} x {dim_head}",
                                  path=source, hint="pass the resampler's heads and dim_head")
        heads = inner // dim_head  # official dim_head, other head count
    return ResamplerConfig(dim=dim, depth=depth, dim_head=dim_head, heads=heads, num_queries=queries,
                           embedding_dim=embedding_dim, output_dim=output_dim, ff_mult=ff_mult)


def read_adapter_file(path: str | Path, config: ResamplerConfig | None = None):
    """(flat state in the released layout, resampler config or None) from .ckpt or .safetensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
        if metadata.get("format") not in (None, ADAPTER_FORMAT):
            raise CheckpointError(f"{path} is a '{metadata.get('format')}' file, not a FACT adapter", path=path)
        if config is None and "resampler" in metadata:
            config = ResamplerConfig(**json.loads(metadata["resampler"]))
        return state, config
    return read_state_dict(path), config


def adapter_metadata(adapter, base_family: str = "sd15", extra: dict | None = None) -> dict[str, str]:
    meta = {
        "format": ADAPTER_FORMAT,
        "format_version": FORMAT_VERSION,
        "resampler": json.dumps(adapter.resampler.config.to_dict()),
        "base_family": base_family,
        "tokens_per_photo": str(adapter.tokens_per_photo),
        "num_blocks": str(len(adapter.block_paths)),
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return meta


def save_adapter(adapter, path: str | Path, base_family: str = "sd15", extra_metadata: dict | None = None) -> Path:
    return atomic_save_safetensors(adapter.released_state_dict(), path,
                                   adapter_metadata(adapter, base_family, extra_metadata))


def save_encoder(encoder, path: str | Path) -> Path:
    """Encoder in safetensors; the recognition head is dropped (generation never reads it)."""
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(("senet.", "feature."))}
    meta = {"format": ENCODER_FORMAT, "format_version": FORMAT_VERSION,
            "encoder": json.dumps(encoder.config.to_dict())}
    return atomic_save_safetensors(state, path, meta)


def sniff_kind(state: dict) -> str:
    """'adapter', 'encoder' or 'unknown' for a flat state dict."""
    if any(k.startswith(RESAMPLER_PREFIX) for k in state) and any(PROCESSOR_MARK in k for k in state):
        return "adapter"
    if "patch_embed.proj.weight" in state and "pos_embed" in state:
        return "encoder"
    return "unknown"
