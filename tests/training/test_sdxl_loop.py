"""The closed loop on the tiny SDXL base, through the CLI: prepare at 1024 px -> train (FAIR on) ->
kill the run mid-way -> resume = the uninterrupted run, bit for bit -> generate with the trained
adapter, whose PNG metadata names that very file (by hash) -> template mode -> evaluate, both naming it
too. Every step continues from the same `trained_sdxl_adapter` fixture (conftest.py)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facefact.cli.main import main
from facefact.model import FaceAdapter
from facefact.model.checkpoints import read_safetensors
from facefact.pipelines.hashing import file_sha256
from facefact.pipelines.metadata import read_png_metadata

ROOT = Path(__file__).resolve().parents[2]


def test_the_trained_sdxl_adapter_is_an_sdxl_adapter_that_fair_measured(trained_sdxl_adapter):
    adapter = FaceAdapter.from_checkpoint(trained_sdxl_adapter.adapter)
    assert (adapter.family, adapter.layout, len(adapter.block_paths)) == ("sdxl", "first", 11)
    _, metadata = read_safetensors(trained_sdxl_adapter.adapter)
    assert metadata["base_family"] == "sdxl" and metadata["block_layout"] == "first"
    with open(trained_sdxl_adapter.run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert any(float(r["fair"]) > 0 for r in rows)  # FAIR was on, measured on the SDXL fusers


def test_killed_sdxl_run_resumes_to_the_same_adapter_and_generates_with_it(tmp_path, trained_sdxl_adapter):
    out = tmp_path / "killed"
    args = [*trained_sdxl_adapter.train_args, "--output-dir", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "facefact.cli.main", "train", *args, "--checkpoint-every", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")})
    deadline = time.time() + 180  # an upper bound on a hang only
    while time.time() < deadline and not (out / "checkpoints" / "step-00000002").exists() and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints" / "step-00000002").is_dir()
    assert not (out / "adapter.safetensors").exists(), "the run finished before it could be killed"

    assert main(["train", *args, "--resume", "latest"]) == 0
    resumed = out / "adapter.safetensors"
    a, b = read_safetensors(trained_sdxl_adapter.adapter)[0], read_safetensors(resumed)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    from facefact.pipelines.build import load_fact_pipeline

    pipe = load_fact_pipeline("tiny-sdxl", resumed, "tiny")
    photo = Image.open(next(trained_sdxl_adapter.photos.rglob("*.jpg")))

    def generate(folder, scale):
        result = pipe("a portrait photo", face_images=[photo], fact_scale=scale, num_inference_steps=2,
                      height=64, width=64, generator=torch.Generator().manual_seed(3))
        (path,) = result.save(folder)
        return np.asarray(Image.open(path)).astype(int), read_png_metadata(path)

    trained, meta = generate(tmp_path / "trained", 1.0)
    base, _ = generate(tmp_path / "base", 0.0)
    assert np.abs(trained - base).max() > 0  # the trained adapter acts
    assert meta["models"]["adapter"] == {"id": "adapter.safetensors", "sha256": file_sha256(resumed)[:16]}


def test_the_trained_sdxl_adapter_redraws_a_template_face_and_is_evaluated(tmp_path, trained_sdxl_adapter):
    """The loop's last two steps with the trained file: template mode on the tiny SDXL base (the face
    redrawn inside its crop only) and `facefact evaluate`, each naming that very file by hash."""
    adapter = trained_sdxl_adapter.adapter
    adapter_hash = file_sha256(adapter)[:16]
    person = sorted(p for p in trained_sdxl_adapter.photos.iterdir() if p.is_dir())[0]
    template, reference = sorted(person.glob("*.jpg"))[:2]
    models = ["--model", "tiny-sdxl", "--adapter", str(adapter)]
    assert main(["template", "--template", str(template), "--face", str(reference), *models, "--crop-size", "64",
                 "--steps", "10", "--prompt", "a portrait", "--seed", "4", "--out", str(tmp_path / "template"),
                 "--quiet"]) == 0
    (image,) = (tmp_path / "template").glob("*.png")
    meta = read_png_metadata(image)
    assert meta["pipeline"]["base_family"] == "sdxl"
    assert meta["models"]["adapter"] == {"id": "adapter.safetensors", "sha256": adapter_hash}
    before, after = np.asarray(Image.open(template).convert("RGB")), np.asarray(Image.open(image).convert("RGB"))
    crop = meta["redrawn_faces"][0]["crop"]
    inside = np.zeros(before.shape[:2], bool)
    inside[max(0, crop["y0"]):crop["y0"] + crop["side"], max(0, crop["x0"]):crop["x0"] + crop["side"]] = True
    changed = np.any(before != after, axis=2)
    assert changed.any() and not changed[~inside].any()

    out = tmp_path / "evaluate"
    assert main(["evaluate", "--identities", str(trained_sdxl_adapter.photos), *models, "--method", "fact:0.5",
                 "--seeds", "1", "--steps", "2", "--size", "64", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["models"]["adapter"] == {"id": "adapter.safetensors", "sha256": adapter_hash,
                                                      "bytes": adapter.stat().st_size}
    assert {a["method"]: a["base_family"] for a in results["aggregate"]} == {"fact:0.5": "sdxl", "base": "sdxl"}
