"""Scale-out: a stateless API over Redis and two `facefact worker` processes (RQ SimpleWorker, JSON),
portrait and template jobs alike."""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from serve_helpers import SMALL, running_server, start_worker
from PIL import Image

pytest.importorskip("rq")
pytestmark = pytest.mark.slow  # worker processes start in 10-40 s on a busy machine
TEMPLATE = {"steps": 2, "strength": 1.0, "refine": False, "crop_size": 64}  # a template job in seconds


@pytest.fixture(scope="module")
def workers(redis_url):
    """Two `facefact worker` processes ("gpu-a", "gpu-b") on the module's Redis."""
    from facefact.serving.redis_jobs import RedisJobs

    started = {name: start_worker(redis_url, name) for name in ("gpu-a", "gpu-b")}
    probe = RedisJobs(redis_url)
    deadline = time.monotonic() + 600  # only bounds a hang: each start loads torch and the models
    while probe.workers < 2:
        for process in started.values():
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.2)
    yield started
    for process in started.values():
        process.terminate()
    for process in started.values():
        process.wait(20)


def submit(url, photo: bytes, settings: dict) -> str:
    answer = httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", photo, "image/jpeg"))],
                        data={"settings": json.dumps(settings)})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def post_template(url, template: bytes, photo: bytes, settings: dict, path: str = "/v1/template/jobs"):
    return httpx.post(url + path, data={"settings": json.dumps(settings), "targets": json.dumps({"1": 0})},
                      files=[("template", ("t.jpg", template, "image/jpeg")), ("photos", ("p.jpg", photo, "image/jpeg"))],
                      timeout=300)


def submit_template(url, template: bytes, photo: bytes, settings: dict) -> str:
    answer = post_template(url, template, photo, settings)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def decoded(png: bytes) -> tuple[np.ndarray, dict]:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB")), json.loads(image.info["facefact"])


def test_two_workers_share_the_queue_and_match_the_local_path(redis_url, workers, checker, engine, serve,
                                                              astronaut_bytes, grace_hopper_path):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    face = open(grace_hopper_path, "rb").read()
    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60)
    with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
        assert httpx.get(url + "/health").json()["workers"] == 2
        ids = [submit(url, astronaut_bytes, {**SMALL, "seed": 21, "steps": 6}),
               submit_template(url, astronaut_bytes, face, {**TEMPLATE, "seed": 5, "num_images": 2}),
               submit(url, astronaut_bytes, {**SMALL, "seed": 22, "steps": 6}),
               submit_template(url, astronaut_bytes, face, {**TEMPLATE, "seed": 7}),
               submit(url, astronaut_bytes, {**SMALL, "seed": 23, "steps": 6}),
               submit(url, astronaut_bytes, {**SMALL, "seed": 24, "steps": 6})]
        statuses = [jobs.wait(job_id, 300) for job_id in ids]  # 300 s only bounds a hang
        assert [s.state for s in statuses] == ["succeeded"] * len(ids), statuses
        assert {s.worker for s in statuses} == {"gpu-a", "gpu-b"}  # both workers took jobs
        assert statuses[1].progress.step == statuses[1].progress.total == 2 * 2  # 2 images x 2 steps
        remote, meta = decoded(httpx.get(f"{url}/v1/jobs/{ids[0]}/images/0.png").content)
        assert meta["seed"] == 21
        remote_template = [decoded(httpx.get(f"{url}/v1/jobs/{ids[1]}/images/{k}.png").content) for k in (0, 1)]
        # the uploads left Redis when the jobs started; results expire with their TTL
        assert not any(jobs.redis.exists(f"facefact:{key}:{job_id}") for job_id in ids for key in ("photos", "template"))
        assert 0 < jobs.redis.ttl(f"facefact:png:{ids[1]}:1") <= 60
        metrics = httpx.get(url + "/metrics").text
        assert 'facefact_jobs_submitted_total{kind="portrait"} 4.0' in metrics
        assert 'facefact_jobs_submitted_total{kind="template"} 2.0' in metrics
    from facefact.serving.photos import decode_photo
    from facefact.serving.schemas import GenerateSettings

    local = engine.generate([decode_photo(astronaut_bytes, 0, 10**7)],
                            GenerateSettings(**{**SMALL, "seed": 21, "steps": 6}))
    assert np.array_equal(decoded(local.images[0].png)[0], remote)
    # the in-process server's template route, same inputs and seeds: the same pixels and provenance
    local_url, _ = serve()
    answer = post_template(local_url, astronaut_bytes, face, {**TEMPLATE, "seed": 5, "num_images": 2}, "/v1/template")
    assert answer.status_code == 200, answer.text
    for (pixels, meta), image in zip(remote_template, answer.json()["images"], strict=True):
        local_pixels, local_meta = decoded(base64.b64decode(image["png_base64"]))
        assert meta["mode"] == "template" and meta["seed"] == image["seed"]
        assert np.array_equal(local_pixels, pixels) and local_meta == meta


