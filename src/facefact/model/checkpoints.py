"""Reading and writing weights: the released FACT / TransFace files and facefact's safetensors.

Released files are pickles; they are only ever read with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers. facefact's own format is safetensors
with metadata (format version, architecture sizes, base family, tokens per photo), so a file
says what it is and needs no side config.
"""
from __future__ import annotations

import json
import os
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


# torch.save's legacy (non-zip) format starts with this pickled magic number; any other pickle
# stream is a raw pickle, which only a full unpickler could read - and that would run its code.
_LEGACY_TORCH_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
# Weights are floating point; BatchNorm's step counter is the one integer tensor a checkpoint holds.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTEGER_COUNTERS = ("num_batches_tracked",)
# torch.save stores its zip entries uncompressed, so the declared contents are about the file's
# size; a file declaring much more is compressed on purpose (a zip bomb) and is not inflated.
_MAX_ZIP_EXPANSION = 4
_ZIP_SLACK_BYTES = 16 * 1024 * 1024


def _check_file(path: Path) -> None:
    from facefact.safe_open import require_regular_file

    if not path.exists() and not path.is_symlink():
        raise ModelNotFoundError(f"file not found: {path}", path=path,
                                 hint="check the path, or run `facefact models` to see what is needed and where")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a weights file", path=path)
    info = require_regular_file(path, CheckpointError, missing_cls=ModelNotFoundError,
                                hint="pass the weights file itself (.safetensors, .ckpt, .pt)")
    if info.st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy was interrupted", path=path,
                              hint="download the file again")


def check_tensors(state: dict, path) -> None:
    """Refuse what would be silently cast (bool, integer, complex tensors) or poison every image
    (NaN / infinite weights)."""
    for key, tensor in state.items():
        if tensor.dtype in FLOAT_DTYPES:
            continue
        if key.endswith(_INTEGER_COUNTERS) and not tensor.is_floating_point() and not tensor.is_complex():
            continue
        raise CheckpointError(f"tensor {key} is {str(tensor.dtype).replace('torch.', '')}; weights must be "
                              f"float16, bfloat16, float32 or float64 (refused rather than cast)", path=path,
                              hint="this is not a FACT / TransFace weights file, or it was damaged")
    for key, tensor in state.items():
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"tensor {key} has {bad} NaN or infinite value(s); the weights are broken",
                                  path=path, hint="a training run diverged or the file is damaged; use an "
                                                  "earlier checkpoint or download the file again")


