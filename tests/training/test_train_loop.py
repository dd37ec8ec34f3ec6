"""The closed loop a new user runs, offline on the tiny models: prepare -> train a few steps ->
generate with the trained adapter -> evaluate it. The trained adapter must change the pixels and
be what the PNG metadata and results.json name (by hash)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from facefact.cli.main import main
from facefact.pipelines.hashing import file_sha256
from facefact.pipelines.metadata import read_png_metadata


def test_prepare_train_generate_evaluate(tmp_path, photo_folder):
    data, run = tmp_path / "set", tmp_path / "run"
    assert main(["prepare", str(photo_folder), "--out", str(data), "--size", "128", "--workers", "1",
                 "--no-progress"]) == 0
    assert main(["train", "--data", str(data), "--model", "tiny", "--output-dir", str(run), "--max-steps", "3",
                 "--resolution", "64", "--learning-rate", "0.02", "--face-drop-prob", "0", "--checkpoint-every",
                 "1000", "--no-progress"]) == 0
    adapter = run / "adapter.safetensors"
    digest = file_sha256(adapter)[:16]
    photo = str(next(photo_folder.rglob("*.jpg")))

    def generate(out, *extra):
        assert main(["generate", "--model", "tiny", "--adapter", str(adapter), "--face", photo, "--prompt",
                     "a portrait", "--steps", "2", "--size", "64", "--seed", "3", "--quiet", "--out", str(out),
                     *extra]) == 0
        (path,) = out.glob("*.png")
        return np.asarray(Image.open(path)).astype(int), read_png_metadata(path)

    trained, meta = generate(tmp_path / "trained", "--scale", "1")
    base, _ = generate(tmp_path / "base", "--scale", "0")
    assert np.abs(trained - base).max() > 0  # the trained adapter acts
    assert meta["models"]["adapter"] == {"id": "adapter.safetensors", "sha256": digest}
    assert meta["models"]["base_model"]["id"] == "facefact-tiny/base_model"

    people = tmp_path / "people" / "one"
    people.mkdir(parents=True)
    Image.open(photo).save(people / "ref.jpg")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of {subject}\n")
    out = tmp_path / "eval"
    assert main(["evaluate", "--identities", str(tmp_path / "people"), "--prompts", str(prompts), "--model", "tiny",
                 "--adapter", str(adapter), "--method", "fact:1", "--seeds", "1", "--steps", "2", "--size", "64",
                 "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["models"]["adapter"]["sha256"] == digest
    fact = next(a for a in results["aggregate"] if a["method"] == "fact:1")
    assert fact["drift_outside_px"] > 0  # the trained adapter acts (it is not the base model)
    builtin = tmp_path / "eval-builtin"
    assert main(["evaluate", "--identities", str(tmp_path / "people"), "--prompts", str(prompts), "--model", "tiny",
                 "--method", "fact:1", "--no-control", "--seeds", "1", "--steps", "2", "--size", "64",
                 "--out", str(builtin), "--no-progress"]) == 0
    (row,) = [r for r in results["images"] if r["method"] == "fact:1"]
    (other,) = json.loads((builtin / "results.json").read_text())["images"]
    assert Image.open(out / row["image"]).tobytes() != Image.open(builtin / other["image"]).tobytes()  # X was used
    # a given adapter that does not exist is refused before any image is made
    assert main(["evaluate", "--identities", str(tmp_path / "people"), "--prompts", str(prompts), "--model", "tiny",
                 "--adapter", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "e2"),
                 "--no-progress"]) == 2
    assert not list((tmp_path / "e2").rglob("*.png"))