def test_cancel_and_full_queue_over_redis(redis_url, checker, serve, astronaut_bytes, grace_hopper_path, faceless_png):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    jobs = RedisJobs(redis_url, queue_size=1, result_ttl_s=60, queue_name="facefact-no-workers")
    with running_server(create_app(jobs, checker, ServerConfig(ui=True, queue_size=1))) as url:
        assert httpx.get(url + "/ui/").status_code == 200  # the UI runs on the shared queue too
        def post():
            return httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))],
                              data={"settings": json.dumps(SMALL)})
        first = post()
        assert first.status_code == 202
        full = post()
        assert full.status_code == 429 and "retry-after" in full.headers
        job_id = first.json()["id"]
        assert httpx.get(f"{url}/v1/jobs/{job_id}").json()["queue_position"] == 0
        cancelled = httpx.delete(f"{url}/v1/jobs/{job_id}").json()
        assert cancelled["state"] == "cancelled"
        assert not jobs.redis.exists(f"facefact:photos:{job_id}")
        second = post()
        assert second.status_code == 202  # the slot is free again
        assert httpx.get(url + "/v1/jobs/unknown").status_code == 404
        httpx.delete(f"{url}/v1/jobs/{second.json()['id']}")
        # a template job: the template's bytes wait in their own key, with the photos' TTL; cancelled, both go
        face = open(grace_hopper_path, "rb").read()
        template_job = submit_template(url, astronaut_bytes, face, TEMPLATE)
        assert jobs.redis.get(f"facefact:template:{template_job}") == astronaut_bytes
        assert 0 < jobs.redis.ttl(f"facefact:template:{template_job}") <= jobs.redis.ttl(f"facefact:photos:{template_job}") + 1
        assert post_template(url, astronaut_bytes, face, TEMPLATE).status_code == 429  # the same queue bound
        assert httpx.delete(f"{url}/v1/jobs/{template_job}").json()["state"] == "cancelled"
        assert not jobs.redis.exists(f"facefact:template:{template_job}", f"facefact:photos:{template_job}")
        faces = httpx.post(url + "/v1/template/faces", files=[("template", ("t.jpg", astronaut_bytes, "image/jpeg"))])
        assert faces.status_code == 200 and len(faces.json()["faces"]) == 1  # face finding needs no worker
        # a template the job cannot use is refused as by the in-process server, before it takes a slot
        refused = post_template(url, faceless_png, face, TEMPLATE)
        local_url, _ = serve()
        assert refused.status_code == 422 and refused.json() == post_template(local_url, faceless_png, face, TEMPLATE).json()
        assert refused.json()["error"]["code"] == "no_face" and jobs.depth() == 0


@pytest.mark.parametrize("kind", ["portrait", "template"])
def test_cancel_a_running_job_over_redis(redis_url, workers, checker, astronaut_bytes, grace_hopper_path, kind):
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60)
    with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
        if kind == "portrait":
            job_id = submit(url, astronaut_bytes, {**SMALL, "steps": 150})
        else:
            job_id = submit_template(url, astronaut_bytes, open(grace_hopper_path, "rb").read(),
                                     {**TEMPLATE, "steps": 150})
        deadline = time.monotonic() + 120
        while (progress := httpx.get(f"{url}/v1/jobs/{job_id}").json()["progress"])["step"] < 1:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        if kind == "template":
            assert progress["total"] == 150  # images x faces x steps run (strength 1, no refine pass)
        assert httpx.delete(f"{url}/v1/jobs/{job_id}").status_code == 200
        status = jobs.wait(job_id, 60)
        assert status.state == "cancelled" and status.progress.step < 150 and status.error.code == "cancelled"
        assert httpx.get(f"{url}/v1/jobs/{job_id}/images/0.png").status_code == 404


