"""The report marks "best" only for a lead larger than the noise and never for the control, says why
a plot is missing, labels which run each table shows, and keeps its tables inside a 1400 px window."""
from __future__ import annotations

import re

import numpy as np

from facefact.evaluation.report import render_report
from facefact.evaluation.results import METRIC_INFO, EvalResults, aggregate, identity_metrics
from facefact.evaluation.significance import best_index, control_methods


def test_best_needs_a_lead_beyond_the_noise():
    rng = np.random.default_rng(0)
    clear = [list(0.5 + 0.01 * rng.standard_normal(20)), list(0.3 + 0.01 * rng.standard_normal(20))]
    assert best_index(clear, "higher") == 0 and best_index(clear, "lower") == 1
    noisy = [list(0.5 + 0.3 * rng.standard_normal(6)), list(0.45 + 0.3 * rng.standard_normal(6))]
    assert best_index(noisy, "higher") is None
    assert best_index([clear[0], None], "higher") is None        # one contender: nothing to beat
    assert best_index([None, clear[1], clear[0]], "higher") == 2  # the control (None) is not a contender
    assert best_index(clear, "info") is None


def _run(name: str, sims: dict[str, float], spread: float, clip: str | None = None) -> EvalResults:
    rng = np.random.default_rng(1)
    rows = []
    for method, sim in sims.items():
        for seed in range(12):
            rows.append({"identity": "p", "prompt_id": f"q{seed % 3}", "category": "c", "prompt": "a photo",
                         "seed": seed, "method": method, "image": "x.png", "time_s": 1.0, "peak_mb": 1.0,
                         "mem_kind": "cpu", "cached": False, "detected": True, "id_sim_sface":
                         sim + spread * rng.standard_normal(), "control": "" if method == "base" else "base",
                         "drift_outside_px": 0.0 if method == "base" else 0.05, "clip_t": float("nan")})
    config = {"embedders": ["sface"], "thresholds": {"sface": 0.36}, "clip": clip, "seeds": list(range(12)),
              "method_settings": {m: {"use_face": m != "base"} for m in sims}, "generation": {"model": "tiny"}}
    res = EvalResults(config=config, rows=rows, groups=[], metric_info={**METRIC_INFO, **identity_metrics(["sface"])},
                      aggregate=aggregate(rows, [], ["sface"], {"sface": 0.36}))
    res.run_dir = None
    return res


def _row(html: str, method: str, nth: int = 0) -> str:
    return re.findall(rf"<tr><td class=\"l\">{re.escape(method)}(?:(?!</tr>).)*</tr>", html, re.S)[nth]


def test_report_marks_a_clear_winner_not_the_control_and_not_noise():
    res = _run("a", {"fact:0.5": 0.40, "fact:1.0": 0.60, "base": 0.95}, spread=0.01)
    assert control_methods(res) == {"base"}
    html = render_report([res], grids=False)
    assert 'class="best"' in _row(html, "fact:1.0")  # clearly ahead of fact:0.5 on identity
    assert 'class="best"' not in _row(html, "base")  # the control is never "best", even with a higher value
    assert "(control)" in _row(html, "base")
    noisy = render_report([_run("b", {"fact:0.5": 0.50, "fact:1.0": 0.51, "base": 0.2}, spread=0.2)], grids=False)
    assert 'class="best"' not in _row(noisy, "fact:1.0") + _row(noisy, "fact:0.5")


def test_empty_plots_say_why_and_tables_fit_the_window():
    html = render_report([_run("a", {"fact:0.5": 0.4, "base": 0.9}, spread=0.01)], grids=False)
    assert "no plot of clip_t: CLIP-T needs a CLIP model (--clip PATH)" in html
    body_width = int(re.search(r"body\{[^}]*max-width:(\d+)px", html).group(1))
    assert body_width + 2 * 24 <= 1400  # the page, margins included, fits a 1400 px window
    assert html.count("<table") == html.count("<div class='wide'><table") + html.count('<div class="wide"><table')
    assert "id_<wbr>sim_<wbr>sface" in html  # long metric names may break, so columns stay narrow


def test_a_comparison_names_the_run_of_every_table():
    a, b = _run("a", {"fact:0.5": 0.4, "base": 0.9}, 0.01), _run("b", {"fact:0.5": 0.5, "base": 0.9}, 0.01)
    a.run_dir, b.run_dir = "runs/first", "runs/second"
    html = render_report([a, b], grids=False)
    headings = re.findall(r"<h2>([^<]*)", html)
    assert "Per method (run first)" in headings and "Comparison of runs (first, second)" in headings
    assert "By prompt category (run first)" in headings
    single = re.findall(r"<h2>([^<]*)", render_report([a], grids=False))
    assert "Per method" in single  # one run: nothing to tell apart
