"""OpenAI's images API on the server, driven by the official `openai` client against a real uvicorn server."""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_helpers import SMALL

openai = pytest.importorskip("openai", reason="the official OpenAI client (pip install openai; in the test extra)")

KEY = "s3cret"
FAST = {"steps": SMALL["steps"], "guidance": SMALL["guidance"]}  # facefact's own settings, as extra form fields


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def photo(data: bytes, name: str = "me.jpg"):
    return (name, data, "image/jpeg")


def png_of(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_images_edit_gives_pngs_with_provenance(serve, engine, astronaut_bytes):
    from facefact.serving.photos import decode_photo
    from facefact.serving.schemas import GenerateSettings

    url, jobs = serve(api_key=KEY)
    before = int(time.time())
    answer = client(url).images.edit(model="facefact", image=[photo(astronaut_bytes), photo(astronaut_bytes)],
                                     prompt="a portrait", n=2, size="64x64", response_format="b64_json",
                                     extra_body={**FAST, "seed": 11})
    assert before <= answer.created <= int(time.time()) and answer.size == "64x64"
    assert len(answer.data) == 2 and all(image.url is None and image.revised_prompt is None for image in answer.data)
    served = []
    for image, seed in zip(answer.data, (11, 12)):
        with png_of(image.b64_json) as png:
            assert png.format == "PNG" and png.size == (64, 64)
            meta = json.loads(png.info["facefact"])
            assert f"Seed: {seed}" in png.info["parameters"]
            assert "trainedAlgorithmicMedia" in png.info["XML:com.adobe.xmp"]
            served.append(np.asarray(png.convert("RGB")))
        assert meta["seed"] == seed and meta["prompt"] == "a portrait" and meta["num_reference_photos"] == 2
        assert meta["steps"] == 2 and meta["ai_generated"] is True
    rgb = decode_photo(astronaut_bytes, 0, 10**7)
    direct = engine.generate([rgb, rgb], GenerateSettings(**{**SMALL, "num_images": 2, "seed": 11}))
    for image, pixels in zip(direct.images, served):  # OpenAI's fields became the same settings
        with Image.open(io.BytesIO(image.png)) as png:
            assert np.array_equal(np.asarray(png.convert("RGB")), pixels)
    assert jobs.depth() == 0


def test_models_list_names_the_served_model(serve):
    url, _ = serve(api_key=KEY)
    assert [model.id for model in client(url).models.list()] == ["facefact"]
    own = httpx.get(url + "/v1/models", headers={"X-API-Key": KEY}).json()  # facefact's fields are still there
    assert {"loras", "styles", "schedulers", "default_size"} <= set(own) and own["object"] == "list"
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").models.list()


@pytest.mark.parametrize("case, error, param, code", [
    ("no_face", "BadRequestError", "image", "no_face"),
    ("bad_size", "BadRequestError", "size", "bad_settings"),
    ("not_a_size", "BadRequestError", "size", "invalid_value"),
    ("too_many", "BadRequestError", "n", "bad_settings"),
    ("bad_key", "AuthenticationError", None, "invalid_api_key"),
    ("other_model", "NotFoundError", "model", "model_not_found"),
    ("typo", "BadRequestError", "colour", "unknown_parameter"),
    ("mask", "BadRequestError", "mask", "invalid_value"),
    ("too_many_photos", "BadRequestError", "image", "too_many_photos"),
    ("no_photo", "BadRequestError", "image", "no_photo"),
    ("not_png", "BadRequestError", "output_format", "invalid_value")])
def test_bad_requests_raise_the_clients_own_errors(serve, astronaut_bytes, faceless_png, case, error, param, code):
    url, jobs = serve(api_key=KEY, max_photos=2)
    call = {"model": "facefact", "image": [photo(astronaut_bytes)], "prompt": "a portrait", "size": "64x64",
            "extra_body": dict(FAST)}
    key = KEY
    if case == "no_face":
        call["image"] = [photo(faceless_png, "flat.png")]
    elif case == "bad_size":
        call["size"] = "70x64"
    elif case == "not_a_size":
        call["size"] = "large"
    elif case == "too_many":
        call["n"] = 9
    elif case == "bad_key":
        key = "wrong"
    elif case == "other_model":
        call["model"] = "dall-e-2"
    elif case == "typo":
        call["extra_body"]["colour"] = "red"
    elif case == "mask":
        call["mask"] = photo(faceless_png, "mask.png")
    elif case == "too_many_photos":
        call["image"] = [photo(astronaut_bytes)] * 3
    elif case == "no_photo":
        call["image"] = []
    elif case == "not_png":
        call["output_format"] = "jpeg"
    with pytest.raises(openai.APIStatusError) as raised:
        client(url, key).images.edit(**call)
    err = raised.value
    assert type(err).__name__ == error, err
    assert err.code == code and err.param == param and err.message, err.body
    assert set(err.body) == {"message", "type", "param", "code"}
    assert err.type == "invalid_request_error"
    if case == "no_face":
        assert "photo 1" in err.body["message"] and "no face" in err.body["message"]
    if case == "bad_size":
        assert "70 is not a multiple of 8" in err.body["message"]
    if case == "mask":
        assert "/v1/template" in err.body["message"]
    assert jobs.depth() == 0  # nothing refused took a queue slot


def test_full_queue_is_a_rate_limit_error_with_retry_after(serve, astronaut_bytes):
    url, jobs = serve(queue_size=1)
    jobs.pause()
    waiting = httpx.post(url + "/v1/jobs", files=[("photos", photo(astronaut_bytes))],
                         data={"settings": json.dumps(SMALL)}, timeout=60)
    assert waiting.status_code == 202, waiting.text
    with pytest.raises(openai.RateLimitError) as raised:
        client(url).images.edit(image=[photo(astronaut_bytes)], prompt="a portrait", size="64x64", extra_body=FAST)
    assert raised.value.code == "queue_full" and raised.value.type == "rate_limit_error"
    assert int(raised.value.response.headers["retry-after"]) >= 1
    jobs.resume()
    assert jobs.wait(waiting.json()["id"], 60).state == "succeeded"


def test_a_sync_timeout_is_not_retried_by_the_client(serve, astronaut_bytes):
    url, jobs = serve(sync_timeout_s=0.2)
    jobs.pause()  # the job waits in the queue: the sync limit passes whatever the machine's speed
    patient = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=2, timeout=60)
    with pytest.raises(openai.InternalServerError) as raised:
        patient.images.edit(image=[photo(astronaut_bytes)], prompt="a portrait", size="64x64", extra_body=FAST)
    assert raised.value.status_code == 504 and raised.value.code == "timeout"
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert 'facefact_jobs_total{outcome="cancelled"} 1.0' in httpx.get(url + "/metrics").text  # one job, no retry


