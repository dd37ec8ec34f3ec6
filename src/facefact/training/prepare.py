"""`facefact prepare`: photos grouped by identity -> a FACT training set (format: dataset_format.py).

For every photo: load it, find exactly one face that passes the quality thresholds, then write
the target crop (1.5x the face box, square, resized), the face mask cropped identically (FAIR),
the head-masked aligned 112x112 condition (the encoder input) and the caption. Photos that fail
are listed with the reason in `rejected.jsonl`. Work is spread over processes, or over a Ray cluster
(prepare_ray.py; both run `analyse_photo` and `write_photo`); each sample's files are written
atomically and a finished sample is skipped on the next run, so an interrupted run is resumed by
running the same command again. The photos are listed by photo_list.py.
"""
from __future__ import annotations

import io
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from facefact.errors import ConfigError, DatasetError, FacefactError
from facefact.safe_open import read_text_file
from facefact.training.cache import remove_cache_files
from facefact.training.micro_conditioning import crop_fields
from facefact.training.prepare_settings import PrepareSettings
from facefact.training.dataset_format import (FORMAT, FORMAT_VERSION, INFO_NAME, REJECTED_NAME,
                                              atomic_write_bytes, atomic_write_json, atomic_write_jsonl,
                                              read_info, sample_stem)
from facefact.training.sample_index import write_sample_index
from facefact.training.photo_list import (NOT_SCANNED_SUFFIXES, PhotoJob, list_photos,  # noqa: F401 (public names)
                                          list_photos_and_skips)

REJECT_REASONS = {"NoFaceError": "no_face", "MultipleFacesError": "multiple_faces",
                  "FaceQualityError": "low_quality", "ImageError": "unreadable", "CaptionError": "bad_caption_file"}


class CaptionError(DatasetError):
    """A sidecar caption file that cannot be read as text."""


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
                                  hint="give a complete local image-to-text model folder, or no captioning model",
                                  setting="caption_model") from err
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
    if not text and sidecar.exists():
        text = read_text_file(sidecar, CaptionError, what="caption file", max_bytes=64 * 1024,
                              hint="save the caption as UTF-8 text, or delete the file").strip()
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
    tools: built from these settings (PhotoTools(settings)); pass one to reuse it across photos.
    The local run calls this; `--ray` runs `analyse_photo` on the cluster and `write_photo` here."""
    record, files = analyse_photo(job, settings, tools)
    write_photo(out, record, files)
    return record


def analyse_photo(job: PhotoJob, settings: PrepareSettings,
                  tools: PhotoTools | None = None) -> tuple[dict, dict[str, bytes]]:
    """(record, files) of one photo, nothing written: the files' bytes by role (image, condition,
    mask, caption) for an accepted photo, none for a rejected one."""
    from facefact.faces import load_image

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
        return {**base, "status": "rejected", "reason": reason, "message": err.message}, {}
    except OSError as err:  # vanished / unreadable file
        return {**base, "status": "rejected", "reason": "unreadable", "message": str(err)}, {}
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - one odd photo must not abort a run of thousands
        return {**base, "status": "rejected", "reason": "unusable",
                "message": f"the photo could not be processed ({type(err).__name__}: {err})"}, {}

    mask = crop_masks.face if settings.mask == "face" else crop_masks.head
    folder = sample_stem(Path("."), job.sid).parent.as_posix()  # samples/ab, relative to the set
    files = {"image": _encode(crop, settings.image_format), "condition": _encode(condition, "png"),
             "mask": _encode((np.clip(mask, 0, 1) * 255 + 0.5).astype(np.uint8), "png"),
             "caption": (caption + "\n").encode()}
    names = {"image": f"{job.sid}.image.{settings.image_format}", "condition": f"{job.sid}.cond.png",
             "mask": f"{job.sid}.mask.png"}
    record = {**base, "status": "accepted", "caption": caption, "face": face.as_dict(), "mask_method": masks.method,
              **{key: f"{folder}/{name}" for key, name in names.items()},
              # SDXL's size/crop micro-conditioning of this crop (training/micro_conditioning.py)
              **crop_fields(rgb.shape[0], rgb.shape[1], face.bbox, settings.crop_scale, settings.size)}
    return record, files


def write_photo(out: str | Path, record: dict, files: dict[str, bytes]) -> None:
    """Write one photo's files atomically, its record last (its presence marks a finished sample)."""
    out_root = Path(out)
    stem = sample_stem(out_root, record["id"])
    remove_cache_files(out_root, record["id"])  # they belong to this photo's previous files
    if record["status"] != "accepted":
        atomic_write_json(f"{stem}.rejected.json", record)
        return
    for role in ("image", "condition", "mask"):
        atomic_write_bytes(out_root / record[role], files[role])
    atomic_write_bytes(f"{stem}.txt", files["caption"])
    atomic_write_json(f"{stem}.json", record)


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
            except (ValueError, OSError, AttributeError):  # damaged (not JSON, not UTF-8, not an object): redo it
                return None
    return None


