"""The server on an SDXL FACT (the tiny SDXL models): the API says the family, sizes follow it,
OpenAI's route and batching (pooled text embeddings and size conditioning per row) work on it."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from serve_helpers import REPO, SMALL, close_jobs, free_port, running_server, start_worker
from test_batching import job, pixels, run_queued


@pytest.fixture(scope="module")
def xl_engine():
    from facefact.pipelines import FACTStableDiffusionXLPipeline
    from facefact.serving.engine import Engine

    return Engine(FACTStableDiffusionXLPipeline.tiny(seed=0))


@contextlib.contextmanager
def served(engine, checker, **options):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.jobs import LocalJobs

    config = ServerConfig(ui=False, **options)
    jobs = LocalJobs([engine], queue_size=config.queue_size)
    try:
        with running_server(create_app(jobs, checker, config)) as url:
            yield url
    finally:
        close_jobs(jobs)


def test_health_and_models_say_the_family_and_its_sizes(xl_engine, engine, checker):
    with served(xl_engine, checker) as url:
        assert httpx.get(url + "/health").json()["base_family"] == "sdxl"
        models = httpx.get(url + "/v1/models").json()
        assert (models["base_family"], models["default_size"], models["max_size"]) == ("sdxl", 128, 2048)
    with served(engine, checker) as url:
        models = httpx.get(url + "/v1/models").json()
        assert (models["base_family"], models["max_size"]) == ("sd15", 1536)


def test_an_sd15_server_refuses_sdxl_sizes_before_any_work(engine, checker, astronaut_bytes):
    with served(engine, checker) as url:
        answer = httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))],
                            data={"settings": json.dumps({**SMALL, "width": 2048})})
        assert answer.status_code == 422 and "1536" in answer.json()["error"]["message"]
        assert "width 2048" in answer.json()["error"]["message"]


def test_openai_edits_on_sdxl_give_sdxl_portraits(xl_engine, checker, astronaut_bytes):
    with served(xl_engine, checker) as url:
        answer = httpx.post(url + "/v1/images/edits", timeout=120,
                            files=[("image[]", ("me.jpg", astronaut_bytes, "image/jpeg"))],
                            data={"prompt": "a portrait", "size": "64x64", "response_format": "b64_json",
                                  "steps": "2", "seed": "5"})
        assert answer.status_code == 200, answer.text
        from PIL import Image

        with Image.open(io.BytesIO(base64.b64decode(answer.json()["data"][0]["b64_json"]))) as png:
            meta = json.loads(png.info["facefact"])
            assert png.size == (64, 64)
        assert meta["pipeline"] == "FACTStableDiffusionXLPipeline" and meta["num_reference_photos"] == 1


def test_sdxl_jobs_batched_give_the_images_they_give_alone(xl_engine, astronaut_bytes, grace_hopper_path):
    """Two people, prompts and seeds in one UNet batch: each row keeps its own pooled text embedding
    and size conditioning, so each job's image is the one it gets alone (up to CPU float rounding)."""
    with open(grace_hopper_path, "rb") as f:
        hopper = f.read()
    people = [job(astronaut_bytes, prompt="a portrait in a garden", seed=11),
              job(hopper, prompt="a painting", negative_prompt="dark", seed=12)]
    alone, ids, statuses, sizes = run_queued(xl_engine, people, max_batch=1)
    try:
        assert [s.state for s in statuses] == ["succeeded"] * 2 and sizes == [2] * 4
        expected = [alone.images(job_id)[0] for job_id in ids]
    finally:
        close_jobs(alone)
    batched, ids, statuses, sizes = run_queued(xl_engine, people, max_batch=4)
    try:
        assert [s.state for s in statuses] == ["succeeded"] * 2 and sizes == [4] * 2
        for job_id, want in zip(ids, expected):
            got, = batched.images(job_id)
            assert got.metadata == want.metadata
            assert got.metadata["pipeline"] == "FACTStableDiffusionXLPipeline"
            assert np.abs(pixels(got.png) - pixels(want.png)).max() <= 1
            assert np.mean(pixels(got.png) == pixels(want.png)) > 0.99
        assert np.abs(pixels(batched.images(ids[0])[0].png) - pixels(batched.images(ids[1])[0].png)).max() > 0
    finally:
        close_jobs(batched)


