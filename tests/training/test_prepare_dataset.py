"""`facefact prepare`: what it writes, what it rejects and why, resume, manifests, parallel workers."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facefact.errors import ConfigError, DatasetError
from facefact.training.dataset_format import load_index, read_jsonl
from facefact.training.prepare import PrepareSettings, list_photos, prepare_dataset


def test_prepared_set_has_crop_mask_condition_caption(prepared):
    samples = load_index(prepared)
    assert len(samples) == 6 and {s["identity"] for s in samples} == {"astronaut", "hopper"}
    for s in samples:
        image, mask, cond = (np.asarray(Image.open(s[k])) for k in ("image", "mask", "condition"))
        assert image.shape == (128, 128, 3) and mask.shape == (128, 128) and cond.shape == (112, 112, 3)
        # the face is centred in the 1.5x crop: the mask covers the middle, not the corners
        assert mask[48:80, 48:80].mean() > 128 and mask[:10, :10].mean() < 10
        assert (cond.max(axis=-1) == 0).mean() > 0.02  # head-masked: background is black
        assert 0 < len(s["caption"].split()) <= 20
    captions = {s["source"].split("/")[-1]: s["caption"] for s in samples if s["identity"] == "astronaut"}
    assert captions["0.jpg"] == "a portrait photo of astronaut"  # sidecar .txt
    assert captions["1.jpg"] == "a photo of a person"  # default
    info = json.loads((prepared / "dataset.json").read_text())
    assert info["complete"] and info["summary"]["accepted"] == 6


def _bad_photos(folder):
    from skimage import data

    person = folder / "mixed"
    person.mkdir(parents=True)
    astronaut = data.astronaut()
    Image.fromarray(astronaut).save(person / "good.jpg")
    Image.fromarray(astronaut).save(person / "good2.png")
    Image.fromarray(data.coffee()).save(person / "no_face.jpg")
    small = Image.fromarray(astronaut).resize((96, 96))
    Image.fromarray(np.array(small)).save(person / "tiny_face.jpg")
    (person / "broken.jpg").write_bytes(b"not an image at all")
    return person


def test_rejected_photos_are_reported_with_reasons(tmp_path):
    _bad_photos(tmp_path / "photos")
    summary = prepare_dataset(tmp_path / "photos", tmp_path / "out", PrepareSettings(size=64), progress=False)
    reasons = {r["source"].split("/")[-1]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert reasons == {"no_face.jpg": "no_face", "tiny_face.jpg": "low_quality", "broken.jpg": "unreadable"}
    assert summary["accepted"] == 2 and summary["rejected_by_reason"]["no_face"] == 1
    assert all(r["message"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl"))


def test_resume_skips_finished_photos_and_redoes_missing_ones(tmp_path, photo_folder):
    out = tmp_path / "out"
    settings = PrepareSettings(size=64)
    first = prepare_dataset(photo_folder, out, settings, progress=False)
    assert first["processed_now"] == 6
    before = _index_files(out)
    # simulate a kill: one sample never got its record, and the index was never written
    victim = next(out.glob("samples/*/*.json"))
    victim.unlink()
    shutil.rmtree(out / "index")
    second = prepare_dataset(photo_folder, out, settings, progress=False)
    assert (second["processed_now"], second["skipped_already_done"]) == (1, 5)
    assert _index_files(out) == before  # idempotent
    assert not list(out.rglob("*.tmp"))
    with pytest.raises(ConfigError, match="other settings"):
        prepare_dataset(photo_folder, out, PrepareSettings(size=96), progress=False)


def _index_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "index").iterdir())}


def test_parallel_workers_give_the_same_set(tmp_path, photo_folder, prepared):
    prepare_dataset(photo_folder, tmp_path / "par", PrepareSettings(size=128), workers=2, progress=False)
    serial = [{k: s[k] for k in ("id", "identity", "caption")} for s in load_index(prepared)]
    parallel = [{k: s[k] for k in ("id", "identity", "caption")} for s in load_index(tmp_path / "par")]
    assert serial == parallel


def test_manifest_csv_and_jsonl(tmp_path, photo_folder):
    photos = sorted(photo_folder.glob("*/*.jpg"))
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,identity,caption\n" + "".join(
        f"{p.relative_to(tmp_path) if p.is_relative_to(tmp_path) else p},{p.parent.name},custom {i}\n"
        for i, p in enumerate(photos)))
    jobs = list_photos(csv_path)
    assert len(jobs) == len(photos) and jobs[0].caption == "custom 0"
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps({"path": str(p), "identity": "x"}) + "\n" for p in photos))
    assert {j.identity for j in list_photos(jsonl)} == {"x"}
    jsonl.write_text(json.dumps({"path": "a.jpg"}) + "\n")
    with pytest.raises(DatasetError, match="identity"):
        list_photos(jsonl)


def test_empty_or_missing_photos_and_missing_caption_model(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        list_photos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no photos"):
        list_photos(tmp_path / "empty")
    with pytest.raises(ConfigError, match="captioning model not found locally"):
        PrepareSettings(caption_model=str(tmp_path / "blip")).check()


def test_cli_prepare(tmp_path, photo_folder, capsys):
    from facefact.cli.main import main

    assert main(["prepare", str(photo_folder), "--out", str(tmp_path / "o"), "--size", "64", "--quiet"]) == 0
    assert '"accepted": 6' in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2


def test_later_call_uses_its_own_quality_thresholds(tmp_path, photo_folder):
    """Regression: the FaceAnalysis (with its thresholds) used to be cached in the process by the
    first call, so a second call with min_face_size=5000 still accepted every photo."""
    first = prepare_dataset(photo_folder, tmp_path / "a", PrepareSettings(size=64), progress=False)
    assert (first["accepted"], first["rejected"]) == (6, 0)
    strict = prepare_dataset(photo_folder, tmp_path / "b", PrepareSettings(size=64, min_face_size=5000),
                             progress=False)
    assert (strict["accepted"], strict["rejected"]) == (0, 6)
    assert strict["rejected_by_reason"] == {"low_quality": 6}


def test_later_call_uses_its_own_caption_model(tmp_path, photo_folder, monkeypatch):
    """Regression: the captioner was cached by the first call; another --caption-model was ignored."""
    import sys

    import transformers

    transformers.pipeline  # noqa: B018 - resolving it swaps the lazy module in sys.modules; patch the one in use
    loaded = []

    def fake_pipeline(task, model, device):
        loaded.append(model)
        return lambda image: [{"generated_text": f"caption by {Path(model).name}"}]

    monkeypatch.setattr(sys.modules["transformers"], "pipeline", fake_pipeline)
    for name in ("model_a", "model_b"):
        (tmp_path / name).mkdir()
        prepare_dataset(photo_folder, tmp_path / f"out_{name}",
                        PrepareSettings(size=64, caption_model=str(tmp_path / name)), progress=False)
        captions = {s["caption"] for s in load_index(tmp_path / f"out_{name}")}
        # photo 0 of each person has a sidecar .txt; the other photos are captioned by the model
        assert f"caption by {name}" in captions and not {c for c in captions if c.startswith("caption by")} - {
            f"caption by {name}"}
    assert loaded == [str(tmp_path / "model_a"), str(tmp_path / "model_b")]  # once per call


def test_prepare_blur_cutoff_is_stricter_than_generation_and_documented():
    """prepare's default --min-sharpness differs from FaceAnalysis' on purpose (training targets teach
    sharpness); docs/training.md says why, with both numbers, and must follow if either changes."""
    from facefact.faces import QualityThresholds

    prepare_cut, generation_cut = PrepareSettings().min_sharpness, QualityThresholds().min_sharpness
    assert prepare_cut > generation_cut
    doc = " ".join((Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text().split())
    assert f"`--min-sharpness` defaults to {prepare_cut}," in doc
    assert f"accepts {generation_cut} " in doc