# ---- the whole set ------------------------------------------------------------------------------
def prepare_dataset(photos: str | Path, out: str | Path, settings: PrepareSettings | None = None, *,
                    workers: int | None = None, progress: bool = True, cache_latents: str | None = None,
                    cache_encoder_tokens: str | None = None, check_people: bool = True,
                    ray: str | None = None) -> dict:
    """Prepare (or finish preparing) a training set; returns the summary also written to dataset.json.

    cache_latents: a base model ('tiny' or a diffusers folder) whose VAE posterior of each target crop
    is stored; cache_encoder_tokens: a face encoder ('tiny' or a TransFace checkpoint) whose tokens of
    each condition are stored (see facefact.training.cache). Both optional; training uses them.
    check_people: report identities whose photos do not look like one person, and near-duplicates
    (facefact.training.identity_check; embeddings stay in memory).
    workers: processes analysing photos (default 1); with `ray` (a cluster address, or 'auto' for a
    private instance on this machine) the photos are analysed by that many Ray actors (default: one
    per CPU of the cluster) and written here: the same files as a local run (prepare_ray.py)."""
    settings = settings or PrepareSettings()
    settings.check()
    out = Path(out)
    jobs, listing_skips = list_photos_and_skips(photos)
    _check_or_write_settings(out, settings)
    info_path = out / INFO_NAME
    existing_caches = _read_info(out).get("caches") or {}

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
    for record in _run_photos(todo, settings, out, workers=workers, ray=ray):
        records[record["id"]] = record
        bar.update()
    bar.close()
    # The index first (usable as soon as the photos are done), then the caches, listed in
    # dataset.json only once every file of theirs is written.
    from facefact.training.identity_check import check_identities

    accepted = [records[j.sid] for j in jobs if records[j.sid]["status"] == "accepted"]
    checks = check_identities(out, accepted) if check_people else []
    summary = _write_index(out, jobs, records, settings, processed=len(todo), skipped=skipped,
                           listing_skips=listing_skips, identity_checks=checks)
    if cache_latents or cache_encoder_tokens or existing_caches:
        from facefact.training.cache import build_caches

        accepted = [records[j.sid] for j in jobs if records[j.sid]["status"] == "accepted"]
        caches = build_caches(out, accepted, existing_caches, base_model=cache_latents,
                              encoder=cache_encoder_tokens, progress=progress)
        summary["caches"] = {kind: {k: v for k, v in entry.items() if k in ("model", "fingerprint", "computed_now")}
                             for kind, entry in caches.items()}
        info = _read_info(out)
        atomic_write_json(info_path, {**info, "caches": caches, "summary": summary})
    return summary


def _run_photos(todo: list[PhotoJob], settings: PrepareSettings, out: Path, *, workers: int | None,
                ray: str | None):
    """The record of each photo of `todo` once its files are written, in the order they finish."""
    if ray is not None:
        from facefact.training.prepare_ray import prepare_on_ray

        yield from prepare_on_ray(todo, settings, out, address=ray, workers=workers)
    elif (workers or 1) <= 1:
        tools = PhotoTools(settings) if todo else None  # this call's settings, not an earlier call's
        for job in todo:
            yield prepare_photo(job, settings, str(out), tools=tools)
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(settings,)) as pool:
            futures = [pool.submit(_prepare_in_worker, job, str(out)) for job in todo]
            for future in as_completed(futures):
                yield future.result()


def _read_info(out: Path) -> dict:
    return read_info(out, hint="the folder holds a damaged or foreign dataset.json; use a new output folder")


def _check_or_write_settings(out: Path, settings: PrepareSettings) -> None:
    info_path = out / INFO_NAME
    if info_path.exists():
        earlier = _read_info(out).get("settings", {})
        changed = {k: (earlier.get(k), v) for k, v in asdict(settings).items() if earlier.get(k) != v}
        if changed:
            raise ConfigError(f"{out} was prepared with other settings {changed} (earlier, now)", path=out,
                              hint="use a new output folder, or the same settings to resume the earlier run",
                              setting="out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(info_path, {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": asdict(settings),
                                      "complete": False})


def _write_index(out: Path, jobs: list[PhotoJob], records: dict, settings: PrepareSettings, *,
                 processed: int, skipped: int, listing_skips: list[dict] = (), identity_checks=()) -> dict:
    accepted = [records[j.sid] for j in jobs if records[j.sid]["status"] == "accepted"]
    rejected = [records[j.sid] for j in jobs if records[j.sid]["status"] == "rejected"] + list(listing_skips)
    photos_per_identity = Counter(r["identity"] for r in accepted)
    identities = sorted({j.identity for j in jobs})
    summary = {
        "photos": len(jobs) + len(listing_skips), "accepted": len(accepted), "rejected": len(rejected),
        "processed_now": processed, "skipped_already_done": skipped,
        "rejected_by_reason": dict(Counter(r["reason"] for r in rejected)),
        "identities": len(photos_per_identity),
        "identities_without_photos": [i for i in identities if i not in photos_per_identity],
        "identities_with_one_photo": sorted(i for i, n in photos_per_identity.items() if n == 1),
        "identity_checks": list(identity_checks),
    }
    write_sample_index(out, accepted)  # shards + manifest (sample_index.py)
    atomic_write_jsonl(out / REJECTED_NAME, rejected)
    atomic_write_json(out / INFO_NAME, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                        "settings": asdict(settings), "complete": True, "summary": summary})
    return summary
