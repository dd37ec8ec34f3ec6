"""The prepared training set on disk: what `facefact prepare` writes and `facefact train` reads.

    OUT/
      dataset.json     format, version and the settings it was prepared with, counts
      index/           the accepted samples: JSON-Lines shards + manifest (sample_index.py; sets prepared
                       before format 2 have one index.jsonl instead, still read)
      rejected.jsonl   one rejected photo per line: source, identity, reason, message
      samples/ab/<id>.image.jpg   square crop, 1.5x the face box, resized to --size (the target)
      samples/ab/<id>.cond.png    head-masked aligned 112x112 face on black (the encoder input)
      samples/ab/<id>.mask.png    face mask aligned with the crop, 0/255 (FAIR's M)
      samples/ab/<id>.txt         the caption
      samples/ab/<id>.json        the sample's record; written last, so it marks a finished sample
                                  (with SDXL's original_size, crops_coords_top_left, target_size:
                                  micro_conditioning.py)
      samples/ab/<id>.latents.safetensors, <id>.tokens.safetensors   optional caches (training/cache.py)

A sharded JSON-Lines index plus plain files streams well (a million samples start training in
seconds: sample_index.py) and needs no tool to inspect. Every file is written to a temporary name
and renamed, so an interrupted run never leaves a half-written sample behind; re-running skips
samples whose record exists.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from facefact.atomic import atomic_write_bytes  # noqa: F401  (re-exported for the training modules)
from facefact.errors import DatasetError
from facefact.training.sample_index import open_sample_index, read_jsonl  # noqa: F401  (read_jsonl re-exported)

FORMAT = "facefact.fact-training-set"
FORMAT_VERSION = 2  # 2: the index is sharded (index/); 1: one index.jsonl
REJECTED_NAME = "rejected.jsonl"
INFO_NAME = "dataset.json"


def sample_id(identity: str, source: str) -> str:
    """Stable id of one (identity, photo) pair: the same photo always maps to the same files."""
    return hashlib.sha1(f"{identity}\0{source}".encode()).hexdigest()[:16]


def sample_stem(root: Path, sid: str) -> Path:
    """Files of a sample share this stem; two-character fan-out keeps directories small."""
    return Path(root) / "samples" / sid[:2] / sid


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def atomic_write_jsonl(path: str | Path, rows) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


def read_info(root: str | Path, hint: str) -> dict:
    """dataset.json of the set in `root`, read safely: a DatasetError naming it (and `hint`) when it
    is not a regular UTF-8 file, not JSON, or not a facefact training set's description."""
    from facefact.safe_open import read_text_file

    path = Path(root) / INFO_NAME
    try:
        info = json.loads(read_text_file(path, DatasetError, what=INFO_NAME, hint=hint))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{INFO_NAME} is not valid JSON ({err.msg}, line {err.lineno})", path=path,
                           hint=hint) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DatasetError(f"{INFO_NAME} is not a facefact training set description", path=path, hint=hint)
    caches = info.get("caches") or {}
    if not isinstance(caches, dict) or not all(isinstance(entry, dict) for entry in caches.values()):
        raise DatasetError(f"the 'caches' entry of {INFO_NAME} is not a map of cache descriptions", path=path,
                           hint=hint)
    return info


def load_index(root: str | Path):
    """The samples of a prepared set (`SampleIndex`: a sequence of entries with absolute file paths,
    read lazily from the index shards); clear DatasetErrors for a missing, empty or damaged index."""
    return open_sample_index(root)
