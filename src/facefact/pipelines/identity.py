"""Saved identities (opt-in): a person's face tokens in a file, to generate without the photos.

    faces = pipe.encode_faces(["a.jpg", "b.jpg"], combine="weighted")
    save_identity(pipe, faces, "alice.fid")          # only when asked: faces are personal data
    out = pipe("a portrait", face_tokens="alice.fid")  # or face_tokens=load_identity(pipe, "alice.fid")

A `.fid` is a safetensors file: the face tokens and null face tokens (float32), the combine mode,
the number of photos and their weights, and the fingerprints of the encoder and adapter weights
the tokens were made with. It is refused with another encoder or adapter (its tokens would mean
something else there). It holds no photo and no photo name.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from facefact.errors import CheckpointError, ConfigError
from facefact.model.fingerprint import fingerprint
from facefact.pipelines.face_tokens import FaceTokens

IDENTITY_FORMAT = "facefact-identity"


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
    metadata = {"format": IDENTITY_FORMAT, "format_version": "1", "combine": faces.combine,
                "num_photos": str(faces.num_photos), "weights": json.dumps(faces.weights),
                **{f"{k}_fingerprint": v for k, v in model_fingerprints(pipe).items()}}
    tensors = {"tokens": faces.tokens.detach().to("cpu", torch.float32).contiguous(),
               "null": faces.null.detach().to("cpu", torch.float32).contiguous()}
    return atomic_save_safetensors(tensors, path, metadata)


def load_identity(pipe, path: str | Path) -> FaceTokens:
    from facefact.model.checkpoints import read_safetensors

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"saved identity not found: {path}", path=path,
                          hint="make one with `facefact identity save --face PHOTO -o NAME.fid`")
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != IDENTITY_FORMAT or set(tensors) != {"tokens", "null"}:
        raise CheckpointError(f"{path} is not a facefact saved identity", path=path)
    mine = model_fingerprints(pipe)
    for role in ("encoder", "adapter"):
        theirs = metadata.get(f"{role}_fingerprint")
        if theirs != mine[role]:
            raise CheckpointError(
                f"{path} was made with another {role} ({theirs}) than the one loaded now ({mine[role]})",
                path=path, hint=f"load the {role} it was made with, or save the identity again from the photos")
    weights = json.loads(metadata.get("weights") or "null")
    dtype = next(pipe.unet.parameters()).dtype
    return FaceTokens(tensors["tokens"].to(dtype), tensors["null"].to(dtype), int(metadata.get("num_photos", 1)),
                      [], metadata.get("combine", "concat"), weights)
