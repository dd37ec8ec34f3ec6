"""One evaluation compares an SDXL FACT with the SD1.5 one on the same identities, prompts and seeds:
`--method fact:0.5+tiny-sdxl` beside `--method fact:0.5` (run model tiny), each with its own control."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image


def test_sd15_and_sdxl_fact_in_one_run(cli, tmp_path, one_identity):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of {subject} in a forest\n")
    out = tmp_path / "run"
    code, stdout, err = cli("evaluate", "--identities", one_identity, "--prompts", prompts, "--seeds", 1,
                            "--method", "fact:0.5", "--method", "fact:0.5+tiny-sdxl", "--model", "tiny",
                            "--steps", 2, "--size", 64, "--out", out, "--no-progress")
    assert code == 0, err
    data = json.loads((out / "results.json").read_text())
    families = {a["method"]: a["base_family"] for a in data["aggregate"]}
    assert families == {"fact:0.5": "sd15", "base": "sd15", "fact:0.5+tiny-sdxl": "sdxl", "base+tiny-sdxl": "sdxl"}
    rows = {r["method"]: r for r in data["images"]}
    assert rows["fact:0.5+tiny-sdxl"]["control"] == "base+tiny-sdxl" and rows["fact:0.5"]["control"] == "base"
    assert data["config"]["named_models"]["tiny-sdxl"]["base_model"]["id"] == "facefact-tiny-sdxl/base_model"
    for method, row in rows.items():  # each image's record says its family; the size is the run's
        record = json.loads((out / row["image"]).with_suffix(".json").read_text())
        assert record["base_family"] == families[method] and (record["width"], record["height"]) == (64, 64)
    # the SDXL row's image is the tiny SDXL FACT's own: the same call made directly gives its pixels
    from facefact.pipelines.build import load_fact_pipeline
    from facefact.pipelines.face_tokens import analyse_photos
    from facefact.pipelines.loading import make_scheduler

    pipe = load_fact_pipeline("tiny-sdxl", "tiny", "tiny")
    pipe.scheduler = make_scheduler("pndm", pipe.scheduler.config)
    pixels, qualities = analyse_photos(pipe._analysis(), [str(one_identity / "astronaut" / "ref.jpg")], [])
    row = rows["fact:0.5+tiny-sdxl"]
    direct = pipe(row["prompt"], face_tokens=pipe.encode_faces(face_pixels=pixels, qualities=qualities),
                  negative_prompt=data["config"]["generation"]["negative_prompt"], fact_scale=0.5,
                  num_inference_steps=2, guidance_scale=5.0, height=64, width=64,
                  generator=torch.Generator("cpu").manual_seed(0)).images[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / row["image"]).convert("RGB")),
                                  np.asarray(direct.convert("RGB")))
    html = (out / "report.html").read_text()
    assert "base_family" in html and "sdxl" in html and "fact:0.5+tiny-sdxl" in html
    assert "sdxl" in stdout  # the summary table's base column


def test_methods_name_unknown_models_clearly(cli, tmp_path, one_identity):
    code, _, err = cli("evaluate", "--identities", one_identity, "--method", "fact:0.5+nosuch", "--model", "tiny",
                       "--steps", 1, "--size", 64, "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and "no model named 'nosuch'" in err and "tiny-sdxl" in err
    code, _, err = cli("evaluate", "--identities", one_identity, "--named-model", "xl=/no/such/base", "--model",
                       "tiny", "--out", tmp_path / "run2")
    assert code == 2 and "/no/such/base does not exist" in err


def test_a_named_sdxl_model_from_files(tmp_path, one_identity):
    """`named_models` (CLI: --named-model xl=BASE,ADAPTER,ENCODER): an SDXL diffusers folder's family
    comes from its UNet config; its files are described in the run's provenance."""
    from facefact.evaluation import evaluate
    from facefact.model.checkpoints import save_adapter, save_encoder
    from facefact.model.tiny import tiny_encoder, tiny_face_adapter
    from facefact.pipelines.tiny_xl import save_tiny_sdxl_pipeline, tiny_sdxl_pipeline

    base = save_tiny_sdxl_pipeline(tmp_path / "sdxl-base")
    adapter = save_adapter(tiny_face_adapter(tiny_sdxl_pipeline().unet), tmp_path / "xl.safetensors")
    encoder = save_encoder(tiny_encoder(), tmp_path / "encoder.safetensors")
    res = evaluate(one_identity, "default", methods=["fact:0.5+xl"],
                   seeds=1, max_prompts=1, out=tmp_path / "run", generation={"steps": 1, "size": 64},
                   add_controls=False, progress=False, report=False,
                   named_models={"xl": {"model": str(base), "adapter": str(adapter), "encoder": str(encoder)}})
    (agg,) = res.aggregate
    assert (agg["method"], agg["base_family"]) == ("fact:0.5+xl", "sdxl")
    models = res.config["named_models"]["xl"]
    assert models["base_model"]["id"] == "sdxl-base" and models["adapter"]["id"] == "xl.safetensors"
