"""The photos `facefact prepare` reads: a folder with one sub-folder per identity, or a CSV / JSONL
manifest, listed as `PhotoJob`s (with their stable sample ids), and what is left out at listing
time (formats prepare does not read, bad manifest lines) as rejected.jsonl records."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from facefact.errors import DatasetError
from facefact.faces.image_io import IMAGE_SUFFIXES
from facefact.safe_open import read_text_file
from facefact.training.dataset_format import sample_id

# Image files a folder scan finds but does not read (generate reads GIF; a training set wants photos):
# each is listed in rejected.jsonl with this reason, never skipped silently.
NOT_SCANNED_SUFFIXES = {".gif": "GIF", ".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".svg": "SVG",
                        ".jxl": "JPEG XL", ".psd": "PSD", ".raw": "RAW", ".cr2": "RAW", ".cr3": "RAW",
                        ".nef": "RAW", ".arw": "RAW", ".dng": "DNG", ".pdf": "PDF", ".eps": "EPS"}


@dataclass(frozen=True)
class PhotoJob:
    identity: str
    source: str                     # path of the photo as given (absolute)
    caption: str | None = None      # from the manifest, if any
    sid: str = field(default="")

    def with_id(self) -> "PhotoJob":
        return PhotoJob(self.identity, self.source, self.caption, sample_id(self.identity, self.source))


# ---- listing the photos -------------------------------------------------------------------------
def list_photos(source: str | Path) -> list[PhotoJob]:
    return list_photos_and_skips(source)[0]


def list_photos_and_skips(source: str | Path) -> tuple[list[PhotoJob], list[dict]]:
    """(jobs, skipped): the photos of a folder with one sub-folder per identity, or of a CSV / JSONL
    manifest (path, identity[, caption]; relative paths are relative to the manifest), and the
    rejected.jsonl records of what is left out at listing time (formats not read, bad manifest lines)."""
    source = Path(source)
    skipped: list[dict] = []
    if source.is_dir():
        jobs = []
        for person in sorted(p for p in source.iterdir() if p.is_dir()):
            for photo in sorted(person.iterdir()):
                suffix = photo.suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    jobs.append(PhotoJob(person.name, _absolute(photo)))
                elif suffix in NOT_SCANNED_SUFFIXES:
                    skipped.append(_skip_record(person.name, _absolute(photo), "unsupported_format",
                                                f"{NOT_SCANNED_SUFFIXES[suffix]} files are not read by prepare; "
                                                "convert the photo to JPEG or PNG"))
        hint = "expected one folder per person, each with that person's photos (PHOTOS/alice/1.jpg ...)"
    elif source.is_file() and source.suffix.lower() in (".csv", ".jsonl"):
        jobs = []
        for number, row in _manifest_rows(source):
            problem = _manifest_row_problem(row)
            if problem:
                skipped.append(_skip_record(None, f"{source}:{number}", "bad_manifest_row",
                                            f"manifest row {number} {problem}"))
                continue
            path = Path(str(row["path"]))
            path = path if path.is_absolute() else source.parent / path
            caption = row.get("caption")
            jobs.append(PhotoJob(str(row["identity"]), _absolute(path), caption if isinstance(caption, str) and caption
                                 else None))
        hint = "a manifest needs columns 'path' and 'identity' (and optionally 'caption')"
    elif source.exists():
        raise DatasetError(f"{source} is neither a folder nor a .csv/.jsonl manifest", path=source)
    else:
        raise DatasetError(f"photos not found: {source}", path=source)
    if not jobs:
        raise DatasetError(f"no photos found in {source}", path=source,
                           hint=hint + (f"; {len(skipped)} entries were left out, e.g. {skipped[0]['message']}"
                                        if skipped else ""))
    return [job.with_id() for job in jobs], skipped


def _absolute(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop: load_image names it
        return os.path.abspath(path)


def _skip_record(identity, source: str, reason: str, message: str) -> dict:
    return {"id": sample_id(str(identity), source), "identity": identity, "source": source, "status": "rejected",
            "reason": reason, "message": message}


_NOT_JSON = object()  # a manifest line that is not JSON


def _manifest_row_problem(row) -> str | None:
    if row is _NOT_JSON:
        return "is not valid JSON"
    if not isinstance(row, dict):
        return f"is not an object with 'path' and 'identity' (it is {type(row).__name__})"
    for key in ("path", "identity"):
        if not isinstance(row.get(key), (str, int)) or isinstance(row.get(key), bool) or not str(row.get(key)):
            return f"lacks a text '{key}'"
    if row.get("caption") is not None and not isinstance(row["caption"], str):
        return "has a caption that is not text"
    return None


def _manifest_rows(path: Path) -> list[tuple[int, object]]:
    """(line number, row) of a manifest; a JSONL line that is not JSON becomes a row the caller rejects."""
    hint = "save the manifest as UTF-8 text (CSV with a header row path,identity[,caption], or JSON lines)"
    text = read_text_file(path, DatasetError, what="manifest", max_bytes=256 * 1024 * 1024, hint=hint)
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError:
                    rows.append((number, _NOT_JSON))
        return rows
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(number, row) for number, row in enumerate(reader, 2)]
    except csv.Error as err:
        raise DatasetError(f"the manifest is not valid CSV ({err})", path=path, hint=hint) from None
