"""`facefact prepare`: photos grouped by identity -> a FACT training set (format: dataset_format.py).

For every photo: load it, find exactly one face that passes the quality thresholds, then write
the target crop (1.5x the face box, square, resized), the face mask cropped identically (FAIR),
the head-masked aligned 112x112 condition (the encoder input) and the caption. Photos that fail
are listed with the reason in `rejected.jsonl`. Work is spread over processes; each sample's files
are written atomically and a finished sample is skipped on the next run, so an interrupted run is
resumed by running the same command again.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facefact.errors import ConfigError, DatasetError, FacefactError
from facefact.faces.image_io import IMAGE_SUFFIXES
from facefact.training.cache import remove_cache_files
from facefact.training.prepare_settings import PrepareSettings
from facefact.training.dataset_format import (FORMAT, FORMAT_VERSION, INDEX_NAME, INFO_NAME, REJECTED_NAME,
                                              atomic_write_bytes, atomic_write_json, atomic_write_jsonl,
                                              read_jsonl, sample_id, sample_stem)

REJECT_REASONS = {"NoFaceError": "no_face", "MultipleFacesError": "multiple_faces",
                  "FaceQualityError": "low_quality", "ImageError": "unreadable"}


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
    """A folder with one sub-folder per identity, or a CSV / JSONL manifest (path, identity[, caption];
    relative paths are relative to the manifest)."""
    source = Path(source)
    if source.is_dir():
        jobs = [PhotoJob(person.name, str(photo.resolve()))
                for person in sorted(p for p in source.iterdir() if p.is_dir())
                for photo in sorted(person.iterdir()) if photo.suffix.lower() in IMAGE_SUFFIXES]
        hint = "expected one folder per person, each with that person's photos (PHOTOS/alice/1.jpg ...)"
    elif source.is_file() and source.suffix.lower() in (".csv", ".jsonl"):
        rows = _manifest_rows(source)
        jobs = []
        for number, row in enumerate(rows, 1):
            if not row.get("path") or not row.get("identity"):
                raise DatasetError(f"manifest row {number} lacks 'path' or 'identity': {row}", path=source)
            path = Path(row["path"]) if Path(row["path"]).is_absolute() else source.parent / row["path"]
            jobs.append(PhotoJob(str(row["identity"]), str(path.resolve()), row.get("caption") or None))
        hint = "a manifest needs columns 'path' and 'identity' (and optionally 'caption')"
    elif source.exists():
        raise DatasetError(f"{source} is neither a folder nor a .csv/.jsonl manifest", path=source)
    else:
        raise DatasetError(f"photos not found: {source}", path=source)
    if not jobs:
        raise DatasetError(f"no photos found in {source}", path=source, hint=hint)
    return [job.with_id() for job in jobs]


def _manifest_rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".jsonl":
        return read_jsonl(path)
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---- one photo (runs in a worker process) -------------------------------------------------------
class PhotoTools:
    """The FaceAnalysis (with these settings' quality thresholds) and the captioner (loaded on first
    use) for one prepare_dataset call. Built per call, never cached across calls: a later call with
    other thresholds or another caption model must not reuse them."""

    def __init__(self, settings: PrepareSettings):
        from facefact.faces import FaceAnalysis, QualityThresholds

        self.settings = settings
        thresholds = QualityThresholds(min_size_px=settings.min_face_size, min_sharpness=settings.min_sharpness,
                                       max_yaw=settings.max_yaw, min_score=settings.min_score)
        self.fa = FaceAnalysis(thresholds=thresholds)
        self._captioner = None

    def caption_with_model(self, rgb: np.ndarray) -> str:
        if self._captioner is None:
            from transformers import pipeline

            try:
                self._captioner = pipeline("image-to-text", model=self.settings.caption_model, device="cpu")
            except (OSError, ValueError, KeyError) as err:
                raise ConfigError(f"cannot load the captioning model {self.settings.caption_model}: {err}",
                                  path=self.settings.caption_model,
                                  hint="pass a complete local image-to-text model folder, or drop --caption-model"
                                  ) from err
        return self._captioner(Image.fromarray(rgb))[0]["generated_text"]


_process_tools: PhotoTools | None = None  # set only inside pool workers, by _init_worker (per pool)


def _init_worker(settings: PrepareSettings) -> None:
    global _process_tools
    _process_tools = PhotoTools(settings)


def _prepare_in_worker(job: PhotoJob, out: str) -> dict:
    assert _process_tools is not None, "worker not initialised"
    return prepare_photo(job, _process_tools.settings, out, tools=_process_tools)


def caption_for(job: PhotoJob, settings: PrepareSettings, rgb: np.ndarray, tools: PhotoTools | None = None) -> str:
    """Manifest caption, else sidecar `photo.txt`, else the captioning model, else the default."""
    text = job.caption
    sidecar = Path(job.source).with_suffix(".txt")
    if not text and sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8").strip()
    if not text and settings.caption_model:
        text = (tools or PhotoTools(settings)).caption_with_model(rgb)
    text = " ".join((text or settings.default_caption).split()[: settings.max_caption_words])
    return text


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _source_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def prepare_photo(job: PhotoJob, settings: PrepareSettings, out: str, tools: PhotoTools | None = None) -> dict:
    """Process one photo and write its files; returns its record (accepted or rejected).
    tools: built from these settings (PhotoTools(settings)); pass one to reuse it across photos."""
    from facefact.faces import load_image

    out_root = Path(out)
    stem = sample_stem(out_root, job.sid)
    remove_cache_files(out_root, job.sid)  # they belong to this photo's previous files
    base = {"id": job.sid, "identity": job.identity, "source": job.source}
    try:
        base.update(_source_stamp(job.source))
        tools = tools or PhotoTools(settings)
        fa = tools.fa
        rgb = load_image(job.source, max_pixels=fa.max_pixels)
        face = fa.get_one(rgb, strict=True, path=job.source)
        masks = fa.masks(rgb, face)
        crop, crop_masks = fa.context_crop_with_masks(rgb, face, scale=settings.crop_scale, size=settings.size,
                                                      masks=masks)
        condition = fa.fact_condition(rgb, face, masks=masks)
        caption = caption_for(job, settings, rgb, tools)
    except FacefactError as err:
        if isinstance(err, ConfigError):
            raise
        reason = next((REJECT_REASONS[c.__name__] for c in type(err).__mro__ if c.__name__ in REJECT_REASONS),
                      "unusable")
        record = {**base, "status": "rejected", "reason": reason, "message": err.message}
        atomic_write_json(f"{stem}.rejected.json", record)
        return record
    except OSError as err:  # vanished / unreadable file
        record = {**base, "status": "rejected", "reason": "unreadable", "message": str(err)}
        atomic_write_json(f"{stem}.rejected.json", record)
        return record

    mask = crop_masks.face if settings.mask == "face" else crop_masks.head
    names = {"image": f"{job.sid}.image.{settings.image_format}", "condition": f"{job.sid}.cond.png",
             "mask": f"{job.sid}.mask.png"}
    atomic_write_bytes(stem.parent / names["image"], _encode(crop, settings.image_format))
    atomic_write_bytes(stem.parent / names["condition"], _encode(condition, "png"))
    atomic_write_bytes(stem.parent / names["mask"], _encode((np.clip(mask, 0, 1) * 255 + 0.5).astype(np.uint8), "png"))
    atomic_write_bytes(f"{stem}.txt", (caption + "\n").encode())
    relative = os.path.relpath(stem.parent, out_root)
    record = {**base, "status": "accepted", "caption": caption, "face": face.as_dict(), "mask_method": masks.method,
              **{key: f"{relative}/{name}" for key, name in names.items()}}
    atomic_write_json(f"{stem}.json", record)  # last: its presence means the sample is complete
    return record


def _finished_record(job: PhotoJob, out: Path) -> dict | None:
    """The record of an earlier run if that run finished this photo and the photo has not changed."""
    stem = sample_stem(out, job.sid)
    for path in (Path(f"{stem}.json"), Path(f"{stem}.rejected.json")):
        if path.is_file():
            try:
                record = json.loads(path.read_text())
                if not os.path.exists(job.source) or record.get("source_size") is None:
                    return record if record.get("reason") == "unreadable" else None
                if {k: record.get(k) for k in ("source_size", "source_mtime_ns")} == _source_stamp(job.source):
                    return record
            except (json.JSONDecodeError, OSError):
                return None  # damaged: redo it
    return None


# ---- the whole set ------------------------------------------------------------------------------
def prepare_dataset(photos: str | Path, out: str | Path, settings: PrepareSettings | None = None, *,
                    workers: int = 1, progress: bool = True, cache_latents: str | None = None,
                    cache_encoder_tokens: str | None = None) -> dict:
    """Prepare (or finish preparing) a training set; returns the summary also written to dataset.json.

    cache_latents: a base model ('tiny' or a diffusers folder) whose VAE posterior of each target crop
    is stored; cache_encoder_tokens: a face encoder ('tiny' or a TransFace checkpoint) whose tokens of
    each condition are stored (see facefact.training.cache). Both optional; training uses them."""
    settings = settings or PrepareSettings()
    settings.check()
    out = Path(out)
    jobs = list_photos(photos)
    _check_or_write_settings(out, settings)
    info_path = out / INFO_NAME
    existing_caches = json.loads(info_path.read_text()).get("caches") or {}

    records: dict[str, dict] = {}
    todo = []
    for job in jobs:
        done = _finished_record(job, out)
        if done is not None:
            records[job.sid] = done
        else:
            todo.append(job)
    skipped = len(records)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), initial=skipped, desc="prepare", unit="photo", disable=not progress)
    if workers <= 1:
        tools = PhotoTools(settings) if todo else None  # this call's settings, not an earlier call's
        for job in todo:
            records[job.sid] = prepare_photo(job, settings, str(out), tools=tools)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(settings,)) as pool:
            futures = {pool.submit(_prepare_in_worker, job, str(out)): job for job in todo}
            for future in as_completed(futures):
                records[futures[future].sid] = future.result()
                bar.update()
    bar.close()
    # The index first (usable as soon as the photos are done), then the caches, listed in
    # dataset.json only once every file of theirs is written.
    summary = _write_index(out, jobs, records, settings, processed=len(todo), skipped=skipped)
    if cache_latents or cache_encoder_tokens or existing_caches:
        from facefact.training.cache import build_caches

        accepted = [records[j.sid] for j in jobs if records[j.sid]["status"] == "accepted"]
        caches = build_caches(out, accepted, existing_caches, base_model=cache_latents,
                              encoder=cache_encoder_tokens, progress=progress)
        summary["caches"] = {kind: {k: v for k, v in entry.items() if k in ("model", "fingerprint", "computed_now")}
                             for kind, entry in caches.items()}
        info = json.loads(info_path.read_text())
        atomic_write_json(info_path, {**info, "caches": caches, "summary": summary})
    return summary


def _check_or_write_settings(out: Path, settings: PrepareSettings) -> None:
    info_path = out / INFO_NAME
    if info_path.is_file():
        earlier = json.loads(info_path.read_text()).get("settings", {})
        changed = {k: (earlier.get(k), v) for k, v in asdict(settings).items() if earlier.get(k) != v}
        if changed:
            raise ConfigError(f"{out} was prepared with other settings {changed} (earlier, now)", path=out,
                              hint="use a new --out folder, or the same settings to resume the earlier run")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(info_path, {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": asdict(settings),
                                      "complete": False})


def _write_index(out: Path, jobs: list[PhotoJob], records: dict, settings: PrepareSettings, *,
                 processed: int, skipped: int) -> dict:
    accepted = [records[j.sid] for j in jobs if records[j.sid]["status"] == "accepted"]
    rejected = [records[j.sid] for j in jobs if records[j.sid]["status"] == "rejected"]
    photos_per_identity = Counter(r["identity"] for r in accepted)
    identities = sorted({j.identity for j in jobs})
    summary = {
        "photos": len(jobs), "accepted": len(accepted), "rejected": len(rejected),
        "processed_now": processed, "skipped_already_done": skipped,
        "rejected_by_reason": dict(Counter(r["reason"] for r in rejected)),
        "identities": len(photos_per_identity),
        "identities_without_photos": [i for i in identities if i not in photos_per_identity],
        "identities_with_one_photo": sorted(i for i, n in photos_per_identity.items() if n == 1),
    }
    atomic_write_jsonl(out / INDEX_NAME, accepted)
    atomic_write_jsonl(out / REJECTED_NAME, rejected)
    atomic_write_json(out / INFO_NAME, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                        "settings": asdict(settings), "complete": True, "summary": summary})
    return summary
