"""End to end on the real tiny FACT pipeline (random weights): every metric is computed, the
numbers mean nothing except the exact ones (adapter scale 0 is the base model)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from facefact.evaluation.clip_score import ClipScorer, tiny_clip_scorer


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    scorer = tiny_clip_scorer()
    path = tmp_path_factory.mktemp("clip")
    scorer.model.save_pretrained(path)
    scorer.tokenizer.save_pretrained(path)
    return path


def test_clip_t_code_path(tiny_clip_dir, astronaut):
    scorer = tiny_clip_scorer()
    image = Image.fromarray(astronaut)
    scores = scorer.score([image, image], ["an astronaut", "a cat"])
    assert all(math.isfinite(s) and -100 <= s <= 100 for s in scores)
    assert scores[0] != scores[1]
    assert scorer.score([image], ["an astronaut"])[0] == pytest.approx(scores[0], abs=1e-4)   # deterministic
    loaded = ClipScorer.load(tiny_clip_dir)
    assert loaded.score([image], ["an astronaut"])[0] == pytest.approx(scores[0], abs=1e-3)


def test_missing_clip_is_a_clear_error(tmp_path):
    from facefact.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError) as err:
        ClipScorer.load(tmp_path / "no-clip-here")
    assert "CLIPModel" in err.value.hint and err.value.setting == "clip"  # the CLI names its flag (--clip)


def test_cli_end_to_end_with_tiny_facefact_pipeline(tmp_path, one_identity, tiny_clip_dir, capsys):
    from facefact.cli.main import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of {subject} in a forest\n")
    out = tmp_path / "run"
    args = ["evaluate", "--identities", str(one_identity), "--prompts", str(prompts), "--seeds", "2",
            "--method", "fact:0", "--method", "fact:0.8", "--model", "tiny", "--steps", "2", "--size", "64",
            "--clip", str(tiny_clip_dir), "--out", str(out), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    assert "added 'base'" in capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    agg = {a["method"]: a for a in data["aggregate"]}
    assert set(agg) == {"fact:0", "fact:0.8", "base"}
    for row in data["images"]:
        assert Image.open(out / row["image"]).size == (64, 64)
        assert row["clip_t"] is not None and row["time_s"] > 0 and row["peak_mb"] > 0
        if row["method"] != "base":
            assert row["drift_mask"] and row["drift_outside_px"] is not None
    assert agg["fact:0"]["drift_outside_px"] == 0 and agg["fact:0"]["drift_inside_px"] == 0   # scale 0 == base
    assert agg["fact:0.8"]["drift_outside_px"] > 0                                            # random adapter acts
    assert agg["fact:0.8"]["div_image_px"] > 0                                                # seeds differ
    assert data["config"]["generation"]["model"] == "tiny" and data["config"]["seeds"] == [0, 1]

    pixels = {r["image"]: np.asarray(Image.open(out / r["image"])) for r in data["images"]}
    # Re-running regenerates nothing and reproduces the numbers (deterministic, resumable).
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(r["cached"] for r in again["images"])
    assert [r["drift_outside_px"] for r in again["images"]] == [r["drift_outside_px"] for r in data["images"]]
    # Deterministic generation: a fresh run folder gives the same pixels.
    fresh = tmp_path / "fresh"
    assert main(["evaluate", "--identities", str(one_identity), "--prompts", str(prompts), "--seeds", "1",
                 "--method", "fact:0.8", "--no-control", "--model", "tiny", "--steps", "2", "--size", "64",
                 "--out", str(fresh), "--no-progress"]) == 0
    (row,) = json.loads((fresh / "results.json").read_text())["images"]
    np.testing.assert_array_equal(np.asarray(Image.open(fresh / row["image"])), pixels[row["image"]])


def test_reference_photos_are_analysed_once_per_run(one_identity, monkeypatch):
    from facefact.evaluation.methods import FactMethod, MethodContext, RunSettings

    context = MethodContext(RunSettings(model="tiny", generation={"steps": 1, "size": 64}))
    context.fact_pipeline()
    import facefact.pipelines.face_tokens as face_tokens

    calls = []
    original = face_tokens.analyse_photos
    monkeypatch.setattr(face_tokens, "analyse_photos",
                        lambda analysis, photos, notes=None: calls.append(list(photos)) or original(analysis, photos, notes))
    references = sorted(p for p in one_identity.rglob("*") if p.is_file() and p.suffix != ".txt")
    images = [FactMethod(context, scale).generate("a portrait", references, seed, 64)
              for scale in (0.5, 1.0) for seed in (0, 1)]
    assert len(calls) == 1 and len(images) == 4  # 2 scales x 2 seeds, one face analysis


def test_what_face_analysis_said_about_the_references_reaches_the_run_notes(tmp_path, astronaut, grace_hopper):
    """A reference photo with two people: the largest face is used and the run's notes say so, once."""
    from facefact.cli.main import main

    height = astronaut.shape[0]
    hopper = np.asarray(Image.fromarray(grace_hopper).resize(
        (grace_hopper.shape[1] * height // grace_hopper.shape[0] // 2, height // 2)))
    group = np.zeros((height, astronaut.shape[1] + hopper.shape[1], 3), np.uint8)
    group[:, :astronaut.shape[1]] = astronaut
    group[:hopper.shape[0], astronaut.shape[1]:] = hopper  # a smaller second face beside the astronaut
    (tmp_path / "ids" / "pair").mkdir(parents=True)
    Image.fromarray(group).save(tmp_path / "ids" / "pair" / "group.png")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a portrait of {subject}\na sketch of {subject}\n")
    out = tmp_path / "run"
    assert main(["evaluate", "--identities", str(tmp_path / "ids"), "--prompts", str(prompts), "--seeds", "1",
                 "--method", "fact:0.5", "--no-control", "--model", "tiny", "--steps", "1", "--size", "64",
                 "--out", str(out), "--no-progress"]) == 0
    notes = json.loads((out / "results.json").read_text())["notes"]
    about_faces = [n for n in notes if "group.png" in n]
    assert len(about_faces) == 1, notes  # two prompts, one analysis, one note
    assert "2 faces found; using the largest" in about_faces[0]