def test_url_format_style_and_structured_settings(serve, astronaut_bytes, grace_hopper_path):
    url, _ = serve(api_key=KEY)
    with open(grace_hopper_path, "rb") as f:
        second = f.read()
    answer = client(url).images.edit(
        image=[photo(astronaut_bytes), photo(second)], prompt="two friends", size="64x64", response_format="url",
        extra_body={**FAST, "seed": 5, "style": "cinematic", "cfg_face": False,
                    "face_regions": [[0, 0, 0.5, 1], [0.5, 0, 1, 1]], "fact_scale_levels": {"down": 0.3, "up": 0.6},
                    "fact_window": "[0.25, 1.0]"})  # JSON text works too (curl -F)
    image, = answer.data
    assert image.b64_json is None and image.revised_prompt.startswith("cinematic still of two friends")
    assert httpx.get(image.url).status_code == 401  # the job URL needs the server's key, as every /v1 route
    fetched = httpx.get(image.url, headers={"Authorization": f"Bearer {KEY}"})
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(fetched.content)) as png:
        meta = json.loads(png.info["facefact"])
    assert meta["seed"] == 5 and meta["style"] == "cinematic" and meta["cfg_face"] is False
    assert meta["face_regions"] == [[0, 0, 0.5, 1], [0.5, 0, 1, 1]] and meta["fact_scale"] == {"down": 0.3, "up": 0.6}
    assert meta["fact_window"] == [0.25, 1.0]


def test_generations_and_non_multipart_bodies_are_refused_in_openai_shape(serve):
    url, _ = serve()
    with pytest.raises(openai.BadRequestError) as raised:
        client(url).images.generate(model="facefact", prompt="a portrait")
    assert raised.value.code == "image_required" and "images.edit" in raised.value.message
    as_json = httpx.post(url + "/v1/images/edits", json={"prompt": "a portrait"})
    assert as_json.status_code == 400 and as_json.json()["error"]["type"] == "invalid_request_error"
    paths = httpx.get(url + "/openapi.json").json()["paths"]
    form = paths["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"image", "prompt", "n", "size", "response_format"} <= set(form["properties"])


@pytest.mark.parametrize("items, expected", [
    ([("fact_window[]", "0.3"), ("fact_window[]", "1")], {"fact_window": (0.3, 1.0)}),
    ([("loras[film]", "0.5")], {"loras": {"film": 0.5}}),
    ([("face_regions[][]", v) for v in "0 0 1 1".split()], {"face_regions": [(0.0, 0.0, 1.0, 1.0)]}),
    ([("cfg_face", "false"), ("seed", "0")], {"cfg_face": False, "seed": 0})])
def test_form_fields_decode_as_the_client_encodes_them(items, expected):
    from facefact.serving.openai_form import parse_edit_fields

    settings = parse_edit_fields([("prompt", "p"), *items]).settings
    assert {name: getattr(settings, name) for name in expected} == expected


@pytest.mark.parametrize("items, param", [
    ([("num_images", "2")], "num_images"), ([("width", "64")], "width"), ([("stream", "true")], "stream"),
    ([("face_regions[][]", "0")] * 3, "face_regions"), ([("seed", "1"), ("seed", "2")], "seed"),
    ([("fact_window", "[0.3,")], "fact_window"), ([("background", "transparent")], "background")])
def test_form_fields_that_cannot_be_honoured_are_named(items, param):
    from facefact.serving.openai_form import OpenAIRequestError, parse_edit_fields

    with pytest.raises(OpenAIRequestError) as raised:
        parse_edit_fields([("prompt", "p"), *items])
    assert raised.value.param == param and raised.value.status == 400
