"""A single self-contained HTML report of one or more evaluation runs.

Self-contained means: CSS inline, every image a base64 JPEG thumbnail, every plot a base64 PNG -
no links to fetch, so it can be mailed or opened offline and shows the same thing in ten years.
With several runs it adds a side-by-side comparison of their per-method aggregates; image grids
are drawn for the first run.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from facefact.evaluation import plots, significance
from facefact.evaluation.results import EvalResults

THUMB_SIDE = 112
BEST_NOTE = ("<span class='best'>marked</span>: clearly best - ahead of the runner-up by more than twice the "
             "standard error of the difference; the no-face control is the yardstick and is never marked")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1352px}
.wide{max-width:100%;overflow-x:auto}th{max-width:90px;vertical-align:bottom}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.best{background:#dff3df;font-weight:bold}
.grid td{text-align:center;vertical-align:top}.grid img{display:inline-block;margin:1px}
.note{color:#555;font-size:13px}.skip{color:#a33}.plots img{margin:4px;border:1px solid #eee}
small{color:#777}
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return _esc(value)


def thumbnail_uri(path: Path | str, side: int = THUMB_SIDE) -> str | None:
    """A base64 JPEG ``data:`` URI of the image shrunk to ``side`` px, or None if it cannot be read."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side), Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str | None, title: str = "") -> str:
    if uri is None:
        return f'<span title="{_esc(title)}">[missing]</span>'
    return f'<img src="{uri}" alt="{_esc(title)}" title="{_esc(title)}">'


def _label(results: EvalResults, index: int) -> str:
    if results.run_dir is not None:
        return Path(results.run_dir).name or f"run{index + 1}"
    return f"run{index + 1}"


def _metric_columns(results_list: list[EvalResults]) -> list[str]:
    keys = []
    for res in results_list:
        for agg in res.aggregate:
            keys.extend(k for k in agg if k in res.metric_info)
    return list(dict.fromkeys(keys))


def _header(name: str) -> str:
    """A metric name that may break after its underscores (id_sim_sface): tables stay narrow."""
    return "_<wbr>".join(_esc(part) for part in name.split("_"))


