"""The HTTP API on a real uvicorn server with the tiny models: jobs, errors, limits, cancel, TTL."""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from serve_helpers import SMALL, close_jobs
from PIL import Image


def post_job(url, photo: bytes, settings: dict, path="/v1/jobs", headers=None, name="me.jpg"):
    return httpx.post(url + path, files=[("photos", (name, photo, "image/jpeg"))],
                      data={"settings": json.dumps(settings)}, headers=headers, timeout=60)


def wait_done(url, job_id, headers=None, timeout=300):  # the timeout only bounds a hang
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
        if status["state"] not in ("queued", "running"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {status}")


def test_job_round_trip_gives_pngs_with_provenance(serve, astronaut_bytes, engine):
    url, _ = serve()
    created = post_job(url, astronaut_bytes, {**SMALL, "num_images": 2, "seed": 11})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert created.headers["location"].endswith(f"/v1/jobs/{job_id}")
    status = wait_done(url, job_id)
    assert status["state"] == "succeeded", status
    assert status["progress"]["step"] == status["progress"]["total"] >= 2
    assert [image["seed"] for image in status["images"]] == [11, 12]
    png = httpx.get(status["images"][1]["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as image:
        assert image.size == (64, 64)
        meta = json.loads(image.info["facefact"])
        assert "Seed: 12" in image.info["parameters"]
        assert "trainedAlgorithmicMedia" in image.info["XML:com.adobe.xmp"]
        served = np.asarray(image.convert("RGB"))
    assert meta["seed"] == 12 and meta["prompt"] == "a portrait" and meta["ai_generated"] is True
    assert meta["num_reference_photos"] == 1 and "me.jpg" not in json.dumps(meta)
    # the same request straight through the pipeline gives the same pixels
    import torch

    from facefact.faces import load_image

    direct = engine.pipeline("a portrait", face_images=[load_image(Image.open(io.BytesIO(astronaut_bytes)))],
                             generator=[torch.Generator("cpu").manual_seed(12)], fact_scale=0.5,
                             num_inference_steps=2, height=64, width=64, guidance_scale=5.0)
    assert np.array_equal(np.asarray(direct.images[0].convert("RGB")), served)


def test_sync_generate_returns_base64_pngs(serve, astronaut_bytes):
    url, _ = serve()
    answer = post_job(url, astronaut_bytes, {**SMALL, "seed": 3, "style": "cinematic"}, path="/v1/generate")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["images"]) == 1 and body["images"][0]["seed"] == 3
    with Image.open(io.BytesIO(base64.b64decode(body["images"][0]["png_base64"]))) as image:
        meta = json.loads(image.info["facefact"])
    assert meta["style"] == "cinematic" and meta["prompt"].startswith("cinematic still of a portrait")


@pytest.mark.parametrize("case, status, code", [
    ("no_face", 422, "no_face"), ("not_image", 415, "bad_image"), ("bad_settings", 422, "bad_settings"),
    ("bad_json", 422, "bad_settings"), ("too_many_pixels", 413, "too_many_pixels"), ("no_photos", 422, "bad_request")])
def test_bad_requests_get_specific_json_errors(serve, astronaut_bytes, faceless_png, case, status, code):
    url, jobs = serve(max_photo_pixels=300 * 300)
    small_face = io.BytesIO()
    Image.open(io.BytesIO(astronaut_bytes)).resize((256, 256)).save(small_face, format="JPEG")
    photo, settings = small_face.getvalue(), dict(SMALL)
    if case == "no_face":
        photo = faceless_png
    elif case == "not_image":
        photo = b"%PDF-1.4 definitely not a photo"
    elif case == "bad_settings":
        settings = {**SMALL, "width": 70, "steps": 0, "colour": "red"}
    elif case == "too_many_pixels":
        photo = astronaut_bytes  # 512 x 512 > 300 x 300
    if case == "bad_json":
        answer = httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", photo, "image/jpeg"))],
                            data={"settings": "{prompt: oops"})
    elif case == "no_photos":
        answer = httpx.post(url + "/v1/jobs", data={"settings": json.dumps(settings)})
    else:
        answer = post_job(url, photo, settings)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and error["message"]
    if case == "no_face":
        assert "photo 1" in error["message"] and "no face" in error["message"] and error["hint"]
    if case == "bad_settings":
        assert all(word in error["message"] for word in ("width", "steps", "colour"))
    assert jobs.depth() == 0  # a refused request never took a queue slot


def test_unknown_job_and_image_are_404(serve, astronaut_bytes):
    url, _ = serve()
    assert httpx.get(url + "/v1/jobs/nope").json()["error"]["code"] == "unknown_job"
    job_id = post_job(url, astronaut_bytes, SMALL).json()["id"]
    wait_done(url, job_id)
    missing = httpx.get(f"{url}/v1/jobs/{job_id}/images/5.png")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_image"


def test_full_queue_answers_429_with_retry_after(serve, astronaut_bytes):
    url, jobs = serve(queue_size=2)
    jobs.pause()
    accepted = [post_job(url, astronaut_bytes, SMALL) for _ in range(2)]
    assert [a.status_code for a in accepted] == [202, 202]
    assert httpx.get(url + "/health").json()["queue_depth"] == 2
    refused = post_job(url, astronaut_bytes, SMALL)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full"
    second = accepted[1].json()["id"]
    assert httpx.get(f"{url}/v1/jobs/{second}").json()["queue_position"] == 1
    jobs.resume()
    assert all(wait_done(url, a.json()["id"])["state"] == "succeeded" for a in accepted)
    metrics = httpx.get(url + "/metrics").text
    assert 'facefact_jobs_total{outcome="rejected"} 1.0' in metrics
    assert 'facefact_jobs_total{outcome="succeeded"} 2.0' in metrics
    assert 'facefact_jobs_submitted_total{kind="portrait"} 2.0' in metrics  # accepted only
    assert 'facefact_jobs_submitted_total{kind="template"} 0.0' in metrics
    assert "facefact_queue_depth 0.0" in metrics and "facefact_step_seconds_count" in metrics


def test_body_limit_holds_for_declared_and_chunked_uploads(serve, astronaut_bytes):
    url, jobs = serve(max_upload_mb=0.05)  # 51 kB; the photo is bigger
    declared = post_job(url, astronaut_bytes, SMALL)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"

    def chunks():  # no Content-Length: the body streams in 8 kB pieces
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="settings"\r\n\r\n' + json.dumps(SMALL).encode()
        yield b"\r\n" + boundary + b'Content-Disposition: form-data; name="photos"; filename="a.jpg"\r\n\r\n'
        for start in range(0, 200_000, 8192):
            yield b"\xff" * 8192
        yield b"\r\n--xyz--\r\n"
    chunked = httpx.post(url + "/v1/jobs", content=chunks(),
                         headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "too_large"
    assert jobs.depth() == 0


def test_api_key_is_required_when_set(serve, astronaut_bytes):
    url, _ = serve(api_key="s3cret")
    assert post_job(url, astronaut_bytes, SMALL).status_code == 401
    assert post_job(url, astronaut_bytes, SMALL, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = post_job(url, astronaut_bytes, SMALL, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 202
    assert httpx.get(f"{url}/v1/jobs/{ok.json()['id']}").status_code == 401
    assert httpx.get(url + "/metrics").status_code == 401
    assert httpx.get(url + "/health").status_code == 200  # health stays open for load balancers


def test_cancel_queued_and_running_jobs(serve, astronaut_bytes):
    url, jobs = serve()
    jobs.pause()
    queued = post_job(url, astronaut_bytes, SMALL).json()["id"]
    cancelled = httpx.delete(f"{url}/v1/jobs/{queued}").json()
    assert cancelled["state"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
    long_job = post_job(url, astronaut_bytes, {**SMALL, "steps": 150}).json()["id"]
    jobs.resume()
    deadline = time.monotonic() + 300  # only bounds a hang
    while httpx.get(f"{url}/v1/jobs/{long_job}").json()["progress"]["step"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    httpx.delete(f"{url}/v1/jobs/{long_job}")
    status = wait_done(url, long_job)
    assert status["state"] == "cancelled" and status["progress"]["step"] < 150 and status["images"] == []


def test_job_timeout_stops_between_steps(serve, astronaut_bytes):
    url, _ = serve(job_timeout_s=0.3)
    job_id = post_job(url, astronaut_bytes, {**SMALL, "steps": 150}).json()["id"]
    status = wait_done(url, job_id)
    assert status["state"] == "failed" and status["error"]["code"] == "timeout"
    assert status["progress"]["step"] < 150


def test_results_are_deleted_after_the_ttl(serve, astronaut_bytes):
    # 3 s: long enough that a busy machine still sees the finished job between two polls
    url, _ = serve(result_ttl_s=3)
    job_id = post_job(url, astronaut_bytes, SMALL).json()["id"]
    status = wait_done(url, job_id)
    assert status["state"] == "succeeded" and 0 < status["expires_in_s"] <= 3
    deadline = time.monotonic() + 300  # only bounds a hang
    while httpx.get(f"{url}/v1/jobs/{job_id}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert httpx.get(f"{url}/v1/jobs/{job_id}/images/0.png").status_code == 404


def test_health_faces_and_openapi(serve, grace_hopper_path):
    url, _ = serve()
    assert httpx.get(url + "/health").json() == {"status": "ok", "ready": True, "queue_depth": 0, "queue_size": 8,
                                                 "workers": 1, "backend": "local", "base_family": "sd15"}
    with open(grace_hopper_path, "rb") as f:
        faces = httpx.post(url + "/v1/faces", files=[("photos", ("g.jpg", f.read(), "image/jpeg"))]).json()
    assert faces[0]["photo"] == 1 and faces[0]["faces_found"] == 1 and len(faces[0]["bbox"]) == 4
    paths = httpx.get(url + "/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/generate", "/health"} <= set(paths)


def test_scheduler_names_are_the_pipelines():
    from facefact.pipelines.loading import SCHEDULERS
    from facefact.serving.schemas import SCHEDULER_NAMES

    assert set(SCHEDULER_NAMES) == set(SCHEDULERS)


def test_overload_gets_results_or_429_and_health_keeps_answering(serve, astronaut_bytes):
    from concurrent.futures import ThreadPoolExecutor

    url, jobs = serve(queue_size=2)
    settings = {**SMALL, "steps": 4}

    def one_call(_):
        started = time.monotonic()
        answer = post_job(url, astronaut_bytes, settings, path="/v1/generate")
        return answer.status_code, time.monotonic() - started

    with ThreadPoolExecutor(12) as pool:
        calls = [pool.submit(one_call, i) for i in range(12)]  # 1 running + 2 waiting fit; 4x that is offered
        while not all(call.done() for call in calls):
            # /health answers beside the jobs; how fast depends on the machine's load (the limit only bounds a hang)
            assert httpx.get(url + "/health", timeout=60).status_code == 200
            assert jobs.depth() <= 2
            time.sleep(0.1)
        outcomes = [call.result(timeout=60)[0] for call in calls]
    assert set(outcomes) <= {200, 429} and outcomes.count(200) >= 3 and 429 in outcomes
    metrics = httpx.get(url + "/metrics").text
    assert f'facefact_jobs_total{{outcome="rejected"}} {outcomes.count(429)}.0' in metrics
    assert f'facefact_jobs_total{{outcome="succeeded"}} {outcomes.count(200)}.0' in metrics


def test_loras_by_name_and_weight(engine, checker, astronaut_bytes, tmp_path):
    """A server started with a LoRA: weight 0 is the base model's pixels, weight 1 changes them."""
    pytest.importorskip("peft")

    from serve_helpers import running_server

    from facefact.cli.serve import load_loras
    from facefact.pipelines import FACTStableDiffusionPipeline
    from facefact.cli.extras import check_settings
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.engine import Engine
    from facefact.serving.jobs import LocalJobs
    from facefact.serving.schemas import GenerateSettings

    lora_file = make_tiny_lora(tmp_path)
    pipe = FACTStableDiffusionPipeline.tiny(seed=0)
    with_lora = Engine(pipe, lora_weights=load_loras(pipe, check_settings([f"{lora_file}:0.8"], tiny=True)))
    assert with_lora.lora_weights == {"film": 0.8}
    jobs = LocalJobs([with_lora])
    try:
        with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
            assert httpx.get(url + "/v1/models").json()["loras"] == {"film": 0.8}

            def pixels(settings):
                answer = post_job(url, astronaut_bytes, {**SMALL, "seed": 4, **settings}, path="/v1/generate")
                assert answer.status_code == 200, answer.text
                image = answer.json()["images"][0]
                with Image.open(io.BytesIO(base64.b64decode(image["png_base64"]))) as png:
                    return np.asarray(png.convert("RGB")), image["metadata"]
            off, _ = pixels({"loras": {"film": 0.0}})
            on, meta = pixels({"loras": {"film": 1.0}})
            default, _ = pixels({})
            unknown = post_job(url, astronaut_bytes, {**SMALL, "loras": {"nope": 1.0}}, path="/v1/generate")
    finally:
        close_jobs(jobs)
    base = engine.generate([load_rgb(astronaut_bytes)], GenerateSettings(**{**SMALL, "seed": 4}))
    with Image.open(io.BytesIO(base.images[0].png)) as png:
        assert np.array_equal(np.asarray(png.convert("RGB")), off)
    assert not np.array_equal(on, off) and not np.array_equal(default, on)
    assert [entry["weight"] for entry in meta["models"]["loras"]] == [1.0]
    assert unknown.status_code == 422 and "no LoRA named nope" in unknown.json()["error"]["message"]


def load_rgb(data: bytes):
    from facefact.serving.photos import decode_photo

    return decode_photo(data, 0, 10**7)


def make_tiny_lora(folder):
    """A random, non-zero diffusers-format LoRA for the tiny UNet, saved as film.safetensors."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from facefact.pipelines.tiny import tiny_sd_pipeline

    unet = tiny_sd_pipeline(0).unet
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                              weight_name="film.safetensors", safe_serialization=True)
    return folder / "film.safetensors"


def test_api_key_is_the_ui_password(serve):
    pytest.importorskip("gradio")
    url, _ = serve(ui=True, api_key="s3cret-ключ")
    assert httpx.get(url + "/ui/config").status_code == 401  # nothing of the app before logging in
    assert "Any user name works" in httpx.get(url + "/ui/").text  # the login form says what to type
    wrong = httpx.post(url + "/ui/login", data={"username": "me", "password": "guess"})
    right = httpx.post(url + "/ui/login", data={"username": "me", "password": "s3cret-ключ"})
    assert wrong.status_code >= 400 and right.json() == {"success": True}


def test_cors_is_off_unless_origins_are_named_and_unknown_routes_are_json(serve):
    url, _ = serve()
    plain = httpx.get(url + "/health", headers={"Origin": "https://example.org"})
    assert "access-control-allow-origin" not in plain.headers
    missing = httpx.get(url + "/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    url, _ = serve(cors_origins=["https://team.example"])
    preflight = httpx.options(url + "/v1/jobs", headers={"Origin": "https://team.example",
                                                         "Access-Control-Request-Method": "POST"})
    assert preflight.headers["access-control-allow-origin"] == "https://team.example"
    other = httpx.options(url + "/v1/jobs", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_an_unexpected_failure_is_a_json_500_without_internals(serve, monkeypatch):
    url, jobs = serve()

    def broken(job_id):
        raise RuntimeError("secret internal detail /home/someone")
    monkeypatch.setattr(jobs, "status", broken)
    answer = httpx.get(url + "/v1/jobs/abc")
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal"
    assert "secret" not in answer.text


def test_face_check_says_several_faces_using_the_largest(serve, astronaut_bytes, grace_hopper_path):
    url, _ = serve()
    left = Image.open(io.BytesIO(astronaut_bytes)).convert("RGB").resize((400, 400))
    right = Image.open(grace_hopper_path).convert("RGB").resize((200, 234))
    both = Image.new("RGB", (640, 400), "white")
    both.paste(left, (0, 0))
    both.paste(right, (420, 80))
    buffer = io.BytesIO()
    both.save(buffer, format="JPEG")
    report = httpx.post(url + "/v1/faces", files=[("photos", ("two.jpg", buffer.getvalue(), "image/jpeg"))]).json()
    assert report[0]["faces_found"] == 2
    assert any("using the largest" in note for note in report[0]["notes"])
    assert report[0]["bbox"][2] < 420  # the astronaut's (larger) face, on the left


def test_identity_controls_reach_the_pipeline(serve, astronaut_bytes, grace_hopper_path):
    url, _ = serve()
    with open(grace_hopper_path, "rb") as f:
        second = f.read()
    settings = {**SMALL, "seed": 9, "face_combine": "mean", "fact_window": [0.5, 1.0]}
    answer = httpx.post(url + "/v1/generate", data={"settings": json.dumps(settings)},
                        files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg")),
                               ("photos", ("b.jpg", second, "image/jpeg"))], timeout=60)
    assert answer.status_code == 200, answer.text
    meta = answer.json()["images"][0]["metadata"]
    assert meta["fact_window"] == [0.5, 1.0] and "mean" in json.dumps(meta)
    bad = post_job(url, astronaut_bytes, {**SMALL, "fact_window": [0.8, 0.2]})
    assert bad.status_code == 422 and "fact_window" in bad.json()["error"]["message"]


def test_two_people_and_per_level_scales_reach_the_pipeline(serve, astronaut_bytes, grace_hopper_path):
    url, _ = serve()
    with open(grace_hopper_path, "rb") as f:
        second = f.read()
    photos = [("photos", ("a.jpg", astronaut_bytes, "image/jpeg")), ("photos", ("b.jpg", second, "image/jpeg"))]
    settings = {**SMALL, "seed": 9, "face_regions": [[0, 0, 0.5, 1], [0.5, 0, 1, 1]],
                "fact_scale_levels": {"down": 0.3, "up": 0.6}}
    answer = httpx.post(url + "/v1/generate", data={"settings": json.dumps(settings)}, files=photos, timeout=60)
    assert answer.status_code == 200, answer.text
    meta = answer.json()["images"][0]["metadata"]
    assert meta["face_regions"] == [[0, 0, 0.5, 1], [0.5, 0, 1, 1]] and meta["fact_scale"] == {"down": 0.3, "up": 0.6}
    overlapping = {**SMALL, "face_regions": [[0, 0, 0.6, 1], [0.5, 0, 1, 1]]}
    bad = httpx.post(url + "/v1/generate", data={"settings": json.dumps(overlapping)}, files=photos, timeout=60)
    assert bad.status_code == 422 and "overlap" in bad.json()["error"]["message"], bad.text
