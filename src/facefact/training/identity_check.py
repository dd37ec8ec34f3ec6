"""Does each identity of a prepared set look like one person? `facefact prepare` asks at the end.

For every identity with two or more accepted photos, each sample's target crop is embedded with
the face stack's identity model (SFace by default), in memory only - the embeddings are never
written. Reported in the summary (dataset.json) and by the CLI:
- an **outlier**: the photo least like the others of its identity, when its mean similarity is below
  the embedder's same-person threshold (two photos: the pair, when below it) - a mislabelled person;
- **near-duplicates**: two photos of one identity with similarity >= 0.95 - the same picture twice,
  which makes face shuffle (another photo of the same person as the condition) a copy task.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

NEAR_DUPLICATE = 0.95


def check_identities(out: Path, accepted: list[dict], analysis=None) -> list[dict]:
    from facefact.faces import FaceAnalysis, load_image

    by_identity = defaultdict(list)
    for record in accepted:
        by_identity[record["identity"]].append(record)
    groups = {name: records for name, records in by_identity.items() if len(records) >= 2}
    if not groups:
        return []
    analysis = analysis or FaceAnalysis()
    threshold, name = analysis.embedder.threshold, analysis.embedder.name
    findings = []
    for identity, records in sorted(groups.items()):
        embeddings = []
        for record in records:
            rgb = load_image(Path(out) / record["image"])
            embeddings.append(analysis.embed(rgb, analysis.get_one(rgb, check=False, path=record["source"])))
        findings += _findings(identity, [r["source"] for r in records], np.stack(embeddings), threshold, name)
    return findings


def _findings(identity: str, sources: list[str], embeddings: np.ndarray, threshold: float, embedder: str):
    similarity = embeddings @ embeddings.T
    n = len(sources)
    out = []
    for i in range(n):
        for j in range(i + 1, n):
            if similarity[i, j] >= NEAR_DUPLICATE:
                out.append({"identity": identity, "kind": "near_duplicate", "photos": [sources[i], sources[j]],
                            "similarity": round(float(similarity[i, j]), 3)})
    mean_to_others = (similarity.sum(1) - np.diag(similarity)) / (n - 1)
    odd = int(np.argmin(mean_to_others))
    if mean_to_others[odd] < threshold:
        photos = sources if n == 2 else [sources[odd]]
        out.append({"identity": identity, "kind": "outlier", "photos": photos,
                    "similarity": round(float(mean_to_others[odd]), 3),
                    "message": (f"the photos of '{identity}' may show different people" if n == 2 else
                                f"a photo of '{identity}' may show someone else")
                               + f" ({embedder} similarity {mean_to_others[odd]:.2f} < {threshold:.2f})"})
    return out