def _aggregate_table(rows: list[dict], columns: list[str], info: dict, lead: list[str], sources: list) -> str:
    """Table with one row per (run,) method. `sources[i]`: (results, method) behind row i, or None for
    a control. A value is marked best only when it leads the runner-up by more than the noise
    (significance.best_index); controls are never marked."""
    best = {}
    for col in columns:
        candidates = [None if src is None else significance.samples(src[0], src[1], col) for src in sources]
        best[col] = significance.best_index(candidates, info.get(col, ("", "info"))[1])
    head = "".join(f'<th class="l">{_esc(c)}</th>' for c in lead) + "".join(
        f'<th title="{_esc(info.get(c, ("", ""))[0])}">{_header(c)}'
        f'{" &uarr;" if info.get(c, ("", ""))[1] == "higher" else " &darr;" if info.get(c, ("", ""))[1] == "lower" else ""}'
        f"</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        control = " <small>(control)</small>" if sources[i] is None else ""
        cells = "".join(f'<td class="l">{_esc(r.get(c, ""))}{control if c == "method" else ""}</td>' for c in lead)
        for c in columns:
            cls = ' class="best"' if best[c] == i else ""
            cells += f"<td{cls}>{_fmt(r.get(c))}</td>"
        body.append(f"<tr>{cells}</tr>")
    return f"<div class='wide'><table><tr>{head}</tr>{''.join(body)}</table></div>"


def _sources(res: EvalResults) -> list:
    controls = significance.control_methods(res)
    return [None if agg["method"] in controls else (res, agg["method"]) for agg in res.aggregate]


def _category_table(res: EvalResults, metric: str) -> str:
    cats = list(dict.fromkeys(r["category"] for r in res.rows))
    methods = list(dict.fromkeys(r["method"] for r in res.rows))
    head = '<th class="l">category</th>' + "".join(f"<th>{_esc(m)}</th>" for m in methods)
    body = []
    for cat in cats:
        cells = f'<td class="l">{_esc(cat)}</td>'
        for m in methods:
            vals = [r.get(metric) for r in res.rows if r["category"] == cat and r["method"] == m]
            vals = [v for v in vals if isinstance(v, (int, float)) and not math.isnan(v)]
            cells += f"<td>{_fmt(float(np.mean(vals)) if vals else math.nan)}</td>"
        body.append(f"<tr>{cells}</tr>")
    return (f"<h3>{_esc(metric)} by prompt category</h3><div class='wide'><table><tr>{head}</tr>{''.join(body)}"
            "</table></div>")


def _image_title(row: dict, embedders: list[str]) -> str:
    parts = [f"{row['method']} seed {row['seed']}", f"face: {'yes' if row.get('detected') else 'no'}"]
    for name in embedders:
        parts.append(f"id_{name} {_fmt(row.get(f'id_sim_{name}'))}")
    parts += [f"CLIP-T {_fmt(row.get('clip_t'), 1)}", f"drift out {_fmt(row.get('drift_outside_px'))}"]
    return " | ".join(p.replace("&ndash;", "-") for p in parts)


def reference_paths(res: EvalResults, ident: dict) -> list[Path]:
    """Where an identity's reference photos are: results store only names relative to the identity
    (``DIR/<person>/<name>``, or ``DIR/<name>`` in the flat layout), found again via the run's
    identities folder. Older runs stored absolute paths, which are used as they are."""
    root = Path(res.config.get("identities_dir") or ".")
    paths = []
    for name in ident.get("references", []):
        nested = root / ident["name"] / name
        paths.append(nested if nested.is_file() else root / name)
    return paths


def _references_cell(res: EvalResults, ident: dict, show: bool) -> str:
    count = len(ident.get("references", []))
    if not show:
        return (f"<p class='note'>reference: {count} photo{'s' if count != 1 else ''} "
                f"(not shown; --show-references embeds them)</p>")
    refs = "".join(_img(thumbnail_uri(p), p.name) for p in reference_paths(res, ident)[:3])
    return f"<p>reference: {refs}</p>"


def _grids(res: EvalResults, max_seeds: int, show_references: bool = False) -> str:
    """Per identity: rows = prompts, columns = one per method, cells = seed thumbnails; the reference
    photos above (only with show_references: they are the users' own photos)."""
    base = Path(res.run_dir) if res.run_dir else Path(".")
    methods = list(dict.fromkeys(r["method"] for r in res.rows))
    embedders = res.config.get("embedders", [])
    out = []
    for ident in res.identities:
        mine = [r for r in res.rows if r["identity"] == ident["name"]]
        if not mine:
            continue
        head = '<th class="l">prompt</th>' + "".join(f"<th>{_esc(m)}</th>" for m in methods)
        body = []
        for prompt_id in dict.fromkeys(r["prompt_id"] for r in mine):
            prow = [r for r in mine if r["prompt_id"] == prompt_id]
            cells = f'<td class="l"><small>{_esc(prompt_id)}</small><br>{_esc(prow[0]["prompt"])}</td>'
            for m in methods:
                shown = [r for r in prow if r["method"] == m][:max_seeds]
                cells += "<td>" + "".join(_img(thumbnail_uri(base / r["image"]), _image_title(r, embedders))
                                          for r in shown) + "</td>"
            body.append(f"<tr>{cells}</tr>")
        out.append(f"<h3>{_esc(ident['name'])}</h3>{_references_cell(res, ident, show_references)}"
                   f'<div class="wide"><table class="grid"><tr>{head}</tr>{"".join(body)}</table></div>')
    return "".join(out)


def why_no_values(metric: str, results_list: list[EvalResults]) -> str:
    """Why a metric has no finite value in any run, in the words a reader needs."""
    rows = [r for res in results_list for r in res.rows]
    if not rows:
        return "no images in the run"
    if metric == "clip_t" and not any(res.config.get("clip") for res in results_list):
        return "CLIP-T needs a CLIP model (--clip PATH); none was given"
    if metric.startswith(("id_sim_", "id_match_", "div_identity", "div_yaw", "div_roll", "div_expression")) \
            and not any(r.get("detected") for r in rows):
        return "no face was detected in any output (random tiny models draw none)"
    if metric.startswith("drift_") and not any(r.get("control") for r in rows):
        return "drift is measured against the no-face control, which this run left out (--no-control)"
    if metric.startswith("div_"):
        return "diversity needs at least two seeds (--seeds 2) with a usable value"
    return "no finite value was measured"


def _plots(results_list: list[EvalResults], labels: list[str]) -> str:
    first = results_list[0]
    primary = (first.config.get("embedders") or ["sface"])[0]
    uris, missing = [], []
    for metric in ["detection_rate", f"id_sim_{primary}", "clip_t", "drift_outside_px", "div_image_px",
                   "div_identity", "time_s"]:
        series = {label: {a["method"]: a.get(metric, math.nan) for a in res.aggregate}
                  for label, res in zip(labels, results_list)}
        uri = plots.bar_chart(metric, series)
        uris.append(uri)
        if uri is None:
            missing.append(f"{metric}: {why_no_values(metric, results_list)}")
    def points(x_key, y_key):
        pts = {}
        for label, res in zip(labels, results_list):
            for r in res.rows:
                key = r["method"] if len(results_list) == 1 else f"{label}/{r['method']}"
                pts.setdefault(key, []).append((r.get(x_key), r.get(y_key)))
        return pts
    for title, y_key in (("identity vs prompt following", "clip_t"),
                         ("identity vs change outside the face", "drift_outside_px")):
        uri = plots.scatter(title, f"id_sim_{primary}", y_key, points(f"id_sim_{primary}", y_key))
        uris.append(uri)
        if uri is None:
            missing.append(f"{title}: {why_no_values(_empty_axis(results_list, primary, y_key), results_list)}")
    if len(results_list) == 1:
        title = "identity vs prompt following, by FACT scale"
        uri = plots.trade_off_curves(title, f"id_sim_{primary}", "CLIP-T",
                                     trade_off_points(first, f"id_sim_{primary}", "clip_t"))
        uris.append(uri)
        if uri is None:
            missing.append(f"{title}: {why_no_values(_empty_axis(results_list, primary, 'clip_t'), results_list)}")
    notes = "".join(f"<p class='note'>no plot of {_esc(m)}</p>" for m in missing)
    return '<div class="plots">' + "".join(f'<img src="{u}" alt="plot">' for u in uris if u) + "</div>" + notes


def _empty_axis(results_list: list[EvalResults], primary: str, y_key: str) -> str:
    """The metric that left a scatter plot empty: identity when no run has one, else the y axis."""
    x_key = f"id_sim_{primary}"
    has_x = any(isinstance(r.get(x_key), (int, float)) and not math.isnan(r[x_key])
                for res in results_list for r in res.rows)
    return y_key if has_x else x_key


def trade_off_points(res: EvalResults, x_key: str, y_key: str) -> dict[str, list[tuple[float, float, float]]]:
    """Setting (what follows `fact:S` in a method's name: window, combine mode) -> [(scale, x, y)]
    of its methods' means; the base model is scale 0 of every setting."""
    import re

    curves: dict[str, list] = {}
    base = None
    for a in res.aggregate:
        if a["method"] == "base":
            base = (0.0, a.get(x_key), a.get(y_key))
            continue
        match = re.fullmatch(r"fact:([0-9.]+)(.*)", a["method"])
        if match:
            curves.setdefault(match.group(2) or "fact", []).append((float(match.group(1)), a.get(x_key), a.get(y_key)))
    if base is not None:
        for pts in curves.values():
            pts.append(base)
    return curves


def render_report(results_list: list[EvalResults], *, title: str = "facefact evaluation",
                  max_seeds_in_grid: int = 2, grids: bool = True, show_references: bool = False) -> str:
    """The report's HTML. show_references: also embed thumbnails of the reference photos (off by
    default: a report is made to be shared, and those are the users' own photos)."""
    labels = [_label(r, i) for i, r in enumerate(results_list)]
    first = results_list[0]
    columns = _metric_columns(results_list)
    info = {k: v for res in results_list for k, v in res.metric_info.items()}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_esc(title)}</h1>"]
    for label, res in zip(labels, results_list):
        c = res.config
        gen = c.get("generation", {})
        others = "".join(f" and {_esc(name)} = {_esc(gen_of.get('base_model', {}).get('id'))}"
                         for name, gen_of in (c.get("named_models") or {}).items())
        parts.append(f"<p class='note'><b>{_esc(label)}</b>: model {_esc(gen.get('model'))}{others}, "
                     f"{len(res.identities)} identities, {c.get('num_prompts')} prompts ({_esc(c.get('prompt_set'))}), "
                     f"seeds {_esc(c.get('seeds'))}, {gen.get('steps')} steps, size {_esc(gen.get('size') or 'default')}, "
                     f"embedders {_esc(', '.join(c.get('embedders', [])))}, CLIP {_esc(c.get('clip') or 'none')}, "
                     f"started {_esc(c.get('started'))}, {c.get('wall_s')} s</p>")
        parts += [f"<p class='note skip'>{_esc(s['reason'])}</p>" for s in res.skipped]
        parts += [f"<p class='note'>{_esc(n)}</p>" for n in res.notes]
    of_first = f" (run {_esc(labels[0])})" if len(results_list) > 1 else ""
    parts.append(f"<h2>Per method{of_first}</h2><p class='note'>{BEST_NOTE}</p>")
    # which base family (sd15 / sdxl) each method ran on, where the runs recorded it
    family = ["base_family"] if any(agg.get("base_family") for res in results_list for agg in res.aggregate) else []
    parts.append(_aggregate_table(first.aggregate, columns, info, ["method", *family], _sources(first)))
    if len(results_list) > 1:
        parts.append(f"<h2>Comparison of runs ({_esc(', '.join(labels))})</h2>")
        rows = [{"run": label, **agg} for label, res in zip(labels, results_list) for agg in res.aggregate]
        sources = [src for res in results_list for src in _sources(res)]
        parts.append(_aggregate_table(rows, columns, info, ["run", "method", *family], sources))
    parts.append("<h2>Plots</h2>" + _plots(results_list, labels))
    primary = (first.config.get("embedders") or ["sface"])[0]
    parts.append(f"<h2>By prompt category{of_first}</h2>" + _category_table(first, f"id_sim_{primary}")
                 + _category_table(first, "clip_t"))
    legend = "".join(f"<tr><td class='l'>{_esc(k)}</td><td class='l'>{_esc(v[0])}</td><td class='l'>{_esc(v[1])}</td></tr>"
                     for k, v in info.items())
    parts.append(f"<h2>Metrics</h2><div class='wide'><table><tr><th class='l'>metric</th><th class='l'>meaning</th>"
                 f"<th class='l'>better</th></tr>{legend}</table></div>")
    if grids:
        parts.append(f"<h2>Images ({_esc(labels[0])})</h2><p class='note'>hover an image for its metrics</p>"
                     + _grids(first, max_seeds_in_grid, show_references))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results_list: list[EvalResults], path: str | Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(results_list, **kwargs), encoding="utf-8")
    return path


def report_runs(run_dirs: list[str | Path], out: str | Path, **kwargs) -> Path:
    """Report (and compare) finished runs: ``facefact evaluate report RUN_DIR... --out report.html``."""
    return write_report([EvalResults.load(d) for d in run_dirs], out, **kwargs)
