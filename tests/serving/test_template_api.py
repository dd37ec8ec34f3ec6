"""The template mode over HTTP on a real uvicorn server with the tiny models: numbered faces,
template jobs (async and sync) with provenance, and the errors a client gets."""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from test_api import wait_done

FAST = {"steps": 2, "strength": 1.0, "refine": False, "crop_size": 64, "seed": 5}


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    from skimage import data

    return png_bytes(np.ascontiguousarray(data.astronaut()))


@pytest.fixture(scope="module")
def group_png(astronaut_png, grace_hopper_path) -> bytes:
    """The astronaut (left) and Grace Hopper (right) side by side: two faces."""
    left = np.asarray(Image.open(io.BytesIO(astronaut_png)).convert("RGB"))
    with Image.open(grace_hopper_path) as right:
        right = right.convert("RGB").resize((round(right.width * 512 / right.height), 512))
    return png_bytes(np.concatenate([left, np.asarray(right)], axis=1))


def post_template(url, template: bytes, photos: list[bytes], settings: dict, targets=None, path="/v1/template/jobs"):
    files = [("template", ("t.png", template, "image/png"))] + [("photos", (f"p{i}.jpg", p, "image/jpeg"))
                                                                 for i, p in enumerate(photos)]
    data = {"settings": json.dumps(settings)}
    if targets is not None:
        data["targets"] = json.dumps(targets)
    return httpx.post(url + path, files=files, data=data, timeout=120)


def test_template_faces_are_numbered_left_to_right(serve, group_png, faceless_png):
    url, _ = serve()
    answer = httpx.post(url + "/v1/template/faces", files=[("template", ("g.png", group_png, "image/png"))])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["width"] > 512 and body["height"] == 512
    faces = body["faces"]
    assert [f["number"] for f in faces] == [1, 2]
    assert faces[0]["bbox"][0] < 512 <= faces[1]["bbox"][0]  # the astronaut left, Grace Hopper right
    larger = max(faces, key=lambda f: f["width"] * f["height"])["number"]
    assert body["default_target"] == larger and not any(f["too_small"] for f in faces)
    none = httpx.post(url + "/v1/template/faces", files=[("template", ("w.png", faceless_png, "image/png"))])
    assert none.status_code == 422 and none.json()["error"]["code"] == "no_face"


def test_template_job_redraws_the_target_only(serve, astronaut_png, grace_hopper_path):
    url, _ = serve()
    face = open(grace_hopper_path, "rb").read()
    created = post_template(url, astronaut_png, [face], {**FAST, "num_images": 2}, targets={"1": 0})
    assert created.status_code == 202, created.text
    status = wait_done(url, created.json()["id"])
    assert status["state"] == "succeeded", status
    assert [image["seed"] for image in status["images"]] == [5, 6]
    assert status["progress"]["step"] == status["progress"]["total"] == 2 * 2  # 2 images x 2 steps
    png = httpx.get(status["images"][0]["url"])
    with Image.open(io.BytesIO(png.content)) as image:
        meta = json.loads(image.info["facefact"])
        result = np.asarray(image.convert("RGB"))
    template = np.asarray(Image.open(io.BytesIO(astronaut_png)).convert("RGB"))
    assert result.shape == template.shape
    assert meta["mode"] == "template" and meta["method"] == "FaceChain-FACT template" and meta["seed"] == 5
    assert meta["pipeline"]["controlnets"] == 2  # tiny: the release's OpenPose + Canny layout, as `facefact template`
    assert [f["number"] for f in meta["redrawn_faces"]] == [1] and meta["template"]["faces_found"] == 1
    assert meta["ai_generated"] is True and "p0.jpg" not in json.dumps(meta)
    crop = meta["redrawn_faces"][0]["crop"]
    outside = np.ones(template.shape[:2], bool)
    outside[max(0, crop["y0"]):crop["y0"] + crop["side"], max(0, crop["x0"]):crop["x0"] + crop["side"]] = False
    changed = np.any(result != template, axis=2)
    assert outside.any() and not changed[outside].any()  # every pixel outside the face's crop: the template's
    x1, y1, x2, y2 = (int(v) for v in meta["redrawn_faces"][0]["bbox"])
    assert changed[y1:y2, x1:x2].mean() > 0.5  # the face itself was redrawn


def test_sync_template_and_the_same_seed_gives_the_same_pixels(serve, astronaut_png, grace_hopper_path):
    url, _ = serve()
    face = open(grace_hopper_path, "rb").read()
    answers = [post_template(url, astronaut_png, [face], FAST, path="/v1/template") for _ in range(2)]
    assert all(a.status_code == 200 for a in answers), answers[0].text
    images = [base64.b64decode(a.json()["images"][0]["png_base64"]) for a in answers]
    pixels = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in images]
    assert np.array_equal(pixels[0], pixels[1])
    assert json.loads(Image.open(io.BytesIO(images[0])).info["facefact"])["mode"] == "template"