def _check_zip_sizes(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load reports the damage in its own words below
    size = path.stat().st_size
    if declared > _MAX_ZIP_EXPANSION * size + _ZIP_SLACK_BYTES:
        raise CheckpointError(f"refused to load {path}: the archive declares {declared:,} bytes of contents in a "
                              f"{size:,}-byte file (PyTorch stores checkpoints uncompressed; this looks like a zip "
                              f"bomb)", path=path, hint="use the original, unmodified weights file")


def _refuse_raw_pickle(path: Path, not_weights: CheckpointError) -> None:
    """A pickle stream that is not torch's legacy format: a well-formed one is refused as a raw
    pickle (never unpickled: that would run its code), a damaged one is reported as such."""
    import pickletools

    with open(path, "rb") as handle:
        if handle.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC:
            return
        handle.seek(0)
        try:
            for _ in pickletools.genops(handle):  # parses opcodes only; executes nothing
                pass
        except Exception:  # noqa: BLE001 - any parse failure means a damaged stream
            raise not_weights from None
    raise CheckpointError(f"refused to load {path}: this is a raw pickle file; facefact refuses to unpickle it "
                          "(unpickling can run arbitrary code)", path=path,
                          hint="use the official weights file (a PyTorch .ckpt/.pt archive) or a .safetensors copy")


def read_state_dict(path: str | Path, *, check_values: bool = True) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from a .safetensors, .pt, .pth, .ckpt or .bin file, safely.
    `check_values=False` is for reading names and shapes only (a base model's kind): a PyTorch zip
    archive is memory-mapped rather than read, and its values are not checked."""
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
    if head.startswith(b"PK"):
        _check_zip_sizes(path)
    else:
        _refuse_raw_pickle(path, not_weights)
    state = _torch_load(path, not_weights, mmap=not check_values and head.startswith(b"PK"))
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # Lightning-style wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors", path=path,
                              hint="expected a state dict such as the released FACT .ckpt or TransFace .pt")
    if check_values:
        check_tensors(state, path)
    return state


def _torch_load(path: Path, not_weights: CheckpointError, mmap: bool = False):
    import warnings

    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes: our message says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
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
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError) as err:  # garbage errors vary
        raise CheckpointError(f"{not_weights.message} ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]})",
                              path=path, hint=not_weights.hint) from err


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({err})", path=path,
                              hint="the file may be truncated; download or convert it again") from err
    check_tensors(state, path)
    return state, metadata


def config_from_metadata(metadata: dict, key: str, config_cls, path):
    """A sizes dataclass from a safetensors metadata entry (JSON object of positive integers), or
    a CheckpointError naming the entry - never a JSONDecodeError / TypeError / ZeroDivisionError."""
    import dataclasses

    bad = f"the file's metadata entry '{key}'"
    hint = "the file was edited or damaged; convert it again with `facefact convert`"
    try:
        values = json.loads(metadata[key])
    except (json.JSONDecodeError, TypeError):
        raise CheckpointError(f"{bad} is not valid JSON", path=path, hint=hint) from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{bad} must be a JSON object, not {type(values).__name__}", path=path, hint=hint)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CheckpointError(f"{bad} has unknown keys {unknown}", path=path, hint=hint)
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
            raise CheckpointError(f"{bad}: {name} = {value!r} is not a positive whole number", path=path, hint=hint)
    return config_cls(**values)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write to a temporary file beside the target, then rename: never a half-written file. A full
    disk (or any other failed write) is an OSError naming `path`, as for every other file."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from facefact.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except SafetensorError as err:  # its I/O errors are text: "... I/O error: ... (os error 28)"
            found = re.search(r"os error (\d+)", str(err))
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), str(path)) from err
    return path


class _WriteErrors:
    """A file wrapper that keeps the OSError of a failed write: torch.save reports one as a
    RuntimeError without it ("unexpected pos ...")."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def atomic_save_torch(obj, path: str | Path) -> Path:
    """torch.save through a temporary file beside `path`; a failed write (a full disk) is an OSError naming `path`."""
    from facefact.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as handle:
                writer = _WriteErrors(handle)
                torch.save(obj, writer)
        except (RuntimeError, OSError) as err:
            cause = writer.error if isinstance(err, RuntimeError) else err
            if cause is None or cause.errno is None:
                raise
            raise OSError(cause.errno, cause.strerror, str(path)) from err
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


def read_adapter(path: str | Path, config: ResamplerConfig | None = None):
    """(flat state in the released layout, resampler config or None, metadata) from .ckpt or
    .safetensors (a .ckpt has no metadata: {})."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
        if metadata.get("format") not in (None, ADAPTER_FORMAT):
            raise CheckpointError(f"{path} is a '{metadata.get('format')}' file, not a FACT adapter", path=path)
        if config is None and "resampler" in metadata:
            config = config_from_metadata(metadata, "resampler", ResamplerConfig, path)
        return state, config, metadata
    return read_state_dict(path), config, {}


def read_adapter_file(path: str | Path, config: ResamplerConfig | None = None):
    """(flat state in the released layout, resampler config or None) from .ckpt or .safetensors."""
    state, config, _ = read_adapter(path, config)
    return state, config


def adapter_target(metadata: dict, state: dict, source=None) -> tuple[str | None, str | None]:
    """(base family, block layout) a file's metadata records, checked against its tensors; None for
    what it does not record (released files and facefact files written before SDXL: read from the
    block paths, which say SD1.5)."""
    from facefact.model.layouts import check_layout_name, family_of_label, paths_family, paths_layout

    blocks = {key.split(PROCESSOR_MARK, 1)[0] for key in state if PROCESSOR_MARK in key}
    hint = "the file was edited or damaged; convert or save it again"
    family = layout = None
    if "base_family" in metadata:
        family = family_of_label(metadata["base_family"], source)
        if blocks and paths_family(blocks) != family:
            raise CheckpointError(f"the file's metadata says base family '{family}' but its blocks are laid out "
                                  f"for '{paths_family(blocks)}'", path=source, hint=hint)
    if "block_layout" in metadata:
        layout = check_layout_name(metadata["block_layout"], source)
        if layout == "first" and paths_layout(blocks) != "first":
            raise CheckpointError("the file's metadata says block layout 'first' but it has adapters on later "
                                  "blocks of a transformer stack", path=source, hint=hint)
    if "cross_attention_dim" in metadata:
        width = metadata["cross_attention_dim"]
        made = state.get(f"{RESAMPLER_PREFIX}proj_out.weight")
        if made is not None and width != str(made.shape[0]):
            raise CheckpointError(f"the file's metadata says cross_attention_dim {width!r} but its face tokens "
                                  f"are {made.shape[0]} wide", path=source, hint=hint)
    return family, layout


def adapter_metadata(adapter, base_family: str | None = None, extra: dict | None = None) -> dict[str, str]:
    """What a facefact adapter file says about itself: format, resampler sizes, the base family and
    block layout it was made for and its face tokens' width (so loading refuses a mismatch by name)."""
    meta = {
        "format": ADAPTER_FORMAT,
        "format_version": FORMAT_VERSION,
        "resampler": json.dumps(adapter.resampler.config.to_dict()),
        "base_family": base_family or adapter.family,
        "block_layout": adapter.layout,
        "cross_attention_dim": str(adapter.resampler.config.output_dim),
        "tokens_per_photo": str(adapter.tokens_per_photo),
        "num_blocks": str(len(adapter.block_paths)),
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return meta


def save_adapter(adapter, path: str | Path, base_family: str | None = None,
                 extra_metadata: dict | None = None) -> Path:
    """The adapter as facefact safetensors (released key layout + metadata); `base_family`: the
    adapter's own family unless a label such as 'sd15-layout-32' is given (facefact convert)."""
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
