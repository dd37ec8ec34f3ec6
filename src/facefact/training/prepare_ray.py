"""`facefact prepare --ray`: the photos analysed by Ray actors, the files written by this process.

Each actor builds the face stack once (`PhotoTools` from the JSON-able settings) and runs the local
run's own `analyse_photo` on one photo at a time; what comes back is the record as JSON text and
the sample's files as bytes, which `write_photo` (the local run's writer) stores atomically here.
So a cluster run writes exactly the local run's files, needs the photos at the same path on every
node (shared storage) but not the output folder, and is resumed like a local run: the photos
already finished are never sent (prepare_dataset), a row run twice after a lost worker is written
once.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np

from facefact.ray_batch import ItemActor
from facefact.training.prepare import PhotoJob, PhotoTools, analyse_photo, write_photo
from facefact.training.prepare_settings import PrepareSettings

FILE_ROLES = ("image", "condition", "mask", "caption")


class PhotoActor(ItemActor):
    """One Ray actor: the face stack built once, then one photo per call."""

    def setup(self, settings: dict) -> None:
        self.settings = PrepareSettings(**settings)
        self.tools = PhotoTools(self.settings)

    def process(self, batch: dict) -> dict:
        rows: dict[str, list] = {"record": [], **{role: [] for role in FILE_ROLES}}
        for identity, source, caption, sid in zip(batch["identity"], batch["source"], batch["caption"], batch["sid"]):
            job = PhotoJob(str(identity), str(source), str(caption) or None, str(sid))
            record, files = analyse_photo(job, self.settings, self.tools)
            rows["record"].append(json.dumps(record))
            for role in FILE_ROLES:
                rows[role].append(files.get(role, b""))
        return {key: np.array(values, dtype=object) for key, values in rows.items()}


def prepare_on_ray(todo: list[PhotoJob], settings: PrepareSettings, out: Path, *, address: str,
                   workers: int | None) -> Iterator[dict]:
    """The record of each photo of `todo`, written under `out`, as the cluster finishes it."""
    from facefact.ray_batch import default_workers, map_rows, ray_cluster, worker_resources

    if not todo:
        return
    # text only ("" for no caption: a missing value would come back from Arrow as NaN)
    items = [{"identity": j.identity, "source": j.source, "caption": j.caption or "", "sid": j.sid} for j in todo]
    with ray_cluster(address) as resources:
        per_worker = worker_resources(resources, gpus=False)  # face analysis runs on CPUs (OpenCV / ONNX)
        pool = workers or default_workers(resources, per_worker)
        written: set[str] = set()
        for row in map_rows(items, PhotoActor, {"settings": asdict(settings)}, workers=pool,
                            resources=per_worker):
            record = json.loads(row["record"])
            if record["id"] in written:  # the same photo again, after Ray re-ran a lost worker's rows
                continue
            write_photo(out, record, {role: bytes(row[role]) for role in FILE_ROLES})
            written.add(record["id"])
            yield record
