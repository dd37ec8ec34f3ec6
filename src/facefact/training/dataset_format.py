"""The prepared training set on disk: what `facefact prepare` writes and `facefact train` reads.

    OUT/
      dataset.json     format, version and the settings it was prepared with, counts
      index.jsonl      one accepted sample per line (see `SampleRecord`)
      rejected.jsonl   one rejected photo per line: source, identity, reason, message
      samples/ab/<id>.image.jpg   square crop, 1.5x the face box, resized to --size (the target)
      samples/ab/<id>.cond.png    head-masked aligned 112x112 face on black (the encoder input)
      samples/ab/<id>.mask.png    face mask aligned with the crop, 0/255 (FAIR's M)
      samples/ab/<id>.txt         the caption
      samples/ab/<id>.json        the sample's record; written last, so it marks a finished sample
                                  (with SDXL's original_size, crops_coords_top_left, target_size:
                                  micro_conditioning.py)
      samples/ab/<id>.latents.safetensors, <id>.tokens.safetensors   optional caches (training/cache.py)

A JSONL index plus plain files streams well (read the index, open files lazily, shard by line) and
needs no tool to inspect. Every file is written to a temporary name and renamed, so an interrupted
run never leaves a half-written sample behind; re-running skips samples whose record exists.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from facefact.atomic import atomic_write_bytes  # noqa: F401  (re-exported for the training modules)
from facefact.errors import DatasetError
from facefact.training.micro_conditioning import field_problem

FORMAT = "facefact.fact-training-set"
FORMAT_VERSION = 1
INDEX_NAME = "index.jsonl"
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


def read_jsonl(path: Path) -> list:
    """The JSON values of a JSON-lines file (blank lines skipped); a line that is not JSON is a
    DatasetError naming the line."""
    from facefact.safe_open import read_text_file

    text = read_text_file(path, DatasetError, what="JSON-lines file", max_bytes=1 << 30,
                          hint="run `facefact prepare` again to rebuild it")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DatasetError(f"line {number} is not valid JSON ({err.msg})", path=path,
                               hint="the index is damaged; run `facefact prepare` again to rebuild it") from err
    return rows


def load_index(root: str | Path) -> list[dict]:
    """Accepted samples of a prepared set, with file paths made absolute; clear errors otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"training set not found: {root}", path=root,
                           hint="run `facefact prepare PHOTOS --out DIR` first and pass DIR")
    index = root / INDEX_NAME
    if not index.is_file():
        raise DatasetError(f"{root} has no {INDEX_NAME}; it is not a prepared training set", path=root,
                           hint="run `facefact prepare PHOTOS --out DIR` (an interrupted run writes the index "
                                "when it finishes; run it again to complete it)")
    samples = read_jsonl(index)
    if not samples:
        raise DatasetError(f"the training set {root} is empty: no photo passed preparation", path=root,
                           hint=f"see {root / REJECTED_NAME} for why each photo was rejected")
    for number, sample in enumerate(samples, 1):
        _check_entry(root, index, number, sample)
        for key in ("image", "condition", "mask"):
            sample[key] = str(root / sample[key])
    return samples


ENTRY_FILES = ("image", "condition", "mask")
_REPAIR = "the prepared set is damaged or was edited; run the same `facefact prepare` command again to repair it"


def _check_entry(root: Path, index: Path, number: int, sample) -> None:
    """An index line is an object with an identity, a caption and the sample's files as relative
    paths inside the set: an absolute path or '..' would make training read any file on the machine."""
    where = f"{INDEX_NAME} line {number}"
    if not isinstance(sample, dict):
        raise DatasetError(f"{where} is not a JSON object", path=index, hint=_REPAIR)
    missing = [k for k in ("id", "identity", *ENTRY_FILES) if k not in sample]
    if missing:
        raise DatasetError(f"{where} lacks {missing}", path=index, hint=_REPAIR)
    if not isinstance(sample.get("caption", ""), str) or not isinstance(sample["identity"], (str, int)):
        raise DatasetError(f"{where} has a caption or identity that is not text", path=index, hint=_REPAIR)
    problem = field_problem(sample)  # SDXL's size/crop fields (optional: older sets lack them)
    if problem:
        raise DatasetError(f"{where} {problem}", path=index, hint=_REPAIR)
    resolved_root = root.resolve()
    for key in ENTRY_FILES:
        value = sample[key]
        if not isinstance(value, str) or not value or Path(value).is_absolute() or ".." in Path(value).parts:
            raise DatasetError(f"{where}: {key} {value!r} is not a path inside the training set", path=index,
                               hint=_REPAIR)
        try:
            inside = (root / value).resolve().is_relative_to(resolved_root)
        except (OSError, RuntimeError):  # a symlink loop
            inside = False
        if not inside:
            raise DatasetError(f"{where}: {key} {value!r} points outside the training set", path=index,
                               hint=_REPAIR)
        if not (root / value).is_file():  # a stat per file: cheap, and before any model is loaded
            raise DatasetError(f"{where}: the {key} file {value} is missing", path=index, hint=_REPAIR)