@pytest.mark.parametrize("case, status, code, words", [
    ("out_of_range", 422, "bad_target", "the template has 1 face"),
    ("no_face_in_template", 422, "no_face", "no face found in the template"),
    ("no_face_in_photo", 422, "no_face", "photo 1"),
    ("photo_index", 422, "bad_target", "1 face photo was sent"),
    ("bad_settings", 422, "bad_settings", "strength"),
    ("no_step", 422, "bad_settings", "would run no step"),
    ("not_image", 415, "bad_image", "template"),
])
def test_template_errors_are_specific(serve, astronaut_png, grace_hopper_path, faceless_png, case, status, code, words):
    url, jobs = serve()
    face = open(grace_hopper_path, "rb").read()
    template, photos, settings, targets = astronaut_png, [face], dict(FAST), {"1": 0}
    if case == "out_of_range":
        targets = {"3": 0}
    elif case == "no_face_in_template":
        template = faceless_png
    elif case == "no_face_in_photo":
        photos = [faceless_png]
    elif case == "photo_index":
        targets = {"1": 1}
    elif case == "bad_settings":
        settings["strength"] = 0
    elif case == "no_step":
        settings.update(steps=1, strength=0.5)
    elif case == "not_image":
        template = b"not an image"
    answer = post_template(url, template, photos, settings, targets)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and words in error["message"], error
    assert jobs.depth() == 0  # refused before it took a queue slot


def test_template_jobs_share_the_queue_limit(serve, astronaut_png, grace_hopper_path):
    url, jobs = serve(queue_size=1)
    face = open(grace_hopper_path, "rb").read()
    jobs.pause()
    try:
        assert post_template(url, astronaut_png, [face], FAST).status_code == 202
        full = post_template(url, astronaut_png, [face], FAST)
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        assert full.json()["error"]["code"] == "queue_full"
    finally:
        jobs.resume()


def test_real_models_share_the_loaded_modules(engine, astronaut_png, grace_hopper_path):
    """Beyond the tiny models the template pipeline is made on the loaded pipeline's own modules (no
    second copy of the weights) and the adapter already attached to that UNet; it redraws the face."""
    from facefact.faces import load_image
    from facefact.serving.engine import Engine, inpaint_sibling
    from facefact.serving.schemas import TemplateJobSettings

    pipe = engine.pipeline
    sibling = inpaint_sibling(pipe)
    assert sibling.unet is pipe.unet and sibling.vae is pipe.vae and sibling.text_encoder is pipe.text_encoder
    assert sibling.fact_adapter is pipe.fact_adapter and sibling.fact_adapter.is_attached_to(pipe.unet)
    template = load_image(Image.open(io.BytesIO(astronaut_png)))
    made = Engine(pipe, name="sibling", template_pipeline=lambda: sibling)
    result = made.generate_template(template, [load_image(grace_hopper_path)], None, TemplateJobSettings(**FAST))
    meta = result.images[0].metadata
    assert meta["pipeline"]["class"] == "FACTStableDiffusionInpaintPipeline" and meta["pipeline"]["controlnets"] == 0
    assert meta["models"]["adapter"] == pipe._fact_models["adapter"]
    out = np.asarray(Image.open(io.BytesIO(result.images[0].png)).convert("RGB"))
    x1, y1, x2, y2 = (int(v) for v in meta["redrawn_faces"][0]["bbox"])
    assert np.any(out != template, axis=2)[y1:y2, x1:x2].mean() > 0.5
    assert pipe.fact_adapter.is_attached_to(pipe.unet)  # the portrait pipeline still has its adapter


def test_a_running_template_job_can_be_cancelled(serve, astronaut_png, grace_hopper_path):
    url, _ = serve()
    face = open(grace_hopper_path, "rb").read()
    created = post_template(url, astronaut_png, [face], {**FAST, "steps": 150, "num_images": 4})
    job_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/v1/jobs/{job_id}").json()["progress"]["step"] < 1:
        assert time.monotonic() < deadline, "the template job never started"
        time.sleep(0.02)
    assert httpx.get(f"{url}/v1/jobs/{job_id}").json()["progress"]["total"] == 4 * 150
    httpx.delete(f"{url}/v1/jobs/{job_id}")
    status = wait_done(url, job_id)
    assert status["state"] == "cancelled" and status["progress"]["step"] < 4 * 150 and not status["images"]
