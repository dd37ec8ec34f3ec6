"""Evaluation results: per-image rows, per-group diversity, per-method aggregates; JSON and CSV on disk.

JSON holds everything a report needs (so ``facefact evaluate report RUN_DIR`` works on old runs);
NaN ("could not be measured", e.g. identity similarity of an image without a face) is written as
null in JSON and as an empty cell in CSV.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefact.errors import DatasetError

RESULTS_JSON, IMAGES_CSV, AGGREGATE_CSV = "results.json", "results.csv", "aggregate.csv"

# Metrics averaged per method, with what "better" means (for the report's tables and plots).
METRIC_INFO = {
    "detection_rate": ("face detection rate of outputs", "higher"),
    "clip_t": ("CLIP-T: 100 x cosine(image, prompt)", "higher"),
    "drift_outside_px": ("change outside the face vs the no-face control (pixels, 0-1)", "lower"),
    "drift_outside_lowres": ("change outside the face vs the control (32x32 layout/colour, 0-1)", "lower"),
    "drift_inside_px": ("change inside the face vs the control (pixels, 0-1)", "info"),
    "div_identity": ("identity spread across seeds (mean pairwise 1 - cosine)", "info"),
    "div_yaw": ("yaw spread across seeds (degrees)", "higher"),
    "div_roll": ("roll spread across seeds (degrees)", "info"),
    "div_expression": ("mouth-open spread across seeds", "higher"),
    "div_image_px": ("image spread across seeds (64x64 pixels, 0-1)", "higher"),
    "div_image_lowres": ("image spread across seeds (32x32, 0-1)", "higher"),
    "time_s": ("seconds per image", "lower"),
    "peak_mb": ("peak memory per image (MiB; see mem_kind)", "lower"),
}


def identity_metrics(names) -> dict:
    out = {}
    for name in names:
        out[f"id_sim_{name}"] = (f"identity similarity to the references ({name} cosine, detected faces)", "higher")
        out[f"id_match_{name}"] = (f"fraction of detected faces above {name}'s same-person threshold", "higher")
    return out


def _nanmean(values) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else math.nan


def aggregate(rows: list[dict], groups: list[dict], embedders: list[str], thresholds: dict) -> list[dict]:
    """One row per method: means over its images (and groups, for diversity)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        mine_groups = [g for g in groups if g["method"] == method]
        agg = {"method": method, "images": len(mine), "generated_now": sum(not r["cached"] for r in mine),
               "detection_rate": _nanmean([float(r["detected"]) for r in mine])}
        for name in embedders:
            sims = [r.get(f"id_sim_{name}") for r in mine if r["detected"]]
            agg[f"id_sim_{name}"] = _nanmean(sims)
            finite = [s for s in sims if s is not None and not math.isnan(s)]
            agg[f"id_match_{name}"] = (float(np.mean([s >= thresholds[name] for s in finite]))
                                       if finite else math.nan)
        for key in ("clip_t", "drift_outside_px", "drift_outside_lowres", "drift_inside_px", "time_s", "peak_mb"):
            agg[key] = _nanmean([r.get(key) for r in mine])
        for key in ("div_identity", "div_yaw", "div_roll", "div_expression", "div_image_px", "div_image_lowres"):
            agg[key] = _nanmean([g.get(key) for g in mine_groups])
        agg["mem_kind"] = ",".join(sorted({r["mem_kind"] for r in mine if r.get("mem_kind")}))
        table.append(agg)
    return table


@dataclass
class EvalResults:
    """Everything one run measured. ``rows``: one dict per image; ``groups``: per identity x prompt x
    method (diversity); ``aggregate``: per method."""

    config: dict
    rows: list[dict]
    groups: list[dict]
    aggregate: list[dict]
    identities: list[dict] = field(default_factory=list)     # name + reference paths (no embeddings)
    skipped: list[dict] = field(default_factory=list)        # methods that could not run, with the reason
    notes: list[str] = field(default_factory=list)
    metric_info: dict = field(default_factory=dict)
    run_dir: Path | None = None

    def by_method(self) -> dict[str, dict]:
        return {a["method"]: a for a in self.aggregate}

    def to_dict(self) -> dict:
        return {"format": "facefact-eval/1", "config": self.config, "identities": self.identities,
                "skipped": self.skipped, "notes": self.notes,
                "metric_info": {k: list(v) for k, v in self.metric_info.items()},
                "aggregate": self.aggregate, "groups": self.groups, "images": self.rows}

    def save(self, run_dir: str | Path) -> Path:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RESULTS_JSON).write_text(json.dumps(_json_safe(self.to_dict()), indent=1))
        _write_csv(run_dir / IMAGES_CSV, self.rows)
        _write_csv(run_dir / AGGREGATE_CSV, self.aggregate)
        self.run_dir = run_dir
        return run_dir / RESULTS_JSON

    @classmethod
    def load(cls, run_dir: str | Path) -> "EvalResults":
        run_dir = Path(run_dir)
        path = run_dir / RESULTS_JSON if run_dir.is_dir() else run_dir
        if not path.is_file():
            raise DatasetError("no evaluation results here", path=path,
                               hint="pass a folder written by 'facefact evaluate --out DIR'")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(f"results file is not valid JSON ({err})", path=path,
                               hint="re-run the evaluation; finished images are reused") from err
        nan = lambda rows: [{k: (math.nan if v is None else v) for k, v in r.items()} for r in rows]  # noqa: E731
        return cls(config=data.get("config", {}), rows=nan(data.get("images", [])), groups=nan(data.get("groups", [])),
                   aggregate=nan(data.get("aggregate", [])), identities=data.get("identities", []),
                   skipped=data.get("skipped", []), notes=data.get("notes", []),
                   metric_info={k: tuple(v) for k, v in data.get("metric_info", {}).items()},
                   run_dir=path.parent)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                             for k, v in _json_safe(row).items()})
