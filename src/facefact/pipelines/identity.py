"""Saved identities (opt-in): a person's face tokens in a file, to generate without the photos.

    faces = pipe.encode_faces(["a.jpg", "b.jpg"], combine="weighted")
    save_identity(pipe, faces, "alice.fid")          # only when asked: faces are personal data
    out = pipe("a portrait", face_tokens="alice.fid")  # or face_tokens=load_identity(pipe, "alice.fid")
    saved = read_identity("alice.fid")               # no model needed: what it holds, checked

A `.fid` is a safetensors file: the face tokens and null face tokens (float32), the combine mode,
the number of photos and their weights, and the fingerprints of the encoder and adapter weights
the tokens were made with. It is refused with another encoder or adapter (its tokens would mean
something else there). It holds no photo and no photo name.

The fingerprints are plain metadata: they prove the file was made for these models, not that its
numbers are the ones facefact wrote. So every field is checked: the metadata by itself when read,
the tokens against the loaded models (count, width, finite, no longer than the resampler can make).
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from facefact.errors import CheckpointError, ConfigError
from facefact.model.fingerprint import fingerprint
from facefact.pipelines.face_tokens import FaceTokens, face_tokens_problem
from facefact.pipelines.settings import COMBINE_MODES

IDENTITY_FORMAT = "facefact-identity"
# A .fid holds at most this many photos' tokens (16 each, concatenated): far above what helps.
MAX_IDENTITY_PHOTOS = 64
# The widest cross-attention of a Stable Diffusion UNet is 2048 (SDXL); twice that leaves room.
_MAX_WIDTH = 4096
_MAX_FILE_BYTES = 2 * MAX_IDENTITY_PHOTOS * 16 * _MAX_WIDTH * 4 + 64 * 1024  # two float32 tensors + header
_METADATA_KEYS = {"format", "format_version", "combine", "num_photos", "weights", "encoder_fingerprint",
                  "adapter_fingerprint"}
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_HINT = "save the identity again from the photos with `facefact identity save --face PHOTO -o NAME.fid`"


@dataclass
class SavedIdentity:
    """What a .fid holds, every field checked (by itself; `load_identity` checks it against the models)."""
    tokens: torch.Tensor       # [1, n, C] float32
    null: torch.Tensor         # the same shape
    combine: str
    num_photos: int
    weights: list[float] | None
    fingerprints: dict[str, str]  # {"encoder": ..., "adapter": ...}

    def summary(self) -> dict:
        return {"format_version": "1", "combine": self.combine, "num_photos": self.num_photos,
                "weights": self.weights, **{f"{k}_fingerprint": v for k, v in self.fingerprints.items()},
                "tokens": list(self.tokens.shape)}


def model_fingerprints(pipe) -> dict[str, str]:
    adapter = pipe._require_fact()
    return {"adapter": fingerprint(adapter), "encoder": fingerprint(pipe.face_encoder)}


def save_identity(pipe, faces: FaceTokens, path: str | Path) -> Path:
    from facefact.model.checkpoints import atomic_save_safetensors

    if not isinstance(faces, FaceTokens):
        raise ConfigError("save_identity takes the FaceTokens of pipe.encode_faces(...)")
    path = Path(path)
    if path.suffix != ".fid":
        raise ConfigError(f"{path}: a saved identity's name ends in .fid", path=path)
    if faces.num_photos > MAX_IDENTITY_PHOTOS:
        raise ConfigError(f"{faces.num_photos} photos; a saved identity holds at most {MAX_IDENTITY_PHOTOS}",
                          hint="choose the best photos of the person (a few good ones are enough)")
    metadata = {"format": IDENTITY_FORMAT, "format_version": "1", "combine": faces.combine,
                "num_photos": str(faces.num_photos), "weights": json.dumps(faces.weights),
                **{f"{k}_fingerprint": v for k, v in model_fingerprints(pipe).items()}}
    tensors = {"tokens": faces.tokens.detach().to("cpu", torch.float32).contiguous(),
               "null": faces.null.detach().to("cpu", torch.float32).contiguous()}
    return atomic_save_safetensors(tensors, path, metadata)


def load_identity(pipe, path: str | Path) -> FaceTokens:
    """The .fid's FaceTokens for this pipeline: refused when made with other weights, or when its
    tokens do not fit the loaded adapter and UNet."""
    saved = read_identity(path)
    mine = model_fingerprints(pipe)
    for role in ("encoder", "adapter"):
        if saved.fingerprints[role] != mine[role]:
            raise CheckpointError(
                f"was made with another {role} ({saved.fingerprints[role]}) than the one loaded now ({mine[role]})",
                path=path, hint=f"load the {role} it was made with, or save the identity again from the photos")
    adapter, width = pipe._require_fact(), pipe.unet.config.cross_attention_dim
    for name, tokens in (("tokens", saved.tokens), ("null tokens", saved.null)):
        problem = face_tokens_problem(tokens, adapter, width, saved.num_photos, saved.combine)
        if problem:
            raise CheckpointError(f"its {name} do not fit the loaded models: {problem}", path=path, hint=_HINT)
    dtype = next(pipe.unet.parameters()).dtype
    return FaceTokens(saved.tokens.to(dtype), saved.null.to(dtype), saved.num_photos, [], saved.combine,
                      saved.weights)


def read_identity(path: str | Path) -> SavedIdentity:
    """Read and check a .fid without any model: a regular file of bounded size, a safetensors
    header, the format, every metadata entry and the two tensors' kind and shape."""
    tensors, metadata = _read_file(Path(path))
    bad = lambda message: CheckpointError(message, path=path, hint=_HINT)  # noqa: E731
    if metadata.get("format") != IDENTITY_FORMAT:
        raise CheckpointError("is not a facefact saved identity (no 'facefact-identity' format tag)", path=path,
                              hint="pass a .fid file made by `facefact identity save`")
    if metadata.get("format_version") != "1":
        raise bad(f"its format_version {str(metadata.get('format_version'))[:20]!r} is not one this facefact "
                  "reads (1)")
    unknown = sorted(set(metadata) - _METADATA_KEYS)
    if unknown:
        raise bad(f"its metadata has unknown entries {[k[:40] for k in unknown[:5]]}")
    if set(tensors) != {"tokens", "null"}:
        raise bad(f"it holds the tensors {sorted(k[:40] for k in tensors)[:5]}, not 'tokens' and 'null'")
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32 or tensor.ndim != 3 or tensor.shape[0] != 1:
            raise bad(f"its '{name}' tensor is {str(tensor.dtype).replace('torch.', '')} {list(tensor.shape)}, "
                      "not float32 [1, tokens, width]")
    if tensors["tokens"].shape[1] == 0 or tensors["tokens"].shape[2] == 0:
        raise bad(f"its tokens {list(tensors['tokens'].shape)} are empty")
    if not all(torch.isfinite(tensor).all() for tensor in tensors.values()):
        raise bad("its tokens hold NaN or infinite values")
    if tensors["null"].shape != tensors["tokens"].shape:
        raise bad(f"its null tokens {list(tensors['null'].shape)} and tokens {list(tensors['tokens'].shape)} differ "
                  "in shape")
    combine = metadata.get("combine")
    if combine not in COMBINE_MODES:
        raise bad(f"its combine mode {str(combine)[:20]!r} is not one of {', '.join(COMBINE_MODES)}")
    num_photos = _whole_number(metadata.get("num_photos"), path)
    weights = _weights(metadata.get("weights"), combine, num_photos, path)
    fingerprints = {}
    for role in ("encoder", "adapter"):
        value = metadata.get(f"{role}_fingerprint")
        if not isinstance(value, str) or not _FINGERPRINT.match(value):
            raise bad(f"its {role}_fingerprint {str(value)[:20]!r} is not 16 hex digits")
        fingerprints[role] = value
    return SavedIdentity(tensors["tokens"], tensors["null"], combine, num_photos, weights, fingerprints)


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a safetensors file opened through the one safe opener, its size bounded."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from facefact.safe_open import open_regular

    hint = "pass a .fid file made by `facefact identity save --face PHOTO -o NAME.fid`"
    with open_regular(path, CheckpointError, missing_cls=ConfigError, hint=hint) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > _MAX_FILE_BYTES:
            raise CheckpointError(f"is {size / 1e6:.0f} MB, too large for a saved identity (at most "
                                  f"{_MAX_FILE_BYTES / 1e6:.0f} MB: {MAX_IDENTITY_PHOTOS} photos' tokens)",
                                  path=path, hint=hint)
        data = handle.read(_MAX_FILE_BYTES + 1)
    not_safetensors = CheckpointError("is not a valid safetensors file (damaged or not a saved identity)",
                                      path=path, hint=_HINT)
    if len(data) < 8:
        raise not_safetensors
    length = struct.unpack("<Q", data[:8])[0]
    try:
        if length > len(data) - 8:
            raise ValueError("header longer than the file")
        header = json.loads(data[8:8 + length].decode("utf-8"))
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("metadata is not a map of strings")
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise not_safetensors from err
    return tensors, metadata


def _whole_number(text, path) -> int:
    if not isinstance(text, str) or not text.isdigit() or not 1 <= int(text) <= MAX_IDENTITY_PHOTOS:
        raise CheckpointError(f"its num_photos {str(text)[:20]!r} is not a whole number from 1 to "
                              f"{MAX_IDENTITY_PHOTOS}", path=path, hint=_HINT)
    return int(text)


def _weights(text, combine: str, num_photos: int, path) -> list[float] | None:
    """The photo weights: JSON null, or for "weighted" one finite weight >= 0 per photo, summing to 1."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"its photo weights {why}", path=path, hint=_HINT)

    try:
        weights = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        raise bad("are not valid JSON") from None
    if combine != "weighted":
        if weights is not None:
            raise bad(f"are given although the photos are combined by '{combine}'")
        return None
    if not isinstance(weights, list) or len(weights) != num_photos:
        raise bad(f"must be a list of {num_photos} numbers (one per photo)")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
               for w in weights) or abs(sum(weights) - 1) > 1e-3:
        raise bad("must be finite numbers >= 0 summing to 1")
    return [float(w) for w in weights]