def wait_for(condition, process, what: str, limit_s: float = 600) -> None:
    """Poll `condition` until true; `limit_s` only bounds a hang (a start loads torch and the models)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(0.3)


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_serve_tiny_sdxl_as_a_user_starts_it(astronaut_bytes, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    server = subprocess.Popen([sys.executable, "-m", "facefact.cli.main", "serve", "--model", "tiny-sdxl", "--port",
                               str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url), server, "facefact serve --model tiny-sdxl")
        assert httpx.get(url + "/health").json()["base_family"] == "sdxl"
        assert httpx.get(url + "/ui/", follow_redirects=True).status_code == 200
        answer = httpx.post(url + "/v1/generate", files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))],
                            data={"settings": json.dumps({"prompt": "a portrait", "steps": 1, "seed": 5})},
                            timeout=300)
        assert answer.status_code == 200, answer.text
        meta = answer.json()["images"][0]["metadata"]
        assert meta["pipeline"] == "FACTStableDiffusionXLPipeline" and meta["width"] == 128  # the model's own size
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output


@pytest.mark.slow
def test_redis_workers_on_tiny_sdxl_tell_the_api_their_family(redis_url, checker, astronaut_bytes):
    pytest.importorskip("rq")
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    jobs = RedisJobs(redis_url, queue_size=4, result_ttl_s=60, queue_name="facefact")
    assert jobs.base_family() is None and jobs.default_size() == 512  # no worker yet: the serve command's guess
    worker = start_worker(redis_url, "xl", text=True, model="tiny-sdxl")
    try:
        wait_for(lambda: jobs.workers == 1, worker, "facefact worker --model tiny-sdxl")
        with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
            assert httpx.get(url + "/health").json()["base_family"] == "sdxl"
            models = httpx.get(url + "/v1/models").json()
            assert (models["base_family"], models["default_size"], models["max_size"]) == ("sdxl", 128, 2048)
            answer = httpx.post(url + "/v1/generate", files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))],
                                data={"settings": json.dumps({**SMALL, "seed": 3})}, timeout=300)
            assert answer.status_code == 200, answer.text
            assert answer.json()["images"][0]["metadata"]["pipeline"] == "FACTStableDiffusionXLPipeline"
    finally:
        worker.terminate()
        worker.wait(30)
        jobs.close()


def test_template_jobs_on_an_sdxl_server_use_the_sdxl_inpaint_twin(xl_engine, checker, astronaut_bytes,
                                                                 grace_hopper_path):
    """The server's template mode on tiny SDXL: the tiny SDXL two-ControlNet inpaint pipeline, as
    `facefact template --model tiny-sdxl`; on a real SDXL base the inpaint twin on the served modules."""
    from PIL import Image

    with open(grace_hopper_path, "rb") as f:
        face = f.read()
    with served(xl_engine, checker) as url:
        answer = httpx.post(url + "/v1/template", timeout=300,
                            files=[("template", ("t.jpg", astronaut_bytes, "image/jpeg")),
                                   ("photos", ("p.jpg", face, "image/jpeg"))],
                            data={"settings": json.dumps({"steps": 2, "strength": 1.0, "refine": False,
                                                          "crop_size": 64, "seed": 5})})
        assert answer.status_code == 200, answer.text
    with Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]["png_base64"]))) as png:
        meta = json.loads(png.info["facefact"])
    assert meta["mode"] == "template" and "FACTStableDiffusionXLControlNetInpaintPipeline" in json.dumps(meta)
    from facefact.pipelines import FACTStableDiffusionXLInpaintPipeline
    from facefact.serving.engine import inpaint_sibling

    sibling = inpaint_sibling(xl_engine.pipeline)  # a real base's: no second copy of the weights
    assert type(sibling) is FACTStableDiffusionXLInpaintPipeline and sibling.unet is xl_engine.pipeline.unet


def test_the_ui_sliders_follow_the_family(xl_engine, engine, checker):
    pytest.importorskip("gradio")
    from facefact.serving.api import ServerConfig
    from facefact.serving.jobs import LocalJobs
    from facefact.serving.ui import build_ui

    for served_engine, top in ((xl_engine, 2048), (engine, 1024)):
        jobs = LocalJobs([served_engine])
        try:
            demo = build_ui(jobs, checker, ServerConfig())
            sliders = {c.elem_id: c for c in demo.blocks.values() if getattr(c, "elem_id", None) in ("width", "height")}
            assert {(s.maximum, s.value) for s in sliders.values()} == {(top, 128)}
        finally:
            close_jobs(jobs)
