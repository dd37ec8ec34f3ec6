"""evaluate sweeps FACT's identity knobs: scale, timestep window, combine mode - each a method, each
a point of the report's identity-vs-prompt-following trade-off curves."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from facefact.errors import ConfigError
from facefact.evaluation.methods import MethodContext, RunSettings, parse_method
from facefact.evaluation.report import trade_off_points


def test_method_names_carry_window_and_combine_mode():
    context = MethodContext(RunSettings(model="tiny"))
    method = parse_method("fact:0.3@0.2-1~weighted", context)
    assert (method.scale, method.window, method.combine, method.name) == (0.3, (0.2, 1.0), "weighted",
                                                                          "fact:0.3@0.2-1~weighted")
    assert method.settings()["window"] == [0.2, 1.0] and method.settings()["combine"] == "weighted"
    for bad, match in (("fact:0.5@0.8-0.2", "window"), ("fact:0.5~median", "combine"), ("fact:0.5@x", "window")):
        with pytest.raises(ConfigError, match=match):
            parse_method(bad, context)


def test_trade_off_points_group_settings_and_start_at_the_base_model():
    class Results:
        aggregate = [{"method": "base", "id": 0.1, "clip": 0.3}, {"method": "fact:0.5", "id": 0.4, "clip": 0.25},
                     {"method": "fact:1", "id": 0.6, "clip": 0.2}, {"method": "fact:0.5@0.3-1", "id": 0.3, "clip": 0.28}]
    curves = trade_off_points(Results, "id", "clip")
    assert sorted(curves["fact"]) == [(0.0, 0.1, 0.3), (0.5, 0.4, 0.25), (1.0, 0.6, 0.2)]
    assert sorted(curves["@0.3-1"]) == [(0.0, 0.1, 0.3), (0.5, 0.3, 0.28)]
    from facefact.evaluation import plots

    assert plots.trade_off_curves("t", "x", "y", curves).startswith("data:image/png;base64,")
    assert plots.trade_off_curves("t", "x", "y", {"fact": [(0.5, 0.4, float("nan"))]}) is None  # nothing to draw


def test_a_sweep_runs_end_to_end_and_the_report_plots_it(tmp_path, astronaut):
    from facefact.cli.main import main

    people = tmp_path / "people" / "astronaut"
    people.mkdir(parents=True)
    Image.fromarray(astronaut).save(people / "ref.jpg", quality=95)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of {subject}\n")
    out = tmp_path / "run"
    methods = ["fact:0.5", "fact:1", "fact:1@1-1", "fact:1~weighted"]
    args = ["evaluate", "--identities", str(tmp_path / "people"), "--prompts", str(prompts), "--seeds", "1",
            "--model", "tiny", "--steps", "2", "--size", "64", "--out", str(out), "--no-progress"]
    for m in methods:
        args += ["--method", m]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    agg = {a["method"]: a for a in data["aggregate"]}
    assert set(agg) == set(methods) | {"base"}
    # a window that starts at the end is the base model: no change anywhere
    assert agg["fact:1@1-1"]["drift_outside_px"] == 0 and agg["fact:1@1-1"]["drift_inside_px"] == 0
    assert agg["fact:1"]["drift_outside_px"] > 0
    # one reference photo: weighted mean == that photo, so the same pixels as fact:1
    rows = {r["method"]: r["image"] for r in data["images"]}
    assert (Image.open(out / rows["fact:1~weighted"]).tobytes() == Image.open(out / rows["fact:1"]).tobytes())
    assert (out / "report.html").exists()