def test_a_killed_worker_fails_its_job_and_the_other_finishes_the_rest(redis_url, workers, checker, astronaut_bytes,
                                                                      grace_hopper_path):
    """SIGKILL mid-template-job (the heartbeat is the same for every kind of job: a portrait job's worker
    dies the same way); the rest, portraits and templates, finish on the other worker."""
    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.redis_jobs import RedisJobs

    face = open(grace_hopper_path, "rb").read()
    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60)
    with running_server(create_app(jobs, checker, ServerConfig(ui=False))) as url:
        long_job = submit_template(url, astronaut_bytes, face, {**TEMPLATE, "steps": 150, "num_images": 8})
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/v1/jobs/{long_job}").json()["progress"]["step"] < 1:  # mid-job: denoising
            assert time.monotonic() < deadline, "the long job did not start"
            time.sleep(0.05)
        runner = jobs.redis.get(f"facefact:alive:{long_job}").decode()
        workers[runner].kill()  # SIGKILL mid-job: no chance to clean up
        others = [submit(url, astronaut_bytes, {**SMALL, "seed": 1}), submit_template(url, astronaut_bytes, face, TEMPLATE)]
        lost = jobs.wait(long_job, 60)  # within the worker's 10 s heartbeat; 60 only bounds a hang
        assert lost.state == "failed" and lost.error.code == "worker_lost", lost
        deadline = time.monotonic() + 60
        while (health := httpx.get(url + "/health").json())["workers"] != 1:  # RQ still lists the dead one
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        finished = [jobs.wait(job_id, 300) for job_id in others]
        assert [s.state for s in finished] == ["succeeded", "succeeded"], finished
        assert {s.worker for s in finished} == {"gpu-a", "gpu-b"} - {runner}


def test_a_worker_makes_the_template_pipeline_once(redis_url, engine, checker, astronaut_bytes, grace_hopper_path):
    """A FacefactWorker in this process (burst: it runs the queued jobs, then returns): two template
    jobs and a portrait job, one template pipeline made, on the first template job."""
    import signal

    from redis import Redis

    from facefact.serving.engine import Engine, default_template_pipeline
    from facefact.serving.jobs import JobInput
    from facefact.serving.redis_jobs import FacefactWorker, RedisJobs
    from facefact.serving.schemas import GenerateSettings, TemplateJobSettings
    from facefact.serving.template_jobs import template_job_input

    made = []

    def template_pipeline():
        made.append(len(made))
        return default_template_pipeline(engine.pipeline)

    face = open(grace_hopper_path, "rb").read()
    jobs = RedisJobs(redis_url, queue_size=8, result_ttl_s=60, queue_name="facefact-burst")
    ids = [jobs.submit(template_job_input(checker, astronaut_bytes, [face], '{"1": 0}',
                                          TemplateJobSettings(**TEMPLATE, seed=seed), 10**7)) for seed in (3, 4)]
    ids.append(jobs.submit(JobInput(photos=[astronaut_bytes], settings=GenerateSettings(**SMALL, seed=1))))
    worker = FacefactWorker(["facefact-burst"], Engine(engine.pipeline, name="burst", template_pipeline=template_pipeline),
                            connection=Redis.from_url(redis_url), name="burst-worker", heartbeat_s=60)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
    finally:
        for sig, handler in handlers.items():  # RQ sets its own for the worker: pytest's come back
            signal.signal(sig, handler)
    statuses = [jobs.status(job_id) for job_id in ids]
    assert [s.state for s in statuses] == ["succeeded"] * 3 and {s.worker for s in statuses} == {"burst-worker"}
    assert made == [0]  # made on the first template job, reused by the second
    assert [decoded(image.png)[1]["seed"] for job_id in ids[:2] for image in jobs.images(job_id)] == [3, 4]
